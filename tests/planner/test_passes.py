"""The planner's passes (heliosdb/planner/): every step kind has its schema and its lowering,
the parallelism decisions, and the replica pass reading the operators' declared contract."""
from __future__ import annotations

import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb import logical
from heliosdb.logical import LateOutput, Node, PyFunction, Source, Step, WindowAggregate
from heliosdb.operators.base import Operator
from heliosdb.planner.lower import LOWERING
from heliosdb.planner.parallelism import layout
from heliosdb.planner.replicas import _copies, _run
from heliosdb.planner.schema import SCHEMA

STEPS = [c for c in vars(logical).values()
         if isinstance(c, type) and issubclass(c, Step) and c not in (Step, PyFunction)]


@pytest.mark.parametrize("step", STEPS, ids=lambda c: c.__name__)
def test_every_step_kind_has_a_schema_and_a_lowering(step):
    assert step in SCHEMA
    # a source starts the plan and a late output is lowered with its window
    assert step in LOWERING or step in (Source, LateOutput)


def _window(spec, time="ts"):
    return Node(WindowAggregate(("k",), spec, time, (("n", hdb.count()),)), None, "w")


@pytest.mark.parametrize("spec, time, parallel, expected", [
    (hdb.TumblingWindow.of(1), "ts", 4, "two_phase"),
    (hdb.SlidingWindow.of(4, 2), "ts", 2, "two_phase"),
    (hdb.SessionWindow.with_gap(1), "ts", 2, "by_key"),
    (hdb.TumblingWindow.of(1), None, 2, "by_key"),          # processing time
    (hdb.TumblingWindow.of(1), "ts", 1, "one"),
])
def test_a_keyed_step_runs_one_two_phase_or_by_key(spec, time, parallel, expected):
    assert layout(_window(spec, time), time, parallel) == expected


class _Copies(Operator):
    parallel_kind = "replicas"

    def __init__(self, n):
        self.parallel = n


def test_only_operators_declaring_replicas_are_replicated():
    lone = Operator()
    lone.parallel = 3                  # not a "replicas" operator: runs once
    assert _copies(lone) == 1 and _copies(_Copies(3)) == 3 and _copies(_Copies(1)) == 1
    ops = [lone, _Copies(2), _Copies(2), _Copies(3)]
    assert _run(ops) == (1, 3, 2)      # consecutive operators of the same count share replicas


def test_by_key_subtasks_are_told_their_placement():
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=3))
    _ = env.from_arrow(pa.table({"k": [1], "v": [1.0]})).key_by("k").aggregate(s=hdb.sum("v")).sink(
        hdb.sinks.memory())
    from heliosdb.plan import build

    _, _, state_ops, _ = build(env, list(env._sinks), explain=True)
    assert [(p.subtask, p.parallelism, p.keys) for p in (op.placement for op in state_ops)] == [
        (0, 3, ("k",)), (1, 3, ("k",)), (2, 3, ("k",))]


def test_late_rows_still_arrive_when_replicas_follow_the_window():
    # window + late_output, then a filter run as 2 replicas: the window moves to the stage
    # that dispatches to the replicas, and its late rows' stage must move with it
    env = hdb.StreamEnvironment()
    rows = [{"ts": 5000, "k": 1}, {"ts": 100, "k": 1}]                 # 100 is 4.9 s late
    w = (env.from_iterable(rows).with_batch_size(1).with_watermark("ts").key_by("k")
         .window(hdb.TumblingWindow.of(1)).aggregate(n=hdb.count()))
    late, out = hdb.sinks.memory(), hdb.sinks.memory()
    w.filter(hdb.col("n") > 0).set_parallelism(2).sink(out)
    w.late_output().sink(late)
    env.execute(name="late-after-replicas")
    assert late.to_table().to_pydict() == {"ts": [100], "k": [1]} and out.to_table().num_rows == 1
