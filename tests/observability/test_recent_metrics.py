"""Recent-window metrics: latency quantiles, throughput and backpressure over the last few
seconds, beside the whole-run figures Prometheus exports (which keep their names).

A scripted job (tests/observability/timeline.py) runs on a clock the test moves; its latency
histogram is written as a sink's task would, once per batch with the batch's rows as weight.
Timeline of the "slow start" job, 1 s per step:
    0-3 s: every event 800 ms late, the source blocked on a full channel 90% of the time
    3-8 s: every event 2 ms late, nothing blocked
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from heliosdb.histograms import LatencyHistogram, counts_quantile
from heliosdb.metrics import METRICS, RECENT_WINDOW_NS, SAMPLES_PER_WINDOW, JobMetrics

from .timeline import S, ScriptedJob

TOPOLOGY = {"generate-1": ([], ["work"]), "work": (["work", "sink-memory-2"], [])}


def _slow_start(job: ScriptedJob, seconds: int = 8) -> None:
    for second in range(seconds):
        slow = second < 3
        job.metrics.latency.add(800_000_000 if slow else 2_000_000, weight=1_000)
        job.run(1.0, busy={"generate-1": 0.1, "work": 0.9 if slow else 0.2},
                blocked={"generate-1": 0.9 if slow else 0.0}, rows={"work": 1_000}, events=1_000)
        job.metrics.record()                # the job's sampler, every second here


def test_two_readings_of_a_histogram_give_the_quantiles_in_between():
    h = LatencyHistogram()
    h.add(500_000_000, weight=10)
    first = h.read()
    h.add(1_000_000, weight=90)
    h.add(3_000_000, weight=10)
    between = LatencyHistogram.quantile_between(first, h.read(), 0.5)
    assert between == pytest.approx(1.0, rel=0.06)              # a bucket's width: 6%
    assert LatencyHistogram.quantile_between(first, h.read(), 0.99) == pytest.approx(3.0, rel=0.06)
    assert LatencyHistogram.quantile_between(None, h.read(), 0.99) == pytest.approx(500.0, rel=0.06)
    assert math.isnan(LatencyHistogram.quantile_between(h.read(), h.read(), 0.5))


def test_bucket_quantiles_match_a_sorted_search_of_the_same_observations():
    rng = np.random.default_rng(7)
    values = (10 ** rng.uniform(4, 10, 2_000)).astype(np.int64)       # 10 us to 10 s
    h = LatencyHistogram()
    for v in values:
        h.add(int(v))
    for q in (0.5, 0.9, 0.99):
        exact = np.sort(values)[int(np.ceil(q * len(values))) - 1] / 1e6
        got = counts_quantile(LatencyHistogram.EDGES, h.read(), q)
        assert exact <= got <= exact * 10 ** (1 / LatencyHistogram.PER_DECADE) * 1.0001


def test_after_a_slow_start_the_recent_figures_follow_the_job_and_the_whole_run_ones_do_not():
    job = ScriptedJob(TOPOLOGY, job="slow-start")
    _slow_start(job)
    m = job.metrics.snapshot()
    assert m["recent_window_s"] == RECENT_WINDOW_NS / S == 5.0
    assert m["latency_p99_ms"] == pytest.approx(800, rel=0.06)          # the whole run
    assert m["latency_recent_p99_ms"] == pytest.approx(2.0, rel=0.06)   # the last 5 s
    assert m["latency_recent_p50_ms"] == pytest.approx(2.0, rel=0.06)
    assert m["events_per_s_recent"] == 1_000.0
    assert m["backpressure_recent"] == 0.0
    # The Prometheus flag keeps its 10 s window, so it still sees the slow start.
    assert m["streaming_backpressure"] == 1


def test_recent_figures_while_the_job_is_younger_than_the_window_cover_its_whole_run():
    job = ScriptedJob(TOPOLOGY)
    _slow_start(job, seconds=2)
    m = job.metrics.snapshot()
    assert m["recent_window_s"] == 2.0
    assert m["backpressure_recent"] == pytest.approx(0.9)
    assert m["latency_recent_p99_ms"] == pytest.approx(800, rel=0.06)


def test_the_snapshot_keeps_every_existing_key_and_stays_a_dict():
    m = ScriptedJob(TOPOLOGY).metrics.snapshot()
    for key in ("job", "elapsed_s", "running", "streaming_events_processed_total", "events_out",
                "events_per_s", "recent_events_per_s", "latency_p50_ms", "latency_p95_ms",
                "latency_p99_ms", "streaming_state_size_bytes", "open_windows",
                "streaming_late_events_total", "late_events", "watermark_lag_s",
                "streaming_dead_letters_total", "streaming_backpressure", "blocked_s", "tasks",
                "task_cpu_s", "streaming_checkpoints_total", "streaming_checkpoint_failures_total",
                "checkpoint_restores", "checkpoint_fallbacks", "operators"):
        assert key in m
    assert type(m).__mro__[1] is dict and m == dict(m)
    assert not any("recent" in name for name in METRICS)               # nothing new exported


def test_kept_samples_reach_back_a_window_and_stay_bounded_however_often_read():
    job = ScriptedJob(TOPOLOGY, window_s=10.0)
    for _ in range(3_000):                                              # 30 s of readings, 100/s
        job.run(0.01, busy={"work": 0.005})
        job.metrics.recent()
    kept = job.metrics._history
    assert len(kept) <= 2 * SAMPLES_PER_WINDOW + 2
    assert (kept[-1].t_ns - kept[0].t_ns) / S >= 10.0
    then, now = job.metrics.recent()
    assert 10.0 <= (now.t_ns - then.t_ns) / S <= 10.0 + 2 * 10.0 / SAMPLES_PER_WINDOW


def test_a_reading_that_misses_a_wait_as_it_ends_does_not_run_the_counters_back():
    job = ScriptedJob(TOPOLOGY)
    job.wait_from_now("work", "idle")
    job.clock.advance(1.0)
    first = job.metrics.sample()
    ts = job.task("work")
    ts.idle_since = 0                        # the channel clears the wait's start ...
    torn = job.metrics.sample()              # ... a reading right here misses the wait ...
    ts.idle_ns += S                          # ... then adds it up
    assert torn.tasks["work"][3] == first.tasks["work"][3] == S
    frac = JobMetrics.snapshot(job.metrics)["tasks"]["work"]
    assert 0.0 <= frac["busy"] <= 1.0 and frac["idle"] == 1.0
