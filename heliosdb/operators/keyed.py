"""Running keyed aggregates: ``key_by(...).aggregate(...)`` without a window.

One hash table maps key tuples to dense ids for the operator's lifetime; accumulators are
arrays indexed by that id (``accumulators.Partial``).  After every batch the operator emits the
current aggregates of the keys the batch touched: an *update* stream, where a later row for a
key supersedes the earlier one.  With a TTL, keys untouched for ``ttl`` (processing time) are
evicted every ``cleanup_interval``: the table and the arrays are compacted, so
``streaming_state_size_bytes`` falls with them, and an evicted key that comes back starts over.
"""
from __future__ import annotations

import logging
import time as _time
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from ..errors import HeliosError
from ..expr import AggSpec
from ..kernels import _hashagg
from .accumulators import AccPlan, Partial, filter_rows, partial_from_arrow, partial_to_arrow
from .base import Item, Operator, Snapshot, Tick
from .keys import KeyEncoder

log = logging.getLogger("heliosdb.keyed")


def _clock() -> int:
    """Processing time for TTL (ns); tests may replace it."""
    return _time.time_ns()


class KeyedAggregate(Operator):
    """Per-key running aggregates with optional TTL eviction."""

    kind = "keyed-aggregate"
    stateful = True

    def __init__(self, name: str, schema: pa.Schema, keys: List[str], aggs: List[Tuple[str, AggSpec]],
                 max_state_bytes: int, ttl_ns: Optional[int] = None, cleanup_interval_ns: Optional[int] = None,
                 backend=None):
        self.name = name
        self.encoder = KeyEncoder(schema, keys, name)
        self.aggs = aggs
        self.acc = AccPlan(schema, aggs, name, backend)
        self.output_schema = pa.schema([schema.field(k) for k in keys] + self.acc.output_fields)
        self.max_state_bytes = max_state_bytes
        self.ttl = ttl_ns
        self.cleanup_interval = cleanup_interval_ns if cleanup_interval_ns is not None else ttl_ns
        self.width = self.encoder.width
        self.nulls = False
        self.table = _hashagg.GroupTable(self.width, 1024)
        self.partial = self.acc.new_state(1024)
        self.touched = np.zeros(1024, np.int64)          # key id -> last update (processing ns)
        self.seq = 0
        self.evicted_keys = 0
        self._next_cleanup = _clock() + (self.cleanup_interval or 0)
        self._gids = np.empty(0, np.int64)

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        n = batch.num_rows
        if n == 0:
            return []
        codes, nullword = self.encoder.encode(batch)
        if nullword is not None and not self.nulls:
            self.table = self.table.widen(0)
            self.nulls = True
        if self.nulls:
            codes = codes + [nullword if nullword is not None else np.zeros(n, np.int64)]
        if len(self._gids) < n:
            self._gids = np.empty(max(n, 2 * len(self._gids)), np.int64)
        gids = self._gids[:n]
        self.table.insert(codes, gids)
        groups = self.table.n_groups
        self.partial.ensure(groups)
        if len(self.touched) < groups:
            grown = np.zeros(max(groups, 2 * len(self.touched)), np.int64)
            grown[: len(self.touched)] = self.touched
            self.touched = grown
        seqs = None
        if self.acc.needs_seq:
            seqs = np.arange(self.seq, self.seq + n, dtype=np.int64)
        self.seq += n
        self.partial.update(gids, self.acc.prepare(batch, seqs))
        ids = np.unique(gids)
        now = _clock()
        self.touched[ids] = now
        out = self._rows(ids)
        self._check_memory()
        self._maybe_evict(now)
        return [out]

    def _rows(self, ids: np.ndarray) -> pa.RecordBatch:
        keys = self.table.keys_view()[ids]
        w = self.width
        arrays = self.encoder.decode(keys[:, :w], keys[:, w] if self.nulls else None)
        arrays += self.partial.results(ids)
        return pa.RecordBatch.from_arrays(arrays, schema=self.output_schema)

    def _maybe_evict(self, now: int) -> None:
        if self.ttl is None or now < self._next_cleanup:
            return
        self._next_cleanup = now + self.cleanup_interval
        n = self.table.n_groups
        keep = np.flatnonzero(self.touched[:n] > now - self.ttl).astype(np.int64)
        gone = n - len(keep)
        if not gone:
            return
        self.table.compact(keep)
        self.partial = self.partial.take(keep)
        touched = np.zeros(max(1024, 2 * len(keep)), np.int64)
        touched[: len(keep)] = self.touched[keep]
        self.touched = touched
        self.evicted_keys += gone
        log.info("step %r: evicted %d keys untouched for %.3gs", self.name, gone, self.ttl / 1e9,
                 extra={"operator": self.name})

    def close(self) -> List[Item]:
        self.acc.close_state()
        return []

    def abort(self) -> None:
        self.acc.close_state()

    def on_tick(self, now: int) -> List[Item]:
        self._maybe_evict(_clock())
        return [Tick(now)]

    def _check_memory(self) -> None:
        size = self.state_size_bytes()
        if size > self.max_state_bytes:
            raise HeliosError(
                f"step {self.name!r}: keyed state is {size:,} bytes ({self.table.n_groups:,} keys), "
                f"over the memory backend's bound of {self.max_state_bytes:,} bytes; raise "
                "StateBackend.memory(max_size_bytes=) or set a state TTL (with_state_ttl)"
            )

    def state_size_bytes(self) -> int:
        return (self.table.nbytes + self.partial.nbytes() + self.touched.nbytes
                + self.encoder.nbytes() + self.acc.codec_bytes())

    def snapshot(self) -> Snapshot:
        """Every key: the key columns, ``touched`` (processing ns), accumulators."""
        n = self.table.n_groups
        ids = np.arange(n, dtype=np.int64)
        keys = self.table.keys_view()[:n]
        w = self.width
        t = dict(zip(self.encoder.names, self.encoder.decode(keys[:, :w], keys[:, w] if self.nulls else None)))
        t["touched"] = pa.array(self.touched[:n].copy())
        cols, extra = partial_to_arrow(self.partial, ids)
        t.update(cols)
        tables = {"keys": pa.table(t)}
        tables.update(extra)
        return Snapshot(tables, {"seq": self.seq, "evicted_keys": self.evicted_keys})

    def restore(self, tables: Dict[str, pa.Table], metas: List[dict], select=None, first: bool = True) -> None:
        if metas:
            self.seq = max(m["seq"] for m in metas)
            if first:
                self.evicted_keys = sum(m["evicted_keys"] for m in metas)
        t = tables.get("keys")
        if t is None or not t.num_rows:
            return
        extra = {k: v for k, v in tables.items() if k != "keys"}
        if select is not None:
            t, extra = filter_rows(t, extra, select(t))
        m = t.num_rows
        if not m:
            return
        batch = pa.RecordBatch.from_arrays([t.column(k).combine_chunks() for k in self.encoder.names],
                                           names=self.encoder.names)
        codes, nullword = self.encoder.encode(batch)
        if nullword is not None and not self.nulls:
            self.table = self.table.widen(0)
            self.nulls = True
        if self.nulls:
            codes = codes + [nullword if nullword is not None else np.zeros(m, np.int64)]
        gids = np.empty(m, np.int64)
        self.table.insert(codes, gids)
        groups = self.table.n_groups
        self.partial.ensure(groups)
        if len(self.touched) < groups:
            grown = np.zeros(max(groups, 2 * len(self.touched)), np.int64)
            grown[: len(self.touched)] = self.touched
            self.touched = grown
        self.touched[gids] = t.column("touched").to_numpy()
        self.partial.merge(partial_from_arrow(self.acc, t, extra), np.arange(m, dtype=np.int64), gids)

    def describe(self) -> str:
        keys = ", ".join(self.encoder.names)
        aggs = ", ".join(f"{n}={a!r}" for n, a in self.aggs)
        ttl = f", ttl {self.ttl / 1e9:g}s" if self.ttl else ""
        return f"keyed-aggregate[{self.name}] key_by({keys}){ttl}: {aggs}"
