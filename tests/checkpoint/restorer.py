"""A crashed job's checkpoint folder, and restores of it without running the job (test-only).

``Restorer`` keeps a pristine copy of a job folder with >= 2 committed checkpoints; each
``restore(manifest_bytes)`` copies it afresh, puts ``manifest_bytes`` in place of the newest
manifest and runs exactly what a starting job runs (plan, lease, restore into fresh operators,
the source's seek, the sinks' recovery) without processing any batch::

    chk-(n-1)  intact
    chk-n      its manifest replaced  ->  restore: uses chk-n, falls back to chk-(n-1), or raises
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from types import SimpleNamespace
from typing import Optional, Tuple

import heliosdb as hdb
from heliosdb.metrics import CheckpointStats
from heliosdb.plan import build
from heliosdb.testing import CrashAt, run_job

from . import pipelines as P


class _Paced(CrashAt):
    """3 ms per batch: several checkpoints (due every 1 ms) commit before the crash."""

    def __call__(self, batch) -> None:
        time.sleep(0.003)
        super().__call__(batch)


class Restorer:
    def __init__(self, folder: str, table, kind: str = "tumbling", parallelism: int = 1):
        self.folder, self.table, self.kind, self.parallelism = folder, table, kind, parallelism
        self._n = itertools.count()
        for attempt in range(5):
            storage = os.path.join(folder, f"crashed{attempt}")
            _, _, err = run_job(P.build(kind, "arrow", os.path.join(folder, "out0"), table),
                                P.config(storage, parallelism, retain=3), "job", _Paced(20))
            assert err is not None
            self.pristine = os.path.join(storage, "job")
            self.committed = [e for e in self.epochs(self.pristine)
                              if os.path.exists(os.path.join(self.chk(self.pristine, e), "_manifest.json"))]
            if len(self.committed) >= 2:
                break
        assert len(self.committed) >= 2, f"precondition: >= 2 committed checkpoints, have {self.committed}"
        self.newest, self.previous = self.committed[-1], self.committed[-2]
        for e in self.epochs(self.pristine):          # only committed ones: outcomes are exact
            if e not in self.committed:
                shutil.rmtree(self.chk(self.pristine, e))
        with open(os.path.join(self.chk(self.pristine, self.newest), "_manifest.json"), "rb") as f:
            self.manifest_bytes = f.read()

    @staticmethod
    def epochs(job: str):
        return sorted(int(n[4:]) for n in os.listdir(job) if n.startswith("chk-"))

    @staticmethod
    def chk(job: str, epoch: int) -> str:
        return os.path.join(job, f"chk-{epoch:010d}")

    def manifest(self) -> dict:
        return json.loads(self.manifest_bytes)

    def restore(self, manifest_bytes: Optional[bytes] = None,
                source: Optional[str] = None) -> Tuple[Optional[int], CheckpointStats]:
        """Restore a fresh copy (in a folder of its own) of the job folder ``source`` (default:
        the pristine one) whose newest manifest is ``manifest_bytes``: (restored epoch, stats).
        Raises whatever the restore raises."""
        base = os.path.join(self.folder, f"run{next(self._n)}")
        storage = os.path.join(base, "ckpt")
        job = os.path.join(storage, "job")
        shutil.copytree(source or self.pristine, job)
        if manifest_bytes is not None:
            with open(os.path.join(self.chk(job, self.newest), "_manifest.json"), "wb") as f:
                f.write(manifest_bytes)
        try:
            env = hdb.StreamEnvironment(P.config(storage, self.parallelism))
            P.build(self.kind, "arrow", os.path.join(base, "out"), self.table)(env, None)
            plan, _, _, _ = build(env, list(env._sinks))
            stats = CheckpointStats("job")
            holder = SimpleNamespace(metrics=SimpleNamespace(checkpoints=stats), coordinator=None)
            env._attach_checkpoints(holder, plan, "job")
            holder.coordinator.close(failed=True)        # stop its writer, free the lease
            return holder.coordinator.epoch or None, stats
        finally:
            shutil.rmtree(base, ignore_errors=True)


def with_checksum(m: dict) -> dict:
    """``m`` with its checksum recomputed (a forged, not a damaged, manifest)."""
    from heliosdb.checkpoint.manifest import checksum

    if isinstance(m, dict):
        m = dict(m)
        m.pop("checksum", None)
        m["checksum"] = checksum(m)
    return m
