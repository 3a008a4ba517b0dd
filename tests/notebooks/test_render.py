"""The render check itself: it passes a page whose charts show, and fails on a blank chart, a
chart that does not decode, and a chart the page hides."""
from __future__ import annotations

import base64
import io

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from . import render


def _png(draw: bool) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=72)
    if draw:
        ax.plot([0, 1, 2, 3], [1, 3, 2, 4], lw=3)
        ax.set_title("a chart")
    else:
        ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _notebook(*outputs) -> nbformat.NotebookNode:
    cells = [new_code_cell("plot()", execution_count=i + 1, outputs=[o]) for i, o in enumerate(outputs)]
    return new_notebook(cells=cells)


def _image(data: str):
    return new_output("display_data", data={"image/png": data, "text/plain": "<Figure>"})


def test_a_page_with_charts_passes(tmp_path):
    report = render.check(_notebook(_image(_png(True)), _image(_png(True))), tmp_path)
    assert report.problems == []
    assert len(report.images) == 2 and report.on_screen == 2


def test_a_blank_chart_fails(tmp_path):
    report = render.check(_notebook(_image(_png(True)), _image(_png(False))), tmp_path)
    assert any("image 2 of 2 is blank" in p for p in report.problems), report.problems
    assert not any("image 1 " in p for p in report.problems), report.problems


def test_a_chart_that_does_not_decode_fails(tmp_path):
    broken = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"not a png" * 50).decode()
    report = render.check(_notebook(_image(broken)), tmp_path)
    assert any("did not decode" in p for p in report.problems), report.problems


def test_a_chart_the_page_hides_fails_on_screen(tmp_path):
    hide = new_output("display_data", data={"text/html": "<style>img { visibility: hidden; }</style>",
                                            "text/plain": ""})
    report = render.check(_notebook(_image(_png(True)), hide), tmp_path)
    assert report.images and report.images[0]["ink"] > render.MIN_INK      # decoded fine in the page
    assert any("blank on screen" in p for p in report.problems), report.problems
