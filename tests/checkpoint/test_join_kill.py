"""Kill and restore with join state: a checkpointed window join and a checkpointed interval join,
each on the memory and on the RocksDB backend, run in real processes that are SIGKILLed
mid-run and started again, at another parallelism each time, until one completes; their
exactly-once Parquet sink then holds exactly the rows of an uninterrupted run: none missing,
none twice, no uncommitted file left.

Timeline of one test (40 left batches x 40 ms, checkpoints every 50 ms)::

    fork p=2 -- restore nothing -- batches ... [chk] [chk] ... SIGKILL
    fork p=1 -- restore the last committed epoch (2 subtasks' state into 1) -- ... SIGKILL
    fork p=2 -- restore (1 subtask's state into 2) -- ... the end (exit 0)

The processes are forked from the kill tests' warm zygote (``killjob.py``, ``"kind": "join"``).
What test_join_e2e.py checks in one process (a crash at a chosen batch, every kind of join,
memory state) this checks with a real SIGKILL, RocksDB state (whose folder the kill abandons)
and both directions of a change of parallelism.
"""
from __future__ import annotations

import glob
import json
import os
import signal
import time

import numpy as np
import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb.testing import assert_same_rows, hidden_files, read_parquet_output

from . import killjob
from . import pipelines as P
from .test_kill import log_of, zygote  # noqa: F401 - zygote: the kill tests' fixture

BASE_MS = 1_700_000_000_000
PARALLELISM = [2, 1, 2]            # one run each: killed, killed, to the end
SPEC = {"kind": "join", "batch_size": 150, "sleep_s": 0.04, "interval_ms": 50, "name": "join-killed"}


def _side(n: int, seed: int, step_ms: int, payload: str) -> pa.Table:
    """``n`` rows ~``step_ms`` apart, some up to 300 ms early (within the 400 ms bound, so no
    row is late and the result does not depend on timing), ``k`` in 0..30 with 3% nulls."""
    rng = np.random.default_rng(seed)
    ts = BASE_MS + np.arange(n, dtype=np.int64) * step_ms - np.where(rng.random(n) < 0.2, rng.integers(0, 300, n), 0)
    k = rng.integers(0, 30, n)
    return pa.table({"ts": ts, "k": pa.array(k, mask=rng.random(n) < 0.03), payload: rng.random(n)})


def newest_epoch(spec: dict) -> int:
    """The newest committed checkpoint's epoch (0: none); older ones are deleted as new ones
    commit, so their number, not their count, says how far the job got."""
    done = glob.glob(os.path.join(spec["storage"], spec["name"], "chk-*", "_manifest.json"))
    return max((int(os.path.basename(os.path.dirname(m))[4:]) for m in done), default=0)


def join_rows(spec: dict) -> int:
    """Rows of join state in the newest committed checkpoint (what a restart restores)."""
    path = os.path.join(spec["storage"], spec["name"], f"chk-{newest_epoch(spec):010d}", "_manifest.json")
    with open(path) as f:
        ops = json.load(f)["operators"]
    return sum(x["rows"] for op in ops.values() if op["kind"] == "join" for files in op["files"].values()
               for x in files)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Both inputs as Parquet folders, and each join's uninterrupted output."""
    left, right = _side(6000, 11, 5, "v"), _side(4000, 12, 7, "w")
    lf = P.write_parquet_input(left, str(tmp_path_factory.mktemp("join-left")))
    rf = P.write_parquet_input(right, str(tmp_path_factory.mktemp("join-right")))
    expected = {}
    for kind in ("window", "interval"):
        env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
        expected[kind] = killjob.join_pipeline(env, env.from_arrow(left), env.from_arrow(right), kind).collect()
        assert expected[kind].num_rows > 0
    return lf, rf, expected


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
@pytest.mark.parametrize("kind", ["window", "interval"])
def test_a_join_sigkilled_and_restarted_at_another_parallelism_gives_the_uninterrupted_output(
        kind, backend, zygote, inputs, tmp_path):
    lf, rf, expected = inputs
    spec = {**SPEC, "left": lf, "right": rf, "join": kind, "backend": backend, "rocksdb": str(tmp_path / "rocks"),
            "storage": str(tmp_path / "ckpt"), "out": str(tmp_path / "out"), "log": str(tmp_path / "log.txt")}
    kills, restorable = 0, []
    for run, parallelism in enumerate(PARALLELISM):
        spec["parallelism"] = parallelism
        before = newest_epoch(spec)
        pid = zygote.run(spec)
        if run == len(PARALLELISM) - 1:
            status = zygote.wait(pid)
            assert status == 0, f"the last run exited with {status}:\n{log_of(spec)}"
            break
        # kill once this run has committed two checkpoints of its own (it restored, and its
        # state of the new parallelism went into a checkpoint)
        deadline = time.monotonic() + 60
        while newest_epoch(spec) < before + 2 and time.monotonic() < deadline:
            time.sleep(0.002)
        status = zygote.kill(pid)
        restorable.append(join_rows(spec))
        assert status == -signal.SIGKILL, (
            f"run {run} (parallelism {parallelism}) ended before it was killed ({status}): the job is too "
            f"fast for this test:\n{log_of(spec)}")
        kills += 1
    assert kills == len(PARALLELISM) - 1
    assert all(restorable), f"a restart found no join state to restore: {restorable}"
    assert hidden_files(spec["out"]) == [], "uncommitted files left in the sink's folder"
    assert_same_rows(read_parquet_output(spec["out"]), expected[kind])
