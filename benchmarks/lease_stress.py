"""Issue 13: many processes start the same job at the same moment; how many write?

    python -m benchmarks.lease_stress                      # 100 processes at once, 1 round
    python -m benchmarks.lease_stress --processes 2 --rounds 50

Each round, ``--processes`` processes (forked from a forkserver with HeliosDB imported, held at
a barrier and released together) take the checkpoint lease of one job in a fresh temporary
folder.  A process that gets it creates a file of its own in the job folder (its "write"),
then keeps checking that it still holds the lease until every process has tried.  A *double
writer* is a round in which more than one process wrote; the target is 0.  Prints one line;
records nothing (the figure is a correctness count, not a speed).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time


def _contend(folder: str, start, done, results) -> None:
    from heliosdb.checkpoint.lease import Lease
    from heliosdb.checkpoint.storage import Store
    from heliosdb.errors import CheckpointError

    lease = Lease(Store(folder, "job"), 10.0)
    start.wait()
    t0 = time.perf_counter()
    try:
        lease.acquire()
    except CheckpointError:
        results.put(("refused", time.perf_counter() - t0, True))
        done.wait()
        return
    took = time.perf_counter() - t0
    with open(os.path.join(folder, "job", f"writer-{os.getpid()}"), "x"):
        pass
    results.put(("won", took, lease.held()))
    done.wait()
    lease.release()


def round_(processes: int, ctx) -> dict:
    folder = tempfile.mkdtemp(prefix="helios-lease-stress-")
    try:
        start, done, results = ctx.Barrier(processes), ctx.Barrier(processes), ctx.Queue()
        procs = [ctx.Process(target=_contend, args=(folder, start, done, results)) for _ in range(processes)]
        for p in procs:
            p.start()
        got = [results.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(timeout=120)
        writers = [n for n in os.listdir(os.path.join(folder, "job")) if n.startswith("writer-")]
        return {"won": sum(1 for what, _, _ in got if what == "won"), "writers": len(writers),
                "still_held": all(ok for _, _, ok in got), "slowest_s": max(t for _, t, _ in got),
                "failed": sum(1 for p in procs if p.exitcode != 0)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=100, help="processes starting at once (default 100)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds, each in a fresh folder (default 1)")
    args = ap.parse_args(argv)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["heliosdb.checkpoint.lease"])
    doubles = none = failed = 0
    slowest = 0.0
    for _ in range(args.rounds):
        r = round_(args.processes, ctx)
        doubles += r["writers"] > 1 or r["won"] > 1
        none += r["won"] == 0
        failed += r["failed"]
        slowest = max(slowest, r["slowest_s"])
    print(f"{args.rounds} round(s) of {args.processes} simultaneous starts: {doubles} with double writers "
          f"(target 0), {none} with no writer, {failed} processes failed; slowest acquire {slowest * 1e3:.0f} ms")
    return 1 if doubles or none or failed else 0


if __name__ == "__main__":
    sys.exit(main())
