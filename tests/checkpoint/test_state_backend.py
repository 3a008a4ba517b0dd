"""State backends: the memory backend's bound (state over ``max_size_bytes`` fails the job with
an error naming the step, the size and the bound, never an out-of-memory kill later); RocksDB
working folders of processes killed outright are removed by the next start, never those of
live processes::

    process A  opens RocksDB (win-<pidA>-<hex>/ + .lock held) -- SIGKILL: both stay
    process B  starts a RocksDB job: pidA gone, lock free -> removes them
"""
from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import heliosdb as hdb
from heliosdb.state.rocksdb import remove_abandoned

from . import pipelines as P

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", ["tumbling", "sliding", "session", "running"])
def test_state_over_the_memory_bound_fails_naming_the_step_and_the_size(kind, tmp_path):
    cfg = hdb.StreamingConfig(parallelism=1, batch_size=P.BATCH,
                              state_backend=hdb.StateBackend.memory(max_size_bytes=20_000))
    env = hdb.StreamEnvironment(cfg)
    P.build(kind, "arrow", str(tmp_path / "out"), P.events())(env, None)
    with pytest.raises(hdb.HeliosError) as err:
        env.execute(name="bounded")
    msg = str(err.value)
    assert "'agg'" in msg, msg                       # the step
    assert "20,000 bytes" in msg, msg                # the bound
    size = int(re.search(r"state is ([\d,]+) bytes", msg).group(1).replace(",", ""))
    assert size > 20_000                             # the size it reached
    assert "max_size_bytes" in msg                   # the fix


def test_state_within_the_memory_bound_runs(tmp_path):
    cfg = hdb.StreamingConfig(parallelism=1, batch_size=P.BATCH,
                              state_backend=hdb.StateBackend.memory(max_size_bytes=64 * 2**20))
    env = hdb.StreamEnvironment(cfg)
    P.build("tumbling", "arrow", str(tmp_path / "out"), P.events())(env, None)
    assert env.execute(name="roomy").metrics["streaming_events_processed_total"] == P.N


# -- RocksDB working folders of processes that are gone ------------------------------------------
HOLDER = """
import sys, time
from heliosdb.state.rocksdb import RocksDB
db = RocksDB(sys.argv[1], "win", 8 << 20, 4 << 20)
db.db[b"key"] = b"v" * 100_000
db.db.flush()
print(db.path, flush=True)
time.sleep(120)
"""


def _holder(root: str):
    """A process with an open RocksDB under ``root``: (process, its working folder)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, root], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    path = proc.stdout.readline().strip()
    assert path and os.path.isdir(path), f"the holder did not start (exit code {proc.poll()})"
    return proc, path


def test_the_rocksdb_folder_of_a_sigkilled_process_is_removed_when_the_next_job_starts(tmp_path):
    root = str(tmp_path / "rocks")
    proc, path = _holder(root)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.path.isdir(path) and os.path.exists(path + ".lock"), "precondition: SIGKILL leaves them behind"
    cfg = hdb.StreamingConfig(parallelism=1, batch_size=P.BATCH, state_backend=hdb.StateBackend.rocksdb(path=root))
    env = hdb.StreamEnvironment(cfg)
    P.build("running", "arrow", str(tmp_path / "out"), P.events(), value_sets=False)(env, None)
    env.execute(name="next")
    assert not os.path.exists(path) and not os.path.exists(path + ".lock")
    assert os.listdir(root) == [], "the job's own folder is removed when it ends"


def test_the_rocksdb_folder_of_a_live_process_is_kept(tmp_path):
    root = str(tmp_path / "rocks")
    proc, path = _holder(root)
    try:
        assert remove_abandoned(root) == []
        assert os.path.isdir(path)
    finally:
        proc.kill()
        proc.wait()
    assert remove_abandoned(root) == [path]


def test_a_folder_whose_lock_is_held_is_kept_even_if_its_pid_is_gone(tmp_path):
    # pid reuse the other way round: the name's pid is gone, but a live process holds the lock
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    path = str(tmp_path / f"win-{gone}-0123abcd")
    os.makedirs(path)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert remove_abandoned(str(tmp_path)) == [] and os.path.isdir(path)
    finally:
        os.close(fd)
    assert remove_abandoned(str(tmp_path)) == [path] and os.listdir(tmp_path) == []


def test_a_job_refused_by_the_lease_leaves_no_rocksdb_folder(tmp_path):
    # the database opens on first use, after the lease: a job that never ran writes nothing
    from heliosdb.checkpoint.lease import Lease
    from heliosdb.checkpoint.storage import Store

    root, storage = str(tmp_path / "rocks"), str(tmp_path / "ckpt")
    holder = Lease(Store(storage, "busy"), 10.0)
    holder.acquire()
    try:
        cfg = P.config(storage, 1)
        cfg = hdb.StreamingConfig(parallelism=1, batch_size=P.BATCH, checkpoint=cfg.checkpoint,
                                  state_backend=hdb.StateBackend.rocksdb(path=root))
        env = hdb.StreamEnvironment(cfg)
        P.build("running", "arrow", str(tmp_path / "out"), P.events(), value_sets=False)(env, None)
        with pytest.raises(hdb.CheckpointError, match="already running"):
            env.execute(name="busy")
    finally:
        holder.release()
    assert not os.path.exists(root) or os.listdir(root) == []
