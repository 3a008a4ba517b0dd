"""The S3 server the S3 tests talk to: a local moto server.

Under ``make test`` ``ci/services.sh`` runs it and exports ``HELIOSDB_S3_ENDPOINT``; run any
other way, the fixture starts one itself with the same script (for this Python).  A missing
server or client library fails the tests in CI (``CI`` set) and skips them elsewhere: CI must
never pass by skipping.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "ci" / "services.sh"


def _missing(msg: str):
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=5):
            return True
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture(scope="session")
def s3_endpoint():
    """``http://127.0.0.1:PORT`` of a running moto S3 server."""
    for module in ("s3fs", "boto3"):
        try:
            __import__(module)
        except ImportError:
            _missing(f"{module} is not installed: pip install -e '.[test]' (the S3 test extras)")
    url = os.environ.get("HELIOSDB_S3_ENDPOINT")
    if url:
        if not _answers(url):
            pytest.fail(f"HELIOSDB_S3_ENDPOINT={url} does not answer (is the moto server running?)")
        yield url
        return
    try:
        __import__("moto.server")
    except ImportError:
        _missing("no S3 server: HELIOSDB_S3_ENDPOINT is not set and moto[server] is not installed "
                 "(make test starts one through ci/services.sh)")
    folder = tempfile.mkdtemp(prefix="heliosdb-s3-")
    env = {**os.environ, "HELIOSDB_SERVICES_DIR": folder, "HELIOSDB_PYTHON": sys.executable}
    try:
        started = subprocess.run([str(SERVICES), "start", "s3"], env=env, capture_output=True,
                                 text=True, timeout=60)
        if started.returncode != 0:
            pytest.fail(f"ci/services.sh start s3 failed:\n{started.stderr}")
        found = dict(line.split("=", 1) for line in Path(folder, "env").read_text().split())
        yield found["HELIOSDB_S3_ENDPOINT"]
    finally:
        subprocess.run([str(SERVICES), "stop", "s3"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def table():
    """The checkpoint tests' input events (pipelines.events())."""
    from . import pipelines

    return pipelines.events()
