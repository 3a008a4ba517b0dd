"""The notebooks of ``notebooks/`` executed once per test session, small (``HELIOSDB_NB_SMALL=1``),
in a real Jupyter kernel (nbclient, via ``notebooks/run.py``); their times are reported at the
end of the run."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Dict, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"


def _load_runner():
    spec = importlib.util.spec_from_file_location("heliosdb_notebooks_run", NOTEBOOKS / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()
NAMES = [p.name for p in runner.notebooks()]
_runs: Dict[str, Tuple[object, float, BaseException]] = {}


def require_jupyter() -> None:
    """Fail (never skip) when the kernel or its client is missing."""
    try:
        import ipykernel  # noqa: F401
        import nbclient  # noqa: F401
        import nbconvert  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"the notebook tests need a Jupyter kernel and nbclient ({exc}): "
                    "pip install -e '.[test]' (the [notebook] extra)", pytrace=False)


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """``executed(name)``: notebook ``name`` run small in a fresh kernel (once per session),
    written to a temporary folder; the executed ``NotebookNode``.  A cell that failed fails
    the caller with that cell's source and traceback."""
    folder = tmp_path_factory.mktemp("notebooks-executed")

    def run(name: str):
        require_jupyter()
        from nbclient.exceptions import CellExecutionError

        if name not in _runs:
            t0 = time.perf_counter()
            try:
                nb = runner.execute(NOTEBOOKS / name, small=True, out=folder / name)
                _runs[name] = (nb, time.perf_counter() - t0, None)
            except CellExecutionError as exc:
                _runs[name] = (None, time.perf_counter() - t0, exc)
        nb, _, error = _runs[name]
        if error is not None:
            pytest.fail(f"{name}: a cell failed when run in a Jupyter kernel:\n{error}", pytrace=False)
        return nb

    return run


def pytest_terminal_summary(terminalreporter):
    if not _runs:
        return
    total = sum(t for _, t, _ in _runs.values())
    lines = ", ".join(f"{n} {t:.1f} s" for n, (_, t, _) in _runs.items())
    terminalreporter.write_line(f"notebooks executed small in a Jupyter kernel: {total:.1f} s in all ({lines})")
