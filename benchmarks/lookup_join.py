"""Lookup join benchmark (issue 16): N events enriched from a table of M rows, against DuckDB's
hash join of the same Arrow tables in the same run.

    python -m benchmarks.lookup_join                   # N = 20M events, M = 1M rows
    python -m benchmarks.lookup_join --events 2000000 --rows 100000 --runs 3    # smaller

Data (seeded): events ``ts`` int64, ``user_id`` int64 uniform over ``0 .. 1.01 M`` (about 1%
of the events have no user: an inner join drops them), ``value`` float64; the table ``id``
int64 (0 .. M-1, shuffled), ``name`` string, ``segment`` int32, ``score`` float64.  Both
engines compute ``SELECT e.*, t.name, t.segment, t.score FROM events e JOIN users t ON
e.user_id = t.id`` to a materialised Arrow table; HeliosDB's time includes planning the job
and building the table's index.  Each output is validated (row count, and a checksum: sums
of ``user_id``, ``segment``, ``ts`` and the names' lengths, exact; of ``score`` and
``value``, to 1e-9) against numpy's answer before any time is reported.  Figures are medians
of ``--runs`` runs after a warm-up, the engines interleaved.  ``--string-keys`` joins on the
names instead (a string key).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import heliosdb as hdb

from .w1 import interleaved


def make_data(n: int, m: int, seed: int = 7, string_keys: bool = False):
    rng = np.random.default_rng(seed)
    ids = rng.permutation(m).astype(np.int64)
    names = pa.array([f"user-{i:07d}" for i in ids])
    users = pa.table({"id": ids, "name": names, "segment": rng.integers(0, 50, m, dtype=np.int32),
                      "score": rng.random(m)})
    user_id = rng.integers(0, int(m * 1.01), n, dtype=np.int64)
    events = pa.table({"ts": 1_700_000_000_000 + np.arange(n, dtype=np.int64) // 100,
                       "user_id": user_id, "value": rng.random(n)})
    if string_keys:
        # the events carry the user's name (same misses): a string join key
        known = user_id < m
        by_id = np.empty(m, dtype=object)
        by_id[ids] = names.to_numpy(zero_copy_only=False)
        labels = np.where(known, by_id[np.minimum(user_id, m - 1)], "nobody")
        events = events.append_column("user", pa.array(labels, pa.string()))
    return events, users


def checksum(t: pa.Table) -> Dict[str, float]:
    return {"rows": t.num_rows,
            "user_id": int(pc.sum(t["user_id"]).as_py() or 0),
            "segment": int(pc.sum(t["segment"]).as_py() or 0),
            "ts": int(pc.sum(t["ts"]).as_py() or 0),
            "name_len": int(pc.sum(pc.utf8_length(t["name"])).as_py() or 0),
            "score": float(pc.sum(t["score"]).as_py() or 0.0),
            "value": float(pc.sum(t["value"]).as_py() or 0.0)}


def expected(events: pa.Table, users: pa.Table) -> Dict[str, float]:
    """The checksum of the join, computed with numpy (the table's ids are 0 .. M-1)."""
    m = users.num_rows
    uid = events["user_id"].to_numpy()
    hit = uid < m
    pos = np.empty(m, dtype=np.int64)
    pos[users["id"].to_numpy()] = np.arange(m)
    rows = pos[uid[hit]]
    name_len = pc.utf8_length(users["name"]).to_numpy()
    return {"rows": int(hit.sum()), "user_id": int(uid[hit].sum()),
            "segment": int(users["segment"].to_numpy()[rows].astype(np.int64).sum()),
            "ts": int(events["ts"].to_numpy()[hit].sum()), "name_len": int(name_len[rows].sum()),
            "score": float(users["score"].to_numpy()[rows].sum()),
            "value": float(events["value"].to_numpy()[hit].sum())}


def validate(name: str, got: Dict[str, float], want: Dict[str, float]) -> None:
    for k, v in want.items():
        ok = abs(got[k] - v) <= 1e-9 * max(1.0, abs(v)) if isinstance(v, float) else got[k] == v
        if not ok:
            raise AssertionError(f"{name}: {k} is {got[k]!r}, expected {v!r}")


def heliosdb_join(events: pa.Table, users: pa.Table, parallelism: int, batch_size: int,
                  string_keys: bool) -> pa.Table:
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=parallelism, batch_size=batch_size))
    keys = dict(left_on="user", right_on="name") if string_keys else dict(left_on="user_id", right_on="id")
    out = env.from_arrow(events).join(hdb.table(users), **keys).collect()
    if string_keys:       # the same columns as the integer join (the key is kept once)
        out = out.append_column("name", out["user"])
    return out


def duckdb_join(events: pa.Table, users: pa.Table, threads: int, string_keys: bool) -> pa.Table:
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.register("events", events)
    con.register("users", users)
    on = "e.user = t.name" if string_keys else "e.user_id = t.id"
    try:
        return con.sql(f"SELECT e.*, t.name, t.segment, t.score FROM events e JOIN users t ON {on}").to_arrow_table()
    finally:
        con.close()


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000_000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="DuckDB's threads, HeliosDB's replicas")
    ap.add_argument("--batch-size", type=int, default=65_536)
    ap.add_argument("--string-keys", action="store_true")
    args = ap.parse_args(argv)
    n, m = args.events, args.rows
    t0 = time.perf_counter()
    events, users = make_data(n, m, string_keys=args.string_keys)
    want = expected(events, users)
    print(f"data: {n:,} events, {m:,} table rows ({time.perf_counter() - t0:.1f} s to generate); "
          f"{want['rows']:,} rows join")
    engines: Dict[str, Callable[[], pa.Table]] = {
        f"HeliosDB (lookup join, {args.threads} replicas)":
            lambda: heliosdb_join(events, users, args.threads, args.batch_size, args.string_keys),
        "HeliosDB (lookup join, 1 replica)":
            lambda: heliosdb_join(events, users, 1, args.batch_size, args.string_keys),
        f"DuckDB (hash join, {args.threads} threads)":
            lambda: duckdb_join(events, users, args.threads, args.string_keys),
    }
    for name, fn in engines.items():
        validate(name, checksum(fn()), want)
    print("outputs valid: rows and checksums equal numpy's for every engine")
    times = interleaved(engines, args.runs)
    duck = statistics.median(times[list(engines)[-1]])
    print(f"{'engine':<40} {'median s':>9} {'events/s':>14} {'vs DuckDB':>10}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<40} {med:>9.3f} {n / med:>14,.0f} {duck / med:>9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
