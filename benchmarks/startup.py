"""Start-up: a fresh Jupyter kernel running ``import heliosdb`` plus a first windowed job.

    python -m benchmarks.startup [--runs 5] [--rows 10000]

Each run starts a new IPython kernel (jupyter_client, this Python) and times its first cell,
from the execute request to the reply:

    import heliosdb as hdb
    <a 10,000-row table: ts (epoch ms), key (100 keys), value>
    env.from_arrow(table).with_watermark(time="ts").key_by("key")
       .window(TumblingWindow.of(1 s)).aggregate(n=count(), total=sum("value"), top=max("value")).collect()

with warm caches, as an installed package has them: Numba's on-disk cache, the engine's kernel
cache and Python's bytecode (``.pyc``; kept under a scratch ``PYTHONPYCACHEPREFIX``, and written
even where ``PYTHONDONTWRITEBYTECODE`` is set, since pip compiles an installed package's bytecode)
are filled by one run that is not counted first.  The cell's CPU time (``time.process_time()``, all its threads) is
reported beside the wall time: on a shared machine it shows what the cell costs whatever the
load.  The same code in a fresh ``python -c`` process is timed too (no
kernel: what a script pays), and, in the kernel, the import alone.  Target: the kernel cell
under 1.5 s (median of ``--runs``).  Prints one line per run and the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Dict, List

TARGET_S = 1.5

CELL = textwrap.dedent("""
    import time as _t
    _t0, _c0 = _t.perf_counter(), _t.process_time()
    import heliosdb as hdb
    _t1 = _t.perf_counter()
    import numpy as _np, pyarrow as _pa
    from datetime import timedelta as _td
    _n = {rows}
    _table = _pa.table({{"ts": _np.arange(_n, dtype=_np.int64) * 10, "key": _np.arange(_n) % 100,
                        "value": _np.linspace(0.0, 1.0, _n)}})
    _out = (hdb.StreamEnvironment().from_arrow(_table).with_watermark(time="ts").key_by("key")
            .window(hdb.TumblingWindow.of(_td(seconds=1)))
            .aggregate(n=hdb.count(), total=hdb.sum("value"), top=hdb.max("value")).collect())
    assert _out.num_rows > 0
    print("{{\\"import_s\\": %f, \\"job_s\\": %f, \\"cpu_s\\": %f}}"
          % (_t1 - _t0, _t.perf_counter() - _t1, _t.process_time() - _c0))
""")


def _environ(workdir: Path) -> Dict[str, str]:
    """The children's environment: bytecode cached (under ``workdir``) as an install has it."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    return env


def _kernel_run(rows: int, workdir: Path) -> Dict[str, float]:
    """A fresh kernel: the first cell's wall time (request -> reply), and the kernel start."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec = workdir / "kernels" / "startup"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "startup", "language": "python"}))
    km = KernelManager(kernel_name="startup",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)],
                                                             ensure_native_kernel=False))
    t0 = time.perf_counter()
    km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_environ(workdir))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        ready = time.perf_counter() - t0
        t1 = time.perf_counter()
        msg_id = kc.execute(CELL.format(rows=rows))
        inside = None
        while True:
            try:
                msg = kc.get_iopub_msg(timeout=120)
            except queue.Empty:
                raise TimeoutError("the cell did not finish in 120 s") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                inside = json.loads(msg["content"]["text"].strip().splitlines()[-1])
            if msg["msg_type"] == "error":
                raise RuntimeError("\n".join(msg["content"]["traceback"]))
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        cell = time.perf_counter() - t1
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return {"kernel_start_s": ready, "cell_s": cell, **inside}


def _process_run(rows: int, workdir: Path) -> Dict[str, float]:
    """A fresh ``python -c`` process: its whole wall time, and the figures it measured."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CELL.format(rows=rows)], capture_output=True,
                         text=True, check=True, env=_environ(workdir))
    return {"process_s": time.perf_counter() - t0, **json.loads(out.stdout.strip().splitlines()[-1])}


def main(argv: List[str] = None) -> Dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--rows", type=int, default=10_000)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        _process_run(args.rows, Path(tmp))               # warm Numba's, the engine's and .pyc caches
        _kernel_run(args.rows, Path(tmp))                # and the kernel's own bytecode
        kernel, process = [], []
        for i in range(args.runs):
            k = _kernel_run(args.rows, Path(tmp))
            s = _process_run(args.rows, Path(tmp))
            kernel.append(k)
            process.append(s)
            print(f"run {i + 1}: kernel cell {k['cell_s']:.3f} s (import {k['import_s']:.3f} s, job "
                  f"{k['job_s']:.3f} s, CPU {k['cpu_s']:.3f} s; kernel start {k['kernel_start_s']:.3f} s); "
                  f"python -c {s['process_s']:.3f} s (import {s['import_s']:.3f} s, job {s['job_s']:.3f} s)",
                  flush=True)
    med = {f"kernel_{key}": statistics.median(r[key] for r in kernel)
           for key in ("cell_s", "import_s", "job_s", "cpu_s", "kernel_start_s")}
    med.update({f"process_{key}": statistics.median(r[key] for r in process)
                for key in ("process_s", "import_s", "job_s")})
    verdict = "met" if med["kernel_cell_s"] < TARGET_S else "NOT met"
    print(f"median of {args.runs}: fresh kernel, import heliosdb + first windowed job on "
          f"{args.rows:,} rows: {med['kernel_cell_s']:.3f} s (import {med['kernel_import_s']:.3f} s, "
          f"job {med['kernel_job_s']:.3f} s; CPU time {med['kernel_cpu_s']:.3f} s); target < {TARGET_S} s: "
          f"{verdict}")
    print(f"median of {args.runs}: fresh python -c process, the same: {med['process_process_s']:.3f} s "
          f"(import {med['process_import_s']:.3f} s, job {med['process_job_s']:.3f} s)")
    return med


if __name__ == "__main__":
    main()
