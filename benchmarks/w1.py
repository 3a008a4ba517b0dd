"""W1 throughput benchmark and the measurements issue #2 asks for; records benchmarks/RESULTS.md.

    python -m benchmarks.w1            # everything, N = 20M (about 5 minutes on 2 cores)
    python -m benchmarks.w1 --quick    # N = 2M, fewer runs (a smoke test of the script)

Every figure is a median of several runs after a warm-up, measured in this run, next to the
references measured in the same run (DuckDB SQL over the same Arrow table with 2 threads,
Polars lazy, a hand-fused single-pass Numba loop).  Outputs are validated against the numpy
reference before any time is reported.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Callable, Dict, List

from . import w1data
from .results import heading, write_section

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def timed_runs(fn: Callable, runs: int, warmup: int = 1) -> List[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def interleaved(fns: Dict[str, Callable], runs: int) -> Dict[str, List[float]]:
    """Time each function ``runs`` times, round-robin (after one warm-up each), so drift in
    the machine's speed during the benchmark affects every contender alike; each round starts
    one contender later than the one before, so none always runs first (right after another's
    garbage) or last."""
    for fn in fns.values():
        fn()
    names = list(fns)
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for r in range(runs):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return times


def _py(code: str, env: Dict[str, str]) -> str:
    """Run ``code`` in a fresh interpreter; return its stdout (raises on failure)."""
    full = dict(os.environ)
    full.pop("NUMBA_CACHE_DIR", None)     # set by our own import of heliosdb: the child picks its own
    full.update(env)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full,
                         cwd=str(ROOT), timeout=900)
    if res.returncode != 0:
        raise RuntimeError(f"subprocess failed:\n{res.stderr[-3000:]}")
    return res.stdout.strip().splitlines()[-1]


def throughput(table, n: int, runs: int, ref) -> Dict[str, float]:
    engines = {
        "HeliosDB": lambda: w1data.heliosdb_w1(table),
        "DuckDB (SQL, 2 threads)": lambda: w1data.duckdb_w1(table, threads=2),
        "Polars (lazy)": lambda: w1data.polars_w1(table),
        "hand-fused Numba loop": lambda: w1data.numba_w1(table),
    }
    for fn in engines.values():
        w1data.validate(fn(), ref)
    res = {}
    for name, times in interleaved(engines, runs).items():
        res[name] = n / statistics.median(times)
        print(f"  {name:28s} {res[name] / 1e6:7.2f} M events/s  (runs: {', '.join(f'{t:.3f}' for t in times)} s)")
    return res


@contextlib.contextmanager
def fusion(on: bool):
    """Plan with operator fusion on or off (``HELIOSDB_FUSION``) inside the block."""
    os.environ["HELIOSDB_FUSION"] = "1" if on else "0"
    try:
        yield
    finally:
        os.environ.pop("HELIOSDB_FUSION", None)


def fusion_gain(table, n: int, runs: int, ref) -> Dict[str, float]:
    def run(fn, on: bool):
        with fusion(on):
            return fn(table)

    w1data.validate(run(w1data.heliosdb_w1, False), ref)
    assert run(w1data.heliosdb_stateless, True) == run(w1data.heliosdb_stateless, False)
    times = interleaved({
        "fused": lambda: run(w1data.heliosdb_w1, True),
        "unfused": lambda: run(w1data.heliosdb_w1, False),
        "stateless fused": lambda: run(w1data.heliosdb_stateless, True),
        "stateless unfused": lambda: run(w1data.heliosdb_stateless, False),
    }, runs)
    res = {k: n / statistics.median(v) for k, v in times.items()}
    for k, v in res.items():
        print(f"  {k:18s} {v / 1e6:7.2f} M events/s")
    return res


def batching_gain(table, n: int, runs: int) -> Dict[int, float]:
    sizes = (1024, 4096, 16384, 65536, 262144)
    fns = {bs: (lambda bs=bs: w1data.heliosdb_w1(table, batch_size=bs)) for bs in sizes}
    res = {bs: n / statistics.median(t) for bs, t in interleaved(fns, runs).items()}
    for bs, eps in res.items():
        print(f"  batch_size {bs:>7,}: {eps / 1e6:7.2f} M events/s")
    return res


def parquet_source(table, n: int, runs: int, ref) -> float:
    import pyarrow.parquet as pq

    folder = tempfile.mkdtemp(prefix="w1-parquet-")
    per = max(n // 20, 1)
    for i in range(0, n, per):
        pq.write_table(table.slice(i, per), f"{folder}/part-{i // per:02d}.parquet", compression="zstd")

    def run():
        return w1data.heliosdb_w1_parquet(folder + "/*.parquet")

    w1data.validate(run(), ref)
    eps = n / statistics.median(timed_runs(run, runs))
    print(f"  from 20 zstd Parquet files: {eps / 1e6:7.2f} M events/s")
    return eps


_STARTUP = textwrap.dedent("""
    import time; t0 = time.perf_counter()
    import heliosdb as hdb
    from heliosdb import col
    from benchmarks import w1data
    t = w1data.make_table(10_000)
    w1data.heliosdb_w1(t)
    print(time.perf_counter() - t0)
""")


def compile_time() -> Dict[str, float]:
    cache = tempfile.mkdtemp(prefix="helios-cache-")
    env = {"HELIOSDB_CACHE_DIR": cache}
    cold = float(_py(_STARTUP, env))
    warm = statistics.median(float(_py(_STARTUP, env)) for _ in range(3))
    nocache = float(_py(_STARTUP, {"HELIOSDB_CACHE_DIR": cache, "HELIOSDB_NUMBA_CACHE": "0"}))
    print(f"  import + compile + first W1 (10k rows): cold cache {cold:.2f} s, warm cache {warm:.2f} s, "
          f"cache off {nocache:.2f} s")
    return {"cold": cold, "warm": warm, "nocache": nocache}


_LATENCY = textwrap.dedent("""
    from datetime import timedelta
    import json
    import heliosdb as hdb
    from heliosdb import col
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_timeout=timedelta(milliseconds=10)))
    (env.generate(rate=100_000, duration=timedelta(seconds=10)).filter(col("value") > 0.2)
        .with_columns(v2=col("value") * 2.0).sink(hdb.sinks.callback(lambda b: None)))
    m = env.execute("w2-stateless").metrics
    print(json.dumps([m["latency_p50_ms"], m["latency_p99_ms"], m["events_per_s"]]))
""")


def latency(runs: int) -> Dict[str, float]:
    res = [json.loads(_py(_LATENCY, {})) for _ in range(runs)]
    p50 = statistics.median(r[0] for r in res)
    p99 = statistics.median(r[1] for r in res)
    print(f"  100K events/s, batch_timeout 10 ms: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
          f"(p99 of each run: {', '.join(f'{r[1]:.2f}' for r in res)})")
    return {"p50": p50, "p99": p99, "runs": [r[1] for r in res]}


_MEMORY = textwrap.dedent("""
    import gc, json, os, threading, time
    from benchmarks import w1data
    PAGE = os.sysconf("SC_PAGE_SIZE")
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    w1data.heliosdb_w1(w1data.make_table(100_000))      # compile outside the measurement
    gc.collect()
    base = rss()
    t = w1data.make_table({n})
    gc.collect()
    before = rss()
    peak = [before]
    stop = threading.Event()
    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)
    th = threading.Thread(target=sample); th.start()
    out = w1data.heliosdb_w1(t)
    stop.set(); th.join()
    print(json.dumps([base, before, max(peak[0], rss()), t.nbytes, out.nbytes]))
""")


def memory(n: int) -> Dict[str, float]:
    """Peak resident memory during W1 (sampled every 2 ms) above the baseline before the table."""
    base, before, peak, tbytes, obytes = json.loads(_py(_MEMORY.format(n=n), {}))
    ratio = (peak - base) / tbytes
    print(f"  input table {tbytes / 2**20:,.0f} MiB; peak RSS above the pre-table baseline "
          f"{(peak - base) / 2**20:,.0f} MiB = {ratio:.2f}x the table (after building the table: "
          f"{(before - base) / 2**20:,.0f} MiB)")
    return {"table_mib": tbytes / 2**20, "peak_mib": (peak - base) / 2**20, "ratio": ratio,
            "before_mib": (before - base) / 2**20}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 2M and fewer runs (smoke test)")
    ap.add_argument("--no-record", action="store_true", help="do not rewrite benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    n = 2_000_000 if args.quick else 20_000_000
    runs = 3 if args.quick else 5
    print(f"W1: N = {n:,} events, median of {runs} runs after a warm-up")
    table = w1data.make_table(n)
    ref = w1data.reference(table)
    if n == 20_000_000:
        exp = w1data.EXPECTED_20M
        assert len(ref["key"]) == exp["rows"] and ref["passed"] == exp["passed"], "W1 data drifted"
    print("throughput (in-memory Arrow table):")
    tp = throughput(table, n, runs, ref)
    print("source: Parquet files")
    pq_eps = parquet_source(table, n, runs, ref)
    print("fusion gain:")
    fg = fusion_gain(table, n, runs, ref)
    print("batching gain:")
    bg = batching_gain(table, n, max(runs - 2, 3))
    del table
    print("start-up (fresh process):")
    ct = compile_time()
    print("stateless latency:")
    lat = latency(5)
    print("peak memory:")
    mem = memory(n)
    if not args.no_record:
        record(n, runs, tp, pq_eps, fg, bg, ct, lat, mem, quick=args.quick)
        print(f"recorded in {RESULTS.relative_to(ROOT)}")
    return 0


def record(n, runs, tp, pq_eps, fg, bg, ct, lat, mem, quick: bool) -> None:
    h = tp["HeliosDB"]
    lines = heading("W1 (issue #2)", f"python -m benchmarks.w1{' --quick' if quick else ''}", " (or `make bench`)")
    lines[-1] += (
        f" N = {n:,}; medians of {runs} runs after a warm-up; "
        "the contenders of each comparison run round-robin, so drift in the machine's speed hits "
        "them alike; every engine's output is validated against the numpy reference first. The "
        "machine is noisy: single runs vary by up to 2x (page-fault cost), so read the medians.")
    lines += [
        "",
        "| engine (same run, same in-memory Arrow table) | events/s | HeliosDB / engine |",
        "|---|---:|---:|",
    ]
    for name, eps in tp.items():
        lines.append(f"| {name} | {eps / 1e6:.2f} M | {h / eps:.2f} |")
    lines += [
        "",
        f"- W1 from 20 zstd Parquet files (HeliosDB): {pq_eps / 1e6:.2f} M events/s.",
        f"- Fusion gain on W1: fused {fg['fused'] / 1e6:.2f} M/s vs unfused (`HELIOSDB_FUSION=0`, every "
        f"step its own kernel) {fg['unfused'] / 1e6:.2f} M/s = {fg['fused'] / fg['unfused']:.2f}x (the window "
        "stage, not the stateless one, bounds W1). On the stateless part alone (filter -> with_columns -> "
        f"filter -> select -> sink): fused {fg['stateless fused'] / 1e6:.2f} M/s vs unfused "
        f"{fg['stateless unfused'] / 1e6:.2f} M/s = {fg['stateless fused'] / fg['stateless unfused']:.2f}x.",
        "- Batching gain (HeliosDB, events/s by batch size): "
        + ", ".join(f"{bs // 1024}K: {eps / 1e6:.2f} M" for bs, eps in bg.items())
        + f"; 256K vs 1K = {bg[262144] / bg[1024]:.1f}x.",
        f"- Start-up, fresh process, import + compile of every kernel + first W1 on 10k rows: cold Numba "
        f"cache {ct['cold']:.2f} s, warm cache {ct['warm']:.2f} s (median of 3), cache disabled "
        f"{ct['nocache']:.2f} s.",
        f"- Stateless latency (generate at 100K events/s for 10 s -> filter -> with_columns -> sink, "
        f"batch_timeout 10 ms), ingest to sink: p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms "
        f"(median of {len(lat['runs'])} runs; p99 per run {', '.join(f'{x:.2f}' for x in lat['runs'])} ms). Quantiles are the "
        "upper edge of their histogram bucket (buckets 6% wide), so they err high.",
        f"- Peak memory of W1: input table {mem['table_mib']:,.0f} MiB; peak RSS above the baseline before "
        f"the table was built {mem['peak_mib']:,.0f} MiB = {mem['ratio']:.2f}x the table (includes the table "
        "itself; resident memory sampled every 2 ms during the run).",
        "",
    ]
    write_section("w1", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
