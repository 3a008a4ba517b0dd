"""RocksDB state backend: accumulators of every group live in RocksDB (``rocksdict``).

:class:`RocksGroupState` implements the group-state interface (:class:`.base.GroupState`), so
every operator runs unchanged on either backend.  Each call loads the rows of the groups it
touches into a small :class:`.memory.MemoryGroupState` (one multi-get), applies the operation
there with the same accumulators, and writes the rows back in one write batch.  A row is the
group's accumulator arrays (whatever the aggregates, by their names) packed as one fixed-width
record; the key is the state's 8-byte prefix plus the group id (big-endian).  Each value set
(``count_distinct`` values, sketch buckets) of a group is one more record.  Only the key index
(group table) stays in memory.

The database is working state, recreated on every start: durability comes from checkpoints,
which hold the same Parquet tables as the memory backend's.  Its folder is
``{path}/{step}-{pid}-{8 hex}``, next to a lock file ``{folder}.lock`` that the process holds
(``fcntl.flock``) while it uses the folder.  A process killed outright leaves both behind; the
next :class:`RocksDB` opened under the same ``path`` removes them (:func:`remove_abandoned`)
once the pid is gone *and* the lock can be taken (a running process that happens to reuse the
pid does not hold that lock, a live owner does).
"""
from __future__ import annotations

import fcntl
import itertools
import logging
import os
import re
import shutil
import uuid
from typing import List, Optional

import numpy as np

from ..aggregates import AggregatePlan, Prepared
from .base import GroupState
from .memory import MemoryGroupState

log = logging.getLogger("heliosdb.state")
_FOLDER = re.compile(r"^.+-(\d+)-[0-9a-f]{8}$")


def _pid_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (killed, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True                         # another user's process
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True                         # no /proc: os.kill said it exists


def _take_lock(path: str, create: bool) -> Optional[int]:
    """An fd holding an exclusive ``flock`` on ``path``, or None if another process holds it
    (or, with ``create=False``, if the file does not exist)."""
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_abandoned(root: str) -> List[str]:
    """Remove the RocksDB working folders under ``root`` left by processes that are gone
    (killed before they could clean up); returns the folders removed.

    A folder ``{step}-{pid}-{hex}`` is abandoned when process ``pid`` is not running and its
    lock file ``{folder}.lock`` can be locked (or is missing: folders of older versions).

    Examples
    --------
    >>> import tempfile, os, subprocess, sys
    >>> root = tempfile.mkdtemp()
    >>> gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
    ...                       capture_output=True, text=True).stdout.strip()
    >>> os.makedirs(f"{root}/win-{gone}-0123abcd")
    >>> [os.path.basename(p) for p in remove_abandoned(root)], os.listdir(root)
    (['win-...-0123abcd'], [])
    """
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    removed = []
    for name in sorted(names):
        base = name[:-5] if name.endswith(".lock") else name
        m = _FOLDER.match(base)
        folder = os.path.join(root, base)
        if not m or (name == base and not os.path.isdir(folder)) or (name != base and os.path.exists(folder)):
            continue                        # not ours; or a lock whose folder is handled with it
        if _pid_running(int(m.group(1))):
            continue
        lock = folder + ".lock"
        fd = _take_lock(lock, create=False)
        if fd is None and os.path.exists(lock):
            continue                        # held: someone uses it (the pid was reused)
        try:
            if os.path.isdir(folder):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
                log.info("removed the RocksDB working folder %r of process %s, which is gone", folder, m.group(1))
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass
        finally:
            if fd is not None:
                os.close(fd)
    return removed


class RocksDB:
    """One RocksDB database per operator instance, deleted when the operator is done.

    The database (and its folder) is created on first use, not when the operator is built:
    a job that stops before it runs (e.g. another process holds its checkpoint lease) leaves
    nothing on disk.
    """

    _ids = itertools.count()

    def __init__(self, root: str, step: str, block_cache_size: int, write_buffer_size: int):
        self.root, self.step = root, step
        self.block_cache_size, self.write_buffer_size = block_cache_size, write_buffer_size
        self.path: Optional[str] = None
        self._db = None
        self._lock: Optional[int] = None
        #: Bytes of the records row state (``state.rows``) holds here now, as written.
        self.held_bytes = 0

    @property
    def db(self):
        """The open database (opened, after removing abandoned folders, on first use)."""
        if self._db is None:
            self._open()
        return self._db

    def _open(self) -> None:
        from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteOptions

        os.makedirs(self.root, exist_ok=True)
        remove_abandoned(self.root)
        path = os.path.join(self.root, f"{self.step}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        # The lock first: a folder whose lock can be taken is abandoned.
        self._lock = _take_lock(path + ".lock", create=True)
        self.path = path
        os.makedirs(path, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_write_buffer_size(self.write_buffer_size)
        table = BlockBasedOptions()
        table.set_block_cache(Cache(self.block_cache_size))
        opts.set_block_based_table_factory(table)
        self._db = Rdict(path, opts)
        # The database is working state, deleted at close and never reopened (checkpoints are
        # Parquet): a write-ahead log would only cost a second write of every record.
        writes = WriteOptions()
        writes.disable_wal = True
        self._db.set_write_options(writes)

    def prefix(self) -> bytes:
        return next(self._ids).to_bytes(8, "big")

    def close(self) -> None:
        if self.path is None:
            return                          # never opened: nothing on disk
        try:
            if self._db is not None:
                self._db.close()
        finally:
            self._db = None
            shutil.rmtree(self.path, ignore_errors=True)
            try:
                os.unlink(self.path + ".lock")
            except FileNotFoundError:
                pass
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None
            self.path = None


class RocksGroupState(GroupState):
    """Accumulators of groups 0..n-1 stored in RocksDB; see the module docstring."""

    in_memory = False

    def __init__(self, plan: AggregatePlan, store: RocksDB, rows: bool = False):
        self.plan = plan
        self.store = store
        self.rows = rows or plan.count_rows
        self.key = store.prefix()
        self.n = 0
        template = MemoryGroupState(plan, 16, self.rows)
        fields = template.arrays()
        self.dtype = np.dtype([(n, a.dtype) for n, a in fields])

    @property
    def counts(self) -> Optional["_LazyCounts"]:
        """The row counts, read lazily (made on access: a stored one would be a cycle)."""
        return None if not self.rows else _LazyCounts(self)

    # -- rows <-> bytes ----------------------------------------------------------------------------
    def _keys(self, ids: np.ndarray, suffix: bytes = b"") -> List[bytes]:
        raw = np.ascontiguousarray(ids, dtype=">i8").tobytes()
        k = self.key
        return [k + raw[i: i + 8] + suffix for i in range(0, len(raw), 8)]

    def load(self, ids: np.ndarray) -> MemoryGroupState:
        """Groups ``ids`` as an in-memory state (row i = group ids[i]); absent ones are empty."""
        m = len(ids)
        part = MemoryGroupState(self.plan, max(m, 16), self.rows)
        part.ensure(m)
        if not m:
            return part
        values = self.store.db.get(self._keys(ids))
        present = [i for i, v in enumerate(values) if v is not None]
        if present:
            rec = np.frombuffer(b"".join(values[i] for i in present), dtype=self.dtype)
            idx = np.asarray(present, np.int64)
            for name, arr in part.arrays():
                arr[idx] = rec[name]
        # Value sets: one blob per group and set, ``codes ++ counts`` as int64.
        for j, pairs in enumerate(part.value_sets()):
            blobs = self.store.db.get(self._keys(ids, bytes([j + 1])))
            local, codes, counts = [], [], []
            for i, b in enumerate(blobs):
                if b:
                    a = np.frombuffer(b, np.int64)
                    h = len(a) // 2
                    local.append(np.full(h, i, np.int64))
                    codes.append(a[:h])
                    counts.append(a[h:])
            if local:
                pairs.add(np.concatenate(local), np.concatenate(codes),
                          np.ascontiguousarray(np.concatenate(counts)))
        return part

    def _store(self, part: MemoryGroupState, ids: np.ndarray) -> None:
        from rocksdict import WriteBatch

        m = len(ids)
        if not m:
            return
        rec = np.empty(m, self.dtype)
        for name, arr in part.arrays():
            rec[name] = arr[:m]
        raw = rec.tobytes()
        size = self.dtype.itemsize
        wb = WriteBatch(raw_mode=True)
        for key, i in zip(self._keys(ids), range(0, len(raw), size)):
            wb.put(key, raw[i: i + size])
        for j, pairs in enumerate(part.value_sets()):
            g, k, w = pairs.items()
            if not len(g):
                continue
            order = np.argsort(g, kind="stable")
            g, k, w = g[order], k[order], w[order]
            cuts = np.flatnonzero(np.diff(g)) + 1
            starts = np.concatenate([[0], cuts])
            ends = np.concatenate([cuts, [len(g)]])
            keys = self._keys(ids[g[starts]], bytes([j + 1]))
            for key, a, b in zip(keys, starts.tolist(), ends.tolist()):
                wb.put(key, np.concatenate([k[a:b], w[a:b]]).tobytes())
        self.store.db.write(wb)

    # -- the group-state operations ------------------------------------------------------------------
    def ensure(self, n: int) -> None:
        self.n = max(self.n, n)

    def update(self, gids: np.ndarray, p: Prepared) -> None:
        u, inv = np.unique(gids, return_inverse=True)
        part = self.load(u)
        part.update(np.ascontiguousarray(inv, np.int64), p)
        self._store(part, u)

    def merge(self, src: GroupState, src_ids: np.ndarray, dst_ids: np.ndarray) -> None:
        src_ids = np.asarray(src_ids, np.int64)
        if not src.in_memory:
            src, src_ids = src.load(src_ids), np.arange(len(src_ids), dtype=np.int64)
        u, inv = np.unique(np.asarray(dst_ids, np.int64), return_inverse=True)
        part = self.load(u)
        part.merge(src, src_ids, np.ascontiguousarray(inv, np.int64))
        self._store(part, u)

    def take(self, ids: np.ndarray) -> "RocksGroupState":
        out = RocksGroupState(self.plan, self.store, self.rows)
        out.ensure(len(ids))
        out._store(self.load(np.asarray(ids, np.int64)), np.arange(len(ids), dtype=np.int64))
        self.drop()
        return out

    def shift_seqs(self, base: int) -> None:
        if base and self.n:
            ids = np.arange(self.n, dtype=np.int64)
            part = self.load(ids)
            part.shift_seqs(base)
            self._store(part, ids)

    def drop(self) -> None:
        """Delete every row of this state."""
        start = self.key
        end = (int.from_bytes(self.key, "big") + 1).to_bytes(8, "big")
        self.store.db.delete_range(start, end)

    def nbytes(self) -> int:
        return 0          # on disk; the operator reports the database's size separately


class _LazyCounts:
    """``part.counts[...]`` of a RocksGroupState: the row counts, loaded when read."""

    def __init__(self, part: RocksGroupState):
        self.part = part

    def __getitem__(self, idx):
        return self.part.materialize().counts[: self.part.n][idx]
