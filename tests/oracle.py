"""Plain-Python oracles for windowed and running keyed aggregation (test-only).

Everything here is written to be obviously correct, not fast: events are Python dicts in
arrival order, windows are lists of the events in them, aggregates are computed from those
lists with the engine's documented semantics (``heliosdb.expr``):

- ``count()`` counts rows; every other aggregate skips nulls and is null over no values;
- ``sum``/``mean`` are NaN if any value is NaN; ``min`` is NaN only if every value is; ``max``
  is NaN if any value is (NaN sorts above every number);
- ``var``/``stddev`` are the sample ones (n - 1), null below two values, NaN if a value is;
- ``first``/``last`` are the first/last non-null value in arrival order (NaN is a value);
- ``count_distinct`` is exact, with -0.0 == 0.0 and NaN == NaN;
- ``quantile(c, q)`` is within ``relative_accuracy`` of the value at rank ``floor(q * (n - 1))``
  of the sorted non-null, non-NaN values.

The event-time rule every oracle replays (``with_watermark`` and ``heliosdb.operators.window``):
event ``i`` sees the watermark ``max(t_0 .. t_{i-1}) - max_out_of_orderness`` (none before the
first event), however the events were cut into micro-batches.  Times are int64 ns.
"""
from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import pyarrow as pa
import pytest

MS = 1_000_000  # ns per ms

#: (output name, kind, column, q, relative_accuracy): every aggregate over the columns of
#: ``event_table``: v int64, f float64 (with NaN, -0.0), s string, all with nulls.
ALL_AGGS: Tuple[Tuple[str, str, Optional[str], Optional[float], float], ...] = (
    ("n", "count", None, None, 0.01),
    ("nv", "count", "v", None, 0.01),
    ("ns", "count", "s", None, 0.01),
    ("sv", "sum", "v", None, 0.01),
    ("sf", "sum", "f", None, 0.01),
    ("lov", "min", "v", None, 0.01),
    ("lof", "min", "f", None, 0.01),
    ("hiv", "max", "v", None, 0.01),
    ("hif", "max", "f", None, 0.01),
    ("mv", "mean", "v", None, 0.01),
    ("mf", "mean", "f", None, 0.01),
    ("varv", "var", "v", None, 0.01),
    ("varf", "var", "f", None, 0.01),
    ("sdv", "stddev", "v", None, 0.01),
    ("fv", "first", "v", None, 0.01),
    ("ff", "first", "f", None, 0.01),
    ("fs", "first", "s", None, 0.01),
    ("lv", "last", "v", None, 0.01),
    ("lf", "last", "f", None, 0.01),
    ("ls", "last", "s", None, 0.01),
    ("cdv", "count_distinct", "v", None, 0.01),
    ("cdf", "count_distinct", "f", None, 0.01),
    ("cds", "count_distinct", "s", None, 0.01),
    ("q50f", "quantile", "f", 0.5, 0.01),
    ("q0v", "quantile", "v", 0.0, 0.01),
    ("q90v", "quantile", "v", 0.9, 0.05),
    ("q100f", "quantile", "f", 1.0, 0.02),
)


def agg_specs(aggs=ALL_AGGS) -> Dict[str, "object"]:
    """``name -> hdb.AggSpec`` for ``aggregate(**...)``."""
    import heliosdb as hdb

    out = {}
    for name, kind, c, q, acc in aggs:
        if kind == "quantile":
            out[name] = hdb.quantile(c, q, acc)
        else:
            out[name] = hdb.AggSpec(kind, c)
    return out


# -------------------------------------------------------------------------------------------
# Aggregates over a list of events
# -------------------------------------------------------------------------------------------
def _isnan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def aggregate(kind: str, column: Optional[str], events: Sequence[dict], q: Optional[float] = None):
    """One aggregate over ``events`` (dicts, in arrival order)."""
    if kind == "count" and column is None:
        return len(events)
    vals = [e[column] for e in events if e[column] is not None]
    if kind == "count":
        return len(vals)
    if kind == "first":
        return vals[0] if vals else None
    if kind == "last":
        return vals[-1] if vals else None
    if kind == "count_distinct":
        return len({("nan",) if _isnan(x) else (x + 0.0 if isinstance(x, float) else x) for x in vals})
    if not vals:
        return None
    if kind == "sum":
        return math.fsum(vals) if isinstance(vals[0], float) else sum(vals)
    if kind == "min":
        nums = [x for x in vals if not _isnan(x)]
        return min(nums) if nums else math.nan
    if kind == "max":
        return math.nan if any(_isnan(x) for x in vals) else max(vals)
    if kind == "mean":
        return math.fsum(vals) / len(vals)
    if kind in ("var", "stddev"):
        if len(vals) < 2:
            return None
        if any(_isnan(x) for x in vals):
            return math.nan
        m = math.fsum(vals) / len(vals)
        var = math.fsum((x - m) ** 2 for x in vals) / (len(vals) - 1)
        return var if kind == "var" else math.sqrt(var)
    if kind == "quantile":
        nums = sorted(float(x) for x in vals if not _isnan(x))
        if not nums:
            return None
        return nums[math.floor(q * (len(nums) - 1))]
    raise AssertionError(kind)


def expected_row(events: Sequence[dict], aggs=ALL_AGGS) -> Dict[str, object]:
    return {name: aggregate(kind, c, events, q) for name, kind, c, q, _ in aggs}


def _spread(events: Sequence[dict], column: str) -> float:
    """The largest |value| of a column (absolute tolerance of float sums scales with it)."""
    return max([abs(float(e[column])) for e in events
                if e[column] is not None and not _isnan(e[column]) and not math.isinf(float(e[column]))],
               default=0.0)


def assert_row_matches(got: Dict[str, object], events: Sequence[dict], aggs=ALL_AGGS,
                       where: str = "") -> None:
    """The engine's aggregates in ``got`` equal the oracle's over ``events``."""
    for name, kind, c, q, acc in aggs:
        exp = aggregate(kind, c, events, q)
        val = got[name]
        msg = f"{where}: {name} = {kind}({c or ''}) got {val!r}, expected {exp!r} over {len(events)} events"
        if exp is None or val is None:
            assert val is None and exp is None, msg
        elif _isnan(exp):
            assert _isnan(val), msg
        elif kind == "quantile":
            assert not _isnan(val), msg
            assert abs(val - exp) <= acc * abs(exp) * (1 + 1e-9) + 1e-300, msg
        elif isinstance(exp, float) or isinstance(val, float):
            assert not _isnan(val), msg
            scale = _spread(events, c) if c else 1.0
            if kind in ("var", "stddev"):
                scale = scale * scale if kind == "var" else scale
            assert val == pytest.approx(exp, rel=1e-9, abs=1e-9 * max(scale, 1.0)), msg
            if kind in ("first", "last"):
                assert math.copysign(1.0, val) == math.copysign(1.0, exp), msg
        else:
            assert val == exp and type(val) is type(exp), msg


# -------------------------------------------------------------------------------------------
# Event time
# -------------------------------------------------------------------------------------------
def watermarks(times_ns: Sequence[int], bound_ns: int) -> List[Optional[int]]:
    """The watermark each event sees on arrival: max of the earlier times - bound (None first)."""
    out: List[Optional[int]] = []
    seen: Optional[int] = None
    for t in times_ns:
        out.append(None if seen is None else seen - bound_ns)
        seen = t if seen is None else max(seen, t)
    return out


def window_starts(t: int, size: int, slide: int) -> List[int]:
    """Starts of the hopping windows ``[s, s + size)``, s a multiple of ``slide``, holding t."""
    s = t - t % slide                 # Python's % floors: right before 1970 too
    out = []
    while s + size > t:
        out.append(s)
        s -= slide
    return sorted(out)


@dataclass
class Group:
    """One (window, key) of the oracle: its events in arrival order, and how many of them
    arrived before the watermark passed the window's end (the first emission)."""

    events: List[dict] = field(default_factory=list)
    on_time: int = 0


def hopping_oracle(events: Sequence[dict], times_ns: Sequence[int], keys: Sequence[str],
                   size: int, slide: int, bound: int, lateness: int):
    """Tumbling (slide == size) and sliding windows, replayed in arrival order.

    Returns ``(groups, late)``: ``{(start, key tuple): Group}`` and the arrival positions of
    the late events.  An event is late when every window holding it has ``end + lateness <=
    watermark``; otherwise it joins each of its windows still within the lateness
    (``end + lateness > watermark``); a window it joins whose end is already ``<= watermark``
    was emitted, so the event is an update of it.
    """
    groups: Dict[Tuple[int, tuple], Group] = defaultdict(Group)
    late: List[int] = []
    for i, (e, t, wm) in enumerate(zip(events, times_ns, watermarks(times_ns, bound))):
        starts = window_starts(t, size, slide)
        open_ = [s for s in starts if wm is None or s + size + lateness > wm]
        if not open_:
            late.append(i)
            continue
        key = tuple(e[k] for k in keys)
        for s in open_:
            g = groups[(s, key)]
            g.events.append(e)
            if wm is None or s + size > wm:
                g.on_time += 1
    return dict(groups), late


@dataclass
class Session:
    key: tuple
    start: int
    last: int
    events: List[Tuple[int, dict]] = field(default_factory=list)   # (arrival, event)

    def end(self, gap: int) -> int:
        return self.last + gap

    def ordered(self) -> List[dict]:
        return [e for _, e in sorted(self.events, key=lambda p: p[0])]


def session_oracle(events: Sequence[dict], times_ns: Sequence[int], keys: Sequence[str],
                   gap: int, bound: int, lateness: int):
    """Sessions replayed in arrival order; returns ``(sessions, late)``.

    Before each event, sessions with ``end + lateness <= watermark`` are closed and gone.
    The event joins every open session of its key its ``[t, t + gap)`` overlaps (merging
    them); if it overlaps none it is late when ``t + gap + lateness <= watermark``, and
    otherwise starts a session.  ``sessions`` are all sessions at the end (gone ones too).
    """
    open_: Dict[tuple, List[Session]] = defaultdict(list)
    gone: List[Session] = []
    late: List[int] = []
    for i, (e, t, wm) in enumerate(zip(events, times_ns, watermarks(times_ns, bound))):
        if wm is not None:
            for k in list(open_):
                keep = []
                for s in open_[k]:
                    (gone if s.end(gap) + lateness <= wm else keep).append(s)
                open_[k] = keep
        key = tuple(e[k] for k in keys)
        hits = [s for s in open_[key] if t < s.last + gap and s.start < t + gap]
        if not hits:
            if wm is not None and t + gap + lateness <= wm:
                late.append(i)
                continue
            open_[key].append(Session(key, t, t, [(i, e)]))
            continue
        target = hits[0]
        for s in hits[1:]:
            target.start = min(target.start, s.start)
            target.last = max(target.last, s.last)
            target.events += s.events
            open_[key].remove(s)
        target.start = min(target.start, t)
        target.last = max(target.last, t)
        target.events.append((i, e))
    return gone + [s for ss in open_.values() for s in ss], late


def running_oracle(events: Sequence[dict], keys: Sequence[str]) -> Dict[tuple, List[dict]]:
    """Each key's events in arrival order (running aggregates are prefixes of these)."""
    out: Dict[tuple, List[dict]] = defaultdict(list)
    for e in events:
        out[tuple(e[k] for k in keys)].append(e)
    return dict(out)


# -------------------------------------------------------------------------------------------
# Engine output
# -------------------------------------------------------------------------------------------
def output_rows(table: pa.Table) -> List[dict]:
    """Rows as dicts, window bounds as int64 ns, in emission order."""
    cols = {}
    for name in table.column_names:
        c = table.column(name)
        if name in ("window_start", "window_end"):
            c = c.cast(pa.int64())
        cols[name] = c.to_pylist()
    return [dict(zip(cols, vals)) for vals in zip(*cols.values())]


def ms_rows(table: pa.Table, *columns: str) -> List[tuple]:
    """``columns`` of each row in emission order, window bounds in ms (for timeline tests)."""
    out = []
    for r in output_rows(table):
        out.append(tuple(r[c] // MS if c in ("window_start", "window_end") else r[c] for c in columns))
    return out


def by_group(rows: Iterable[dict], keys: Sequence[str], window: bool = True) -> Dict[tuple, List[dict]]:
    """Rows per (window_start, window_end, *keys) (or per key), in emission order."""
    out: Dict[tuple, List[dict]] = defaultdict(list)
    for r in rows:
        g = tuple(r[k] for k in keys)
        out[(r["window_start"], r["window_end"]) + g if window else g].append(r)
    return dict(out)


# -------------------------------------------------------------------------------------------
# Running a window pipeline
# -------------------------------------------------------------------------------------------
_jobs = itertools.count()


def run_windows(table: pa.Table, keys: Sequence[str], spec, bound_ms: Optional[int] = None,
                lateness_ms: int = 0, batch_size: int = 65_536, parallelism: int = 1, aggs=ALL_AGGS,
                time: str = "ts"):
    """source -> [with_watermark(bound)] -> key_by -> window(spec) -> aggregate, with the late
    output sunk too; returns ``(out, late, metrics)``.  ``bound_ms=None``: no with_watermark
    (the window's own watermark, bound 0)."""
    import heliosdb as hdb

    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=parallelism))
    s = env.from_arrow(table).with_batch_size(batch_size)
    if bound_ms is not None:
        s = s.with_watermark(time, max_out_of_orderness=timedelta(milliseconds=bound_ms))
    w = (s.key_by(*keys).window(spec, time=time, allowed_lateness=timedelta(milliseconds=lateness_ms))
         .aggregate(**agg_specs(aggs)))
    out, late = hdb.sinks.memory(), hdb.sinks.memory()
    w.sink(out)
    w.late_output().sink(late)
    result = env.execute(name=f"oracle-job-{next(_jobs)}")
    return out.to_table(), late.to_table(), result.metrics
