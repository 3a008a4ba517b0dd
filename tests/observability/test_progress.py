"""Live progress: throughput, latency and backpressure in a terminal (rich), in Jupyter (an
updating display) and in a log."""
from __future__ import annotations

import sys
import time
import types

import heliosdb as hdb
from heliosdb import col
from heliosdb.progress import read, watch


def _job(name: str, rate=None, slow: float = 0.0):
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=1000))
    s = env.generate(rate=rate) if rate else env.generate()
    if slow:
        def fn(batch):
            time.sleep(slow)
            return batch
        s = s.map_batches(fn).name("slow-step")
    s.filter(col("value") > 0.2).sink(hdb.sinks.callback(lambda b: None))
    return env.execute_async(name=name)


def test_a_reading_shows_throughput_latency_and_the_bottleneck():
    handle = _job("reading", slow=0.005)
    try:
        time.sleep(0.6)
        r = read(handle)
    finally:
        handle.stop()
        handle.wait()
    assert r.running and r.events > 0 and r.events_per_s > 0
    assert r.backpressured and r.bottleneck == "slow-step"
    cells = r.cells()
    assert cells["backpressure"] == "yes: slow-step"
    assert "events/s" in r.html() and "slow-step" in r.text()


def test_log_mode_prints_a_final_line(capsys):
    handle = _job("logged", rate=20_000)
    time.sleep(0.2)
    handle.stop()
    last = watch(handle, mode="log")
    handle.wait()
    out = capsys.readouterr().out
    assert "job 'logged' done" in out and "events/s" in out and "backpressure no" in out
    assert not last.running


def test_terminal_mode_renders_with_rich():
    handle = _job("terminal", rate=20_000)
    try:
        time.sleep(0.2)
        handle.stop()
        last = watch(handle, refresh_s=0.05, mode="terminal")
    finally:
        handle.wait()
    assert last.events > 0


def test_notebook_mode_updates_one_display(monkeypatch):
    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj.data))

    def display(obj, display_id=None):
        shown.append(("display", obj.data))
        return Handle()

    fake = types.ModuleType("IPython.display")
    fake.HTML = type("HTML", (), {"__init__": lambda self, data: setattr(self, "data", data)})
    fake.display = display
    monkeypatch.setitem(sys.modules, "IPython.display", fake)
    handle = _job("notebook", rate=20_000)
    time.sleep(0.3)
    handle.stop()
    watch(handle, refresh_s=0.05, mode="notebook")
    handle.wait()
    assert shown[0][0] == "display" and shown[-1][0] == "update"
    assert "notebook" in shown[-1][1] and "events/s" in shown[-1][1]


def test_execute_with_progress_returns_the_result(capsys):
    env = hdb.StreamEnvironment()
    env.generate(count=5_000).sink(hdb.sinks.memory())
    result = env.execute(name="with-progress", progress=True)
    assert result.metrics["streaming_events_processed_total"] == 5_000
    assert "with-progress" in capsys.readouterr().out
