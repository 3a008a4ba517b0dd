"""Full garbage collections skip the objects that existed when a job started (they stop
every thread), and the heap is unfrozen when the last job ends."""
import gc
import threading

import pyarrow as pa

import heliosdb as hdb
from heliosdb.runtime import gcfreeze


def _job(freeze_gc: bool, seen: list, gate: threading.Event = None):
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=10, freeze_gc=freeze_gc))

    def look(batch):
        seen.append(gc.get_freeze_count())
        if gate is not None:
            gate.wait(10)

    env.from_arrow(pa.table({"x": list(range(30))})).inspect(look).sink(hdb.sinks.memory())
    return env


def test_a_running_job_freezes_the_heap_and_unfreezes_it_at_the_end():
    gc.unfreeze()
    seen = []
    _job(True, seen).execute(name="gc-freeze")
    assert seen and min(seen) > 10_000          # imports, numba, pyarrow: all frozen
    assert gc.get_freeze_count() == 0


def test_freeze_gc_false_leaves_the_collector_alone():
    gc.unfreeze()
    seen = []
    _job(False, seen).execute(name="gc-no-freeze")
    assert seen == [0, 0, 0]


def test_the_heap_stays_frozen_until_the_last_of_two_jobs_ends():
    gc.unfreeze()
    gate, first, second = threading.Event(), [], []
    h1 = _job(True, first, gate).execute_async(name="gc-one")
    _job(True, second).execute(name="gc-two")
    assert gc.get_freeze_count() > 0             # job one still runs
    gate.set()
    h1.wait(10)
    assert gc.get_freeze_count() == 0


def test_frozen_is_a_no_op_when_disabled():
    gc.unfreeze()
    with gcfreeze.frozen(False):
        assert gc.get_freeze_count() == 0
