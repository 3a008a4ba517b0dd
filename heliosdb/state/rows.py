"""Row state: whole input rows kept as Arrow, numbered in arrival order (the rows a stream
join waits with, ``heliosdb.operators.join``).

Group state (:mod:`.base`) folds rows into accumulators; a join cannot: it must give back the
rows themselves when their partner arrives.  :class:`RowChunks` holds the rows of one schema
as Arrow record batches (chunks) and answers with one Arrow ``take``; what is known about each
row (key id, time, matched) stays with the operator, in numpy arrays indexed by the same row
numbers.  Two backends, chosen by :func:`row_chunks`:

- memory: the batches themselves (chunks are merged into one when they become many, so a
  ``take`` stays one gather);
- RocksDB (``rocksdict``): batches gather in memory up to :data:`RECORD_BYTES`, then are
  written as one record, Arrow IPC bytes under the record's number; only those pending rows
  and the row numbering stay in memory, and a ``take`` reads the records it needs.

Both count the bytes they hold as they go (``nbytes()`` is read after every batch, for the
state size metric and the memory bound; pyarrow's ``RecordBatch.nbytes`` of a slice costs
about 20 us, too much to sum over every chunk that often).  In RocksDB those are the bytes of
the records held (the IPC bytes written, before RocksDB's compression; the database sums them,
``RocksDB.held_bytes``, so an operator can tell them from its memory) and of the rows pending.

Rows go by :meth:`RowChunks.keep` (compaction: the rows kept are renumbered 0, 1, ...), or all
at once by :meth:`RowChunks.clear`, after which nothing is held.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import pyarrow as pa

#: More chunks than this in memory: they are merged into one before the next ``take``.
MAX_CHUNKS = 32
#: RocksDB rows: appended batches gather in memory up to this many bytes, then are written as
#: one record (a window join stores a slice per pane a batch touches, often a few rows: a
#: record each cost a write and ~600 bytes of IPC framing).
RECORD_BYTES = 1 << 16


def _indices(idx: np.ndarray) -> pa.Array:
    """Row numbers as Arrow take indices; ``-1`` becomes a null index (a null row)."""
    idx = np.asarray(idx, np.int64)
    neg = idx < 0
    if neg.any():
        return pa.array(idx, pa.int64(), mask=neg)
    return pa.array(idx, pa.int64())


def _one(table: pa.Table, schema: pa.Schema) -> pa.RecordBatch:
    """A table as one record batch (an empty one for no rows)."""
    if table.num_rows == 0:
        return pa.RecordBatch.from_pylist([], schema=schema)
    batches = table.combine_chunks().to_batches()
    return batches[0] if len(batches) == 1 else pa.concat_batches(batches)


def _gather(chunks: List[pa.RecordBatch], idx: np.ndarray, nulls) -> pa.RecordBatch:
    """Rows ``idx`` of ``chunks`` laid end to end (``-1``: a row of nulls, ``nulls(m)`` gives
    ``m``), as one batch: one ``take`` per chunk of just its rows, then one to put them in
    the order asked.  Arrow's ``take`` over chunks joins them all into one first: it cost the
    whole state on every probe (a few thousand rows taken from millions held).

    >>> bs = [pa.record_batch({"k": [0, 1, 2]}), pa.record_batch({"k": [3, 4]})]
    >>> none = lambda m: pa.record_batch({"k": pa.nulls(m, pa.int64())})
    >>> _gather(bs, np.array([4, 0, -1, 3, 1]), none).column(0).to_pylist()
    [4, 0, None, 3, 1]
    """
    if not len(idx):
        return chunks[0].slice(0, 0)
    sizes = np.fromiter((c.num_rows for c in chunks), np.int64, len(chunks))
    starts = np.cumsum(sizes) - sizes
    which = np.searchsorted(starts, idx, side="right") - 1          # -1: a null row
    key = (which + 1).astype(np.uint8 if len(chunks) < 255 else np.int64)
    counts = np.bincount(key, minlength=len(chunks) + 1)
    ordered = bool((key[1:] >= key[:-1]).all())
    order = np.arange(len(idx)) if ordered else np.argsort(key, kind="stable")
    parts = [nulls(int(counts[0]))] if counts[0] else []
    pos = int(counts[0])
    for c, chunk in enumerate(chunks):
        k = int(counts[c + 1])
        if k:
            parts.append(chunk.take(pa.array(idx[order[pos:pos + k]] - starts[c])))
            pos += k
    out = parts[0] if len(parts) == 1 else pa.concat_batches(parts)
    if ordered:
        return out
    inverse = np.empty(len(idx), np.int64)
    inverse[order] = np.arange(len(idx))
    return out.take(pa.array(inverse))


class RowChunks:
    """Rows of ``schema`` numbered 0..n-1 in arrival order, in memory.

    Examples
    --------
    >>> import numpy as np, pyarrow as pa
    >>> rows = RowChunks(pa.schema([("k", pa.int64())]))
    >>> rows.append(pa.record_batch({"k": [10, 11]})), rows.append(pa.record_batch({"k": [12]}))
    (0, 2)
    >>> rows.take(np.array([2, -1, 0])).column(0).to_pylist()
    [12, None, 10]
    >>> rows.keep(np.array([1, 2])); rows.n, rows.all().column(0).to_pylist()
    (2, [11, 12])
    >>> rows.clear(); rows.n, rows.nbytes()
    (0, 0)
    """

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self.n = 0
        self._chunks: List[pa.RecordBatch] = []
        self._bytes = 0                    # sum of the chunks' nbytes

    def append(self, batch: pa.RecordBatch) -> int:
        """Add ``batch``'s rows; returns the number of the first."""
        first = self.n
        if batch.num_rows:
            self._chunks.append(batch)
            self.n += batch.num_rows
            self._bytes += batch.nbytes
        return first

    def _set(self, chunk: pa.RecordBatch) -> None:
        """The rows are now the one batch ``chunk``."""
        self._chunks = [chunk]
        self._bytes = chunk.nbytes

    def _merged(self) -> List[pa.RecordBatch]:
        if len(self._chunks) > MAX_CHUNKS:
            self._set(pa.concat_batches(self._chunks))
        return self._chunks

    def take(self, idx: np.ndarray) -> pa.RecordBatch:
        """Rows ``idx`` (``-1``: a row of nulls), as one batch."""
        chunks = self._merged()
        if len(chunks) == 1:
            return chunks[0].take(_indices(idx))
        if not chunks:
            return self._nulls(len(idx))
        return _gather(chunks, np.asarray(idx, np.int64), self._nulls)

    def _nulls(self, m: int) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays([pa.nulls(m, f.type) for f in self.schema], schema=self.schema)

    def all(self) -> pa.RecordBatch:
        """Every row, in order, as one batch."""
        if len(self._chunks) != 1:
            self._set(_one(pa.Table.from_batches(self._chunks, self.schema), self.schema))
        return self._chunks[0]

    def keep(self, idx: np.ndarray) -> None:
        """Keep rows ``idx`` (ascending) only; they become rows 0..len(idx)-1."""
        idx = np.asarray(idx, np.int64)
        if len(idx) == self.n:
            return
        if not len(idx):
            self.clear()
            return
        self._set(self.take(idx))
        self.n = len(idx)

    def clear(self) -> None:
        """Let go of every row."""
        self._chunks = []
        self.n = 0
        self._bytes = 0

    def nbytes(self) -> int:
        """Bytes of the rows held (in memory; RocksDB: the bytes of its records)."""
        return self._bytes

    def close(self) -> None:
        """The operator is done: release the rows (and, on disk, the records)."""
        self.clear()


class RocksRowChunks(RowChunks):
    """Rows of ``schema`` as records in RocksDB (``store``: a :class:`~.rocksdb.RocksDB`):
    appended batches gather in memory until they hold :data:`RECORD_BYTES`, then go to the
    database as one record of Arrow IPC bytes; memory holds those pending rows and where
    records start.  A ``take`` writes the pending rows first; ``all`` reads the records and
    adds the pending rows (a window's pane read when it closes is never written).

    Examples
    --------
    >>> import tempfile, numpy as np, pyarrow as pa
    >>> from heliosdb.state.rocksdb import RocksDB
    >>> db = RocksDB(tempfile.mkdtemp(), "join", 1 << 20, 1 << 20)
    >>> rows = RocksRowChunks(pa.schema([("k", pa.int64())]), db)
    >>> rows.append(pa.record_batch({"k": [10, 11]})), rows.append(pa.record_batch({"k": [12]}))
    (0, 2)
    >>> rows.all().column(0).to_pylist(), db.held_bytes        # pending: nothing written yet
    ([10, 11, 12], 0)
    >>> rows.take(np.array([2, 0, -1])).column(0).to_pylist()
    [12, 10, None]
    >>> rows.nbytes() > 0, rows.nbytes() == db.held_bytes      # written by the take
    (True, True)
    >>> rows.keep(np.array([0, 2])); rows.all().column(0).to_pylist()
    [10, 12]
    >>> rows.close(); rows.nbytes(), db.held_bytes
    (0, 0)
    >>> db.close()
    """

    def __init__(self, schema: pa.Schema, store):
        super().__init__(schema)
        self.store = store
        self.prefix = store.prefix()
        self._next = 0
        self._ids: List[int] = []          # record numbers, in row order
        self._starts: List[int] = []       # first row number of each record
        self._written = 0                  # rows in records (the rest are pending)
        self._pending: List[pa.RecordBatch] = []
        self._pending_bytes = 0

    def _key(self, i: int) -> bytes:
        return self.prefix + i.to_bytes(8, "big")

    def _flush(self) -> None:
        """Write the pending rows as one record."""
        if not self._pending:
            return
        pending = self._pending
        batch = pending[0] if len(pending) == 1 else pa.concat_batches(pending)
        self._pending, self._pending_bytes = [], 0
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, self.schema) as w:
            w.write_batch(batch)
        record = sink.getvalue().to_pybytes()
        self.store.db[self._key(self._next)] = record
        self._bytes += len(record)
        self.store.held_bytes += len(record)
        self._ids.append(self._next)
        self._starts.append(self._written)
        self._next += 1
        self._written += batch.num_rows

    def _read(self, ids: List[int]) -> List[pa.RecordBatch]:
        raw = self.store.db.get([self._key(i) for i in ids])
        return [pa.ipc.open_stream(pa.py_buffer(r)).read_all().combine_chunks().to_batches()[0] for r in raw]

    def append(self, batch: pa.RecordBatch) -> int:
        first = self.n
        if batch.num_rows:
            self._pending.append(batch)
            self._pending_bytes += batch.nbytes
            self.n += batch.num_rows
            if self._pending_bytes >= RECORD_BYTES:
                self._flush()
        return first

    def take(self, idx: np.ndarray) -> pa.RecordBatch:
        idx = np.asarray(idx, np.int64)
        self._flush()
        if not self._ids:
            return super().take(idx)
        starts = np.asarray(self._starts, np.int64)
        valid = idx >= 0
        which = np.searchsorted(starts, idx[valid], side="right") - 1
        used = np.unique(which)
        chunks = self._read([self._ids[int(c)] for c in used])
        # Row numbers within the records read, laid end to end.
        base = np.zeros(len(starts), np.int64)
        sizes = np.asarray([c.num_rows for c in chunks], np.int64)
        base[used] = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        local = np.full(len(idx), -1, np.int64)
        local[valid] = idx[valid] - starts[which] + base[which]
        if len(chunks) == 1:
            return chunks[0].take(_indices(local))
        return _gather(chunks, local, self._nulls)

    def all(self) -> pa.RecordBatch:
        return _one(pa.Table.from_batches(self._read(self._ids) + self._pending, self.schema), self.schema)

    def keep(self, idx: np.ndarray) -> None:
        idx = np.asarray(idx, np.int64)
        if len(idx) == self.n:
            return
        kept = self.take(idx) if len(idx) else None
        self.clear()
        if kept is not None:
            self.append(kept)

    def clear(self) -> None:
        if self._ids:
            start, end = self._key(0), self._key(self._next)
            self.store.db.delete_range(start, end)
        self._ids, self._starts = [], []
        self._pending, self._pending_bytes = [], 0
        self.n = self._written = 0
        self.store.held_bytes -= self._bytes
        self._bytes = 0

    def nbytes(self) -> int:
        """Bytes of the records written and of the rows pending in memory."""
        return self._bytes + self._pending_bytes


def row_chunks(schema: pa.Schema, store=None) -> RowChunks:
    """Rows of ``schema`` in memory, or in RocksDB when ``store`` (a
    :class:`~.rocksdb.RocksDB`) is given.

    >>> import pyarrow as pa
    >>> type(row_chunks(pa.schema([("k", pa.int64())]))).__name__
    'RowChunks'
    """
    return RowChunks(schema) if store is None else RocksRowChunks(schema, store)


def open_rows_db(backend, step: str) -> Optional[object]:
    """The RocksDB database of step ``step``'s rows when ``backend`` (a
    ``config.StateBackend``) is RocksDB, else None (memory).

    >>> open_rows_db(None, "join") is None
    True
    """
    if backend is None or backend.kind == "memory":
        return None
    from .rocksdb import RocksDB

    return RocksDB(backend.path, step, backend.block_cache_size, backend.write_buffer_size)
