"""Render an executed notebook as a reader sees it and check its charts: nbconvert's HTML opened
in headless Chromium (Debian's ``chromium`` package, installed by ``ci/browser.sh install``).

Two looks at every ``<img>`` of the page, in document order (nbconvert writes one per
``image/png`` output, in the notebook's order):

1. **In the page** (``--dump-dom``): a script appended to the page waits for ``load``, then
   records for each image whether it decoded (``naturalWidth > 0``), its size on the page, and
   the share of non-white pixels of the decoded image (drawn on a canvas).
2. **On screen** (``--screenshot`` of a window as tall as the page): the image's rectangle is
   cropped from the screenshot; it must not be blank and must look like the PNG the notebook
   holds, scaled to that rectangle (mean absolute grey-level difference).

``check()`` returns the problems found (empty: every chart rendered).  The browser gets a new
empty profile each time, no network (every host name resolves to nothing), and no GPU.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import pytest

WIDTH = 1280
#: Tallest screenshot taken (pixels); images below it are checked in the page only.
MAX_HEIGHT = 16_000
#: A pixel is "ink" when a channel is below this (0-255): white and near-white are paper.
PAPER = 235
#: An image (or its crop) with a smaller share of ink is blank.
MIN_INK = 0.005
#: Largest mean grey-level difference (0-255) between a crop and its PNG scaled to the crop.
MAX_DIFF = 24.0
MIN_SIDE = 40

_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var out = {height: Math.ceil(document.documentElement.scrollHeight), images: []};
  document.querySelectorAll("img").forEach(function (img) {
    var r = img.getBoundingClientRect();
    var rec = {decoded: img.complete && img.naturalWidth > 0, width: img.naturalWidth,
               height: img.naturalHeight, x: r.left + window.scrollX, y: r.top + window.scrollY,
               shown_width: r.width, shown_height: r.height, ink: null};
    try {
      if (rec.decoded) {
        var c = document.createElement("canvas");
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        var g = c.getContext("2d");
        g.drawImage(img, 0, 0);
        var d = g.getImageData(0, 0, c.width, c.height).data, n = 0;
        for (var i = 0; i < d.length; i += 4) {
          if (d[i + 3] > 0 && (d[i] < %(paper)d || d[i + 1] < %(paper)d || d[i + 2] < %(paper)d)) n++;
        }
        rec.ink = n / (c.width * c.height);
      }
    } catch (e) { rec.error = String(e); }
    out.images.push(rec);
  });
  var pre = document.createElement("pre");
  pre.id = "heliosdb-render-check";
  pre.style.display = "none";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
""" % {"paper": PAPER}


def chromium() -> str:
    """The browser (``$HELIOSDB_CHROMIUM``, else ``chromium`` on PATH); fails the test when
    there is none: the notebook checks never skip."""
    path = os.environ.get("HELIOSDB_CHROMIUM") or shutil.which("chromium")
    if not path or not Path(path).exists():
        pytest.fail("headless Chromium is not installed: the notebook render checks need it. "
                    "`make test` installs it (ci/browser.sh install: apt-get install chromium)",
                    pytrace=False)
    return path


def to_html(nb) -> str:
    """The notebook as nbconvert's standalone HTML (the JupyterLab template)."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    return body


def png_outputs(nb) -> List[bytes]:
    """The ``image/png`` outputs of ``nb``'s code cells, in order."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if "image/png" in data:
                out.append(base64.b64decode(data["image/png"]))
    return out


def _browse(html_file: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000",
           f"--user-data-dir={profile}", *args, html_file.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@dataclass
class Report:
    """What :func:`check` saw: the page's image records, the screenshot, and the problems."""

    images: List[dict] = field(default_factory=list)
    screenshot: Optional[Path] = None
    on_screen: int = 0
    problems: List[str] = field(default_factory=list)


def check(nb, workdir: Path, name: str = "page") -> Report:
    """Render ``nb`` in Chromium and check every chart; see the module docstring."""
    from PIL import Image, ImageChops, ImageStat

    workdir.mkdir(parents=True, exist_ok=True)
    html = to_html(nb)
    assert "</body>" in html, "nbconvert's HTML has no </body>"
    page = workdir / f"{name}.html"
    page.write_text(html.replace("</body>", _SCRIPT + "</body>", 1), encoding="utf-8")
    pngs = png_outputs(nb)
    report = Report()

    dom = _browse(page, workdir / f"{name}-profile-dom", f"--window-size={WIDTH},900", "--dump-dom")
    found = re.search(r'<pre id="heliosdb-render-check"[^>]*>(.*?)</pre>', dom.stdout, re.S)
    if dom.returncode != 0 or not found:
        report.problems.append(f"Chromium did not load {page} and run its check (status {dom.returncode}):\n"
                               f"{dom.stderr[-2000:]}")
        return report
    page_info = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    report.images = page_info["images"]
    if len(report.images) != len(pngs):
        report.problems.append(f"the page has {len(report.images)} <img>, the notebook {len(pngs)} PNG outputs")
    for i, img in enumerate(report.images):
        what = f"image {i + 1} of {len(report.images)}"
        if not img["decoded"]:
            report.problems.append(f"{what} did not decode in the browser")
            continue
        if img.get("error"):
            report.problems.append(f"{what}: the page could not read its pixels ({img['error']})")
        elif img["ink"] is None or img["ink"] < MIN_INK:
            report.problems.append(f"{what} is blank ({img['ink']!r} of its pixels are not white)")
        if img["shown_width"] < MIN_SIDE or img["shown_height"] < MIN_SIDE:
            report.problems.append(f"{what} is not shown on the page "
                                   f"({img['shown_width']:.0f}x{img['shown_height']:.0f} px)")

    height = min(max(int(page_info["height"]), 100), MAX_HEIGHT)
    shot = workdir / f"{name}.png"
    res = _browse(page, workdir / f"{name}-profile-shot", f"--window-size={WIDTH},{height}",
                  f"--screenshot={shot}")
    if res.returncode != 0 or not shot.exists():
        report.problems.append(f"Chromium took no screenshot of {page} (status {res.returncode}):\n{res.stderr[-2000:]}")
        return report
    report.screenshot = shot
    screen = Image.open(shot).convert("L")
    for i, (img, png) in enumerate(zip(report.images, pngs)):
        what = f"image {i + 1} of {len(report.images)}"
        x, y = round(img["x"]), round(img["y"])
        w, h = round(img["shown_width"]), round(img["shown_height"])
        if not img["decoded"] or w < MIN_SIDE or h < MIN_SIDE or y + h > screen.height or x + w > screen.width:
            continue
        report.on_screen += 1
        crop = screen.crop((x, y, x + w, y + h))
        ink = sum(crop.point(lambda v: 255 if v < PAPER else 0).histogram()[255:]) / (w * h)
        if ink < MIN_INK:
            report.problems.append(f"{what} is blank on screen at ({x}, {y}) {w}x{h} ({ink:.4f} ink; {shot})")
            continue
        expected = Image.open(io.BytesIO(png)).convert("L").resize((w, h), Image.LANCZOS)
        diff = ImageStat.Stat(ImageChops.difference(crop, expected)).mean[0]
        if diff > MAX_DIFF:
            report.problems.append(f"{what} on screen at ({x}, {y}) {w}x{h} differs from its PNG "
                                   f"(mean grey difference {diff:.1f} > {MAX_DIFF}; {shot})")
    if report.images and report.on_screen == 0:
        report.problems.append(f"no image could be checked on screen (page {page_info['height']} px tall; {shot})")
    return report
