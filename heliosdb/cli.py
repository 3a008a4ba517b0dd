"""The ``heliosdb`` command: ``heliosdb demo`` runs the main job (what ``make demo`` runs).

The demo generates a clickstream at a target rate for about 20 s, runs filter -> project ->
keyed 1 s tumbling window aggregate, shows live progress (events/s, p50/p99 latency, open
windows), writes the results as Parquet to a local folder, and ends with a summary.  It needs
no service and no network.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import timedelta
from typing import List, Optional


def _demo(args: argparse.Namespace) -> int:
    import pyarrow.dataset as ds
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    import heliosdb as hdb
    from heliosdb import col
    from heliosdb.kernels import warmup

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
    config = hdb.StreamingConfig(batch_timeout=timedelta(milliseconds=args.batch_timeout_ms))
    env = hdb.StreamEnvironment(config)
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
    handle = env.execute_async(name="demo")

    def view() -> Table:
        m = handle.metrics()
        t = Table(title="live", show_header=True, header_style="bold")
        for c in ("elapsed", "events", "events/s", "p50 latency", "p99 latency", "open windows",
                  "backpressure"):
            t.add_column(c, justify="right")
        t.add_row(f"{m['elapsed_s']:.1f} s", f"{m['streaming_events_processed_total']:,}",
                  f"{m['events_per_s']:,.0f}", f"{m['latency_p50_ms']:.1f} ms",
                  f"{m['latency_p99_ms']:.1f} ms", f"{m['open_windows']}",
                  "yes" if m["streaming_backpressure"] else "no")
        return t

    with Live(view(), console=console, refresh_per_second=4, transient=not console.is_terminal) as live:
        while not handle.done:
            time.sleep(0.25)
            live.update(view())
    result = handle.wait()
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
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``heliosdb`` command."""
    parser = argparse.ArgumentParser(prog="heliosdb", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the main job: a live clickstream through a windowed aggregate")
    demo.add_argument("--rate", type=float, default=500_000, help="events per second (default 500000)")
    demo.add_argument("--duration", type=float, default=20.0, help="seconds to run (default 20)")
    demo.add_argument("--users", type=int, default=50_000, help="distinct user keys (default 50000)")
    demo.add_argument("--batch-timeout-ms", type=float, default=50.0, help="micro-batch timeout (default 50 ms)")
    demo.add_argument("--output", default="demo-output", help="folder for the Parquet results")
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        return _demo(args)
    import heliosdb

    print(heliosdb.__version__)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
