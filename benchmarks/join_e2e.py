"""Issue 16's join targets end to end, through the public API, against DuckDB in the same run.

    python -m benchmarks.join_e2e                         # everything (about 15 minutes here)
    python -m benchmarks.join_e2e --only window --data uniform --runs 3
    python -m benchmarks.join_e2e --scale 0.1             # a tenth of the rows (quick)
    python -m benchmarks.join_e2e --record                # also write its part of RESULTS.md

Each join is written as a user writes it: ``env.from_arrow(table).with_watermark("ts", bound)``
for both sides, ``left.join(right, ...)`` (or ``join_asof``), ``.set_parallelism(p)``, a memory
sink, ``env.execute()``; timed from planning the job to the output held as one Arrow table.
DuckDB runs the same join as SQL over the same Arrow tables (its default threads: both cores)
to a materialised Arrow table.  The joins (data: ``benchmarks/join_e2e_data.py``):

- **window**: bids 10M x auctions 1M, ``auction = id``, 10 s tumbling windows, inner
  (target: at least 0.5x DuckDB); SQL joins on the windows (``ts // 10000``) and the keys;
- **interval**: 10M x 10M on ``key``, ``between=(0, 10 s)`` (target: at least 0.3x DuckDB);
  SQL: ``r.ts BETWEEN l.ts AND l.ts + 10000``;
- **asof** (reference): 5M orders x 1M rates on ``k``, ``ASOF LEFT JOIN``;
- **regular** (reference): 2M x 2M on ``k``, bounded inputs (every match once), the plain
  equi-join; and, for its state only, a 10 s ``ttl`` on event time.

Window and interval joins also run on *realistic* data (out of order by up to 2 s with the
watermark's bound at 2 s, Zipf-skewed string keys with a hot key, 5% null keys) next to the
same joins on uniform data, the ratio recorded.  Every output is compared in full with
DuckDB's once (every row, any order), and every timed run's output is checked (row count and
checksums).  Figures are medians of ``--runs`` rounds after a warm-up, the contenders
round-robin.  ``--rocksdb``: the window and interval joins also with
``StateBackend.rocksdb(path=)``, their speed against memory state.  ``--state``: an untimed
run per join and backend samples ``streaming_state_size_bytes`` (``handle.metrics()``) every
20 ms; reported against the bound the open windows or intervals allow (``state_bound``), and
the size after the inputs end, which must be 0.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import heliosdb as hdb
from heliosdb.metrics import STATE_SIZE_BYTES
from heliosdb.testing import assert_same_rows

from .join_e2e_data import DISORDER_MS, asof_data, interval_data, regular_data, window_data

TS_NS = pa.timestamp("ns", tz="UTC")
SECOND = 1000                               # ms


@dataclass
class Case:
    """One join: its data, the engine's pipeline, DuckDB's SQL, its target, its state bound."""

    name: str
    title: str
    data: Callable[[float, bool], Tuple[pa.Table, pa.Table]]
    join: Callable[[hdb.Stream, hdb.Stream], hdb.Stream]
    sql: str
    target: Optional[float] = None
    span_s: float = 10.0                    # event time a row waits at most in a steady stream
    ttl: bool = False                       # validated as a ttl join (see check_ttl)


WINDOW = hdb.TumblingWindow.of(timedelta(seconds=10))


def _operator(name: str) -> Callable[[pa.Table, pa.Table], pa.Table]:
    def drive(left: pa.Table, right: pa.Table) -> pa.Table:
        from . import joins

        return (joins.window_heliosdb if name == "window" else joins.interval_heliosdb)(left, right)
    return drive


#: The same joins with the operator driven directly on one thread (``benchmarks.joins``).
OPERATOR_ONLY = {"window": _operator("window"), "interval": _operator("interval")}
CASES: Dict[str, Case] = {c.name: c for c in [
    Case("window", "window join, 10 s tumbling", window_data,
         lambda a, b: a.join(b, left_on="auction", right_on="id", window=WINDOW),
         """SELECT (b.ts // 10000 * 10000) * 1000000 AS window_start,
                   (b.ts // 10000 * 10000 + 10000) * 1000000 AS window_end,
                   b.ts, b.auction, b.price, a.ts AS ts_right, a.id, a.reserve
            FROM l b JOIN r a ON b.auction = a.id AND b.ts // 10000 = a.ts // 10000""", 0.5),
    Case("interval", "interval join, 10 s", interval_data,
         lambda a, b: a.join(b, on="key", between=(timedelta(0), timedelta(seconds=10))),
         """SELECT l.ts, l.key, l.lv, r.ts AS ts_right, r.rv
            FROM l JOIN r ON l.key = r.key AND r.ts BETWEEN l.ts AND l.ts + 10000""", 0.3),
    Case("asof", "as-of join", asof_data, lambda a, b: a.join_asof(b, on="k"),
         """SELECT l.ts, l.k, l.lv, r.ts AS ts_right, r.rv
            FROM l ASOF LEFT JOIN r ON l.k = r.k AND l.ts >= r.ts""", span_s=0.0),
    Case("regular", "regular join (bounded inputs)", regular_data, lambda a, b: a.join(b, on="k"),
         "SELECT l.ts, l.k, l.lv, r.ts AS ts_right, r.rv FROM l JOIN r ON l.k = r.k", span_s=float("inf")),
    Case("regular_ttl", "regular join, ttl 10 s", regular_data,
         lambda a, b: a.join(b, on="k", ttl=timedelta(seconds=10)),
         "SELECT l.ts, l.k, l.lv, r.ts AS ts_right, r.rv FROM l JOIN r ON l.k = r.k "
         "AND abs(l.ts - r.ts) <= 10000", ttl=True),
]}


# -- running ---------------------------------------------------------------------------------------
@dataclass
class Run:
    table: pa.Table
    seconds: float
    samples: List[Tuple[float, int, int]] = field(default_factory=list)   # (s, events in, state bytes)
    final_state: int = -1


def pipeline(case: Case, left: pa.Table, right: pa.Table, parallelism: int, realistic: bool,
             rocksdb: Optional[str]) -> Tuple[hdb.StreamEnvironment, hdb.sinks.MemorySink]:
    backend = hdb.StateBackend.rocksdb(path=rocksdb) if rocksdb else hdb.StateBackend.memory()
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=parallelism, state_backend=backend))
    bound = timedelta(milliseconds=DISORDER_MS if realistic else 0)
    a = env.from_arrow(left).with_watermark("ts", bound)
    b = env.from_arrow(right).with_watermark("ts", bound)
    sink = hdb.sinks.memory()
    case.join(a, b).set_parallelism(parallelism).sink(sink)
    return env, sink


def heliosdb_run(case: Case, left: pa.Table, right: pa.Table, parallelism: int, realistic: bool,
                 rocksdb: Optional[str] = None, sample_s: Optional[float] = None) -> Run:
    """One run; with ``sample_s``, the job's state size sampled that often meanwhile."""
    t0 = time.perf_counter()
    env, sink = pipeline(case, left, right, parallelism, realistic, rocksdb)
    samples: List[Tuple[float, int, int]] = []
    if sample_s is None:
        result = env.execute(name=f"join-e2e-{case.name}")
    else:
        handle = env.execute_async(name=f"join-e2e-{case.name}", progress=False)
        while True:
            m = handle.metrics()
            samples.append((time.perf_counter() - t0, int(m["streaming_events_processed_total"]),
                            int(m[STATE_SIZE_BYTES])))
            if not m["running"]:
                break
            time.sleep(sample_s)
        result = handle.wait()
    out = sink.to_table().combine_chunks()
    return Run(out, time.perf_counter() - t0, samples, int(result.metrics[STATE_SIZE_BYTES]))


def duckdb_run(sql: str, left: pa.Table, right: pa.Table) -> pa.Table:
    import duckdb

    con = duckdb.connect()
    try:
        con.register("l", left)
        con.register("r", right)
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


# -- validation ------------------------------------------------------------------------------------
def as_ours(duck: pa.Table, ours: pa.Schema) -> pa.Table:
    """DuckDB's result in the engine's column types (window bounds: int64 ns -> timestamps)."""
    for c in ("window_start", "window_end"):
        if c in duck.column_names:
            i = duck.column_names.index(c)
            duck = duck.set_column(i, c, pc.cast(duck[c], pa.int64()).combine_chunks().view(TS_NS))
    return duck.cast(ours)


def checksum(t: pa.Table) -> Tuple:
    """Rows, and per column: nulls and a sum (ints and times exact, floats, string lengths)."""
    out: List = [t.num_rows]
    for f in t.schema:
        c = t[f.name]
        if pa.types.is_timestamp(f.type):
            c = pc.cast(c, pa.int64())
        elif pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            c = pc.utf8_length(c)
        s = pc.sum(c).as_py() or 0
        out.append((c.null_count, round(s, 6) if isinstance(s, float) else s))
    return tuple(out)


def same_checksum(a: Tuple, b: Tuple) -> bool:
    if a[0] != b[0]:
        return False
    for (na, sa), (nb, sb) in zip(a[1:], b[1:]):
        if na != nb or (isinstance(sb, float) and abs(sa - sb) > 1e-6 * max(1.0, abs(sb))) or (
                not isinstance(sb, float) and sa != sb):
            return False
    return True


def check_ttl(ours: pa.Table, duck: pa.Table) -> None:
    """A ttl join on event time emits every pair within the ttl (DuckDB's rows, exactly) and
    may emit pairs a little further apart (rows expire when the watermark passes, which lags
    the rows read): those must still be matches of the key."""
    dt = np.abs(ours["ts"].to_numpy() - ours["ts_right"].to_numpy())
    within = ours.filter(pa.array(dt <= 10 * SECOND))
    assert_same_rows(within, duck)


# -- state -----------------------------------------------------------------------------------------
def state_bound(case: Case, left: pa.Table, right: pa.Table, realistic: bool) -> float:
    """Bytes the join may hold on a steady stream (the rule of
    ``tests/integration/test_join_state.py``): for each side, the rows of the event time a
    row waits (the window or interval), the watermark's bound, its own batch's span of event
    time (read ahead of the other input, which is read first while behind) and three of the
    widest batch span (rows on their way to the join: a channel holds a batch), at their
    bytes per row.  Window joins keep the rows only; the others add 60 bytes a row of
    bookkeeping (per-row time, key id, chain, expiry, flags; the key index) and twice the
    room for array growth and rows dropped but not yet compacted; the as-of join also keeps
    the latest row of every key."""
    seconds = (int(pc.max(left["ts"]).as_py()) - int(pc.min(left["ts"]).as_py())) / 1000
    spans = [65_536 / (t.num_rows / seconds) for t in (left, right)]
    window = case.name == "window"
    total = 0.0
    for t, own in zip((left, right), spans):
        rate = t.num_rows / seconds
        wait = case.span_s + (DISORDER_MS / 1000 if realistic else 0) + own + 3 * max(spans)
        total += min(t.num_rows, rate * wait) * (t.nbytes / t.num_rows + (0 if window else 60))
    if case.name == "asof":
        total += pc.count_distinct(right["k"]).as_py() * (right.nbytes / right.num_rows + 60)
    return total if window else 2 * total


def describe_state(run: Run, bound: float, inputs: int, per_second: float) -> Dict[str, object]:
    """Peak and steady state of a sampled run (the middle 80% of the input read), its
    growth (the median state around 25% of the input read and around 75%), and the end; the
    peak also in seconds of input (``per_second``: bytes of both inputs per second of event
    time)."""
    s = run.samples
    mid = [b for _, e, b in s if 0.1 * inputs <= e <= 0.9 * inputs]

    def near(frac: float) -> int:
        """The median state over the samples within 10% of the input around ``frac``."""
        close = [b for _, e, b in s if abs(e - frac * inputs) <= 0.1 * inputs]
        return int(statistics.median(close)) if close else min(s, key=lambda x: abs(x[1] - frac * inputs))[2]
    peak = max((b for _, _, b in s), default=0)
    return {"samples": len(s), "peak": peak, "median": int(statistics.median(mid)) if mid else 0,
            "q1": near(0.25), "q3": near(0.75), "bound": int(bound), "final": run.final_state,
            "peak_s": peak / per_second,
            "last_sample": s[-1][2] if s else -1}


# -- the benchmark ---------------------------------------------------------------------------------
def interleaved(fns: Dict[str, Callable[[], object]], runs: int) -> Dict[str, List[float]]:
    """Each contender ``runs`` times round-robin (a warm-up first), the start rotating."""
    for fn in fns.values():
        fn()
    names = list(fns)
    times: Dict[str, List[float]] = {k: [] for k in names}
    for r in range(runs):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return times


def bench_case(case: Case, scale: float, realistic: bool, parallelisms: List[int], runs: int,
               rocksdb: bool, state: bool) -> dict:
    left, right = case.data(scale, realistic)
    duck = duckdb_run(case.sql, left, right)
    want = None
    tmp = tempfile.mkdtemp(prefix="join-e2e-rocks-")
    contenders: Dict[str, Callable[[], object]] = {}
    configs = [(p, None) for p in parallelisms] + ([(parallelisms[0], tmp)] if rocksdb else [])
    for p, rocks in configs:
        label = f"heliosdb p{p}" + (" rocksdb" if rocks else "")
        first = heliosdb_run(case, left, right, p, realistic, rocks)
        if case.ttl:
            check_ttl(first.table, as_ours(duck, first.table.schema))
        else:
            ours = first.table
            assert_same_rows(ours, as_ours(duck, ours.schema))     # every row, any order
            want = checksum(ours)
        assert first.final_state == 0, (label, first.final_state)

        def timed(p=p, rocks=rocks, label=label):
            run = heliosdb_run(case, left, right, p, realistic, rocks)
            if want is not None and not same_checksum(checksum(run.table), want):
                raise AssertionError(f"{case.name} {label}: output differs from the validated one")
            assert run.final_state == 0, (label, run.final_state)
        contenders[label] = timed
    if not realistic and case.name in OPERATOR_ONLY:
        # the operator driven directly, no job (benchmarks.joins): what end to end adds
        drive = OPERATOR_ONLY[case.name]
        got = drive(left, right)
        assert want is not None and same_checksum(checksum(got), want), "operator only: output differs"
        contenders["operator only, no job"] = lambda: drive(left, right)
    contenders["duckdb"] = lambda: duckdb_run(case.sql, left, right)
    times = interleaved(contenders, runs) if runs else {k: [float("nan")] for k in contenders}
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"case": case.name, "title": case.title, "data": "realistic" if realistic else "uniform",
           "left": left.num_rows, "right": right.num_rows, "rows": duck.num_rows, "median": med,
           "runs": times, "target": case.target, "state": {}}
    if state:
        for p, rocks in [(1, None), (1, tmp)] if case.name in ("window", "interval") else [(1, None)]:
            run = heliosdb_run(case, left, right, p, realistic, rocks, sample_s=0.02)
            per_second = (left.nbytes + right.nbytes) / 1000        # every stream spans 1,000 s
            res["state"]["rocksdb" if rocks else "memory"] = describe_state(
                run, state_bound(case, left, right, realistic), left.num_rows + right.num_rows, per_second)
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def report(r: dict) -> List[str]:
    duck = r["median"]["duckdb"]
    lines = [f"{r['title']} ({r['data']}): {r['left']:,} x {r['right']:,} rows -> {r['rows']:,} rows"]
    for k, v in r["median"].items():
        ratio = duck / v
        lines.append(f"  {k:<22} {v:8.3f} s  {ratio:5.2f}x DuckDB" + (
            f"  (target {r['target']}x)" if r["target"] and k.startswith("heliosdb") else ""))
    for backend, s in r["state"].items():
        lines.append(f"  state ({backend}): peak {s['peak']:,} B ({s['peak_s']:.1f} s of input), steady median "
                     f"{s['median']:,} B (25%: {s['q1']:,}, 75%: {s['q3']:,}), bound {s['bound']:,} B, "
                     f"after the end {s['final']:,} B ({s['samples']} samples)")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the issue's row counts")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--only", nargs="*", choices=list(CASES), default=None)
    p.add_argument("--data", choices=["uniform", "realistic", "both"], default="both")
    p.add_argument("--parallelism", type=int, nargs="*", default=[1, 2])
    p.add_argument("--rocksdb", action="store_true", help="window and interval joins with RocksDB state too")
    p.add_argument("--state", action="store_true", help="sample the state size in an untimed run")
    p.add_argument("--record", action="store_true", help="write the section of benchmarks/RESULTS.md")
    a = p.parse_args(argv)
    results = []
    for name in a.only or list(CASES):
        case = CASES[name]
        kinds = [False, True] if a.data == "both" else [a.data == "realistic"]
        if name not in ("window", "interval"):
            kinds = [False]
        for realistic in kinds:
            r = bench_case(case, a.scale, realistic, a.parallelism, a.runs,
                           a.rocksdb and name in ("window", "interval"), a.state)
            print("\n".join(report(r)), flush=True)
            results.append(r)
    if a.record:
        from .join_e2e_report import record

        record(results, a, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
