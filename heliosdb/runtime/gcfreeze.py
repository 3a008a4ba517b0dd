"""Keep Python's full garbage collections short while jobs run.

A full (generation 2) collection stops every thread while it scans every container object in
the process.  After importing numba, pyarrow and compiling a job's kernels that is 150K+
objects: 70 ms per collection on the project's machine, and 270-350 ms in a Kafka job, where
tens of thousands of messages a second are promoted and trigger collections every few seconds.
That is a latency spike for every event in flight.

While at least one job runs (``StreamingConfig(freeze_gc=True)``, the default), the objects
that existed when the first job started are moved to the collector's permanent generation
(:func:`gc.freeze`), so full collections scan only what was created since; they are
returned (:func:`gc.unfreeze`) when the last job ends.  Nothing is leaked: frozen objects
that became garbage are collected after the unfreeze.

>>> with frozen(True):
...     import gc
...     gc.get_freeze_count() > 0
True
"""
from __future__ import annotations

import contextlib
import gc
import threading
from typing import Iterator

_lock = threading.Lock()
_jobs = 0


def freeze() -> None:
    """A job starts: freeze the heap if it is the only job running."""
    global _jobs
    with _lock:
        _jobs += 1
        if _jobs == 1:
            gc.freeze()


def unfreeze() -> None:
    """A job ended: unfreeze once no job runs."""
    global _jobs
    with _lock:
        _jobs = max(_jobs - 1, 0)
        if _jobs == 0:
            gc.unfreeze()


@contextlib.contextmanager
def frozen(enabled: bool = True) -> Iterator[None]:
    """``freeze()`` for the duration of a ``with`` block (nothing if not ``enabled``)."""
    if not enabled:
        yield
        return
    freeze()
    try:
        yield
    finally:
        unfreeze()
