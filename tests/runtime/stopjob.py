"""The job the stop tests interrupt, in a process of its own.

    python -m tests.runtime.stopjob SPEC        (from the repository root; SPEC is JSON)

SPEC: ``storage`` (checkpoints), ``rows`` and ``windows`` (two Parquet sink folders), ``name``,
``count`` (None: unbounded), ``rate`` (events/s, None: flat out), ``sleep_s`` (per batch, to
slow the job down), ``batch_size``, ``interval_ms`` (checkpoints).  The job is
``generate -> (slow) -> rows`` and ``-> per-key 1 s windows (count, sum) -> windows``, run with
``env.execute()`` in the main thread, so SIGINT and SIGTERM reach it as they would a script.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from datetime import timedelta

import heliosdb as hdb


def build(env: hdb.StreamEnvironment, spec: dict) -> None:
    src = env.generate(rate=spec.get("rate"), count=spec.get("count"), keys=50, events_per_ms=1)
    sleep_s = spec.get("sleep_s", 0.0)
    if sleep_s:
        def slow(batch):
            time.sleep(sleep_s)

        src = src.inspect(slow).name("slow")
    src.sink(hdb.sinks.parquet(spec["rows"]))
    (src.with_watermark(time="ts", max_out_of_orderness=timedelta(0)).key_by("key")
     .window(hdb.TumblingWindow.of(timedelta(seconds=1))).aggregate(n=hdb.count(), s=hdb.sum("value"))
     .name("win").sink(hdb.sinks.parquet(spec["windows"])))


def config(spec: dict) -> hdb.StreamingConfig:
    return hdb.StreamingConfig(
        parallelism=2, batch_size=spec["batch_size"], buffer_size=spec["batch_size"],
        checkpoint=hdb.CheckpointConfig(interval=timedelta(milliseconds=spec["interval_ms"]),
                                        storage=spec["storage"], timeout=timedelta(seconds=30)))


def main() -> None:
    spec = json.loads(sys.argv[1])
    # A process started in the background of a non-interactive shell inherits SIGINT ignored,
    # and Python then leaves it so: ask for the KeyboardInterrupt a terminal would give.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    env = hdb.StreamEnvironment(config(spec))
    build(env, spec)
    env.execute(name=spec["name"])


if __name__ == "__main__":
    main()
