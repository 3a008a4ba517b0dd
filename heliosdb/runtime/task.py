"""The task loop: one thread running one stage's operators, the same loop for every stage.

It reads top to bottom: take the next item from the input (an
:class:`~heliosdb.runtime.gate.InputGate`, a replica's or a resequencing input: they align
barriers, merge watermarks and put items in order), push it through the operators, send what
comes out through the output's edges; at a checkpoint barrier, snapshot the stateful
operators and pass the barrier on; at the end of input, close the operators, send what they
flush and the end.  If anything raises, every operator is aborted and the error goes up to
the job.

The operators are called through their contract only (:mod:`heliosdb.operators.base`):
``process_batch``/``process_run``, ``on_watermark``, ``on_tick`` (via the
:class:`~heliosdb.runtime.chain.Chain`), ``snapshot()`` with ``snapshot_epoch`` at a barrier,
``close()`` at the end, ``abort()`` on failure.  ``open(ctx)`` was called by the job before
any restore; ``prepare_snapshot()`` is the checkpoint writer's, ahead of the barrier;
``finish()`` and ``on_commit`` are the checkpoint coordinator's.
"""
from __future__ import annotations

import time
from typing import Callable, List, Optional, Tuple

from ..errors import ExecutionError, HeliosError
from ..metrics import JobMetrics, TaskStats
from ..operators.base import Barrier, Operator, Snapshot
from ..operators.exchange import Partitioned
from .chain import Chain, StepFailed
from .channel import END
from .edges import Output
from .gate import Entry

#: What the task calls with its snapshots at a barrier: (stage, epoch, snapshots, pause_s).
Ack = Callable[[str, int, List[Tuple[Operator, Optional[Snapshot]]], float], None]


class StageTask:
    """One stage on one thread: ``next`` gives entries (see :mod:`heliosdb.runtime.gate`),
    ``chain`` runs them, ``output`` sends the results on; ``ack`` takes the snapshots taken at
    a barrier (the checkpoint coordinator's).  A task with no edges is a sink: it records the
    end-to-end latency of the rows it took.

    Examples
    --------
    A sink stage reading two batches and the end:

    >>> import pyarrow as pa
    >>> from heliosdb.operators.base import Operator
    >>> b = pa.record_batch({"x": [1, 2]})
    >>> entries = iter([(b, 2, 0, 0), (b, 2, 0, 0), (END, 0, 0, 0)])
    >>> metrics = JobMetrics("doc-task")
    >>> task = StageTask("sink", Chain([Operator()], metrics, 10**12), entries.__next__,
    ...                  Output([]), TaskStats("sink", []), metrics)
    >>> task.run()
    >>> metrics.latency.total
    4
    """

    def __init__(self, name: str, chain: Chain, next: Callable[[], Entry], output: Output,
                 stats: TaskStats, metrics: JobMetrics, ack: Optional[Ack] = None):
        self.name = name
        self.chain = chain
        self.next = next
        self.output = output
        self.stats = stats
        self.metrics = metrics
        self.ack = ack

    def run(self) -> None:
        """Run the loop on this thread until the input ends; on an error, abort the operators
        and raise it."""
        stats = self.stats
        stats.started_ns = time.perf_counter_ns()
        cpu0 = time.thread_time_ns()
        try:
            self._loop()
        except BaseException:
            self.chain.abort()
            raise
        finally:
            stats.cpu_ns = time.thread_time_ns() - cpu0
            stats.finished_ns = time.perf_counter_ns()

    def _loop(self) -> None:
        next_entry, push, output, stats = self.next, self.chain.push, self.output, self.stats
        answers_errors = output.answers_errors
        latency = self.metrics.latency if not output.edges else None     # a sink's
        while True:
            item, rows, ingest, _ = next_entry()
            if item is END:
                break
            t = type(item)
            if t is Partitioned:
                item = item.resolve()       # this subtask's rows of an exchanged batch
            elif t is Barrier:
                self._barrier(item)
                continue
            try:
                out = push(item)
            except (StepFailed, HeliosError) as exc:
                if not answers_errors:
                    raise
                output.fail(exc, ingest, stats)      # a replica answers with the error
                continue
            if latency is not None:
                if rows:
                    latency.add(max(time.time_ns() - ingest, 0), rows)
                continue
            output.emit(out, ingest, stats)
        self.output.finish(self.chain.close(), stats)

    def _barrier(self, barrier: Barrier) -> None:
        """Snapshot the stateful operators for the barrier's epoch, hand the snapshots to the
        checkpoint coordinator, pass the barrier on."""
        t0 = time.perf_counter()
        snaps = []
        for op in self.chain.ops:
            if op.stateful:
                try:
                    op.snapshot_epoch = barrier.epoch        # for sinks whose output names it
                    snaps.append((op, op.snapshot()))
                except HeliosError:
                    raise
                except Exception as exc:
                    raise StepFailed(op.name, exc) from exc
        if self.ack is None:
            raise ExecutionError(f"stage {self.name!r} got checkpoint barrier {barrier.epoch} in a job "
                              "without checkpoints (an engine bug)")
        self.ack(self.name, barrier.epoch, snaps, time.perf_counter() - t0)
        self.output.emit([barrier], 0, self.stats)
