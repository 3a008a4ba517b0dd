"""The test services of ``ci/services.sh`` (Prometheus now; Kafka and S3 later), for tests.

Under ``make test`` the services run already and their addresses are in the environment
(``HELIOSDB_PROMETHEUS_URL``, ...).  Run any other way, a fixture starts a service itself with
the same script, if it is installed.  A missing tool fails the test in CI (``CI`` set) and skips
it elsewhere: CI must never pass by skipping.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, Optional
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "ci" / "services.sh"


def require_tool(name: str) -> str:
    """The path of command ``name``; fail (CI) or skip (elsewhere) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        msg = (f"{name} is not installed; `make test` installs it (ci/services.sh install: "
               "apt-get install prometheus)")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


class Prometheus:
    """A running Prometheus server that scrapes the targets added with :meth:`scrape`."""

    def __init__(self, url: str, targets: str):
        self.url = url.rstrip("/")
        self.targets = Path(targets)

    def scrape(self, host_port: str) -> Callable[[], None]:
        """Scrape ``host_port`` from now on (file service discovery); returns the undo."""
        path = self.targets / f"{uuid.uuid4().hex}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [host_port], "labels": {}}]))
        tmp.rename(path)              # atomic: Prometheus never reads half a file
        return lambda: path.unlink(missing_ok=True)

    def api(self, path: str, **params) -> dict:
        with urlopen(f"{self.url}/api/v1/{path}?{urlencode(params)}", timeout=10) as resp:
            return json.load(resp)

    def query(self, expr: str) -> dict:
        """The result of an instant query (raises if Prometheus rejects the expression)."""
        out = self.api("query", query=expr)
        assert out["status"] == "success", f"{expr}: {out}"
        return out["data"]

    def wait_for(self, expr: str, timeout_s: float = 30.0,
                 accept: Callable[[float], bool] = lambda v: True) -> list:
        """Poll ``expr`` until every sample it returns is finite and ``accept``-ed; the result.

        (``rate()`` over a series younger than its range is extrapolated low: wait it out.)
        """
        deadline = time.monotonic() + timeout_s
        while True:
            res = self.query(expr)["result"]
            if res and all(_finite(r["value"][1]) and accept(float(r["value"][1])) for r in res):
                return res
            if time.monotonic() > deadline:
                raise AssertionError(f"no finite result for {expr!r} within {timeout_s}s: {res}")
            time.sleep(0.5)


def _finite(v: str) -> bool:
    return v not in ("NaN", "+Inf", "-Inf")


def _read_env(path: Path) -> Dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def prometheus_service():
    """Yield a :class:`Prometheus`: the one ``make test`` started, or one of our own."""
    url, targets = os.environ.get("HELIOSDB_PROMETHEUS_URL"), os.environ.get("HELIOSDB_PROMETHEUS_TARGETS")
    if url and targets:
        yield Prometheus(url, targets)
        return
    require_tool("prometheus")
    folder = tempfile.mkdtemp(prefix="heliosdb-services-")
    env = {**os.environ, "HELIOSDB_SERVICES_DIR": folder}
    started: Optional[subprocess.CompletedProcess] = None
    try:
        started = subprocess.run([str(SERVICES), "start", "prometheus"], env=env, capture_output=True,
                                 text=True, timeout=60)
        assert started.returncode == 0, f"ci/services.sh start prometheus failed:\n{started.stderr}"
        found = _read_env(Path(folder) / "env")
        yield Prometheus(found["HELIOSDB_PROMETHEUS_URL"], found["HELIOSDB_PROMETHEUS_TARGETS"])
    finally:
        subprocess.run([str(SERVICES), "stop", "prometheus"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
