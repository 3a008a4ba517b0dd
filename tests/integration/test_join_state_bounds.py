"""Join state end to end, for every kind of join, in memory and in RocksDB:

- a RocksDB-backed join gives exactly the memory-backed join's output (also at parallelism 2);
- ``streaming_state_size_bytes`` (the job's metrics), read on the join's thread at every
  output batch, stays under the bound the open windows or intervals allow on a steady stream
  (computed from the data's rate, the windows, the watermark's bound and the batches' span of
  event time, not from a timing), the same bound for an input four times longer: it does not
  grow with the input;
- after the inputs end and the final watermark has passed, the join holds 0 bytes, before its
  close releases anything (and the job's final metrics say 0).

Two steady streams: ``RATE`` rows per second each over ``seconds``, 30% of the rows up to
``DISORDER_MS`` early (the watermark's bound: none is late), keys ``k`` (int, 5% null) and
``g`` (string).
"""
from __future__ import annotations

from datetime import timedelta
from typing import Callable, Dict, List, Tuple

import numpy as np
import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb.metrics import STATE_SIZE_BYTES
from heliosdb.operators.join import JoinOperator
from heliosdb.testing import assert_same_rows

BASE_MS = 1_700_000_000_000
RATE = 100                    # rows per second of event time, each side
DISORDER_MS = 1_000
BATCH = 200                   # rows per batch: 2 s of event time
KEYS = 40


def events(seconds: int, seed: int, payload: str) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = seconds * RATE
    ts = BASE_MS + np.arange(n, dtype=np.int64) * 1000 // RATE
    ts -= np.where(rng.random(n) < 0.3, rng.integers(0, DISORDER_MS, n), 0)
    k = rng.integers(0, KEYS, n)
    return pa.table({"ts": ts, "k": pa.array(k, mask=rng.random(n) < 0.05),
                     "g": pa.array(np.char.add("g", (k % 3).astype(str))), payload: rng.random(n)})


S = timedelta(seconds=1)
#: kind -> (the join, the event time a row waits at most on a steady stream, in seconds).
KINDS: Dict[str, Tuple[Callable, float]] = {
    "tumbling": (lambda a, b: a.join(b, on="k", how="full", window=hdb.TumblingWindow.of(5 * S)), 5),
    "sliding": (lambda a, b: a.join(b, on=["k", "g"], window=hdb.SlidingWindow.of(6 * S, 2 * S)), 6),
    "session": (lambda a, b: a.join(b, on="k", how="left", window=hdb.SessionWindow.with_gap(S / 2)), 4),
    "interval": (lambda a, b: a.join(b, on="k", how="left", between=(-2 * S, 3 * S)), 3),
    "asof": (lambda a, b: a.join_asof(b, on="g", tolerance=3 * S), 0),
    "regular": (lambda a, b: a.join(b, on="k", ttl=4 * S), 4),
}


#: For comparing outputs: a regular join with a ttl on event time drops a row when the
#: watermark passes, and where the watermark is when its partner arrives depends on the pace
#: of the two inputs: bounded inputs without a ttl give every match, whatever the pace.
EXACT = dict(KINDS, regular=(lambda a, b: a.join(b, on="k"), 4))


def pipeline(left: pa.Table, right: pa.Table, kind: str, parallelism: int, backend, sink,
             kinds=KINDS) -> hdb.StreamEnvironment:
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=parallelism, batch_size=BATCH, buffer_size=BATCH,
                                                    state_backend=backend))
    bound = timedelta(milliseconds=DISORDER_MS)
    a = env.from_arrow(left).with_watermark("ts", bound)
    b = env.from_arrow(right).with_watermark("ts", bound)
    kinds[kind][0](a, b).set_parallelism(parallelism).sink(sink)
    return env


def backend_of(name: str, tmp_path) -> hdb.StateBackend:
    return hdb.StateBackend.rocksdb(path=str(tmp_path / "rocks")) if name == "rocksdb" else hdb.StateBackend.memory()


@pytest.fixture
def at_close(monkeypatch) -> List[int]:
    """The state size of every join operator when its close() begins: after the inputs
    ended and the final watermark passed, before anything is released."""
    sizes: List[int] = []
    close = JoinOperator.close

    def recording(self):
        sizes.append(self.state_size_bytes())
        return close(self)
    monkeypatch.setattr(JoinOperator, "close", recording)
    return sizes


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_rocksdb_state_gives_the_memory_output(kind, parallelism, tmp_path):
    left, right = events(60, 1, "v"), events(60, 2, "w")
    outputs = []
    for name in ("memory", "rocksdb"):
        sink = hdb.sinks.memory()
        pipeline(left, right, kind, parallelism, backend_of(name, tmp_path), sink, EXACT).execute(name=f"rocks-{kind}")
        outputs.append(sink.to_table())
    assert outputs[0].num_rows > 0
    assert_same_rows(outputs[1], outputs[0])
    assert [p for p in (tmp_path / "rocks").iterdir() if not p.name.startswith(".")] == []


def bound(kind: str, left: pa.Table, right: pa.Table) -> float:
    """Bytes a join may hold on these steady streams: per side, the rows of the event time a
    row waits (``KINDS``), the watermark's bound, and four batches' span (rows read ahead of
    the other input, or on their way to the join: each channel holds one batch), at their
    bytes per row.  Window joins keep the rows only; the others add 60 bytes a row of
    bookkeeping (per-row time, key id, chain, expiry, flags; the key index) and twice the
    room for array growth and rows dropped but not yet compacted; the as-of join also keeps
    the latest row of every key."""
    wait = KINDS[kind][1] + DISORDER_MS / 1000 + 4 * BATCH / RATE
    window = kind in ("tumbling", "sliding")
    total = sum(RATE * wait * (t.nbytes / t.num_rows + (0 if window else 60)) for t in (left, right))
    if kind == "asof":
        total += KEYS * (right.nbytes / right.num_rows + 60)
    return total if window else 2 * total


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_state_is_bounded_by_the_open_windows_and_zero_at_the_end(kind, backend, tmp_path, at_close):
    peaks = []
    for seconds in (60, 300):
        left, right = events(seconds, 3, "v"), events(seconds, 4, "w")
        sizes: List[int] = []
        handle: List[hdb.JobHandle] = []

        def sample(batch: pa.RecordBatch) -> None:   # on the join's thread (parallelism 1)
            if handle:
                sizes.append(int(handle[0].metrics()[STATE_SIZE_BYTES]))
        env = pipeline(left, right, kind, 1, backend_of(backend, tmp_path), hdb.sinks.callback(sample))
        handle.append(env.execute_async(name=f"state-{kind}-{seconds}", progress=False))
        result = handle[0].wait()
        limit = bound(kind, left, right)
        assert len(sizes) >= 10, sizes
        assert max(sizes) <= limit, (seconds, max(sizes), limit)
        # the bound holds whatever the length: it is far below what the longer input holds
        assert limit < (left.nbytes + right.nbytes) / 3 or seconds == 60
        peaks.append(max(sizes))
        assert at_close[-1] == 0, at_close
        assert result.metrics[STATE_SIZE_BYTES] == 0
    assert peaks[1] <= 2 * peaks[0], peaks     # five times the input, not five times the state


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_state_is_zero_after_the_end_at_parallelism_two(kind, tmp_path, at_close):
    left, right = events(30, 5, "v"), events(30, 6, "w")
    env = pipeline(left, right, kind, 2, hdb.StateBackend.memory(), hdb.sinks.memory())
    assert env.execute(name=f"end-{kind}").metrics[STATE_SIZE_BYTES] == 0
    assert at_close == [0, 0]
