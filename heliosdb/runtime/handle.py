"""What the caller of ``execute()`` / ``execute_async()`` holds: :class:`JobHandle` (stop,
wait, metrics, diagnose a running job) and :class:`JobResult` (what a finished job reports).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional

if TYPE_CHECKING:  # pragma: no cover
    from ..diagnosis import Diagnosis
    from .job import Job


@dataclass
class JobResult:
    """What ``execute()`` returns: the job's name, its wall time and its final metrics."""

    name: str
    duration_s: float
    metrics: Dict[str, object]

    @property
    def events_per_s(self) -> float:
        return float(self.metrics["events_per_s"])

    @property
    def late_events(self) -> Dict[str, int]:
        """Late events per operator that found any, e.g. ``{"window-3": 1234}``: sent to its
        ``late_output()``, or dropped when nothing read it (the job-wide total is
        ``metrics["streaming_late_events_total"]``).

        Examples
        --------
        >>> JobResult("doc", 1.0, {"late_events": {"window-3": 1234}}).late_events
        {'window-3': 1234}
        """
        return dict(self.metrics.get("late_events", {}))  # type: ignore[call-overload]

    def __repr__(self) -> str:
        m = self.metrics
        return (f"JobResult({self.name!r}: {m['streaming_events_processed_total']:,} events in "
                f"{self.duration_s:.2f}s, {m['events_per_s']:,.0f} events/s, p99 latency "
                f"{m['latency_p99_ms']:.1f} ms)")



class JobHandle:
    """A job started by ``env.execute_async()``.

    Examples
    --------
    >>> import heliosdb as hdb
    >>> env = hdb.StreamEnvironment()
    >>> sink = hdb.sinks.memory()
    >>> _ = env.from_iterable([{"x": 1}, {"x": 2}]).sink(sink)
    >>> handle = env.execute_async(name="doc-async")
    >>> handle.wait().metrics["streaming_events_processed_total"]
    2
    """

    def __init__(self, job: Job):
        self._job = job

    @property
    def name(self) -> str:
        return self._job.name

    def stop(self, drain: bool = False) -> None:
        """Stop reading the sources; in-flight batches finish and sinks flush; a checkpointed
        job takes a final checkpoint after the last batch, so running it again (same name,
        same storage) resumes there.  Returns at once: ``wait()`` for the end.

        With ``drain=True`` the end of input is signalled, so every open window is emitted.
        Ctrl-C and SIGTERM during ``wait()`` stop the job the same way.
        """
        self._job.stop(drain)

    def wait(self, timeout: Optional[float] = None, progress: bool = False) -> JobResult:
        """Block until the job ends; raise its error if a step failed.

        With ``progress=True``, show live throughput, latency and backpressure meanwhile (a
        rich display in a terminal, an updating one in Jupyter, a line every few seconds in a
        log; see :mod:`heliosdb.progress`).

        A KeyboardInterrupt meanwhile stops the job as ``stop()`` does (a second one aborts it
        without a final checkpoint), joins its threads, frees its lease, and is re-raised;
        SIGTERM, while the main thread waits here, stops it the same way and then ends the
        process as SIGTERM would have (see :mod:`heliosdb.runtime.stopping`).
        """
        if not progress:
            return self._job.wait(timeout)
        from ..progress import watch as show

        def watch() -> None:
            show(self, timeout=timeout)
        return self._job.wait(timeout, watch)

    @property
    def done(self) -> bool:
        return self._job.done

    def metrics(self) -> Dict[str, object]:
        """The job's live metrics (events/s, latency quantiles, open windows, ...)."""
        return self._job.metrics.snapshot()

    def diagnose(self, interval_s: float = 1.0) -> "Diagnosis":
        """Watch the job for ``interval_s`` seconds and say what holds it back.

        Reports whether it is backpressured and which operator is the bottleneck, each task's
        busy / blocked / idle fractions, stragglers among parallel subtasks, and remedies (see
        :mod:`heliosdb.diagnosis`).  A job that has ended (or ``interval_s=0``) is judged over
        its whole run.

        Examples
        --------
        >>> import time
        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=100))
        >>> def slow(batch):
        ...     time.sleep(0.005)
        ...     return batch
        >>> _ = env.generate().map_batches(slow).name("slow-step").sink(hdb.sinks.memory())
        >>> handle = env.execute_async(name="doc-diagnose")
        >>> d = handle.diagnose(interval_s=0.5)
        >>> handle.stop(); _ = handle.wait()
        >>> d.backpressured, d.bottleneck
        (True, 'slow-step')
        """
        from ..diagnosis import diagnose_job

        jm = self._job.metrics
        if interval_s > 0 and not self.done:
            then = jm.sample()
            self._job._done.wait(interval_s)
            now = jm.sample()
        else:
            then, now = jm.since_start()
        return diagnose_job(jm, then, now)
