"""A source of several inputs, without a job: the composite reader (fair interleaving, an
input that ends, positions), the per-input batchers, the routed edge and a join's two-sided
input."""
from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from heliosdb.connectors.base import SourceReader, SourceSpec
from heliosdb.connectors.composite import INPUT_END, CompositeReader, CompositeSource, Tagged
from heliosdb.connectors.sources import ArrowSource
from heliosdb.errors import ConfigError
from heliosdb.operators.base import WATERMARK_MAX, Barrier, Sided, Tick, Watermark
from heliosdb.operators.exchange import HashPartitioner
from heliosdb.runtime.batcher import InputBatchers
from heliosdb.runtime.channel import END, Channel
from heliosdb.runtime.edges import Forward, HashExchange, RoutedEdge
from heliosdb.runtime.gate import InputGate, SidedInput


def table(name: str, n: int) -> pa.Table:
    return pa.table({name: np.arange(n, dtype=np.int64)})


def composite(*tables, sizes=None):
    sizes = sizes or [2] * len(tables)
    return CompositeSource([ArrowSource(t) for t in tables], sizes, [10**8] * len(tables))


def drain(reader):
    """Every piece until the reader is exhausted, as (input, rows or 'end')."""
    out = []
    while True:
        pieces = reader.poll(0)
        if pieces is None:
            return out
        out += [(t.index, "end" if t.batch is INPUT_END else t.num_rows) for t, _ in pieces]


def test_inputs_are_read_in_turn_and_an_ended_input_drops_out():
    reader = composite(table("a", 5), table("b", 2), table("c", 4)).build()
    reader.open(batch_size=2)
    assert drain(reader) == [(0, 2), (1, 2), (2, 2), (0, 2), (1, "end"), (2, 2), (0, 1), (2, "end"),
                             (0, "end")]
    assert reader.position() == [{"row": 5}, {"row": 2}, {"row": 4}]


def test_each_input_opens_with_its_own_batch_size():
    reader = composite(table("a", 6), table("b", 6), sizes=[3, 6]).build()
    reader.open(batch_size=1)
    assert [p for p in drain(reader) if p[1] != "end"] == [(0, 3), (1, 6), (0, 3)]


class _Slow(SourceReader):
    """Nothing ready for its first polls, then one batch, then the end."""

    replayable = True

    def __init__(self):
        spec = SourceSpec()
        spec.schema = pa.schema([("x", pa.int64())])
        super().__init__(spec)
        self.polls = []

    def poll(self, timeout_s):
        self.polls.append(timeout_s)
        if len(self.polls) < 3:
            return []
        if len(self.polls) == 3:
            return [(pa.record_batch({"x": [1]}), time.time_ns())]
        return None


def test_an_input_without_rows_does_not_hold_up_the_others():
    slow = _Slow()
    reader = composite(table("a", 4), table("b", 1)).build()
    reader.readers[1] = slow
    reader.open(batch_size=2)
    got = drain(reader)
    assert [p for p in got if p[0] == 0] == [(0, 2), (0, 2), (0, "end")]
    assert (1, 1) in got and got[-1] == (1, "end")


def test_the_wait_is_shared_between_the_inputs_with_nothing_ready():
    a, b = _Slow(), _Slow()
    reader = composite(table("a", 1), table("b", 1)).build()
    reader.readers[:] = [a, b]
    assert reader.poll(0.2) == []          # a and b first polled without waiting, then 0.1 s each
    assert a.polls == [0, 0.1] and b.polls == [0, 0.1]
    assert reader.waited_ns > 0 and reader.paced_ns == 0     # the source's task counts it as idle


def test_position_is_every_inputs_and_seek_seeks_each():
    spec = composite(table("a", 6), table("b", 6))
    reader = spec.build()
    reader.seek([{"row": 4}, {"row": 2}])
    reader.open(batch_size=2)
    assert [p for p in drain(reader) if p[1] != "end"] == [(0, 2), (1, 2), (1, 2)]
    with pytest.raises(ConfigError, match="source of 2 inputs cannot seek"):
        spec.build().seek([{"row": 1}])


def test_replayable_only_when_every_input_is_and_named_after_the_one_that_is_not():
    spec = composite(table("a", 1), table("b", 1))
    reader = spec.build()
    assert reader.replayable and reader.inputs == 2 and spec.bounded
    mixed = CompositeReader(spec, [reader.readers[0], _Recorder()])
    assert not mixed.replayable and mixed.kind == "recorder"


class _Recorder(SourceReader):
    def __init__(self):
        spec = SourceSpec()
        spec.schema = pa.schema([])
        spec.kind = "recorder"
        super().__init__(spec)
        self.calls = []

    def attach_metrics(self, metrics):
        self.calls.append(("metrics", metrics))

    def commit_offsets(self, position):
        self.calls.append(("commit", position))


def test_metrics_and_committed_offsets_go_to_every_input():
    a, b = _Recorder(), _Recorder()
    reader = CompositeReader(composite(table("a", 1), table("b", 1)), [a, b])
    reader.attach_metrics("m")
    reader.commit_offsets([1, 2])
    assert a.calls == [("metrics", "m"), ("commit", 1)] and b.calls == [("metrics", "m"), ("commit", 2)]


def test_each_input_is_batched_with_its_size_and_its_end_follows_its_last_rows():
    out = []
    b = InputBatchers([(3, 10**12), (2, 10**12)], lambda t, ingest: out.append((t.index, t.batch)))
    now = time.time_ns()
    for i, n in ((0, 2), (1, 1), (0, 2), (1, 1), (1, 1)):
        b.add(Tagged(i, pa.record_batch({"x": list(range(n))})), now)
    assert [(i, x.num_rows) for i, x in out] == [(0, 3), (1, 2)]
    assert b.pending
    b.add(Tagged(1, INPUT_END), 0)
    assert [(i, x if isinstance(x, Watermark) else x.num_rows) for i, x in out[2:]] == [
        (1, 1), (1, Watermark(WATERMARK_MAX))]
    b.flush()
    assert [(i, x.num_rows) for i, x in out[4:]] == [(0, 1)] and not b.pending


def test_an_input_flushes_at_its_own_timeout():
    out = []
    b = InputBatchers([(100, 10**12), (100, 1)], lambda t, ingest: out.append(t.index))
    now = time.time_ns()
    b.add(Tagged(0, pa.record_batch({"x": [1]})), now)
    b.add(Tagged(1, pa.record_batch({"x": [1]})), now)
    assert b.deadline <= time.monotonic_ns() + 1
    b.flush_due(time.monotonic_ns() + 10)
    assert out == [1] and b.pending          # input 0 waits for its own timeout


def test_a_routed_edge_sends_an_inputs_batches_to_its_stages_and_control_to_all():
    left, right, other = Channel(100, "l"), Channel(100, "r"), Channel(100, "o")
    edge = RoutedEdge([Forward([left]), Forward([right, other])])
    batch = pa.record_batch({"x": [1, 2]})
    for item in (Tagged(0, batch), Tagged(1, batch), Watermark(5), Tick(7), Barrier(1),
                 Tagged(0, Watermark(WATERMARK_MAX)), Watermark(9), END):
        edge.send(item, ingest_ns=0)

    def names(ch):
        return [x.num_rows if isinstance(x, pa.RecordBatch) else x for x, *_ in ch._q]

    assert names(left) == [2, Watermark(5), Tick(7), Barrier(1), Watermark(WATERMARK_MAX), END]
    assert names(right) == names(other) == [2, Watermark(5), Tick(7), Barrier(1), Watermark(9), END]


def test_a_routed_edge_can_exchange_an_input_by_key():
    parts = [Channel(100, "p0"), Channel(100, "p1")]
    batch = pa.record_batch({"k": [1, 2, 3, 4, 5, 6]})
    edge = RoutedEdge([Forward([Channel(100, "l")]), HashExchange(HashPartitioner(batch.schema, ["k"], 2, "j"), parts)])
    edge.send(Tagged(1, batch), ingest_ns=0)
    assert sum(ch.get()[0].resolve().num_rows for ch in parts) == 6


def _entries(*items):
    out = []
    for item, origin in items:
        rows = item.num_rows if isinstance(item, pa.RecordBatch) else 0
        out.append((item, rows, 0, origin))
    return iter(out).__next__


def test_a_join_input_tags_batches_with_their_side_and_passes_the_minimum_watermark():
    #   input 0 (right):  b0  w7  B1  END
    #   input 1 (left):   w3  B1  b1  w9  END
    b0, b1 = pa.record_batch({"x": [0]}), pa.record_batch({"x": [1]})
    gate = SidedInput(InputGate(2, _entries((b0, 0), (Watermark(3), 1), (Watermark(7), 0), (Barrier(1), 0),
                                            (Barrier(1), 1), (b1, 1), (Watermark(9), 1), (END, 0), (END, 1))),
                      sides=[1, 0])
    out = []
    while True:
        item = gate.next()[0]
        out.append((item.side, item.batch["x"][0].as_py()) if isinstance(item, Sided) else item)
        if item is END:
            break
    assert out == [(1, 0), Watermark(3), Barrier(1), (0, 1), Watermark(7), END]


def test_a_join_input_takes_its_rows_out_of_an_exchanged_batch():
    batch = pa.record_batch({"k": [1, 2, 3, 4]})
    part = HashPartitioner(batch.schema, ["k"], 2, "j")
    parts, _ = part.assign(batch)
    from heliosdb.operators.exchange import Partitioned

    gate = SidedInput(InputGate(2, _entries((Partitioned(batch, parts, 0), 1), (END, 0), (END, 1))), [0, 1])
    item = gate.next()[0]
    assert item.side == 1 and item.batch.num_rows == int((parts == 0).sum())


def test_keys_of_two_types_are_hashed_alike_when_cast_to_one():
    ints = pa.record_batch({"k": pa.array([1, 2, 3, 40, 500], pa.int32())})
    wide = pa.record_batch({"k": pa.array([1, 2, 3, 40, 500], pa.int64())})
    a = HashPartitioner(ints.schema, ["k"], 3, "j", [pa.int64()])
    b = HashPartitioner(wide.schema, ["k"], 3, "j", [pa.int64()])
    assert a.partitions(ints).tolist() == b.partitions(wide).tolist()
    ts_ms = pa.record_batch({"k": pa.array([1, 2], pa.timestamp("ms"))})
    ts_us = pa.record_batch({"k": pa.array([1000, 2000], pa.timestamp("us"))})
    assert (HashPartitioner(ts_ms.schema, ["k"], 4, "j", [pa.timestamp("us")]).partitions(ts_ms).tolist()
            == HashPartitioner(ts_us.schema, ["k"], 4, "j").partitions(ts_us).tolist())
