"""Interrupting a cell in a real Jupyter kernel stops the job it runs.

The kernel is driven as a notebook drives it (jupyter_client; the stop button is
``KernelManager.interrupt_kernel()``, a SIGINT to the kernel).  After the interrupt the cell
ends with KeyboardInterrupt, the job's threads and every thread started with it (the metrics
server's included) are gone, the port is free, a checkpointed job stopped at a final
checkpoint that the next run restores, and the same cell runs again with nothing left over:
no stale thread, no port conflict, no second server thread, no repeated warning.

The time from the interrupt to the last thread's end is measured (``time.monotonic()`` is one
clock for both processes) and bounded by the issue's target, 1 s: that bound is the point of
these tests.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

INTERRUPT_TARGET_S = 1.0

pytestmark = pytest.mark.timeout(180)


def _manifests(job_dir: Path) -> list:
    """The committed checkpoints of a job, oldest first: [(epoch, manifest)]."""
    out = []
    for path in sorted(job_dir.glob("chk-*/_manifest.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):       # deleted by retention while read, or half-written
            continue
    return out


def _after(path: Path, delay_s: float):
    """A condition true ``delay_s`` after ``path`` first exists."""
    first = []

    def ready() -> bool:
        if not first and path.exists():
            first.append(time.monotonic())
        return bool(first) and time.monotonic() - first[0] >= delay_s
    return ready


def _stopped_in_time(report: dict, cell) -> float:
    assert report["seen"] is not None, report
    assert report["gone"] is not None, f"threads left after the interrupt: {report}"
    assert report["extra"] == [], report
    stop_s = report["gone"] - cell.interrupted
    print(f"\n{cell.code.strip().splitlines()[-1]!r}: threads gone {stop_s * 1000:.0f} ms after the "
          f"interrupt, the cell ended {(cell.ended - cell.interrupted) * 1000:.0f} ms after it")
    assert stop_s < INTERRUPT_TARGET_S, f"the job took {stop_s:.2f} s to stop"
    return stop_s


def test_an_interrupted_execute_stops_its_job_and_the_cell_runs_again_from_its_checkpoint(kernel, tmp_path):
    ck, out = tmp_path / "ck", tmp_path / "out"
    cell_code = f"""
    from datetime import timedelta
    w = Watch("unbounded")
    env = hdb.StreamEnvironment(hdb.StreamingConfig(
        parallelism=1, metrics=hdb.MetricsConfig(port=0),
        checkpoint=hdb.CheckpointConfig(interval=timedelta(milliseconds=200), storage={str(ck)!r})))
    env.generate(rate=20_000).sink(hdb.sinks.parquet({str(out)!r}))
    url = env.metrics_url
    env.execute(name="unbounded")
    """
    report = ("print(json.dumps({**w.report(), 'free': port_free(url), "
              "'servers': [n for n in thread_names() if n.startswith('heliosdb-metrics')]}))")
    runs = []
    for attempt in range(2):
        done = len(_manifests(ck / "unbounded"))
        cell = kernel.run(cell_code, interrupt_when=lambda: len(_manifests(ck / "unbounded")) > done)
        assert cell.ename == "KeyboardInterrupt", str(cell)
        assert cell.stderr == "", f"nothing is printed unless logging is configured: {cell.stderr}"
        state = kernel.ok(report).value()
        _stopped_in_time(state, cell)
        assert state["free"], "the metrics port must be released"
        assert state["servers"] == []
        last = _manifests(ck / "unbounded")[-1]
        runs.append(last)
    first, second = runs
    # The rerun restored the first run's final checkpoint and went on from there.
    assert second["epoch"] > first["epoch"]
    assert second["source"]["emitted"] > first["source"]["emitted"]
    import pyarrow.dataset as ds
    assert ds.dataset(str(out), format="parquet").to_table().num_rows == second["source"]["emitted"]
    assert not (ck / "unbounded" / "_lease.json").exists(), "the lease must be released"


def test_an_interrupted_collect_stops_its_job_and_a_rerun_leaves_nothing_behind(kernel, tmp_path):
    marker = tmp_path / "running"
    cell_code = f"""
    holder = hdb.StreamEnvironment(hdb.StreamingConfig(metrics=hdb.MetricsConfig(port=0)))
    holder_url = holder.metrics_url          # keeps the shared any-port server up to scrape
    w = Watch("collect", marker={str(marker)!r})
    env = hdb.StreamEnvironment(hdb.StreamingConfig(metrics=hdb.MetricsConfig(port=0)))
    table = env.generate(rate=20_000, count=10**8).filter(lambda e: str(e.key).startswith("1")).collect()
    """
    report = """
    from urllib.request import urlopen
    state = w.report()              # before the scrape, whose handler thread ends just after it
    text = urlopen(holder_url).read().decode()
    running = [ln for ln in text.splitlines() if ln.startswith('streaming_job_running{job="collect"')]
    print(json.dumps({**state, "running": running,
                      "servers": [n for n in thread_names() if n.startswith("heliosdb-metrics")]}))
    """
    stderr = []
    for attempt in range(2):
        marker.unlink(missing_ok=True)
        cell = kernel.run(cell_code, interrupt_when=_after(marker, 0.3))
        assert cell.ename == "KeyboardInterrupt", str(cell)
        stderr.append(cell.stderr)
        state = kernel.ok(report).value()
        _stopped_in_time(state, cell)
        assert state["running"] == ['streaming_job_running{job="collect"} 0.0'], state
        assert len(state["servers"]) == 1, state            # one shared server, no stale ones
    assert "PythonFallbackWarning" in stderr[0]
    assert stderr[1] == "", f"a rerun repeats no warning: {stderr[1]}"
    kernel.ok("holder.close(); env.close()")


def test_execute_async_returns_at_once_and_stop_from_a_later_cell_ends_the_job(kernel):
    start = kernel.ok("""
    w = Watch("background")
    env = hdb.StreamEnvironment()
    env.generate(rate=20_000).sink(hdb.sinks.memory())
    h = env.execute_async(name="background")
    print(json.dumps({"done": h.done}))
    """)
    assert start.value() == {"done": False}
    assert start.stderr == "" and not start.of_type("error")
    state = kernel.ok("""
    time.sleep(0.3)
    h.stop()
    r = h.wait(timeout=60)
    print(json.dumps({**w.report(), "events": r.metrics["streaming_events_processed_total"]}))
    """).value()
    assert state["events"] > 0
    assert state["gone"] is not None and state["extra"] == [], state
