"""W1's data and its references, exactly as DESIGN.md section 7 defines them.

Shared by ``python -m benchmarks.w1`` and the pytest-benchmark suite.
"""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa

CATEGORIES = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
BASE_MS = 1_700_000_000_000
EXPECTED_20M = {"windows": 200, "rows": 1_999_330, "passed": 16_001_950}


def make_table(n: int = 20_000_000) -> pa.Table:
    """ts = BASE + i // 100 (ms); key, value, category from default_rng(42) in that order."""
    i = np.arange(n, dtype=np.int64)
    ts = BASE_MS + i // 100
    rng = np.random.default_rng(42)
    key = rng.integers(0, 10_000, n, dtype=np.int64)
    value = rng.random(n)
    cat = rng.integers(0, 8, n, dtype=np.int8)
    category = pa.DictionaryArray.from_arrays(pa.array(cat), pa.array(CATEGORIES)).cast(pa.string())
    return pa.table({"ts": ts, "key": key, "value": value, "category": category})


def w1_pipeline(stream):
    """W1's steps on any source stream: filter -> project -> 1 s tumbling window aggregate."""
    import heliosdb as hdb
    from heliosdb import col

    return (stream
            .filter(col("value") > 0.2)
            .with_columns(v2=col("value") * 2.0)
            .key_by("key")
            .window(hdb.TumblingWindow.of(timedelta(seconds=1)), time="ts")
            .aggregate(count=hdb.count(), sum=hdb.sum("v2"), min=hdb.min("v2"),
                       max=hdb.max("v2"), mean=hdb.mean("v2")))


def heliosdb_w1(table: pa.Table, **config) -> pa.Table:
    import heliosdb as hdb

    env = hdb.StreamEnvironment(hdb.StreamingConfig(**config))
    return w1_pipeline(env.from_arrow(table)).collect()


def duckdb_w1(table: pa.Table, threads: int = 2) -> pa.Table:
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads={threads}")
    con.register("t", table)
    return con.sql("""
        SELECT (ts // 1000) * 1000 AS window_start, key, count(*) AS count, sum(v2) AS sum,
               min(v2) AS min, max(v2) AS max, avg(v2) AS mean
        FROM (SELECT ts, key, value * 2.0 AS v2 FROM t WHERE value > 0.2)
        GROUP BY ALL""").to_arrow_table()


def polars_w1(table: pa.Table) -> pa.Table:
    import polars as pl

    return (pl.from_arrow(table).lazy()
            .filter(pl.col("value") > 0.2)
            .with_columns(v2=pl.col("value") * 2.0)
            .group_by([((pl.col("ts") // 1000) * 1000).alias("window_start"), "key"])
            .agg(count=pl.len(), sum=pl.col("v2").sum(), min=pl.col("v2").min(),
                 max=pl.col("v2").max(), mean=pl.col("v2").mean())
            .collect().to_arrow())


_numba_kernel = None


def numba_w1(table: pa.Table) -> pa.Table:
    """A hand-fused single pass: filter, multiply, dense (window, key) index, all aggregates."""
    global _numba_kernel
    if _numba_kernel is None:
        import numba

        @numba.njit(nogil=True, cache=False)
        def kernel(ts, key, value, t0, nwin, nkeys):
            g = nwin * nkeys
            cnt = np.zeros(g, np.int64)
            s = np.zeros(g)
            mn = np.full(g, np.inf)
            mx = np.full(g, -np.inf)
            for i in range(ts.shape[0]):
                v = value[i]
                if v > 0.2:
                    v2 = v * 2.0
                    j = ((ts[i] - t0) // 1000) * nkeys + key[i]
                    cnt[j] += 1
                    s[j] += v2
                    if v2 < mn[j]:
                        mn[j] = v2
                    if v2 > mx[j]:
                        mx[j] = v2
            return cnt, s, mn, mx

        _numba_kernel = kernel
    ts = table["ts"].to_numpy()
    t0 = int(ts[0]) - int(ts[0]) % 1000
    nwin = int((int(ts[-1]) - t0) // 1000 + 1)
    cnt, s, mn, mx = _numba_kernel(ts, table["key"].to_numpy(), table["value"].to_numpy(), t0, nwin, 10_000)
    idx = np.flatnonzero(cnt)
    return pa.table({"window_start": t0 + (idx // 10_000) * 1000, "key": idx % 10_000,
                     "count": cnt[idx], "sum": s[idx], "min": mn[idx], "max": mx[idx],
                     "mean": s[idx] / cnt[idx]})


def reference(table: pa.Table) -> dict:
    """numpy reference: (window_start_ms, key) -> (count, sum, min, max)."""
    ts = table["ts"].to_numpy()
    key = table["key"].to_numpy()
    value = table["value"].to_numpy()
    m = value > 0.2
    v2 = value[m] * 2.0
    w = (ts[m] // 1000) * 1000
    k = key[m]
    order = np.lexsort((k, w))
    w, k, v2 = w[order], k[order], v2[order]
    brk = np.flatnonzero((np.diff(w) != 0) | (np.diff(k) != 0)) + 1
    starts = np.concatenate([[0], brk])
    return {
        "passed": int(m.sum()),
        "window_start": w[starts], "key": k[starts],
        "count": np.diff(np.concatenate([starts, [len(w)]])),
        "sum": np.add.reduceat(v2, starts), "min": np.minimum.reduceat(v2, starts),
        "max": np.maximum.reduceat(v2, starts),
    }


def validate(result: pa.Table, ref: dict, window_ms: bool = False) -> None:
    """Rows and counts exact, float aggregates within 1e-6 (relative); raises AssertionError."""
    ws = result["window_start"]
    if pa.types.is_timestamp(ws.type):
        ws = ws.cast(pa.int64()).to_numpy() // 1_000_000
    else:
        ws = ws.to_numpy()
    key = result["key"].to_numpy()
    order = np.lexsort((key, ws))
    assert len(order) == len(ref["key"]), f"{len(order)} result rows, reference has {len(ref['key'])}"
    np.testing.assert_array_equal(ws[order], ref["window_start"])
    np.testing.assert_array_equal(key[order], ref["key"])
    np.testing.assert_array_equal(result["count"].to_numpy()[order], ref["count"])
    for c in ("sum", "min", "max"):
        np.testing.assert_allclose(result[c].to_numpy()[order], ref[c], rtol=1e-6)
    np.testing.assert_allclose(result["mean"].to_numpy()[order], ref["sum"] / ref["count"], rtol=1e-6)
    assert int(result["count"].to_numpy().sum()) == ref["passed"]


def heliosdb_w1_parquet(url: str, **config) -> pa.Table:
    import heliosdb as hdb

    env = hdb.StreamEnvironment(hdb.StreamingConfig(**config))
    return w1_pipeline(env.from_parquet(url)).collect()


def heliosdb_stateless(table: pa.Table, **config) -> int:
    """W1's stateless part alone (filter -> with_columns -> select), counted at a sink."""
    import heliosdb as hdb
    from heliosdb import col

    rows = [0]

    def count(batch):
        rows[0] += batch.num_rows

    env = hdb.StreamEnvironment(hdb.StreamingConfig(**config))
    (env.from_arrow(table)
     .filter(col("value") > 0.2)
     .with_columns(v2=col("value") * 2.0)
     .filter(col("v2") < 1.9)
     .select("ts", "key", "v2")
     .sink(hdb.sinks.callback(count)))
    env.execute(name="w1-stateless")
    return rows[0]
