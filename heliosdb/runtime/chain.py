"""A stage's operators, called directly one after another (no queue between them), timed per
batch.

:class:`Chain` is what a task runs an item through: ``push(item)`` hands it to the first
operator and what each emits to the next; ``close()`` ends the input.  An operator's error
comes out as :class:`StepFailed`, naming the step (an engine error, a ``HeliosError``, comes out
as it is, with ``step`` set to the operator's name when it has none).  Slow batches are
logged through :class:`SlowBatches`: the first of each step in a job, then a count at its end.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from typing import Dict, List, Optional

import pyarrow as pa

from ..errors import HeliosError
from ..metrics import JobMetrics
from ..operators.base import Operator, Partials, Run, SideOutput, Sided, Tick, Watermark

log = logging.getLogger("heliosdb.runtime")


class StepFailed(Exception):
    """Carries the name of the step whose code raised, and the original exception."""

    def __init__(self, step: str, error: BaseException):
        super().__init__(step, error)
        self.step = step
        self.error = error


def is_run(items: list) -> bool:
    """Whether ``items`` are batches with watermarks between them (what ``Run`` carries).

    >>> b = pa.record_batch({"x": [1]})
    >>> is_run([b, Watermark(1), b]), is_run([b, b]), is_run([Watermark(1), Tick(2)])
    (True, False, False)
    """
    marks = sum(type(it) is Watermark for it in items)
    return 0 < marks < len(items) and all(type(it) in (pa.RecordBatch, Watermark) for it in items)


class SlowBatches:
    """The slow batches of one job (over ``StreamingConfig(slow_batch_warning=)``): the first
    of each step is logged at WARNING with its duration and fields, the others are counted and
    reported in one record when the job ends (:meth:`report`).  Replicas of a step count as
    the step.

    Examples
    --------
    >>> slow = SlowBatches("doc-job", slow_ns=10**7)
    >>> [slow.add("map-2#1", 2 * 10**7, rows=100, epoch=0) for _ in range(3)]
    [True, False, False]
    >>> slow.counts()
    {'map-2': (3, 0.02)}
    """

    def __init__(self, job: str, slow_ns: int):
        self.job = job
        self.slow_ns = slow_ns
        self._lock = threading.Lock()
        self._steps: Dict[str, List] = {}       # step -> [count, slowest ns]

    def add(self, step: str, dt: int, rows: int, epoch: int) -> bool:
        """Count a slow call of ``step`` (``rows``: 0 for a timer); log it if it is the first.
        Whether it was logged."""
        step = re.sub(r"#\d+$", "", step)
        with self._lock:
            seen = self._steps.setdefault(step, [0, 0])
            seen[0] += 1
            seen[1] = max(seen[1], dt)
            first = seen[0] == 1
        if first:
            what = f"batch of {rows:,} rows" if rows else "timer"
            log.warning("job %r step %r: slow %s took %.3f s (warning above %.3f s; further slow "
                        "batches of this step are counted and reported when the job ends)",
                        self.job, step, what, dt / 1e9, self.slow_ns / 1e9,
                        extra={"job": self.job, "operator": step, "epoch": epoch,
                               "duration_s": dt / 1e9, "rows": rows})
        return first

    def counts(self) -> Dict[str, tuple]:
        """step -> (slow calls, the slowest in seconds)."""
        with self._lock:
            return {k: (n, worst / 1e9) for k, (n, worst) in self._steps.items()}

    def report(self) -> None:
        """At the job's end: one record per step that was slow more than once."""
        for step, (n, worst) in self.counts().items():
            if n > 1:
                log.warning("job %r step %r: %d slow batches in all, the slowest %.3f s (warning "
                            "above %.3f s)", self.job, step, n, worst, self.slow_ns / 1e9,
                            extra={"job": self.job, "operator": step, "duration_s": worst})


class Chain:
    """Operators of one stage, called directly one after another.

    Timed (the default), each call of an operator adds to its busy time, latency histogram and
    batch-size histogram, and a call slower than ``slow_ns`` goes to ``slow`` (the job's
    :class:`SlowBatches`; one of the chain's own if none is given); untimed
    (``HELIOSDB_METRICS=0``) only events and batches are counted.

    Examples
    --------
    >>> chain = Chain([Operator()], JobMetrics("doc-chain"), slow_ns=10**12)
    >>> chain.push(pa.record_batch({"x": [1, 2]}))[0].num_rows, chain.push(Watermark(5))
    (2, [Watermark(t=5)])
    """

    def __init__(self, operators: List[Operator], metrics: JobMetrics, slow_ns: int,
                 timed: bool = True, slow: Optional[SlowBatches] = None):
        self.ops = operators
        self.stats = [metrics.operator(op.name, op.kind) for op in operators]
        self.slow_ns = slow_ns
        self.metrics = metrics
        self.timed = timed
        self.slow = slow if slow is not None else SlowBatches(metrics.job, slow_ns)

    def _slow(self, step: str, dt: int, rows: int) -> None:
        self.slow.add(step, dt, rows, self.metrics.checkpoints.epoch)

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
            if isinstance(it, Partials):
                return op.process_partials(it), n
            if type(it) is Sided:
                return op.process_side(it.side, it.batch), n      # a join's input
            return op.process_batch(it), n
        except HeliosError as exc:
            if not exc.step:
                exc.step = op.name          # so the job's failure names the operator
            raise
        except Exception as exc:
            raise StepFailed(op.name, exc) from exc

    def push(self, item, start: int = 0) -> list:
        """Run ``item`` through the operators from ``start`` on; return what the last emits."""
        timed = self.timed
        items = item.items if type(item) is Run else [item]
        for op, st in zip(self.ops[start:], self.stats[start:]):
            out: list = []
            if op.takes_runs and len(items) > 1 and is_run(items):
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
            except HeliosError as exc:
                if not exc.step:
                    exc.step = op.name
                raise
            except Exception as exc:
                raise StepFailed(op.name, exc) from exc
            for r in flushed:
                out.extend(self.push(r, i + 1))
        return out

    def abort(self) -> None:
        """The job failed: let every operator release what it holds (errors are logged, the
        original one is what matters)."""
        for op in self.ops:
            try:
                op.abort()
            except Exception:  # noqa: BLE001 - the original error is what matters
                log.exception("step %r: abort failed", op.name)
