"""A job's metrics over time: ``JobHandle.history()`` / ``JobResult.history``, its tables and
its plot.

Rows of a scripted job are recorded on a clock the test moves (exact rates, quantiles and
fractions); a real job shows that its join thread samples it from start to end.
"""
from __future__ import annotations

from datetime import timedelta

import matplotlib
import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb.errors import ConfigError
from heliosdb.history import COLUMNS, SCHEMA, MetricsHistory

from .timeline import ScriptedJob

matplotlib.use("Agg")

TOPOLOGY = {"generate-1": ([], ["work"]), "work": (["work", "sink-memory-2"], [])}
KINDS = {"sink-memory-2": "memory sink"}


def _second(job: ScriptedJob, latency_ms: float, blocked: float = 0.0, events: int = 1_000) -> None:
    job.metrics.latency.add(int(latency_ms * 1e6), weight=events)
    job.run(1.0, busy={"generate-1": 0.05, "work": 0.5}, blocked={"generate-1": blocked},
            rows={"work": events, "sink-memory-2": events}, events=events)


def test_each_row_holds_the_interval_since_the_previous_one():
    job = ScriptedJob(TOPOLOGY, kinds=KINDS, job="rows")
    history = MetricsHistory("rows", interval_s=1.0)
    history.record(job.metrics)                       # t = 0
    _second(job, 800, blocked=0.9)
    history.record(job.metrics)                       # t = 1: the slow second
    _second(job, 2, events=3_000)
    history.record(job.metrics)                       # t = 2: a fast one
    t = history.to_arrow().to_pydict()
    assert t["t_s"] == [0.0, 1.0, 2.0]
    assert t["events"] == [0, 1_000, 4_000] and t["events_out"] == [0, 1_000, 4_000]
    assert t["events_per_s"] == [0.0, 1_000.0, 3_000.0]
    assert t["latency_p99_ms"][0] is None                        # nothing reached a sink yet
    assert t["latency_p99_ms"][1] == pytest.approx(800, rel=0.06)
    assert t["latency_p99_ms"][2] == pytest.approx(2, rel=0.06)  # that interval's, not the run's
    assert t["backpressure"] == [0.0, pytest.approx(0.9), 0.0]
    assert t["watermark"] == [None] * 3 and t["watermark_lag_ms"] == [None] * 3
    assert t["late_events"] == [0] * 3 and t["checkpoints"] == [0] * 3


def test_a_row_close_after_the_previous_one_replaces_it():
    job = ScriptedJob(TOPOLOGY, kinds=KINDS)
    history = MetricsHistory("close", interval_s=1.0)
    history.record(job.metrics)
    _second(job, 2)
    history.record(job.metrics)
    job.run(0.1, rows={"work": 900}, events=900)                 # the batcher's last flush
    history.record(job.metrics)                                  # the final row, 0.1 s later
    t = history.to_arrow().to_pydict()
    assert t["t_s"] == [0.0, pytest.approx(1.1)]
    assert t["events_per_s"][-1] == pytest.approx(1_900 / 1.1)   # not 900 / 0.1


def test_rows_stay_bounded_thinning_the_older_half():
    job = ScriptedJob(TOPOLOGY, kinds=KINDS)
    history = MetricsHistory("long", interval_s=1.0, max_samples=100)
    for _ in range(1_000):
        _second(job, 2)
        history.record(job.metrics)
    t = history.to_arrow()["t_s"].to_pylist()
    assert len(t) <= 100 and t[-1] == 1_000.0
    assert t == sorted(t) and t[-40:] == [float(s) for s in range(961, 1_001)]  # recent: every one
    assert t[0] <= 10.0                                          # and it still reaches back


def test_the_tables_share_one_schema_empty_or_not():
    history = MetricsHistory("empty")
    assert history.to_arrow().schema == SCHEMA and history.to_arrow().num_rows == 0
    assert list(history.to_pandas().columns) == list(COLUMNS)
    job = ScriptedJob(TOPOLOGY, kinds=KINDS)
    history.record(job.metrics)
    assert history.to_polars().columns == list(COLUMNS)
    assert history.to_arrow().schema.field("watermark").type == pa.timestamp("ms", tz="UTC")


def test_a_real_job_is_sampled_from_start_to_end():
    env = hdb.StreamEnvironment(hdb.StreamingConfig(metrics_sample_interval=timedelta(milliseconds=50)))
    (env.generate(rate=20_000, duration=timedelta(seconds=0.6))
        .with_watermark(time="ts", max_out_of_orderness=timedelta(milliseconds=10))
        .sink(hdb.sinks.memory()))
    result = env.execute(name="sampled")
    t = result.history.to_arrow().to_pydict()
    assert result.history.interval_s == 0.05
    assert len(t["t_s"]) >= 3 and t["t_s"] == sorted(t["t_s"])
    assert t["events"][-1] == result.metrics["streaming_events_processed_total"]
    assert t["events_out"][-1] == result.metrics["events_out"]
    assert any(w is not None for w in t["watermark"])            # event time: a watermark
    assert all(0.0 <= b <= 1.0 for b in t["backpressure"])
    handle_rows = result.history.rows()
    assert handle_rows[-1][0] <= result.duration_s + 0.05


def test_the_sample_interval_must_be_positive():
    with pytest.raises(ConfigError, match="metrics_sample_interval"):
        hdb.StreamingConfig(metrics_sample_interval=0)
    with pytest.raises(ConfigError, match="positive"):
        MetricsHistory("x", interval_s=-1)


def test_plot_draws_one_panel_per_column_sharing_the_time_axis():
    job = ScriptedJob(TOPOLOGY, kinds=KINDS)
    history = MetricsHistory("plotted", interval_s=1.0)
    for ms in (800, 2, 2):
        history.record(job.metrics)
        _second(job, ms)
    fig = history.plot()
    axes = fig.axes
    assert [a.get_ylabel() for a in axes] == ["events/s", "latency (ms)", "backpressure"]
    assert axes[-1].get_xlabel() == "seconds since start"
    assert all(a.get_shared_x_axes().joined(axes[0], a) for a in axes)
    assert [line.get_label() for line in axes[1].get_lines()] == ["p50", "p99"]
    assert list(axes[0].get_lines()[0].get_xdata()) == [0.0, 1.0, 2.0]


def test_plot_takes_columns_and_axes():
    import matplotlib.pyplot as plt

    job = ScriptedJob(TOPOLOGY, kinds=KINDS)
    history = MetricsHistory("chosen")
    history.record(job.metrics)
    fig, (a, b) = plt.subplots(2)
    try:
        assert history.plot(["events", ("latency_p50_ms", "latency_p99_ms")], ax=[a, b]) is fig
        assert a.get_ylabel() == "events" and b.get_ylabel() == "latency (ms)"
        with pytest.raises(ConfigError, match="no column .*evnts.*the columns are time, events"):
            history.plot(["evnts"])
        with pytest.raises(ConfigError, match="one axes per panel"):
            history.plot(["events", "late_events", "state_bytes"], ax=[a, b])
    finally:
        plt.close(fig)


def test_a_result_plots_its_history():
    env = hdb.StreamEnvironment()
    env.generate(count=10_000).sink(hdb.sinks.memory())
    fig = env.execute(name="result-plot").plot()
    assert len(fig.axes) == 3


def test_without_matplotlib_plot_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=r"pip install 'heliosdb-streaming\[notebook\]'"):
        MetricsHistory("x").plot()
