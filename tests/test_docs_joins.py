"""The examples of ``docs/joins.md``'s stream joins run as written and print what the page
shows: each ```python block of the section "Joins of two streams" runs in turn in one
namespace, and what it prints must equal the ```text block that follows it (a block without
one prints nothing)."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "joins.md"
BLOCK = re.compile(r"```(python|text)\n(.*?)```", re.S)


def _examples():
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Joins of two streams"): text.index("## Lookup join")]
    blocks = [(m.group(1), m.group(2)) for m in BLOCK.finditer(section)]
    out = []
    for i, (kind, body) in enumerate(blocks):
        if kind == "python":
            follows = blocks[i + 1] if i + 1 < len(blocks) else None
            out.append((body, follows[1] if follows is not None and follows[0] == "text" else ""))
    return out


EXAMPLES = _examples()


def test_the_section_has_its_examples():
    assert len(EXAMPLES) >= 8


@pytest.fixture(scope="module")
def namespace():
    return {}


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_each_example_prints_what_the_page_shows(index, namespace):
    code, expected = EXAMPLES[index]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"docs/joins.md example {index + 1}", "exec"), namespace)  # noqa: S102 - the docs' own code
    assert printed.getvalue() == expected, f"example {index + 1}:\n{code}"
