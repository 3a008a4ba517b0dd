"""The counters a running job's threads write, each from one thread, per batch (never per
event): :class:`OperatorStats` per operator, :class:`TaskStats` per thread, :class:`CheckpointStats`
per job; and :class:`Sample`, a reading of them at one instant, two of which give rates and
fractions (:func:`task_fractions`).  :mod:`heliosdb.metrics` reads and exports them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .display import fraction
from .histograms import LatencyHistogram, PowerHistogram

checkpoint_log = logging.getLogger("heliosdb.checkpoint")


@dataclass
class OperatorStats:
    """One operator's counters; written by its task's thread only."""

    name: str
    kind: str
    task: str = ""
    rows_in: int = 0
    rows_out: int = 0
    batches: int = 0
    busy_ns: int = 0
    latency: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(locked=False))
    batch_rows: PowerHistogram = field(default_factory=PowerHistogram)


@dataclass
class TaskStats:
    """One thread's time, split into busy, blocked (on a full output channel) and idle
    (waiting for input).  A channel the task waits on sets ``*_since`` while it waits, so a
    reader sees a wait in progress, not only finished ones."""

    name: str
    operators: List[str]
    stage: str = ""
    downstream: List[str] = field(default_factory=list)
    group: str = ""
    inbox: Optional[object] = None          # the input Channel (None for the source)
    started_ns: int = 0
    finished_ns: int = 0
    blocked_ns: int = 0
    blocked_since: int = 0
    idle_ns: int = 0
    idle_since: int = 0
    #: The part of ``idle_ns`` a source spent waiting on purpose, to keep its declared rate
    #: (``generate(rate=)``): paced, not short of work.
    paced_ns: int = 0
    cpu_ns: int = 0                         # the thread's CPU time, set when it ends

    def times(self, now: int) -> Tuple[int, int, int, int]:
        """(alive, busy, blocked, idle) nanoseconds up to ``now``, waits in progress included."""
        if not self.started_ns:
            return 0, 0, 0, 0
        end = self.finished_ns or now
        alive = max(end - self.started_ns, 0)
        since = self.blocked_since
        blocked = self.blocked_ns + (max(end - since, 0) if since and not self.finished_ns else 0)
        since = self.idle_since
        idle = self.idle_ns + (max(end - since, 0) if since and not self.finished_ns else 0)
        blocked, idle = min(blocked, alive), min(idle, alive)
        return alive, max(alive - blocked - idle, 0), blocked, idle


class CheckpointStats:
    """Checkpoint counters, for the checkpoint coordinator to update.

    Each method records the event and logs it at INFO (a failure at WARNING) with the job and
    epoch as structured fields.

    Examples
    --------
    >>> cp = CheckpointStats("doc-job")
    >>> cp.completed(epoch=1, duration_s=0.25)
    >>> cp.failed(epoch=2, error=OSError("disk full"))
    >>> cp.count, cp.failures, cp.epoch
    (1, 1, 1)
    """

    def __init__(self, job: str):
        self.job = job
        self.count = 0
        self.failures = 0
        self.epoch = 0
        self.duration = LatencyHistogram()
        self.restores = 0               # checkpoints restored at start
        self.fallbacks = 0              # unusable newest checkpoints skipped at restore
        self.last_size_bytes = 0        # files of the last completed checkpoint
        self.last_pause_s = 0.0         # longest snapshot pause of a stage in it
        self.last_duration_s = 0.0
        self.history: List[dict] = []    # per completed checkpoint: epoch, duration, pause, size

    def completed(self, epoch: int, duration_s: float, size_bytes: Optional[int] = None) -> None:
        self.count += 1
        self.epoch = epoch
        self.duration.add(int(duration_s * 1e9))
        size = "" if size_bytes is None else f", {size_bytes:,} bytes"
        checkpoint_log.info("job %r: checkpoint %d completed in %.3f s%s", self.job, epoch, duration_s,
                            size, extra={"job": self.job, "epoch": epoch, "duration_s": duration_s})

    def failed(self, epoch: int, error: BaseException) -> None:
        self.failures += 1
        checkpoint_log.warning("job %r: checkpoint %d failed: %s: %s", self.job, epoch,
                               type(error).__name__, error, extra={"job": self.job, "epoch": epoch})

    def restored(self, epoch: int, source: str = "") -> None:
        self.epoch = epoch
        where = f" from {source}" if source else ""
        checkpoint_log.info("job %r: restored checkpoint %d%s", self.job, epoch, where,
                            extra={"job": self.job, "epoch": epoch})


@dataclass
class Sample:
    """Cumulative figures of a job at one instant; two samples give rates and fractions.

    ``latency`` is a reading of the end-to-end latency histogram's buckets
    (:meth:`~heliosdb.histograms.LatencyHistogram.read`; None: not read), ``paced`` the
    nanoseconds each task spent pacing (a part of its idle time; a task left out: none).
    """

    t_ns: int
    events_in: int
    tasks: Dict[str, Tuple[int, int, int, int, int]]   # name -> (alive, busy, blocked, idle, rows_in)
    ops: Dict[str, Tuple[int, int]]                     # name -> (busy_ns, rows_in)
    latency: Optional[np.ndarray] = None
    paced: Dict[str, int] = field(default_factory=dict)


def zero_sample(now: Sample) -> Sample:
    """All counters at zero, stamped with ``now``'s time (a job's start, for its tasks' clocks)."""
    return Sample(now.t_ns, 0, {n: (0, 0, 0, 0, 0) for n in now.tasks}, {n: (0, 0) for n in now.ops})


def task_fractions(then: Sample, now: Sample) -> Dict[str, Dict[str, float]]:
    """Per task between two samples: ``busy``, ``blocked``, ``idle`` and ``paced`` (the part of
    idle spent keeping a declared rate) fractions of the time it was alive in between
    (``alive_s``), and the events it took in (``rows``).  Fractions are clamped to [0, 1]:
    counters read while a wait ends can be a wait's length off.

    >>> s = 1_000_000_000
    >>> then = Sample(0, 0, {"src": (0, 0, 0, 0, 0)}, {})
    >>> now = Sample(s, 10, {"src": (s, s // 4, 0, 3 * s // 4, 10)}, {}, paced={"src": s // 2})
    >>> f = task_fractions(then, now)["src"]
    >>> f["busy"], f["idle"], f["paced"], f["rows"]
    (0.25, 0.75, 0.5, 10)
    """
    out = {}
    for name, (alive, busy, blocked, idle, rows) in now.tasks.items():
        a0, b0, bl0, i0, r0 = then.tasks.get(name, (0, 0, 0, 0, 0))
        dt = alive - a0
        if dt <= 0:
            out[name] = {"busy": 0.0, "blocked": 0.0, "idle": 0.0, "paced": 0.0, "alive_s": 0.0,
                         "rows": rows - r0}
        else:
            paced = now.paced.get(name, 0) - then.paced.get(name, 0)
            idle_f = fraction((idle - i0) / dt)
            # a part of idle (pacing is counted when a sleep ends, idle while it lasts)
            out[name] = {"busy": fraction((busy - b0) / dt), "blocked": fraction((blocked - bl0) / dt),
                         "idle": idle_f, "paced": min(fraction(paced / dt), idle_f),
                         "alive_s": dt / 1e9, "rows": rows - r0}
    return out
