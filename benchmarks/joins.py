"""Issue 16's join targets, against DuckDB on the same data in the same run.

    python -m benchmarks.joins                  # 10M x 1M window join, 10M x 10M interval join
    python -m benchmarks.joins --scale 0.1      # a tenth of the rows (quick)
    python -m benchmarks.joins --record         # also write the section of benchmarks/RESULTS.md

- **Window join**: bids (10M rows) and auctions (1M rows) over 1,000 s of event time, joined
  on ``auction = id`` in 10 s tumbling windows (inner): DuckDB runs the same join as SQL over
  the windowed inputs (``ts // 10000`` on both sides).  Target: at least 0.5x DuckDB.
- **Interval join**: two streams of 10M rows over 1,000 s, joined on ``key`` with the right
  row within ``[left.ts, left.ts + 10 s]`` (``between=(0, 10 s)``); DuckDB: ``BETWEEN``.
  Target: at least 0.3x DuckDB.

The join operator is driven directly, without a job (``benchmarks.join_e2e`` runs the same
joins through the public API, as a user writes them, and also times this driver in the same
run): batches of 65,536 rows of each side alternate in event-time order, with the
watermark (both sides in order: their minimum time) after each pair, and every output batch
is kept; the time covers feeding, joining and concatenating the output into one table.
DuckDB's time covers its query with the result materialised as an Arrow table.  Each result
is validated against DuckDB's (row count, and checksums over the joined columns).  Each
contender runs ``--runs`` times round-robin after a warm-up; medians are reported.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MS = 1_000_000
T0 = 1_700_000_000_000          # ms
BATCH = 65_536


def stream(n: int, seconds: int, keys: int, seed: int, key: str, value: str) -> pa.Table:
    """``n`` rows over ``seconds`` of event time in order (int64 epoch ms), uniform keys."""
    rng = np.random.default_rng(seed)
    ts = T0 + (np.arange(n, dtype=np.int64) * (seconds * 1000)) // n
    return pa.table({"ts": ts, key: rng.integers(0, keys, n, dtype=np.int64), value: rng.random(n)})


def drive(op, left: pa.Table, right: pa.Table) -> pa.Table:
    """Alternate batches of both sides in event-time order, a watermark after each pair."""
    lb = left.to_batches(BATCH)
    rts = right["ts"].to_numpy()
    rb = right.combine_chunks().to_batches()[0]
    out: List[pa.RecordBatch] = []
    r0 = 0
    for b in lb:
        out += [x for x in op.process_side(0, b) if isinstance(x, pa.RecordBatch)]
        end = int(b["ts"][-1].as_py())
        r1 = int(np.searchsorted(rts, end, side="right"))
        for a in range(r0, r1, BATCH):
            out += [x for x in op.process_side(1, rb.slice(a, min(BATCH, r1 - a))) if isinstance(x, pa.RecordBatch)]
        r0 = r1
        out += [x for x in op.on_watermark(end * MS) if isinstance(x, pa.RecordBatch)]
    if r0 < rb.num_rows:
        out += [x for x in op.process_side(1, rb.slice(r0)) if isinstance(x, pa.RecordBatch)]
    out += [x for x in op.close() if isinstance(x, pa.RecordBatch)]
    assert op.state_size_bytes() == 0, op.state_size_bytes()
    return pa.Table.from_batches(out, op.output_schema)


# -- window join -------------------------------------------------------------------------------------
def window_case(scale: float) -> Tuple[pa.Table, pa.Table]:
    bids = stream(int(10_000_000 * scale), 1000, 100_000, 1, "auction", "price")
    auctions = stream(int(1_000_000 * scale), 1000, 100_000, 2, "id", "reserve")
    return bids, auctions


def window_heliosdb(bids: pa.Table, auctions: pa.Table) -> pa.Table:
    import heliosdb as hdb
    from heliosdb.operators.join import JoinSpec, make_join

    spec = JoinSpec("window", "auction", "id", how="inner", window=hdb.TumblingWindow.of(10),
                    left_time="ts", right_time="ts")
    return drive(make_join(spec, bids.schema, auctions.schema, name="window-join"), bids, auctions)


WINDOW_SQL = """
SELECT (b.ts // 10000) * 10000 AS window_start, b.ts, b.auction, b.price, a.ts AS ts_right, a.id, a.reserve
FROM bids b JOIN auctions a ON b.auction = a.id AND b.ts // 10000 = a.ts // 10000
"""


def window_checks(t: pa.Table, duck: bool) -> Tuple[int, float, float]:
    """(rows, sum(price * reserve), sum(window_start - ts in ms))."""
    ws = t["window_start"]
    ws = ws.to_numpy() if duck else ws.cast(pa.int64()).to_numpy() // MS
    return (t.num_rows, float(pc.sum(pc.multiply(t["price"], t["reserve"])).as_py() or 0.0),
            float(np.sum(t["ts"].to_numpy() - ws)))


# -- interval join -----------------------------------------------------------------------------------
def interval_case(scale: float) -> Tuple[pa.Table, pa.Table]:
    n = int(10_000_000 * scale)
    return stream(n, 1000, 1_000_000, 3, "key", "lv"), stream(n, 1000, 1_000_000, 4, "key", "rv")


def interval_heliosdb(left: pa.Table, right: pa.Table) -> pa.Table:
    from heliosdb.operators.join import JoinSpec, make_join

    spec = JoinSpec("interval", "key", "key", how="inner", coalesce_keys=True, between=(0, 10_000 * MS),
                    left_time="ts", right_time="ts")
    return drive(make_join(spec, left.schema, right.schema, name="interval-join"), left, right)


INTERVAL_SQL = """
SELECT l.ts, l.key, l.lv, r.ts AS ts_right, r.rv
FROM lhs l JOIN rhs r ON l.key = r.key AND r.ts BETWEEN l.ts AND l.ts + 10000
"""


def interval_checks(t: pa.Table, duck: bool) -> Tuple[int, float, float]:
    """(rows, sum(lv * rv), sum(ts_right - ts))."""
    return (t.num_rows, float(pc.sum(pc.multiply(t["lv"], t["rv"])).as_py() or 0.0),
            float(np.sum(t["ts_right"].to_numpy() - t["ts"].to_numpy())))


# -- running -------------------------------------------------------------------------------------------
def duckdb_query(sql: str, tables: Dict[str, pa.Table]) -> Callable[[], pa.Table]:
    import duckdb

    con = duckdb.connect()
    for name, t in tables.items():
        con.register(name, t)

    def run() -> pa.Table:
        return con.sql(sql).to_arrow_table()
    return run


def same(a: Tuple[int, float, float], b: Tuple[int, float, float]) -> bool:
    return a[0] == b[0] and all(abs(x - y) <= 1e-9 * max(1.0, abs(y)) for x, y in zip(a[1:], b[1:]))


def measure(fns: Dict[str, Callable[[], pa.Table]], runs: int) -> Tuple[Dict[str, float], Dict[str, pa.Table]]:
    """Warm up each, then ``runs`` round-robin rounds; median seconds and the last results."""
    last = {name: fn() for name, fn in fns.items()}
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            last[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}, last


def case(title: str, make, ours, sql, names, checks, runs: int, target: float) -> dict:
    left, right = make()
    fns = {"heliosdb": lambda: ours(left, right),
           "duckdb": duckdb_query(sql, {names[0]: left, names[1]: right})}
    med, last = measure(fns, runs)
    got, want = checks(last["heliosdb"], False), checks(last["duckdb"], True)
    assert same(got, want), (title, got, want)
    ratio = med["duckdb"] / med["heliosdb"]
    print(f"{title}: {left.num_rows:,} x {right.num_rows:,} rows -> {got[0]:,} rows; heliosdb "
          f"{med['heliosdb']:.3f} s, duckdb {med['duckdb']:.3f} s: {ratio:.2f}x DuckDB (target {target}x)")
    return {"title": title, "left": left.num_rows, "right": right.num_rows, "rows": got[0], "ours": med["heliosdb"],
            "duckdb": med["duckdb"], "ratio": ratio, "target": target}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the issue's row counts")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--only", choices=["window", "interval"], default=None)
    p.add_argument("--record", action="store_true", help="write the section of benchmarks/RESULTS.md")
    a = p.parse_args(argv)
    results = []
    if a.only in (None, "window"):
        results.append(case("window join, 10 s tumbling", lambda: window_case(a.scale), window_heliosdb, WINDOW_SQL,
                             ("bids", "auctions"), window_checks, a.runs, 0.5))
    if a.only in (None, "interval"):
        results.append(case("interval join, 10 s", lambda: interval_case(a.scale), interval_heliosdb, INTERVAL_SQL,
                             ("lhs", "rhs"), interval_checks, a.runs, 0.3))
    if a.record:
        from .results import heading, write_section

        cmd = "python -m benchmarks.joins" + (f" --scale {a.scale}" if a.scale != 1 else "")
        lines = heading("Joins (issue 16)", cmd, ", the operator driven directly on one thread (no job yet; "
                        "DuckDB uses both cores)")
        lines[-1] += (f" Median of {a.runs} round-robin runs after a warm-up; each result validated against "
                      "DuckDB's (rows and checksums). State after the inputs end: 0 bytes (asserted).")
        lines += ["", "| join | rows in | rows out | heliosdb s | DuckDB s | x DuckDB | target |",
                  "|---|---|---|---|---|---|---|"]
        for r in results:
            lines.append(f"| {r['title']} | {r['left']:,} x {r['right']:,} | {r['rows']:,} | {r['ours']:.3f} | "
                         f"{r['duckdb']:.3f} | {r['ratio']:.2f} | {r['target']} |")
        write_section("joins", "\n".join(lines))


if __name__ == "__main__":
    main()
