"""Every notebook of ``notebooks/`` runs top to bottom in a real Jupyter kernel, small
(``HELIOSDB_NB_SMALL=1``), and its charts render in headless Chromium; the committed notebooks
are executed, small enough, and render too."""
from __future__ import annotations

import nbformat
import pytest

from . import render
from .conftest import NAMES, NOTEBOOKS, runner


def _problems(report: render.Report) -> str:
    return "\n".join(f"- {p}" for p in report.problems)


def test_there_is_a_notebook_for_each_thing_users_come_for():
    assert [n.split("_", 1)[1] for n in NAMES] == [
        "quickstart.ipynb", "live.ipynb", "event_time.ipynb", "checkpoints_state.ipynb", "performance.ipynb"]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_in_a_kernel_and_its_charts_render(executed, name, tmp_path):
    nb = executed(name)
    assert render.png_outputs(nb), f"{name} drew no chart when run small"
    report = render.check(nb, tmp_path, name.removesuffix(".ipynb"))
    assert not report.problems, f"{name}, executed small, as Chromium shows it:\n{_problems(report)}"


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_executed_at_its_default_size_and_under_1_mb(name):
    path = NOTEBOOKS / name
    assert path.stat().st_size < runner.MAX_BYTES, f"{name} is {path.stat().st_size:,} bytes"
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), f"{name}: the first code cell is not tagged 'parameters'"
    assert "HELIOSDB_NB_SMALL" in code[0].source
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{name}: not executed top to bottom in one kernel: {counts}"
    for i, c in enumerate(code):
        assert c.outputs, f"{name}: code cell {i + 1} has no output:\n{c.source}"
        errors = [o for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{name}: code cell {i + 1} failed: {errors[0].ename}: {errors[0].evalue}"
    size_line = "".join(o.get("text", "") for o in code[0].outputs)
    assert size_line.startswith("full size"), f"{name}: committed at the CI size? its size cell says {size_line!r}"


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_charts_render(name, tmp_path):
    nb = nbformat.read(str(NOTEBOOKS / name), as_version=4)
    assert render.png_outputs(nb), f"{name} has no chart"
    report = render.check(nb, tmp_path, name.removesuffix(".ipynb"))
    assert report.on_screen >= 1
    assert not report.problems, f"{name}, as committed, as Chromium shows it:\n{_problems(report)}"
