"""Copy-on-write snapshot copies: what is frozen at the barrier is what gets copied, whoever
copies each chunk (the writer thread, or the processing thread before it updates the chunk).

    barrier: freeze n groups | updates to groups (some chunks copied first) | finish() -> copy
    the copy must equal the arrays at the barrier
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from heliosdb.errors import CheckpointError
from heliosdb.kernels._hashagg import GroupTable
from heliosdb.operators.cow import CowCopy


def _state(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.random(n + 7), rng.integers(0, 1000, n + 7)]       # live arrays have spare room


def test_chunks_touched_by_updates_are_copied_before_the_update():
    live = _state(10)
    frozen = [a[:10].copy() for a in live]
    outs = [np.zeros(10, a.dtype) for a in live]
    cow = CowCopy(list(zip(live, outs)), 10, chunk=4)
    assert cow.before_update(np.array([5, 6, 4], np.int64)) == 1          # chunk 1 only
    assert cow.before_update(np.array([6], np.int64)) == 0                # already copied
    assert cow.before_update(np.array([12, 3], np.int64)) == 1            # 12 >= n: not in the snapshot
    for a in live:
        a[:] = a[::-1].copy()                                            # everything changes
    cow.finish()
    # chunks 0 and 1 were copied before the change, chunk 2 (groups 8, 9) after: the caller
    # broke the protocol for chunk 2 on purpose, and it shows
    for o, f, a in zip(outs, frozen, live):
        assert np.array_equal(o[:8], f[:8])
        assert np.array_equal(o[8:], a[8:10])
    assert cow.copied_by_updates == 2 and cow.done


def test_copy_equals_the_state_at_the_barrier_when_updates_follow_the_protocol():
    n = 1000
    live = _state(n, seed=1)
    frozen = [a[:n].copy() for a in live]
    outs = [np.empty(n, a.dtype) for a in live]
    cow = CowCopy(list(zip(live, outs)), n, chunk=64)
    rng = np.random.default_rng(2)
    for _ in range(20):
        ids = np.unique(rng.integers(0, n + 5, 30))
        cow.before_update(ids)
        for a in live:
            a[ids] += 1
    cow.finish()
    for o, f in zip(outs, frozen):
        assert np.array_equal(o, f)


def test_writer_and_processing_threads_copy_concurrently_and_the_copy_is_the_barrier_state():
    n = 200_000
    live = _state(n, seed=3)
    table = GroupTable(1, 16)
    table.insert([np.arange(n, dtype=np.int64) * 3], np.empty(n, np.int64))
    frozen = [a[:n].copy() for a in live]
    outs = [np.empty(n, a.dtype) for a in live]
    keys_out = np.empty(n, np.int64)
    cow = CowCopy(list(zip(live, outs)), n, table, keys_out, chunk=1024)
    writer = threading.Thread(target=cow.finish)
    writer.start()
    rng = np.random.default_rng(4)
    extra = n * 3
    while not cow.done:
        ids = np.unique(rng.integers(0, n, 500))
        cow.before_update(ids)
        for a in live:
            a[ids] += 1
        new = np.arange(extra, extra + 5000, dtype=np.int64)         # growth moves the keys
        extra += 5000
        with cow.lock:
            table.insert([new], np.empty(len(new), np.int64))
    writer.join()
    for o, f in zip(outs, frozen):
        assert np.array_equal(o, f)
    assert np.array_equal(keys_out, np.arange(n, dtype=np.int64) * 3)


def test_release_stops_copying_and_a_cancelled_copy_refuses_to_finish():
    live = _state(10)
    outs = [np.zeros(10, a.dtype) for a in live]
    cow = CowCopy(list(zip(live, outs)), 10, chunk=4)
    cow.release()
    assert cow.done and cow.released
    assert cow.before_update(np.array([1], np.int64)) == 0
    assert not outs[0].any()                                            # nothing written
    with pytest.raises(CheckpointError, match="cancelled"):
        cow.finish()


def test_nothing_to_copy_is_done_at_once():
    cow = CowCopy([(np.zeros(4), np.zeros(0))], 0)
    assert cow.done
    cow.finish()
