"""The inputs of a join read aligned in event time: the composite reader reads the input
furthest behind first, so rows read ahead of the join's watermark (the minimum of its
inputs') do not pile up in its state; an input with nothing ready is passed over."""
from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb.connectors.base import SourceReader, SourceSpec
from heliosdb.connectors.composite import INPUT_END, CompositeSource
from heliosdb.connectors.sources import ArrowSource
from heliosdb.errors import ConfigError

MS = 1_000_000
CLOCK = ("ts", MS, 0)


def span(seconds: int, rows: int, start: int = 0) -> pa.Table:
    """``rows`` rows evenly over ``seconds`` of event time (ms), from ``start`` s."""
    return pa.table({"ts": start * 1000 + np.arange(rows, dtype=np.int64) * seconds * 1000 // rows})


def order(reader) -> list:
    """(input, first ts in s) of every piece until the end, ends left out."""
    out = []
    while True:
        pieces = reader.poll(0)
        if pieces is None:
            return out
        for t, _ in pieces:
            if t.batch is not INPUT_END:
                c = t.batch.column(0)
                per_s = 1000 if c.type == pa.int64() else 1_000_000           # ms or us
                out.append((t.index, c.view(pa.int64())[0].as_py() // per_s))


def test_the_input_behind_in_event_time_is_read_first():
    # a: 10 batches of 10 s; b: 2 batches of 50 s (rows 5 s apart: 0..45, 50..95)
    # -> b's second batch is read once a has passed b's first (45 s)
    spec = CompositeSource((ArrowSource(span(100, 100)), ArrowSource(span(100, 20))), (10, 10),
                           clocks=(CLOCK, CLOCK))
    reader = spec.build()
    reader.open(batch_size=10)
    got = order(reader)
    assert got == [(0, 0), (1, 0), (0, 10), (0, 20), (0, 30), (0, 40), (1, 50), (0, 50), (0, 60), (0, 70),
                   (0, 80), (0, 90)]


def test_without_event_time_on_every_input_the_inputs_take_turns():
    spec = CompositeSource((ArrowSource(span(100, 100)), ArrowSource(span(100, 20))), (10, 10),
                           clocks=(CLOCK, None))
    reader = spec.build()
    reader.open(batch_size=10)
    assert [i for i, _ in order(reader)][:4] == [0, 1, 0, 1]


def test_the_disorder_bound_and_the_time_unit_count():
    # a: epoch ms, no disorder; b: timestamps in us, 30 s of disorder: b's watermark is 30 s
    # behind its rows, so b is read on until its rows are 30 s ahead of a's
    b = span(100, 20)
    b = pa.table({"ts": pa.array(b["ts"].to_numpy() * 1000, pa.timestamp("us"))})
    spec = CompositeSource((ArrowSource(span(100, 100)), ArrowSource(b)), (10, 5),
                           clocks=(CLOCK, ("ts", 1000, 30_000 * MS)))
    reader = spec.build()
    reader.open(batch_size=10)
    got = order(reader)
    first_a = [t for i, t in got if i == 0]
    assert got[:3] == [(0, 0), (1, 0), (1, 25)]          # b's watermark after 0..20 s: -10 s
    assert sorted(first_a) == list(range(0, 100, 10))


class _Empty(SourceReader):
    """Nothing ready for its first ``n`` polls, then ``table`` in one piece, then the end."""

    replayable = True

    def __init__(self, table: pa.Table, n: int):
        spec = SourceSpec()
        spec.schema = table.schema
        super().__init__(spec)
        self.table, self.n, self.polls = table, n, 0

    def poll(self, timeout_s):
        self.polls += 1
        if self.polls <= self.n:
            return []
        if self.polls == self.n + 1:
            return [(self.table.to_batches()[0], time.time_ns())]
        return None


def test_an_input_behind_with_nothing_ready_is_passed_over():
    spec = CompositeSource((ArrowSource(span(100, 100)), ArrowSource(span(100, 20))), (10, 10),
                           clocks=(CLOCK, CLOCK))
    reader = spec.build()
    reader.readers[1] = _Empty(span(10, 10), 3)       # behind (nothing read yet), but empty at first
    reader.open(batch_size=10)
    got = order(reader)
    assert got[:3] == [(0, 0), (0, 10), (0, 20)]       # a goes on meanwhile
    assert (1, 0) in got


def test_a_clock_for_every_input():
    with pytest.raises(ConfigError, match="needs a clock"):
        CompositeSource((ArrowSource(span(1, 1)), ArrowSource(span(1, 1))), (1, 1), clocks=(CLOCK,))


def test_a_join_of_two_watermarked_sources_reads_them_aligned():
    env = hdb.StreamEnvironment()
    a = env.from_arrow(span(100, 100)).with_watermark("ts", timedelta(seconds=2))
    b = env.from_arrow(span(100, 20).append_column("k", pa.array(np.zeros(20, np.int64))))
    joined = a.join(b.with_watermark("ts"), on="ts", window=hdb.TumblingWindow.of(timedelta(seconds=10)))
    from heliosdb.logical import Node, Sink
    from heliosdb.plan import build

    plan, *_ = build(env, [Node(Sink(hdb.sinks.memory()), joined._node, "out")], explain=True)
    assert plan.source.clocks == (("ts", MS, 2000 * MS), ("ts", MS, 0))
