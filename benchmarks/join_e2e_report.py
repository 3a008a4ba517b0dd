"""``benchmarks.join_e2e --record``: its figures as the "end to end" part of RESULTS.md's
joins section (between ``<!-- joins-e2e:start -->`` and ``<!-- joins-e2e:end -->``)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import List

from .results import machine, write_section


def _command(a, argv) -> str:
    args = " ".join(argv) if argv else ""
    return "flock /tmp/heavy.lock python -m benchmarks.join_e2e" + (f" {args}" if args else "")


def record(results: List[dict], a, argv) -> None:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### End to end, through the public API — {now}", "",
             f"Command: `{_command(a, argv)}`. Machine: {machine()} (shared with other sessions). "
             "Each join as a user writes it (`from_arrow(...).with_watermark(\"ts\", bound)` on both sides, "
             "`join(...)`, `set_parallelism(p)`, a memory sink, `execute()`), timed from planning to the output "
             "held as one Arrow table; DuckDB's SQL for the same rows over the same Arrow tables in the same "
             f"run (both cores). Median of {a.runs} round-robin rounds after a warm-up. Every output compared "
             "row by row with DuckDB's once, every timed run's checked (rows, null counts and column sums); "
             "the state size after the end asserted 0 in every run.", "",
             "| join | data | rows in | rows out | contender | median s | x DuckDB | target |",
             "|---|---|---|---|---|---:|---:|---:|"]
    for r in results:
        duck = r["median"]["duckdb"]
        for k, v in r["median"].items():
            target = r["target"] if r["target"] and k.startswith("heliosdb") else ""
            lines.append(f"| {r['title']} | {r['data']} | {r['left']:,} x {r['right']:,} | {r['rows']:,} | {k} | "
                         f"{v:.3f} | {duck / v:.2f} | {target} |")
    by = {(r["case"], r["data"]): r for r in results}
    ratios = []
    for case in ("window", "interval"):
        u, x = by.get((case, "uniform")), by.get((case, "realistic"))
        if u and x:
            for k in u["median"]:
                if k in x["median"]:
                    ratios.append(f"{case} {k}: {x['median'][k] / u['median'][k]:.2f}")
    if ratios:
        lines += ["", "Realistic over uniform data (time ratio, same sizes): " + "; ".join(ratios) + "."]
    rocks = []
    for r in results:
        mem = [k for k in r["median"] if k.startswith("heliosdb p") and "rocksdb" not in k]
        rk = [k for k in r["median"] if "rocksdb" in k]
        if mem and rk:
            p = rk[0].replace(" rocksdb", "")
            rocks.append(f"{r['case']} ({r['data']}): {r['median'][rk[0]] / r['median'][p]:.2f}x the time of memory")
    if rocks:
        lines += ["", "RocksDB state against memory state, same parallelism: " + "; ".join(rocks) + "."]
    states = [(r, b, s) for r in results for b, s in r["state"].items()]
    if states:
        lines += ["", "State (`streaming_state_size_bytes` from `handle.metrics()` every 20 ms, untimed run, "
                  "parallelism 1): the steady median over the middle 80% of the input, the medians around 25% "
                  "and 75% of it (no growth with input), the peak, the bound the open windows or intervals allow "
                  "(`join_e2e.state_bound`), and after the inputs end.", "",
                  "| join | data | backend | steady median B | at 25% | at 75% | peak B | peak, s of input | "
                  "bound B | after end B |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r, b, s in states:
            lines.append(f"| {r['title']} | {r['data']} | {b} | {s['median']:,} | {s['q1']:,} | {s['q3']:,} | "
                         f"{s['peak']:,} | {s['peak_s']:.1f} | {s['bound']:,} | {s['final']:,} |")
    write_section("joins-e2e", "\n".join(lines))
