"""A job's metrics written by the test on a clock the test moves: exact rates and fractions.

The engine keeps each task's time as counters (:class:`~heliosdb.metrics.TaskStats`: when it
started, nanoseconds blocked on a full channel, nanoseconds idle, the rest busy) and each
operator's busy nanoseconds and rows (:class:`~heliosdb.metrics.OperatorStats`).  A
:class:`ScriptedJob` writes those counters for a timeline the test describes, one step at a time,
on a :class:`FakeClock`; what reads them (samples, ``diagnose``, the progress reading, the
Prometheus exposition) then sees exact numbers, however loaded the machine is::

    job = ScriptedJob({"src": ([], ["work"]), "work": (["work"], [])})
    job.run(1.0, blocked={"src": 0.9}, busy={"work": 0.95}, rows={"work": 1_000})
"""
from __future__ import annotations

import threading
import time
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

from heliosdb.metrics import JobMetrics, OperatorStats, TaskStats

S = 1_000_000_000


class FakeClock:
    """Nanoseconds that move only when the test says: ``advance(seconds)`` or ``sleep(seconds)``
    (the stand-in for ``time.sleep`` in code that sleeps between readings)."""

    def __init__(self, t_ns: int = 1_000 * S) -> None:
        self.t_ns = t_ns
        self.sleeps: List[float] = []

    def __call__(self) -> int:
        return self.t_ns

    def advance(self, seconds: float) -> None:
        self.t_ns += round(seconds * S)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


Topology = Mapping[str, Tuple[Sequence[str], Sequence[str]]]


class ScriptedJob:
    """A :class:`JobMetrics` whose tasks spend their time as :meth:`run` says.

    ``tasks`` maps a task name to (its operators, the tasks it feeds); a task without operators
    is the source.  ``groups`` names the parallel group of subtasks, ``kinds`` an operator's kind
    ("fused" unless given).  Every task starts at the clock's time.
    """

    def __init__(self, tasks: Topology, kinds: Optional[Mapping[str, str]] = None,
                 groups: Optional[Mapping[str, str]] = None, job: str = "scripted",
                 clock: Optional[FakeClock] = None, window_s: float = 10.0) -> None:
        self.clock = clock or FakeClock()
        self.metrics = JobMetrics(job, started=self.clock() / S, clock=self.clock,
                                  window_ns=round(window_s * S))
        kinds = kinds or {}
        groups = groups or {}
        for name, (ops, down) in tasks.items():
            if not ops:
                self.metrics.source = name
            self.metrics.tasks[name] = TaskStats(name, list(ops), name, list(down), groups.get(name, ""),
                                                 started_ns=self.clock())
            for op in ops:
                self.metrics.operators[op] = OperatorStats(op, kinds.get(op, "fused"), name)

    def task(self, name: str) -> TaskStats:
        return self.metrics.tasks[name]

    def run(self, seconds: float, busy: Mapping[str, float] = (), blocked: Mapping[str, float] = (),
            op_busy: Mapping[str, float] = (), rows: Mapping[str, int] = (), events: int = 0,
            batches: int = 1) -> None:
        """``seconds`` pass.  Task ``t`` is busy ``busy[t]`` s and blocked ``blocked[t]`` s of it,
        idle the rest.  Operator ``o`` works ``op_busy[o]`` s (by default a task's busy time goes
        to its first operator) and takes in ``rows[o]`` rows in ``batches`` batches; the source
        reads ``events``.  A task in a wait (:meth:`wait_from_now`) waits through the step."""
        busy, blocked, op_busy, rows = dict(busy), dict(blocked), dict(op_busy), dict(rows)
        for name, ts in self.metrics.tasks.items():
            if ts.blocked_since or ts.idle_since:
                continue
            b, bl = busy.get(name, 0.0), blocked.get(name, 0.0)
            assert b + bl <= seconds + 1e-12, f"task {name!r} has only {seconds} s"
            ts.blocked_ns += round(bl * S)
            ts.idle_ns += round(seconds * S) - round(b * S) - round(bl * S)
            if ts.operators and not any(op in op_busy for op in ts.operators):
                op_busy[ts.operators[0]] = b
        for op, secs in op_busy.items():
            self.metrics.operators[op].busy_ns += round(secs * S)
        for op, n in rows.items():
            st = self.metrics.operators[op]
            st.rows_in += n
            st.rows_out += n
            st.batches += batches
        self.metrics.events_in += events
        self.clock.advance(seconds)

    def wait_from_now(self, task: str, kind: str) -> None:
        """Task ``task`` starts waiting now ("blocked" or "idle"), as a channel marks it."""
        setattr(self.task(task), f"{kind}_since", self.clock())

    def end_wait(self, task: str) -> None:
        """Task ``task``'s wait ends now and is added to its counter, as a channel does."""
        ts = self.task(task)
        for kind in ("blocked", "idle"):
            since = getattr(ts, f"{kind}_since")
            if since:
                setattr(ts, f"{kind}_ns", getattr(ts, f"{kind}_ns") + self.clock() - since)
                setattr(ts, f"{kind}_since", 0)

    def finish(self, tasks: Optional[Iterable[str]] = None) -> None:
        """The job ends now (its tasks, or those named)."""
        for name in (self.metrics.tasks if tasks is None else tasks):
            self.task(name).finished_ns = self.clock()
        if tasks is None:
            self.metrics.finished = self.clock() / S


class ScriptedHandle:
    """What :func:`heliosdb.progress.watch` reads of a JobHandle (``done``, the job's metrics),
    for a scripted job that ends once its clock reaches ``ends_after_s`` from now (never: None)."""

    def __init__(self, job: ScriptedJob, ends_after_s: Optional[float] = None) -> None:
        self._job = job
        self._end_ns = None if ends_after_s is None else job.clock() + round(ends_after_s * S)

    @property
    def done(self) -> bool:
        jm = self._job.metrics
        if not jm.finished and self._end_ns is not None and self._job.clock() >= self._end_ns:
            self._job.finish()
        return bool(jm.finished)

    @property
    def status(self) -> str:
        return "done" if self.done else "running"

    def join(self, timeout: Optional[float] = None) -> bool:
        """The wait for the end: the clock moves ``timeout`` seconds (as a sleep)."""
        if not self.done and timeout:
            self._job.clock.sleep(timeout)
        return self.done


class Hold:
    """A ``map_batches`` step that lets ``free`` batches through (each taking at least
    ``each_s``), then holds the next one until :meth:`release`.

    While it holds, a real job stands still in known states: the source blocked on the full
    channel into the held task, the held task busy, the tasks after it idle.  Fractions measured
    over that stretch are exact, whatever the clock says.
    """

    def __init__(self, free: int = 1, each_s: float = 0.0) -> None:
        self.free, self.each_s = free, each_s
        self.passed = 0
        self.holding = threading.Event()
        self._go = threading.Event()

    def __call__(self, batch):
        if batch.num_rows:                   # not the empty batch that types the plan
            if self.passed >= self.free:
                self.holding.set()
                self._go.wait(120)
            else:
                if self.each_s:
                    time.sleep(self.each_s)  # at least this long: a lower bound, not a pace
                self.passed += 1
        return batch

    def release(self) -> None:
        self._go.set()


def standing_still(hold: Hold, held: TaskStats, batch_rows: int) -> bool:
    """Whether a job held by ``hold`` (in task ``held``) stands still: the step holds and the
    channel into its task has no room for another batch of ``batch_rows``, so the source
    stays blocked (a source blocked a moment earlier may still be let in as the held task
    takes its last batch)."""
    inbox = held.inbox
    return hold.holding.is_set() and inbox is not None and inbox.rows + batch_rows > inbox.capacity
