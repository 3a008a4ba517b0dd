"""Every kind of join through the public API, against DuckDB over the same rows.

Two streams of events (``ts`` epoch ms, up to ``DISORDER_MS`` out of order within each
stream, so no row is late; keys ``k`` int with nulls and ``g`` string, both duplicated;
payloads ``v`` and ``w``) are joined by the engine, at parallelism 1 and 2, and by DuckDB:

- window joins: SQL over the rows of each side in their windows (tumbling: one window per
  row; sliding: each of its windows), joined on (window, keys);
- interval joins: ``r.ts BETWEEN l.ts + lower AND l.ts + upper``;
- as-of joins: ``ASOF LEFT JOIN ... ON l.ts >= r.ts`` (a tolerance nulls a match that is
  older);
- regular joins: the plain equi-join (bounded inputs: every match once).

And each kind crashed at a chosen batch and restored (also into another parallelism) gives
exactly the uninterrupted output.

Outer joins pad with nulls as SQL does; a null key never matches.
"""
from __future__ import annotations

import time
from datetime import timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb.testing import assert_same_rows, crash_and_restore, read_parquet_output


BASE_MS = 1_700_000_000_000
DISORDER_MS = 1500


def events(n: int, seed: int, step_ms: int, payload: str) -> pa.Table:
    """``n`` rows ``step_ms`` apart on average, each up to DISORDER_MS early (never later
    than the bound behind the latest row before it), ``k`` in 0..5 with 5% nulls, ``g``."""
    rng = np.random.default_rng(seed)
    ts = BASE_MS + np.arange(n, dtype=np.int64) * step_ms + rng.integers(0, 40, n)
    ts -= np.where(rng.random(n) < 0.2, rng.integers(0, DISORDER_MS // 2, n), 0)
    k = rng.integers(0, 6, n)
    return pa.table({"ts": ts,
                     "k": pa.array(k, mask=rng.random(n) < 0.05),
                     "g": pa.array(rng.choice(["a", "b"], n)),
                     payload: rng.random(n)})


@pytest.fixture(scope="module", params=[7, 8])
def data(request):
    seed = request.param
    return events(400, seed, 97, "v"), events(300, seed + 100, 131, "w")


def run(left: pa.Table, right: pa.Table, parallelism: int, join) -> pa.Table:
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=64, parallelism=parallelism))
    bound = timedelta(milliseconds=DISORDER_MS)
    lt = env.from_arrow(left).with_watermark("ts", bound)
    rt = env.from_arrow(right).with_batch_size(50).with_watermark("ts", bound)
    return join(lt, rt).set_parallelism(parallelism).collect()


def sql(query: str, left: pa.Table, right: pa.Table) -> pa.Table:
    con = duckdb.connect()
    con.register("l", left)
    con.register("r", right)
    return con.sql(query).arrow().read_all()


def same(got: pa.Table, expected: pa.Table) -> None:
    if "window_start" in expected.column_names:
        ns = pa.timestamp("ns", tz="UTC")
        for c in ("window_start", "window_end"):
            i = expected.column_names.index(c)
            expected = expected.set_column(i, c, pa.array(expected[c].to_numpy(), pa.int64()).view(ns))
    assert_same_rows(got, expected.cast(got.schema))


SELECT = "l.ts, l.k, l.g, l.v, r.ts AS ts_right, r.k AS k_right, r.g AS g_right, r.w"
JOINS = {"inner": "JOIN", "left": "LEFT JOIN", "right": "RIGHT JOIN", "full": "FULL JOIN"}
HOWS = list(JOINS)


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("how", HOWS)
def test_tumbling_window_join(data, how, parallelism):
    left, right = data
    size = 10_000
    got = run(left, right, parallelism, lambda a, b: a.join(
        b, on=["k", "g"], how=how, window=hdb.TumblingWindow.of(timedelta(milliseconds=size))))
    q = f"""
      WITH lw AS (SELECT *, ts // {size} * {size} AS ws FROM l),
           rw AS (SELECT *, ts // {size} * {size} AS ws FROM r)
      SELECT COALESCE(lw.ws, rw.ws) * 1000000 AS window_start,
             (COALESCE(lw.ws, rw.ws) + {size}) * 1000000 AS window_end,
             lw.ts, COALESCE(lw.k, rw.k) AS k, COALESCE(lw.g, rw.g) AS g, lw.v, rw.ts AS ts_right, rw.w
      FROM lw {JOINS[how]} rw ON lw.ws = rw.ws AND lw.k = rw.k AND lw.g = rw.g"""
    same(got, sql(q, left, right))


@pytest.mark.parametrize("how", ["inner", "full"])
def test_sliding_window_join(data, how):
    left, right = data
    size, slide = 10_000, 5_000
    got = run(left, right, 2, lambda a, b: a.join(
        b, left_on="k", right_on="k", how=how,
        window=hdb.SlidingWindow.of(timedelta(milliseconds=size), timedelta(milliseconds=slide))))
    windows = f"""SELECT *, UNNEST(generate_series(ts // {slide} * {slide} - {size - slide},
                                                    ts // {slide} * {slide}, {slide})) AS ws"""
    q = f"""
      WITH lw AS ({windows} FROM l), rw AS ({windows} FROM r)
      SELECT COALESCE(lw.ws, rw.ws) * 1000000 AS window_start,
             (COALESCE(lw.ws, rw.ws) + {size}) * 1000000 AS window_end,
             lw.ts, lw.k, lw.g, lw.v, rw.ts AS ts_right, rw.k AS k_right, rw.g AS g_right, rw.w
      FROM lw {JOINS[how]} rw ON lw.ws = rw.ws AND lw.k = rw.k"""
    same(got, sql(q, left, right))


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("how", HOWS)
def test_interval_join(data, how, parallelism):
    left, right = data
    lo, hi = -2_000, 1_000
    got = run(left, right, parallelism, lambda a, b: a.join(
        b, left_on=["k", "g"], right_on=["k", "g"], how=how,
        between=(timedelta(milliseconds=lo), timedelta(milliseconds=hi))))
    q = f"""SELECT {SELECT} FROM l {JOINS[how]} r
            ON l.k = r.k AND l.g = r.g AND r.ts BETWEEN l.ts + {lo} AND l.ts + {hi}"""
    same(got, sql(q, left, right))


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("tolerance", [None, 700])
def test_asof_join(data, tolerance, parallelism):
    left, right = data
    # one right row per (key, time), so "the latest" is one row; arrival order kept
    dup = right.select(["ts", "k", "g"]).to_pylist()
    first = {}
    for i, r in enumerate(dup):
        first.setdefault(tuple(r.values()), i)
    right = right.take(sorted(first.values()))
    tol = None if tolerance is None else timedelta(milliseconds=tolerance)
    got = run(left, right, parallelism, lambda a, b: a.join_asof(b, on=["k", "g"], tolerance=tol))
    keep = "TRUE" if tolerance is None else f"l.ts - r.ts <= {tolerance}"
    q = f"""SELECT l.ts, l.k, l.g, l.v,
                   CASE WHEN {keep} THEN r.ts END AS ts_right, CASE WHEN {keep} THEN r.w END AS w
            FROM l ASOF LEFT JOIN r ON l.k = r.k AND l.g = r.g AND l.ts >= r.ts"""
    same(got, sql(q, left, right))


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("how", HOWS)
def test_regular_join(data, how, parallelism):
    left, right = data
    got = run(left, right, parallelism, lambda a, b: a.join(b, on="k", how=how, ttl=timedelta(days=1)))
    q = f"""SELECT l.ts, COALESCE(l.k, r.k) AS k, l.g, l.v, r.ts AS ts_right, r.g AS g_right, r.w
            FROM l {JOINS[how]} r ON l.k = r.k"""
    same(got, sql(q, left, right))


def test_a_lookup_table_on_the_right_is_a_lookup_join():
    env = hdb.StreamEnvironment()
    users = hdb.table(pa.table({"id": [1, 2], "name": ["ann", "bob"]}))
    out = env.from_iterable([{"user": 2, "v": 1.5}]).join(users, left_on="user", right_on="id").collect()
    assert out.to_pydict() == {"user": [2], "v": [1.5], "name": ["bob"]}
    with pytest.raises(hdb.PlanError, match="a lookup join takes no window="):
        env.from_iterable([{"user": 2}]).join(users, left_on="user", right_on="id", window=hdb.TumblingWindow.of(1))
    with pytest.raises(hdb.PlanError, match="a stream of the same environment or a lookup table"):
        env.from_iterable([{"user": 2}]).join(pa.table({"id": [1]}), on="id")


KINDS = {
    "window": lambda a, b: a.join(b, on=["k", "g"], how="full", window=hdb.TumblingWindow.of(timedelta(seconds=5))),
    "session": lambda a, b: a.join(b, on="k", how="left", window=hdb.SessionWindow.with_gap(timedelta(seconds=2))),
    "interval": lambda a, b: a.join(b, on="k", how="left", between=(timedelta(seconds=-2), timedelta(seconds=1))),
    "asof": lambda a, b: a.join_asof(b, on="g", tolerance=timedelta(seconds=3)),
    "regular": lambda a, b: a.join(b, on="k", ttl=timedelta(days=1)),
}


def _slow(batch):
    time.sleep(0.004)          # checkpoints (every 1 ms) commit between batches


@pytest.mark.parametrize("kind, crash_at, parallelism", [
    ("window", 4, (1, 2)), ("session", 6, (2, 2)), ("interval", 7, (2, 1)), ("asof", 5, (2, 3)),
    ("regular", 9, (1, 1))])
def test_a_crash_and_restore_gives_the_uninterrupted_output(data, kind, crash_at, parallelism, tmp_path):
    # batches 1 .. k-1 (checkpoints between them) | k: crash | restart: restore, the rest
    left, right = data
    bound = timedelta(milliseconds=DISORDER_MS)

    def build(n):
        def pipeline(env, crash):
            lt = env.from_arrow(left).with_batch_size(40).inspect(_slow).inspect(crash).with_watermark("ts", bound)
            rt = env.from_arrow(right).with_batch_size(30).with_watermark("ts", bound)
            KINDS[kind](lt, rt).set_parallelism(n).sink(hdb.sinks.parquet(str(tmp_path / "out"), rows_per_file=100))
        return pipeline

    def config(n):
        return hdb.StreamingConfig(parallelism=n, checkpoint=hdb.CheckpointConfig(
            interval=timedelta(milliseconds=1), storage=str(tmp_path / "ckpt")))

    expected = run(left, right, 1, KINDS[kind])
    crashed, restored = parallelism
    result = crash_and_restore(build(crashed), config(crashed), crash_at, name=f"join-{kind}",
                               restore_config=config(restored))
    assert result.crashed and result.checkpoints.restores == 1
    assert_same_rows(read_parquet_output(str(tmp_path / "out")), expected)


@pytest.mark.parametrize("kind", ["window", "interval", "asof", "regular"])
@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("alike", [True, False])
def test_the_planners_output_schema_is_the_operators(kind, how, alike):
    # the planner types a join with the operators' own rule: the sink gets what it emits
    from heliosdb.logical import Join, Node
    from heliosdb.operators.join import JoinSpec, output_schema
    from heliosdb.planner.join import join_schema

    if kind == "asof" and how not in ("left", "inner"):
        return
    left = pa.schema([pa.field("ts", pa.int64(), False), ("k", pa.int32()), ("g", pa.string()), ("v", pa.float64())])
    right = pa.schema([("ts", pa.int64()), pa.field("k", pa.int64(), False), ("g", pa.large_string()),
                       ("v", pa.float64()), ("v_right", pa.int8())])
    extra = {"window": dict(window=hdb.TumblingWindow.of(1)), "interval": dict(between=(0, 1)),
             "asof": {}, "regular": dict(ttl_ns=1)}[kind]
    step = Join(kind, ("k", "g"), ("k", "g"), how, "_r", coalesce_keys=alike, **extra)
    spec = JoinSpec(kind, ("k", "g"), ("k", "g"), how, "_r", coalesce_keys=alike, left_time="ts",
                    right_time="ts", **extra)
    node = Node(step, None, "j")
    assert join_schema(node, left, right, "ts", "ts") == output_schema(left, right, spec)
