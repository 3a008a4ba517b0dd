"""Session windows on disordered data vs the same data sorted by event time (issue 12).

    python -m benchmarks.session_disorder                 # 2M events, 3 rounds, both paths
    python -m benchmarks.session_disorder --n 500000 --rounds 1

2M events over 200 s of event time (10K events/s), ``user`` zipf(1.1) strings over 200K keys,
``v`` float64; sessions with a 500 ms gap, count/sum/min/max/mean/stddev/first/last/
count_distinct.  "jittered": each event's time is its nominal time +- ``--jitter`` ms
(uniform), watermark bound 1.6 x jitter, so about 20% of the events arrive behind the
watermark (printed); ``--late-share 0.01`` moves 1% of them 1-5 s back (late rows, and
updates of emitted sessions within ``--lateness``); "sorted": the same events sorted by time.  Each job runs with the run
path (``SessionAggregate.takes_runs``, one call per input batch) and with the per-piece path
(``takes_runs = False``: one ``process_batch`` per cut piece and one ``on_watermark`` per
cut, as before issue 12), in alternation so machine drift hits both alike.  Reported: wall
seconds and process CPU seconds (all threads; the machine is shared), median of the rounds,
and M events/s of the wall median.
"""
from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta

import numpy as np
import pyarrow as pa


def make_data(n: int, keys: int, jitter_ms: int, late_share: float = 0.0, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    nominal = 1_700_000_000_000 + (np.arange(n) * 200_000) // n          # 200 s of event time
    ts = nominal + rng.integers(-jitter_ms, jitter_ms + 1, n)
    late = rng.random(n) < late_share                  # far behind: 1 to 5 s
    ts[late] -= rng.integers(1_000, 5_000, int(late.sum()))
    kid = (rng.zipf(1.1, n) - 1) % keys
    users = pa.array([f"user-{i}" for i in range(keys)], pa.string())
    return pa.table({"ts": pa.array(ts, pa.int64()), "user": users.take(pa.array(kid)),
                     "v": pa.array(rng.random(n))})


def behind_share(ts: np.ndarray, bound_ms: int) -> float:
    prev_max = np.maximum.accumulate(np.concatenate([[np.iinfo(np.int64).min + bound_ms], ts[:-1]]))
    return float((ts < prev_max - bound_ms).mean())


def run(table: pa.Table, bound_ms: int, lateness_ms: int, runs: bool):
    import heliosdb as hdb
    from heliosdb.operators.session import SessionAggregate

    saved = SessionAggregate.takes_runs
    SessionAggregate.takes_runs = runs
    try:
        env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1, batch_size=65_536))
        w = (env.from_arrow(table)
             .with_watermark("ts", max_out_of_orderness=timedelta(milliseconds=bound_ms))
             .key_by("user")
             .window(hdb.SessionWindow.with_gap(timedelta(milliseconds=500)), time="ts",
                     allowed_lateness=timedelta(milliseconds=lateness_ms))
             .aggregate(n=hdb.count(), total=hdb.sum("v"), lo=hdb.min("v"), hi=hdb.max("v"),
                        mean=hdb.mean("v"), sd=hdb.stddev("v"), first=hdb.first("v"),
                        last=hdb.last("v"), distinct=hdb.count_distinct("v")))
        out, late = hdb.sinks.memory(), hdb.sinks.memory()
        w.sink(out)
        w.late_output().sink(late)
        c0, t0 = time.process_time(), time.perf_counter()
        env.execute(name=f"session-disorder-{time.time_ns()}")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        SessionAggregate.takes_runs = saved
    return wall, cpu, out.to_table(), late.to_table()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--jitter", type=int, default=400)
    ap.add_argument("--lateness", type=int, nargs="*", default=[0, 1000])
    ap.add_argument("--late-share", type=float, default=0.0,
                    help="share of events moved 1-5 s back (late, or updates within lateness)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--paths", default="run,piece")
    a = ap.parse_args()
    bound = int(1.6 * a.jitter)
    jittered = make_data(a.n, a.keys, a.jitter, a.late_share)
    ts = jittered["ts"].to_numpy()
    order = np.argsort(ts, kind="stable")
    ordered = jittered.take(pa.array(order))
    print(f"N={a.n:,} keys={a.keys:,} jitter +-{a.jitter} ms, bound {bound} ms: "
          f"{behind_share(ts, bound):.1%} of the events behind the watermark")
    paths = a.paths.split(",")
    for lateness in a.lateness:
        times = {}
        results = {}
        for _ in range(a.rounds):
            for data_name, data in (("jittered", jittered), ("sorted", ordered)):
                for path in paths:
                    wall, cpu, out, late = run(data, bound, lateness, path == "run")
                    times.setdefault((data_name, path), []).append((wall, cpu))
                    results[(data_name, path)] = (out.num_rows, late.num_rows, out)
        for data_name in ("jittered", "sorted"):
            if len(paths) == 2:
                a_, b_ = results[(data_name, "run")], results[(data_name, "piece")]
                same = a_[:2] == b_[:2] and a_[2].equals(b_[2])
                print(f"lateness {lateness} ms, {data_name}: output equal between paths: {same} "
                      f"({a_[0]:,} rows, {a_[1]:,} late)")
            else:
                r = results[(data_name, paths[0])]
                print(f"lateness {lateness} ms, {data_name}: {r[0]:,} rows, {r[1]:,} late")
        for (data_name, path), tw in sorted(times.items()):
            wall = statistics.median(w for w, _ in tw)
            cpu = statistics.median(c for _, c in tw)
            print(f"lateness {lateness:5d} ms  {data_name:8s} {path:5s}  wall {wall:7.2f} s  "
                  f"cpu {cpu:7.2f} s  {a.n / wall / 1e6:6.2f} M events/s")


if __name__ == "__main__":
    main()
