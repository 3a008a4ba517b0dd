"""Driving a join operator at operator level, and the oracles it is compared with (test-only).

A *schedule* is what arrives at the join, in order: ``("L", rows)`` / ``("R", rows)`` batches
of either side and ``("W", t_ms)`` watermarks (non-decreasing).  Rows carry a unique id per
side (``lv`` / ``rv``), so every output row names the input rows it came from.

Each input row is annotated with what it saw: its arrival position ``seq`` and the watermark
``wm`` when it arrived.  The oracles then decide, from those annotations alone, which rows are
late and which pairs the join must give, and DuckDB computes the join itself in SQL (window
joins over windowed inputs, interval joins with BETWEEN, as-of joins with ASOF JOIN, outer
joins with DuckDB's null padding).  Session windows are assigned by the plain-Python
:func:`assign_sessions` (the streaming rule, in arrival order), then joined in SQL.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import duckdb
import numpy as np
import pyarrow as pa
from hypothesis import strategies as st

from heliosdb.operators.base import SideOutput, Watermark
from heliosdb.operators.exchange import HashPartitioner

MS = 1_000_000


def examples(n: int) -> int:
    """``n`` hypothesis examples, times ``HELIOS_JOIN_EXAMPLES`` (e.g. 20 for a long hunt)."""
    return n * int(os.environ.get("HELIOS_JOIN_EXAMPLES", "1"))
WM_MIN = -(2**63)
KEY1 = [0, 1, 2, None]
KEY2 = ["a", "b", "ü", None]


def schemas(coalesce: bool) -> Tuple[pa.Schema, pa.Schema, Tuple[str, ...], Tuple[str, ...]]:
    """(left schema, right schema, left_on, right_on): two key columns of different types on
    each side, the right side's with other widths (int32, large_string)."""
    left = pa.schema([("ts", pa.int64()), ("k1", pa.int64()), ("k2", pa.string()), ("lv", pa.int64())])
    names = ("k1", "k2") if coalesce else ("rk1", "rk2")
    right = pa.schema([("ts", pa.int64()), (names[0], pa.int32()), (names[1], pa.large_string()),
                       ("rv", pa.int64())])
    return left, right, ("k1", "k2"), names


@st.composite
def schedules(draw, max_steps: int = 14, spread: int = 40, unique_right_times: bool = False,
              null_keys: bool = True):
    """Interleaved batches of both sides and watermarks (ms); rows are drawn around the
    current watermark, some behind it (late or out of order), with duplicate and null keys."""
    steps: List[tuple] = []
    wm = draw(st.integers(-5, 5))
    ids = [0, 0]
    used = set()
    k1s = KEY1 if null_keys else KEY1[:-1]
    k2s = KEY2 if null_keys else KEY2[:-1]
    for _ in range(draw(st.integers(1, max_steps))):
        what = draw(st.sampled_from(["L", "R", "W", "L", "R"]))
        if what == "W":
            wm += draw(st.integers(0, 12))
            steps.append(("W", wm))
            continue
        side = 0 if what == "L" else 1
        n = draw(st.integers(0, 5))
        rows = []
        for _ in range(n):
            t = wm + draw(st.integers(-6, spread))
            k = (draw(st.sampled_from(k1s)), draw(st.sampled_from(k2s)))
            if side == 1 and unique_right_times:
                if (k, t) in used:
                    continue
                used.add((k, t))
            rows.append((t, k[0], k[1], ids[side]))
            ids[side] += 1
        steps.append((what, rows))
    return steps


def batch(side: int, rows, left: pa.Schema, right: pa.Schema) -> pa.RecordBatch:
    schema = left if side == 0 else right
    cols = list(zip(*rows)) if rows else [[] for _ in schema]
    return pa.RecordBatch.from_arrays([pa.array(list(c), f.type) for c, f in zip(cols, schema)], schema=schema)


def annotate(steps) -> Dict[str, list]:
    """Every input row as a dict with its side, arrival ``seq`` and watermark ``wm`` (ms;
    None before the first)."""
    wm: Optional[int] = None
    out: Dict[str, list] = {"L": [], "R": []}
    for seq, (what, val) in enumerate(steps):
        if what == "W":
            wm = val if wm is None else max(wm, val)
            continue
        for t, k1, k2, i in val:
            out[what].append({"ts": t, "k1": k1, "k2": k2, "id": i, "seq": seq, "wm": wm})
    return out


# -------------------------------------------------------------------------------------------
# Running an operator
# -------------------------------------------------------------------------------------------
class Run:
    """What an operator gave: output rows (as tuples of the output schema), late rows by
    side (ids), watermarks forwarded."""

    def __init__(self):
        self.rows: List[tuple] = []
        self.late: Dict[str, List[int]] = {"late_left": [], "late_right": []}
        self.marks: List[int] = []

    def take(self, items) -> None:
        for it in items:
            if isinstance(it, Watermark):
                self.marks.append(it.t)
            elif isinstance(it, SideOutput):
                col = "lv" if it.tag == "late_left" else "rv"
                self.late[it.tag] += it.batch.column(col).to_pylist()
            else:
                self.rows += [tuple(r.values()) for r in it.to_pylist()]


def drive(op, steps, left: pa.Schema, right: pa.Schema, run: Optional[Run] = None,
          route: Optional[Callable[[int, pa.RecordBatch], pa.RecordBatch]] = None) -> Run:
    """Feed ``steps`` to ``op`` (``route`` narrows each batch to what this subtask gets)."""
    run = run or Run()
    for what, val in steps:
        if what == "W":
            run.take(op.on_watermark(val * MS))
        else:
            side = 0 if what == "L" else 1
            b = batch(side, val, left, right)
            if route is not None:
                b = route(side, b)
            run.take(op.process_side(side, b))
    return run


def finish(op, run: Run) -> Run:
    run.take(op.close())
    return run


def subtask_router(spec, left: pa.Schema, right: pa.Schema, n: int, i: int):
    """Routing as a hash exchange on each side's keys would do, and the restore selector on
    the snapshot tables (keyed by the left names)."""
    parts = (HashPartitioner(left, list(spec.left_on), n, "x"), HashPartitioner(right, list(spec.right_on), n, "x"))

    def route(side, b):
        return b.filter(pa.array(parts[side].partitions(b) == i))

    def select(table):
        return HashPartitioner(table.schema, list(spec.left_on), n, "x").partitions(table) == i

    return route, select


# -------------------------------------------------------------------------------------------
# Oracles
# -------------------------------------------------------------------------------------------
def _table(rows: List[dict], extra: Sequence[str] = ()) -> pa.Table:
    cols = ["ts", "k1", "k2", "id", "seq", "wm"] + list(extra)
    types = {"k2": pa.string()}
    return pa.table({c: pa.array([r[c] for r in rows], types.get(c, pa.int64())) for c in cols})


_SQL_HOW = {"inner": "INNER", "left": "LEFT", "right": "RIGHT", "full": "FULL OUTER"}


def sql_pairs(L: List[dict], R: List[dict], how: str, on: str, extra: Sequence[str] = (),
              cols: Sequence[str] = ()) -> List[tuple]:
    """``(l id, r id, *extra)`` of ``L {how} JOIN R ON keys AND {on}`` in DuckDB (None for the
    padded side); ``extra`` names expressions over ``l`` and ``r`` (e.g. window bounds),
    ``cols`` the rows' columns besides the usual ones (e.g. ``ws``, ``we``)."""
    con = duckdb.connect()
    con.register("l_rows", _table(L, cols))
    con.register("r_rows", _table(R, cols))
    sel = ", ".join(["l.id", "r.id"] + list(extra))
    q = (f"SELECT {sel} FROM l_rows l {_SQL_HOW[how]} JOIN r_rows r "
         f"ON l.k1 = r.k1 AND l.k2 = r.k2 AND ({on})")
    return [tuple(r) for r in con.execute(q).fetchall()]


def expected_rows(pairs: List[tuple], L: List[dict], R: List[dict], spec, window: bool) -> List[tuple]:
    """Full output rows of ``(l id, r id[, ws, we])`` pairs, in the output schema's order."""
    lb = {r["id"]: r for r in L}
    rb = {r["id"]: r for r in R}
    out = []
    for p in pairs:
        l = lb.get(p[0]) if p[0] is not None else None
        r = rb.get(p[1]) if p[1] is not None else None
        row: list = []
        if window:
            row += [p[2], p[3]]
        if spec.coalesce_keys:
            k1 = l["k1"] if l else (r["k1"] if spec.outer_right else None)
            k2 = l["k2"] if l else (r["k2"] if spec.outer_right else None)
            row += [l["ts"] if l else None, k1, k2, l["id"] if l else None,
                    r["ts"] if r else None, r["id"] if r else None]
        else:
            row += [l["ts"] if l else None, l["k1"] if l else None, l["k2"] if l else None, l["id"] if l else None,
                    r["ts"] if r else None, r["k1"] if r else None, r["k2"] if r else None, r["id"] if r else None]
        out.append(tuple(row))
    return out


def normalize(rows: List[tuple], window: bool) -> List[tuple]:
    """Output rows with window bounds as ns ints, sorted (None first)."""
    out = []
    for r in rows:
        r = list(r)
        if window:
            r[0], r[1] = _ns(r[0]), _ns(r[1])
        out.append(tuple(r))
    return sorted(out, key=lambda r: tuple((v is not None, v) for v in r))


def _ns(v) -> int:
    if isinstance(v, int):
        return v
    return int(pa.scalar(v, pa.timestamp("ns", tz="UTC")).cast(pa.int64()).as_py())


def pane_windows(t_ms: int, size_ms: int, slide_ms: int) -> List[Tuple[int, int]]:
    """(start, end) ms of the sliding windows (tumbling: slide == size) holding ``t``."""
    last = t_ms - t_ms % slide_ms
    out = []
    s = last
    while s > t_ms - size_ms:
        out.append((s, s + size_ms))
        s -= slide_ms
    return sorted(out)


def assign_sessions(steps, gap_ms: int) -> Tuple[Dict[Tuple[str, int], Tuple[int, int]], set]:
    """The streaming session rule in arrival order (both sides together, per key; null keys
    group like any other): ``{(side, id): (start, end)}`` in ms, and the late rows."""
    open_: Dict[tuple, List[dict]] = {}
    wm: Optional[int] = None
    final: Dict[Tuple[str, int], dict] = {}
    late = set()
    for what, val in steps:
        if what == "W":
            wm = val if wm is None else max(wm, val)
            for k in list(open_):
                open_[k] = [s for s in open_[k] if s["last"] + gap_ms > wm]
            continue
        for t, k1, k2, i in val:
            key = (k1, k2)
            sess = open_.setdefault(key, [])
            hit = [s for s in sess if t < s["last"] + gap_ms and s["start"] < t + gap_ms]
            if not hit:
                if wm is not None and t + gap_ms <= wm:
                    late.add((what, i))
                    continue
                s = {"start": t, "last": t, "rows": []}
                sess.append(s)
            else:
                s = hit[0]
                for other in hit[1:]:
                    s["start"] = min(s["start"], other["start"])
                    s["last"] = max(s["last"], other["last"])
                    s["rows"] += other["rows"]
                    sess.remove(other)
                s["start"], s["last"] = min(s["start"], t), max(s["last"], t)
            s["rows"].append((what, i))
            for r in s["rows"]:
                final[r] = s
    return {r: (s["start"], s["last"] + gap_ms) for r, s in final.items()}, late
