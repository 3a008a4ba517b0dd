"""Backpressure and straggler diagnosis: which operator holds a pipeline back, and what to do.

Every task (thread) splits its time into *busy*, *blocked* (waiting for room in a full output
channel: backpressure) and *idle* (waiting for input; for a source paced at a declared rate, such
as ``generate(rate=)``, the part spent keeping that rate is *paced*).  Between two samples of
those counters:

- the pipeline is **backpressured** when some task is blocked more than 10% of the time;
- the **bottleneck** is the first task downstream of the blocked ones that is busy most of the
  time (downstream of a task that is itself blocked, the search goes on), and within it the
  operator with the most busy time;
- a source busy most of the time **bounds throughput**, unless it is **paced** (it waits at
  least :data:`PACED_THRESHOLD` of the time to keep its rate: it keeps up, and would go faster);
- a **straggler** is a parallel subtask whose throughput (events per busy second) is under half
  its siblings' median; uneven events per subtask is reported as key **skew**.

The samples come from a job in this process (:meth:`JobHandle.diagnose`) or from two scrapes of a
running engine's ``/metrics`` (``heliosdb diagnose``), so a dashboard user and a notebook user get
the same answer.  Each finding carries the user guide's remedies.
"""
from __future__ import annotations

import html
import logging
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Collection, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .display import percent
from .metrics import BACKPRESSURE_THRESHOLD, Sample, task_fractions
from .operators.base import LateCount

if TYPE_CHECKING:  # pragma: no cover
    from .metrics import JobMetrics

#: A task busy at least this fraction of the time is saturated ("busy most of the time").
BUSY_THRESHOLD = 0.5
#: A source that waits at least this fraction of the time to keep its declared rate is paced:
#: it keeps up with its rate, so it does not bound throughput.
PACED_THRESHOLD = 0.05
#: A subtask slower than this fraction of its siblings' median throughput is a straggler.
STRAGGLER_RATIO = 0.5
#: End-to-end p99 above this (ms) is reported: the user guide's latency target.
LATENCY_P99_TARGET_MS = 200.0

REMEDIES = {
    "bottleneck": [
        "raise the bottleneck's parallelism: .set_parallelism(n) on it, or StreamingConfig(parallelism=n)",
        "make its per-batch work cheaper: write Python callables (map_batches, process, map) as "
        "expressions (filter / with_columns / select) so they fuse into one compiled kernel",
        "use larger micro-batches (StreamingConfig(batch_size=)): per-batch overhead is paid less often",
        "buffer_size absorbs bursts, not a sustained overload: do not raise it to fix a bottleneck",
    ],
    "sink": [
        "the sink is the bottleneck: write fewer, larger batches, or to a faster store",
    ],
    "window": [
        "window state work grows with keys per window: raise parallelism (it splits keys), or use "
        "fewer keys or shorter windows",
    ],
    "source": [
        "the source bounds throughput: read more in parallel (split the input, more partitions), or "
        "raise batch_size so each poll brings more",
    ],
    "straggler": [
        "a subtask slower than its siblings on the same work: look for a hot key with costly rows, "
        "and for a contended or slower CPU; rebalance keys (key by a finer column)",
    ],
    "skew": [
        "key skew: one subtask gets most events; salt hot keys (a random suffix, aggregate twice) or "
        "key by a finer column so the hash exchange spreads them",
    ],
    "latency": [
        "end-to-end latency over target: lower batch_timeout (a batch waits at most that long to fill) "
        "and batch_size; remove backpressure first (queued batches add latency)",
    ],
    "late": [
        "late events: raise with_watermark(max_out_of_orderness=) to the real disorder of the source, "
        "or read them from late_output()",
    ],
    "watermark": [
        "one split holds the watermark back (its windows close late and state grows): if it is "
        "idle, set with_watermark(idle_timeout=) so it drops out; if it is slow, look at its producer",
    ],
}


def _late_finding(c: LateCount) -> "Finding":
    """The "late" finding of one late output (an operator's, or one side of a join's): how
    many, kept or dropped, and the remedy naming the operator (and side) and its count."""
    op, n, out = c.operator, c.events, c.output
    where = f"read from its {out}" if c.read else f"dropped: sink its {out} to keep them"
    if c.side is None:
        message = (f"{n:,} late events at {op!r}, sent to its {out}" if c.read else
                   f"{n:,} late events dropped by {op!r} (nothing reads its {out})")
        remedy = (f"{op!r} found {n:,} late events ({where}); to have them counted in its windows, raise "
                  "with_watermark(max_out_of_orderness=) to the real disorder of the source, or pass "
                  f"allowed_lateness= to the window() of {op!r}")
    else:
        message = (f"{n:,} late {c.side} rows at {op!r}, sent to its {out}" if c.read else
                   f"{n:,} late {c.side} rows dropped by {op!r} (nothing reads its {out})")
        remedy = (f"{op!r} found {n:,} late rows on its {c.side} input ({where}); to have them joined, raise "
                  f"with_watermark(max_out_of_orderness=) on the {c.side} input to its real disorder (the "
                  "join's watermark is the least of both inputs')")
    return Finding("late", message, [remedy])


def log_late(job: str, counts: Sequence[LateCount], log: logging.Logger) -> None:
    """At a job's end, one line per late output with late events (per operator, and per side
    of a join): INFO when they were kept (its late output is read), WARNING when dropped.

    >>> import logging, sys
    >>> log = logging.getLogger("doc-late"); log.addHandler(logging.StreamHandler(sys.stdout))
    >>> log_late("j", [LateCount("join-4", "right", 3, False)], log)
    job 'j': step 'join-4': 3 late right rows dropped (nothing reads its late_output('right'); sink it to keep them)
    """
    for c in counts:
        what = "events" if c.side is None else f"{c.side} rows"
        extra = {"job": job, "operator": c.operator}
        if c.read:
            log.info("job %r: step %r: %s late %s, sent to its %s", job, c.operator, f"{c.events:,}", what,
                     c.output, extra=extra)
        else:
            log.warning("job %r: step %r: %s late %s dropped (nothing reads its %s; sink it to keep them)",
                        job, c.operator, f"{c.events:,}", what, c.output, extra=extra)


@dataclass
class TaskInfo:
    """Where a task sits: its operators (in order), the tasks it feeds, its parallel group."""

    operators: List[str]
    downstream: List[str]
    group: str = ""


@dataclass
class TaskReport:
    """One task's share of the interval, and its throughput."""

    name: str
    operators: List[str]
    group: str
    busy: float
    blocked: float
    idle: float
    events: int
    events_per_s: float
    events_per_busy_s: Optional[float]
    #: The part of ``idle`` a source spent keeping its declared rate.
    paced: float = 0.0


@dataclass
class Finding:
    """One observation, with what to do about it."""

    kind: str
    message: str
    remedies: List[str] = field(default_factory=list)


@dataclass
class Diagnosis:
    """What :func:`diagnose` found; ``print()`` it, or view it in a notebook.

    ``bottleneck`` is the operator holding the pipeline back (None when not backpressured),
    ``bottleneck_task`` the task (thread) it runs in.
    """

    job: str
    interval_s: float
    backpressured: bool
    bottleneck: Optional[str]
    bottleneck_task: Optional[str]
    tasks: List[TaskReport]
    operators: Dict[str, float]
    stragglers: List[str]
    findings: List[Finding]

    def __str__(self) -> str:
        lines = [f"job {self.job!r}, over the last {self.interval_s:.1f} s:"]
        for f in self.findings:
            lines.append(f"- {f.message}")
            lines += [f"    remedy: {r}" for r in f.remedies]
        lines.append("")
        paced = any(t.paced for t in self.tasks)
        lines.append(f"{'task':32s} {'busy':>6s} {'blocked':>8s} {'idle':>6s} "
                     + (f"{'paced':>6s} " if paced else "") + f"{'events/s':>12s}  operators")
        for t in self.tasks:
            lines.append(f"{t.name[:32]:32s} {percent(t.busy):>6s} {percent(t.blocked):>8s} "
                         f"{percent(t.idle):>6s} " + (f"{percent(t.paced):>6s} " if paced else "")
                         + f"{t.events_per_s:12,.0f}  {', '.join(t.operators) or '(source)'}")
        if self.operators:
            lines.append("")
            lines.append("operator busy share: " + ", ".join(
                f"{op} {percent(v)}" for op, v in sorted(self.operators.items(), key=lambda kv: -kv[1])))
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        e = html.escape
        items = "".join(
            f"<li>{e(f.message)}" + ("<ul>" + "".join(f"<li><i>{e(r)}</i></li>" for r in f.remedies)
                                     + "</ul>" if f.remedies else "") + "</li>"
            for f in self.findings)
        paced = any(t.paced for t in self.tasks)
        rows = "".join(
            f"<tr><td>{e(t.name)}</td><td>{percent(t.busy)}</td><td>{percent(t.blocked)}</td>"
            f"<td>{percent(t.idle)}</td>" + (f"<td>{percent(t.paced)}</td>" if paced else "")
            + f"<td>{t.events_per_s:,.0f}</td><td>{e(', '.join(t.operators) or '(source)')}</td></tr>"
            for t in self.tasks)
        return (f"<div><b>job {e(self.job)}</b>, over the last {self.interval_s:.1f} s<ul>{items}</ul>"
                "<table><tr><th>task</th><th>busy</th><th>blocked</th><th>idle</th>"
                + ("<th>paced</th>" if paced else "") + "<th>events/s</th>"
                f"<th>operators</th></tr>{rows}</table></div>")


def _find_bottleneck(frac, topology: Dict[str, TaskInfo], blocked: List[str]) -> Optional[str]:
    """The busiest task that a blocked task feeds and that is not blocked itself (busy most of
    the time, or only in bursts: the caller says which).  A blocked task fed by another is in
    ``blocked`` too, so the search goes past it to what it feeds."""
    seen = set(blocked)
    candidates = [d for b in blocked for d in topology[b].downstream if d in topology and d not in seen]
    return max(candidates, key=lambda t: frac[t]["busy"], default=None)


def diagnose(job: str, then: Sample, now: Sample, topology: Dict[str, TaskInfo],
             kinds: Optional[Dict[str, str]] = None, latency_p99_ms: Optional[float] = None,
             late_events: Union[int, Mapping[str, int]] = 0, late_kept: Collection[str] = (),
             holding_splits: Optional[Mapping[str, str]] = None,
             late_counts: Sequence[LateCount] = ()) -> Diagnosis:
    """Diagnose a job from two samples of its counters (``then`` earlier than ``now``).

    ``kinds`` maps operator names to their kind (for kind-specific remedies).
    ``late_events`` is the job's late events, per operator (a mapping: each operator with
    late events is a finding of its own) or in all (a number); ``late_kept`` names the
    operators whose ``late_output()`` is read (their late events are kept, not dropped).
    ``late_counts`` (``operators.base.LateCount``, from a running job) says the same per late
    output, so a join's sides are findings of their own; given, it replaces those two.
    ``holding_splits`` maps an operator (a watermark assigner) to the input split that holds
    its watermark back.

    Examples
    --------
    A source blocked on a task whose one operator is busy 95% of the time:

    >>> from heliosdb.metrics import Sample
    >>> s = 1_000_000_000
    >>> topo = {"src": TaskInfo([], ["slow"]), "slow": TaskInfo(["slow"], ["sink"]),
    ...         "sink": TaskInfo(["sink"], [])}
    >>> then = Sample(0, 0, {n: (0, 0, 0, 0, 0) for n in topo}, {})
    >>> now = Sample(s, 1000, {"src": (s, s // 10, 9 * s // 10, 0, 1000),
    ...                        "slow": (s, 95 * s // 100, 0, 5 * s // 100, 1000),
    ...                        "sink": (s, s // 100, 0, 99 * s // 100, 1000)},
    ...              {"slow": (95 * s // 100, 1000), "sink": (s // 100, 1000)})
    >>> d = diagnose("doc", then, now, topo)
    >>> d.backpressured, d.bottleneck
    (True, 'slow')

    Late events, per operator:

    >>> d = diagnose("doc", then, now, topo, late_events={"window-3": 1234})
    >>> [f.message for f in d.findings if f.kind == "late"]
    ["1,234 late events dropped by 'window-3' (nothing reads its late_output())"]

    A join's sides, each kept or dropped:

    >>> from heliosdb.operators.base import LateCount
    >>> d = diagnose("doc", then, now, topo, late_counts=[LateCount("join-4", "left", 7, True),
    ...                                                   LateCount("join-4", "right", 3, False)])
    >>> for f in d.findings:
    ...     if f.kind == "late": print(f.message)
    7 late left rows at 'join-4', sent to its late_output('left')
    3 late right rows dropped by 'join-4' (nothing reads its late_output('right'))
    """
    kinds = kinds or {}
    zero = {"busy": 0.0, "blocked": 0.0, "idle": 0.0, "paced": 0.0, "alive_s": 0.0, "rows": 0}
    frac = {n: task_fractions(then, now).get(n, zero) for n in topology}
    interval_s = max((now.t_ns - then.t_ns) / 1e9, 0.0) or max((f["alive_s"] for f in frac.values()), default=0.0)
    tasks = []
    for name, info in topology.items():
        f = frac[name]
        busy, blocked, idle, alive_s, rows = f["busy"], f["blocked"], f["idle"], f["alive_s"], f["rows"]
        busy_s = busy * alive_s
        tasks.append(TaskReport(name, info.operators, info.group, busy, blocked, idle, rows,
                                rows / alive_s if alive_s else 0.0,
                                rows / busy_s if busy_s > 1e-3 else None, f.get("paced", 0.0)))
    op_busy = {}
    for info in topology.values():
        for op in info.operators:
            b1, _ = now.ops.get(op, (0, 0))
            b0, _ = then.ops.get(op, (0, 0))
            op_busy[op] = max(b1 - b0, 0)
    alive_of = {n: f["alive_s"] for n, f in frac.items()}
    op_share = {op: op_busy[op] / 1e9 / alive_of[t] for t, info in topology.items()
                for op in info.operators if alive_of.get(t)}

    findings: List[Finding] = []
    blocked = [t.name for t in tasks if t.blocked > BACKPRESSURE_THRESHOLD]
    backpressured = bool(blocked)
    bottleneck_task = _find_bottleneck(frac, topology, blocked) if blocked else None
    bottleneck = None
    if bottleneck_task is not None:
        ops = topology[bottleneck_task].operators
        bottleneck = max(ops, key=lambda o: op_busy.get(o, 0)) if ops else bottleneck_task
        t = next(t for t in tasks if t.name == bottleneck_task)
        remedies = list(REMEDIES["bottleneck"])
        kind = kinds.get(bottleneck, "")
        if kind.endswith("sink"):
            remedies = REMEDIES["sink"] + remedies
        elif kind == "window" or kind.startswith("window"):
            remedies = REMEDIES["window"] + remedies
        how = ("the bottleneck is" if t.busy >= BUSY_THRESHOLD else
               "in bursts (no task downstream is busy most of the time); the busiest downstream is")
        findings.append(Finding(
            "bottleneck",
            f"backpressured: {', '.join(blocked)} blocked on full channels; {how} operator "
            f"{bottleneck!r} (task {bottleneck_task!r} busy {t.busy:.0%}, "
            f"{op_share.get(bottleneck, 0.0):.0%} of the time in {bottleneck!r})", remedies))
    elif backpressured:
        findings.append(Finding("backpressure", f"backpressured: {', '.join(blocked)} blocked on "
                                "full channels, but no task downstream is busy", REMEDIES["bottleneck"]))
    else:
        busiest = max(tasks, key=lambda t: t.busy, default=None)
        src = [t for t in tasks if not t.operators]
        paced = next((t for t in src if t.paced >= PACED_THRESHOLD), None)
        if paced is not None:
            others = max((t for t in tasks if t is not paced), key=lambda t: t.busy, default=None)
            rest = f" (busiest task: {others.name!r} at {percent(others.busy)})" if others else ""
            findings.append(Finding("paced", f"no backpressure; the source {paced.name!r} is paced at "
                                    f"its rate ({paced.events_per_s:,.0f} events/s, waiting "
                                    f"{percent(paced.paced)} of the time to keep it): it does not bound "
                                    f"throughput{rest}"))
        elif busiest is not None and busiest in src and busiest.busy >= BUSY_THRESHOLD:
            findings.append(Finding("source", f"no backpressure; the source {busiest.name!r} is "
                                    f"busy {percent(busiest.busy)}: it bounds throughput", REMEDIES["source"]))
        elif busiest is not None:
            findings.append(Finding("ok", f"no backpressure: every task keeps up (busiest: "
                                    f"{busiest.name!r} at {percent(busiest.busy)})"))

    stragglers: List[str] = []
    groups: Dict[str, List[TaskReport]] = {}
    for t in tasks:
        if t.group:
            groups.setdefault(t.group, []).append(t)
    for gname, members in groups.items():
        if len(members) < 2:
            continue
        for t in members:
            others = [o.events_per_busy_s for o in members if o is not t and o.events_per_busy_s]
            if t.events_per_busy_s is not None and others and \
                    t.events_per_busy_s < STRAGGLER_RATIO * statistics.median(others):
                stragglers.append(t.name)
                findings.append(Finding(
                    "straggler", f"straggler: {t.name!r} processes {t.events_per_busy_s:,.0f} events "
                    f"per busy second, under half its siblings' median ({statistics.median(others):,.0f})",
                    REMEDIES["straggler"]))
        events = [t.events for t in members]
        med = statistics.median(events)
        top = max(members, key=lambda t: t.events)
        if med > 0 and top.events > 2 * med:
            findings.append(Finding(
                "skew", f"skew in {gname!r}: {top.name!r} got {top.events:,} events, the median "
                f"subtask {med:,.0f}", REMEDIES["skew"]))
    if latency_p99_ms is not None and latency_p99_ms > LATENCY_P99_TARGET_MS:
        findings.append(Finding("latency", f"p99 end-to-end latency {latency_p99_ms:,.1f} ms is over "
                                f"the {LATENCY_P99_TARGET_MS:g} ms target", REMEDIES["latency"]))
    counts = list(late_counts)
    if not counts and isinstance(late_events, Mapping):
        counts = [LateCount(op, None, int(n), op in late_kept) for op, n in late_events.items() if n]
    if counts:
        findings += [_late_finding(c) for c in counts if c.events]
    elif late_events and not isinstance(late_events, Mapping):
        findings.append(Finding("late", f"{late_events:,} late events", REMEDIES["late"]))
    for op, split in (holding_splits or {}).items():
        findings.append(Finding("watermark", f"the watermark of {op!r} is held back by split "
                                f"{split!r}", REMEDIES["watermark"]))
    return Diagnosis(job, interval_s, backpressured, bottleneck, bottleneck_task, tasks,
                     op_share, stragglers, findings)


def diagnose_job(jm: "JobMetrics", then: Sample, now: Sample) -> Diagnosis:
    """:func:`diagnose` for a job of this process, from two of its samples."""
    topology = {n: TaskInfo(list(t.operators), list(t.downstream), t.group)
                for n, t in list(jm.tasks.items())}
    kinds = {n: s.kind for n, s in list(jm.operators.items())}
    p99 = jm.latency.quantile(0.99)
    return diagnose(jm.job, then, now, topology, kinds, None if p99 != p99 else p99,
                    holding_splits=jm.holding_splits(), late_counts=jm.late_counts())


# -- from Prometheus exposition text --------------------------------------------------------------
def samples_from_text(text: str, t_ns: int) -> Dict[str, Tuple[Sample, Dict[str, TaskInfo], Dict[str, float]]]:
    """Per job in a ``/metrics`` text: (sample, topology, extras) rebuilt from the task and
    operator counters; extras hold ``latency_buckets``, ``late_events`` (the job's) and
    ``late_by_operator``."""
    from prometheus_client.parser import text_string_to_metric_families

    from . import metrics as M

    info: Dict[str, Dict[str, TaskInfo]] = {}
    task_t: Dict[str, Dict[str, List[float]]] = {}
    op_busy: Dict[str, Dict[str, float]] = {}
    op_in: Dict[str, Dict[str, float]] = {}
    events: Dict[str, float] = {}
    late: Dict[str, float] = {}
    late_ops: Dict[str, Dict[str, float]] = {}
    lat: Dict[str, List[Tuple[float, float]]] = {}
    slot = {M.TASK_BUSY_S: 0, M.TASK_BLOCKED_S: 1, M.TASK_IDLE_S: 2}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            lab, job = s.labels, s.labels.get("job", "")
            if s.name == M.TASK_INFO:
                ops = [o for o in lab.get("operators", "").split(",") if o]
                down = [d for d in lab.get("downstream", "").split(",") if d]
                info.setdefault(job, {})[lab["task"]] = TaskInfo(ops, down, lab.get("group", ""))
            elif s.name in slot:
                task_t.setdefault(job, {}).setdefault(lab["task"], [0.0, 0.0, 0.0])[slot[s.name]] = s.value
            elif s.name == M.OPERATOR_BUSY_S:
                op_busy.setdefault(job, {})[lab["operator"]] = s.value
            elif s.name == M.OPERATOR_EVENTS_IN:
                op_in.setdefault(job, {})[lab["operator"]] = s.value
            elif s.name == M.EVENTS_PROCESSED:
                events[job] = events.get(job, 0.0) + s.value
            elif s.name == M.LATE_EVENTS:
                late[job] = late.get(job, 0.0) + s.value
                late_ops.setdefault(job, {})[lab.get("operator", "")] = s.value
            elif s.name == M.LATENCY_MS + "_bucket":
                lat.setdefault(job, []).append((float(lab["le"]), s.value))
    out = {}
    for job, topo in info.items():
        tasks = {}
        for name, ti in topo.items():
            busy, blocked, idle = task_t.get(job, {}).get(name, [0.0, 0.0, 0.0])
            rows = events.get(job, 0.0) if not ti.operators else op_in.get(job, {}).get(ti.operators[0], 0.0)
            ns = [int(v * 1e9) for v in (busy + blocked + idle, busy, blocked, idle)]
            tasks[name] = (*ns, int(rows))
        ops = {o: (int(b * 1e9), int(op_in.get(job, {}).get(o, 0))) for o, b in op_busy.get(job, {}).items()}
        sample = Sample(t_ns, int(events.get(job, 0)), tasks, ops)
        out[job] = (sample, topo, {"late_events": late.get(job, 0.0),
                                   "late_by_operator": late_ops.get(job, {}),
                                   "latency_buckets": sorted(lat.get(job, []))})
    return out


def bucket_quantile(q: float, then: List[Tuple[float, float]], now: List[Tuple[float, float]]) -> Optional[float]:
    """The upper bound of the bucket holding quantile ``q`` of the observations between two
    scrapes of a cumulative histogram ((le, count) pairs, +Inf last); None without any.

    >>> then = [(10.0, 5), (100.0, 5), (float("inf"), 5)]
    >>> now = [(10.0, 95), (100.0, 104), (float("inf"), 105)]     # 100 new: 90 <= 10, 9 <= 100
    >>> bucket_quantile(0.5, then, now), bucket_quantile(0.95, then, now), bucket_quantile(0.999, then, now)
    (10.0, 100.0, inf)
    """
    before = dict(then)
    diff = [(le, c - before.get(le, 0.0)) for le, c in now]
    if not diff or diff[-1][1] <= 0:
        return None
    target = q * diff[-1][1]
    for le, c in diff:
        if c >= target:
            return le
    return diff[-1][0]
