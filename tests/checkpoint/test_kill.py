"""Kill battery: a checkpointed job in a real process, SIGKILLed at 20 seeded random moments
and started again each time until it completes, writes exactly what a batch oracle (pandas
and DuckDB over the input) computes: no row missing, none duplicated.  Also the named
failpoints (``HELIOSDB_FAILPOINT``): the process dies there with exit code 137, and the
restart completes with exact output.

Timeline of one run (30 batches x 30 ms, checkpoints every 50 ms)::

    fork -- restore -- batches ... [barrier] ... [barrier] ... SIGKILL at a random moment
    fork -- restore the last committed epoch -- ...                      until one completes

The processes are forked from a warm zygote (``killjob.py``), so a run starts in milliseconds.
"""
from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from heliosdb.testing import hidden_files, read_parquet_output

from . import pipelines as P

ROOT = Path(__file__).resolve().parents[2]
KILLS = 20
SEED = 20240607
N = 9000
SPEC = {"batch_size": 300, "sleep_s": 0.03, "interval_ms": 50, "parallelism": 2}


class Zygote:
    """The parent side of ``killjob.py``'s protocol."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.checkpoint.killjob"], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self._read() == {"ready": True}

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, f"the kill-test zygote died (exit code {self.proc.poll()})"
        return json.loads(line)

    def _ask(self, msg: dict) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def run(self, spec: dict) -> int:
        return self._ask({"run": spec})["pid"]

    def race(self, specs: list) -> list:
        """Fork one child per spec, all released at the same moment: their pids."""
        return self._ask({"race": specs})["pids"]

    def wait(self, pid: int) -> int:
        return self._ask({"wait": pid})["status"]

    def kill(self, pid: int) -> int:
        """SIGKILL the child (unless it has ended already) and reap it: its status."""
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.wait(pid)

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001 - the zygote is ours: make sure it is gone
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The input as 3 Parquet files (with a row id), and the oracle's answers."""
    t = P.events(N, seed=29)
    t = t.select(["ts", "k", "v"]).add_column(0, "id", pa.array(np.arange(N, dtype=np.int64)))
    folder = P.write_parquet_input(t, str(tmp_path_factory.mktemp("kill-input")))
    return folder, oracle(folder)


def oracle(folder: str) -> dict:
    """The batch answer, by pandas and by DuckDB (which must agree)."""
    df = pd.read_parquet(folder)
    rows = np.sort(df.id[df.v > 0.2].to_numpy())
    df["ws"] = df.ts // 2000 * 2000
    pw = (df.groupby(["ws", "k"]).agg(n=("v", "size"), s=("v", "sum"), hi=("v", "max"))
          .reset_index().sort_values(["ws", "k"]).reset_index(drop=True))
    dw = duckdb.sql(f"""SELECT ts // 2000 * 2000 AS ws, k, count(*) AS n, sum(v) AS s, max(v) AS hi
                       FROM read_parquet('{folder}/*.parquet') GROUP BY ALL ORDER BY ws, k""").df()
    assert pw.ws.tolist() == dw.ws.tolist() and pw.k.tolist() == dw.k.tolist()
    assert pw.n.tolist() == dw.n.tolist() and np.allclose(pw.s, dw.s) and np.allclose(pw.hi, dw.hi)
    return {"rows": rows, "windows": pw}


def check_exact(spec: dict, expected: dict) -> None:
    """Every input row with v > 0.2 exactly once; every (window, key) exactly once and right."""
    for folder in (spec["rows"], spec["windows"]):
        assert hidden_files(folder) == [], f"uncommitted files left in {folder}"
    rows = read_parquet_output(spec["rows"])
    ids = np.sort(rows.column("id").to_numpy())
    missing = np.setdiff1d(expected["rows"], ids)
    dup = ids[1:][ids[1:] == ids[:-1]]
    assert len(missing) == 0 and len(dup) == 0 and len(ids) == len(expected["rows"]), (
        f"rows: {len(missing)} missing (e.g. {missing[:5].tolist()}), {len(dup)} duplicated "
        f"(e.g. {dup[:5].tolist()}), {len(ids)} written of {len(expected['rows'])}")
    w = read_parquet_output(spec["windows"]).to_pandas()
    w["ws"] = w.window_start.astype("int64") // 1_000_000
    w = w.sort_values(["ws", "k"]).reset_index(drop=True)
    want = expected["windows"]
    keys_got = list(zip(w.ws, w.k))
    keys_want = list(zip(want.ws, want.k))
    assert keys_got == keys_want, (
        f"windows: {len(set(keys_want) - set(keys_got))} missing, {len(keys_got) - len(set(keys_got))} "
        f"duplicated, {len(set(keys_got) - set(keys_want))} unexpected")
    assert w.n.tolist() == want.n.tolist()
    assert np.allclose(w.s, want.s, rtol=1e-9) and np.allclose(w.hi, want.hi, rtol=1e-12)


def make_spec(tmp_path: Path, folder: str, tag: str, **extra) -> dict:
    d = tmp_path / tag
    d.mkdir()
    return {**SPEC, "input": folder, "storage": str(d / "ckpt"), "rows": str(d / "rows"),
            "windows": str(d / "windows"), "name": "killed", "log": str(d / "log.txt"), **extra}


def committed(spec: dict) -> int:
    return len(glob.glob(os.path.join(spec["storage"], spec["name"], "chk-*", "_manifest.json")))


def log_of(spec: dict) -> str:
    return Path(spec["log"]).read_text()[-3000:] if os.path.exists(spec["log"]) else ""


def test_sigkill_at_20_random_moments_then_restart_gives_exact_output(zygote, source, tmp_path):
    folder, expected = source
    rng = random.Random(SEED)
    kills, rounds, runs = 0, 0, 0
    while kills < KILLS:
        rounds += 1
        assert rounds <= 5, f"{kills} kills in {rounds - 1} rounds: the job completes too fast to kill"
        spec = make_spec(tmp_path, folder, f"round{rounds}")
        while True:
            runs += 1
            assert runs <= 200
            pid = zygote.run(spec)
            if kills < KILLS:
                if not committed(spec):
                    # Until a first checkpoint commits, a kill inside its write leaves a
                    # directory every restart refuses (test_corruption.py::
                    # test_an_unfinished_first_checkpoint_does_not_block_the_job): start the
                    # clock once there is one.
                    deadline = time.monotonic() + 20
                    while not committed(spec) and time.monotonic() < deadline:
                        time.sleep(0.002)
                time.sleep(rng.uniform(0.0, 0.25))
                status = zygote.kill(pid)
            else:
                status = zygote.wait(pid)
            if status == -signal.SIGKILL:
                kills += 1
                continue
            assert status == 0, f"run {runs} exited with {status}:\n{log_of(spec)}"
            break
        check_exact(spec, expected)
    assert kills == KILLS
    print(f"{kills} kills over {runs} runs in {rounds} round(s)")


FAILPOINTS = ["mid-data-file", "before-manifest", "after-manifest"]
@pytest.mark.parametrize("after", [0, 2], ids=["first-epoch", "later-epoch"])
@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_a_process_dying_at_a_failpoint_restarts_with_exact_output(failpoint, after, zygote, source, tmp_path, request):
    folder, expected = source
    spec = make_spec(tmp_path, folder, "run", failpoint=failpoint, failpoint_after=after)
    status = zygote.wait(zygote.run(spec))
    assert status == 137, f"expected the failpoint's exit code 137, got {status}:\n{log_of(spec)}"
    before = committed(spec)
    assert before >= after
    spec = {k: v for k, v in spec.items() if not k.startswith("failpoint")}
    status = zygote.wait(zygote.run(spec))
    assert status == 0, f"the restart exited with {status}:\n{log_of(spec)}"
    check_exact(spec, expected)


def test_of_two_jobs_started_at_the_same_moment_exactly_one_runs_and_writes(zygote, source, tmp_path):
    # 10 pairs, each: two processes forked, released by one pipe write, start the same job
    # (same storage, same name, own output folders); the one that gets the lease runs to the
    # end with exact output, the other stops before writing anything.
    folder, expected = source
    for pair in range(10):
        base = make_spec(tmp_path, folder, f"pair{pair}", sleep_s=0.02)
        specs = [dict(base, rows=f"{base['rows']}-{x}", windows=f"{base['windows']}-{x}",
                      log=f"{base['log']}-{x}") for x in "ab"]
        statuses = [zygote.wait(pid) for pid in zygote.race(specs)]
        assert sorted(statuses) == [0, 1], f"pair {pair}: exit codes {statuses}:\n" + "\n".join(map(log_of, specs))
        winner, loser = specs if statuses[0] == 0 else specs[::-1]
        assert "is already running" in log_of(loser), log_of(loser)
        for out in (loser["rows"], loser["windows"]):
            assert not os.path.exists(out) or not os.listdir(out), f"pair {pair}: the loser wrote {out}"
        check_exact(winner, expected)
        manifests = glob.glob(os.path.join(winner["storage"], winner["name"], "chk-*", "_manifest.json"))
        assert manifests and {json.load(open(m))["lease_generation"] for m in manifests} == {1}
