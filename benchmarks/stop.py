"""How long stopping a job takes (see heliosdb/runtime/stopping.py).

    python -m benchmarks.stop [--runs 5]

- **Ctrl-C**: ``execute()`` runs a paced job in this process (200,000 events/s, keyed 1 s
  windows over 10,000 keys, a Parquet sink); once it has committed a checkpoint another thread
  calls ``_thread.interrupt_main()``.  Measured: interrupt -> ``execute()`` raised, and
  interrupt -> every thread the run started has ended.  Three set-ups: no checkpoints;
  checkpoints every second; checkpoints and a Prometheus metrics server.  Target: threads gone
  in under 1 s.
- **SIGTERM**: the same checkpointed job in a child process (``handle.wait()`` in its main
  thread); after three checkpoints the child gets SIGTERM.  Measured: signal -> the final
  checkpoint's manifest is on disk, signal -> the process is gone, and the median duration of
  the child's regular checkpoints.  Target: the final checkpoint committed within a regular
  checkpoint's duration plus 1 s.

Medians over ``--runs`` runs (after one warm-up run of each that is not counted).
"""
from __future__ import annotations

import _thread
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import List, Optional

RATE = 200_000
KEYS = 10_000


def build(env, out: str) -> None:
    import heliosdb as hdb

    (env.generate(rate=RATE, keys=KEYS)
     .with_watermark(time="ts", max_out_of_orderness=timedelta(milliseconds=200)).key_by("key")
     .window(hdb.TumblingWindow.of(timedelta(seconds=1))).aggregate(n=hdb.count(), s=hdb.sum("value"))
     .name("win").sink(hdb.sinks.parquet(out)))


def config(storage: Optional[str], metrics: bool = False):
    import heliosdb as hdb

    ck = None if storage is None else hdb.CheckpointConfig(interval=timedelta(seconds=1), storage=storage)
    return hdb.StreamingConfig(checkpoint=ck, metrics=hdb.MetricsConfig(port=0) if metrics else None)


def _manifests(job_dir: Path) -> List[int]:
    return sorted(int(p.parent.name[4:]) for p in job_dir.glob("chk-*/_manifest.json"))


def ctrl_c_once(checkpoints: bool, metrics: bool) -> tuple:
    """(interrupt -> execute() raised, interrupt -> threads gone) in seconds."""
    import heliosdb as hdb

    tmp = tempfile.mkdtemp(prefix="stop-bench-")
    try:
        storage = f"{tmp}/ck" if checkpoints else None
        env = hdb.StreamEnvironment(config(storage, metrics))
        build(env, f"{tmp}/out")
        before = set(threading.enumerate())
        sent = []

        def interrupt() -> None:
            job_dir = Path(tmp) / "ck" / "bench-stop"
            deadline = time.monotonic() + 60
            time.sleep(1.5)
            while checkpoints and not _manifests(job_dir) and time.monotonic() < deadline:
                time.sleep(0.01)
            sent.append(time.perf_counter())
            _thread.interrupt_main()

        t = threading.Thread(target=interrupt, daemon=True, name="bench-interrupter")
        before.add(t)
        t.start()
        try:
            env.execute(name="bench-stop")
            raise AssertionError("the job was not interrupted")
        except KeyboardInterrupt:
            raised = time.perf_counter()
        while set(threading.enumerate()) - before:
            time.sleep(0.001)
        gone = time.perf_counter()
        env.close()
        return raised - sent[0], gone - sent[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sigterm_once() -> tuple:
    """(signal -> final manifest, signal -> process gone, regular checkpoint duration)."""
    tmp = tempfile.mkdtemp(prefix="stop-bench-")
    try:
        job_dir = Path(tmp) / "ck" / "bench-stop"
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.stop", "--child", tmp],
                                stdout=subprocess.PIPE, text=True)
        durations = json.loads(proc.stdout.readline())        # after three checkpoints
        last = _manifests(job_dir)[-1]
        sent = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        committed = None
        while proc.poll() is None or committed is None:
            if committed is None and _manifests(job_dir)[-1:] > [last]:
                committed = time.perf_counter()
            if proc.poll() is not None and committed is None:
                if _manifests(job_dir)[-1:] > [last]:
                    committed = time.perf_counter()
                break
            time.sleep(0.001)
        exited = time.perf_counter()
        proc.wait()
        assert proc.returncode == -signal.SIGTERM, proc.returncode
        assert committed is not None, "no final checkpoint"
        return committed - sent, exited - sent, statistics.median(durations)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def child(tmp: str) -> None:
    """The SIGTERM run's job: print the regular checkpoints' durations once three committed."""
    import heliosdb as hdb

    env = hdb.StreamEnvironment(config(f"{tmp}/ck"))
    build(env, f"{tmp}/out")
    handle = env.execute_async(name="bench-stop")

    def report() -> None:
        stats = handle._job.metrics.checkpoints
        while len(stats.history) < 3:
            time.sleep(0.01)
        print(json.dumps([h["duration_s"] for h in stats.history]), flush=True)

    threading.Thread(target=report, daemon=True).start()
    handle.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    import logging

    logging.getLogger("heliosdb").setLevel(logging.ERROR)      # the stop's own messages
    print(f"stop benchmark: {args.runs} runs each (+1 warm-up), {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for label, ck, metrics in [("Ctrl-C, no checkpoints", False, False),
                               ("Ctrl-C, checkpoints every 1 s", True, False),
                               ("Ctrl-C, checkpoints + metrics server", True, True)]:
        ctrl_c_once(ck, metrics)
        runs = [ctrl_c_once(ck, metrics) for _ in range(args.runs)]
        raised = statistics.median(r[0] for r in runs)
        gone = statistics.median(r[1] for r in runs)
        print(f"{label:40s} interrupt -> execute() raised {raised * 1e3:7.1f} ms, -> threads gone "
              f"{gone * 1e3:7.1f} ms (max {max(r[1] for r in runs) * 1e3:.1f} ms; target < 1000 ms)")
    sigterm_once()
    runs = [sigterm_once() for _ in range(args.runs)]
    commit = statistics.median(r[0] for r in runs)
    exit_ = statistics.median(r[1] for r in runs)
    normal = statistics.median(r[2] for r in runs)
    print(f"{'SIGTERM, checkpoints every 1 s':40s} signal -> final checkpoint committed {commit * 1e3:7.1f} ms, "
          f"-> process gone {exit_ * 1e3:7.1f} ms; a regular checkpoint takes {normal * 1e3:.1f} ms "
          f"(target: commit < {(normal + 1) * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
