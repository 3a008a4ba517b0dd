"""No per-row Python on the window path (issue 12): a disordered stream costs a few operator
calls per input batch, for tumbling, sliding and session windows.

The watermark assigner cuts a batch where the watermark passes a threshold (window ends and
end + allowed lateness; for sessions, before every row behind the watermark), and the cut
pieces travel as one Run that the window operator takes in one call.  These tests count, by
wrapping the operator's methods, the calls of its per-item entry points (``process_batch``,
``on_watermark``) and of the Python helpers that run per piece, per watermark or per group of
emitted rows, over a 200K-row job with about 20% of the rows behind the watermark and
65,536-row batches; the bound is a function of the number of input batches and of window
thresholds crossed, not of rows.  The same counter, with the old behaviour (one call per cut
piece), exceeds the bound by far: the test would catch a regression.

Timeline of the data (``jittered``): row i has time ``i / 10 ms +- 400 ms`` (uniform), in
arrival order i; the watermark is ``max time seen - 600 ms``, so a row whose time is more
than 600 ms behind the largest so far is behind it (about one in five).
"""
from __future__ import annotations

import collections
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

import heliosdb as hdb
import heliosdb.planner.keyed
from heliosdb.kernels.window import EXACT_GRID
from heliosdb.operators import window as window_mod
from heliosdb.operators.session import SessionAggregate

N = 200_000
JITTER_MS = 400
BOUND_MS = 600
BATCH = 65_536
SPAN_MS = N // 10

KINDS = {
    # kind: (spec, class, size of a window's slide grid in ms (None: sessions), methods counted)
    "tumbling": (hdb.TumblingWindow.of(timedelta(seconds=1)), window_mod.WindowAggregate, 1000),
    "sliding": (hdb.SlidingWindow.of(timedelta(seconds=2), timedelta(milliseconds=500)),
                window_mod.WindowAggregate, 500),
    "session": (hdb.SessionWindow.with_gap(timedelta(milliseconds=500)), SessionAggregate, None),
}
#: Methods called once per item, per cut piece, per watermark fired or per group of rows
#: emitted (whichever the operator has).
COUNTED = ("process_batch", "on_watermark", "process_run", "_fire", "_segments", "_emit",
           "_emit_groups", "_late", "_rows", "_rows_at", "_rounds", "_close_run")


def jittered(n: int = N, seed: int = 12) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = 1_700_000_000_000 + np.arange(n) // 10 + rng.integers(-JITTER_MS, JITTER_MS + 1, n)
    return pa.table({"ts": pa.array(ts, pa.int64()),
                     "k": pa.array(rng.integers(0, 20_000, n), pa.int64()),
                     "v": pa.array(rng.random(n))})


def behind_share(ts: np.ndarray) -> float:
    seen = np.maximum.accumulate(np.concatenate([[ts[0]], ts[:-1]]))
    return float((ts[1:] < seen[1:] - BOUND_MS).mean())


def count_calls(monkeypatch, cls) -> collections.Counter:
    calls: collections.Counter = collections.Counter()
    for name in COUNTED:
        orig = getattr(cls, name, None)
        if orig is None:
            continue

        def wrapper(self, *args, _orig=orig, _name=name, **kwargs):
            calls[_name] += 1
            return _orig(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)
    return calls


def run_job(table: pa.Table, spec, lateness_ms: int) -> pa.Table:
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1, batch_size=BATCH))
    return (env.from_arrow(table)
            .with_watermark("ts", max_out_of_orderness=timedelta(milliseconds=BOUND_MS))
            .key_by("k")
            .window(spec, time="ts", allowed_lateness=timedelta(milliseconds=lateness_ms))
            .aggregate(n=hdb.count(), total=hdb.sum("v"), sd=hdb.stddev("v"))
            .collect())


def call_bound(kind: str, n: int, lateness_ms: int) -> int:
    """Calls allowed: a few per input batch, plus a few per window threshold the watermark
    crosses (tumbling/sliding: a window end, and end + lateness, every slide)."""
    batches = -(-n // BATCH)
    slide = KINDS[kind][2]
    thresholds = 0 if slide is None else (n // 10 // slide + 4) * (2 if lateness_ms else 1)
    return 40 * batches + 4 * thresholds


def test_the_data_is_about_one_fifth_behind_the_watermark():
    share = behind_share(jittered()["ts"].to_numpy())
    assert 0.15 <= share <= 0.3, share


@pytest.mark.parametrize("lateness_ms", [0, 1000])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_disordered_stream_costs_a_few_window_calls_per_batch(monkeypatch, kind, lateness_ms):
    spec, cls, _ = KINDS[kind]
    calls = count_calls(monkeypatch, cls)
    out = run_job(jittered(), spec, lateness_ms)
    assert out.num_rows > 0
    total = sum(calls.values())
    assert total <= call_bound(kind, N, lateness_ms), dict(calls)
    # Each input batch arrives as one Run (or one batch): never one call per cut piece.
    assert calls["process_batch"] + calls["process_run"] <= -(-N // BATCH) + 1, dict(calls)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_call_count_catches_one_call_per_cut_piece(monkeypatch, kind):
    # The behaviour issue 12 removed: the assigner cuts before every row behind the watermark
    # (every value a threshold) and the window takes each piece and watermark in its own call.
    spec, cls, _ = KINDS[kind]
    monkeypatch.setattr(heliosdb.planner.keyed, "window_grid", lambda specs: EXACT_GRID)
    monkeypatch.setattr(cls, "takes_runs", False)
    calls = count_calls(monkeypatch, cls)
    n = 70_000
    run_job(jittered(n), spec, 0)
    assert sum(calls.values()) > 5 * call_bound(kind, n, 0), dict(calls)
