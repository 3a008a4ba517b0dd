"""Lookup joins with a table read from Parquet: a refreshed table swapped in mid-stream (and a
broken file that keeps the version in use), a table on S3 (the moto server), and a
checkpointed job crashed and restored, whose output equals an uninterrupted run's."""
from __future__ import annotations

import glob
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import heliosdb as hdb
from heliosdb.testing import assert_same_rows, crash_and_restore, read_parquet_output, run_job, wait_until
from tests.checkpoint import pipelines as P
from tests.checkpoint.conftest import s3_endpoint  # noqa: F401 - the fixture

WAIT_S = 30.0
ROOT = Path(__file__).resolve().parents[2]


def write(path, table: pa.Table) -> None:
    """Replace ``path`` at once (a reader sees the old file or the new one, never half)."""
    tmp = f"{path}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def dim(version: str, ids) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "tier": [f"{version}-{i}" for i in ids]})


class Phases:
    """A generator of events in phases; between two phases it waits for the job (through the
    handle set later) to reach what ``between[i]`` waits for."""

    def __init__(self, phases, between):
        self.phases, self.between = phases, between
        self.handle = None
        self.seen = 0               # rows the sink has taken
        self.error = None

    def sink(self, batch: pa.RecordBatch) -> None:
        self.seen += batch.num_rows
        self.batches.append(batch)

    def __iter__(self):
        self.batches = []
        sent = 0
        for i, phase in enumerate(self.phases):
            if i:
                # every row so far went through the join; then the change and its effect
                assert wait_until(lambda: self.seen >= sent, WAIT_S), "the rows did not reach the sink"
                self.between[i - 1](self)
            for r in phase:
                sent += 1
                yield r

    def stats(self):
        if self.handle is None:
            return None
        return self.handle.metrics()["lookup_tables"].get("enrich")


def test_a_refreshed_table_is_swapped_in_mid_stream_and_a_broken_file_keeps_it(tmp_path, caplog):
    path = str(tmp_path / "dim.parquet")
    write(path, dim("v1", [1, 2]))
    events = lambda lo, hi: [{"i": i, "id": 1 + i % 3} for i in range(lo, hi)]   # noqa: E731

    def new_version(ph: Phases) -> None:
        write(path, dim("v2", [1, 2, 3]))
        assert wait_until(lambda: (ph.stats() or {}).get("rows") == 3, WAIT_S), ph.stats()

    def broken_file(ph: Phases) -> None:
        failed = ph.stats()["refresh_failures"]
        with open(path, "wb") as f:
            f.write(b"PAR1 this is not a parquet file")
        assert wait_until(lambda: ph.stats()["refresh_failures"] >= failed + 2, WAIT_S), ph.stats()

    ph = Phases([events(0, 20), events(20, 40), events(40, 60)], [new_version, broken_file])
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=4, parallelism=1))
    table = hdb.table(path, refresh=0.02)
    (env.from_iterable(ph, schema=pa.schema([("i", pa.int64()), ("id", pa.int64())]))
        .with_batch_timeout(0.01)
        .join(table, on="id", how="left").name("enrich").sink(hdb.sinks.callback(ph.sink)))
    with caplog.at_level(logging.WARNING, logger="heliosdb.lookup"):
        ph.handle = env.execute_async(name="refresh")
        ph.handle.wait(timeout=120)
    out = pa.Table.from_batches(ph.batches).sort_by("i").to_pydict()
    assert out["i"] == list(range(60))
    want = ([None if k == 3 else f"v1-{k}" for k in [1 + i % 3 for i in range(20)]]
            + [f"v2-{1 + i % 3}" for i in range(20, 60)])      # the broken file kept v2
    assert out["tier"] == want
    failures = [r for r in caplog.records if "reloading the lookup table" in r.getMessage()]
    assert len(failures) == 1 and "version" in failures[0].getMessage()
    stats = ph.stats()
    assert stats["version"] >= 2 and stats["refresh_failures"] >= 2 and stats["rows"] == 3


def test_a_table_on_s3_is_joined_and_refreshed(s3_endpoint):  # noqa: F811
    import s3fs

    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}}
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    bucket = f"heliosdb-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    for j, ids in enumerate(([1, 2], [3])):               # a folder of two files
        with fs.open(f"{bucket}/dim/part-{j}.parquet", "wb") as f:
            pq.write_table(dim("s3", ids), f)
    table = hdb.table(f"s3://{bucket}/dim/", storage_options=options)
    env = hdb.StreamEnvironment()
    out = (env.from_arrow(pa.table({"id": pa.array([3, 1, 4, 2], pa.int64())}))
           .join(table, on="id").collect())
    assert out.to_pydict() == {"id": [3, 1, 2], "tier": ["s3-3", "s3-1", "s3-2"]}

    # refreshed: a rewritten object is seen by a running job
    def second(ph: Phases) -> None:
        with fs.open(f"{bucket}/dim/part-1.parquet", "wb") as f:
            pq.write_table(dim("new", [3, 4]), f)
        assert wait_until(lambda: (ph.stats() or {}).get("rows") == 4, WAIT_S), ph.stats()

    ph = Phases([[{"id": 4}], [{"id": 4}, {"id": 1}]], [second])
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=1))
    (env.from_iterable(ph).with_batch_timeout(0.01)
        .join(hdb.table(f"s3://{bucket}/dim/", refresh=0.05, storage_options=options), on="id", how="left")
        .name("enrich").sink(hdb.sinks.callback(ph.sink)))
    ph.handle = env.execute_async(name="s3-refresh")
    ph.handle.wait(timeout=120)
    assert pa.Table.from_batches(ph.batches).to_pydict() == {"id": [4, 4, 1], "tier": [None, "new-4", "s3-1"]}


def _dimension(folder) -> str:
    """A Parquet table of 30 of the events' 40 keys, one of them twice."""
    keys = [f"k{x:02d}" for x in range(30)] + ["k07"]
    path = f"{folder}/dim.parquet"
    pq.write_table(pa.table({"k": keys, "region": [f"r{i % 4}" for i in range(31)],
                             "weight": np.arange(31, dtype=np.float64)}), path)
    return path


def _build(path: str, out: str, table: pa.Table, windowed: bool):
    def wire(env: hdb.StreamEnvironment, crash) -> None:
        s = env.from_arrow(table).inspect(crash or (lambda b: None))
        s = s.join(hdb.table(path), on="k", how="inner" if windowed else "left").name("enrich")
        if windowed:
            s = (s.with_watermark(time="ts", max_out_of_orderness=timedelta(milliseconds=300)).key_by("region")
                 .window(hdb.TumblingWindow.of(2)).aggregate(n=hdb.count(), w=hdb.sum("weight")).name("agg"))
        s.sink(hdb.sinks.parquet(out, rows_per_file=700))
    return wire


@pytest.mark.parametrize("windowed,crash_at,par", [(False, 9, (1, 2)), (True, 13, (2, 1))])
def test_a_crashed_checkpointed_job_restores_to_the_uninterrupted_output(tmp_path, windowed, crash_at, par):
    path = _dimension(tmp_path)
    table = P.events()
    reference = str(tmp_path / "reference")
    run_job(_build(path, reference, table, windowed), P.config())
    out, storage = str(tmp_path / "out"), str(tmp_path / "ckpt")
    run = crash_and_restore(_build(path, out, table, windowed), P.config(storage, par[0]), crash_at,
                            name="lookup-restore", restore_config=P.config(storage, par[1]))
    assert run.crashed and run.crashed_checkpoints.count >= 1 and run.checkpoints.restores == 1
    got, want = read_parquet_output(out), read_parquet_output(reference)
    assert want.num_rows > 0
    assert_same_rows(got, want)


def _slow(batch: pa.RecordBatch) -> None:
    time.sleep(0.03)


def child(spec: dict) -> None:
    """The job the next test SIGKILLs: slow batches, checkpoints every 50 ms."""
    env = hdb.StreamEnvironment(P.config(spec["storage"], 1, interval_ms=50))
    _build(spec["dim"], spec["out"], P.events(), False)(env, _slow)
    env.execute(name="lookup-kill")


def test_a_sigkilled_checkpointed_job_restores_to_the_uninterrupted_output(tmp_path):
    path = _dimension(tmp_path)
    reference = str(tmp_path / "reference")
    run_job(_build(path, reference, P.events(), False), P.config())
    spec = {"dim": path, "out": str(tmp_path / "out"), "storage": str(tmp_path / "ckpt")}
    code = f"import json; from tests.integration.test_lookup_join import child; child(json.loads({json.dumps(spec)!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        committed = lambda: glob.glob(f"{spec['storage']}/lookup-kill/chk-*/_manifest.json")   # noqa: E731
        assert wait_until(lambda: len(committed()) >= 2 or proc.poll() is not None, 120)
        assert proc.poll() is None, f"the job ended (exit code {proc.returncode}) before it was killed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    result, checkpoints, _ = run_job(_build(path, spec["out"], P.events(), False), P.config(spec["storage"], 2),
                                     name="lookup-kill")
    assert checkpoints.restores == 1
    assert_same_rows(read_parquet_output(spec["out"]), read_parquet_output(reference))
