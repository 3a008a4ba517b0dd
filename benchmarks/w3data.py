"""W3's data: a realistic stream of 8 partitions (DESIGN.md section 7), and its oracle.

Shared by ``python -m benchmarks.w3``, its pytest-benchmark suite and the tests.

The generator (``make_data``) is deterministic (``numpy.random.default_rng(seed)``) and builds
N events over ``SPAN_MS`` of event time, in ``PARTITIONS`` partitions:

- ``ts`` int64 epoch ms, ``user`` utf8, ``value`` float64 (``NULL_SHARE`` nulls), ``partition``
  int32.  ``user`` is zipf-skewed over ``KEYS`` keys, and the hot key ``HOT_KEY`` carries
  ``HOT_SHARE`` of the events.
- Each partition has its own rate (``RATES``) and is in event-time order up to ``JITTER_MS``
  (an event's time is its nominal time minus a jitter in ``[0, JITTER_MS]``).
- Arrival order: a consumer fetches each partition in chunks of ``FETCH_MS`` of event time,
  and each partition lags behind by a delay that drifts slowly in ``[0, PACE_MS]`` (its own
  pace).  The interleaving therefore stays within ``FETCH_MS + PACE_MS + JITTER_MS`` of event
  time, under the watermark bound ``BOUND_MS``: an ordinary event is never late.
- ``LATE_SHARE`` of the events are late: their time is ``BOUND_MS + 0.5 s`` to 60 s behind
  (log-uniform), so some update a window still within ``LATENESS_MS`` and some are past it.
- Partition ``REPLAY_PARTITION`` replays an old stretch: at 75% of the event-time span it sends
  again ``REPLAY_SHARE`` of N events that it sent ``REPLAY_BEHIND_MS`` earlier.

The oracle (``duckdb_w3``) computes, with DuckDB, what the pipeline's final output must be for
a given arrival order: the engine's lateness rule (``with_watermark`` and
``heliosdb.operators.window``) is that event ``i`` sees the watermark ``max(ts of the events
before it) - BOUND_MS``; it counts for each of its windows whose ``end + LATENESS_MS`` is after
that watermark, and is late (to ``late_output()``) when it counts for none.  A window's final
row is the last one emitted for its (window, key): updates supersede earlier rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa

BASE_MS = 1_700_000_000_000
PARTITIONS = 8
#: Share of the events in each partition (each its own pace in event time).
RATES = (0.20, 0.17, 0.15, 0.13, 0.11, 0.10, 0.08, 0.06)
SPAN_MS = 200_000
KEYS = 100_000
HOT_KEY = "u00000"
HOT_SHARE = 0.20
ZIPF_S = 1.0
NULL_SHARE = 0.01
LATE_SHARE = 0.01
JITTER_MS = 500
FETCH_MS = 100
PACE_MS = 800
REPLAY_PARTITION = 7
REPLAY_SHARE = 0.003
REPLAY_BEHIND_MS = 120_000
#: The pipeline's watermark bound (max_out_of_orderness) and allowed lateness.
BOUND_MS = 2_000
LATENESS_MS = 5_000
#: The windows: name -> (size ms, slide ms).
WINDOWS = {"tumbling": (1_000, 1_000), "sliding": (10_000, 1_000)}
SCHEMA = pa.schema([("ts", pa.int64()), ("user", pa.string()), ("value", pa.float64()),
                    ("partition", pa.int32())])
AGGS = ("count", "sum", "max", "mean")


@dataclass
class W3Data:
    """The same events three ways, and what the generator made of them.

    ``arrival``: all partitions interleaved as one consumer receives them.  ``partitions``:
    each partition's events in offset order.  ``sorted``: ``arrival`` sorted by ``ts`` (stable).
    ``injected_late`` / ``replayed``: masks over ``arrival`` rows, for the tests.
    """

    arrival: pa.Table
    partitions: List[pa.Table]
    sorted: pa.Table
    injected_late: np.ndarray
    replayed: np.ndarray
    info: Dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.arrival.num_rows


def _keys(rng: np.random.Generator, n: int) -> np.ndarray:
    """Key ids: 0 (the hot key) with HOT_SHARE, else zipf(ZIPF_S) over ranks 1 .. KEYS - 1."""
    ranks = np.arange(1, KEYS, dtype=np.float64)
    p = ranks ** -ZIPF_S
    cdf = np.cumsum(p / p.sum())
    cdf[-1] = 1.0
    ids = 1 + np.searchsorted(cdf, rng.random(n), side="right")
    ids = np.minimum(ids, KEYS - 1)
    hot = rng.random(n) < HOT_SHARE
    ids[hot] = 0
    return ids


def _counts(n: int) -> np.ndarray:
    """Events per partition (before the replay), adding up to ``n``."""
    c = np.floor(np.array(RATES) / sum(RATES) * n).astype(np.int64)
    c[0] += n - c.sum()
    return c


def _delay(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A partition's lag behind event time at nominal time ``t`` (ms from the start): a slow
    wave in [0, PACE_MS] with a period and phase of its own."""
    period = rng.uniform(20_000, 80_000)
    phase = rng.uniform(0, 2 * np.pi)
    return PACE_MS * 0.5 * (1 - np.cos(2 * np.pi * t / period + phase))


def make_data(n: int = 4_000_000, seed: int = 3) -> W3Data:
    """``n`` events (the replayed ones included) in PARTITIONS partitions; see the module doc."""
    rng = np.random.default_rng(seed)
    n_replay = int(n * REPLAY_SHARE)
    counts = _counts(n - n_replay)
    parts = []          # per partition: dict of arrays in offset order
    for p, m in enumerate(counts):
        nominal = np.sort(rng.integers(0, SPAN_MS, m))
        jitter = np.minimum(rng.exponential(JITTER_MS / 5, m), JITTER_MS).astype(np.int64)
        ts = nominal - jitter
        late = rng.random(m) < LATE_SHARE
        behind = np.exp(rng.uniform(np.log(BOUND_MS + 500), np.log(60_000), m)).astype(np.int64)
        ts = np.where(late, nominal - behind, ts)
        # The consumer gets the partition in fetches of FETCH_MS (offset by a phase of its own)
        # and lags by its drifting delay: a fetch arrives when its last event is due.
        fetch_phase = int(rng.integers(0, FETCH_MS))
        fetch_end = (nominal + fetch_phase) // FETCH_MS * FETCH_MS + FETCH_MS - fetch_phase
        arrive = np.maximum.accumulate(fetch_end + _delay(rng, fetch_end))
        parts.append({"ts": ts, "key": _keys(rng, m), "value": rng.random(m) * 100.0,
                      "null": rng.random(m) < NULL_SHARE, "arrive": arrive, "late": late,
                      "replay": np.zeros(m, bool)})
    _add_replay(parts[REPLAY_PARTITION], n_replay)
    return _assemble(parts)


def _add_replay(part: Dict[str, np.ndarray], k: int) -> None:
    """The partition sends again the ``k`` events that follow event time 15% of the span,
    REPLAY_BEHIND_MS after it first sent them (inserted there in offset order, arriving as
    one burst)."""
    if k == 0:
        return
    t0 = int(0.15 * SPAN_MS)
    src = np.searchsorted(part["arrive"], t0 + FETCH_MS + PACE_MS)
    rows = np.arange(src, min(src + k, len(part["ts"])))
    at = int(np.searchsorted(part["arrive"], part["arrive"][rows[-1]] + REPLAY_BEHIND_MS))
    for name, col in part.items():
        copy = col[rows]
        if name == "arrive":
            copy = np.full(len(rows), part["arrive"][at - 1] if at else 0)
        elif name == "late":
            copy = np.zeros(len(rows), bool)
        elif name == "replay":
            copy = np.ones(len(rows), bool)
        part[name] = np.concatenate([col[:at], copy, col[at:]])


_NAMES: List[pa.Array] = []


def _users(ids: np.ndarray) -> pa.Array:
    if not _NAMES:
        _NAMES.append(pa.array([f"u{i:05d}" for i in range(KEYS)]))
    return pa.DictionaryArray.from_arrays(pa.array(ids.astype(np.int32)), _NAMES[0]).cast(pa.string())


def _table(ts, ids, value, null, partition) -> pa.Table:
    return pa.table({"ts": ts, "user": _users(ids), "value": pa.array(value, mask=null),
                     "partition": pa.array(partition, pa.int32())}, schema=SCHEMA)


def _assemble(parts: List[Dict[str, np.ndarray]]) -> W3Data:
    cat = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    pid = np.concatenate([np.full(len(p["ts"]), i, np.int32) for i, p in enumerate(parts)])
    offset = np.concatenate([np.arange(len(p["ts"])) for p in parts])
    cat["ts"] = cat["ts"] + BASE_MS
    # Arrival: by arrival time; a partition's events keep their offset order.
    order = np.lexsort((offset, pid, cat["arrive"]))
    arrival = _table(cat["ts"][order], cat["key"][order], cat["value"][order], cat["null"][order], pid[order])
    by_ts = np.argsort(arrival["ts"].to_numpy(), kind="stable")
    partitions = [_table(p["ts"] + BASE_MS, p["key"], p["value"], p["null"], np.full(len(p["ts"]), i))
                  for i, p in enumerate(parts)]
    keys = cat["key"][order]
    info = {"hot_share": float(np.mean(keys == 0)), "null_share": float(np.mean(cat["null"])),
            "injected_late_share": float(np.mean(cat["late"])), "replayed": int(cat["replay"].sum())}
    return W3Data(arrival=arrival, partitions=partitions, sorted=arrival.take(pa.array(by_ts)),
                  injected_late=cat["late"][order], replayed=cat["replay"][order], info=info)


def merge_order(partitions: List[pa.Table]) -> pa.Table:
    """The partitions as ``kafka_source(event_time="ts")`` releases them: ordered by (running
    maximum of ``ts`` in the row's partition, partition, offset).

    In this order the largest time before a row is its own partition's largest so far (a row
    behind its partition's maximum keeps that maximum as its merge key), so the watermark
    each row sees is its own partition's: the per-split rule.  ``duckdb_w3(merge_order(p))``
    is therefore the result expected from any source that reads the partitions as splits
    with their own watermarks, whatever their read pace (``split_reference``)."""
    runmax = np.concatenate([np.maximum.accumulate(p["ts"].to_numpy()) for p in partitions])
    pid = np.concatenate([np.full(p.num_rows, i) for i, p in enumerate(partitions)])
    offset = np.concatenate([np.arange(p.num_rows) for p in partitions])
    order = np.lexsort((offset, pid, runmax))
    return pa.concat_tables(partitions).take(pa.array(order))


def split_reference(partitions: List[pa.Table], threads: int = 2) -> Dict[str, pa.Table]:
    """W3's final result when each partition is a split judged by its own watermark (see
    ``merge_order``)."""
    return duckdb_w3(merge_order(partitions), threads)


def split_watermarks(table: pa.Table, split: str = "partition", bound_ms: int = BOUND_MS) -> np.ndarray:
    """The watermark (ms) before each row of ``table`` (arrival order) when its ``split``
    column names splits with watermarks of their own, as ``from_arrow(split_by=)`` replays
    them: the smallest over the splits not yet finished (a split is finished after its last
    row) of (largest time so far - bound); a split that has sent nothing holds it (int64 min)."""
    ts = table["ts"].to_numpy()
    sp = table[split].to_numpy()
    keys = np.unique(sp)
    last = {k: int(np.flatnonzero(sp == k)[-1]) for k in keys.tolist()}
    lo = np.iinfo(np.int64).min
    seen = {k: lo for k in keys.tolist()}
    out = np.empty(len(ts), np.int64)
    for i, (t, s) in enumerate(zip(ts.tolist(), sp.tolist())):
        live = [v for k, v in seen.items() if last[k] >= i]
        out[i] = lo if (not live or lo in live) else min(live) - bound_ms
        if t > seen[s]:
            seen[s] = t
    return out


def behind_watermark(ts: np.ndarray, bound_ms: int = BOUND_MS) -> np.ndarray:
    """Rows whose time is before the watermark the rows before them imply."""
    prev = np.maximum.accumulate(np.concatenate([[np.iinfo(np.int64).min + bound_ms], ts[:-1]]))
    return ts < prev - bound_ms


# -- the pipeline ------------------------------------------------------------------------------------
def w3_windows(stream, lateness_ms: int = LATENESS_MS) -> Dict[str, object]:
    """W3's windows on a stream that carries the watermark: key by ``user``, then each window
    of WINDOWS with allowed lateness -> count, sum, max, mean of ``value`` (nulls skipped).
    Returns ``{name: windowed stream, name + "_late": its late output}``."""
    import heliosdb as hdb

    keyed = stream.key_by("user")
    out = {}
    for name, (size, slide) in WINDOWS.items():
        spec = (hdb.TumblingWindow.of(timedelta(milliseconds=size)) if size == slide
                else hdb.SlidingWindow.of(timedelta(milliseconds=size), timedelta(milliseconds=slide)))
        w = (keyed.window(spec, allowed_lateness=timedelta(milliseconds=lateness_ms))
             .aggregate(count=hdb.count(), sum=hdb.sum("value"), max=hdb.max("value"),
                        mean=hdb.mean("value")))
        out[name] = w
        out[name + "_late"] = w.late_output()
    return out


def run_w3(env, stream, name: str = "w3") -> Dict[str, pa.Table]:
    """Sink every output of ``w3_windows(stream)`` to memory, run ``env``'s job, return the
    tables."""
    import heliosdb as hdb

    sinks = {}
    for k, s in w3_windows(stream).items():
        sinks[k] = hdb.sinks.memory()
        s.sink(sinks[k])
    env.execute(name=name)
    return {k: s.to_table() for k, s in sinks.items()}


# -- the oracle: DuckDB over the whole table ----------------------------------------------------------
def duckdb_w3(table: pa.Table, threads: int = 2, bound_ms: int = BOUND_MS,
              lateness_ms: int = LATENESS_MS, watermarks: Optional[np.ndarray] = None
              ) -> Dict[str, pa.Table]:
    """W3's final result from the whole ``table`` (rows in arrival order): for each window,
    one row per (window_start ms, user) and the late rows (ts, user, value).  Each row is
    judged by the watermark before it: the largest time before it minus the bound, or
    ``watermarks`` (ms, int64 min for none; e.g. ``split_watermarks``)."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads={threads}")
    t = table.select(["ts", "user", "value"]).append_column(
        "arrival", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    if watermarks is not None:
        t = t.append_column("given", pa.array(watermarks, mask=watermarks == np.iinfo(np.int64).min))
    con.register("t", t)
    wm = ("given" if watermarks is not None else
          f"max(ts) OVER (ORDER BY arrival ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) - {bound_ms}")
    con.execute(f"""
        CREATE TEMP TABLE e AS
        SELECT ts, "user", value, arrival, {wm} AS wm
        FROM t""")
    out = {}
    for name, (size, slide) in WINDOWS.items():
        k = size // slide
        # ``pane`` is the start of the last window holding ts; its k windows start slide apart.
        open_ = f"(wm IS NULL OR s + {size + lateness_ms} > wm)"
        out[name] = con.sql(f"""
            SELECT s AS window_start, "user", count(*) AS count, sum(value) AS sum,
                   max(value) AS max, avg(value) AS mean
            FROM (SELECT "user", value, wm, ts - (ts % {slide}) - j * {slide} AS s
                  FROM e, range(0, {k}) r(j))
            WHERE {open_}
            GROUP BY ALL""").to_arrow_table()
        out[name + "_late"] = con.sql(f"""
            SELECT ts, "user", value FROM e
            WHERE wm IS NOT NULL AND ts - (ts % {slide}) + {size + lateness_ms} <= wm
            ORDER BY arrival""").to_arrow_table()
    con.close()
    return out


def final_rows(result: pa.Table) -> pa.Table:
    """The last row emitted for each (window_start, user), window_start as int64 ms."""
    import duckdb

    ws = result["window_start"]
    if pa.types.is_timestamp(ws.type):
        ws = pa.array(ws.cast(pa.int64()).to_numpy() // 1_000_000)
    t = pa.table({"window_start": ws, "user": result["user"], "count": result["count"],
                  "sum": result["sum"], "max": result["max"], "mean": result["mean"],
                  "emitted": pa.array(np.arange(result.num_rows, dtype=np.int64))})
    con = duckdb.connect()
    con.register("r", t)
    out = con.sql("""
        SELECT window_start, "user", count, sum, max, mean FROM r
        QUALIFY row_number() OVER (PARTITION BY window_start, "user" ORDER BY emitted DESC) = 1
    """).to_arrow_table()
    con.close()
    return out


def _sorted_rows(t: pa.Table, by: List[str]) -> pa.Table:
    return t.sort_by([(c, "ascending") for c in by])


def _same_floats(got: np.ndarray, exp: np.ndarray, what: str) -> None:
    both_null = np.isnan(got) & np.isnan(exp)
    ok = both_null | np.isclose(got, exp, rtol=1e-9, atol=1e-6)
    bad = np.flatnonzero(~ok)
    assert not len(bad), f"{what}: {len(bad)} rows differ, first at {bad[0]}: {got[bad[0]]} vs {exp[bad[0]]}"


def validate(result: Dict[str, pa.Table], ref: Dict[str, pa.Table]) -> None:
    """The engine's final rows (last update wins) and late rows equal the oracle's; raises
    AssertionError naming the first difference."""
    for name in WINDOWS:
        got = _sorted_rows(final_rows(result[name]), ["window_start", "user"])
        exp = _sorted_rows(ref[name], ["window_start", "user"])
        assert got.num_rows == exp.num_rows, (
            f"{name}: {got.num_rows:,} final (window, user) rows, the oracle has {exp.num_rows:,}"
            f" (counted events {pa.compute.sum(got['count']).as_py()} vs {pa.compute.sum(exp['count']).as_py()})")
        for c in ("window_start", "user", "count"):
            g, e = got[c].to_numpy(zero_copy_only=False), exp[c].to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(g != e)
            assert not len(bad), (f"{name}: column {c} differs at {len(bad)} rows, first: "
                                  f"{got.slice(bad[0], 1).to_pylist()} vs {exp.slice(bad[0], 1).to_pylist()}")
        for c in ("sum", "max", "mean"):
            _same_floats(got[c].to_numpy(zero_copy_only=False).astype(float),
                         exp[c].to_numpy(zero_copy_only=False).astype(float), f"{name}: {c}")
        late_got = _sorted_rows(result[name + "_late"].select(["ts", "user", "value"]), ["ts", "user", "value"])
        late_exp = _sorted_rows(ref[name + "_late"], ["ts", "user", "value"])
        assert late_got.num_rows == late_exp.num_rows, (
            f"{name}: {late_got.num_rows:,} late rows, the oracle has {late_exp.num_rows:,}")
        assert late_got.equals(late_exp.cast(late_got.schema)), f"{name}: the late rows differ"


def summary(ref: Dict[str, pa.Table], n: int) -> Dict[str, float]:
    """Output and late counts of the oracle's result."""
    out: Dict[str, float] = {}
    for name in WINDOWS:
        out[f"{name}_rows"] = ref[name].num_rows
        out[f"{name}_late"] = ref[name + "_late"].num_rows
        out[f"{name}_late_share"] = ref[name + "_late"].num_rows / n
    return out


def describe(data: W3Data) -> str:
    i = data.info
    behind = behind_watermark(data.arrival["ts"].to_numpy())
    return (f"{data.n:,} events in {PARTITIONS} partitions over {SPAN_MS / 1000:g} s of event time; "
            f"hot key {i['hot_share']:.1%}, null values {i['null_share']:.1%}, injected late "
            f"{i['injected_late_share']:.2%}, replayed {i['replayed']:,} rows; behind the watermark "
            f"in arrival order: {behind.mean():.2%}")
