"""The checkpoint coordinator: retention, epoch ids, the one-writer lease, how a job ends.

Timeline of the two-writers test::

    job A (slow source)  start ---- running, lease held ------------- end (lease released)
    job B, same name           start -> CheckpointError (lease)          start -> restores A's end
"""
from __future__ import annotations

import json
import os
import time
from datetime import timedelta

import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb.testing import (CrashAt, assert_same_rows, hidden_files, read_parquet_output,
                              run_job)

from . import pipelines as P


def epochs(storage: str, job: str) -> list:
    folder = os.path.join(storage, job)
    return sorted(int(n[4:]) for n in os.listdir(folder) if n.startswith("chk-"))


def manifest(storage: str, job: str, epoch: int) -> dict:
    with open(os.path.join(storage, job, f"chk-{epoch:010d}", "_manifest.json")) as f:
        return json.load(f)


def slowed(table: pa.Table, out: str, sleep_s: float = 0.02):
    """A tumbling-window pipeline whose source side sleeps ``sleep_s`` per batch."""
    def wire(env, crash):
        def slow(batch):
            time.sleep(sleep_s)
            if crash is not None:
                crash(batch)
        (env.from_arrow(table).inspect(slow).with_watermark(time="ts").key_by("k")
         .window(hdb.TumblingWindow.of(timedelta(seconds=2))).aggregate(n=hdb.count(), s=hdb.sum("v"))
         .name("agg").sink(hdb.sinks.parquet(out)))
    return wire


@pytest.fixture(scope="module")
def expected(table, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("expected"))
    run_job(slowed(table, out, 0), P.config())
    return read_parquet_output(out)


# -- retention and epoch ids ----------------------------------------------------------------------
@pytest.mark.parametrize("retain", [1, 2, 3])
def test_only_the_retained_checkpoints_remain_after_commits(retain, table, tmp_path):
    storage = str(tmp_path / "ckpt")
    # 10 ms per batch: about 30 chances of a checkpoint, of which retain + 3 must be taken even
    # on a loaded machine (at no sleep, the whole input could pass in a few).
    _, stats, _ = run_job(slowed(table, str(tmp_path / "out"), 0.01), P.config(storage, retain=retain), "r")
    assert stats.count > retain + 2
    kept = epochs(storage, "r")
    assert kept == list(range(stats.epoch - retain + 1, stats.epoch + 1))
    for e in kept:
        assert manifest(storage, "r", e)["epoch"] == e


def test_epoch_ids_count_on_across_restarts(table, tmp_path, expected):
    storage, out = str(tmp_path / "ckpt"), str(tmp_path / "out")
    build = slowed(table, out, 0)
    crash = CrashAt(18)
    _, first, err = run_job(build, P.config(storage), "ids", crash)
    assert err is not None and first.count >= 2
    before = epochs(storage, "ids")
    _, second, _ = run_job(build, P.config(storage), "ids", crash)
    after = epochs(storage, "ids")
    assert min(after) > first.epoch and second.epoch == max(after)
    _, third, _ = run_job(build, P.config(storage), "ids", crash)        # completed: one more epoch
    assert epochs(storage, "ids")[-1] == second.epoch + 1 == third.epoch
    assert before[-1] < after[-1]
    assert_same_rows(read_parquet_output(out), expected)


# -- one writer per job directory -----------------------------------------------------------------
def test_a_second_live_job_with_the_same_name_is_refused_until_the_first_ends(table, tmp_path, expected):
    storage, out = str(tmp_path / "ckpt"), str(tmp_path / "out")
    env = hdb.StreamEnvironment(P.config(storage))
    slowed(table, out)(env, None)                                  # 30 batches x 20 ms
    first = env.execute_async(name="single")
    try:
        env2 = hdb.StreamEnvironment(P.config(storage))
        slowed(table, str(tmp_path / "other"))(env2, None)
        with pytest.raises(hdb.CheckpointError, match="lease") as err:
            env2.execute_async(name="single")
        assert "single" in str(err.value)
        assert not first.done, "the refusal must come while the first job runs"
        result = first.wait(timeout=60)
    finally:
        first.stop()
        first.wait(timeout=60)
    assert result.metrics["streaming_checkpoints_total"] >= 2
    assert_same_rows(read_parquet_output(out), expected)
    # the first job ended and released the lease: the same job may start (and restores its end)
    _, stats, _ = run_job(slowed(table, out), P.config(storage), "single")
    assert stats.restores == 1
    assert_same_rows(read_parquet_output(out), expected)


def test_a_job_whose_final_checkpoint_cannot_commit_does_not_report_success(table, tmp_path):
    storage, out = str(tmp_path / "ckpt"), str(tmp_path / "out")
    env = hdb.StreamEnvironment(P.config(storage))
    slowed(table, out)(env, None)
    handle = env.execute_async(name="fenced")
    time.sleep(0.2)
    leases = os.path.join(storage, "fenced", "_lease")
    newest = sorted(os.listdir(leases))[-1]
    with open(os.path.join(leases, newest)) as f:
        lease = json.load(f)
    lease.update(owner="another-writer", generation=lease["generation"] + 1)
    with open(os.path.join(leases, f"gen-{lease['generation']:010d}.json"), "x") as f:
        json.dump(lease, f)                                # another process took the job over
    try:
        with pytest.raises(hdb.CheckpointError):
            handle.wait(timeout=60)
    finally:
        handle.stop()
        if not handle.done:
            handle._job.wait(60)
    # Its uncommitted output stays pending (invisible to readers) for the job's next run, or
    # the writer that took over, to clean up.
    assert all(f.endswith(".pending") for f in hidden_files(out))


# -- how a failing job ends -----------------------------------------------------------------------
def test_a_job_failing_while_its_final_checkpoint_waits_ends_at_once(tmp_path):
    # batch 1 is slow and then fails; meanwhile the source emits the other 9 batches, sends
    # the barrier of epoch 1 (which can never complete) and waits to start the final epoch
    def fail_slowly(batch):
        time.sleep(0.3)
        raise RuntimeError("step fails")

    cfg = hdb.StreamingConfig(
        parallelism=1, batch_size=100,
        checkpoint=hdb.CheckpointConfig(interval=timedelta(milliseconds=1), storage=str(tmp_path),
                                        timeout=timedelta(seconds=4)))
    env = hdb.StreamEnvironment(cfg)
    env.from_arrow(pa.table({"x": list(range(1000))})).inspect(fail_slowly).sink(
        hdb.sinks.parquet(str(tmp_path / "out")))
    handle = env.execute_async(name="hang")
    try:
        with pytest.raises(hdb.ExecutionError, match="step fails"):
            handle.wait(timeout=2)
    finally:
        with pytest.raises(hdb.ExecutionError):
            handle.wait(timeout=30)                            # let the hung thread end
