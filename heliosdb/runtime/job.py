"""A running job on local threads (its tasks, channels and metrics, and its lifecycle), and what
the caller holds: :class:`JobHandle` (stop, wait, metrics, diagnose) and :class:`JobResult`.

Built from a :class:`~heliosdb.runtime.physical.PhysicalPlan`: one bounded
:class:`~heliosdb.runtime.channel.Channel` in front of every stage, one thread for the source
(:class:`~heliosdb.runtime.batcher.SourceTask`) and one per stage
(:class:`~heliosdb.runtime.task.StageTask`), wired by :mod:`heliosdb.runtime.physical`.

Lifecycle: ``Job(...)`` opens every operator (before any restore) -> the environment restores
the checkpoint and sets ``coordinator`` -> ``start()`` -> the threads run until the input ends,
``stop()`` (the source stops reading, what is in flight finishes, a final checkpoint is taken)
or ``abort()`` (channels close, nothing more is committed); the first step to fail stops the
job the same way, and ``result()`` raises its error -> a joiner thread waits for every thread,
closes the coordinator and sets ``done``.  Each thread has a
:class:`~heliosdb.metrics.TaskStats` (busy, blocked on a full channel, idle waiting for input),
so ``diagnose()`` can tell which operator holds the pipeline back.
"""
from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Generator, List, Optional

import pyarrow as pa

from ..diagnosis import log_late
from ..display import figures_html, job_figures, ms, seconds
from ..errors import ConfigError, ExecutionError, HeliosError
from ..history import DEFAULT_INTERVAL_S, MetricsHistory, Panels
from ..metrics import JobMetrics, TaskStats
from ..operators.base import Operator, OperatorContext
from . import gcfreeze, stopping
from .batcher import SourceTask
from .chain import Chain, SlowBatches, StepFailed
from .channel import Channel, ChannelClosed
from .physical import PhysicalPlan, reader, source_output, stage_input, stage_output
from .task import StageTask

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from ..connectors.sinks import MemorySink
    from ..diagnosis import Diagnosis
    from ..progress import LiveDisplay

log = logging.getLogger("heliosdb.runtime")

#: A thread waiting for a job wakes this often, so a signal (Ctrl-C, SIGTERM) is handled at once.
_WAIT_SLICE_S = 0.05


@dataclass
class JobResult:
    """What ``execute()`` returns: the job's name, its wall time, its final metrics, and its
    metrics over time (``history``, a :class:`~heliosdb.history.MetricsHistory`; ``plot()``
    charts it).  A notebook shows it as a table.

    Examples
    --------
    >>> import heliosdb as hdb
    >>> env = hdb.StreamEnvironment()
    >>> _ = env.generate(count=1000).sink(hdb.sinks.memory())
    >>> result = env.execute(name="doc-result")
    >>> result.metrics["streaming_events_processed_total"], len(result.history) >= 2
    (1000, True)
    >>> "1,000" in result._repr_html_()
    True
    """

    name: str
    duration_s: float
    metrics: Dict[str, object]
    history: Optional[MetricsHistory] = None

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

    def figures(self) -> Dict[str, str]:
        """The result's figures as display text (what the notebook table shows).

        >>> JobResult("doc", 2.0, {"streaming_events_processed_total": 5000})._repr_html_().count("5,000")
        1
        """
        m = self.metrics
        dead = m.get("streaming_dead_letters_total") or {}
        return {
            "duration": seconds(self.duration_s),
            "events": f"{m.get('streaming_events_processed_total', 0):,}",
            "events out": f"{m.get('events_out', 0):,}",
            "events/s": f"{m.get('events_per_s', 0.0):,.0f}",
            "p50": ms(m.get("latency_p50_ms")),                        # type: ignore[arg-type]
            "p99": ms(m.get("latency_p99_ms")),                        # type: ignore[arg-type]
            "late": f"{m.get('streaming_late_events_total', 0):,}",
            "checkpoints": f"{m.get('streaming_checkpoints_total', 0):,}",
            "dead letters": f"{sum(dead.values()) if isinstance(dead, dict) else 0:,}",
        }

    def _repr_html_(self) -> str:
        out = figures_html(f"job {self.name!r}", self.figures(), "done")
        if self.history is not None and len(self.history):
            out += (f"<div><small>{len(self.history)} metrics samples: <code>.history</code>, "
                    "<code>.plot()</code></small></div>")
        return out

    def plot(self, columns: Optional[Panels] = None, ax: Optional[object] = None) -> "Figure":
        """Chart the job's metrics over time (its history's
        :meth:`~heliosdb.history.MetricsHistory.plot`): events/s, latency, backpressure.

        >>> import matplotlib; matplotlib.use("Agg")
        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> _ = env.generate(count=1000).sink(hdb.sinks.memory())
        >>> len(env.execute(name="doc-plot").plot().axes)
        3
        """
        if self.history is None:
            raise ConfigError(f"job {self.name!r}: this result has no metrics history to plot")
        return self.history.plot(columns, ax)  # type: ignore[arg-type]


class Job:
    """A running job: threads, channels, metrics.  Use through ``JobHandle``.

    ``timed``: operators are timed per batch (``HELIOSDB_METRICS``; the environment reads it).
    """

    def __init__(self, plan: PhysicalPlan, name: str, buffer_size: int, slow_ns: int,
                 state_operators: List[Operator], metrics_window_ns: int = 10_000_000_000,
                 timed: bool = True, freeze_gc: bool = True, sample_interval_s: float = DEFAULT_INTERVAL_S):
        self.plan = plan
        self.freeze_gc = freeze_gc
        self._gc_frozen = False
        self.name = name
        self.coordinator = None             # a checkpoint.Coordinator, set before start()
        self.metrics = JobMetrics(name, source=plan.source_name, window_ns=metrics_window_ns)
        self.metrics.state_ops = state_operators
        #: The metrics over time, sampled by the join thread (see :mod:`heliosdb.history`).
        self.history = MetricsHistory(name, sample_interval_s)
        self.metrics.plan_ops = [op for st in plan.stages for op in st.operators]
        # Before a restore and before the first item.  The metrics reach operators through a
        # weak proxy: they list the operators, and a cycle would keep a finished job alive.
        ctx_metrics = weakref.proxy(self.metrics)
        for op in self.metrics.plan_ops:
            op.open(OperatorContext(job=name, placement=op.placement, metrics=ctx_metrics))
        self.slow_ns = slow_ns
        self.slow_batches = SlowBatches(name, slow_ns)
        self.timed = timed
        self.inputs = [Channel(buffer_size, f"{st.name}.in") for st in plan.stages]
        self.metrics.channels = self.inputs
        self._tasks = self._make_tasks()
        self._source_task = self.metrics.tasks[plan.source_name]
        self._threads: List[threading.Thread] = []
        self._error: Optional[BaseException] = None
        self._error_step = ""
        self._stop = threading.Event()
        self._failed = threading.Event()     # failed or aborted: nothing waits for checkpoints
        self._drain = False
        self._aborted = False
        self._done = threading.Event()
        self._joiner: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        #: Called after an interrupt (Ctrl-C, SIGTERM) stopped the job and its threads ended,
        #: e.g. the environment's metrics server closing.
        self.interrupt_hooks: List[Callable[[], None]] = []

    def _make_tasks(self) -> List[TaskStats]:
        """One TaskStats per thread, named after its first operator (the source after its step);
        the producers of a merge stage are parallel subtasks, grouped under their common name."""
        stages = self.plan.stages
        names = [st.operators[0].name if st.operators else st.name for st in stages]
        group = [""] * len(stages)
        downstream: List[List[str]] = []
        for i, st in enumerate(stages):
            downstream.append([names[c] for c in st.outputs])
            for c in st.children:
                if stages[c].n_inputs > 1:
                    group[i] = re.sub(r"#\d+$", "", names[i])
        tasks = [TaskStats(names[i], [op.name for op in st.operators], st.name, downstream[i],
                           group[i], self.inputs[i]) for i, st in enumerate(stages)]
        source = TaskStats(self.plan.source_name, [], "source",
                           [names[c] for c in self.plan.source_children])
        self.metrics.tasks = {source.name: source, **{t.name: t for t in tasks}}
        for t, st in zip(tasks, stages):
            for op in st.operators:
                self.metrics.operator(op.name, op.kind).task = t.name
        return tasks

    def _stage_task(self, index: int) -> StageTask:
        """Stage ``index`` wired: its input, its operators, its edges."""
        st = self.plan.stages[index]
        stats = self._tasks[index]
        chain = Chain(st.operators, self.metrics, self.slow_ns, self.timed, self.slow_batches)
        source = stage_input(st, reader(self.inputs[index], stats))
        output = stage_output(self.plan, index, self.inputs, source)
        ack = self.coordinator.ack if self.coordinator is not None else None
        return StageTask(st.name, chain, source.next, output, stats, self.metrics, ack)

    # -- what the source task watches ----------------------------------------------------------
    @property
    def stopping(self) -> threading.Event:
        """Set when the source should stop reading (stop, abort or a failure)."""
        return self._stop

    @property
    def draining(self) -> bool:
        """Whether a stop should signal the end of input (every open window is emitted)."""
        return self._drain

    @property
    def failed_event(self) -> threading.Event:
        """Set when the job failed or was aborted: nothing waits for checkpoints then."""
        return self._failed

    @property
    def healthy(self) -> bool:
        """Neither failed nor aborted (a final checkpoint is worth taking)."""
        return self._error is None and not self._aborted

    # -- control -----------------------------------------------------------------------------
    def start(self) -> None:
        self.metrics.started = time.perf_counter()
        # Built before any thread starts, so the metrics' operator table is complete up front.
        tasks = [self._stage_task(i) for i in range(len(self.plan.stages))]
        src = SourceTask(self, source_output(self.plan, self.inputs), self._source_task)
        threads = [threading.Thread(target=self._guard, args=(self.plan.source_name, src.run),
                                    name=f"{self.name}:source", daemon=True)]
        threads += [threading.Thread(target=self._guard, args=(task.name, task.run),
                                     name=f"{self.name}:{task.name}", daemon=True) for task in tasks]
        try:
            # From here on the joiner always runs (it closes the coordinator and unfreezes).
            self._threads = threads
            self._gc_frozen = self.freeze_gc
            if self._gc_frozen:
                gcfreeze.freeze()            # full collections skip start-up objects: short pauses
            log.info("job %r started: %d threads (%s)", self.name, len(threads),
                     ", ".join(self.metrics.tasks), extra={"job": self.name})
            for t in threads:
                t.start()
        except BaseException:
            # A Ctrl-C in the middle: the threads started so far must not outlive it.
            self.abort()
            raise
        finally:
            self._joiner = threading.Thread(target=self._join_all, daemon=True, name=f"{self.name}:join")
            self._joiner.start()

    def _sample(self) -> None:
        """One row of the metrics history; a failure to read a figure never stops the job."""
        try:
            self.history.record(self.metrics)
        except Exception:  # noqa: BLE001 - observability must not break the job
            log.warning("job %r: sampling metrics failed", self.name, exc_info=True, extra={"job": self.name})

    def _join_all(self) -> None:
        try:
            self.history.follow(self.metrics, self._threads)      # samples while it waits
        except Exception:  # noqa: BLE001 - observability must not break the job
            log.warning("job %r: sampling metrics failed", self.name, exc_info=True, extra={"job": self.name})
        for t in self._threads:
            if t.ident is not None:         # started (all are, unless start() was interrupted)
                t.join()
        if self.coordinator is not None:
            try:
                self.coordinator.close(failed=self._error is not None or self._aborted)
            except BaseException as exc:  # noqa: BLE001 - reported to the caller of wait()
                self._fail("checkpoint", exc)
        if self._gc_frozen:
            gcfreeze.unfreeze()
        self.slow_batches.report()
        m = self.metrics
        m.finished = time.perf_counter()
        self._sample()                          # the final row, before anyone sees the end
        log_late(self.name, self.metrics.late_counts(), log)    # nothing lost without a word
        if self._error is None:
            el = m.elapsed()
            log.info("job %r finished: %d events in %.2f s (%.0f events/s)", self.name, m.events_in,
                     el, m.events_in / max(el, 1e-9), extra={"job": self.name, "duration_s": el})
        self._done.set()

    def stop(self, drain: bool = False) -> None:
        """Stop reading the source; what is in flight runs to the sinks, and a checkpointed job
        takes a final checkpoint after the last batch (see :mod:`heliosdb.runtime.stopping`).
        ``drain``: signal the end of input first, so every open window is emitted."""
        self._drain = self._drain or drain
        self._stop.set()

    def abort(self) -> None:
        """Stop at once: close every channel, drop in-flight batches, take no final checkpoint
        (a restart resumes from the last committed one)."""
        with self._lock:
            self._aborted = True
        self._failed.set()
        self._stop.set()
        for ch in self.inputs:
            ch.close()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait until the job has ended and its threads with it; False if ``timeout`` seconds
        passed first.  Waits in short slices, so a signal reaches a waiting main thread."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.wait(_WAIT_SLICE_S if deadline is None
                                  else max(0.0, min(_WAIT_SLICE_S, deadline - time.monotonic()))):
            if deadline is not None and time.monotonic() >= deadline:
                return False
        if self._joiner is not None:
            self._joiner.join()                 # it has set _done: only its last lines remain
        return True

    def wait(self, timeout: Optional[float] = None, watch: Optional[Callable[[], object]] = None) -> JobResult:
        """Block until the job ends and return its result (or raise its error).  A Ctrl-C or
        SIGTERM meanwhile stops the job (see :mod:`heliosdb.runtime.stopping`)."""
        return stopping.wait(self, timeout, watch)

    def result(self) -> JobResult:
        """The result of a job that has ended; its error if a step failed."""
        if self._error is not None:
            err = self._error
            if isinstance(err, HeliosError):
                raise err
            raise ExecutionError(
                f"job {self.name!r}: step {self._error_step!r} failed: {type(err).__name__}: {err}"
            ) from err
        return JobResult(self.name, self.metrics.elapsed(), self.metrics.snapshot(), self.history)

    @property
    def error(self) -> Optional[BaseException]:
        return self._error

    def threads(self) -> List[threading.Thread]:
        """The job's own threads (source, stages, the one that joins them)."""
        return self._threads + ([self._joiner] if self._joiner is not None else [])

    def committed_epoch(self) -> Optional[int]:
        """The last committed checkpoint (None: no checkpoints, or none committed yet)."""
        if self.coordinator is None or not self.coordinator.epoch:
            return None
        return self.coordinator.epoch

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def _fail(self, step: str, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error, self._error_step = exc, step
                log.error("job %r step %r failed: %s: %s", self.name, step, type(exc).__name__, exc,
                          extra={"job": self.name, "operator": step,
                                 "epoch": self.metrics.checkpoints.epoch})
        self._failed.set()
        self._stop.set()
        for ch in self.inputs:
            ch.close()

    def _guard(self, step: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except ChannelClosed:
            pass
        except StepFailed as exc:
            self._fail(exc.step, exc.error)
        except HeliosError as exc:
            self._fail(exc.step or step, exc)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller of wait()
            self._fail(step, exc)


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

        ``timeout`` (seconds) bounds the whole wait, the progress display included: when it
        passes, TimeoutError is raised and the job keeps running.

        With ``progress=True``, show live throughput, latency and backpressure meanwhile (a
        rich display in a terminal, an updating one in Jupyter, a line every few seconds in a
        log; see :mod:`heliosdb.progress`).

        A KeyboardInterrupt meanwhile stops the job as ``stop()`` does (a second one aborts it
        without a final checkpoint), joins its threads, frees its lease, and is re-raised;
        SIGTERM, while the main thread waits here, stops it the same way and then ends the
        process as SIGTERM would have (see :mod:`heliosdb.runtime.stopping`).  Inside a running
        event loop (a notebook), ``await handle`` waits without blocking it.

        Examples
        --------
        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> _ = env.generate(rate=1000).sink(hdb.sinks.memory())      # unbounded
        >>> handle = env.execute_async(name="doc-wait-timeout")
        >>> handle.wait(timeout=0.2)
        Traceback (most recent call last):
        ...
        TimeoutError: job 'doc-wait-timeout' still running after 0.2s
        >>> handle.stop(); handle.wait().name
        'doc-wait-timeout'
        """
        if not progress:
            return self._job.wait(timeout)
        from ..progress import watch as show

        deadline = None if timeout is None else time.monotonic() + timeout

        def nap(seconds: float) -> None:      # the display's refreshes end at the deadline,
            left = seconds if deadline is None else min(seconds, deadline - time.monotonic())
            self._job.join(max(0.0, left))    # or at once when the job ends

        def watch() -> None:
            show(self, timeout=timeout, sleep=nap)
        return self._job.wait(timeout, watch)

    async def wait_async(self, timeout: Optional[float] = None) -> JobResult:
        """Await the end of the job without blocking the event loop (``wait()`` for asyncio;
        ``await handle`` is the same with no timeout).

        ``timeout`` (seconds) raises TimeoutError when it passes and leaves the job running.
        Cancelling the awaiting task (the kernel interrupt of a notebook cell that awaits)
        stops the job as Ctrl-C stops ``wait()``: in-flight batches reach the sinks, a
        checkpointed job takes a final checkpoint, the threads end; then the cancellation
        goes on.

        Examples
        --------
        >>> import asyncio
        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> _ = env.generate(count=1000).sink(hdb.sinks.memory())
        >>> async def main():
        ...     handle = env.execute_async(name="doc-await")
        ...     return await handle.wait_async(timeout=60)
        >>> asyncio.run(main()).metrics["streaming_events_processed_total"]
        1000
        """
        return await stopping.wait_async(self._job, timeout)

    def __await__(self) -> Generator[Any, None, JobResult]:
        """``await handle``: ``await handle.wait_async()``.

        >>> import asyncio
        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> _ = env.generate(count=10).sink(hdb.sinks.memory())
        >>> async def main():
        ...     return await env.execute_async(name="doc-await-handle")
        >>> asyncio.run(main()).name
        'doc-await-handle'
        """
        return self.wait_async().__await__()

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

    # -- notebooks: history, live display, results so far ----------------------------------------
    #: The live display :meth:`show` started (one per handle).
    _display: Optional["LiveDisplay"] = None
    _display_lock = threading.Lock()

    def history(self) -> MetricsHistory:
        """The job's metrics over time, sampled every half second while it runs (a
        :class:`~heliosdb.history.MetricsHistory`: ``to_pandas()``, ``plot()``).

        Examples
        --------
        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> _ = env.generate(count=1000).sink(hdb.sinks.memory())
        >>> handle = env.execute_async(name="doc-handle-history")
        >>> _ = handle.wait()
        >>> handle.history().to_pandas()["events"].iloc[-1]
        np.int64(1000)
        """
        return self._job.history

    @property
    def status(self) -> str:
        """"running", "stopping" (asked to stop, not ended yet), "done" (its input ended),
        "stopped" (``stop()``, an interrupt, or aborted), or "failed: Error: message".

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> _ = env.generate(rate=1000).sink(hdb.sinks.memory())
        >>> handle = env.execute_async(name="doc-status")
        >>> handle.status
        'running'
        >>> handle.stop(); _ = handle.wait(); handle.status
        'stopped'
        """
        job = self._job
        err = job.error
        if err is not None:
            return f"failed: {type(err).__name__}: {err}"
        asked = job.stopping.is_set()
        if not job.done:
            return "stopping" if asked else "running"
        return "stopped" if asked else "done"

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait until the job has ended (at most ``timeout`` seconds); whether it has.  Unlike
        ``wait()`` it neither raises the job's error nor stops the job on Ctrl-C.

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> _ = env.generate(rate=1000).sink(hdb.sinks.memory())
        >>> handle = env.execute_async(name="doc-join")
        >>> handle.join(timeout=0.01)
        False
        >>> handle.stop(); handle.join()
        True
        """
        return self._job.join(timeout)

    def figures(self) -> Dict[str, str]:
        """The figures a person watches, as text: elapsed, events, events/s and p99 over the
        last few seconds, watermark, late events, backpressure, checkpoints, state.

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> _ = env.generate(count=1000).sink(hdb.sinks.memory())
        >>> handle = env.execute_async(name="doc-figures"); _ = handle.wait()
        >>> handle.figures()["events"], list(handle.mimebundle())
        ('1,000', ['text/plain', 'text/html'])
        """
        return job_figures(self._job.metrics.snapshot())

    def mimebundle(self) -> Dict[str, str]:
        """The job's state now as ``text/plain`` and ``text/html`` (a notebook display)."""
        from ..progress import bundle

        return bundle(self)

    def show(self, refresh_s: float = 0.5) -> None:
        """In a notebook, show the job's live state, updated in place every ``refresh_s``
        seconds by a background thread until the job ends (the display then shows its final
        state); returns at once.  Called again (in another cell), it shows the same live
        display there too.  Outside a notebook it prints the state now.

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> _ = env.generate(count=1000).sink(hdb.sinks.memory())
        >>> handle = env.execute_async(name="doc-show")
        >>> _ = handle.wait()
        >>> handle.show()                                        # doctest: +ELLIPSIS
        job 'doc-show' done: elapsed ... · events 1,000 · ...
        """
        from ..display import in_notebook

        if not in_notebook():
            print(self.mimebundle()["text/plain"])
            return
        from ..progress import LiveDisplay

        with JobHandle._display_lock:
            live = self._display
            if live is None:
                live = self._display = LiveDisplay(self, refresh_s)
                live.start()
                return
        live.show_again()

    def _ipython_display_(self) -> None:
        """A handle as a cell's result: the live display in a notebook, the state now elsewhere."""
        from ..display import in_notebook

        if in_notebook():
            self.show()
            return
        from IPython.display import display

        display(self.mimebundle(), raw=True)

    def _repr_html_(self) -> str:
        return self.mimebundle()["text/html"]

    def __repr__(self) -> str:
        return f"<JobHandle {self.name!r} {self.status}>"

    def results(self, sink: Optional["MemorySink"] = None) -> pa.Table:
        """The rows the job's memory sink has received so far (``sink``: which one, when it
        has several), as a pyarrow Table; safe while the job runs.

        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> _ = env.generate(count=1000).sink(hdb.sinks.memory())
        >>> handle = env.execute_async(name="doc-results")
        >>> _ = handle.wait(); handle.results().num_rows
        1000
        """
        from ..connectors.sinks import memory_sinks

        sinks = memory_sinks(self._job.metrics.plan_ops)
        if sink is not None:
            if not any(s is sink for s in sinks):
                raise ConfigError(f"job {self.name!r}: results(sink=) got a sink this job does not write "
                                  f"to; its memory sinks are {sinks}")
            return sink.snapshot()
        if len(sinks) != 1:
            raise ConfigError(f"job {self.name!r} has {len(sinks)} memory sinks: "
                              + ("pass results(sink=the one to read)" if sinks else
                                 "results() reads a hdb.sinks.memory(); read other sinks where they write"))
        return sinks[0].snapshot()
