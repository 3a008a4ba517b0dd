"""The ``heliosdb`` command: ``heliosdb demo`` runs the main job (what ``make demo`` runs), and
``heliosdb diagnose`` says what holds a running engine back.

The demo generates a clickstream at a target rate for about 20 s, runs filter -> project ->
keyed 1 s tumbling window aggregate, shows live progress (events/s, p50/p99 latency,
backpressure), serves its Prometheus metrics on 127.0.0.1:9464, writes the results as Parquet to
a local folder, and ends with a summary and a diagnosis.  It needs no service and no network.

``heliosdb diagnose`` scrapes a running engine's ``/metrics`` twice and reports, per job, whether
it is backpressured, the bottleneck operator, every task's busy / blocked / idle time,
stragglers, and remedies.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import timedelta
from typing import List, Optional

DEFAULT_METRICS_URL = "http://127.0.0.1:9464/metrics"


def _demo(args: argparse.Namespace) -> int:
    import pyarrow.dataset as ds
    from rich.console import Console
    from rich.table import Table

    import heliosdb as hdb
    from heliosdb import col
    from heliosdb.kernels import warmup
    from heliosdb.progress import watch

    console = Console()
    out_dir = os.path.abspath(args.output)
    if os.path.isdir(out_dir):
        for name in os.listdir(out_dir):
            if name.endswith(".parquet"):
                os.remove(os.path.join(out_dir, name))
    console.print(f"[bold]HeliosDB Streaming demo[/bold]: clickstream at {args.rate:,.0f} events/s "
                  f"for {args.duration:g} s -> filter -> project -> 1 s tumbling windows per user")
    t0 = time.perf_counter()
    warmup()
    env = _environment(args, console)
    clicks = env.generate(rate=args.rate, duration=timedelta(seconds=args.duration),
                          keys=args.users).name("clickstream")
    sink = hdb.sinks.parquet(out_dir)
    (clicks
     .filter((col("value") > 0.2) & (col("category") != "theta")).name("engaged-clicks")
     .with_columns(dwell_ms=col("value") * 1000.0).name("dwell")
     .select("ts", "key", "dwell_ms")
     .key_by("key")
     .window(hdb.TumblingWindow.of(timedelta(seconds=1)), time="ts")
     .aggregate(clicks=hdb.count(), dwell_total=hdb.sum("dwell_ms"), dwell_max=hdb.max("dwell_ms"),
                dwell_mean=hdb.mean("dwell_ms")).name("per-user-second")
     .sink(sink))
    console.print(str(env.explain()), style="dim", highlight=False, markup=False)
    console.print(f"kernels ready in {time.perf_counter() - t0:.2f} s")
    if env.metrics_url:
        console.print(f"Prometheus metrics: {env.metrics_url}  (diagnose it live: heliosdb diagnose "
                      f"--url {env.metrics_url})", highlight=False, markup=False)
    try:
        handle = env.execute_async(name="demo")
        watch(handle, mode="terminal" if console.is_terminal else "log")
        result = handle.wait()
        diagnosis = handle.diagnose(interval_s=0)
    finally:
        env.close()
    m = result.metrics
    table = ds.dataset(out_dir, format="parquet").to_table()
    summary = Table(title="summary", show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    summary.add_row("events generated", f"{m['streaming_events_processed_total']:,}")
    summary.add_row("throughput", f"{m['events_per_s']:,.0f} events/s")
    summary.add_row("latency p50 / p99", f"{m['latency_p50_ms']:.1f} / {m['latency_p99_ms']:.1f} ms")
    summary.add_row("window results", f"{table.num_rows:,} rows in {len(table['window_start'].unique())} windows")
    summary.add_row("clicks counted", f"{table['clicks'].to_numpy().sum():,}")
    summary.add_row("late events", f"{m['streaming_late_events_total']:,}")
    summary.add_row("output", f"{out_dir} ({len(sink.files)} Parquet files, zstd)")
    console.print(summary)
    console.print("diagnosis (whole run): " + "; ".join(f.message for f in diagnosis.findings),
                  highlight=False, markup=False)
    return 0


def _environment(args: argparse.Namespace, console):
    """The demo's environment, serving metrics on --metrics-port (any free port if it is taken)."""
    import heliosdb as hdb
    from heliosdb.errors import ConfigError

    def make(port: Optional[int]):
        metrics = None if port is None else hdb.MetricsConfig(port=port, host=args.metrics_host)
        env = hdb.StreamEnvironment(hdb.StreamingConfig(
            batch_timeout=timedelta(milliseconds=args.batch_timeout_ms), metrics=metrics))
        env.metrics_url       # binds the port now
        return env

    if args.metrics_port < 0:
        return make(None)
    try:
        return make(args.metrics_port)
    except ConfigError as exc:
        console.print(f"{exc}: serving metrics on a free port instead", style="yellow",
                      highlight=False, markup=False)
        return make(0)


def _scrape(url: str) -> str:
    from urllib.request import urlopen

    with urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def _diagnose(args: argparse.Namespace) -> int:
    from heliosdb.diagnosis import bucket_quantile, diagnose, samples_from_text

    try:
        first = samples_from_text(_scrape(args.url), time.perf_counter_ns())
    except OSError as exc:
        print(f"heliosdb diagnose: no engine serving metrics at {args.url} ({exc}); start one with "
              "`heliosdb demo` (it serves on 127.0.0.1:9464) or pass --url", file=sys.stderr)
        return 2
    time.sleep(args.interval)
    second = samples_from_text(_scrape(args.url), time.perf_counter_ns())
    jobs = [j for j in second if args.job in (None, j)]
    if not jobs:
        have = ", ".join(sorted(second)) or "none"
        print(f"heliosdb diagnose: no job {args.job!r} at {args.url} (jobs: {have})", file=sys.stderr)
        return 2
    for job in jobs:
        now, topology, extra = second[job]
        then, _, extra0 = first.get(job, (None, None, {"late_events": 0.0, "latency_buckets": []}))
        if then is None or then.tasks.keys() != now.tasks.keys():
            then = type(now)(now.t_ns, 0, {n: (0, 0, 0, 0, 0) for n in now.tasks}, {})
        p99 = bucket_quantile(0.99, extra0["latency_buckets"], extra["latency_buckets"])
        late = int(extra["late_events"] - extra0["late_events"])
        print(diagnose(job, then, now, topology, latency_p99_ms=p99, late_events=late))
        print()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``heliosdb`` command."""
    from heliosdb._version import __version__

    parser = argparse.ArgumentParser(prog="heliosdb", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"heliosdb-streaming {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the main job: a live clickstream through a windowed aggregate")
    demo.add_argument("--rate", type=float, default=500_000, help="events per second (default 500000)")
    demo.add_argument("--duration", type=float, default=20.0, help="seconds to run (default 20)")
    demo.add_argument("--users", type=int, default=50_000, help="distinct user keys (default 50000)")
    demo.add_argument("--batch-timeout-ms", type=float, default=50.0, help="micro-batch timeout (default 50 ms)")
    demo.add_argument("--output", default="demo-output", help="folder for the Parquet results")
    demo.add_argument("--metrics-port", type=int, default=9464,
                      help="serve Prometheus metrics on this port (default 9464; 0: any free port; -1: none)")
    demo.add_argument("--metrics-host", default="127.0.0.1", help="interface for the metrics (default 127.0.0.1)")
    diag = sub.add_parser("diagnose", help="say what holds a running engine back (from its /metrics)")
    diag.add_argument("--url", default=DEFAULT_METRICS_URL, help=f"the engine's metrics URL (default {DEFAULT_METRICS_URL})")
    diag.add_argument("--interval", type=float, default=2.0, help="seconds between the two scrapes (default 2)")
    diag.add_argument("--job", default=None, help="only this job (default: every job the engine serves)")
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    from heliosdb.log import configure

    configure(level=logging.WARNING)
    if args.command == "demo":
        return _demo(args)
    if args.command == "diagnose":
        return _diagnose(args)
    print(__version__)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
