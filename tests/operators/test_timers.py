"""Windows that close while no data arrives: processing time, and idle event-time sources.

A source idle for a batch timeout sends a tick through the pipeline; ticks run timers, so
processing-time windows (``window(spec)`` with no time column and no watermark) close by the
wall clock, and ``with_watermark(idle_timeout=)`` advances the watermark of a quiet source.
The sources below are slow iterables that stop after some events until the sink has seen a
window close (or a time limit passes): the assertions are about which events a window holds
and whether it closed while the source was idle, never about exact times.
"""
from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import List

import pyarrow as pa
import pytest

import heliosdb as hdb

MS = 1_000_000
SCHEMA = pa.schema([("k", pa.string()), ("v", pa.int64())])
TS_SCHEMA = pa.schema([("ts", pa.int64()), ("k", pa.string()), ("v", pa.int64())])
FAST_TICKS = hdb.StreamingConfig(batch_timeout=timedelta(milliseconds=10))


class Gate:
    """The source waits at the gate; the sink opens it when a row arrives."""

    def __init__(self):
        self.opened = threading.Event()
        self.rows: List[dict] = []
        self.waits: List[bool] = []          # per wait: did a row open the gate (vs time limit)

    def sink(self):
        def on_batch(b: pa.RecordBatch) -> None:
            for r in b.to_pylist():
                for c in ("window_start", "window_end"):
                    r[c] = r[c].value if hasattr(r[c], "value") else int(r[c].timestamp() * 1e9)
                self.rows.append(r)
            self.opened.set()
        return hdb.sinks.callback(on_batch)

    def wait(self, limit_s: float) -> None:
        self.waits.append(self.opened.wait(limit_s))


def _run(env: hdb.StreamEnvironment, stream, gate: Gate, name: str) -> None:
    stream.sink(gate.sink())
    env.execute(name=name)


def test_processing_time_tumbling_window_closes_while_no_data_arrives():
    # window 50 ms of processing time:
    #   v=1,2,3 arrive together | idle (ticks only) ... window closes -> row | 100 ms | v=100
    #   v=100 lands in a later window of its own
    gate = Gate()

    def source():
        for v in (1, 2, 3):
            yield {"k": "a", "v": v}
        gate.wait(10)
        time.sleep(0.1)                      # past any window the first three could be in
        yield {"k": "a", "v": 100}

    env = hdb.StreamEnvironment(FAST_TICKS)
    s = (env.from_iterable(source(), schema=SCHEMA).key_by("k")
         .window(hdb.TumblingWindow.of(timedelta(milliseconds=50)))
         .aggregate(n=hdb.count(), total=hdb.sum("v")))
    _run(env, s, gate, "proc-time-tumbling")
    assert gate.waits == [True], "the window closed while the source was idle"
    assert sum(r["n"] for r in gate.rows) == 4
    assert all(r["window_end"] - r["window_start"] == 50 * MS for r in gate.rows)
    last = [r for r in gate.rows if r["total"] >= 100]
    assert [(r["n"], r["total"]) for r in last] == [(1, 100)], "v=100 shares no window"
    first = [r for r in gate.rows if r["total"] < 100]
    assert sum(r["total"] for r in first) == 6
    assert last[0]["window_start"] >= max(r["window_end"] for r in first)


def test_processing_time_session_closes_after_gap_of_wall_time():
    # gap 300 ms of processing time:
    #   v=1,2,3 (one session) | 300 ms without events -> session closes -> row | v=100 (new)
    gate = Gate()

    def source():
        for v in (1, 2, 3):
            yield {"k": "a", "v": v}
        gate.wait(10)
        yield {"k": "a", "v": 100}

    env = hdb.StreamEnvironment(FAST_TICKS)
    s = (env.from_iterable(source(), schema=SCHEMA).key_by("k")
         .window(hdb.SessionWindow.with_gap(timedelta(milliseconds=300)))
         .aggregate(n=hdb.count(), total=hdb.sum("v")))
    _run(env, s, gate, "proc-time-session")
    assert gate.waits == [True], "the session closed while the source was idle"
    assert [(r["n"], r["total"]) for r in gate.rows] == [(3, 6), (1, 100)]
    first, second = gate.rows
    assert first["window_end"] - first["window_start"] >= 300 * MS
    assert second["window_start"] >= first["window_end"]


@pytest.mark.parametrize("idle_timeout", [timedelta(milliseconds=50), None], ids=["idle-timeout", "none"])
def test_idle_timeout_advances_the_watermark_of_a_quiet_source(idle_timeout):
    # window 1 s of event time, bound 0:
    #   ts 0, 400 ms | source idle ...
    #   idle_timeout 50 ms: the watermark moves on with the wall clock (400 ms + idle time),
    #     so [0, 1s) closes while idle;  without: nothing closes until more data comes
    #   then ts 60 s (far ahead: not late however far the idle watermark got)
    gate = Gate()

    def source():
        yield {"ts": 0, "k": "a", "v": 1}
        yield {"ts": 400, "k": "a", "v": 2}
        gate.wait(10 if idle_timeout else 0.3)
        yield {"ts": 60_000, "k": "a", "v": 100}

    env = hdb.StreamEnvironment(FAST_TICKS)
    s = (env.from_iterable(source(), schema=TS_SCHEMA)
         .with_watermark("ts", max_out_of_orderness=timedelta(0), idle_timeout=idle_timeout)
         .key_by("k").window(hdb.TumblingWindow.of(timedelta(seconds=1)))
         .aggregate(n=hdb.count(), total=hdb.sum("v")))
    _run(env, s, gate, "idle-watermark")
    assert gate.waits == [idle_timeout is not None]
    assert [(r["window_start"] // MS, r["n"], r["total"]) for r in gate.rows] == [(0, 2, 3), (60_000, 1, 100)]
