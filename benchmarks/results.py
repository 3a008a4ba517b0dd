"""Write a benchmark's section of ``benchmarks/RESULTS.md`` between its markers."""
from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
_HEADER = ("# Benchmark results\n\nFigures measured on this project's 2-core machine. Each "
           "section says the command that reproduces it.\n\n")


def write_section(tag: str, block: str) -> None:
    """Replace the text between ``<!-- tag:start -->`` and ``<!-- tag:end -->`` (or append)."""
    a, b = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else _HEADER
    if a in text:
        head, rest = text.split(a, 1)
        tail = rest.split(b, 1)[1]
        text = head + a + "\n" + block + "\n" + b + tail
    else:
        text = text.rstrip() + "\n\n" + a + "\n" + block + "\n" + b + "\n"
    RESULTS.write_text(text)
