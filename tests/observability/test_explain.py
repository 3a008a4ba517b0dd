"""explain(): the physical plan after fusion, parallelism per stage, and the user guide's state
memory estimate (events/s x window seconds x event bytes x parallelism)."""
from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb import col
from heliosdb.errors import PlanError


def _bytes_of(schema: pa.Schema, columns) -> int:
    """Oracle: the widths pyarrow gives the fixed-width columns."""
    return sum(schema.field(c).type.bit_width // 8 for c in columns)


def _w1_like(env, parallelism=None):
    s = (env.generate(rate=250_000).filter(col("value") > 0.2).name("keep")
         .with_columns(v2=col("value") * 2.0).name("double")
         .key_by("key").window(hdb.TumblingWindow.of(timedelta(seconds=5)), time="ts")
         .aggregate(n=hdb.count(), total=hdb.sum("v2")).name("per-key"))
    return s.set_parallelism(parallelism) if parallelism else s


def test_explain_shows_fusion_parallelism_and_the_estimate_from_the_declared_rate():
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
    plan = _w1_like(env, parallelism=2).explain()
    text = str(plan)
    assert "fused kernel [keep -> double]" in text and "2 steps fused into one kernel" in text
    # two-phase: 2 replicas pre-aggregate, one stage merges their partials in order
    assert "per-key.pre#0..per-key.pre#1 (threads 3-4, parallelism 2)" in text
    assert "stage-0 (thread 2, parallelism 1) -> per-key.pre#0..per-key.pre#1 round-robin" in text
    assert "(thread 5, parallelism 1, merges 2 inputs in order)" in text
    (est,) = plan.estimates
    assert est.rate_from == "the source's declared rate" and "declared rate" in text
    schema = pa.schema([("ts", pa.int64()), ("key", pa.int64()), ("v2", pa.float64())])
    assert est.event_bytes == _bytes_of(schema, ["ts", "key", "v2"])
    assert est.bytes == 250_000 * 5 * est.event_bytes * 2
    assert plan.state_bytes == est.bytes


def test_events_per_second_argument_overrides_the_declared_rate_and_is_named():
    env = hdb.StreamEnvironment()
    plan = _w1_like(env, parallelism=1).explain(events_per_second=1_000)
    (est,) = plan.estimates
    assert est.events_per_second == 1_000 and est.parallelism == 1
    assert "explain(events_per_second=)" in str(plan)
    assert est.bytes == 1_000 * 5 * est.event_bytes


def test_without_a_rate_the_estimate_says_how_to_get_one():
    env = hdb.StreamEnvironment()
    s = (env.from_arrow(pa.table({"ts": [0], "k": ["a"], "v": [1.0]})).key_by("k")
         .window(hdb.TumblingWindow.of(60), time="ts").aggregate(total=hdb.sum("v")))
    plan = s.explain()
    assert plan.estimates[0].bytes is None and plan.state_bytes is None
    assert "pass explain(events_per_second=)" in str(plan)
    # a string key: offsets plus the assumed payload, stated in the output
    assert "k string 20" in str(plan)


def test_env_explain_takes_events_per_second_and_renders_html():
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
    _w1_like(env).sink(hdb.sinks.memory())
    plan = env.explain(events_per_second=10)
    html = plan._repr_html_()
    assert "<table>" in html and "state estimate" in html and "explain(events_per_second=)" in html


@pytest.mark.parametrize("bad", [0, -5, "fast", True])
def test_events_per_second_must_be_positive(bad):
    env = hdb.StreamEnvironment()
    with pytest.raises(PlanError, match="events_per_second"):
        _w1_like(env).explain(events_per_second=bad)


def test_a_stateless_plan_has_no_estimate():
    plan = hdb.StreamEnvironment().generate(count=10).filter(col("value") > 0).explain()
    assert plan.estimates == [] and "state memory estimate" not in str(plan)


# -- explain() has no side effects --------------------------------------------------------------
def test_explain_after_execute_keeps_memory_sink_results():
    env = hdb.StreamEnvironment()
    out = hdb.sinks.memory()
    env.from_iterable([{"x": 1}, {"x": 2}]).sink(out)
    env.execute(name="explain-keeps")
    env.explain()
    assert out.to_table().num_rows == 2


def test_explain_creates_no_output_folder(tmp_path):
    env = hdb.StreamEnvironment()
    target = tmp_path / "not-yet"
    env.from_iterable([{"x": 1}]).sink(hdb.sinks.parquet(str(target)))
    assert "parquet sink" in str(env.explain())
    assert not target.exists()
