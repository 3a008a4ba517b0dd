"""The distribution: one version, and optional dependencies named by their extra when a job is
built (the wheel itself is installed and used from outside the checkout by ci/wheel_check.sh)."""
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_defined_once_and_reported_by_the_command():
    from heliosdb._version import __version__

    assert hdb.__version__ == __version__
    setup = (ROOT / "setup.py").read_text()
    assert __version__ not in setup, "setup.py must read the version from heliosdb/_version.py"
    out = subprocess.run([sys.executable, "-m", "heliosdb.cli", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == f"heliosdb-streaming {__version__}"


def _watch_in_a_notebook(env):
    from heliosdb.progress import watch

    env.from_iterable([{"a": 1}]).sink(hdb.sinks.memory())
    handle = env.execute_async(name="notebook")
    try:
        watch(handle, mode="notebook")
    finally:
        handle.wait()


@pytest.mark.parametrize("module, extra, build", [
    ("rocksdict", "rocksdb", lambda env: hdb.StateBackend.rocksdb(path="/tmp/x")),
    ("confluent_kafka", "kafka", lambda env: env.kafka_source("t", bootstrap_servers="127.0.0.1:1")),
    ("confluent_kafka", "kafka", lambda env: hdb.sinks.kafka("t", bootstrap_servers="127.0.0.1:1")),
    ("orjson", "kafka", lambda env: env.kafka_source("t", bootstrap_servers="127.0.0.1:1")
     .deserialize_json(pa.schema([("a", pa.int64())]))),
    ("s3fs", "s3", lambda env: env.from_parquet("s3://bucket/data/*.parquet")),
    ("s3fs", "s3", lambda env: hdb.sinks.parquet("s3://bucket/out/")),
    ("s3fs", "s3", lambda env: hdb.CheckpointConfig(storage="s3://bucket/ckpt")),
    ("IPython.display", "notebook", lambda env: _watch_in_a_notebook(env)),
])
def test_a_missing_optional_dependency_fails_when_the_job_is_built_naming_the_extra(
        monkeypatch, module, extra, build):
    monkeypatch.setitem(sys.modules, module, None)      # importlib finds no such module now
    with pytest.raises(ConfigError, match=rf"pip install 'heliosdb-streaming\[{extra}\]'"):
        build(hdb.StreamEnvironment())


def test_every_package_directory_is_in_the_distribution():
    """setup.py discovers packages; a new subpackage needs no edit there."""
    from setuptools import find_packages

    found = set(find_packages(where=str(ROOT), include=["heliosdb", "heliosdb.*"]))
    on_disk = {".".join(p.relative_to(ROOT).parent.parts) for p in (ROOT / "heliosdb").rglob("__init__.py")}
    assert on_disk <= found
