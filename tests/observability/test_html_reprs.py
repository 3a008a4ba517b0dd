"""What a notebook shows of results, handles, metrics, histories, streams, plans and diagnoses
(``_repr_html_``), and live results from a memory sink while its job runs.

Every HTML fragment must parse with its tags balanced and carry the figures it is about.
"""
from __future__ import annotations

from html.parser import HTMLParser
from typing import List

import pytest

import heliosdb as hdb
from heliosdb import col
from heliosdb.errors import ConfigError
from heliosdb.metrics import MetricsSnapshot
from heliosdb.runtime.job import JobResult
from heliosdb.testing import wait_until

from .timeline import Hold

VOID = {"br", "hr", "img", "meta", "input", "col"}


class Balanced(HTMLParser):
    """Collects text; fails on a closing tag that does not close the innermost open one."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: List[str] = []
        self.text: List[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parsed_text(fragment: str) -> str:
    """The text of an HTML fragment whose tags are balanced."""
    p = Balanced()
    p.feed(fragment)
    p.close()
    assert not p.stack, f"unclosed: {p.stack}"
    return " ".join(p.text)


def _finished(name: str, count: int = 10_000):
    env = hdb.StreamEnvironment()
    env.generate(count=count).filter(col("value") > 0.5).sink(hdb.sinks.memory())
    handle = env.execute_async(name=name)
    return handle, handle.wait()


def test_a_result_shows_its_figures():
    _, result = _finished("html-result")
    text = parsed_text(result._repr_html_())
    assert "job 'html-result'" in text
    odd = JobResult("<b>", result.duration_s, result.metrics)
    assert "job '<b>'" in parsed_text(odd._repr_html_())         # escaped, then read back
    for figure in ("duration", "events", "events/s", "p50", "p99", "late", "checkpoints", "dead letters"):
        assert figure in text
    assert "10,000" in text and f"{result.metrics['events_out']:,}" in text
    assert "metrics samples" in text


def test_a_handle_shows_its_state_now():
    hold = Hold(free=2)
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=500))
    env.generate().map_batches(hold).sink(hdb.sinks.memory())
    handle = env.execute_async(name="html-handle")
    try:
        assert wait_until(lambda: hold.holding.is_set())
        running = parsed_text(handle._repr_html_())
    finally:
        hold.release()
        handle.stop()
        handle.wait()
    assert "running" in running and "events/s (recent)" in running
    done = parsed_text(handle._repr_html_())
    assert "stopped" in done and f"{handle.metrics()['streaming_events_processed_total']:,}" in done


def test_a_metrics_snapshot_is_a_dict_that_shows_as_tables():
    handle, result = _finished("html-metrics")
    m = handle.metrics()
    assert isinstance(m, dict) and isinstance(m, MetricsSnapshot) and isinstance(result.metrics, MetricsSnapshot)
    text = parsed_text(m._repr_html_())
    assert "events/s (recent)" in text and "p99 (recent)" in text and "10,000" in text
    for op in m["operators"]:
        assert op in text


def test_a_history_shows_its_last_rows():
    _, result = _finished("html-history")
    text = parsed_text(result.history._repr_html_())
    assert "job 'html-history'" in text and "events_per_s" in text and "latency_p99_ms" in text
    assert "10,000" in text or "10000" in text
    assert repr(result.history).startswith("<MetricsHistory of job 'html-history': ")


def test_a_stream_shows_the_plan_it_would_run():
    s = hdb.StreamEnvironment().from_iterable([{"v": 1.0}]).filter(col("v") > 0).with_columns(w=col("v") * 2)
    text = parsed_text(s._repr_html_())
    assert "fused kernel" in text and "<Stream" in text


def test_a_stream_that_cannot_be_planned_says_why():
    s = hdb.StreamEnvironment().from_iterable([{"v": 1.0}]).filter(col("nope") > 0)
    text = parsed_text(s._repr_html_())
    assert "nope" in text and "Error" in text


def test_a_plan_and_a_diagnosis_show_as_html():
    w = (hdb.StreamEnvironment().from_iterable([{"ts": 0, "k": 1, "v": 1.0}]).key_by("k")
         .window(hdb.TumblingWindow.of(60), time="ts").aggregate(total=hdb.sum("v")))
    assert "window" in parsed_text(w.explain(events_per_second=1_000)._repr_html_())
    handle, _ = _finished("html-diagnosis")
    d = handle.diagnose(interval_s=0)
    text = parsed_text(d._repr_html_())
    assert "job html-diagnosis" in text and "busy" in text and "-0%" not in text


def test_a_memory_sink_gives_the_rows_so_far_while_its_job_runs():
    hold = Hold(free=3)
    out = hdb.sinks.memory()
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=500))
    env.generate().map_batches(hold).sink(out)
    handle = env.execute_async(name="live-results")
    try:
        assert wait_until(lambda: hold.holding.is_set() and out.num_rows == 1_500)
        live = out.snapshot()
        assert live.num_rows == 1_500 and live.column_names == ["ts", "key", "value", "category"]
        assert handle.results().equals(live)
        assert out.to_pandas().shape == (1_500, 4)
        assert repr(out) == "<MemorySink: 1,500 rows>"
    finally:
        hold.release()
        handle.stop()
        handle.wait()
    assert live.num_rows == 1_500                      # a snapshot does not grow afterwards
    assert handle.results(sink=out).num_rows == out.to_table().num_rows > 1_500


def test_results_needs_the_sink_when_a_job_has_several_or_none():
    a, b, other = hdb.sinks.memory(), hdb.sinks.memory(), hdb.sinks.memory()
    env = hdb.StreamEnvironment()
    s = env.generate(count=100)
    s.sink(a)
    s.filter(col("value") > 0.5).sink(b)
    handle = env.execute_async(name="two-sinks")
    handle.wait()
    with pytest.raises(ConfigError, match="has 2 memory sinks: pass results"):
        handle.results()
    assert handle.results(sink=a).num_rows == 100
    with pytest.raises(ConfigError, match="does not write to"):
        handle.results(sink=other)
    env = hdb.StreamEnvironment()
    env.generate(count=10).sink(hdb.sinks.callback(lambda b: None))
    handle = env.execute_async(name="no-memory-sink")
    handle.wait()
    with pytest.raises(ConfigError, match="has 0 memory sinks"):
        handle.results()
    with pytest.raises(ConfigError, match="not part of a running or finished job"):
        hdb.sinks.memory().snapshot()
