"""Write a benchmark's section of ``benchmarks/RESULTS.md`` between its markers."""
from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import List

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


def machine() -> str:
    """``2 cores, x86_64, Python 3.11.7``: what a section's figures were measured on."""
    return (f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}")


def heading(title: str, command: str, note: str = "") -> List[str]:
    """A section's first lines: ``## title — date``, a blank line, and the paragraph start
    ``Command: `command`{note}. Machine: ....`` (callers append the rest of the paragraph)."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [f"## {title} — {now}", "", f"Command: `{command}`{note}. Machine: {machine()}."]
