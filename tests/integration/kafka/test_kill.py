"""Kill battery on the Kafka path: Kafka -> windowed aggregate -> exactly-once Kafka sink, in a
real process SIGKILLed at seeded random moments and restarted each time (with parallelism 1 or
2, chosen at random per restart) until a run completes.  A ``read_committed`` consumer of the
output topic then sees every (window, key) exactly once, with the batch oracle's count and sum.

Timeline of one attempt (120 batches x 40 ms, checkpoints every 50 ms)::

    fork -- restore (offsets from the manifest) -- batches ... [barrier] ... SIGKILL
    fork -- restore the last committed epoch, abort the killed producer's transaction -- ...

The processes fork from the warm zygote of ``tests/checkpoint/killjob.py``.
"""
from __future__ import annotations

import glob
import json
import os
import random
import signal
import time
from collections import Counter

import numpy as np
import pytest

from tests.checkpoint.test_kill import Zygote, log_of

from .broker import new_topic, produce, read_all, values
from .test_checkpointed import pd_ts

KILLS = 10
SEED = 20261128
N = 36_000


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


def newest(spec: dict) -> int:
    """The newest committed checkpoint's epoch (0: none)."""
    done = glob.glob(os.path.join(spec["storage"], spec["name"], "chk-*", "_manifest.json"))
    return max((int(os.path.basename(os.path.dirname(p))[4:]) for p in done), default=0)


def _events():
    rng = np.random.default_rng(11)
    ts = 1_700_000_000_000 + np.arange(N, dtype=np.int64) * 20   # 720 s: windows close all along
    return [json.dumps({"ts": int(t), "k": int(k), "v": round(float(v), 6)}).encode()
            for t, k, v in zip(ts, rng.integers(0, 40, N), rng.random(N))]


def _oracle(records):
    n, s = Counter(), Counter()
    for r in map(json.loads, records):
        key = (r["ts"] // 1000 * 1000, r["k"])
        n[key] += 1
        s[key] += r["v"]
    return n, s


def test_sigkill_at_random_moments_then_restart_gives_each_window_once(kafka, zygote, tmp_path):
    records = _events()
    src, out = new_topic(kafka, partitions=2), new_topic(kafka)
    produce(kafka, src, records, partitions=[i % 2 for i in range(N)])
    rng = random.Random(SEED)
    spec = {"kind": "kafka", "bootstrap": kafka.bootstrap, "topic": src, "out": out,
            "batch_size": 300, "sleep_s": 0.04, "interval_ms": 50, "name": "kafka-killed",
            "storage": str(tmp_path / "ckpt"), "log": str(tmp_path / "log.txt")}
    kills, runs, parallelisms, epochs = 0, 0, [], []
    while True:
        runs += 1
        assert runs <= 3 * KILLS, f"only {kills} kills in {runs - 1} runs:\n{log_of(spec)}"
        spec["parallelism"] = rng.choice([1, 2])
        parallelisms.append(spec["parallelism"])
        before = newest(spec)
        pid = zygote.run(spec)
        if kills < KILLS:
            # Start the clock once this run has committed a checkpoint of its own (so every
            # run makes progress, and output produced after it is at stake).
            deadline = time.monotonic() + 30
            while newest(spec) == before and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.5))
            status = zygote.kill(pid)
        else:
            status = zygote.wait(pid)
        epochs.append(newest(spec))
        if status == -signal.SIGKILL:
            kills += 1
            continue
        assert status == 0, f"run {runs} exited with {status}:\n{log_of(spec)}"
        break
    assert kills == KILLS

    want_n, want_s = _oracle(records)
    got = Counter()
    for r in map(json.loads, values(read_all(kafka, out))):
        key = (int(pd_ts(r["window_start"])), r["k"])
        got[key] += 1
        assert r["n"] == want_n[key], (key, r, want_n[key])
        assert abs(r["s"] - want_s[key]) < 1e-6, (key, r, want_s[key])
    dup = [k for k, c in got.items() if c > 1]
    assert not dup, f"{len(dup)} windows delivered more than once, e.g. {dup[:3]}"
    missing = set(want_n) - set(got)
    assert not missing, f"{len(missing)} windows missing, e.g. {sorted(missing)[:3]}"
    print(f"{kills} kills over {runs} runs; parallelism per run {parallelisms}; newest "
          f"checkpoint after each run {epochs}")
