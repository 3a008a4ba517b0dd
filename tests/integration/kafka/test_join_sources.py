"""Two Kafka topics as the two inputs of a join (real broker): one source task reads both,
each topic's rows reach its side only, per-partition watermarks on each side, checkpoints
store both topics' offsets and a crash restores them.  A two-input test operator
(``tests/sidetag.py``) stands in for the join."""
from __future__ import annotations

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


@pytest.fixture(autouse=True)
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


def test_two_topics_reach_their_own_side(kafka, topics):
    out = _join(hdb.StreamEnvironment(), kafka, topics).collect()
    left, right = _sides(out)
    assert_same_rows(left, topics[0][1])
    assert_same_rows(right, topics[1][1])
    (op,) = sidetag.BUILT
    assert op.watermarks[-1] == 2**63 - 1 and op.watermarks == sorted(op.watermarks)


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
