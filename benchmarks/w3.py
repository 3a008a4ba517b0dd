"""W3, the realistic-stream benchmark (issue 12): 8 partitions with their own pace and disorder,
late events, a replayed stretch, skewed string keys, nulls; tumbling and sliding windows with
allowed lateness.  Records its section of benchmarks/RESULTS.md.

    python -m benchmarks.w3              # N = 4M, 5 rounds (records; --no-record to only print)
    python -m benchmarks.w3 --quick      # N = 200K, 3 rounds; prints, records nothing
    python -m benchmarks.w3 --kafka      # also from an 8-partition Kafka topic (needs a broker)

In one run, round-robin (``benchmarks.w1.interleaved``, so drift in the machine's speed hits
every contender alike), medians of the rounds after a warm-up:

- W3 at parallelism 1 and 2: the arrival-order table (how one consumer receives the eight
  interleaved partitions, ``benchmarks.w3data``) -> ``with_watermark(ts, 2 s)`` -> key by
  ``user`` -> 1 s tumbling and 10 s / 1 s sliding windows, allowed lateness 5 s, count, sum,
  max, mean of ``value`` -> memory sinks, and both late outputs -> memory sinks;
- the same pipeline over the same events sorted by event time (the best case);
- DuckDB (2 threads) computing the same final result and late rows from the whole table.

events/s = N / wall seconds of the whole job (both windows).  Every engine run's output is
validated on its first (warm-up) call: the last row emitted per (window, user) and the late
rows must equal DuckDB's, which replays the engine's lateness rule over the arrival order.

With ``--kafka``, the partitions are produced (not timed) as Arrow IPC messages to the 8
partitions of a topic, and read back with ``kafka_source(bounded=True, event_time="ts")``,
which merges the partitions by event time; its arrival order, and so its oracle, is
``w3data.merge_order``.  The broker is ``$HELIOSDB_KAFKA_BOOTSTRAP`` if set, else one started
with ``ci/kafka.sh`` (see ``benchmarks/kafka.py``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from typing import Callable, Dict, List, Optional, Tuple

import pyarrow as pa

from . import w3data
from .results import heading, write_section
from .w1 import interleaved

MESSAGE_ROWS = 5_000
P1, P2 = "W3, parallelism 1", "W3, parallelism 2"
S1, S2 = "sorted by event time, parallelism 1", "sorted by event time, parallelism 2"
DUCK = "DuckDB (SQL, 2 threads), whole table"


def source(env, data, kafka: Optional[dict] = None, split_by_partition: bool = True):
    """W3's source and its watermark: ``data`` (an Arrow table in arrival order) replayed from
    memory, or, with ``kafka={"bootstrap": ..., "topic": ...[, "readers": n]}``, the topic's
    partitions merged by event time.  The one place to change when sources carry per-split
    watermarks: then a partitioned replay (``data.partitions`` as splits) is expected to give
    ``w3data.split_reference(data.partitions)``."""
    bound = timedelta(milliseconds=w3data.BOUND_MS)
    if kafka is None:
        # A capture of the partitions: each a split with its own watermark (the sorted data
        # is one ordered stream).
        split = "partition" if split_by_partition else None
        src = env.from_arrow(data, split_by=split)
    else:
        src = (env.kafka_source(kafka["topic"], kafka["bootstrap"], bounded=True, event_time="ts")
               .deserialize_arrow(w3data.SCHEMA))
        if "readers" in kafka:
            src = src.set_parallelism(kafka["readers"])
    return src.with_watermark(time="ts", max_out_of_orderness=bound)


def heliosdb_w3(data, parallelism: int, kafka: Optional[dict] = None, splits: bool = True,
                **config) -> Dict[str, pa.Table]:
    """One run of W3's pipeline; the tables of every sink (windows and late outputs)."""
    import heliosdb as hdb

    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=parallelism, **config))
    return w3data.run_w3(env, source(env, data, kafka, splits), name=f"w3-p{parallelism}")


def _checked(name: str, run: Callable[[], Dict[str, pa.Table]], ref: Dict[str, pa.Table]) -> Callable[[], None]:
    """``run``, whose output is validated against ``ref`` the first time (the warm-up call of
    ``interleaved``, which is not timed); prints how many rows it emitted for the final ones."""
    done = []

    def fn() -> None:
        out = run()
        if not done:
            w3data.validate(out, ref)
            done.append(True)
            print(f"  {name}: valid; " + "; ".join(
                f"{w} {out[w].num_rows:,} rows emitted for {ref[w].num_rows:,} final, "
                f"{out[w + '_late'].num_rows:,} late" for w in w3data.WINDOWS), flush=True)

    return fn


def throughput(fns: Dict[str, Callable[[], None]], n: int, runs: int) -> Dict[str, float]:
    out = {}
    for name, times in interleaved(fns, runs).items():
        out[name] = n / statistics.median(times)
        print(f"  {name:42s} {out[name] / 1e6:7.3f} M events/s  (runs: {', '.join(f'{t:.2f}' for t in times)} s)",
              flush=True)
    return out


def memory_contenders(data: w3data.W3Data, refs: Dict[str, Dict[str, pa.Table]]) -> Dict[str, Callable[[], None]]:
    return {
        P1: _checked(P1, lambda: heliosdb_w3(data.arrival, 1), refs["arrival"]),
        P2: _checked(P2, lambda: heliosdb_w3(data.arrival, 2), refs["arrival"]),
        S1: _checked(S1, lambda: heliosdb_w3(data.sorted, 1, splits=False), refs["sorted"]),
        S2: _checked(S2, lambda: heliosdb_w3(data.sorted, 2, splits=False), refs["sorted"]),
        DUCK: lambda: w3data.duckdb_w3(data.arrival, watermarks=refs["watermarks"]),
    }


# -- Kafka ----------------------------------------------------------------------------------------------
def arrow_messages(partitions: List[pa.Table], rows: int = MESSAGE_ROWS) -> Tuple[List[bytes], List[int]]:
    """``partitions[i]`` as Arrow IPC messages of ``rows`` rows for partition i, in order."""
    from heliosdb.formats.arrow_ipc import ArrowIpcFormat

    fmt = ArrowIpcFormat(w3data.SCHEMA, max_message_bytes=2_000_000)
    values, parts = [], []
    for p, table in enumerate(partitions):
        batch = table.combine_chunks().to_batches()[0] if table.num_rows else None
        for start in range(0, table.num_rows, rows):
            msgs = fmt.encode(batch.slice(start, rows))
            values += msgs
            parts += [p] * len(msgs)
    return values, parts


def _produce(broker, partitions: List[pa.Table]) -> str:
    """A topic holding ``partitions[i]`` in its partition i."""
    topic = broker.topic(len(partitions), "w3")
    values, parts = arrow_messages(partitions)
    broker.produce(topic, values, partitions=parts)
    return topic


def _sorted_partitions(data: w3data.W3Data) -> List[pa.Table]:
    """The sorted events in chunks of MESSAGE_ROWS, chunk i to partition i % 8: every
    partition is in event-time order."""
    chunks = [[] for _ in range(w3data.PARTITIONS)]
    for i, start in enumerate(range(0, data.n, MESSAGE_ROWS)):
        chunks[i % w3data.PARTITIONS].append(data.sorted.slice(start, MESSAGE_ROWS))
    return [pa.concat_tables(c) if c else data.sorted.slice(0, 0) for c in chunks]


def kafka_contenders(broker, data: w3data.W3Data) -> Dict[str, Callable[[], None]]:
    fns: Dict[str, Callable[[], None]] = {}
    for label, parts in (("W3", data.partitions), ("sorted", _sorted_partitions(data))):
        t0 = time.perf_counter()
        conf = {"bootstrap": broker.bootstrap, "topic": _produce(broker, parts)}
        print(f"  produced {label} to {conf['topic']} in {time.perf_counter() - t0:.1f} s", flush=True)
        ref = w3data.split_reference(parts)
        for p in (1, 2):
            name = f"Kafka, {label}, parallelism {p}"
            fns[name] = _checked(name, lambda p=p, conf=conf: heliosdb_w3(None, p, kafka=conf), ref)
    return fns


# -- main -------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 200K and 3 rounds; print, do not record")
    ap.add_argument("--events", type=int, default=None, help="N (default 4M, 200K with --quick)")
    ap.add_argument("--runs", type=int, default=None, help="rounds (default 5, 3 with --quick)")
    ap.add_argument("--kafka", action="store_true", help="also read the partitions from Kafka")
    ap.add_argument("--no-record", action="store_true", help="do not rewrite benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    n = args.events or (200_000 if args.quick else 4_000_000)
    runs = args.runs or (3 if args.quick else 5)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    data = w3data.make_data(n)
    print(f"W3: {w3data.describe(data)} (generated in {time.perf_counter() - t0:.1f} s)")
    wm = w3data.split_watermarks(data.arrival)        # each partition a split
    refs = {"arrival": w3data.duckdb_w3(data.arrival, watermarks=wm),
            "sorted": w3data.duckdb_w3(data.sorted), "watermarks": wm}
    stats = w3data.summary(refs["arrival"], n)
    print("  oracle: " + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v:.2%}"
                                   for k, v in stats.items()))
    print(f"in-memory, median of {runs} round-robin rounds after a validated warm-up:", flush=True)
    tp = throughput(memory_contenders(data, refs), n, runs)
    for p, (w, s) in ((1, (P1, S1)), (2, (P2, S2))):
        print(f"  parallelism {p}: W3 / sorted = {tp[w] / tp[s]:.3f} (target >= 0.5)")
    ktp = None
    if args.kafka:
        from .kafka import Broker

        broker = Broker()
        try:
            print("Kafka (8 partitions, Arrow IPC):", flush=True)
            ktp = throughput(kafka_contenders(broker, data), n, runs)
        finally:
            broker.close()
        for p in (1, 2):
            print(f"  parallelism {p}: Kafka W3 / Kafka sorted = "
                  f"{ktp[f'Kafka, W3, parallelism {p}'] / ktp[f'Kafka, sorted, parallelism {p}']:.3f}")
    if not (args.quick or args.no_record):
        flags = (f" --events {n}" if args.events else "") + (f" --runs {runs}" if args.runs else "")
        record(n, runs, data, stats, tp, ktp, load, flags)
        print("recorded in benchmarks/RESULTS.md")
    return 0


def record(n: int, runs: int, data: w3data.W3Data, stats: Dict[str, float], tp: Dict[str, float],
           ktp: Optional[Dict[str, float]], load: float, flags: str = "") -> None:
    lines = heading("W3, realistic stream (issue 12)",
                    f"python -m benchmarks.w3{flags}{' --kafka' if ktp else ''}")
    lines[-1] += (
        f" Load average {load:.2f} when the run began (other work shares the cores). "
        f"{w3data.describe(data)}. Source: the arrival order replayed with "
        "`from_arrow(table, split_by=\"partition\")` (each partition a split with its own watermark, "
        "as a Kafka read of the partitions); the sorted data as one stream. "
        f"Pipeline: `with_watermark(ts, {w3data.BOUND_MS / 1000:g} s)` -> "
        f"key by `user` -> 1 s tumbling and 10 s / 1 s sliding windows, allowed lateness "
        f"{w3data.LATENESS_MS / 1000:g} s, count/sum/max/mean(value), both late outputs sunk; "
        f"late rows: tumbling {stats['tumbling_late']:,} ({stats['tumbling_late_share']:.2%}), "
        f"sliding {stats['sliding_late']:,} ({stats['sliding_late_share']:.2%}). Medians of {runs} "
        "round-robin rounds after a warm-up; every run's output validated on its warm-up (final "
        "row per window and user, and the late rows, equal to DuckDB's replay of the lateness rule).")
    lines += ["", "| contender | events/s | W3 / sorted |", "|---|---:|---:|"]
    for name in (P1, S1, P2, S2, DUCK):
        ratio = {P1: f"{tp[P1] / tp[S1]:.2f} (target >= 0.5)",
                 P2: f"{tp[P2] / tp[S2]:.2f} (target >= 0.5)"}.get(name, "")
        lines.append(f"| {name} | {tp[name] / 1e6:.3f} M | {ratio} |")
    if ktp:
        lines += ["", "From Kafka (8 partitions, Arrow IPC messages of "
                  f"{MESSAGE_ROWS:,} rows, `kafka_source(bounded=True, event_time=\"ts\")`, which "
                  "merges the partitions by event time; the sorted data's chunks go round-robin to "
                  "the partitions; produced before timing):", "",
                  "| contender | events/s | W3 / sorted |", "|---|---:|---:|"]
        for k, v in ktp.items():
            sorted_ = ktp.get(k.replace("W3", "sorted"))
            ratio = f"{v / sorted_:.2f}" if ", W3," in k else ""
            lines.append(f"| {k} | {v / 1e6:.3f} M | {ratio} |")
    lines.append("")
    write_section("w3", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
