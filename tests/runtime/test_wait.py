"""Waiting for a job: one deadline for the whole wait, ``await handle`` inside a running event
loop (without blocking it), cancellation stopping the job as Ctrl-C does, and a Ctrl-C while a
job starts leaving no thread behind."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest

import heliosdb as hdb
from heliosdb.testing import wait_until

GENEROUS_S = 60.0


def _job_threads(name: str) -> list:
    return [t.name for t in threading.enumerate() if t.name.startswith(name + ":")]


def _unbounded(name: str, **config) -> hdb.JobHandle:
    env = hdb.StreamEnvironment(hdb.StreamingConfig(**config))
    env.generate(rate=20_000).sink(hdb.sinks.memory())
    return env.execute_async(name=name)


@pytest.mark.parametrize("progress", [False, True], ids=["plain", "progress"])
def test_wait_with_a_timeout_raises_once_the_timeout_has_passed_progress_included(progress, capsys):
    handle = _unbounded(f"timeout-{progress}")
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="still running after 1.0s"):
            handle.wait(timeout=1.0, progress=progress)
        waited = time.monotonic() - t0
        # The bug: the progress display and the join each took the whole timeout (2 s here).
        assert 1.0 <= waited < 1.8, waited
        assert not handle.done, "a timeout leaves the job running"
    finally:
        handle.stop()
        handle.wait(timeout=GENEROUS_S)


def test_await_handle_returns_the_result_without_blocking_the_loop():
    env = hdb.StreamEnvironment()
    env.generate(rate=20_000, count=10_000).sink(hdb.sinks.memory())       # about half a second
    ticks = []

    async def ticker():
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main():
        beat = asyncio.ensure_future(ticker())
        try:
            return await env.execute_async(name="awaited")
        finally:
            beat.cancel()

    result = asyncio.run(main())
    assert result.metrics["streaming_events_processed_total"] == 10_000
    assert len(ticks) > 10, "the event loop was blocked while the job ran"


def test_wait_async_with_a_timeout_leaves_the_job_running():
    handle = _unbounded("async-timeout")

    async def main():
        with pytest.raises(TimeoutError, match="still running"):
            await handle.wait_async(timeout=0.2)
        assert not handle.done
        handle.stop()
        return await handle.wait_async(timeout=GENEROUS_S)

    assert asyncio.run(main()).name == "async-timeout"
    assert _job_threads("async-timeout") == []


def _manifests(job_dir: Path) -> list:
    out = []
    for path in sorted(job_dir.glob("chk-*/_manifest.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def test_cancelling_the_awaiting_task_stops_the_job_at_a_final_checkpoint(tmp_path):
    name = "cancelled"
    env = hdb.StreamEnvironment(hdb.StreamingConfig(
        parallelism=1, metrics=hdb.MetricsConfig(port=0),
        checkpoint=hdb.CheckpointConfig(interval=timedelta(milliseconds=200), storage=str(tmp_path))))
    env.generate(rate=20_000).sink(hdb.sinks.parquet(str(tmp_path / "out")))
    url = env.metrics_url
    before = set(threading.enumerate())

    async def main():
        handle = env.execute_async(name=name)
        task = asyncio.ensure_future(handle.wait_async())
        while not _manifests(tmp_path / name):
            await asyncio.sleep(0.01)
        seen = _manifests(tmp_path / name)[-1]["epoch"]
        task.cancel()                                  # what a notebook's interrupt does
        with pytest.raises(asyncio.CancelledError):
            await task
        return seen, handle

    seen, handle = asyncio.run(main())
    assert handle.done and _job_threads(name) == []
    assert wait_until(lambda: set(threading.enumerate()) <= before, 5.0), threading.enumerate()
    last = _manifests(tmp_path / name)[-1]
    assert last["epoch"] > seen, "no final checkpoint after the cancellation"
    import pyarrow.dataset as ds
    assert ds.dataset(str(tmp_path / "out"), format="parquet").to_table().num_rows == last["source"]["emitted"]
    with pytest.raises(OSError):                       # released as after a Ctrl-C
        socket.create_connection(("127.0.0.1", urlparse(url).port), timeout=2).close()


def test_a_ctrl_c_while_the_threads_start_leaves_none_running(monkeypatch):
    start = threading.Thread.start

    def interrupted_start(self):
        if self.name.startswith("half-started:") and not self.name.endswith(":source"):
            raise KeyboardInterrupt
        start(self)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = hdb.StreamEnvironment(hdb.StreamingConfig(metrics=hdb.MetricsConfig(port=port)))
    env.generate(rate=20_000).map_batches(lambda b: b).sink(hdb.sinks.memory())
    monkeypatch.setattr(threading.Thread, "start", interrupted_start)
    with pytest.raises(KeyboardInterrupt):
        env.execute(name="half-started")
    monkeypatch.undo()
    assert wait_until(lambda: _job_threads("half-started") == [], 5.0), _job_threads("half-started")
    with pytest.raises(OSError):                       # a Ctrl-C frees the metrics port
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
