"""The micro-batcher and the source task.

:class:`Batcher` cuts the rows a source delivers into record batches of ``batch_size`` rows, or
fewer once the first row held has waited ``batch_timeout``: a slow source still gets its rows
through in time.  :class:`SourceTask` is the source's thread: it polls the source, feeds the
batcher, sends ticks while the source is idle (so timers run without data), starts checkpoints
(a barrier sits at a batch boundary), and at the end sends the final watermark, the final
checkpoint's barrier and the end of input.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, List, Protocol, Tuple

import pyarrow as pa

from ..metrics import JobMetrics, TaskStats
from ..operators.base import WATERMARK_MAX, Barrier, Tick, Watermark
from ..connectors.composite import INPUT_END, Tagged
from .edges import Output

#: How long an idle source is polled at most before the loop looks around (ticks, stop).
IDLE_POLL_S = 0.05


def concat(batches: List[pa.RecordBatch]) -> pa.RecordBatch:
    """One batch of ``batches`` (the batch itself when there is one)."""
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


class Batcher:
    """Holds rows until there are ``size`` of them, or until the first has waited
    ``timeout_ns``; ``emit(batch, ingest_ns)`` gets each batch and when its first row was
    ingested.

    ``add`` emits every full batch at once; ``due(now)`` says the timeout has come (the
    caller then calls ``flush()``), measured from the first held row's ingest, not from when
    this thread got it.

    Examples
    --------
    >>> out = []
    >>> b = Batcher(3, timeout_ns=10**9, emit=lambda batch, ingest: out.append(batch.num_rows))
    >>> b.add(pa.record_batch({"x": [1, 2]}), ingest_ns=time.time_ns())
    >>> b.add(pa.record_batch({"x": [3, 4, 5, 6]}), ingest_ns=time.time_ns())
    >>> out, b.rows
    ([3, 3], 0)
    >>> b.add(pa.record_batch({"x": [7]}), ingest_ns=time.time_ns()); b.flush(); out
    [3, 3, 1]
    """

    def __init__(self, size: int, timeout_ns: int, emit: Callable[[pa.RecordBatch, int], None]):
        self.size = size
        self.timeout_ns = timeout_ns
        self.emit = emit
        self.pending: List[pa.RecordBatch] = []
        self.rows = 0
        self.first_ingest = 0
        self.deadline = 0               # monotonic ns when the held rows are due

    def add(self, piece: pa.RecordBatch, ingest_ns: int) -> None:
        """Hold ``piece`` (ingested at ``ingest_ns``, wall-clock ns); emit full batches."""
        if not piece.num_rows:
            return
        if not self.pending:
            self.first_ingest = ingest_ns
            # The timeout runs from the row's ingest (e.g. when a Kafka reader took it from
            # the client), not from when this thread got to it.
            waited = max(0, min(time.time_ns() - ingest_ns, self.timeout_ns))
            self.deadline = time.monotonic_ns() + self.timeout_ns - waited
        self.pending.append(piece)
        self.rows += piece.num_rows
        while self.rows >= self.size:
            self._cut(self.size)
            if self.pending:
                self.deadline = time.monotonic_ns() + self.timeout_ns

    def due(self, now_ns: int) -> bool:
        """Whether held rows have waited their timeout at ``now_ns`` (monotonic)."""
        return bool(self.pending) and now_ns >= self.deadline

    def flush_due(self, now_ns: int) -> None:
        """Emit the rows held if they have waited their timeout at ``now_ns`` (monotonic)."""
        if self.due(now_ns):
            self.flush()

    def flush(self) -> None:
        """Emit every row held (at a timeout, a checkpoint, the end)."""
        if self.pending:
            self._cut(self.rows)

    def _cut(self, upto: int) -> None:
        batch = concat(self.pending)
        out, rest = batch.slice(0, upto), batch.slice(upto)
        self.pending = [rest] if rest.num_rows else []
        self.rows = rest.num_rows
        ingest = self.first_ingest
        if not self.rows:
            self.first_ingest = 0
        self.emit(out, ingest)


class JobControl(Protocol):
    """What the source task reads of its job (a :class:`~heliosdb.runtime.job.Job`)."""

    plan: Any                           # the PhysicalPlan: source, batch size and timeout
    metrics: JobMetrics
    coordinator: Any                    # a checkpoint Coordinator, or None

    @property
    def stopping(self) -> threading.Event: ...

    @property
    def draining(self) -> bool: ...

    @property
    def healthy(self) -> bool: ...

    @property
    def failed_event(self) -> threading.Event: ...


class SourceTask:
    """The source's thread: poll, batch, tick, checkpoint, and end (see the module docstring).

    ``job`` gives what the loop watches: ``stopping`` (stop reading), ``draining`` (signal
    the end of input with the final watermark), ``healthy`` (take the final checkpoint),
    ``failed_event``, ``coordinator`` and ``metrics``.
    """

    def __init__(self, job: JobControl, output: Output, stats: TaskStats):
        self.job = job
        self.output = output
        self.stats = stats
        self.last_out = 0

    def run(self) -> None:
        stats = self.stats
        stats.started_ns = time.perf_counter_ns()
        cpu0 = time.thread_time_ns()
        try:
            self._loop()
        finally:
            stats.cpu_ns = time.thread_time_ns() - cpu0
            stats.finished_ns = time.perf_counter_ns()

    def _send(self, batch: pa.RecordBatch, ingest_ns: int) -> None:
        self.job.metrics.events_in += batch.num_rows
        self.output.emit([batch], ingest_ns, self.stats)
        self.last_out = time.monotonic_ns()

    def _checkpoint(self, wait: bool = False) -> None:
        """Source side of a checkpoint: position, then the barrier (the batch is already out)."""
        job = self.job
        epoch = job.coordinator.begin(job.plan.source.position(), wait=wait, stop=job.failed_event)
        if epoch is not None:
            self.output.emit([Barrier(epoch)], time.time_ns(), self.stats)

    def _loop(self) -> None:
        job, task, output = self.job, self.stats, self.output
        plan = job.plan
        src = plan.source
        timeout_ns = plan.batch_timeout_ns
        batcher = source_batcher(plan, self._send)
        stopping = job.stopping
        coordinator = job.coordinator
        exhausted = False
        self.last_out = time.monotonic_ns()
        idle_s = min(IDLE_POLL_S, timeout_ns / 1e9)
        src.open(plan.batch_size)
        try:
            while not stopping.is_set():
                now = time.monotonic_ns()
                if not batcher.pending and now - self.last_out >= timeout_ns:
                    # Idle for a batch timeout: run timers (processing-time windows, idle
                    # watermarks, state TTL) although no data arrives.
                    output.emit([Tick(time.time_ns())], time.time_ns(), task)
                    self.last_out = now
                wait_s = max(batcher.deadline - now, 0) / 1e9 if batcher.pending else idle_s
                # A poll that brings nothing was a wait (idle); one that brings rows is work,
                # but for the time the reader says it waited.  Pacing is a part of idle.
                waited0, paced0 = src.waited_ns, src.paced_ns
                t0 = task.idle_since = time.perf_counter_ns()
                pieces = src.poll(wait_s)
                took = time.perf_counter_ns() - t0
                task.idle_since = 0                 # cleared first: a reader may miss, not double, a wait
                idle = took if not pieces else min(src.waited_ns - waited0, took)
                task.idle_ns += idle
                task.paced_ns += min(src.paced_ns - paced0, idle)
                if pieces is None:
                    exhausted = True
                    break
                for piece, ingest in pieces:
                    batcher.add(piece, ingest)
                batcher.flush_due(time.monotonic_ns())
                if coordinator is not None and coordinator.due():
                    batcher.flush()         # a barrier sits at a micro-batch boundary
                    self._checkpoint()
            batcher.flush()
        finally:
            src.close()
        if exhausted or job.draining:
            output.emit([Watermark(WATERMARK_MAX)], time.time_ns(), task)
        if coordinator is not None and job.healthy:
            # The final epoch, after the last batch: at the end of input everything is
            # committed; after stop() a run of the same job resumes exactly here.
            self._checkpoint(wait=True)
        output.finish([], task)


class InputBatchers:
    """The batchers of a source of several inputs (``connectors/composite.py``): one
    :class:`Batcher` per input, with that input's batch size and timeout, fed the
    :class:`~heliosdb.connectors.composite.Tagged` pieces of its input; what each emits leaves
    tagged with its input, and so does the final watermark of an input that ended (after its
    last rows).  The source loop uses it as one batcher.

    Examples
    --------
    >>> from heliosdb.connectors.composite import INPUT_END, Tagged
    >>> out = []
    >>> b = InputBatchers([(2, 10**9), (3, 10**9)], lambda t, ingest: out.append((t.index, t.batch)))
    >>> b.add(Tagged(1, pa.record_batch({"x": [1, 2]})), time.time_ns())
    >>> b.add(Tagged(0, pa.record_batch({"y": [1, 2]})), time.time_ns())
    >>> b.add(Tagged(1, INPUT_END), 0)
    >>> [(i, x if isinstance(x, Watermark) else x.num_rows) for i, x in out]
    [(0, 2), (1, 2), (1, Watermark(t=9223372036854775807))]
    """

    def __init__(self, batching: List[Tuple[int, int]],
                 emit: Callable[[Any, int], None]):
        def tagged(i: int) -> Callable[[pa.RecordBatch, int], None]:
            return lambda batch, ingest: emit(Tagged(i, batch), ingest)

        self.batchers = [Batcher(size, timeout, tagged(i)) for i, (size, timeout) in enumerate(batching)]
        self._end = [lambda i=i: emit(Tagged(i, Watermark(WATERMARK_MAX)), time.time_ns())
                     for i in range(len(batching))]

    @property
    def pending(self) -> bool:
        return any(b.pending for b in self.batchers)

    @property
    def deadline(self) -> int:
        """The earliest deadline of the inputs holding rows."""
        return min((b.deadline for b in self.batchers if b.pending), default=0)

    def add(self, piece: Any, ingest_ns: int) -> None:
        b = self.batchers[piece.index]
        if piece.batch is INPUT_END:
            b.flush()
            self._end[piece.index]()
        else:
            b.add(piece.batch, ingest_ns)

    def flush_due(self, now_ns: int) -> None:
        for b in self.batchers:
            b.flush_due(now_ns)

    def flush(self) -> None:
        for b in self.batchers:
            b.flush()


def source_batcher(plan: Any, emit: Callable[[Any, int], None]) -> Any:
    """The batcher of the plan's source: one :class:`Batcher`, or :class:`InputBatchers`
    for a source of several inputs (``plan.input_batching``: each input's batch size and
    timeout)."""
    if plan.source.inputs > 1:
        return InputBatchers(plan.input_batching, emit)
    return Batcher(plan.batch_size, plan.batch_timeout_ns, emit)
