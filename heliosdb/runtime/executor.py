"""The local executor: one thread per stage, bounded channels between them.

The run loop of every stage reads top to bottom: take an item from the input channel, push it
through the stage's operators (called directly, no queue between them), put what comes out
into each output channel, and at the end of the input close the operators and pass the end on.
The source stage is the micro-batcher: it cuts the source's rows into record batches by size
or by timeout, so a slow source still gets its rows through within ``batch_timeout``.

Each thread is a *task* with a :class:`~heliosdb.metrics.TaskStats`: the channels it waits on
record its idle and blocked time, and its operators are timed per batch (never per event), so
``diagnose()`` can tell which operator holds the pipeline back.
"""
from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

import pyarrow as pa

from ..config import operator_metrics_enabled
from ..errors import ExecutionError, HeliosError
from ..metrics import JobMetrics, TaskStats
from ..operators.base import (WATERMARK_MAX, WATERMARK_MIN, Barrier, Operator, OperatorContext, Run, SideOutput, Tick,
                              Watermark)
from ..operators.exchange import Partitioned
from . import gcfreeze, stopping
from .channel import END, Channel, ChannelClosed
from .sequence import Resequencer, RoundRobin, Sequenced

if TYPE_CHECKING:  # pragma: no cover
    from ..diagnosis import Diagnosis

log = logging.getLogger("heliosdb.runtime")

_IDLE_POLL_S = 0.05
#: A thread waiting for a job wakes this often, so a signal (Ctrl-C, SIGTERM) is handled at once.
_WAIT_SLICE_S = 0.05


@dataclass
class PhysicalStage:
    """Operators run on one thread, in order; their output goes to the ``children`` stages.

    With a ``partitioner`` the output is split by key hash, part ``i`` to ``children[i]`` (the
    parallel subtasks of a keyed operator), and watermarks go to all.  ``n_inputs`` is the
    number of producers feeding this stage (a merge after parallel subtasks); ``origin`` is this
    stage's position among its children's producers.  ``side_children`` maps a side-output tag
    (``"late"``) to the stages reading it; they get watermarks, ticks and the end too.

    Replicas of a stateless stage (see :mod:`heliosdb.runtime.sequence`): their producer has a
    ``dispatch`` (its ``children`` are the replicas, fed round-robin), each replica is marked
    ``replica`` (it answers every item with one ``Sequenced`` message), and the stage after
    them is marked ``resequence`` (it takes the answers back in the producer's order).
    """

    name: str
    operators: List[Operator]
    children: List[int] = field(default_factory=list)
    partitioner: Optional[object] = None
    n_inputs: int = 1
    origin: int = 0
    side_children: Dict[str, List[int]] = field(default_factory=dict)
    dispatch: Optional[RoundRobin] = None
    replica: bool = False
    resequence: bool = False


@dataclass
class PhysicalPlan:
    source: object                    # a connectors.sources.Source
    source_children: List[int]
    stages: List[PhysicalStage]
    batch_size: int
    batch_timeout_ns: int
    source_name: str = "source"
    source_dispatch: Optional[RoundRobin] = None     # the source feeds replicas round-robin


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


def _concat(batches: List[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _is_run(items: list) -> bool:
    """Whether ``items`` are batches with watermarks between them (what ``Run`` carries)."""
    marks = sum(type(it) is Watermark for it in items)
    return 0 < marks < len(items) and all(type(it) in (pa.RecordBatch, Watermark) for it in items)


class StepFailed(Exception):
    """Carries the name of the step whose code raised, and the original exception."""

    def __init__(self, step: str, error: BaseException):
        super().__init__(step, error)
        self.step = step
        self.error = error


class _Chain:
    """Operators of one stage, called directly one after another.

    Timed (the default), each call of an operator adds to its busy time, latency histogram and
    batch-size histogram, and a call slower than ``slow_ns`` is logged; untimed
    (``HELIOSDB_METRICS=0``) only events and batches are counted.
    """

    def __init__(self, operators: List[Operator], metrics: JobMetrics, slow_ns: int,
                 timed: bool = True):
        self.ops = operators
        self.stats = [metrics.operator(op.name, op.kind) for op in operators]
        self.slow_ns = slow_ns
        self.metrics = metrics
        self.timed = timed

    def _slow(self, step: str, dt: int, rows: int) -> None:
        m = self.metrics
        what = f"batch of {rows:,} rows" if rows else "timer"
        log.warning("job %r step %r: slow %s took %.3f s (warning above %.3f s)", m.job, step, what,
                    dt / 1e9, self.slow_ns / 1e9,
                    extra={"job": m.job, "operator": step, "epoch": m.checkpoints.epoch,
                           "duration_s": dt / 1e9, "rows": rows})

    @staticmethod
    def _call(op: Operator, st, it) -> tuple:
        """One operator on one item: (what it emits, rows it took in; None for a timer)."""
        try:
            if type(it) is Run:
                n = it.num_rows
                st.rows_in += n
                st.batches += sum(type(b) is not Watermark for b in it.items)
                return op.process_run(it.items), n
            if isinstance(it, Watermark):
                return op.on_watermark(it.t), None
            if isinstance(it, Tick):
                return op.on_tick(it.now), None
            n = it.num_rows
            st.rows_in += n
            st.batches += 1
            return op.process_batch(it), n
        except HeliosError:
            raise
        except Exception as exc:
            raise StepFailed(op.name, exc) from exc

    def push(self, item, start: int = 0) -> list:
        """Run ``item`` through the operators from ``start`` on; return what the last emits."""
        timed = self.timed
        items = item.items if type(item) is Run else [item]
        for op, st in zip(self.ops[start:], self.stats[start:]):
            out: list = []
            if op.takes_runs and len(items) > 1 and _is_run(items):
                items = [Run(items)]        # one call for the batches and watermarks
            for it in items:
                if isinstance(it, SideOutput):
                    out.append(it)          # bound for another stage: skips the rest of this one
                    continue
                if timed:
                    t0 = time.perf_counter_ns()
                    res, n = self._call(op, st, it)
                    dt = time.perf_counter_ns() - t0
                    st.busy_ns += dt
                    if n is not None:
                        st.batch_rows.add(n)
                    if n or len(res) > 1:   # a batch, or a timer that emitted results
                        st.latency.add(dt)
                    if dt > self.slow_ns:
                        self._slow(op.name, dt, n or 0)
                else:
                    res, _ = self._call(op, st, it)
                for r in res:
                    if not isinstance(r, (Watermark, Tick)):
                        st.rows_out += r.num_rows
                out.extend(res)
            items = out
            if not items:
                break
        return items

    def close(self) -> list:
        """End of input: close each operator and push what it flushes through the rest."""
        out: list = []
        for i, op in enumerate(self.ops):
            try:
                flushed = op.close()
            except HeliosError:
                raise
            except Exception as exc:
                raise StepFailed(op.name, exc) from exc
            for r in flushed:
                out.extend(self.push(r, i + 1))
        return out


class Job:
    """A running job: threads, channels, metrics.  Use through ``JobHandle``."""

    def __init__(self, plan: PhysicalPlan, name: str, buffer_size: int, slow_ns: int,
                 state_operators: List[Operator], metrics_window_ns: int = 10_000_000_000,
                 timed: Optional[bool] = None, freeze_gc: bool = True):
        self.plan = plan
        self.freeze_gc = freeze_gc
        self._gc_frozen = False
        self.name = name
        self.coordinator = None             # a checkpoint.Coordinator, set before start()
        self.metrics = JobMetrics(name, source=plan.source_name, window_ns=metrics_window_ns)
        self.metrics.state_ops = state_operators
        self.metrics.plan_ops = [op for st in plan.stages for op in st.operators]
        # Before a restore and before the first item.  The metrics reach operators through a
        # weak proxy: they list the operators, and a cycle would keep a finished job alive.
        ctx_metrics = weakref.proxy(self.metrics)
        for op in self.metrics.plan_ops:
            op.open(OperatorContext(job=name, placement=op.placement, metrics=ctx_metrics))
        self.slow_ns = slow_ns
        self.timed = operator_metrics_enabled() if timed is None else timed
        self.inputs = [Channel(buffer_size, f"{st.name}.in") for st in plan.stages]
        # Stages that take a Run as one message: one input, no replica protocol.
        self._takes_runs = [st.n_inputs == 1 and not st.replica and not st.resequence
                            for st in plan.stages]
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
            outs = list(st.children) + [c for cs in getattr(st, "side_children", {}).values() for c in cs]
            downstream.append([names[c] for c in outs])
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

    # -- control -----------------------------------------------------------------------------
    def start(self) -> None:
        self.metrics.started = time.perf_counter()
        # Built before any thread starts, so the metrics' operator table is complete up front.
        self._chains = [_Chain(st.operators, self.metrics, self.slow_ns, self.timed)
                        for st in self.plan.stages]
        t = threading.Thread(target=self._guard, args=(self.plan.source_name, self._run_source),
                             name=f"{self.name}:source", daemon=True)
        self._threads.append(t)
        for i, st in enumerate(self.plan.stages):
            self._threads.append(threading.Thread(
                target=self._guard, args=(st.name, self._run_stage, i),
                name=f"{self.name}:{st.name}", daemon=True))
        self._gc_frozen = self.freeze_gc
        if self._gc_frozen:
            gcfreeze.freeze()            # full collections skip start-up objects: short pauses
        log.info("job %r started: %d threads (%s)", self.name, len(self._threads),
                 ", ".join(self.metrics.tasks), extra={"job": self.name})
        for t in self._threads:
            t.start()
        self._joiner = threading.Thread(target=self._join_all, daemon=True, name=f"{self.name}:join")
        self._joiner.start()

    def _join_all(self) -> None:
        for t in self._threads:
            t.join()
        if self.coordinator is not None:
            try:
                self.coordinator.close(failed=self._error is not None or self._aborted)
            except BaseException as exc:  # noqa: BLE001 - reported to the caller of wait()
                self._fail("checkpoint", exc)
        if self._gc_frozen:
            gcfreeze.unfreeze()
        m = self.metrics
        m.finished = time.perf_counter()
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
        return JobResult(self.name, self.metrics.elapsed(), self.metrics.snapshot())

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

    def _guard(self, step: str, fn, *args) -> None:
        try:
            fn(*args)
        except ChannelClosed:
            pass
        except StepFailed as exc:
            self._fail(exc.step, exc.error)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller of wait()
            self._fail(step, exc)

    # -- stages ------------------------------------------------------------------------------
    def _emit(self, children: List[int], items: list, ingest_ns: int, partitioner=None,
              origin: int = 0, side: Optional[Dict[str, List[int]]] = None,
              task: Optional[TaskStats] = None, dispatch: Optional[RoundRobin] = None) -> None:
        if (len(items) > 1 and dispatch is None and partitioner is None and not any((side or {}).values())
                and all(self._takes_runs[c] for c in children) and _is_run(items)):
            # A batch cut by watermarks travels as one message (see operators.base.Run).
            run = Run(items)
            for c in children:
                self.inputs[c].put(run, run.num_rows, ingest_ns, origin, task)
            return
        for it in items:
            if dispatch is not None and not isinstance(it, SideOutput):
                # Replicas: a batch to one of them, anything else to all, numbered in order.
                is_batch = not isinstance(it, (Watermark, Tick, Barrier))
                rows = it.num_rows if is_batch else 0
                msg, to = dispatch.route(is_batch, rows)
                msg.items.append(it)
                for p in to:
                    self.inputs[children[p]].put(msg, rows, ingest_ns, origin, task)
                if is_batch:
                    continue
                for cs in (side or {}).values():
                    for c in cs:
                        self.inputs[c].put(it, 0, ingest_ns, origin, task)
            elif isinstance(it, (Watermark, Tick, Barrier)):
                for c in children:
                    self.inputs[c].put(it, 0, ingest_ns, origin, task)
                for cs in (side or {}).values():
                    for c in cs:
                        self.inputs[c].put(it, 0, ingest_ns, origin, task)
            elif isinstance(it, SideOutput):
                for c in (side or {}).get(it.tag, ()):
                    self.inputs[c].put(it.batch, it.num_rows, ingest_ns, origin, task)
            elif partitioner is not None:
                parts, counts = partitioner.assign(it)
                for p, rows in enumerate(counts.tolist()):
                    if rows:
                        self.inputs[children[p]].put(Partitioned(it, parts, p), rows, ingest_ns, origin, task)
            else:
                for c in children:
                    self.inputs[c].put(it, it.num_rows, ingest_ns, origin, task)

    def _end(self, children: List[int], origin: int, task: Optional[TaskStats] = None) -> None:
        for c in children:
            self.inputs[c].put(END, 0, 0, origin, task)

    def _run_stage(self, index: int) -> None:
        task = self._tasks[index]
        task.started_ns = time.perf_counter_ns()
        cpu0 = time.thread_time_ns()
        stage = self.plan.stages[index]
        loop = (self._replica_loop if stage.replica else
                self._resequence_loop if stage.resequence else self._stage_loop)
        try:
            loop(index)
        except BaseException:
            for op in self.plan.stages[index].operators:
                try:
                    op.abort()
                except Exception:  # noqa: BLE001 - the original error is what matters
                    log.exception("step %r: abort failed", op.name)
            raise
        finally:
            task.cpu_ns = time.thread_time_ns() - cpu0
            task.finished_ns = time.perf_counter_ns()

    def _stage_loop(self, index: int) -> None:
        stage = self.plan.stages[index]
        chain = self._chains[index]
        inbox = self.inputs[index]
        task = self._tasks[index]
        is_sink = not stage.children and not stage.side_children
        # A merge stage forwards the smallest watermark of its inputs, and ends when all have.
        marks = [WATERMARK_MIN] * stage.n_inputs
        current = WATERMARK_MIN
        open_inputs = stage.n_inputs
        # Checkpoint barrier alignment: inputs that delivered the barrier wait (their items are
        # held) until every open input has; then the stage snapshots and forwards it.
        aligned: set = set()
        ended: set = set()
        held: deque = deque()
        replay: deque = deque()
        pending_barrier: Optional[Barrier] = None
        while True:
            item, rows, ingest, origin = replay.popleft() if replay else inbox.get(task)
            if type(item) is Partitioned:
                item = item.resolve()             # this subtask's rows of an exchanged batch
            if item is END:
                open_inputs -= 1
                ended.add(origin)
                if aligned and len(aligned | ended) == stage.n_inputs:
                    self._barrier(index, chain, stage, pending_barrier, task)
                    aligned.clear()
                    replay.extend(held)
                    held.clear()
                if open_inputs:
                    continue
                break
            if origin in aligned:
                held.append((item, rows, ingest, origin))
                continue
            if isinstance(item, Barrier):
                pending_barrier = item
                aligned.add(origin)
                if len(aligned | ended) < stage.n_inputs:
                    continue
                self._barrier(index, chain, stage, item, task)
                aligned.clear()
                replay.extend(held)
                held.clear()
                continue
            if stage.n_inputs > 1 and isinstance(item, Tick) and origin:
                continue                    # one tick per round is enough
            if stage.n_inputs > 1 and isinstance(item, Watermark):
                marks[origin] = max(marks[origin], item.t)
                low = min(marks)
                if low <= current:
                    continue
                current = low
                item = Watermark(low)
            out = chain.push(item)
            if is_sink:
                if rows:
                    lat = time.time_ns() - ingest
                    self.metrics.latency.add(max(lat, 0), rows)
                continue
            self._emit(stage.children, out, ingest, stage.partitioner, stage.origin,
                       stage.side_children, task, stage.dispatch)
        self._finish(stage, chain, task)

    def _finish(self, stage: PhysicalStage, chain: "_Chain", task: TaskStats) -> None:
        """End of input: close the operators, pass on what they flush, then the end."""
        out = chain.close()
        outputs = stage.children + [c for cs in stage.side_children.values() for c in cs]
        if outputs:
            self._emit(stage.children, out, time.time_ns(), stage.partitioner, stage.origin,
                       stage.side_children, task, stage.dispatch)
            self._end(outputs, stage.origin, task)

    def _replica_loop(self, index: int) -> None:
        """A replica of a stateless stage: answers every numbered item with what its operators
        emit for it, or with the error they raised (the merge raises it in turn, so the job
        fails with the error a single replica would have met first)."""
        stage = self.plan.stages[index]
        chain = self._chains[index]
        inbox = self.inputs[index]
        task = self._tasks[index]
        seek = getattr(chain.ops[0], "seek_rows", None) if chain.ops else None
        while True:
            msg, _, ingest, _ = inbox.get(task)
            if msg is END:
                break
            item = msg.items[0]
            if isinstance(item, Barrier):
                self._barrier(index, chain, stage, item, task, seq=msg.seq)
                continue
            error = None
            if seek is not None:
                seek(msg.offset)
            try:
                out = chain.push(item)
            except StepFailed as exc:
                out, error = [], StepFailed(re.sub(r"#\d+$", "", exc.step), exc.error)
            except HeliosError as exc:
                out, error = [], exc
            answer = Sequenced(msg.seq, out, error=error)
            for c in stage.children:
                self.inputs[c].put(answer, answer.num_rows, ingest, stage.origin, task)
        self._finish(stage, chain, task)

    def _resequence_loop(self, index: int) -> None:
        """The stage after replicas: their answers, released in the producer's order, run
        through this stage's operators as one input would (barriers need no alignment: every
        item before a barrier's number has been released before it)."""
        stage = self.plan.stages[index]
        chain = self._chains[index]
        inbox = self.inputs[index]
        task = self._tasks[index]
        is_sink = not stage.children and not stage.side_children
        order = Resequencer()
        open_inputs = stage.n_inputs
        while open_inputs:
            msg, _, ingest, _ = inbox.get(task)
            if msg is END:
                open_inputs -= 1
                continue
            order.add(msg)
            for m in order.ready():
                if m.error is not None:
                    raise m.error
                for item in m.items:
                    if isinstance(item, Barrier):
                        self._barrier(index, chain, stage, item, task)
                        continue
                    out = chain.push(item)
                    if is_sink:
                        rows = getattr(item, "num_rows", 0) if not isinstance(item, (Watermark, Tick)) else 0
                        if rows:
                            self.metrics.latency.add(max(time.time_ns() - ingest, 0), rows)
                        continue
                    self._emit(stage.children, out, ingest, stage.partitioner, stage.origin,
                               stage.side_children, task, stage.dispatch)
        if order.pending:
            raise ExecutionError(f"stage {stage.name!r}: {order.pending} replica answers never came "
                                 "in turn (an engine bug)")
        self._finish(stage, chain, task)

    def _barrier(self, index: int, chain: "_Chain", stage: PhysicalStage, barrier: Barrier, task,
                 seq: Optional[int] = None) -> None:
        """Snapshot this stage's stateful operators for the barrier's epoch; pass it on (a
        replica answers item ``seq`` with it)."""
        t0 = time.perf_counter()
        snaps = []
        for op in chain.ops:
            if op.stateful:
                try:
                    op.snapshot_epoch = barrier.epoch        # for sinks whose output names it
                    snaps.append((op, op.snapshot()))
                except HeliosError:
                    raise
                except Exception as exc:
                    raise StepFailed(op.name, exc) from exc
        self.coordinator.ack(stage.name, barrier.epoch, snaps, time.perf_counter() - t0)
        if seq is not None:
            for c in stage.children:
                self.inputs[c].put(Sequenced(seq, [barrier]), 0, 0, stage.origin)
            return
        if stage.dispatch is not None:
            self._emit(stage.children, [barrier], 0, None, stage.origin, stage.side_children,
                       dispatch=stage.dispatch)
            return
        outputs = stage.children + [c for cs in stage.side_children.values() for c in cs]
        for c in outputs:
            self.inputs[c].put(barrier, 0, 0, stage.origin)

    def _checkpoint(self, task, wait: bool = False) -> None:
        """Source side of a checkpoint: position, then the barrier (the batch is already out)."""
        epoch = self.coordinator.begin(self.plan.source.position(), wait=wait, stop=self._failed)
        if epoch is not None:
            self._emit(self.plan.source_children, [Barrier(epoch)], time.time_ns(), task=task,
                       dispatch=self.plan.source_dispatch)

    def _run_source(self) -> None:
        task = self._source_task
        task.started_ns = time.perf_counter_ns()
        cpu0 = time.thread_time_ns()
        try:
            self._source_loop(task)
        finally:
            task.cpu_ns = time.thread_time_ns() - cpu0
            task.finished_ns = time.perf_counter_ns()

    def _source_loop(self, task: TaskStats) -> None:
        plan = self.plan
        src = plan.source
        size, timeout_ns = plan.batch_size, plan.batch_timeout_ns
        pending: List[pa.RecordBatch] = []
        rows = 0
        first_ingest = 0
        deadline = 0
        exhausted = False

        def flush(upto: int) -> None:
            nonlocal pending, rows, first_ingest, last_out
            batch = _concat(pending)
            out, rest = batch.slice(0, upto), batch.slice(upto)
            pending = [rest] if rest.num_rows else []
            rows = rest.num_rows
            ingest = first_ingest
            if not rows:
                first_ingest = 0
            self.metrics.events_in += out.num_rows
            self._emit(plan.source_children, [out], ingest, task=task, dispatch=plan.source_dispatch)
            last_out = time.monotonic_ns()

        last_out = time.monotonic_ns()
        idle_s = min(_IDLE_POLL_S, timeout_ns / 1e9)
        src.open(size)
        try:
            while not self._stop.is_set():
                now = time.monotonic_ns()
                if not pending and now - last_out >= timeout_ns:
                    # Idle for a batch timeout: run timers (processing-time windows, idle
                    # watermarks, state TTL) although no data arrives.
                    self._emit(plan.source_children, [Tick(time.time_ns())], time.time_ns(), task=task,
                               dispatch=plan.source_dispatch)
                    last_out = now
                wait_s = max(deadline - now, 0) / 1e9 if pending else idle_s
                # A poll that brings nothing was a wait for data (idle); one that brings rows, work.
                t0 = task.idle_since = time.perf_counter_ns()
                pieces = src.poll(wait_s)
                task.idle_since = 0
                if not pieces:
                    task.idle_ns += time.perf_counter_ns() - t0
                if pieces is None:
                    exhausted = True
                    break
                for piece, ingest in pieces:
                    if not piece.num_rows:
                        continue
                    if not pending:
                        first_ingest = ingest
                        # The timeout runs from the row's ingest (e.g. when a Kafka reader took
                        # it from the client), not from when this thread got to it.
                        waited = max(0, min(time.time_ns() - ingest, timeout_ns))
                        deadline = time.monotonic_ns() + timeout_ns - waited
                    pending.append(piece)
                    rows += piece.num_rows
                    while rows >= size:
                        flush(size)
                        if pending:
                            deadline = time.monotonic_ns() + timeout_ns
                if pending and time.monotonic_ns() >= deadline:
                    flush(rows)
                if self.coordinator is not None and self.coordinator.due():
                    if pending:
                        flush(rows)         # a barrier sits at a micro-batch boundary
                    self._checkpoint(task)
            if pending:
                flush(rows)
        finally:
            src.close()
        if exhausted or self._drain:
            self._emit(plan.source_children, [Watermark(WATERMARK_MAX)], time.time_ns(), task=task,
                       dispatch=plan.source_dispatch)
        if self.coordinator is not None and not self._error and not self._aborted:
            # The final epoch, after the last batch: at the end of input everything is
            # committed; after stop() a run of the same job resumes exactly here.
            self._checkpoint(task, wait=True)
        self._end(plan.source_children, 0, task)


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
        watch = None
        if progress:
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
