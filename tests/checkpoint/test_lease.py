"""The one-writer lease: taken by an exclusive create of one file per generation, confirmed by
reading it back; of processes that start at the same moment exactly one gets it.

Timeline of one stress pair::

    process A  --- barrier ---> acquire -> gen 1 (won) --- barrier --- release
    process B  --- barrier ---> acquire -> refused   ----- barrier
"""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

import heliosdb as hdb
from heliosdb.checkpoint.lease import LEASES, Lease
from heliosdb.checkpoint.storage import Store


def _lease(tmp_path, timeout_s: float = 10.0) -> Lease:
    return Lease(Store(str(tmp_path), "job"), timeout_s)


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _write_generation(tmp_path, generation: int, **fields) -> str:
    folder = tmp_path / "job" / LEASES
    folder.mkdir(parents=True, exist_ok=True)
    record = {"generation": generation, "owner": "someone", "host": os.uname().nodename, "pid": os.getpid(),
              "heartbeat": time.time(), "released": False, **fields}
    path = folder / f"gen-{generation:010d}.json"
    path.write_text(json.dumps(record))
    return str(path)


def test_a_second_taker_is_refused_and_generations_move_forward(tmp_path):
    a, b = _lease(tmp_path), _lease(tmp_path)
    a.acquire()
    assert a.generation == 1 and a.held()
    with pytest.raises(hdb.CheckpointError, match=r"job 'job' is already running \(lease generation 1 held by pid"):
        b.acquire()
    assert b.generation == 0 and not b.held()
    a.release()
    assert not a.held()
    b.acquire()
    assert b.generation == 2 and b.held()
    assert os.listdir(tmp_path / "job" / LEASES) == ["gen-0000000002.json"], "older generations are removed"
    b.release()


def test_a_newer_generation_fences_the_holder_off(tmp_path):
    a = _lease(tmp_path)
    a.acquire()
    _write_generation(tmp_path, a.generation + 1)           # another process took over
    assert not a.held()
    a.release()                                             # does not touch the newer holder's file
    assert json.loads((tmp_path / "job" / LEASES / "gen-0000000002.json").read_text())["owner"] == "someone"


@pytest.mark.parametrize("holder", ["dead-pid", "stale-heartbeat", "released", "torn-and-old"])
def test_a_lease_whose_holder_is_gone_is_taken_with_the_next_generation(holder, tmp_path):
    fields = {"dead-pid": {"pid": _dead_pid() if holder == "dead-pid" else 0},
              "stale-heartbeat": {"heartbeat": time.time() - 60},
              "released": {"released": True}}.get(holder, {})
    path = _write_generation(tmp_path, 4, **fields)
    if holder == "torn-and-old":
        with open(path, "w") as f:
            f.write('{"generation": 4, "own')
        os.utime(path, (time.time() - 60, time.time() - 60))
    lease = _lease(tmp_path)
    lease.acquire()
    assert lease.generation == 5 and lease.held()
    lease.release()


def test_a_torn_lease_file_that_is_fresh_keeps_others_out(tmp_path):
    path = _write_generation(tmp_path, 3)
    with open(path, "w") as f:
        f.write("")                                          # its writer may be writing it now
    with pytest.raises(hdb.CheckpointError, match="already running"):
        _lease(tmp_path).acquire()


def test_a_live_lease_of_an_older_version_is_respected(tmp_path):
    (tmp_path / "job").mkdir()
    legacy = {"generation": 7, "owner": "old", "host": os.uname().nodename, "pid": os.getpid(),
              "heartbeat": time.time()}
    (tmp_path / "job" / "_lease.json").write_text(json.dumps(legacy))
    with pytest.raises(hdb.CheckpointError, match="older HeliosDB version"):
        _lease(tmp_path).acquire()
    legacy["heartbeat"] = time.time() - 60
    (tmp_path / "job" / "_lease.json").write_text(json.dumps(legacy))
    lease = _lease(tmp_path)
    lease.acquire()
    assert lease.generation == 8
    assert not (tmp_path / "job" / "_lease.json").exists()
    lease.release()


def test_the_heartbeat_keeps_a_live_holder_in(tmp_path):
    a = _lease(tmp_path, timeout_s=0.3)
    a.acquire()
    time.sleep(0.8)                                          # longer than the timeout: beats renewed it
    with pytest.raises(hdb.CheckpointError, match="already running"):
        _lease(tmp_path, timeout_s=0.3).acquire()
    a.release()


# -- processes starting at the same moment --------------------------------------------------------
def _contend(folder: str, start, done, results) -> None:
    lease = Lease(Store(folder, "job"), 10.0)
    start.wait()
    try:
        lease.acquire()
    except hdb.CheckpointError:
        results.put((os.getpid(), "refused"))
        done.wait()
        return
    # the winner "writes": a file of its own, while the others try
    with open(os.path.join(folder, "job", f"writer-{os.getpid()}"), "x"):
        pass
    results.put((os.getpid(), "won"))
    done.wait()
    lease.release()


def contend(folder: str, processes: int) -> list:
    """Start ``processes`` processes that take the lease of one job at the same moment (a
    barrier releases them together); what each got."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["heliosdb.checkpoint.lease"])
    start, done, results = ctx.Barrier(processes), ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(folder, start, done, results)) for _ in range(processes)]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return out


def test_of_two_processes_starting_together_exactly_one_takes_the_lease(tmp_path):
    for pair in range(10):
        folder = str(tmp_path / f"pair{pair}")
        os.makedirs(folder)
        got = contend(folder, 2)
        winners = [pid for pid, what in got if what == "won"]
        assert len(winners) == 1, f"pair {pair}: {got}"
        writers = [n for n in os.listdir(os.path.join(folder, "job")) if n.startswith("writer-")]
        assert writers == [f"writer-{winners[0]}"], f"pair {pair}: only the winner writes, found {writers}"
