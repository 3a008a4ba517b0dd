"""Edges, without a job: where each kind sends data, side outputs and control items, and what a
task's output (its edges in order) does with a batch cut by watermarks."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from heliosdb.errors import DataError, ExecutionError
from heliosdb.operators.base import Barrier, Run, SideOutput, Tick, Watermark
from heliosdb.operators.exchange import HashPartitioner, Partitioned
from heliosdb.runtime.chain import StepFailed
from heliosdb.runtime.channel import END
from heliosdb.runtime.edges import (Answers, Forward, HashExchange, Output, RoundRobinEdge,
                                    SideEdge)
from heliosdb.runtime.sequence import RoundRobin, Sequenced


class Target:
    """Records what is put into it, as a channel would take it."""

    def __init__(self):
        self.got = []

    def put(self, item, rows=0, ingest_ns=0, origin=0, waiter=None):
        self.got.append((item, rows, ingest_ns, origin, waiter))

    @property
    def items(self):
        return [g[0] for g in self.got]


class Partials:
    """Stands for an item that travels like a batch but is not one (pre-aggregated partials)."""

    num_rows = 5


B = pa.record_batch({"k": np.arange(8, dtype=np.int64)})
CONTROL = [Watermark(1), Tick(2), Barrier(3), END]


def test_forward_to_several_targets_broadcasts_everything_but_side_outputs():
    a, b = Target(), Target()
    edge = Forward([a, b], origin=2)
    for item in [B, SideOutput("late", B), *CONTROL]:
        edge.send(item, 77, "task")
    for t in (a, b):
        assert t.items == [B, *CONTROL]
        assert [(rows, ingest, origin, w) for _, rows, ingest, origin, w in t.got] == \
            [(8, 77, 2, "task")] + [(0, 77, 2, "task")] * 4


def test_an_item_that_travels_like_a_batch_goes_through_forward_and_round_robin():
    a = Target()
    Forward([a]).send(Partials(), 0)
    assert a.got[0][1] == 5
    r0, r1 = Target(), Target()
    RoundRobinEdge(RoundRobin(2), [r0, r1]).send(Partials(), 0)
    assert r0.got[0][1] == 5 and not r1.got


def test_side_edge_takes_its_tag_only_as_a_batch_and_every_control_item():
    late, other = Target(), Target()
    edges = [SideEdge("late", [late], origin=1), SideEdge("other", [other])]
    for item in [B, SideOutput("late", B.slice(0, 3)), *CONTROL]:
        for e in edges:
            e.send(item, 0)
    assert [type(i).__name__ for i in late.items] == ["RecordBatch", "Watermark", "Tick", "Barrier", "End"]
    assert late.got[0][1] == 3 and late.got[0][3] == 1
    assert other.items == CONTROL


def test_hash_exchange_sends_each_subtask_its_rows_and_control_items_to_all():
    subtasks = [Target(), Target(), Target()]
    part = HashPartitioner(B.schema, ["k"], 3, "step")
    edge = HashExchange(part, subtasks)
    edge.send(B, 5)
    edge.send(SideOutput("late", B), 5)
    edge.send(Watermark(9), 5)
    expected = part.partitions(B)
    rows = 0
    for i, t in enumerate(subtasks):
        data = [g for g in t.got if type(g[0]) is Partitioned]
        if (expected == i).any():
            (msg, n, _, _, _), = data
            got = msg.resolve()
            assert n == got.num_rows == (expected == i).sum()
            assert got.column("k").to_pylist() == B.column("k").to_numpy()[expected == i].tolist()
            rows += n
        else:
            assert not data                 # no rows of the batch: nothing sent
        assert t.items[-1] == Watermark(9)
    assert rows == B.num_rows


def test_hash_exchange_refuses_an_item_that_is_not_a_record_batch():
    edge = HashExchange(HashPartitioner(B.schema, ["k"], 2, "step"), [Target(), Target()])
    with pytest.raises(ExecutionError, match="Partials cannot be hash-partitioned"):
        edge.send(Partials(), 0)


def test_round_robin_numbers_items_batches_to_one_replica_control_to_all_end_unnumbered():
    #   b0 -> r0   b1 -> r1   w2 -> r0, r1   b3 -> r0   END -> r0, r1
    r0, r1 = Target(), Target()
    edge = RoundRobinEdge(RoundRobin(2), [r0, r1], origin=0)
    for item in [B, B, Watermark(2), B.slice(0, 3)]:
        edge.send(item, 0)
    edge.send(SideOutput("late", B), 0)
    edge.send(END, 0)
    assert [(m.seq, m.offset) for m in r0.items[:-1]] == [(0, 0), (2, 16), (3, 16)]
    assert [(m.seq, m.offset) for m in r1.items[:-1]] == [(1, 8), (2, 16)]
    assert r0.items[1] is r1.items[1]            # one message for the broadcast watermark
    assert r0.items[-1] is END and r1.items[-1] is END
    assert [g[1] for g in r0.got] == [8, 0, 3, 0]


def test_output_sends_a_batch_cut_by_watermarks_as_one_run_when_every_edge_takes_runs():
    a = Target()
    items = [B, Watermark(1), B]
    Output([Forward([a], takes_runs=True)]).emit(items, 3)
    (run, rows, ingest, _, _), = a.got
    assert type(run) is Run and run.items == items and rows == 16 and ingest == 3


def test_output_sends_items_one_by_one_when_an_edge_does_not_take_runs():
    a, late = Target(), Target()
    Output([Forward([a], takes_runs=True), SideEdge("late", [late])]).emit([B, Watermark(1), B], 0)
    assert a.items == [B, Watermark(1), B]
    assert late.items == [Watermark(1)]


def test_output_finish_sends_the_flushed_items_then_the_end_through_every_edge():
    a, late = Target(), Target()
    Output([Forward([a]), SideEdge("late", [late])]).finish([B], "task")
    assert a.items == [B, END] and late.items == [END]
    Output([]).finish([B])                  # a sink: nowhere to send


def test_answers_one_message_per_item_numbered_as_the_input():
    class Input:
        seq = 0

    merge = Target()
    inp = Input()
    out = Answers([merge], origin=1, source=inp)
    inp.seq = 4
    out.emit([B, Watermark(3)], 9, "task")
    inp.seq = 5
    out.emit([], 10, "task")
    (a, rows, ingest, origin, _), (b, *_rest) = merge.got
    assert (a.seq, a.items, rows, ingest, origin) == (4, [B, Watermark(3)], 8, 9, 1)
    assert (b.seq, b.items) == (5, [])


def test_answers_carry_an_error_under_the_steps_name_not_the_replicas():
    class Input:
        seq = 3

    merge = Target()
    out = Answers([merge], origin=0, source=Input())
    out.fail(StepFailed("filter-2#1", ZeroDivisionError("x")), 0)
    out.fail(DataError("bad"), 0)
    first, second = merge.items
    assert first.seq == 3 and first.error.step == "filter-2" and isinstance(first.error.error, ZeroDivisionError)
    assert isinstance(second.error, DataError)
    with pytest.raises(KeyError):
        out.fail(KeyError("not a step's error"), 0)


def test_a_replica_flushing_at_the_end_is_an_engine_bug():
    merge = Target()
    out = Answers([merge], origin=0, source=None)
    out.finish([])
    assert merge.items == [END]
    with pytest.raises(ExecutionError, match="must be stateless"):
        out.finish([B])


def test_sequenced_counts_rows_of_what_carries_them():
    assert Sequenced(0, [B, Watermark(1), Tick(2), Barrier(3), SideOutput("late", B), Partials()]).num_rows == 21
