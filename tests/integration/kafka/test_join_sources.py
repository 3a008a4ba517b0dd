"""Two Kafka topics as the two inputs of a join (real broker): one source task reads both,
each topic's rows reach its side only, per-partition watermarks on each side, checkpoints
store both topics' offsets and a crash restores them (with a two-input test operator,
``tests/sidetag.py``, standing in for the join); and a real window join of two topics gives
DuckDB's result over the same rows, also when crashed and restored into another parallelism."""
from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import heliosdb as hdb
from heliosdb.formats.json import JsonFormat
from heliosdb.testing import assert_same_rows, crash_and_restore, read_parquet_output

from ... import sidetag
from .broker import new_topic, produce

SCHEMA = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("v", pa.float64())])


@pytest.fixture
def tagger(monkeypatch):
    sidetag.install(monkeypatch)


def _records(n: int, seed: int) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    return pa.record_batch([pa.array(1_700_000_000_000 + np.arange(n) // 5), pa.array(rng.integers(0, 20, n)),
                            pa.array(rng.random(n))], schema=SCHEMA)


@pytest.fixture(scope="module")
def topics(kafka):
    out = []
    for seed, n, parts in ((1, 1500, 2), (2, 900, 3)):
        topic = new_topic(kafka, partitions=parts)
        data = _records(n, seed)
        produce(kafka, topic, JsonFormat(SCHEMA).encode(data), partitions=[i % parts for i in range(n)])
        out.append((topic, pa.Table.from_batches([data])))
    return out


def _join(env, kafka, topics, crash=None):
    (lt, _), (rt, _) = topics
    left = env.kafka_source(lt, kafka.bootstrap, bounded=True).with_batch_size(200).deserialize_json(SCHEMA)
    right = env.kafka_source(rt, kafka.bootstrap, bounded=True).with_batch_size(150).deserialize_json(SCHEMA)
    if crash is not None:
        left = left.inspect(crash)
    bound = timedelta(seconds=5)
    j = left.with_watermark("ts", bound).join(right.with_watermark("ts", bound), on="k", between=(-1, 1))
    return j.select("ts", "k", "v", "ts_right", "v_right", "side", "n")


def _sides(out: pa.Table):
    left = out.filter(pc.equal(out["side"], 0)).select(["ts", "k", "v"])
    right = out.filter(pc.equal(out["side"], 1)).select(["ts_right", "k", "v_right"])
    return left, right.rename_columns(["ts", "k", "v"])


@pytest.mark.usefixtures("tagger")
def test_two_topics_reach_their_own_side(kafka, topics):
    out = _join(hdb.StreamEnvironment(), kafka, topics).collect()
    left, right = _sides(out)
    assert_same_rows(left, topics[0][1])
    assert_same_rows(right, topics[1][1])
    (op,) = sidetag.BUILT
    assert op.watermarks[-1] == 2**63 - 1 and op.watermarks == sorted(op.watermarks)


@pytest.mark.usefixtures("tagger")
def test_a_crash_restores_both_topics_offsets(kafka, topics, tmp_path):
    def build(env, crash):
        _join(env, kafka, topics, crash).sink(hdb.sinks.parquet(str(tmp_path / "out"), rows_per_file=500))

    cfg = hdb.StreamingConfig(parallelism=2, checkpoint=hdb.CheckpointConfig(
        interval=timedelta(milliseconds=5), storage=str(tmp_path / "ckpt")))
    run = crash_and_restore(build, cfg, crash_at=5, name="kafka-join")
    assert run.crashed
    left, right = _sides(read_parquet_output(str(tmp_path / "out")))
    assert_same_rows(left, topics[0][1])
    assert_same_rows(right, topics[1][1])


# -- a real window join of two topics -----------------------------------------------------------
WINDOW_MS = 1000


def _events(n: int, seed: int, step_ms: int, keys: tuple, payload: str) -> pa.RecordBatch:
    """``n`` rows ``step_ms`` apart (several 1 s windows), keys in ``keys``, a payload column."""
    rng = np.random.default_rng(seed)
    return pa.record_batch({"ts": 1_700_000_000_000 + np.arange(n, dtype=np.int64) * step_ms,
                            "k": rng.integers(*keys, n), payload: rng.random(n)})


@pytest.fixture(scope="module")
def window_topics(kafka):
    """(topic, rows) of each side: bids on 3 partitions, auctions on 2."""
    out = []
    # keys 0..39 and 20..59: some rows of each side meet none of the other's (full join padding)
    for seed, n, step, parts, keys, payload in ((5, 1200, 4, 3, (0, 40), "v"), (6, 500, 9, 2, (20, 60), "w")):
        data = _events(n, seed, step, keys, payload)
        topic = new_topic(kafka, partitions=parts)
        produce(kafka, topic, JsonFormat(data.schema).encode(data), partitions=[i % parts for i in range(n)])
        out.append((topic, pa.Table.from_batches([data])))
    return out


def _window_join(env, kafka, window_topics, crash=None):
    (lt, ltab), (rt, rtab) = window_topics
    left = env.kafka_source(lt, kafka.bootstrap, bounded=True).with_batch_size(100).deserialize_json(ltab.schema)
    right = env.kafka_source(rt, kafka.bootstrap, bounded=True).with_batch_size(70).deserialize_json(rtab.schema)
    if crash is not None:
        left = left.inspect(lambda b: time.sleep(0.005)).inspect(crash)      # checkpoints commit between batches
    # the partitions of a topic are read at their own pace: the bound covers how far apart they get
    bound = timedelta(seconds=10)
    j = left.with_watermark("ts", bound).join(right.with_watermark("ts", bound), on="k", how="full",
                                              window=hdb.TumblingWindow.of(timedelta(milliseconds=WINDOW_MS)))
    return j.select("window_start", "window_end", "ts", "k", "v", "ts_right", "w")     # not the kafka_* columns


def _duckdb_window_join(window_topics) -> pa.Table:
    import duckdb

    (_, left), (_, right) = window_topics
    con = duckdb.connect()
    con.register("l", left)
    con.register("r", right)
    q = f"""
      WITH lw AS (SELECT *, ts // {WINDOW_MS} * {WINDOW_MS} AS ws FROM l),
           rw AS (SELECT *, ts // {WINDOW_MS} * {WINDOW_MS} AS ws FROM r)
      SELECT COALESCE(lw.ws, rw.ws) * 1000000 AS window_start, (COALESCE(lw.ws, rw.ws) + {WINDOW_MS}) * 1000000
             AS window_end, lw.ts, COALESCE(lw.k, rw.k) AS k, lw.v, rw.ts AS ts_right, rw.w
      FROM lw FULL JOIN rw ON lw.ws = rw.ws AND lw.k = rw.k"""
    t = con.sql(q).arrow().read_all()
    ns = pa.timestamp("ns", tz="UTC")
    for c in ("window_start", "window_end"):
        t = t.set_column(t.column_names.index(c), c, pa.array(t[c].to_numpy(), pa.int64()).view(ns))
    return t


def test_a_window_join_of_two_topics_gives_duckdbs_result(kafka, window_topics):
    expected = _duckdb_window_join(window_topics)
    assert expected.num_rows > 0
    assert expected.filter(pc.is_null(expected["ts"])).num_rows and expected.filter(pc.is_null(expected["w"])).num_rows
    for parallelism in (1, 2):
        env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=parallelism))
        got = _window_join(env, kafka, window_topics).set_parallelism(parallelism).collect()
        assert_same_rows(got, expected.cast(got.schema))


def test_a_window_join_of_two_topics_crashed_and_restored_gives_duckdbs_result(kafka, window_topics, tmp_path):
    # batches 1..7 of the bids (checkpoints between them) | 8: crash | restart at parallelism 1
    def build(n):
        def pipeline(env, crash):
            _window_join(env, kafka, window_topics, crash).set_parallelism(n).sink(
                hdb.sinks.parquet(str(tmp_path / "out"), rows_per_file=500))
        return pipeline

    def config(n):
        return hdb.StreamingConfig(parallelism=n, checkpoint=hdb.CheckpointConfig(
            interval=timedelta(milliseconds=5), storage=str(tmp_path / "ckpt")))

    run = crash_and_restore(build(2), config(2), crash_at=8, name="kafka-window-join", restore_config=config(1))
    assert run.crashed and run.checkpoints.restores == 1
    expected = _duckdb_window_join(window_topics)
    got = read_parquet_output(str(tmp_path / "out"))
    assert_same_rows(got, expected.cast(got.schema))
