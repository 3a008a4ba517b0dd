"""Stopping a job: Ctrl-C, SIGTERM and ``JobHandle.stop()`` share one path (the source stops,
in-flight batches reach the sinks, a checkpointed job takes a final checkpoint, the threads end,
the lease and the metrics server are freed), and a run of the same job resumes from there.

In-process tests interrupt ``execute()`` with ``_thread.interrupt_main()`` (what Ctrl-C does to a
REPL or a notebook); the subprocess tests send real SIGINT and SIGTERM to a script.  Nothing is
asserted about speed beyond generous bounds: ``python -m benchmarks.stop`` measures it.
"""
from __future__ import annotations

import _thread
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

import heliosdb as hdb
from heliosdb.testing import assert_same_rows, wait_until
from tests.runtime import stopjob

ROOT = Path(__file__).resolve().parents[2]
GENEROUS_S = 60.0          # a bound for waits that take well under a second when all is well


def _wait_until(predicate, timeout_s: float = GENEROUS_S) -> bool:
    return wait_until(predicate, timeout_s)


def _manifests(job_dir: Path) -> list:
    """The committed checkpoints of a job, oldest first: [(epoch, manifest)]."""
    out = []
    for path in sorted(job_dir.glob("chk-*/_manifest.json")):
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):       # deleted by retention while we read, or half-read
            continue
        out.append((m["epoch"], m))
    return out


def _published(folder: Path) -> pa.Table:
    """What a Parquet sink has published (its hidden, uncommitted files are skipped)."""
    if not folder.exists() or not any(folder.glob("*.parquet")):
        return pa.table({})
    return ds.dataset(str(folder), format="parquet").to_table()


def _interrupt_main_after_checkpoint(job_dir: Path, after_epoch: int = 0, again_after_s=None,
                                     returned: threading.Event = None) -> threading.Thread:
    """Ctrl-C the main thread once a checkpoint newer than ``after_epoch`` has committed (and
    again ``again_after_s`` later, unless ``returned`` says execute() already has)."""
    def run():
        if _wait_until(lambda: any(e > after_epoch for e, _ in _manifests(job_dir))):
            _thread.interrupt_main()
            if again_after_s is not None:
                time.sleep(again_after_s)
                if not returned.is_set():
                    _thread.interrupt_main()

    t = threading.Thread(target=run, daemon=True, name="test-interrupter")
    t.start()
    return t


def _checkpointed(tmp_path: Path, **kw) -> hdb.StreamingConfig:
    return hdb.StreamingConfig(
        parallelism=1, checkpoint=hdb.CheckpointConfig(interval=timedelta(milliseconds=200),
                                                       storage=str(tmp_path / "ck")), **kw)


def _assert_stopped_at_its_last_checkpoint(job_dir: Path, out: Path) -> dict:
    """The newest checkpoint holds exactly the published output: nothing after it is visible,
    nothing before it is missing; no row twice."""
    epoch, m = _manifests(job_dir)[-1]
    rows = _published(out)
    assert rows.num_rows == m["source"]["emitted"], (epoch, m["source"])
    if rows.num_rows:
        assert len(rows.column("value").unique()) == rows.num_rows, "a row was written twice"
    return m


# -- in process --------------------------------------------------------------------------------

def _lease_freed(job_dir) -> bool:
    """The job's lease is free: its newest generation file is marked released (checkpoint/lease.py)."""
    gens = sorted((job_dir / "_lease").glob("gen-*.json"))
    return not (job_dir / "_lease.json").exists() and bool(gens) and json.loads(gens[-1].read_text())["released"]


def test_ctrl_c_in_execute_stops_the_job_frees_everything_and_a_rerun_resumes(tmp_path):
    name = "ctrl-c"
    job_dir, out = tmp_path / "ck" / name, tmp_path / "out"
    env = hdb.StreamEnvironment(_checkpointed(tmp_path, metrics=hdb.MetricsConfig(port=0)))
    env.generate(rate=20_000).sink(hdb.sinks.parquet(str(out)))       # unbounded
    port = urlparse(env.metrics_url).port
    before = set(threading.enumerate())

    interrupter = _interrupt_main_after_checkpoint(job_dir)
    with pytest.raises(KeyboardInterrupt):
        env.execute(name=name)
    interrupter.join()

    left = [t.name for t in set(threading.enumerate()) - before if not t.name.endswith(":lease")]
    assert left == [], f"threads still running after execute() raised: {left}"
    assert _wait_until(lambda: set(threading.enumerate()) <= before, 5.0), threading.enumerate()
    assert not (job_dir / "_lease.json").exists(), "the lease must be released"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    first = _assert_stopped_at_its_last_checkpoint(job_dir, out)
    assert first["source"]["emitted"] > 0

    # The same job again in the same process: no "already running", it resumes at the final
    # checkpoint (and the environment serves metrics again).
    interrupter = _interrupt_main_after_checkpoint(job_dir, after_epoch=first["epoch"])
    with pytest.raises(KeyboardInterrupt):
        env.execute(name=name)
    interrupter.join()
    second = _assert_stopped_at_its_last_checkpoint(job_dir, out)
    assert second["epoch"] > first["epoch"]
    assert second["source"]["emitted"] > first["source"]["emitted"]
    assert env.metrics_url is not None
    env.close()


def test_handle_stop_takes_a_final_checkpoint_after_the_last_batch(tmp_path):
    name = "handle-stop"
    job_dir, out = tmp_path / "ck" / name, tmp_path / "out"
    env = hdb.StreamEnvironment(_checkpointed(tmp_path))
    env.generate(rate=20_000).sink(hdb.sinks.parquet(str(out)))
    handle = env.execute_async(name=name)
    assert _wait_until(lambda: _manifests(job_dir))
    handle.stop()
    result = handle.wait(timeout=GENEROUS_S)
    m = _assert_stopped_at_its_last_checkpoint(job_dir, out)
    assert result.metrics["streaming_events_processed_total"] == m["source"]["emitted"]
    assert _lease_freed(job_dir)


def test_a_second_ctrl_c_aborts_without_the_final_checkpoint_and_stays_consistent(tmp_path, caplog):
    # A slow step (0.2 s a batch, two batches of buffer): the first Ctrl-C's stop must wait for
    # what is queued; the second, 0.1 s later, closes the channels and drops it.
    name = "abort"
    job_dir, out = tmp_path / "ck" / name, tmp_path / "out"
    env = hdb.StreamEnvironment(_checkpointed(tmp_path, batch_size=500, buffer_size=1000,
                                              batch_timeout=timedelta(milliseconds=20)))
    env.generate(rate=20_000).inspect(lambda b: time.sleep(0.2)).sink(hdb.sinks.parquet(str(out)))
    before = set(threading.enumerate())
    returned = threading.Event()
    interrupter = _interrupt_main_after_checkpoint(job_dir, again_after_s=0.1, returned=returned)
    with caplog.at_level(logging.WARNING, logger="heliosdb"), pytest.raises(KeyboardInterrupt):
        try:
            env.execute(name=name)
        finally:
            returned.set()
    interrupter.join()
    assert "aborting" in caplog.text
    assert _wait_until(lambda: set(threading.enumerate()) <= before, 5.0), threading.enumerate()
    assert _lease_freed(job_dir)
    _assert_stopped_at_its_last_checkpoint(job_dir, out)
    assert not list(out.glob("_*.pending")), "an aborted epoch's files must be deleted"


def test_sigterm_is_handled_only_while_execute_blocks_and_chains_to_the_previous_handler(tmp_path):
    name = "sigterm-chain"
    job_dir, out = tmp_path / "ck" / name, tmp_path / "out"
    calls = []

    def previous(signum, frame):
        calls.append(signum)

    during = []
    env = hdb.StreamEnvironment(_checkpointed(tmp_path))
    src = env.generate(rate=20_000)
    src.sink(hdb.sinks.parquet(str(out)))
    src.sink(hdb.sinks.callback(lambda b: during.append(signal.getsignal(signal.SIGTERM))))
    old = signal.signal(signal.SIGTERM, previous)
    returned = threading.Event()
    try:
        def term():
            if _wait_until(lambda: _manifests(job_dir)):
                os.kill(os.getpid(), signal.SIGTERM)
            if not returned.wait(GENEROUS_S):
                _thread.interrupt_main()         # the SIGTERM did not stop it: fail, don't hang

        threading.Thread(target=term, daemon=True).start()
        result = env.execute(name=name)          # the previous handler returns: so does execute()
        returned.set()
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, old)
    assert calls == [signal.SIGTERM]
    assert during and all(h is not previous for h in during), "a handler of the job's own while it ran"
    m = _assert_stopped_at_its_last_checkpoint(job_dir, out)
    assert result.metrics["streaming_events_processed_total"] == m["source"]["emitted"]


# -- real signals to a script -------------------------------------------------------------------
def _spec(tmp_path: Path, name: str, **kw) -> dict:
    spec = {"storage": str(tmp_path / "ck"), "rows": str(tmp_path / "rows"),
            "windows": str(tmp_path / "windows"), "name": name, "batch_size": 1000,
            "interval_ms": 200}
    spec.update(kw)
    return spec


def _start(spec: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.runtime.stopjob", json.dumps(spec)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _signal_after_checkpoint(spec: dict, sig: int) -> tuple:
    """Start the script, send ``sig`` once a checkpoint has committed; (return code, output,
    the epoch committed when the signal was sent)."""
    job_dir = Path(spec["storage"]) / spec["name"]
    proc = _start(spec)
    try:
        assert _wait_until(lambda: _manifests(job_dir) or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()[0]
        seen = _manifests(job_dir)[-1][0]
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=GENEROUS_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, output, seen


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_an_unbounded_job_at_a_final_checkpoint(sig, tmp_path):
    spec = _spec(tmp_path, "unbounded", rate=20_000)
    code, output, seen = _signal_after_checkpoint(spec, sig)
    # Ctrl-C: the KeyboardInterrupt is re-raised and, uncaught, ends Python by SIGINT; SIGTERM
    # is raised again once the job has stopped: both die of their signal.
    assert code == -sig, output
    job_dir = Path(spec["storage"]) / spec["name"]
    m = _assert_stopped_at_its_last_checkpoint(job_dir, Path(spec["rows"]))
    assert m["epoch"] > seen, "no final checkpoint after the signal"
    assert _lease_freed(job_dir)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The bounded job's output when nothing stops it."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    spec = _spec(tmp, "reference", count=40_000)
    env = hdb.StreamEnvironment(stopjob.config(spec))
    stopjob.build(env, spec)
    env.execute(name=spec["name"])
    return _published(Path(spec["rows"])), _published(Path(spec["windows"]))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_job_stopped_by_a_signal_resumes_to_the_uninterrupted_output(sig, uninterrupted, tmp_path):
    # 40 batches of 1,000 rows at 20 ms each: the signal comes after the first checkpoint
    # (200 ms), a third of the way in.
    spec = _spec(tmp_path, "bounded", count=40_000, sleep_s=0.02)
    code, output, _ = _signal_after_checkpoint(spec, sig)
    assert code == -sig, output
    job_dir = Path(spec["storage"]) / spec["name"]
    m = _assert_stopped_at_its_last_checkpoint(job_dir, Path(spec["rows"]))
    assert 0 < m["source"]["emitted"] < spec["count"], "the signal must stop the job midway"

    proc = _start(spec)                          # the same job again, to its end
    output, _ = proc.communicate(timeout=GENEROUS_S * 2)
    assert proc.returncode == 0, output
    rows, windows = uninterrupted
    assert_same_rows(_published(Path(spec["rows"])), rows)
    assert_same_rows(_published(Path(spec["windows"])), windows)
