"""The typed logical plan (heliosdb/logical.py): steps are frozen and validated, nodes keep what
the fluent API changes later, a plan walks one source's nodes."""
from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb import col
from heliosdb.errors import ConfigError, PlanError
from heliosdb.logical import (Batch, Filter, LogicalPlan, MapBatches, Node, RunningAggregate, Sink, Source,
                              WindowAggregate, splits_before)


def test_a_step_is_frozen():
    step = Batch(4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.size = 5


@pytest.mark.parametrize("make, error, match", [
    (lambda: Batch(0), ConfigError, "positive number of rows"),
    (lambda: MapBatches(3), PlanError, "function of a RecordBatch"),
    (lambda: RunningAggregate(("k",), (), ttl=(0, 1)), ConfigError, "must be positive"),
    (lambda: Source(None, batch_size=-1), ConfigError, "positive integer"),
])
def test_a_step_is_validated_where_it_is_made(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_each_fluent_call_records_its_step():
    env = hdb.StreamEnvironment()
    s = (env.from_iterable([{"k": 1, "ts": 0, "v": 1.0}]).filter(col("v") > 0).key_by("k")
         .window(hdb.TumblingWindow.of(1), time="ts").aggregate(n=hdb.count()))
    kinds = [type(n.step) for n in s._node.chain()]
    assert kinds == [Source, Filter, WindowAggregate]
    assert s._node.step.keys == ("k",) and s._node.step.aggs[0][0] == "n"


def test_name_and_parallelism_set_after_a_later_step_still_apply():
    # .name() / .set_parallelism() change the node later steps (and sinks) already point to.
    env = hdb.StreamEnvironment()
    f = env.generate(count=10).filter(col("value") > 0.5)
    out = f.sink(hdb.sinks.memory())
    f.set_parallelism(2).name("half")
    out.name("kept")
    text = str(env.explain())
    assert "fused kernel [half]" in text and "round-robin" in text and "memory sink[kept]" in text


def test_a_plan_of_two_sources_is_an_error_that_says_to_run_two_jobs():
    a = Node(Sink(None), Node(Source(None), None, "a"), "out-a")
    b = Node(Sink(None), Node(Source(None), None, "b"), "out-b")
    with pytest.raises(PlanError, match="separate jobs"):
        LogicalPlan([a, b])


def test_a_plan_lists_each_nodes_children_in_sink_order():
    src = Node(Source(None), None, "src")
    f = Node(Filter(None), src, "f")
    a, b = Node(Sink(None), f, "a"), Node(Sink(None), f, "b")
    plan = LogicalPlan([a, b])
    assert plan.children(src) == [f] and plan.children(f) == [a, b]
    assert {n.name for n in plan.nodes()} == {"src", "f", "a", "b"}


def test_splits_are_those_of_the_source_right_before():
    env = hdb.StreamEnvironment()
    t = pa.table({"p": [0, 1], "ts": [0, 1]})
    w = env.from_arrow(t, split_by="p").with_watermark("ts")
    assert splits_before(w._node).columns == ["p"]
    assert splits_before(w.filter(col("ts") > 0)._node) is None
