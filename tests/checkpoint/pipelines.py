"""Inputs and pipelines the checkpoint tests crash and restore (test-only).

Two inputs give the same shape of events: ``events()``, an Arrow table (replayed with
``from_arrow`` or, written as several files, ``from_parquet``) with string keys and events up
to 250 ms out of order; and the ``generate(count=)`` source.  ``build(...)`` wires one of the
pipeline kinds over either, with every aggregate the engine has, into an exactly-once
Parquet sink.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import heliosdb as hdb
from heliosdb.testing import CrashAt

N = 12_000
BATCH = 400                       # -> 30 micro-batches
BASE_MS = 1_700_000_000_000
KINDS = ("tumbling", "tumbling-late", "sliding", "session", "running")


def events(n: int = N, seed: int = 11) -> pa.Table:
    """``ts`` (epoch ms, one event in 20 up to 250 ms out of order), ``k`` (40 string keys),
    ``v``, ``u`` (200 strings)."""
    rng = np.random.default_rng(seed)
    i = np.arange(n, dtype=np.int64)
    late = np.where(rng.random(n) < 0.05, rng.integers(0, 250, n), 0)
    return pa.table({
        "ts": BASE_MS + i * 3 - late,
        "k": pa.array([f"k{x:02d}" for x in rng.integers(0, 40, n)]),
        "v": rng.random(n),
        "u": pa.array([f"u{x}" for x in rng.integers(0, 200, n)]),
    })


def write_parquet_input(table: pa.Table, folder: str, files: int = 3) -> str:
    """``table`` as ``files`` Parquet files of unequal sizes (so positions cross files)."""
    cuts = np.linspace(0, table.num_rows, files + 1).astype(int)
    cuts[1] -= 777                # unequal files, and cuts that are not batch multiples
    for j in range(files):
        pq.write_table(table.slice(cuts[j], cuts[j + 1] - cuts[j]), f"{folder}/part-{j}.parquet",
                       row_group_size=1000)
    return folder


#: (key, value, string) column names of each input.
COLUMNS = {"table": ("k", "v", "u"), "generate": ("key", "value", "category")}


def aggregates(v: str, u: str, value_sets: bool = True) -> dict:
    """Every aggregate; ``value_sets=False`` leaves out count_distinct and quantile, which
    keep a value set per group (the RocksDB backend does not store those yet)."""
    out = dict(n=hdb.count(), s=hdb.sum(v), m=hdb.mean(v), lo=hdb.min(v), hi=hdb.max(v),
               sd=hdb.stddev(v), f=hdb.first(u), l=hdb.last(v))
    if value_sets:
        out.update(cd=hdb.count_distinct(u), q=hdb.quantile(v, 0.9))
    return out


def source(env: hdb.StreamEnvironment, kind: str, table: Optional[pa.Table] = None,
           folder: Optional[str] = None, storage_options=None) -> hdb.Stream:
    if kind == "arrow":
        return env.from_arrow(table)
    if kind == "parquet":
        return env.from_parquet(folder, storage_options=storage_options)
    assert kind == "generate", kind
    return env.generate(count=N, keys=40, seed=5, events_per_ms=1)


def _no_crash(batch: pa.RecordBatch) -> None:
    pass


def build(kind: str, src: str, out: str, table: Optional[pa.Table] = None,
          folder: Optional[str] = None, rows_per_file: int = 700, storage_options=None,
          value_sets: bool = True):
    """A ``testing.Build`` for pipeline ``kind`` over input ``src``, into Parquet at ``out``
    (``storage_options`` for the Parquet input and output, e.g. on S3)."""
    key, v, u = COLUMNS["generate" if src == "generate" else "table"]

    def wire(env: hdb.StreamEnvironment, crash: Optional[CrashAt]) -> None:
        # always an inspect step, so runs with and without a crash sentinel have the same
        # generated step names (restore matches state by them)
        s = source(env, src, table, folder, storage_options).inspect(crash or _no_crash)
        if kind == "running":
            s = s.key_by(key).aggregate(**aggregates(v, u, value_sets))
        else:
            ooo, lateness = timedelta(milliseconds=300), timedelta(0)
            if kind == "tumbling":
                spec = hdb.TumblingWindow.of(timedelta(seconds=2))
            elif kind == "tumbling-late":      # late events update windows already emitted
                spec = hdb.TumblingWindow.of(timedelta(seconds=1))
                ooo, lateness = timedelta(milliseconds=100), timedelta(seconds=1)
            elif kind == "sliding":
                spec = hdb.SlidingWindow.of(timedelta(seconds=3), timedelta(seconds=1))
            else:
                spec = hdb.SessionWindow.with_gap(timedelta(milliseconds=100))
            s = s.with_watermark(time="ts", max_out_of_orderness=ooo)
            s = s.key_by(key).window(spec, allowed_lateness=lateness).aggregate(**aggregates(v, u, value_sets))
        s.name("agg").sink(hdb.sinks.parquet(out, storage_options=storage_options,
                                              rows_per_file=rows_per_file))

    return wire


def config(storage: Optional[str] = None, parallelism: int = 1, interval_ms: float = 1,
           backend: Optional[hdb.StateBackend] = None, **checkpoint) -> hdb.StreamingConfig:
    """Small batches; checkpoints every ``interval_ms`` (so nearly every batch boundary).

    Channels hold one batch, so the source runs at most a few batches ahead of the step that
    crashes (a source that finished before the crash meets the hang of
    ``test_coordinator.test_a_job_failing_while_its_final_checkpoint_waits_ends_at_once``);
    ``timeout`` bounds any such hang to 60 s instead of the default 10 minutes.
    """
    cp = None
    if storage is not None:
        checkpoint.setdefault("timeout", timedelta(seconds=60))
        cp = hdb.CheckpointConfig(interval=timedelta(milliseconds=interval_ms), storage=storage,
                                  **checkpoint)
    return hdb.StreamingConfig(parallelism=parallelism, batch_size=BATCH, buffer_size=BATCH,
                               checkpoint=cp, state_backend=backend or hdb.StateBackend.memory())


def result_keys(kind: str, src: str) -> list:
    key = COLUMNS["generate" if src == "generate" else "table"][0]
    return [key] if kind == "running" else ["window_start", "window_end", key]
