"""Running keyed aggregates (``key_by(...).aggregate(...)``): update rows, TTL, memory bound.

After each batch the operator emits one row per key the batch touched, with the key's
aggregates so far; a later row for a key supersedes the earlier one.  With a TTL (processing
time) keys untouched for ``ttl`` are evicted every ``cleanup_interval``: the state shrinks
(``streaming_state_size_bytes``) and an evicted key that comes back starts over.  Every keyed
operator (running or windowed) stops with an error naming its step when its state outgrows
the memory backend's bound.
"""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb.errors import HeliosError
from heliosdb.operators import keyed
from heliosdb.operators.keyed import KeyedAggregate

S = 1_000_000_000
SCHEMA = pa.schema([("k", pa.string()), ("v", pa.int64())])
STATE = "streaming_state_size_bytes"


def batch(*rows) -> pa.RecordBatch:
    """(key, v) rows."""
    return pa.RecordBatch.from_pylist([{"k": k, "v": v} for k, v in rows], schema=SCHEMA)


def table_rows(items) -> list:
    out = []
    for it in items:
        out += [(r["k"], r["n"], r["total"]) for r in it.to_pylist()]
    return out


# -------------------------------------------------------------------------------------------
# Update rows
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("parallelism", [1, 2])
def test_one_row_per_touched_key_after_each_batch(parallelism):
    # batches of 3:  [a a b] [b c a] [c]
    #   -> a(2) b(1) | b(2) c(1) a(3) | c(2)   (per key in arrival order; keys never repeat
    #      within a batch's rows)
    t = pa.table({"k": list("aabbcac"), "v": [1, 2, 3, 4, 5, 6, 7]})
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=parallelism,
                                                    batch_timeout=timedelta(seconds=60)))
    out = (env.from_arrow(t).with_batch_size(3).key_by("k")
           .aggregate(n=hdb.count(), total=hdb.sum("v")).collect())
    rows = [(r["k"], r["n"], r["total"]) for r in out.to_pylist()]
    if parallelism == 1:
        assert rows == [("a", 2, 3), ("b", 1, 3), ("b", 2, 7), ("c", 1, 5), ("a", 3, 9), ("c", 2, 12)]
    for k in "abc":
        mine = [r for r in rows if r[0] == k]
        assert mine == sorted(mine, key=lambda r: r[1])          # each key's rows in order
    last = {r[0]: r for r in rows}
    assert last == {"a": ("a", 3, 9), "b": ("b", 2, 7), "c": ("c", 2, 12)}


# -------------------------------------------------------------------------------------------
# TTL
# -------------------------------------------------------------------------------------------
@pytest.fixture
def clock(monkeypatch):
    """A processing-time clock the test moves (ns)."""
    now = [0]
    monkeypatch.setattr(keyed, "_clock", lambda: now[0])
    return now


def _op(ttl_s, cleanup_s):
    return KeyedAggregate("ttl-step", SCHEMA, ["k"], [("n", hdb.count()), ("total", hdb.sum("v"))],
                          2**30, ttl_s * S, cleanup_s * S)


def test_ttl_evicts_keys_untouched_for_ttl_and_a_returning_key_starts_over(clock):
    # ttl 10 s, cleanup every 1 s (processing time):
    #   t=0   a b         t=5  b         t=12  c -> a (idle 12 s) evicted; b (7 s), c kept
    #   t=13  a -> starts over (n 1);  b -> n 3
    op = _op(10, 1)
    clock[0] = 0
    op.process_batch(batch(("a", 1), ("b", 2)))
    clock[0] = 5 * S
    op.process_batch(batch(("b", 3)))
    clock[0] = 12 * S
    before = op.state_size_bytes()
    op.process_batch(batch(("c", 4)))
    assert op.evicted_keys == 1
    assert op.state_size_bytes() < before
    clock[0] = 13 * S
    rows = table_rows(op.process_batch(batch(("a", 10), ("b", 20))))
    assert rows == [("a", 1, 10), ("b", 3, 25)]


def test_ttl_eviction_runs_on_ticks_while_no_data_arrives(clock):
    # ttl 2 s, cleanup 1 s: keys a..e at t=0; ticks at t=1 s (nothing idle long enough),
    # t=2.5 s (all five evicted): state shrinks without a batch
    op = _op(2, 1)
    op.process_batch(batch(*[(k, 1) for k in "abcde"]))
    full = op.state_size_bytes()
    clock[0] = 1 * S
    op.on_tick(clock[0])
    assert op.evicted_keys == 0
    clock[0] = int(2.5 * S)
    op.on_tick(clock[0])
    assert op.evicted_keys == 5
    assert op.state_size_bytes() < full
    assert table_rows(op.process_batch(batch(("c", 7)))) == [("c", 1, 7)]


def test_eviction_waits_for_the_cleanup_interval(clock):
    # ttl 1 s, cleanup every 10 s: a idle since 0 is only evicted at the first cleanup (t >= 10 s)
    op = _op(1, 10)
    op.process_batch(batch(("a", 1)))
    clock[0] = 5 * S
    op.on_tick(clock[0])
    assert op.evicted_keys == 0
    clock[0] = 10 * S
    op.on_tick(clock[0])
    assert op.evicted_keys == 1


@pytest.mark.parametrize("how", ["with_state_ttl", "StateConfig"])
def test_ttl_evicts_keys_of_a_running_job_while_the_source_is_idle(clock, how):
    # A live source sends 3,000 keys, then nothing (ticks keep coming every batch timeout);
    # the test moves the TTL clock past the ttl: the job's state size falls while idle, and
    # key k0, sent again afterwards, starts over.
    resume, sent = threading.Event(), threading.Event()

    def source():
        for i in range(3_000):
            yield {"k": f"k{i}", "v": 1}
        sent.set()
        resume.wait(20)
        yield {"k": "k0", "v": 5}

    state = hdb.StateConfig(ttl=timedelta(seconds=10), cleanup_interval=timedelta(seconds=1))
    config = hdb.StreamingConfig(batch_timeout=timedelta(milliseconds=10),
                                 state=state if how == "StateConfig" else hdb.StateConfig())
    env = hdb.StreamEnvironment(config)
    seen = []
    s = env.from_iterable(source(), schema=SCHEMA).key_by("k").aggregate(n=hdb.count(), total=hdb.sum("v"))
    if how == "with_state_ttl":
        s = s.with_state_ttl(timedelta(seconds=10), cleanup_interval=timedelta(seconds=1))
    s.sink(hdb.sinks.callback(lambda b: seen.extend(b.to_pylist())))
    handle = env.execute_async(name=f"ttl-live-{how}")
    try:
        deadline = time.monotonic() + 20
        while len(seen) < 3_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(seen) == 3_000
        full = handle.metrics()[STATE]
        clock[0] = 11 * S                           # every key idle for more than the ttl
        while handle.metrics()[STATE] > full / 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert handle.metrics()[STATE] <= full / 2, (full, handle.metrics()[STATE])
    finally:
        resume.set()
    handle.wait(20)
    assert seen[-1] == {"k": "k0", "n": 1, "total": 5}


def test_state_config_ttl_shows_in_explain():
    env = hdb.StreamEnvironment(hdb.StreamingConfig(state=hdb.StateConfig(ttl=timedelta(seconds=30))))
    s = env.from_iterable([{"k": "a", "v": 1}]).key_by("k").aggregate(n=hdb.count())
    assert "ttl 30s" in str(s.explain())


# -------------------------------------------------------------------------------------------
# Memory bound
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [None, hdb.TumblingWindow.of(1), hdb.SlidingWindow.of(4, 1),
                                  hdb.SessionWindow.with_gap(1)],
                         ids=["running", "tumbling", "sliding", "session"])
@pytest.mark.parametrize("parallelism", [1, 2])
def test_state_over_the_memory_bound_fails_naming_the_step(spec, parallelism):
    # 20,000 distinct keys in one window (or running) against a 64 KiB bound
    n = 20_000
    t = pa.table({"ts": pa.array(np.zeros(n, np.int64)), "k": pa.array(np.arange(n)),
                  "v": pa.array(np.ones(n, np.int64))})
    config = hdb.StreamingConfig(parallelism=parallelism,
                                 state_backend=hdb.StateBackend.memory(max_size_bytes=64 * 1024))
    env = hdb.StreamEnvironment(config)
    keyed_stream = env.from_arrow(t).key_by("k")
    s = (keyed_stream.aggregate(n=hdb.count()) if spec is None
         else keyed_stream.window(spec, time="ts").aggregate(n=hdb.count()))
    s.name("big-state").sink(hdb.sinks.memory())
    with pytest.raises(HeliosError) as err:
        env.execute(name="memory-bound")
    msg = str(err.value)
    assert "step 'big-state" in msg, msg
    assert "65,536" in msg and "max_size_bytes" in msg, msg
