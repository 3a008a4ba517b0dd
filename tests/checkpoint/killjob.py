"""The kill tests' job, run in processes that are SIGKILLed (or die at a failpoint).

Starting Python and compiling the kernels takes seconds, so a *zygote* does it once and forks
one child per run: a child is a real process, killed for real, but starts in milliseconds.

    python -m tests.checkpoint.killjob        (from the repository root)

speaks JSON lines on stdin/stdout::

    <- {"ready": true}                      imported, kernels compiled (a warm-up run)
    -> {"run": SPEC}     <- {"pid": N}      fork a child running the job of SPEC
    -> {"wait": N}       <- {"status": S}   reap it: its exit code, -9 if SIGKILLed
    -> {"race": [SPEC, SPEC, ...]}  <- {"pids": [N, ...]}
                                            fork one child per SPEC, held until all are
                                            forked, then released together (one pipe write)
    -> {"quit": true}

SPEC: ``input`` (a Parquet folder with columns id, ts, k, v), ``storage``, ``rows`` and
``windows`` (two Parquet sink folders), ``name``, ``sleep_s`` (per batch, to slow the job
down), ``interval_ms`` (checkpoints), ``batch_size``, ``log`` (the child's stdout and stderr),
and optionally ``failpoint`` (``HELIOSDB_FAILPOINT``) set once ``failpoint_after``
checkpoints have committed.  With ``"kind": "kafka"`` the child runs :func:`run_kafka`
instead (``bootstrap``, ``topic``, ``out``, ``parallelism``); with ``"kind": "join"``
:func:`run_join` (``left``, ``right``, ``join``, ``backend``, ``rocksdb``, ``out``,
``parallelism``).
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from datetime import timedelta

import heliosdb as hdb
from heliosdb import col

WINDOW = timedelta(seconds=2)


def pipeline(env: hdb.StreamEnvironment, src: hdb.Stream, rows_out, windows_out, sleep_s: float) -> None:
    """source -> (slow) -> rows with v > 0.2 (each input row at most once: ids) and
    per-2 s-window per-key count, sum, max."""
    def slow(batch):
        time.sleep(sleep_s)

    s = src.inspect(slow)
    s.filter(col("v") > 0.2).with_columns(v2=col("v") * 2.0).sink(rows_out)
    (s.with_watermark(time="ts", max_out_of_orderness=timedelta(milliseconds=300)).key_by("k")
     .window(hdb.TumblingWindow.of(WINDOW)).aggregate(n=hdb.count(), s=hdb.sum("v"), hi=hdb.max("v"))
     .name("win").sink(windows_out))


def run(spec: dict) -> int:
    if spec.get("kind") == "kafka":
        return run_kafka(spec)
    if spec.get("kind") == "join":
        return run_join(spec)
    cfg = hdb.StreamingConfig(
        parallelism=spec.get("parallelism", 2), batch_size=spec["batch_size"],
        buffer_size=spec["batch_size"],        # the source stays a batch ahead: barriers flow
        checkpoint=hdb.CheckpointConfig(interval=timedelta(milliseconds=spec["interval_ms"]),
                                        storage=spec["storage"], timeout=timedelta(seconds=30)))
    env = hdb.StreamEnvironment(cfg)
    pipeline(env, env.from_parquet(spec["input"]), hdb.sinks.parquet(spec["rows"], rows_per_file=500),
             hdb.sinks.parquet(spec["windows"], rows_per_file=200), spec["sleep_s"])
    failpoint, after = spec.get("failpoint"), spec.get("failpoint_after", 0)
    if failpoint and not after:
        os.environ["HELIOSDB_FAILPOINT"] = failpoint
    handle = env.execute_async(name=spec["name"])
    if failpoint and after:
        def arm():
            while handle._job.metrics.checkpoints.count < after and not handle.done:
                time.sleep(0.001)
            os.environ["HELIOSDB_FAILPOINT"] = failpoint
        threading.Thread(target=arm, daemon=True).start()
    handle.wait(timeout=120)
    return 0


def run_kafka(spec: dict) -> int:
    """Kafka (``bootstrap``, ``topic``, JSON ts/k/v) -> (slow) -> per-1 s-window per-key count
    and sum -> Kafka ``out`` with an exactly-once sink (tests/integration/kafka/test_kill.py)."""
    import pyarrow as pa

    cfg = hdb.StreamingConfig(
        parallelism=spec["parallelism"], batch_size=spec["batch_size"], buffer_size=spec["batch_size"],
        checkpoint=hdb.CheckpointConfig(interval=timedelta(milliseconds=spec["interval_ms"]),
                                        storage=spec["storage"], timeout=timedelta(seconds=30)))
    env = hdb.StreamEnvironment(cfg)
    schema = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("v", pa.float64())])
    sleep_s = spec["sleep_s"]

    def slow(batch):
        time.sleep(sleep_s)

    (env.kafka_source(spec["topic"], bootstrap_servers=spec["bootstrap"], group_id="kill-test",
                      bounded=True, event_time="ts")
     .deserialize_json(schema).with_batch_size(spec["batch_size"])
     .inspect(slow)
     .with_watermark(time="ts", max_out_of_orderness=timedelta(milliseconds=100))
     .key_by("k").window(hdb.TumblingWindow.of(timedelta(seconds=1)))
     .aggregate(n=hdb.count(), s=hdb.sum("v"))
     .sink(hdb.sinks.kafka(spec["out"], bootstrap_servers=spec["bootstrap"], format="json",
                           exactly_once=True)))
    env.execute(name=spec["name"])
    return 0


JOIN_BOUND = timedelta(milliseconds=400)


def join_pipeline(env: hdb.StreamEnvironment, left: hdb.Stream, right: hdb.Stream, kind: str,
                  sleep_s: float = 0.0) -> hdb.Stream:
    """The joins of the join kill tests (``tests/integration/test_join_kill.py``): a left-outer
    tumbling window join or a full interval join of two event streams (ts, k, v / w), keyed
    by ``k``; the left input slowed by ``sleep_s`` per batch."""
    def slow(batch):
        time.sleep(sleep_s)

    if sleep_s:
        left = left.inspect(slow)
    left = left.with_watermark(time="ts", max_out_of_orderness=JOIN_BOUND)
    right = right.with_watermark(time="ts", max_out_of_orderness=JOIN_BOUND)
    if kind == "window":
        return left.join(right, on="k", how="left", window=hdb.TumblingWindow.of(timedelta(seconds=1)))
    return left.join(right, on="k", how="full", between=(timedelta(milliseconds=-300), timedelta(milliseconds=200)))


def run_join(spec: dict) -> int:
    """Two Parquet folders (``left``: ts, k, v; ``right``: ts, k, w) -> (slow) -> the join of
    ``spec["join"]`` on the ``backend`` ("memory" or "rocksdb" under ``rocksdb``) -> an
    exactly-once Parquet sink ``out``."""
    backend = (hdb.StateBackend.rocksdb(path=spec["rocksdb"]) if spec["backend"] == "rocksdb"
               else hdb.StateBackend.memory())
    cfg = hdb.StreamingConfig(
        parallelism=spec["parallelism"], batch_size=spec["batch_size"], buffer_size=spec["batch_size"],
        state_backend=backend,
        checkpoint=hdb.CheckpointConfig(interval=timedelta(milliseconds=spec["interval_ms"]),
                                        storage=spec["storage"], timeout=timedelta(seconds=30)))
    env = hdb.StreamEnvironment(cfg)
    j = join_pipeline(env, env.from_parquet(spec["left"]), env.from_parquet(spec["right"]), spec["join"],
                      spec["sleep_s"])
    j.sink(hdb.sinks.parquet(spec["out"], rows_per_file=300))
    env.execute(name=spec["name"])
    return 0


def _child(spec: dict) -> None:
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = 1
    try:
        print(f"--- pid {os.getpid()} starts", flush=True)
        code = run(spec)
        print(f"--- pid {os.getpid()} completed", flush=True)
    except BaseException:  # noqa: BLE001 - the test reads the log
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _warm_up() -> None:
    """Compile the pipeline's kernels before forking, so children start warm."""
    import numpy as np
    import pyarrow as pa

    n = 1000
    t = pa.table({"id": np.arange(n, dtype=np.int64), "ts": np.arange(n, dtype=np.int64) * 3,
                  "k": pa.array([f"k{i % 7}" for i in range(n)]), "v": np.linspace(0, 1, n)})
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=2, batch_size=300))
    pipeline(env, env.from_arrow(t), hdb.sinks.memory(), hdb.sinks.memory(), 0.0)
    env.execute(name="warm-up")
    deadline = time.monotonic() + 10          # fork with no other thread alive (locks held)
    while threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.01)


def main() -> None:
    _warm_up()
    out = sys.stdout

    def say(obj) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    say({"ready": True})
    for line in sys.stdin:
        msg = json.loads(line)
        if "run" in msg:
            pid = os.fork()
            if pid == 0:
                _child(msg["run"])
            say({"pid": pid})
        elif "race" in msg:
            r, w = os.pipe()
            pids = []
            for spec in msg["race"]:
                pid = os.fork()
                if pid == 0:
                    os.close(w)
                    os.read(r, 1)            # every child wakes on the same write
                    _child(spec)
                pids.append(pid)
            os.close(r)
            os.write(w, b"x" * len(pids))
            os.close(w)
            say({"pids": pids})
        elif "wait" in msg:
            _, status = os.waitpid(msg["wait"], 0)
            say({"status": -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)})
        elif msg.get("quit"):
            break


if __name__ == "__main__":
    main()
