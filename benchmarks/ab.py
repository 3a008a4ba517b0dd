"""Two builds of the engine, alternated: is a change within noise of the build before it?

Each build is a checkout with its own virtualenv (``CHECKOUT/.venv``, an editable install).  For
every workload, rounds alternate old and new; a round is a fresh process of that build that
makes the data, warms up once and times ``--reps`` runs (the round's figure is their median).
The workload code is this checkout's ``benchmarks`` package in both builds (the public API did not
change), imported from outside either checkout so each build's own ``heliosdb`` is the one used.

    python -m benchmarks.ab --old /work/wt-old --new . [--rounds 5] [--n 20000000] w1 sliding ...

Workloads: ``w1`` (W1, in-memory Arrow), ``w1p2`` (W1, parallelism 2), ``sliding`` (W1's
pipeline with 10 s windows sliding by 1 s), ``sessions`` (sessions over out-of-order data),
``w3`` (the realistic stream, parallelism 1), ``checkpoint`` (W1 checkpointing every 100 ms),
``kafka`` (W1 read from a 4-partition Arrow topic, needs ``HELIOSDB_KAFKA_BOOTSTRAP``: run under
``ci/services.sh run --``).  Prints per workload the medians (events/s) and new / old.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent

# One round in a fresh process: make the data, warm up, time `reps` runs, print JSON.
_ROUND = r"""
import json, os, shutil, statistics, sys, tempfile, time
from datetime import timedelta
import heliosdb as hdb
from benchmarks import w1data
what, n, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if what in ("w1", "w1p2", "sliding", "checkpoint", "kafka"):
    table = w1data.make_table(n)
if what == "w1":
    run = lambda: w1data.heliosdb_w1(table)
elif what == "w1p2":
    run = lambda: w1data.heliosdb_w1(table, parallelism=2)
elif what == "sliding":
    from benchmarks.windows import _sliding
    run = lambda: _sliding(table)
elif what == "checkpoint":
    root = tempfile.mkdtemp(prefix="helios-ab-ckpt-")
    count = [0]
    def run():
        count[0] += 1
        cfg = hdb.CheckpointConfig(interval=timedelta(milliseconds=100), storage=os.path.join(root, str(count[0])))
        return w1data.heliosdb_w1(table, checkpoint=cfg)
elif what == "w3":
    from benchmarks import w3data
    from benchmarks.w3 import heliosdb_w3
    data = w3data.make_data(n)
    n = data.n
    run = lambda: heliosdb_w3(data.arrival, 1)
elif what == "sessions":
    from benchmarks.session_disorder import make_data
    t = make_data(n, 200_000, 400)
    def run():
        env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
        return (env.from_arrow(t).with_watermark("ts", max_out_of_orderness=timedelta(milliseconds=640))
                .key_by("user").window(hdb.SessionWindow.with_gap(timedelta(milliseconds=500)), time="ts")
                .aggregate(n=hdb.count(), total=hdb.sum("v"), sd=hdb.stddev("v"), last=hdb.last("v"))
                .collect())
elif what == "kafka":
    topic = os.environ["HELIOSDB_AB_TOPIC"]
    from benchmarks.kafka import W1_SCHEMA
    def run():
        env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=65_536))
        src = env.kafka_source(topic, os.environ["HELIOSDB_KAFKA_BOOTSTRAP"], bounded=True, event_time="ts")
        return w1data.w1_pipeline(src.deserialize_arrow(W1_SCHEMA)).collect()
else:
    raise SystemExit(f"unknown workload {what!r}")
run()
times = []
for _ in range(reps):
    t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
print(json.dumps({"n": n, "times": times, "heliosdb": hdb.__file__}))
"""

WORKLOADS = ("w1", "w1p2", "sliding", "sessions", "w3", "checkpoint", "kafka")


def _round(checkout: Path, what: str, n: int, reps: int, pythonpath: str, env: Dict[str, str]) -> dict:
    python = checkout / ".venv" / "bin" / "python"
    out = subprocess.run([str(python), "-c", _ROUND, what, str(n), str(reps)], cwd=tempfile.gettempdir(),
                         env={**env, "PYTHONPATH": pythonpath}, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{checkout} {what}: rc {out.returncode}\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if not res["heliosdb"].startswith(str(checkout.resolve())):
        raise SystemExit(f"{checkout}: the round imported heliosdb from {res['heliosdb']}")
    return res


def _kafka_topic(n: int) -> str:
    from .kafka import Broker, _arrow_messages
    from .w1data import make_table

    broker = Broker()
    topic = broker.topic(4, "ab-w1-arrow")
    values, parts = _arrow_messages(make_table(n), 4)
    broker.produce(topic, values, partitions=parts)
    return topic


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, type=Path, help="the checkout of the build before")
    ap.add_argument("--new", default=Path("."), type=Path, help="the checkout of the build after")
    ap.add_argument("--rounds", type=int, default=5, help="processes per build and workload")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per process (after one warm-up)")
    ap.add_argument("--n", type=int, default=20_000_000, help="events (W3 and sessions: their own sizes)")
    ap.add_argument("workloads", nargs="+", choices=WORKLOADS)
    args = ap.parse_args(argv)
    old, new = args.old.resolve(), args.new.resolve()
    shim = tempfile.mkdtemp(prefix="heliosdb-ab-")        # holds only `benchmarks`
    os.symlink(HERE, os.path.join(shim, "benchmarks"))
    env = dict(os.environ)
    print(f"A/B: old {old} vs new {new}; {args.rounds} rounds alternating, {args.reps} runs each after a "
          f"warm-up; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    for what in args.workloads:
        n = {"w3": 4_000_000, "sessions": 2_000_000}.get(what, args.n)
        if what == "kafka":
            env["HELIOSDB_AB_TOPIC"] = _kafka_topic(n)
        med: Dict[str, List[float]] = {"old": [], "new": []}
        for r in range(args.rounds):
            order = [("old", old), ("new", new)] if r % 2 == 0 else [("new", new), ("old", old)]
            for label, checkout in order:
                res = _round(checkout, what, n, args.reps, shim, env)
                med[label].append(statistics.median(res["times"]))
                n = res["n"]
        o, w = statistics.median(med["old"]), statistics.median(med["new"])
        print(f"{what}: old {n / o / 1e6:.2f} M events/s, new {n / w / 1e6:.2f} M events/s, new/old "
              f"{o / w:.3f}  (round medians s: old {', '.join(f'{x:.3f}' for x in med['old'])}; "
              f"new {', '.join(f'{x:.3f}' for x in med['new'])})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
