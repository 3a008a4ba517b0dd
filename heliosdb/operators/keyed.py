"""Running keyed aggregates: ``key_by(...).aggregate(...)`` without a window.

One hash table maps key tuples to dense ids for the operator's lifetime; accumulators are
arrays indexed by that id (``state.MemoryGroupState``).  After every batch the operator emits the
current aggregates of the keys the batch touched: an *update* stream, where a later row for a
key supersedes the earlier one.  With a TTL, keys untouched for ``ttl`` (processing time) are
evicted every ``cleanup_interval``: the table and the arrays are compacted, so
``streaming_state_size_bytes`` falls with them, and an evicted key that comes back starts over.
"""
from __future__ import annotations

import logging
import time as _time
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa

from ..kernels import _hashagg
from ..state import adopt_column, fill_from_column, snapshot_rows, state_from_arrow, state_to_arrow
from .base import Item, Snapshot, Tick
from .cow import CowCopy
from .keyedbase import Aggs, KeyedOperator

log = logging.getLogger("heliosdb.keyed")


def _clock() -> int:
    """Processing time for TTL (ns); tests may replace it."""
    return _time.time_ns()


class KeyedAggregate(KeyedOperator):
    """Per-key running aggregates with optional TTL eviction."""

    kind = "keyed-aggregate"
    #: Every batch emits the current aggregates of the keys it touched: a later row supersedes.
    emits_updates = True
    memory_fix = "raise StateBackend.memory(max_size_bytes=) or set a state TTL (with_state_ttl)"

    def __init__(self, name: str, schema: pa.Schema, keys: List[str], aggs: Aggs,
                 max_state_bytes: int, ttl_ns: Optional[int] = None, cleanup_interval_ns: Optional[int] = None,
                 backend=None):
        super().__init__(name, schema, keys, aggs, max_state_bytes, backend)
        self.output_schema = pa.schema([schema.field(k) for k in keys] + self.acc.output_fields)
        self.ttl = ttl_ns
        self.cleanup_interval = cleanup_interval_ns if cleanup_interval_ns is not None else ttl_ns
        self.table = _hashagg.GroupTable(self.width, 1024)
        self.partial = self.acc.new_state(1024)
        self.touched = np.zeros(1024, np.int64)          # key id -> last update (processing ns)
        self.evicted_keys = 0
        self._next_cleanup = _clock() + (self.cleanup_interval or 0)
        self._gids = np.empty(0, np.int64)
        self._snap_bufs: Dict[str, np.ndarray] = {}     # snapshot copies, reused
        self._cow: Optional[CowCopy] = None              # the last snapshot's copy (by chunks)

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        n = batch.num_rows
        if n == 0:
            return []
        codes = self._key_columns(batch)
        if len(self._gids) < n:
            self._gids = np.empty(max(n, 2 * len(self._gids)), np.int64)
        gids = self._gids[:n]
        cow = self._cow if self._cow is not None and not self._cow.done else None
        if cow is not None and cow.keys_pending:
            with cow.lock:                  # the writer is copying keys; growth moves them
                self.table.insert(codes, gids)
        else:
            self.table.insert(codes, gids)
        groups = self.table.n_groups
        self.partial.ensure(groups)
        if len(self.touched) < groups:
            grown = np.zeros(max(groups, 2 * len(self.touched)), np.int64)
            grown[: len(self.touched)] = self.touched
            self.touched = grown
        seqs = self._seqs(n)
        ids = self._touched_ids(gids)
        if cow is not None:
            cow.before_update(ids)          # copy-on-write: chunks the snapshot still needs
        self.partial.update(gids, self.acc.prepare(batch, seqs))
        now = _clock()
        self.touched[ids] = now
        out = self._rows(ids)
        self._check_memory()
        self._maybe_evict(now)
        return [out]

    def _widen(self) -> None:
        self.table = self.table.widen(0)

    def _touched_ids(self, gids: np.ndarray) -> np.ndarray:
        """The distinct group ids of a batch, in order of first appearance (a small hash
        table: cheaper than sorting, and independent of the total number of keys)."""
        seen = _hashagg.GroupTable(1, max(1024, len(gids) // 4))
        local = np.empty(len(gids), np.int64)
        seen.insert([gids], local)
        return np.ascontiguousarray(seen.keys_view()[: seen.n_groups, 0])

    def prepare_snapshot(self) -> None:
        """Called on the checkpoint writer's thread ahead of a barrier: size the snapshot
        buffers for the current state and map their pages, so the snapshot's copy (made by
        chunks after the barrier, see ``cow.py``) writes to mapped memory (page faults are
        expensive on virtual machines, and some of the copying is on the processing thread)."""
        n = self.table.n_groups
        want = max(n + n // 4, 16)
        wt = self.width + self.nulls
        plan = [("__keys", want * wt, np.int64), ("__touched", want, np.int64)]
        plan += [(name, want, a.dtype) for name, a in self.partial.arrays()]   # none on disk
        for name, size, dtype in plan:
            buf = self._snap_bufs.get(name)
            if buf is None or len(buf) < min(size, n * (wt if name == "__keys" else 1)):
                buf = np.empty(size, dtype)
                buf[:: max(1, 4096 // buf.itemsize)] = 0        # touch every page
                self._snap_bufs[name] = buf

    def _rows(self, ids: np.ndarray) -> pa.RecordBatch:
        keys = self.table.gather_keys(ids)          # just these rows, not a copy of every key
        arrays = self._decode_keys(keys) + self.partial.results(ids)
        return pa.RecordBatch.from_arrays(arrays, schema=self.output_schema)

    def _maybe_evict(self, now: int) -> None:
        if self.ttl is None or now < self._next_cleanup:
            return
        self._next_cleanup = now + self.cleanup_interval
        if self._cow is not None and not self._cow.done:
            self._cow.finish()              # compaction rewrites what the snapshot still copies
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

    def on_tick(self, now: int) -> List[Item]:
        self._maybe_evict(_clock())
        return [Tick(now)]

    def _state_summary(self) -> str:
        return f"{self.table.n_groups:,} keys"

    def state_size_bytes(self) -> int:
        return (self.table.nbytes + self.partial.nbytes() + self.touched.nbytes
                + self.encoder.nbytes() + self.acc.codec_bytes())

    def snapshot(self) -> Snapshot:
        """Every key: the key columns, ``touched`` (processing ns), accumulators.

        Copy-on-write (``cow.py``): at the barrier the state is only frozen; the writer thread
        copies it by chunks into buffers kept from the last checkpoint, and a batch that
        updates a chunk not copied yet copies that chunk first.  Decoding and Arrow
        conversion run on the writer thread.
        """
        n = self.table.n_groups
        prev = self._cow
        if prev is not None and not prev.released:
            # Its epoch was abandoned before being written: its buffers are left to it.
            prev.release()
            self._snap_bufs = {}
        bufs = self._snap_bufs
        wt = self.table.width
        kb = bufs.get("__keys")
        if kb is None or len(kb) < n * wt:
            kb = bufs["__keys"] = np.empty(max(n + n // 4, 16) * wt, np.int64)
        keys = kb[: n * wt].reshape(n, wt)
        tb = bufs.get("__touched")
        if tb is None or len(tb) < n:
            tb = bufs["__touched"] = np.empty(max(n + n // 4, 16), np.int64)
        touched = tb[:n]
        pairs = [(self.touched, touched)]
        part, more = self.partial.frozen_into(bufs, n)       # RocksDB: a copy read at once, no pairs
        pairs += more
        cow = self._cow = CowCopy(pairs, n, self.table, kb)
        part.plan = self.acc.frozen()
        enc, w, nulls = self.encoder.frozen(), self.width, self.nulls

        def build() -> Dict[str, pa.Table]:
            cow.finish()
            t = dict(zip(enc.names, enc.decode(keys[:, :w], keys[:, w] if nulls else None)))
            t["touched"] = pa.array(touched)
            cols, extra = state_to_arrow(part, np.arange(n, dtype=np.int64), frozen=True)
            t.update(cols)
            tables = {"keys": pa.table(t)}
            tables.update(extra)
            return tables

        return Snapshot({}, {"seq": self.seq, "evicted_keys": self.evicted_keys}, build, cow.release)

    def restore(self, tables: Dict[str, pa.Table], metas: List[dict], select=None, first: bool = True,
                owned: bool = False) -> None:
        if metas:
            self.seq = max(m["seq"] for m in metas)
            if first:
                self.evicted_keys = sum(m["evicted_keys"] for m in metas)
        rows = snapshot_rows(tables, "keys", select)
        if rows is None:
            return
        t, extra = rows
        m = t.num_rows
        fresh = self.table.n_groups == 0
        if fresh:
            # Sized once for every key (no regrowth); a null key widens it as it comes.
            self.table = _hashagg.GroupTable(self.table.width, m + m // 2)
        gids = np.empty(m, np.int64)
        # Batch by batch (as Parquet decoded them): no concatenated copy of whole columns.
        off = 0
        for b in t.select(self.encoder.names).to_batches():
            k = b.num_rows
            self.table.insert(self._key_columns(b), gids[off: off + k])
            off += k
        groups = self.table.n_groups
        if len(self.touched) < groups:
            grown = np.zeros(max(groups, 2 * len(self.touched)), np.int64)
            grown[: len(self.touched)] = self.touched
            self.touched = grown
        restored = state_from_arrow(self.acc, t, extra, owned=owned)
        if fresh and groups == m:                   # every row a new key: ids 0..m-1 in order
            kept = adopt_column(t.column("touched"), np.int64) if owned and m >= 16 else None
            if kept is not None:
                self.touched = kept
            else:
                fill_from_column(self.touched, t.column("touched"))
        else:
            self.touched[gids] = t.column("touched").to_numpy()
        if fresh and groups == m and self.partial.in_memory:
            self.partial = restored      # new keys got ids 0..m-1 in order: adopt the arrays as they are
        else:
            self.partial.ensure(groups)
            self.partial.merge(restored, np.arange(m, dtype=np.int64), gids)

    def describe(self) -> str:
        keys, aggs = self._describe_aggs()
        ttl = f", ttl {self.ttl / 1e9:g}s" if self.ttl else ""
        return f"keyed-aggregate[{self.name}] key_by({keys}){ttl}: {aggs}"
