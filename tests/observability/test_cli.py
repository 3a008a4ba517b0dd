"""``heliosdb diagnose`` on a running ``heliosdb demo`` (two processes, metrics over HTTP)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from heliosdb.cli import main


def test_diagnose_reports_on_a_running_demo(tmp_path, capsys):
    demo = subprocess.Popen(
        [sys.executable, "-m", "heliosdb.cli", "demo", "--duration", "2", "--rate", "50000",
         "--users", "1000", "--output", str(tmp_path / "out"), "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
    try:
        url, seen = None, []
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"Prometheus metrics: (http://\S+/metrics)", line)
            url = m and m.group(1)
        assert url, "the demo did not announce its metrics URL:\n" + "".join(seen)
        assert main(["diagnose", "--url", url, "--interval", "0.5"]) == 0
        report = capsys.readouterr().out
        # What the figures say depends on the machine's load (diagnose() itself is tested on
        # exact counters in test_diagnosis.py): here, that the report has its parts.
        assert "job 'demo'" in report
        assert re.search(r"^- (no backpressure|backpressured)", report, re.M), report
        for task in ("clickstream", "per-user-second"):
            assert task in report
        # A wait in progress at the first scrape can turn into work by the second (a source's
        # poll that waited, then brought rows), so a fraction can be a little outside 0-100%.
        assert re.search(r"^clickstream\s+-?\d+%\s+-?\d+%\s+-?\d+%", report, re.M), report
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 0, rest
    assert "summary" in rest and "diagnosis (whole run)" in rest


def test_diagnose_without_an_engine_says_how_to_start_one(capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]            # bound, not listening: refused
        assert main(["diagnose", "--url", f"http://127.0.0.1:{port}/metrics", "--interval", "0"]) == 2
    assert "heliosdb demo" in capsys.readouterr().err
