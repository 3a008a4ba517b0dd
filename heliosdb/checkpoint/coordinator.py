"""The checkpoint coordinator: epochs, the commit order, restore.

An epoch ``e`` commits in this order:

1. **Barrier.** At a micro-batch boundary, once ``interval`` has passed and no checkpoint is in
   flight, the source thread emits the rows it holds, records the source's position, and sends
   ``Barrier(e)`` downstream.  Epoch ids are a monotonic counter (last committed + 1), never
   derived from the clock.
2. **Snapshot.** Each stage, when the barrier has arrived on all of its inputs (aligned: inputs
   that delivered it wait), calls ``snapshot()`` on its stateful operators and forwards the
   barrier.  This is the only pause: window operators copy their state here; keyed state is
   frozen in O(1) and copied by chunks, copy-on-write (``operators/cow.py``): the writer
   thread copies it in step 3, and a batch that would update a chunk not copied yet copies
   that chunk first.
   Sinks close the epoch's files, which stay under hidden names.
3. **Write.** The coordinator's writer thread writes every snapshot table as Parquet
   (``compression``) under ``{storage}/{job}/chk-{e:010d}/{operator}/`` with unique names,
   recording each file's size and CRC-32.
4. **Manifest.** When every stage has acknowledged ``e`` and its files are written,
   ``_manifest.json`` is written last (files with size and checksum, source position,
   watermarks and timers, operator meta, state schemas, format version).  This is the commit
   point; before it, a crash restores epoch ``e - 1``.
5. **Publish.** Sinks publish the epoch's files under their final, deterministic names
   (idempotent: a restore redoes it for the restored epoch).
6. **Retain.** Checkpoints older than the ``retain`` newest are deleted, unless a retained
   manifest references their files.

Restore takes the newest checkpoint that is usable: its manifest parses and passes the checks
of :mod:`.manifest` (shape, types, sizes, positions, every path inside the job's folder), every
file has the size and CRC-32 the manifest says and decodes, and the source accepts its
position.  All of that is tried before any operator is touched, so an unusable checkpoint is
skipped (counted in ``streaming_checkpoint_fallbacks_total`` and logged) and the previous one is
used.  If checkpoints exist but none is usable, it refuses to start rather than silently start
from empty state.  What is left (an operator or sink refusing state that passed every check)
raises CheckpointError: operators were already changed, so there is nothing to fall back from.

Who deletes what (one writer per job directory, see :mod:`.lease`):

- a process that does not get the lease stops before writing or deleting anything;
- at restore, the lease holder deletes the checkpoints newer than the one it restored
  (never committed, or unusable): every writer writes only while it holds a generation and the
  holder's generation is the newest, so they were written by superseded generations whose
  holders are dead or fenced off (they check the lease before committing, and commit nothing
  after).  It checks that it still holds the lease just before.  (A fenced-off writer may
  still be writing into such a folder: it loses those files, and it never commits);
- a failed epoch removes only the files its own writer created (a fenced-off writer must not
  remove files the new holder writes into the same epoch's folder);
- retention deletes old committed checkpoints only while the lease is held.
"""
from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import pyarrow as pa

from ..config import CheckpointConfig, to_nanos
from ..errors import CheckpointError
from ..operators.base import Operator, Snapshot
from .lease import Lease
from .storage import FORMAT_VERSION, IncompleteCheckpoint, Store, failpoint, manifest_files

log = logging.getLogger("heliosdb.checkpoint")


def _combine_subtasks(parts: List[Dict[str, List[pa.Table]]]) -> Dict[str, pa.Table]:
    """One operator's snapshot tables from all its (old) subtasks, as one set of tables.

    A table whose first column is ``row`` (per-row value sets) numbers rows of its subtask's
    main table (the one without ``row``), so it is shifted by the rows of earlier subtasks.
    """
    out: Dict[str, List[pa.Table]] = {}
    offset = 0
    for tables in parts:
        whole = {k: pa.concat_tables(v) for k, v in tables.items() if v}
        mains = [k for k, t in whole.items() if t.schema.names[:1] != ["row"]]
        rows = whole[mains[0]].num_rows if mains else 0
        for k, t in whole.items():
            if k not in mains and offset:
                t = t.set_column(0, "row", pa.array(t.column("row").to_numpy() + offset))
            out.setdefault(k, []).append(t)
        offset += rows
    return {k: pa.concat_tables(v) for k, v in out.items()}


def logical_name(op_name: str) -> str:
    """``window-2#1`` (subtask 1) -> ``window-2``: state is keyed by the logical operator."""
    return re.sub(r"#\d+$", "", op_name)


@dataclass
class _Epoch:
    epoch: int
    started: float
    position: Any
    acks: int = 0
    operators: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    sinks: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    pause_s: float = 0.0
    failed: Optional[BaseException] = None
    written: List[str] = field(default_factory=list)     # full paths this process created


class Coordinator:
    """Runs the steps above for one job; see the module docstring for the order."""

    def __init__(self, config: CheckpointConfig, job: str, stats) -> None:
        self.config = config
        self.store = Store(config.storage, job, config.storage_options)
        self.lease = Lease(self.store, to_nanos(config.lease_timeout, "lease_timeout") / 1e9)
        self.stats = stats
        self.job = job
        self.interval_s = config.interval_ns / 1e9
        self.timeout_s = to_nanos(config.timeout, "timeout") / 1e9
        self.epoch = 0                       # last committed
        self.stages = 0                      # acks expected per epoch
        self.sink_ops: Dict[str, Operator] = {}
        self.source = None
        self._inflight: Optional[_Epoch] = None
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: "queue.Queue" = queue.Queue()
        self._prepare_ops: List[Operator] = []
        self._last_begun = 0
        self._last_error: Optional[BaseException] = None
        self._writer = threading.Thread(target=self._write_loop, daemon=True, name=f"{job}:checkpoint")
        self._closed = False

    # -- restore (before the job's threads start) ---------------------------------------------------
    def restore(self, state_ops: List[Tuple[Operator, Optional[Callable]]], source, sinks: List[Operator]) -> Optional[int]:
        """Acquire the lease, load the newest valid checkpoint into ``state_ops`` (each with
        its row selector for parallel subtasks), seek ``source``, let ``sinks`` publish the
        restored epoch and drop what later epochs left.  Returns the restored epoch or None."""
        self.lease.acquire()
        try:
            return self._restore(state_ops, source, sinks)
        except BaseException:
            self.lease.release()
            raise

    def _restore(self, state_ops, source, sinks) -> Optional[int]:
        self.sink_ops = {op.name: op for op in sinks}
        epochs = self.store.epochs()
        chosen: Optional[Dict[str, Any]] = None
        loaded: Optional["_Loaded"] = None
        corrupt = 0
        for e in reversed(epochs):
            try:
                loaded = self._usable(e, source)
            except IncompleteCheckpoint:
                # Never committed (a crash cut it short): its epoch simply runs again.
                log.info("job %r: checkpoint %d never committed; ignored", self.job, e,
                         extra={"job": self.job, "epoch": e})
                continue
            except CheckpointError as exc:
                corrupt += 1
                self.stats.fallbacks += 1
                log.warning("job %r: checkpoint %d is unusable (%s); falling back to the previous one",
                            self.job, e, exc, extra={"job": self.job, "epoch": e})
                continue
            chosen = loaded.manifest
            break
        if corrupt and chosen is None:
            raise CheckpointError(
                f"job {self.job!r}: none of the {corrupt} committed checkpoints under {self.store.dir!r} is "
                "intact (see the warnings above); refusing to start from empty state. Delete the "
                "directory to start the job over"
            )
        for op in self.sink_ops.values():
            op.configure_checkpoints(self.interval_s, self.timeout_s)   # e.g. Kafka transaction timeouts
        restored = 0
        if chosen is not None:
            restored = chosen["epoch"]
            self._check_names(chosen, state_ops)
            self._load(chosen, state_ops, loaded)
            for name, op in self.sink_ops.items():
                entry = chosen["sinks"].get(name, {})
                self._refused_by(op, restored, lambda: op.recover(
                    entry.get("meta", {}), restored,
                    {t: pa.concat_tables([loaded.take(f) for f in files]) for t, files in entry.get("files", {}).items()}))
            loaded = None
            self.stats.restores += 1
            self.stats.restored(restored, self.store.dir)
        else:
            for op in self.sink_ops.values():
                op.recover({}, 0, {})
        self._discard_after(restored, epochs)
        self.epoch = restored
        self.source = source
        self._prepare_ops = [op for op, _ in state_ops]
        self._writer.start()
        return restored or None

    def _usable(self, epoch: int, source) -> "_Loaded":
        """Checkpoint ``epoch`` read, checked, verified and decoded, and the source moved to its
        position; CheckpointError (or IncompleteCheckpoint) if it cannot be used.  Touches no
        operator."""
        m = self.store.read_manifest(epoch)
        data = self.store.verify(m)
        tables = {}
        for f in manifest_files(m):
            tables[f["path"]] = self.store.read_table(f, data[f["path"]])
        try:
            source.seek(m["source"])
        except Exception as exc:  # noqa: BLE001 - a position the source refuses is a defect of the checkpoint
            raise CheckpointError(f"the source refuses its position {m['source']!r:.120} "
                                  f"({type(exc).__name__}: {exc})") from None
        return _Loaded(self.store, m, data, tables)

    def _refused_by(self, op, epoch: int, call: Callable[[], None]) -> None:
        """Run ``call`` (an operator's or sink's restore); anything it raises becomes a
        CheckpointError naming the step (it may have changed the operator: no fallback)."""
        try:
            call()
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - any refusal of checked state
            raise CheckpointError(
                f"job {self.job!r}: step {op.name!r} cannot restore its state from checkpoint {epoch} "
                f"({type(exc).__name__}: {exc}). The checkpoint passed every check, so it was written by "
                f"another version of this step: restore it with the pipeline that wrote it, run under "
                f"another job name, or move {self.store.chk(epoch)!r} away to use the previous checkpoint"
            ) from exc

    def _discard_after(self, restored: int, epochs: List[int]) -> None:
        """Delete the checkpoints after ``restored`` (never committed, or unusable): their
        epochs run again.  Only while this process holds the lease (see the module docstring)."""
        later = [e for e in epochs if e > restored]
        if not later:
            return
        if not self.lease.held():
            raise CheckpointError(f"job {self.job!r} lost its lease while restoring (another process took over "
                                  "the job directory); stopping without changing it")
        for e in later:
            self.store.delete(e)

    def _check_names(self, manifest: Dict[str, Any], state_ops) -> None:
        """Every operator state in the checkpoint must find its operator: state is matched by
        step name, and a renamed or re-numbered step would silently start empty."""
        have = {logical_name(op.name) for op, _ in state_ops}
        lost = sorted({e["logical"] for e in manifest["operators"].values()} - have)
        lost += sorted(set(manifest["sinks"]) - set(self.sink_ops))
        if lost:
            raise CheckpointError(
                f"job {self.job!r}: checkpoint {manifest['epoch']} holds state of steps {lost} that this "
                f"job does not have (it has {sorted(have | set(self.sink_ops))}). State is matched by step "
                "name: give stateful steps and sinks stable names with .name('...') so they survive "
                "changes to the pipeline, or use a new job name to start over"
            )

    def _load(self, manifest: Dict[str, Any], state_ops, loaded: "_Loaded") -> None:
        by_logical: Dict[str, List[Dict[str, Any]]] = {}
        for name, entry in manifest["operators"].items():
            by_logical.setdefault(entry["logical"], []).append(entry)
        # Subtasks of one step each restore from all of its files (keeping the rows their
        # selector picks): each gets its own decoded copy, since an operator may keep the
        # tables' buffers as its state.
        loaded.uses = Counter(f["path"] for op, _ in state_ops
                              for entry in by_logical.get(logical_name(op.name), [])
                              for files in entry["files"].values() for f in files)
        for path in [p for p in loaded.data if loaded.uses[p] <= 1]:
            del loaded.data[path]            # decoded once, for its one consumer: bytes not needed
        for op, select in state_ops:
            entries = by_logical.get(logical_name(op.name), [])
            first = re.search(r"#\d+$", op.name) is None or op.name.endswith("#0")

            def restore(op=op, select=select, entries=entries, first=first):
                merged = _combine_subtasks(
                    [{tname: [loaded.take(f) for f in files] for tname, files in entry["files"].items()}
                     for entry in entries])
                metas = [e.get("meta", {}) for e in entries]
                # The tables were decoded for this call alone: the operator may keep their buffers.
                op.restore(merged, metas, select, first, owned=True)
            self._refused_by(op, manifest["epoch"], restore)

    # -- epochs ------------------------------------------------------------------------------------
    def due(self) -> bool:
        """Whether the source should start a checkpoint now."""
        with self._lock:
            if self._inflight is not None:
                self._check_timeout()
                return False
            return time.monotonic() - self._last >= self.interval_s

    def begin(self, position: Any, wait: bool = False, stop: Optional[threading.Event] = None) -> Optional[int]:
        """Start the next epoch (``wait``: after the one in flight, unless ``stop`` is set: the
        job failed); returns its id."""
        with self._lock:
            while wait and self._inflight is not None and not self._closed and not (stop and stop.is_set()):
                self._idle.wait(0.05)
                self._check_timeout()
            if self._inflight is not None or self._closed:
                return None
            e = self.epoch + 1
            self._inflight = _Epoch(e, time.monotonic(), position)
            self._last_begun = e
            return e

    def ack(self, stage: str, epoch: int, snapshots: List[Tuple[Operator, Snapshot]], pause_s: float) -> None:
        """A stage took its snapshots for ``epoch`` (called on the stage's thread)."""
        self._queue.put((stage, epoch, snapshots, pause_s))

    def _check_timeout(self) -> None:
        cur = self._inflight
        if cur is not None and time.monotonic() - cur.started > self.timeout_s and cur.failed is None:
            cur.failed = CheckpointError(f"checkpoint {cur.epoch} took longer than {self.timeout_s:g} s")
            self._fail(cur)

    def _fail(self, cur: _Epoch) -> None:
        self.stats.failed(cur.epoch, cur.failed)
        self._last_error = cur.failed
        self._inflight = None
        self._last = time.monotonic()
        self._idle.notify_all()
        try:
            self.store.delete_files(list(cur.written), cur.epoch)
        except Exception:  # noqa: BLE001 - best effort; restore ignores directories without manifest
            log.exception("job %r: could not delete the files of the failed checkpoint %d", self.job, cur.epoch)

    def _write_loop(self) -> None:
        prepared = False
        while True:
            try:
                item = self._queue.get(timeout=min(0.5, self.interval_s / 4))
            except queue.Empty:
                # Halfway to the next checkpoint: let operators get their snapshot buffers
                # ready on this thread, not on their own at the barrier.
                with self._lock:
                    soon = self._inflight is None and time.monotonic() - self._last >= self.interval_s / 2
                if soon and not prepared:
                    for op in self._prepare_ops:
                        try:
                            op.prepare_snapshot()
                        except Exception:  # noqa: BLE001 - an optimisation only
                            log.exception("job %r: preparing the snapshot of %r failed", self.job, op.name)
                    prepared = True
                continue
            prepared = False
            if item is None:
                return
            stage, epoch, snapshots, pause_s = item
            with self._lock:
                cur = self._inflight
            if cur is None or cur.epoch != epoch or cur.failed is not None:
                for _, snap in snapshots:
                    snap.done()
                continue                      # an abandoned (timed out) epoch
            try:
                self._write_stage(cur, snapshots)
            except Exception as exc:  # noqa: BLE001 - the job goes on; the next epoch retries
                with self._lock:
                    cur.failed = exc
                    self._fail(cur)
                continue
            finally:
                for _, snap in snapshots:
                    snap.done()
            cur.pause_s = max(cur.pause_s, pause_s)
            cur.acks += 1
            if cur.acks == self.stages:
                try:
                    self._commit(cur)
                except BaseException as exc:  # noqa: BLE001 - e.g. a sink's commit failed
                    log.error("job %r: committing checkpoint %d failed: %s", self.job, cur.epoch, exc,
                              extra={"job": self.job, "epoch": cur.epoch})
                    with self._lock:
                        if self._inflight is cur:
                            cur.failed = exc
                            self._fail(cur)
                        self._last_error = exc

    def _write_stage(self, cur: _Epoch, snapshots: List[Tuple[Operator, Snapshot]]) -> None:
        comp = self.config.compression
        for op, snap in snapshots:
            files: Dict[str, List[Dict[str, Any]]] = {}
            logical = logical_name(op.name)
            for tname, table in snap.materialize().items():
                entry = self.store.write_table(cur.epoch, logical, op.name, tname.replace(".", "_"), table, comp,
                                               written=cur.written)
                files.setdefault(tname, []).append(entry)
            if op.name in self.sink_ops:
                # A sink's pre-committed output (e.g. the records of a Kafka transaction), kept
                # so a restore can finish its commit.
                cur.sinks[op.name] = {"files": files, "meta": snap.meta}
                continue
            cur.operators[op.name] = {"logical": logical, "kind": op.kind, "files": files, "meta": snap.meta}

    def _commit(self, cur: _Epoch) -> None:
        failpoint("before-manifest")
        if not self.lease.held():
            cur.failed = CheckpointError(
                f"job {self.job!r} lost its lease (another process took over the job directory); "
                f"checkpoint {cur.epoch} not committed")
            with self._lock:
                self._fail(cur)
            return
        size = sum(f["size"] for f in manifest_files({"operators": cur.operators, "sinks": cur.sinks}))
        manifest = {
            "format_version": FORMAT_VERSION, "job": self.job, "epoch": cur.epoch,
            "lease_generation": self.lease.generation, "created_unix_s": time.time(),
            "source": cur.position, "operators": cur.operators, "sinks": cur.sinks,
            "size_bytes": size,
        }
        try:
            self.store.write_manifest(cur.epoch, manifest, written=cur.written)
        except Exception as exc:  # noqa: BLE001
            cur.failed = exc
            with self._lock:
                self._fail(cur)
            return
        # The manifest is written: the checkpoint is committed, and a failure from here on (a
        # sink's commit) must not delete its files: a restore finishes the sinks' commit.
        cur.written.clear()
        failpoint("after-manifest")
        for name, entry in cur.sinks.items():
            self.sink_ops[name].on_commit(entry["meta"])
        if self.source is not None:
            try:                            # for lag dashboards only; restores use the manifest
                self.source.commit_offsets(cur.position)
            except Exception:  # noqa: BLE001
                log.warning("job %r: committing source offsets for monitoring failed", self.job, exc_info=True)
        duration = time.monotonic() - cur.started
        self.stats.last_size_bytes = size
        self.stats.last_pause_s = cur.pause_s
        self.stats.last_duration_s = duration
        self.stats.history.append({"epoch": cur.epoch, "duration_s": duration, "pause_s": cur.pause_s,
                                   "size_bytes": size})
        self.stats.completed(cur.epoch, duration, size)
        with self._lock:
            self.epoch = cur.epoch
            self._inflight = None
            self._last = time.monotonic()
            self._idle.notify_all()
        self._retain()

    def _retain(self) -> None:
        if not self.lease.held():
            return                          # fenced off: the new holder retains
        epochs = self.store.epochs()
        committed = []
        for e in reversed(epochs):
            if e > self.epoch:
                continue
            committed.append(e)
        keep = committed[: self.config.retain]
        referenced = set()
        for e in keep:
            try:
                referenced |= {f["path"] for f in manifest_files(self.store.read_manifest(e))}
            except CheckpointError:
                pass
        for e in epochs:
            if e in keep or e > self.epoch:
                continue
            try:
                m = self.store.read_manifest(e)
                if {f["path"] for f in manifest_files(m)} & referenced:
                    continue
            except CheckpointError:
                pass
            self.store.delete(e)

    # -- end ---------------------------------------------------------------------------------------
    def close(self, failed: bool = False) -> None:
        """Wait for the epoch in flight (unless the job failed), stop the writer, free the lease."""
        if not failed:
            with self._lock:
                deadline = time.monotonic() + self.timeout_s
                while self._inflight is not None and time.monotonic() < deadline:
                    self._idle.wait(0.05)
                    self._check_timeout()
        with self._lock:
            self._closed = True
        self._queue.put(None)
        if self._writer.is_alive():
            self._writer.join(timeout=self.timeout_s)
        for op in self.sink_ops.values():
            try:
                op.finish()
            except Exception:  # noqa: BLE001 - releasing clients after the run
                log.warning("job %r: releasing sink %r failed", self.job, op.name, exc_info=True)
        self.lease.release()
        if not failed and self._last_begun > self.epoch:
            # The last epoch (at the end of input, the one holding the final output) did not
            # commit: the job did not complete, whatever its steps did.
            raise CheckpointError(
                f"job {self.job!r}: its last checkpoint ({self._last_begun}) did not commit"
                + (f": {type(self._last_error).__name__}: {self._last_error}" if self._last_error else "")
                + "; its output of that epoch is not published. Run the job again to finish it")


class _Loaded:
    """A usable checkpoint's manifest, its files' verified bytes and their decoded tables."""

    def __init__(self, store: Store, manifest: Dict[str, Any], data: Dict[str, Any], tables: Dict[str, pa.Table]):
        self.store = store
        self.manifest = manifest
        self.data = data
        self.tables = tables
        self.uses: Counter = Counter()

    def take(self, entry: Dict[str, Any]) -> pa.Table:
        """The table of ``entry`` for one consumer: the decoded one for the last, a fresh
        decode of the same verified bytes for the others."""
        path = entry["path"]
        if self.uses[path] > 1:
            self.uses[path] -= 1
            return self.store.read_table(entry, self.data[path])
        self.data.pop(path, None)
        return self.tables.pop(path)
