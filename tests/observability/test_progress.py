"""Live progress: throughput, latency and backpressure in a terminal (rich), in Jupyter (an
updating display) and in a log.

The readings are of a scripted job (tests/observability/timeline.py) on a clock the test moves,
and ``watch`` sleeps on that clock: rates, refreshes and log lines are counted, not timed.
"""
from __future__ import annotations

import sys
import types

import heliosdb as hdb
from heliosdb.progress import LOG_EVERY_S, RECENT_NS, reading, watch

from .timeline import ScriptedHandle, ScriptedJob

# generate-1 -> [slow-step, keep, sink]
TOPOLOGY = {"generate-1": ([], ["slow-step"]), "slow-step": (["slow-step", "keep", "sink-callback-4"], [])}


def _second(job: ScriptedJob, backpressured: bool = True) -> None:
    """One second of 200,000 events; with backpressure the source is blocked 90% of it on
    'slow-step', without it the source is busy 10% and idle the rest."""
    job.run(1.0, busy={"generate-1": 0.1, "slow-step": 0.95 if backpressured else 0.1},
            blocked={"generate-1": 0.9 if backpressured else 0.0},
            rows={"slow-step": 200_000, "keep": 160_000}, events=200_000)


def test_a_reading_shows_throughput_latency_and_the_bottleneck():
    job = ScriptedJob(TOPOLOGY, job="reading")
    _second(job)
    reading(job.metrics)                     # the sample the next reading's rate starts from
    for _ in range(RECENT_NS // 1_000_000_000):
        _second(job)
    job.metrics.events_in += 50_000          # and a partial batch's worth more, read just now
    job.metrics.latency.add(2_000_000, weight=3)
    r = reading(job.metrics)
    assert r.running and r.events == 650_000 and r.elapsed_s == 3.0
    assert r.events_per_s == 225_000         # (650,000 - 200,000) events over the last 2 s
    assert r.backpressured and r.bottleneck == "slow-step"
    assert r.cells() == {"elapsed": "3.0 s", "events": "650,000", "events/s": "225,000",
                         "p50": "2.1 ms", "p99": "2.1 ms", "backpressure": "yes: slow-step",
                         "state": "0 B", "late": "0"}
    assert "events/s" in r.html() and "slow-step" in r.text()


def test_a_reading_without_backpressure_says_no():
    job = ScriptedJob(TOPOLOGY)
    _second(job, backpressured=False)
    r = reading(job.metrics)
    assert not r.backpressured and r.bottleneck is None
    assert r.cells()["backpressure"] == "no" and r.cells()["p50"] == "-"


def test_log_mode_prints_a_line_every_few_seconds_and_a_final_one(capsys):
    # The job ends 12 s in: lines at 5 s and 10 s, then the final one.
    job = ScriptedJob(TOPOLOGY, job="logged")
    _second(job, backpressured=False)
    handle = ScriptedHandle(job, ends_after_s=12.0)
    last = watch(handle, refresh_s=0.5, mode="log", clock=job.clock, sleep=job.clock.sleep)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 12 // LOG_EVERY_S + 1
    assert [line.split(":")[0] for line in lines] == ["job 'logged' running"] * 2 + ["job 'logged' done"]
    assert "events/s" in lines[-1] and "backpressure no" in lines[-1]
    assert job.clock.sleeps == [0.5] * 24
    assert not last.running


def test_watch_returns_at_its_timeout_while_the_job_runs(capsys):
    job = ScriptedJob(TOPOLOGY)
    last = watch(ScriptedHandle(job), refresh_s=0.5, timeout=3.0, mode="log", clock=job.clock,
                 sleep=job.clock.sleep)
    assert job.clock.sleeps == [0.5] * 6
    assert last.running
    assert capsys.readouterr().out.count("\n") == 1      # no line before 5 s: the last one only


def test_terminal_mode_renders_with_rich():
    job = ScriptedJob(TOPOLOGY, job="terminal")
    _second(job)
    last = watch(ScriptedHandle(job, ends_after_s=0.2), refresh_s=0.05, mode="terminal",
                 clock=job.clock, sleep=job.clock.sleep)
    assert last.events == 200_000 and not last.running
    assert len(job.clock.sleeps) == 4


def test_notebook_mode_updates_one_display(monkeypatch):
    shown = []

    class Handle:
        display_id = "d1"

        def update(self, obj, raw=False):
            shown.append(("update", obj, raw))

    def display(obj, raw=False, display_id=None):
        shown.append(("display", obj, raw))
        return Handle()

    fake = types.ModuleType("IPython.display")
    fake.display = display
    monkeypatch.setitem(sys.modules, "IPython.display", fake)
    monkeypatch.setattr("heliosdb.progress._cell", lambda: 1)
    job = ScriptedJob(TOPOLOGY, job="notebook")
    _second(job)
    watch(ScriptedHandle(job, ends_after_s=1.0), refresh_s=0.25, mode="notebook", clock=job.clock,
          sleep=job.clock.sleep)
    # one display and an update after each of the 4 refreshes, the last one (the job has ended)
    # final; each a raw bundle with HTML and its plain-text twin
    assert [kind for kind, _, _ in shown] == ["display"] + ["update"] * 4
    assert all(raw for _, _, raw in shown)
    last = shown[-1][1]
    assert "notebook" in last["text/html"] and "events/s" in last["text/html"] and "done" in last["text/html"]
    assert last["text/plain"].startswith("job 'notebook' done: elapsed")


def test_watch_of_a_real_job_prints_its_final_counts(capsys):
    env = hdb.StreamEnvironment()
    env.generate(count=5_000).sink(hdb.sinks.memory())
    handle = env.execute_async(name="watched")
    last = watch(handle, mode="log")
    handle.wait()
    assert not last.running and last.events == 5_000
    assert "job 'watched' done" in capsys.readouterr().out


def test_execute_with_progress_returns_the_result(capsys):
    env = hdb.StreamEnvironment()
    env.generate(count=5_000).sink(hdb.sinks.memory())
    result = env.execute(name="with-progress", progress=True)
    assert result.metrics["streaming_events_processed_total"] == 5_000
    assert "with-progress" in capsys.readouterr().out
