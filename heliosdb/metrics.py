"""Every metric the engine keeps, defined once, with the user guide's names.

A running job updates plain counters (:mod:`heliosdb.counters`; each from one thread, per
batch, never per event): :class:`OperatorStats` per operator, :class:`TaskStats` per thread (a *task*: the source, or a
stage's chain of operators), :class:`CheckpointStats` per job, and the end-to-end
:class:`LatencyHistogram`.  Readers on other threads (``JobHandle.metrics()``, ``diagnose()``,
the progress display, a Prometheus scrape) copy them with :meth:`JobMetrics.sample` and
:meth:`JobMetrics.snapshot`; nothing is computed on the hot path for them.

:data:`METRICS` lists every exported metric (name, type, labels, help).  A
:class:`MetricsCollector` turns live jobs into Prometheus metric families at scrape time
(:class:`~heliosdb.metrics_server.MetricsServer` serves one environment's registry over HTTP,
so several environments and jobs in one process never collide).  A task is named after its
first operator (the source after the source step), which is the ``task`` label of the task
metrics.  The histograms' buckets are in :mod:`heliosdb.histograms`.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, Iterator, List, Optional, Tuple

from .counters import CheckpointStats, OperatorStats, Sample, TaskStats, task_fractions, zero_sample
from .histograms import LatencyHistogram

__all__ = ["METRICS", "CheckpointStats", "JobMetrics", "MetricsCollector", "MetricsSnapshot",
           "OperatorStats", "Sample", "TaskStats", "task_fractions"]

# -- the exported metrics ----------------------------------------------------------------------
# The user guide's names (its dashboards and alerts query exactly these).
EVENTS_PROCESSED = "streaming_events_processed_total"
LATENCY_MS = "streaming_latency_ms"
STATE_SIZE_BYTES = "streaming_state_size_bytes"
BACKPRESSURE = "streaming_backpressure"
CHECKPOINT_DURATION_S = "streaming_checkpoint_duration_seconds"
CHECKPOINT_FAILURES = "streaming_checkpoint_failures_total"
OPERATOR_LATENCY_MS = "streaming_operator_latency_ms"
# Ours.
CHECKPOINTS = "streaming_checkpoints_total"
CHECKPOINT_SIZE = "streaming_checkpoint_size_bytes"
CHECKPOINT_PAUSE_S = "streaming_checkpoint_pause_seconds"
CHECKPOINT_RESTORES = "streaming_checkpoint_restores_total"
CHECKPOINT_FALLBACKS = "streaming_checkpoint_fallbacks_total"
OPERATOR_EVENTS_IN = "streaming_operator_events_in_total"
OPERATOR_EVENTS_OUT = "streaming_operator_events_out_total"
OPERATOR_BATCHES = "streaming_operator_batches_total"
OPERATOR_BATCH_ROWS = "streaming_operator_batch_size_rows"
OPERATOR_BUSY_S = "streaming_operator_busy_seconds_total"
OPERATOR_BACKPRESSURE = "streaming_operator_backpressure"
LATE_EVENTS = "streaming_late_events_total"
DEAD_LETTERS = "streaming_dead_letters_total"
WATERMARK_LAG_S = "streaming_watermark_lag_seconds"
OPEN_WINDOWS = "streaming_open_windows"
STATE_LIMIT_BYTES = "streaming_state_size_limit_bytes"
CHANNEL_FILL = "streaming_channel_fill_ratio"
TASK_BUSY_S = "streaming_task_busy_seconds_total"
TASK_BLOCKED_S = "streaming_task_blocked_seconds_total"
TASK_IDLE_S = "streaming_task_idle_seconds_total"
TASK_INFO = "streaming_task_info"
JOB_RUNNING = "streaming_job_running"
JOB_UPTIME_S = "streaming_job_uptime_seconds"
LOOKUP_TABLE_ROWS = "streaming_lookup_table_rows"
LOOKUP_TABLE_REFRESHES = "streaming_lookup_table_refreshes_total"
LOOKUP_TABLE_REFRESH_FAILURES = "streaming_lookup_table_refresh_failures_total"

_J, _JO, _JT = ("job",), ("job", "operator"), ("job", "task")

#: name -> (Prometheus type, labels, help).  The one list of what ``/metrics`` exposes.
METRICS: Dict[str, Tuple[str, Tuple[str, ...], str]] = {
    EVENTS_PROCESSED: ("counter", _JO, "Events read from the job's source (operator = the source step)."),
    LATENCY_MS: ("histogram", _J, "End-to-end latency in ms, one observation per event: ingestion at the source to the end of its processing by the sink's stage."),
    STATE_SIZE_BYTES: ("gauge", _JO, "Bytes of keyed state held by a stateful operator."),
    BACKPRESSURE: ("gauge", _J, "1 when some task spent more than 10% of the trailing window blocked on a full output channel, else 0."),
    CHECKPOINT_DURATION_S: ("histogram", _J, "Duration of completed checkpoints, in seconds."),
    CHECKPOINT_FAILURES: ("counter", _J, "Checkpoints that failed."),
    CHECKPOINTS: ("counter", _J, "Checkpoints completed."),
    CHECKPOINT_SIZE: ("gauge", _J, "Bytes of files written by the last completed checkpoint."),
    CHECKPOINT_PAUSE_S: ("gauge", _J, "Longest time a stage spent taking its snapshots at the last checkpoint's barrier "
                                      "(keyed state is only frozen there and copied afterwards, copy-on-write)."),
    CHECKPOINT_RESTORES: ("counter", _J, "Checkpoints restored when the job started."),
    CHECKPOINT_FALLBACKS: ("counter", _J, "Newest checkpoints found corrupt or incomplete at restore, so an older one was used."),
    OPERATOR_LATENCY_MS: ("histogram", _JO, "Time an operator takes for one batch (or a watermark that emits results), in ms."),
    OPERATOR_EVENTS_IN: ("counter", _JO, "Events into an operator."),
    OPERATOR_EVENTS_OUT: ("counter", _JO, "Events out of an operator."),
    OPERATOR_BATCHES: ("counter", _JO, "Batches into an operator."),
    OPERATOR_BATCH_ROWS: ("histogram", _JO, "Rows per batch into an operator."),
    OPERATOR_BUSY_S: ("counter", _JO, "Seconds an operator spent working (its own time, without waits)."),
    OPERATOR_BACKPRESSURE: ("gauge", _JO, "Fraction of the trailing window the operator's task was blocked on a full output channel."),
    LATE_EVENTS: ("counter", _JO, "Events that arrived for a window already closed (dropped, or sent to late_output())."),
    DEAD_LETTERS: ("counter", ("job", "operator", "reason"), "Source records that could not be decoded (sent to the dead-letter sink, skipped, or failing the job), by reason: malformed, wrong_type, missing_field, bad_magic, unknown_schema, oversized, empty."),
    WATERMARK_LAG_S: ("gauge", _JO, "Wall clock minus the operator's event-time watermark, in seconds (watermark assigners and event-time windows; none before the first watermark or after the input ended)."),
    OPEN_WINDOWS: ("gauge", _JO, "Windows a window operator holds open."),
    STATE_LIMIT_BYTES: ("gauge", _JO, "The state backend's bound on a stateful operator's state."),
    CHANNEL_FILL: ("gauge", _JO, "Fill of the channel into an operator's task: queued events / buffer_size (can exceed 1: a channel always admits one batch)."),
    TASK_BUSY_S: ("counter", _JT, "Seconds a task (thread) spent working."),
    TASK_BLOCKED_S: ("counter", _JT, "Seconds a task spent blocked on a full output channel (backpressure)."),
    TASK_IDLE_S: ("counter", _JT, "Seconds a task spent waiting for input."),
    TASK_INFO: ("info", ("job", "task", "operators", "downstream", "group"), "A task's operators (in order), the tasks it feeds, and its parallel group."),
    JOB_RUNNING: ("gauge", _J, "1 while the job runs, 0 once it has ended."),
    JOB_UPTIME_S: ("gauge", _J, "Seconds since the job started (its run time once ended)."),
    LOOKUP_TABLE_ROWS: ("gauge", _JO, "Rows of the table version a lookup join uses (its bytes are its streaming_state_size_bytes)."),
    LOOKUP_TABLE_REFRESHES: ("counter", _JO, "Reloads of a lookup join's table (hdb.table(refresh=)) swapped in."),
    LOOKUP_TABLE_REFRESH_FAILURES: ("counter", _JO, "Reloads of a lookup join's table that failed (the version in use was kept)."),
}

#: A task blocked longer than this fraction of the window counts as backpressured.
BACKPRESSURE_THRESHOLD = 0.1
#: The snapshot's ``*_recent*`` figures (rate, latency quantiles, backpressure) cover this
#: trailing window, short enough to follow a job as it changes.
RECENT_WINDOW_NS = 5_000_000_000
#: Samples kept for trailing windows reach back over the longest window, about this many per
#: window (at least :data:`MIN_SAMPLE_GAP_NS` apart), the newest always among them.
SAMPLES_PER_WINDOW = 200
MIN_SAMPLE_GAP_NS = 10_000_000


@dataclass
class JobMetrics:
    """Live counters of one job run.

    ``clock`` is the time (ns) samples are stamped with: ``time.perf_counter_ns``, the clock
    the tasks' ``*_ns`` counters are kept in; ``started`` and ``finished`` are its seconds.  A
    test that writes the counters itself passes a clock it moves, so rates and fractions are
    exact (see ``tests/observability/timeline.py``).
    """

    job: str
    started: float = field(default_factory=time.perf_counter)
    finished: float = 0.0
    events_in: int = 0
    operators: Dict[str, OperatorStats] = field(default_factory=dict)
    tasks: Dict[str, TaskStats] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    channels: List = field(default_factory=list)
    state_ops: List = field(default_factory=list)
    #: Every operator of the running plan: their declared statistics (``watermark_ns()``,
    #: ``holding_split()``) are read from here.
    plan_ops: List = field(default_factory=list)
    source: str = "source"
    window_ns: int = 10_000_000_000
    recent_ns: int = RECENT_WINDOW_NS
    checkpoints: CheckpointStats = None  # type: ignore[assignment]
    dead_letters: Dict[str, int] = field(default_factory=dict)   # reason -> records (a Kafka source's)
    clock: Callable[[], int] = time.perf_counter_ns

    def __post_init__(self) -> None:
        if self.checkpoints is None:
            self.checkpoints = CheckpointStats(self.job)
        self._history: Deque[Sample] = deque(maxlen=4 * SAMPLES_PER_WINDOW)
        self._history_lock = threading.Lock()
        # Per task, the largest (blocked, idle, paced) read so far: a reading taken while a
        # wait ends can miss it (the channel clears the wait's start, then adds it up), and
        # counters must not run backwards.
        self._seen: Dict[str, Tuple[int, int, int]] = {}

    def operator(self, name: str, kind: str) -> OperatorStats:
        st = self.operators.get(name)
        if st is None:
            st = self.operators[name] = OperatorStats(name, kind)
        return st

    def elapsed(self) -> float:
        return (self.finished or self.clock() / 1e9) - self.started

    @property
    def running(self) -> bool:
        return not self.finished

    # -- samples and trailing windows ------------------------------------------------------------
    def sample(self) -> Sample:
        """The cumulative figures now (safe from any thread)."""
        tasks, paced = {}, {}
        with self._history_lock:            # the clock read inside: readings in order
            now = self.clock()
            for name, ts in list(self.tasks.items()):
                alive, busy, blocked, idle = ts.times(now)
                b0, i0, p0 = self._seen.get(name, (0, 0, 0))
                blocked, idle, pace = max(blocked, b0), max(idle, i0), max(ts.paced_ns, p0)
                self._seen[name] = (blocked, idle, pace)
                tasks[name] = (alive, max(alive - blocked - idle, 0), blocked, idle, self._task_rows(ts))
                if pace:
                    paced[name] = pace
        ops = {n: (s.busy_ns, s.rows_in) for n, s in list(self.operators.items())}
        return Sample(now, self.events_in, tasks, ops, self.latency.read(), paced)

    def _task_rows(self, ts: TaskStats) -> int:
        if not ts.operators:
            return self.events_in
        st = self.operators.get(ts.operators[0])
        return st.rows_in if st is not None else 0

    def keep(self, sample: Sample) -> None:
        """Keep ``sample`` for trailing windows.  The newest is always kept; one between two
        others closer than the gap (1/:data:`SAMPLES_PER_WINDOW` of the longest window) is
        dropped, and so are those older than needed.  The job's sampler
        (:mod:`heliosdb.history`) keeps one every half second; readers' samples fill in."""
        span = max(self.window_ns, self.recent_ns)
        gap = max(MIN_SAMPLE_GAP_NS, span // SAMPLES_PER_WINDOW)
        with self._history_lock:
            hist = self._history
            if hist and sample.t_ns < hist[-1].t_ns:
                return                      # taken before the last kept one, by a slower reader
            hist.append(sample)
            if len(hist) >= 3 and hist[-1].t_ns - hist[-3].t_ns < gap:
                del hist[-2]
            while len(hist) >= 2 and sample.t_ns - hist[1].t_ns >= span:
                hist.popleft()              # the next one reaches back a whole window already

    def record(self) -> Sample:
        """A sample now, kept for trailing windows (what the job's sampler calls)."""
        now = self.sample()
        self.keep(now)
        return now

    def recent(self, window_ns: Optional[int] = None, now: Optional[Sample] = None) -> Tuple[Sample, Sample]:
        """(then, now): ``now`` is a fresh sample (or the one given), ``then`` the newest kept
        sample at least ``window_ns`` older (or the job's start).

        Examples
        --------
        A job slow for its first 3 s, fast after: 8 s in, the whole run's p99 is still the
        slow start's, the last 5 seconds' is not.

        >>> t = [0]
        >>> jm = JobMetrics("doc", started=0.0, clock=lambda: t[0])
        >>> for second in range(8):
        ...     jm.latency.add(800_000_000 if second < 3 else 2_000_000, weight=1000)
        ...     t[0] += 1_000_000_000
        ...     _ = jm.record()
        >>> then, now = jm.recent(jm.recent_ns)
        >>> (now.t_ns - then.t_ns) // 10**9, round(jm.latency.quantile(0.99))
        (5, 841)
        >>> round(LatencyHistogram.quantile_between(then.latency, now.latency, 0.99), 2)
        2.11
        """
        window_ns = self.window_ns if window_ns is None else window_ns
        if now is None:
            now = self.sample()
            self.keep(now)
        then = None
        with self._history_lock:
            for s in reversed(self._history):
                if now.t_ns - s.t_ns >= window_ns:
                    then = s
                    break
        return (then or zero_sample(now)), now

    def since_start(self) -> Tuple[Sample, Sample]:
        """(the job's start, now): for figures over the whole run."""
        now = self.sample()
        return zero_sample(now), now

    # -- operators' declared statistics ------------------------------------------------------------
    def all_dead_letters(self) -> Dict[str, int]:
        """Records kept out of the stream by reason: the source's dead letters, and rows a
        watermark step dropped for having no event time (``on_null='skip'``)."""
        out = dict(self.dead_letters)
        skipped = sum(op.null_event_times for op in list(self.plan_ops))
        if skipped:
            out["null_event_time"] = out.get("null_event_time", 0) + skipped
        return out

    def late_by_operator(self) -> Dict[str, int]:
        """Late events per operator that found any (sent to a late output or dropped).

        Examples
        --------
        >>> from heliosdb.operators.base import Operator
        >>> op = Operator(); op.name, op.late_events = "window-3", 12
        >>> JobMetrics("doc", state_ops=[op, Operator()]).late_by_operator()
        {'window-3': 12}
        """
        return {op.name: op.late_events for op in list(self.state_ops) if op.late_events}

    def late_counts(self) -> list:
        """Late events of each late output that found any (``operators.base.LateCount``: per
        operator, and per side for a join), each kept (its late output is read) or dropped.

        Examples
        --------
        >>> from heliosdb.operators.base import Operator
        >>> op = Operator(); op.name, op.late_events = "window-3", 12
        >>> [(c.operator, c.side, c.events, c.fate) for c in JobMetrics("doc", state_ops=[op]).late_counts()]
        [('window-3', None, 12, 'dropped')]
        """
        return [c for op in list(self.state_ops) for c in op.late_counts()]

    def watermark(self) -> Optional[int]:
        """The job's event-time watermark (ns): the least of its operators' (None before the
        first watermark, or without event time)."""
        wms = self.watermarks().values()
        return min(wms) if wms else None

    def watermarks(self) -> Dict[str, int]:
        """Current event-time watermark (ns) per operator that has one (the watermark
        assigners and event-time windows; an operator with none yet is left out)."""
        out = {}
        ops = {id(op): op for op in list(self.plan_ops) + list(self.state_ops)}
        for op in ops.values():
            wm = op.watermark_ns()
            if wm is not None:
                out[op.name] = wm
        return out

    def holding_splits(self) -> Dict[str, str]:
        """Operator -> the input split that holds its watermark back, where one is known."""
        out = {}
        for op in list(self.plan_ops):
            split = op.holding_split()
            if split is not None:
                out[op.name] = split
        return out

    # -- snapshot ----------------------------------------------------------------------------------
    def snapshot(self) -> "MetricsSnapshot":
        """A dict of the current figures (safe to call from any thread); in a notebook it
        shows as a table.

        ``events_per_s`` and ``latency_p*_ms`` cover the whole run; ``recent_events_per_s``,
        ``tasks`` and ``streaming_backpressure`` the trailing window (``window_ns``, for
        Prometheus); ``events_per_s_recent``, ``latency_recent_p*_ms`` and
        ``backpressure_recent`` (the largest fraction of time a task was blocked) the last
        ``recent_ns`` (``recent_window_s`` says how long that was), so they follow the job.
        ``watermark_ns`` is the job's event-time watermark, ``watermark_lag_ms`` how far
        behind the wall clock it is (both None without event time).

        Examples
        --------
        >>> m = JobMetrics("doc", started=0.0, clock=lambda: 1_000_000_000).snapshot()
        >>> m["events_per_s_recent"], m["backpressure_recent"], m["watermark_ns"], isinstance(m, dict)
        (0.0, 0.0, None, True)
        """
        el = max(self.elapsed(), 1e-9)
        then, now = self.recent()
        frac = task_fractions(then, now)
        dt = max((now.t_ns - then.t_ns) / 1e9, 1e-9) if then.t_ns != now.t_ns else el
        r_then, _ = self.recent(self.recent_ns, now)
        r_dt = max((now.t_ns - r_then.t_ns) / 1e9, 1e-9) if r_then.t_ns != now.t_ns else el
        r_frac = task_fractions(r_then, now)
        assert now.latency is not None
        recent_q = (lambda q: LatencyHistogram.quantile_between(r_then.latency, now.latency, q))
        wm = self.watermark()
        blocked = {ch.name: ch.blocked_ns / 1e9 for ch in self.channels}
        operators = list(self.operators.items())      # one-step copies: stage threads write
        state_ops = list(self.state_ops)
        task_of = {op: t.name for t in list(self.tasks.values()) for op in t.operators}
        wall = time.time()
        return MetricsSnapshot({
            "job": self.job,
            "elapsed_s": el,
            "running": self.running,
            EVENTS_PROCESSED: self.events_in,
            "events_out": sum(s.rows_in for _, s in operators if s.kind.endswith("sink")),
            "events_per_s": self.events_in / el,
            "recent_events_per_s": (now.events_in - then.events_in) / dt,
            "latency_p50_ms": self.latency.quantile(0.50),
            "latency_p95_ms": self.latency.quantile(0.95),
            "latency_p99_ms": self.latency.quantile(0.99),
            "recent_window_s": r_dt,
            "events_per_s_recent": (now.events_in - r_then.events_in) / r_dt,
            "latency_recent_p50_ms": recent_q(0.50),
            "latency_recent_p95_ms": recent_q(0.95),
            "latency_recent_p99_ms": recent_q(0.99),
            "backpressure_recent": max((f["blocked"] for f in r_frac.values()), default=0.0),
            "watermark_ns": wm,
            "watermark_lag_ms": None if wm is None else (wall - wm / 1e9) * 1e3,
            STATE_SIZE_BYTES: sum(op.state_size_bytes() for op in state_ops),
            "open_windows": sum(op.open_windows() or 0 for op in state_ops),
            LATE_EVENTS: sum(op.late_events for op in state_ops),
            "late_events": self.late_by_operator(),
            "late_outputs": [{"operator": c.operator, "side": c.side, "events": c.events, "kept": c.read}
                             for c in self.late_counts()],
            "lookup_tables": {op.name: op.table_stats() for op in state_ops if op.table_stats() is not None},
            "watermark_lag_s": {n: wall - wm / 1e9 for n, wm in self.watermarks().items()},
            DEAD_LETTERS: self.all_dead_letters(),
            BACKPRESSURE: int(any(f["blocked"] > BACKPRESSURE_THRESHOLD for f in frac.values())),
            "blocked_s": blocked,
            "tasks": frac,
            # CPU seconds of each task's thread over its whole run (once it has ended): with
            # busy time, tells a task that computes from one that waits for a core or the GIL.
            "task_cpu_s": {t.name: t.cpu_ns / 1e9 for t in list(self.tasks.values()) if t.finished_ns},
            CHECKPOINTS: self.checkpoints.count,
            CHECKPOINT_FAILURES: self.checkpoints.failures,
            "checkpoint_restores": self.checkpoints.restores,
            "checkpoint_fallbacks": self.checkpoints.fallbacks,
            "operators": {
                n: {"kind": s.kind, "task": task_of.get(n, ""), "rows_in": s.rows_in,
                    "rows_out": s.rows_out, "batches": s.batches, "busy_s": s.busy_ns / 1e9,
                    OPERATOR_LATENCY_MS: (s.busy_ns / s.batches / 1e6) if s.batches else 0.0,
                    "latency_p99_ms": s.latency.quantile(0.99)}
                for n, s in operators
            },
        })


class MetricsSnapshot(Dict[str, object]):
    """A job's figures at one moment (what ``JobHandle.metrics()`` and ``JobResult.metrics``
    hold): a plain dict, which a notebook shows as a table.

    >>> m = MetricsSnapshot({"job": "doc", "streaming_events_processed_total": 5})
    >>> m["streaming_events_processed_total"], "<table" in m._repr_html_()
    (5, True)
    """

    def _repr_html_(self) -> str:
        from .display import snapshot_html

        return snapshot_html(self)


# -- Prometheus exposition -----------------------------------------------------------------------
def _families(jobs: List[JobMetrics]) -> Iterator[object]:
    """Prometheus metric families for ``jobs``, built from one sample of each."""
    from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                        HistogramMetricFamily, InfoMetricFamily)

    def fam(name: str):
        typ, labels, doc = METRICS[name]
        if typ == "counter":
            return CounterMetricFamily(name[: -len("_total")], doc, labels=labels)
        if typ == "gauge":
            return GaugeMetricFamily(name, doc, labels=labels)
        if typ == "histogram":
            return HistogramMetricFamily(name, doc, labels=labels)
        return InfoMetricFamily(name[: -len("_info")], doc, labels=labels[:1])

    f = {name: fam(name) for name in METRICS}

    def hist(name: str, labels: List[str], buckets: Tuple[List[Tuple[float, int]], int, float]) -> None:
        bounds, total, total_sum = buckets
        bs = [(f"{le:.6g}", c) for le, c in bounds] + [("+Inf", total)]
        f[name].add_metric(labels, bs, total_sum)

    wall = time.time()
    for jm in jobs:
        job = jm.job
        then, now = jm.recent()
        frac = task_fractions(then, now)
        f[EVENTS_PROCESSED].add_metric([job, jm.source], jm.events_in)
        hist(LATENCY_MS, [job], jm.latency.buckets(1e6))
        f[BACKPRESSURE].add_metric([job], int(any(v["blocked"] > BACKPRESSURE_THRESHOLD
                                                  for v in frac.values())))
        cp = jm.checkpoints
        hist(CHECKPOINT_DURATION_S, [job], cp.duration.buckets(1e9, LatencyHistogram.SLOW_EXPORT_EDGES))
        f[CHECKPOINT_FAILURES].add_metric([job], cp.failures)
        f[CHECKPOINTS].add_metric([job], cp.count)
        f[CHECKPOINT_SIZE].add_metric([job], cp.last_size_bytes)
        f[CHECKPOINT_PAUSE_S].add_metric([job], cp.last_pause_s)
        f[CHECKPOINT_RESTORES].add_metric([job], cp.restores)
        f[CHECKPOINT_FALLBACKS].add_metric([job], cp.fallbacks)
        f[JOB_RUNNING].add_metric([job], int(jm.running))
        f[JOB_UPTIME_S].add_metric([job], jm.elapsed())
        from .formats import REASONS          # every reason from zero, so increase() sees the first
        dead = jm.all_dead_letters()
        for reason in dict.fromkeys(REASONS + tuple(dead)):
            f[DEAD_LETTERS].add_metric([job, jm.source, reason], dead.get(reason, 0))
        task_of = {}
        for name, ts in list(jm.tasks.items()):
            alive, busy, blocked, idle, _ = now.tasks.get(name, (0, 0, 0, 0, 0))
            f[TASK_BUSY_S].add_metric([job, name], busy / 1e9)
            f[TASK_BLOCKED_S].add_metric([job, name], blocked / 1e9)
            f[TASK_IDLE_S].add_metric([job, name], idle / 1e9)
            f[TASK_INFO].add_metric([job], {"task": name, "operators": ",".join(ts.operators),
                                            "downstream": ",".join(ts.downstream), "group": ts.group})
            for op in ts.operators:
                task_of[op] = name
            if ts.inbox is not None and ts.operators:
                ch = ts.inbox
                f[CHANNEL_FILL].add_metric([job, ts.operators[0]], ch.rows / ch.capacity)
        for name, st in list(jm.operators.items()):
            lab = [job, name]
            f[OPERATOR_EVENTS_IN].add_metric(lab, st.rows_in)
            f[OPERATOR_EVENTS_OUT].add_metric(lab, st.rows_out)
            f[OPERATOR_BATCHES].add_metric(lab, st.batches)
            f[OPERATOR_BUSY_S].add_metric(lab, st.busy_ns / 1e9)
            hist(OPERATOR_LATENCY_MS, lab, st.latency.buckets(1e6))
            hist(OPERATOR_BATCH_ROWS, lab, st.batch_rows.buckets())
            task = frac.get(task_of.get(name, ""))
            f[OPERATOR_BACKPRESSURE].add_metric(lab, task["blocked"] if task else 0.0)
        for op in list(jm.state_ops):
            lab = [job, op.name]
            f[STATE_SIZE_BYTES].add_metric(lab, op.state_size_bytes())
            if op.max_state_bytes:
                f[STATE_LIMIT_BYTES].add_metric(lab, op.max_state_bytes)
            f[LATE_EVENTS].add_metric(lab, op.late_events)
            open_windows = op.open_windows()
            if open_windows is not None:
                f[OPEN_WINDOWS].add_metric(lab, open_windows)
            table = op.table_stats()
            if table is not None:
                f[LOOKUP_TABLE_ROWS].add_metric(lab, table["rows"])
                f[LOOKUP_TABLE_REFRESHES].add_metric(lab, table["refreshes"])
                f[LOOKUP_TABLE_REFRESH_FAILURES].add_metric(lab, table["refresh_failures"])
        for name, wm in jm.watermarks().items():
            f[WATERMARK_LAG_S].add_metric([job, name], wall - wm / 1e9)
    return iter(f.values())


class MetricsCollector:
    """A prometheus-client collector of the jobs added to it (the newest run of each name).

    Examples
    --------
    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> registry = CollectorRegistry()
    >>> collector = MetricsCollector(registry)
    >>> collector.add(JobMetrics("doc-job"))
    >>> b'streaming_events_processed_total{job="doc-job",operator="source"} 0.0' in generate_latest(registry)
    True
    """

    def __init__(self, registry=None):
        self._jobs: Dict[str, JobMetrics] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def add(self, metrics: JobMetrics) -> None:
        """Export ``metrics`` (replacing an earlier run of a job with the same name)."""
        with self._lock:
            self._jobs.pop(metrics.job, None)
            self._jobs[metrics.job] = metrics

    def jobs(self) -> List[JobMetrics]:
        with self._lock:
            return list(self._jobs.values())

    def collect(self):
        return _families(self.jobs())

    def describe(self):
        return []        # families are built at scrape time: no describe-time collection
