"""Metrics: the exported names, one registry per environment, the HTTP server, histograms,
backpressure flags, checkpoint counters, and what the hot path records."""
from __future__ import annotations

import re
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.request import urlopen

import numpy as np
import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb import col
from heliosdb.errors import ConfigError
from heliosdb.histograms import LatencyHistogram, PowerHistogram
from heliosdb.metrics import METRICS, JobMetrics, MetricsCollector
from heliosdb.metrics_server import MetricsServer
from heliosdb.testing import wait_until

from .timeline import Hold, standing_still

README = Path(__file__).resolve().parents[2] / "README.md"


def _scrape(url: str) -> str:
    with urlopen(url) as resp:
        return resp.read().decode()


def _value(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(got.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not in the exposition")


def _window_job(env: hdb.StreamEnvironment, count: int = 20_000) -> None:
    (env.generate(count=count).filter(col("value") > 0.2)
        .key_by("key").window(hdb.TumblingWindow.of(timedelta(seconds=1)), time="ts")
        .aggregate(n=hdb.count()).name("per-key").sink(hdb.sinks.memory()))


def test_the_user_guides_metric_names_are_defined():
    for name in ("streaming_events_processed_total", "streaming_latency_ms", "streaming_state_size_bytes",
                 "streaming_backpressure", "streaming_checkpoint_duration_seconds",
                 "streaming_checkpoint_failures_total", "streaming_operator_latency_ms"):
        assert name in METRICS


def test_every_metric_has_job_and_a_help_text():
    for name, (typ, labels, doc) in METRICS.items():
        assert labels[0] == "job" and doc and typ in ("counter", "gauge", "histogram", "info"), name
        assert name.endswith("_total") == (typ == "counter"), name


def test_readme_lists_every_metric():
    text = README.read_text()
    missing = [n for n in METRICS if f"`{n}`" not in text]
    assert not missing, f"README's metric table lacks {missing}"


def test_a_finished_job_exposes_its_counts_labelled_by_job_and_operator():
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=1000, parallelism=1,
                                                    metrics=hdb.MetricsConfig(port=0)))
    try:
        _window_job(env)
        result = env.execute(name="counted")
        text = _scrape(env.metrics_url)
    finally:
        env.close()
    assert _value(text, "streaming_events_processed_total", job="counted", operator="generate-1") == 20_000
    ops = result.metrics["operators"]
    for op, m in ops.items():
        assert _value(text, "streaming_operator_events_in_total", job="counted", operator=op) == m["rows_in"]
        assert _value(text, "streaming_operator_events_out_total", job="counted", operator=op) == m["rows_out"]
    # One latency observation per event the sink's stage (here: window + sink) took in.
    assert _value(text, "streaming_latency_ms_count", job="counted") == ops["per-key"]["rows_in"]
    assert _value(text, "streaming_operator_batch_size_rows_count", job="counted", operator="per-key") \
        == ops["per-key"]["batches"]
    assert _value(text, "streaming_job_running", job="counted") == 0
    assert _value(text, "streaming_checkpoint_failures_total", job="counted") == 0


def test_environments_of_one_process_share_its_server_and_a_rerun_replaces_its_series():
    # Servers are per process (a notebook cell run again must not find its port taken): two
    # port=0 environments share the any-port server, jobs told apart by name, the newest run
    # of a name (from either environment) replacing the older.
    envs = [hdb.StreamEnvironment(hdb.StreamingConfig(metrics=hdb.MetricsConfig(port=0))) for _ in range(2)]
    try:
        for i, env in enumerate(envs):
            env.generate(count=1000 * (i + 1)).sink(hdb.sinks.memory())
            env.execute(name=f"env-{i}")
            env.execute(name="same-name")
        assert envs[0].metrics_url == envs[1].metrics_url
        text = _scrape(envs[0].metrics_url)
        for i in range(2):
            assert _value(text, "streaming_events_processed_total", job=f"env-{i}") == 1000 * (i + 1)
        assert _value(text, "streaming_events_processed_total", job="same-name") == 2000
        assert text.count('streaming_events_processed_total{job="same-name"') == 1
    finally:
        for env in envs:
            env.close()


def test_jobs_of_one_environment_are_told_apart_by_their_job_label():
    env = hdb.StreamEnvironment(hdb.StreamingConfig(metrics=hdb.MetricsConfig(port=0)))
    try:
        env.generate(count=500).sink(hdb.sinks.memory())
        env.execute(name="first")
        env.execute(name="second")
        env.execute(name="second")                           # a rerun replaces the earlier run
        text = _scrape(env.metrics_url)
    finally:
        env.close()
    assert _value(text, "streaming_events_processed_total", job="first") == 500
    assert _value(text, "streaming_events_processed_total", job="second") == 500
    assert text.count('streaming_events_processed_total{job="second"') == 1


def test_a_taken_port_is_a_clear_config_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = hdb.StreamEnvironment(hdb.StreamingConfig(metrics=hdb.MetricsConfig(port=port)))
        with pytest.raises(ConfigError, match=f"port={port}.*port=0 for any free one"):
            env.metrics_url


@pytest.mark.parametrize("kwargs, message", [
    ({"port": -1}, "TCP port"), ({"port": True}, "TCP port"), ({"host": ""}, "address"),
    ({"window": 0}, "positive"),
])
def test_metrics_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        hdb.MetricsConfig(**kwargs)


def test_streaming_config_takes_only_a_metrics_config():
    with pytest.raises(ConfigError, match="MetricsConfig"):
        hdb.StreamingConfig(metrics=9464)


def test_close_stops_serving():
    server = MetricsServer(port=0)
    url = server.url
    assert "streaming" in _scrape(url) or True
    server.close()
    server.close()                                           # idempotent
    with pytest.raises(OSError):
        _scrape(url)


def test_latency_histogram_buckets_match_a_sorted_search():
    h = LatencyHistogram(locked=False)
    rng = np.random.default_rng(7)
    values = (10 ** rng.uniform(2, 12.5, 5_000)).astype(np.int64)      # 100 ns .. ~3000 s
    for v in values:
        h.add(int(v))
    expected = np.bincount(np.searchsorted(h.edges, values, side="right"), minlength=len(h.counts))
    # The log-based index may differ from searchsorted only for a value within float error of an edge.
    assert np.abs(np.asarray(h.counts) - expected).sum() <= 2
    assert h.total == len(values) and h.sum_ns == int(values.sum())


def test_histogram_export_is_cumulative_and_ends_with_the_total():
    h = LatencyHistogram()
    for ms in (0.5, 2, 2, 40, 300_000):
        h.add(int(ms * 1e6))
    bounds, total, s = h.buckets(1e6)
    counts = [c for _, c in bounds]
    assert counts == sorted(counts) and total == 5 and counts[-1] == 4       # 300 s is past 100 s
    assert s == pytest.approx(0.5 + 2 + 2 + 40 + 300_000)
    p = PowerHistogram()
    for n in (1, 3, 4, 5, 65_536):
        p.add(n)
    b, total, s = p.buckets()
    assert dict(b)[4.0] == 3 and dict(b)[65536.0] == 5 and total == 5 and s == 65_549


def test_checkpoint_counters_are_exported_as_the_coordinator_updates_them():
    registry_text = []
    jm = JobMetrics("ckpt")
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    MetricsCollector(registry).add(jm)
    jm.checkpoints.completed(epoch=1, duration_s=2.5, size_bytes=1000)
    jm.checkpoints.completed(epoch=2, duration_s=400.0)
    jm.checkpoints.failed(epoch=3, error=OSError("bucket gone"))
    registry_text.append(generate_latest(registry).decode())
    text = registry_text[0]
    assert _value(text, "streaming_checkpoints_total", job="ckpt") == 2
    assert _value(text, "streaming_checkpoint_failures_total", job="ckpt") == 1
    assert _value(text, "streaming_checkpoint_duration_seconds_count", job="ckpt") == 2
    assert _value(text, "streaming_checkpoint_duration_seconds_bucket", job="ckpt", le="316.228") == 1
    assert _value(text, "streaming_checkpoint_duration_seconds_bucket", job="ckpt", le="1000") == 2


def test_backpressure_is_flagged_while_a_held_step_blocks_the_source():
    # Three batches pass the step (each taking at least 3 ms), then it holds the fourth: the
    # source fills the channel into it and blocks.  A reading while held starts the trailing
    # window (100 ms); the next readings, once that much has passed, cover nothing but the hold.
    hold = Hold(free=3, each_s=0.003)
    env = hdb.StreamEnvironment(hdb.StreamingConfig(
        batch_size=1000, metrics=hdb.MetricsConfig(port=0, window=timedelta(milliseconds=100))))
    env.generate().map_batches(hold).name("slow-step").sink(hdb.sinks.callback(lambda b: None))
    handle = env.execute_async(name="bp")
    source = handle._job.metrics.tasks["generate-1"]
    try:
        held = handle._job.metrics.tasks["slow-step"]
        assert wait_until(lambda: standing_still(hold, held, 1000) and source.blocked_since > 0, 60)
        handle.metrics()
        time.sleep(0.15)            # at least the window: its start is the reading above
        text = _scrape(env.metrics_url)
        snap = handle.metrics()
    finally:
        hold.release()
        handle.stop()
        handle.wait()
        env.close()
    assert _value(text, "streaming_backpressure", job="bp") == 1
    assert snap["streaming_backpressure"] == 1
    assert snap["tasks"]["generate-1"]["blocked"] == 1.0 and snap["tasks"]["slow-step"]["busy"] == 1.0
    assert _value(text, "streaming_operator_backpressure", job="bp", operator="slow-step") == 0.0
    assert _value(text, "streaming_task_blocked_seconds_total", job="bp", task="generate-1") >= 0.15
    # blocked: the 1,000 rows to come do not fit in the 10,000 the channel takes
    assert _value(text, "streaming_channel_fill_ratio", job="bp", operator="slow-step") > 0.9
    assert _value(text, "streaming_operator_latency_ms_count", job="bp", operator="slow-step") == 3
    assert _value(text, "streaming_operator_latency_ms_bucket", job="bp", operator="slow-step", le="1.77828") == 0


def test_a_job_whose_channels_never_fill_is_not_flagged():
    # 5,000 events in all: a channel of 10,000 always has room, so no task ever blocks.
    env = hdb.StreamEnvironment(hdb.StreamingConfig(buffer_size=10_000))
    env.generate(count=5_000).sink(hdb.sinks.callback(lambda b: None))
    handle = env.execute_async(name="calm")
    handle.wait()
    snap = handle.metrics()
    assert snap["streaming_backpressure"] == 0
    assert snap["tasks"]["generate-1"]["blocked"] == 0.0


def test_metrics_can_be_read_while_windows_open_and_close():
    env = hdb.StreamEnvironment()
    (env.generate(rate=200_000, duration=timedelta(seconds=2), keys=5_000)
     .key_by("key").window(hdb.TumblingWindow.of(timedelta(milliseconds=20)), time="ts")
     .aggregate(n=hdb.count()).sink(hdb.sinks.callback(lambda b: None)))
    handle = env.execute_async(name="metrics-race")
    reads = 0
    while not handle.done:
        m = handle.metrics()                # must never raise while the window thread works
        assert m["streaming_state_size_bytes"] >= 0
        reads += 1
    result = handle.wait()
    assert reads > 10
    assert result.metrics["events_out"] > 0


def test_with_operator_metrics_off_counts_remain(monkeypatch):
    monkeypatch.setenv("HELIOSDB_METRICS", "0")
    env = hdb.StreamEnvironment()
    env.generate(count=5000).filter(col("value") > 0.5).sink(hdb.sinks.memory())
    m = env.execute(name="untimed").metrics
    assert m["streaming_events_processed_total"] == 5000
    ops = m["operators"]
    assert all(o["busy_s"] == 0 for o in ops.values())
    assert sum(o["rows_in"] for o in ops.values() if o["kind"].endswith("sink")) == m["events_out"] > 0


# -- watermark lag ------------------------------------------------------------------------------
def _lag_operators(text: str, job: str) -> set:
    return {dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))["operator"]
            for line in text.splitlines()
            if line.startswith("streaming_watermark_lag_seconds{") and f'job="{job}"' in line}


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_running_event_time_job_exports_watermark_lag_of_its_assigner_and_window(parallelism):
    # Events an hour old, 1 ms apart; the source yields 2,000 of them, then waits (the job
    # runs on).  Windows of 500 ms, bound 100 ms: once a window has reached the sink, the
    # assigner and the window hold a watermark in [start + 500 ms, start + 1.9 s], so their
    # lag is an hour minus at most 1.9 s, plus however long the test took.
    gate, emitted = threading.Event(), threading.Event()
    start_ms = int(time.time() * 1000) - 3_600_000

    def records():
        for i in range(2_000):
            yield {"k": i % 7, "ts": start_ms + i, "v": 1.0}
        gate.wait(120)

    job = f"lagging-{parallelism}"
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=500, parallelism=parallelism,
                                                    metrics=hdb.MetricsConfig(port=0)))
    (env.from_iterable(records())
        .with_watermark("ts", max_out_of_orderness=timedelta(milliseconds=100)).name("event-time")
        .key_by("k").window(hdb.TumblingWindow.of(timedelta(milliseconds=500))).aggregate(n=hdb.count())
        .name("per-key").sink(hdb.sinks.callback(lambda b: emitted.set())))
    handle = env.execute_async(name=job)
    try:
        assert emitted.wait(120), "no window reached the sink"
        running = _scrape(env.metrics_url)
        snap = handle.metrics()
    finally:
        gate.set()
        handle.wait()
    try:
        ended = _scrape(env.metrics_url)
    finally:
        env.close()
    assert _lag_operators(running, job) == {"event-time", "per-key"}     # no sink, no source
    for op in ("event-time", "per-key"):
        lag = _value(running, "streaming_watermark_lag_seconds", job=job, operator=op)
        assert 3_598 < lag < 7_200
        assert snap["watermark_lag_s"][op] > 3_598
    # Once the input has ended the watermark is no time at all: no series.
    assert _lag_operators(ended, job) == set()


def test_no_watermark_lag_before_the_first_watermark():
    from prometheus_client import CollectorRegistry, generate_latest

    from heliosdb.operators.watermark import WatermarkAssigner

    assigner = WatermarkAssigner("wm", pa.schema([("ts", pa.int64())]), "ts", 0)
    jm = JobMetrics("fresh", plan_ops=[assigner])
    registry = CollectorRegistry(auto_describe=False)
    MetricsCollector(registry).add(jm)
    assert _lag_operators(generate_latest(registry).decode(), "fresh") == set()
    assigner.process_batch(pa.record_batch([pa.array([int(time.time() * 1000) - 60_000])], names=["ts"]))
    assert _lag_operators(generate_latest(registry).decode(), "fresh") == {"wm"}
    assert 59 < _value(generate_latest(registry).decode(), "streaming_watermark_lag_seconds", job="fresh") < 3_600


def test_the_dashboards_watermark_panel_reads_the_exported_series_and_labels():
    from tests.observability.opsfiles import dashboard_exprs

    exprs = [e for e in dashboard_exprs() if "streaming_watermark_lag_seconds" in e]
    assert exprs, "the dashboard has no watermark lag panel"
    _, labels, _ = METRICS["streaming_watermark_lag_seconds"]
    for expr in exprs:
        by = re.search(r"by \(([^)]*)\)", expr)
        assert by and {label.strip() for label in by.group(1).split(",")} <= set(labels), expr
