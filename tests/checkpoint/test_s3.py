"""Checkpoints, the Parquet source and the exactly-once Parquet sink on ``s3://`` (a local
moto server): a job crashed at batch k and restored from S3 writes exactly the uninterrupted
output.
"""
from __future__ import annotations

import uuid

import pyarrow.parquet as pq
import pytest

from heliosdb.checkpoint import read_state
from heliosdb.testing import (assert_same_rows, crash_and_restore, hidden_files, last_per_key,
                              read_parquet_output, run_job)

from . import pipelines as P


@pytest.fixture
def s3(s3_endpoint):
    """(bucket, storage_options, s3fs filesystem) for a fresh bucket holding the input."""
    import s3fs

    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}}
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    bucket = f"heliosdb-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    table = P.events()
    for j, part in enumerate((table.slice(0, 5000), table.slice(5000))):
        with fs.open(f"{bucket}/input/part-{j}.parquet", "wb") as f:
            pq.write_table(part, f, row_group_size=1000)
    return bucket, options, fs, table


@pytest.mark.parametrize("kind,crash_at,par", [("tumbling", 13, (2, 1)), ("running", 7, (1, 2))])
def test_crash_and_restore_with_checkpoints_input_and_output_on_s3(kind, crash_at, par, s3, tmp_path):
    bucket, options, fs, table = s3
    reference = str(tmp_path / "reference")
    run_job(P.build(kind, "arrow", reference, table), P.config())

    out, storage = f"s3://{bucket}/out", f"s3://{bucket}/ckpt"
    fs.pipe(f"{bucket}/out/.keep", b"")      # works around the bug of the next test
    build = P.build(kind, "parquet", out, folder=f"s3://{bucket}/input/", storage_options=options)
    run = crash_and_restore(build, P.config(storage, par[0], storage_options=options), crash_at,
                            name="on-s3", restore_config=P.config(storage, par[1], storage_options=options))
    assert run.crashed and run.crashed_checkpoints.count >= 1 and run.checkpoints.restores == 1
    fs.invalidate_cache()
    assert [p for p in fs.ls(f"{bucket}/ckpt/on-s3") if "/chk-" in p], "the checkpoints are on S3"
    assert hidden_files(out, options) == [".keep"]
    got, want = read_parquet_output(out, options), read_parquet_output(reference)
    if kind == "running":
        got, want = last_per_key(got, ["k"]), last_per_key(want, ["k"])
        state = read_state(f"{storage}/on-s3", operator="agg", storage_options=options)
        assert sorted(state.column("k").to_pylist()) == sorted(set(table.column("k").to_pylist()))
    assert_same_rows(got, want)


def test_a_checkpointed_job_can_write_parquet_to_a_new_s3_folder(s3):
    bucket, options, fs, table = s3
    build = P.build("tumbling", "arrow", f"s3://{bucket}/fresh", table, storage_options=options)
    run_job(build, P.config(f"s3://{bucket}/ckpt", storage_options=options), "fresh")
    assert read_parquet_output(f"s3://{bucket}/fresh", options).num_rows > 0


def test_the_lease_on_s3_admits_one_writer(s3):
    # exclusive create through pipe_file(mode="create") (If-None-Match), confirmed by reading back
    from heliosdb.checkpoint.lease import Lease, create_exclusive
    from heliosdb.checkpoint.storage import Store
    from heliosdb.errors import CheckpointError

    bucket, options, fs, _ = s3
    store = Store(f"s3://{bucket}/ckpt", "leased", options)
    assert create_exclusive(store, f"{store.dir}/x", b"1") and not create_exclusive(store, f"{store.dir}/x", b"2")
    assert fs.cat_file(f"{bucket}/ckpt/leased/x") == b"1"
    a, b = Lease(store, 10.0), Lease(store, 10.0)
    a.acquire()
    with pytest.raises(CheckpointError, match="already running"):
        b.acquire()
    a.release()
    b.acquire()
    assert b.generation == 2 and b.held()
    b.release()
