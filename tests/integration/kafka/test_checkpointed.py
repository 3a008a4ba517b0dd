"""Kafka -> windowed pipeline -> Kafka under checkpoints: crashes and restarts give the
uninterrupted output exactly once to a read_committed consumer (real broker)."""
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import heliosdb as hdb

from .broker import new_topic, produce, read_all, values

N = 6000


def _events():
    rng = np.random.default_rng(3)
    ts = 1_700_000_000_000 + np.arange(N, dtype=np.int64) * 2
    keys = rng.integers(0, 30, N)
    return [json.dumps({"ts": int(t), "k": int(k), "v": float(v)}).encode()
            for t, k, v in zip(ts, keys, rng.random(N))]


SCHEMA = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("v", pa.float64())])


def _oracle(records):
    out = Counter()
    sums = {}
    for r in map(json.loads, records):
        w = r["ts"] // 1000 * 1000
        out[(w, r["k"])] += 1
        sums[(w, r["k"])] = sums.get((w, r["k"]), 0.0) + r["v"]
    return out, sums


def _run(kafka, src_topic, out_topic, storage, parallelism=1, crash_at=None):
    cfg = hdb.StreamingConfig(parallelism=parallelism, batch_size=300, checkpoint=hdb.CheckpointConfig(
        interval=timedelta(milliseconds=20), storage=storage))
    env = hdb.StreamEnvironment(cfg)
    seen = [0]

    def crash(batch):
        seen[0] += 1
        if crash_at is not None and seen[0] == crash_at:
            raise RuntimeError("injected crash")

    (env.kafka_source(src_topic, bootstrap_servers=kafka.bootstrap, group_id="ckpt-test", bounded=True)
     .deserialize_json(SCHEMA).with_batch_size(300)
     .inspect(crash)
     # Partitions are read side by side, so event time across them is out of order by up to
     # what the readers fetch at a time: the watermark allows for it.
     .with_watermark(time="ts", max_out_of_orderness=timedelta(seconds=30))
     .key_by("k").window(hdb.TumblingWindow.of(timedelta(seconds=1)))
     .aggregate(n=hdb.count(), s=hdb.sum("v"))
     .sink(hdb.sinks.kafka(out_topic, bootstrap_servers=kafka.bootstrap, format="json", exactly_once=True)))
    return env.execute(name="kafka-ckpt")


def _check(kafka, out_topic, records):
    rows = [json.loads(v) for v in values(read_all(kafka, out_topic))]
    want, sums = _oracle(records)
    got = Counter()
    for r in rows:
        key = (int(pd_ts(r["window_start"])), r["k"])
        got[key] += 1
        assert r["n"] == want[key], (key, r, want[key])
        assert abs(r["s"] - sums[key]) < 1e-9
    dup = [k for k, c in got.items() if c > 1]
    assert not dup, f"{len(dup)} windows delivered twice, e.g. {dup[:3]}"
    assert set(got) == set(want), f"missing {len(set(want) - set(got))} windows"


def pd_ts(value):
    """The JSON format writes timestamps as epoch ms or ISO text; both to epoch ms."""
    if isinstance(value, (int, float)):
        return value
    import pandas as pd

    return pd.Timestamp(value).value // 1_000_000


@pytest.mark.parametrize("crash_at, p_before, p_after", [(7, 1, 1), (12, 1, 2), (9, 2, 1)])
def test_crash_and_restore_gives_each_window_once(kafka, tmp_path, crash_at, p_before, p_after):
    records = _events()
    src, out = new_topic(kafka, partitions=2), new_topic(kafka)
    produce(kafka, src, records, partitions=[i % 2 for i in range(N)])
    with pytest.raises(hdb.HeliosError):
        _run(kafka, src, out, str(tmp_path / "ckpt"), p_before, crash_at)
    _run(kafka, src, out, str(tmp_path / "ckpt"), p_after)
    _check(kafka, out, records)


def test_killed_after_the_manifest_before_the_kafka_commit(kafka, tmp_path):
    """The failpoint between manifest and transaction commit: the restart re-produces the
    restored epoch's records from the checkpoint, once."""
    records = _events()
    src, out = new_topic(kafka, partitions=1), new_topic(kafka)
    produce(kafka, src, records)
    storage = str(tmp_path / "ckpt")
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[3])!r})
        from tests.integration.kafka.test_checkpointed import _run
        class K: bootstrap = {kafka.bootstrap!r}
        _run(K, {src!r}, {out!r}, {storage!r})
    """)
    env = dict(os.environ, HELIOSDB_FAILPOINT="after-manifest")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 137, proc.stderr[-2000:]
    _run(kafka, src, out, storage)
    _check(kafka, out, records)


def test_transaction_timeout_is_sized_against_the_checkpoints(kafka, tmp_path, caplog):
    """A transaction lives from an epoch's barrier to its commit after the manifest, so the
    sink's transaction timeout covers the checkpoint timeout and three intervals; an explicit
    shorter one is kept, with a warning naming both."""
    import logging

    def op_of(sink, interval_s, timeout_s):
        env = hdb.StreamEnvironment(hdb.StreamingConfig(checkpoint=hdb.CheckpointConfig(
            interval=timedelta(seconds=interval_s), storage=str(tmp_path / f"c{interval_s}"),
            timeout=timedelta(seconds=timeout_s))))
        env.from_arrow(pa.table({"value": pa.array([b"x"], pa.binary())})).sink(sink)
        env.execute(name=f"tx-{interval_s}-{timeout_s}")
        return sink.operators[0]

    out = new_topic(kafka)
    op = op_of(hdb.sinks.kafka(out, bootstrap_servers=kafka.bootstrap, exactly_once=True), 50, 120)
    assert op.transaction_timeout_s == 150          # 3 intervals > checkpoint timeout > 60 s
    op = op_of(hdb.sinks.kafka(out, bootstrap_servers=kafka.bootstrap, exactly_once=True), 1, 90)
    assert op.transaction_timeout_s == 90           # the checkpoint timeout
    with caplog.at_level(logging.WARNING, logger="heliosdb.kafka"):
        op = op_of(hdb.sinks.kafka(out, bootstrap_servers=kafka.bootstrap, exactly_once=True,
                                   transaction_timeout=70), 1, 120)
    assert op.transaction_timeout_s == 70
    assert "transaction_timeout=70s) is shorter than the checkpoint timeout (120s)" in caplog.text
    assert [v for v in values(read_all(kafka, out))] == [b"x", b"x", b"x"]
