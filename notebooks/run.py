"""Execute the notebooks in a real Jupyter kernel (nbclient), in place or into a copy.

    python notebooks/run.py                     # every notebook, default size, outputs saved in place
    python notebooks/run.py 03_event_time       # one (or several) by name
    python notebooks/run.py --small --out DIR   # CI size (HELIOSDB_NB_SMALL=1), written to DIR

The committed notebooks are executed at their default size, so a reader sees real charts without
running anything; refresh them with the first command (``flock /tmp/heavy.lock`` it on a shared
machine; under ``ci/services.sh run --`` the live notebook's Kafka section runs too).  The first
code cell of each notebook (tagged ``parameters``) reads its size from ``HELIOSDB_NB_SMALL``.

The tests (``tests/notebooks/``) import :func:`execute` from this file: a cell that fails raises
``nbclient.exceptions.CellExecutionError`` naming the cell and carrying its traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
#: A committed notebook must stay under this size (charts are PNGs at a modest dpi).
MAX_BYTES = 1_000_000
#: No cell of any notebook may run longer than this (seconds), whatever the size.
CELL_TIMEOUT_S = 900


def notebooks() -> List[Path]:
    """The notebooks, in reading order (``NN_name.ipynb``)."""
    return sorted(HERE.glob("[0-9][0-9]_*.ipynb"))


def execute(path: Path, small: bool = False, out: Optional[Path] = None,
            env: Optional[Dict[str, str]] = None, timeout: int = CELL_TIMEOUT_S):
    """Run every cell of notebook ``path`` top to bottom in a fresh ``python3`` kernel (the
    interpreter running this function), with the notebook's folder as working directory, and
    write the executed notebook to ``out`` (default: ``path`` itself).  ``small=True`` sets
    ``HELIOSDB_NB_SMALL=1`` in the kernel.  Returns the executed ``NotebookNode``."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    kernel_env = dict(os.environ if env is None else env)
    kernel_env["HELIOSDB_NB_SMALL"] = "1" if small else "0"
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=kernel_env)
    nb.metadata.pop("widgets", None)
    target = path if out is None else out
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(target))
    return nb


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="notebooks to run (file names or their prefix); default: all")
    ap.add_argument("--small", action="store_true", help="the CI size (HELIOSDB_NB_SMALL=1)")
    ap.add_argument("--out", type=Path, help="write the executed notebooks here instead of in place")
    args = ap.parse_args(argv)
    todo = notebooks()
    if args.names:
        todo = [p for p in todo if any(p.name.startswith(n) or p.stem == n for n in args.names)]
        if not todo:
            print(f"no notebook matches {args.names}; have {[p.name for p in notebooks()]}", file=sys.stderr)
            return 2
    status = 0
    for path in todo:
        out = None if args.out is None else args.out / path.name
        t0 = time.perf_counter()
        execute(path, small=args.small, out=out)
        written = out or path
        size = written.stat().st_size
        print(f"{path.name}: {time.perf_counter() - t0:.1f} s, {size / 1e3:.0f} kB -> {written}")
        if size >= MAX_BYTES:
            print(f"  {written.name} is {size:,} bytes, over {MAX_BYTES:,}: use smaller or fewer charts",
                  file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
