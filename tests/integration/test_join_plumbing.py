"""Two inputs meeting in one operator, end to end, without the join operators: a two-input test
operator (``tests/sidetag.py``) stands in for the join and passes every row on tagged with its
side and a per-key count (its checkpointed state).

- sources of any kind on either side, each with its own micro-batching;
- the join's watermark is the minimum of its inputs', and an input that ended drops out;
- late rows of each side reach ``late_output(side)``;
- parallelism 1, 2 and 3 give the same rows; a crash at a chosen batch and a restore (also
  into another parallelism) give exactly the uninterrupted output, and so does a job SIGKILLed
  mid-run and started again.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import heliosdb as hdb
from heliosdb.operators.base import WATERMARK_MAX
from heliosdb.testing import assert_same_rows, crash_and_restore, read_parquet_output, run_job

from .. import sidetag

ROOT = Path(__file__).resolve().parents[2]
BASE_MS = 1_700_000_000_000


@pytest.fixture(autouse=True)
def tagger(monkeypatch):
    sidetag.install(monkeypatch)


def left_table(n: int = 3000, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"ts": BASE_MS + np.arange(n, dtype=np.int64) * 2,
                     "k": rng.integers(0, 50, n), "v": rng.random(n)})


def right_table(n: int = 2000, seed: int = 2) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"ts": BASE_MS + np.arange(n, dtype=np.int64) * 3,
                     "key": pa.array(rng.integers(0, 50, n), pa.int32()),
                     "w": pa.array([f"w{x}" for x in rng.integers(0, 9, n)])})


def source(env, kind: str, table: pa.Table, folder=None):
    if kind == "arrow":
        return env.from_arrow(table)
    if kind == "parquet":
        cut = table.num_rows // 3
        pq.write_table(table.slice(0, cut), f"{folder}/a.parquet")
        pq.write_table(table.slice(cut), f"{folder}/b.parquet")
        return env.from_parquet(f"{folder}/*.parquet")
    if kind == "iterable":
        return env.from_iterable(table.to_pylist(), schema=table.schema)
    raise AssertionError(kind)


def side_rows(out: pa.Table, side: int, columns) -> pa.Table:
    return out.filter(pc.equal(out["side"], side)).select(list(columns))


@pytest.mark.parametrize("left_kind, right_kind", [
    ("arrow", "generate"), ("parquet", "arrow"), ("iterable", "parquet"), ("generate", "iterable")])
def test_two_sources_of_different_kinds_meet_in_one_operator(left_kind, right_kind, tmp_path):
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=256))
    lt, rt = left_table(), right_table()
    gen = env.generate(count=2500, keys=50).select("ts", "key", "value")
    gen_t = hdb.StreamEnvironment().generate(count=2500, keys=50).select("ts", "key", "value").collect()
    (tmp_path / "l").mkdir()
    (tmp_path / "r").mkdir()
    if left_kind == "generate":
        left, lt, lkey = gen.with_columns(k=hdb.col("key")).select("ts", "k", "value"), None, "k"
        lt = gen_t.rename_columns(["ts", "k", "value"])
    else:
        left, lkey = source(env, left_kind, lt, tmp_path / "l"), "k"
    if right_kind == "generate":
        right, rt = gen, gen_t
    else:
        right = source(env, right_kind, rt, tmp_path / "r")
    out = left.join(right, left_on=lkey, right_on="key").collect()
    lcols, rcols = lt.column_names, ["ts_right" if c == "ts" else c for c in rt.column_names]
    assert_same_rows(side_rows(out, 0, lcols), lt)
    assert_same_rows(side_rows(out, 1, rcols).rename_columns(rt.column_names), rt)
    assert out.num_rows == lt.num_rows + rt.num_rows


def test_each_side_keeps_its_batch_size():
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=10_000))
    sizes = {"l": [], "r": []}
    left = env.from_arrow(left_table(1000)).with_batch_size(300).inspect(lambda b: sizes["l"].append(b.num_rows))
    right = env.from_arrow(right_table(1000)).with_batch_size(128).inspect(lambda b: sizes["r"].append(b.num_rows))
    left.join(right, left_on="k", right_on="key").collect()
    assert sizes["l"] == [300, 300, 300, 100] and sizes["r"] == [128] * 7 + [104]


def test_the_joins_watermark_is_the_minimum_and_an_ended_side_drops_out():
    # left: 10 rows at t = 0..9 s, ends at once | right: 200k rows at t = 0..199 s
    # -> the join's watermark stays at or below left's until left ends, then follows right's
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=1000))
    left = env.from_arrow(pa.table({"ts": np.arange(10, dtype=np.int64) * 1000, "k": np.arange(10)}))
    right = env.generate(count=200_000, start_ms=0, events_per_ms=1, keys=10).select("ts", "key")
    j = left.with_watermark("ts").join(right.with_watermark("ts"), left_on="k", right_on="key",
                                       between=(0, 1))
    j.collect()
    (op,) = sidetag.BUILT
    marks = op.watermarks
    assert marks == sorted(marks) and marks[-1] == WATERMARK_MAX
    left_max = 9_000 * 10**6
    for w, (lmax, rmax) in zip(marks[:-1], op.seen_at_watermark[:-1]):
        assert rmax is not None and w <= rmax            # never ahead of the right side
        assert w <= left_max or lmax == left_max         # past the left only once all of it came
    assert max(marks[:-1]) > left_max                    # left ended and dropped out


def test_late_rows_of_each_side_go_to_its_late_output():
    # left: t = 5 s, 1 s (4 s late) | right: t = 6 s, 2 s (4 s late); both without disorder bound
    env = hdb.StreamEnvironment()
    left = env.from_arrow(pa.table({"ts": [5000, 1000], "k": [1, 1]})).with_batch_size(1).with_watermark("ts")
    right = env.from_arrow(pa.table({"ts": [6000, 2000], "k": [1, 1]})).with_batch_size(1).with_watermark("ts")
    j = left.join(right, on="k", between=(0, 1))
    late_l, late_r, out = hdb.sinks.memory(), hdb.sinks.memory(), hdb.sinks.memory()
    j.late_output("left").sink(late_l)
    j.late_output("right").sink(late_r)
    j.sink(out)
    env.execute(name="join-late")
    late = late_l.to_table().to_pydict()["ts"] + late_r.to_table().to_pydict()["ts"]
    assert out.to_table().num_rows + len(late) == 4 and set(late) <= {1000, 2000}
    assert late_l.to_table().schema == left.schema and late_r.to_table().schema == right.schema


def _slow(batch):
    time.sleep(0.005)        # checkpoints (every 1 ms) commit between batches


def _pipeline(env, crash=None, batch=200, folder=None):
    left = env.from_arrow(left_table()).with_batch_size(batch)
    if crash is not None:
        left = left.inspect(_slow).inspect(crash)
    right = env.from_parquet(folder + "/*.parquet").with_batch_size(batch // 2)
    return left.join(right, left_on="k", right_on="key")


@pytest.fixture(scope="module")
def right_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("right")
    t = right_table()
    pq.write_table(t.slice(0, 700), folder / "part-0.parquet")
    pq.write_table(t.slice(700), folder / "part-1.parquet")
    return str(folder)


def test_parallelism_1_2_and_3_give_the_same_rows(right_folder):
    results = []
    for n in (1, 2, 3):
        env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=n))
        results.append(_pipeline(env, folder=right_folder).set_parallelism(n).collect())
    assert results[0].num_rows == 5000
    assert_same_rows(results[1], results[0])
    assert_same_rows(results[2], results[0])


@pytest.mark.parametrize("crash_at, parallelism", [(3, (1, 1)), (9, (2, 2)), (5, (2, 3)), (12, (3, 1))])
def test_a_crash_and_restore_gives_the_uninterrupted_output(crash_at, parallelism, right_folder, tmp_path):
    def build(n):
        def pipeline(env, crash):
            _pipeline(env, crash, folder=right_folder).set_parallelism(n).sink(
                hdb.sinks.parquet(str(tmp_path / "out"), rows_per_file=300))
        return pipeline

    expected = _pipeline(hdb.StreamEnvironment(), folder=right_folder).collect()

    def config(n):
        return hdb.StreamingConfig(parallelism=n, checkpoint=hdb.CheckpointConfig(
            interval=timedelta(milliseconds=1), storage=str(tmp_path / "ckpt")))

    crashed, restored = parallelism
    run = crash_and_restore(build(crashed), config(crashed), crash_at, name="join-crash",
                            restore_config=config(restored))
    assert run.crashed and run.crashed_checkpoints.count >= 1 and run.checkpoints.restores == 1
    got = read_parquet_output(str(tmp_path / "out"))
    assert_same_rows(got, expected)


JOB = """
import sys, time
from datetime import timedelta
sys.path.insert(0, {root!r})
import heliosdb as hdb
from heliosdb.planner import join as pj
from tests import sidetag
from tests.integration.test_join_plumbing import _pipeline
pj.build_operator, pj.join_columns = sidetag.build, sidetag.columns
env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=2, buffer_size=200, checkpoint=hdb.CheckpointConfig(
    interval=timedelta(milliseconds=30), storage={storage!r})))
_pipeline(env, crash=lambda b: time.sleep(0.015), folder={folder!r}).set_parallelism(2).sink(
    hdb.sinks.parquet({out!r}, rows_per_file=300))
env.execute(name="join-kill")
"""


def test_a_job_killed_mid_run_and_started_again_gives_the_uninterrupted_output(right_folder, tmp_path):
    # run -- checkpoints ... SIGKILL after 2 more commits -- run again ... -- run to the end
    script = tmp_path / "job.py"
    storage, out = str(tmp_path / "ckpt"), str(tmp_path / "out")
    script.write_text(JOB.format(root=str(ROOT), storage=storage, folder=right_folder, out=out))
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT)
        seen = _manifests(storage)
        while proc.poll() is None and _manifests(storage) < seen + 2:
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            assert proc.returncode == 0
            break
    else:
        assert subprocess.run([sys.executable, str(script)], cwd=ROOT, timeout=300).returncode == 0
    assert kills >= 1
    expected = _pipeline(hdb.StreamEnvironment(), folder=right_folder).collect()
    assert_same_rows(read_parquet_output(out), expected)


def _manifests(storage: str) -> int:
    return sum(1 for _ in Path(storage).rglob("_manifest.json")) if os.path.isdir(storage) else 0


def test_replicas_after_a_join_take_its_output_and_its_late_rows_still_arrive():
    # join (1 subtask) -> filter as 2 replicas: the join moves to the stage dispatching to them
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
    left = env.from_arrow(pa.table({"ts": [5000, 1000, 6000], "k": [1, 1, 2]})).with_batch_size(1).with_watermark("ts")
    right = env.from_arrow(pa.table({"ts": [5500, 7000], "k": [1, 2]})).with_batch_size(1).with_watermark("ts")
    j = left.join(right, on="k", between=(0, 1))
    late, out = hdb.sinks.memory(), hdb.sinks.memory()
    j.filter(hdb.col("n") >= 0).set_parallelism(2).sink(out)
    j.late_output("left").sink(late)
    assert "round-robin" in str(env.explain())
    env.execute(name="join-replicas")
    assert out.to_table().num_rows + late.to_table().num_rows == 5
    assert late.to_table()["ts"].to_pylist() in ([], [1000])
