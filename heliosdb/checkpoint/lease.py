"""One writer per job directory: the lease, taken by an atomic create of one file per generation.

::

    {storage}/{job}/_lease/gen-0000000007.json    {"generation": 7, "owner": <token>, "host": ...,
                                                   "pid": ..., "heartbeat": <unix s>, "released": false}

The holder is the writer of the highest generation file.  To take the lease a process

1. lists the generation files; if the newest one's holder is alive (heartbeat younger than
   ``lease_timeout``, not released, and, on this host, its pid running), it stops: another
   writer runs the job.  It has written nothing;
2. creates the next generation's file *exclusively* (it fails if the file exists): of processes
   that start at the same moment exactly one creates it, and the others stop, having written
   nothing;
3. reads the file back and lists the folder again: its token is in it and no newer generation
   exists (confirmation);
4. rewrites its file (atomically: temporary file + rename) every ``lease_timeout / 3`` as a
   heartbeat, and marks it released when the job ends.

Generations only move forward: a generation's file is never rewritten by anyone but its creator,
and files of older generations are removed only by a newer holder.  A writer checks
:meth:`Lease.held` (its file still has its token and no newer generation exists) before it
commits a checkpoint, so a writer that was paused for longer than ``lease_timeout`` and replaced
(fenced off) never commits.

Exclusive create: on local disk the file is written under a temporary name and hard-linked to
its final name (``link`` fails if the name exists, and the file appears with its contents), or,
where links are not supported, opened with ``O_CREAT | O_EXCL``.  On other fsspec filesystems
``pipe_file(mode="create")`` is used, which is atomic where the store supports conditional
writes (AWS S3's ``If-None-Match``) and otherwise an exists-check followed by a write.
**Caveat** for stores without an atomic create: two processes that both pass the exists-check
before either write lands both write the file, and the last write wins; each waits
``settle_s`` and reads the file back, so the earlier writer sees the later one's token and stops.
If a write takes longer than ``settle_s`` to become visible, both may believe they hold the
lease until the earlier one's next :meth:`Lease.held` check (before its first commit) fences it
off; it then commits nothing.
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from typing import Any, Dict, List, Optional

from ..errors import CheckpointError
from .storage import Store

LEASES = "_lease"
#: The lease file of versions before generation files (read, so an old writer is respected).
LEGACY_LEASE = "_lease.json"
_GEN = re.compile(r"^gen-(\d{10})\.json$")


def create_exclusive(store: Store, path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists; whether this call created it.

    Atomic on local disk (see the module docstring for other filesystems).

    >>> import tempfile
    >>> s = Store(tempfile.mkdtemp(), "job")
    >>> s.fs.makedirs(s.dir, exist_ok=True)
    >>> create_exclusive(s, f"{s.dir}/x", b"first"), create_exclusive(s, f"{s.dir}/x", b"second")
    (True, False)
    """
    fs = store.fs
    if store.local:
        folder = path.rsplit("/", 1)[0]
        tmp = f"{folder}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:12]}"
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:                # no hard links here (some network/FUSE mounts)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        finally:
            os.unlink(tmp)
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    except (TypeError, NotImplementedError):        # an fsspec without mode="create"
        if fs.exists(path):
            return False
        fs.pipe_file(path, data)
    return True


class Lease:
    """The lease of one job directory (see the module docstring).

    Examples
    --------
    >>> import tempfile
    >>> store = Store(tempfile.mkdtemp(), "job")
    >>> a, b = Lease(store, timeout_s=10), Lease(store, timeout_s=10)
    >>> a.acquire(); a.generation
    1
    >>> b.acquire()
    Traceback (most recent call last):
    heliosdb.errors.CheckpointError: job 'job' is already running (lease generation 1 held by pid ...
    >>> a.release(); b.acquire(); b.generation
    2
    >>> b.release()
    """

    #: Wait before confirming a create on a filesystem without atomic create (see above).
    settle_s = 0.25

    def __init__(self, store: Store, timeout_s: float, generation: int = 0):
        self.store = store
        self.timeout_s = timeout_s
        self.generation = generation
        self.owner = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._io = threading.Lock()

    @property
    def folder(self) -> str:
        return f"{self.store.dir}/{LEASES}"

    def path(self, generation: int) -> str:
        return f"{self.folder}/gen-{generation:010d}.json"

    # -- reading ---------------------------------------------------------------------------------
    def generations(self) -> List[int]:
        """Generations with a lease file, ascending."""
        fs = self.store.fs
        try:
            fs.invalidate_cache(self.folder)
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(self.folder, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for m in (_GEN.match(n) for n in names) if m)

    def _read(self, path: str) -> Optional[Dict[str, Any]]:
        try:
            data = json.loads(self.store.fs.cat_file(path))
        except (FileNotFoundError, ValueError):
            return None          # gone (replaced by a newer holder) or torn (its writer died)
        return data if isinstance(data, dict) else None

    def _modified(self, path: str) -> Optional[float]:
        try:
            return self.store.fs.modified(path).timestamp()
        except Exception:  # noqa: BLE001 - not every filesystem says; then it counts as stale
            return None

    def _alive(self, lease: Optional[Dict[str, Any]], path: str) -> bool:
        """Whether the holder of the lease record ``lease`` (read from ``path``) may still run."""
        if lease is None:        # unreadable: alive while the file itself is fresh
            mtime = self._modified(path)
            return mtime is not None and time.time() - mtime <= self.timeout_s
        if lease.get("released"):
            return False
        beat = lease.get("heartbeat")
        if not isinstance(beat, (int, float)) or time.time() - beat > self.timeout_s:
            return False
        if lease.get("host") == socket.gethostname():
            try:
                os.kill(int(lease.get("pid", -1)), 0)
            except PermissionError:
                return True                # running, as another user
            except (OSError, ValueError, TypeError, OverflowError):
                return False
        return True

    def _refuse(self, lease: Optional[Dict[str, Any]], generation: int, why: str = "") -> CheckpointError:
        lease = lease or {}
        return CheckpointError(
            f"job {self.store.job!r} is already running (lease generation {lease.get('generation', generation)} "
            f"held by pid {lease.get('pid')} on {lease.get('host')}{why}); one writer per job directory: stop it, "
            "or use another job name"
        )

    # -- taking and keeping ----------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the lease or raise CheckpointError (having written nothing) if another live
        process holds it or takes it at the same moment."""
        gens = self.generations()
        top = gens[-1] if gens else 0
        if top:
            cur = self._read(self.path(top))
            if self._alive(cur, self.path(top)):
                raise self._refuse(cur, top)
        legacy_path = f"{self.store.dir}/{LEGACY_LEASE}"
        legacy = self._read(legacy_path)
        if legacy is not None:
            if legacy.get("owner") and self._alive(legacy, legacy_path):
                raise self._refuse(legacy, 0, ", an older HeliosDB version")
            lg = legacy.get("generation")
            top = max(top, lg if type(lg) is int and lg > 0 else 0)
        g = top + 1
        self.generation = g
        self.store.fs.makedirs(self.folder, exist_ok=True)
        if not create_exclusive(self.store, self.path(g), self._record()):
            self.generation = 0
            raise self._refuse(self._read(self.path(g)), g, ", taken at the same moment")
        if not self.store.local:
            time.sleep(self.settle_s)
        if not self.held():
            self.generation = 0
            newest = self.generations()
            raise self._refuse(self._read(self.path(newest[-1])) if newest else None, g,
                               ", taken at the same moment")
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"{self.store.job}:lease")
        self._thread.start()
        self._forget_older(g, legacy_path if legacy is not None else None)

    def _record(self, released: bool = False) -> bytes:
        return json.dumps({"generation": self.generation, "owner": self.owner, "host": socket.gethostname(),
                           "pid": os.getpid(), "heartbeat": time.time(), "released": released}).encode()

    def _rewrite(self, released: bool = False) -> None:
        """Replace this generation's file atomically (temporary file, then rename)."""
        fs = self.store.fs
        tmp = f"{self.folder}/.gen-{self.generation:010d}.{uuid.uuid4().hex[:12]}"
        fs.pipe_file(tmp, self._record(released))
        fs.mv(tmp, self.path(self.generation))

    def _forget_older(self, g: int, legacy_path: Optional[str]) -> None:
        """Remove the files of generations before ``g`` (a newer holder's right; best effort)."""
        fs = self.store.fs
        for old in self.generations():
            if old < g:
                try:
                    fs.rm_file(self.path(old))
                except (FileNotFoundError, OSError):
                    pass
        if legacy_path is not None:
            try:
                fs.rm_file(legacy_path)
            except (FileNotFoundError, OSError):
                pass

    def _beat(self) -> None:
        while not self._stop.wait(self.timeout_s / 3):
            with self._io:
                if self._stop.is_set() or not self.held():
                    return                 # fenced off: a newer generation exists
                try:
                    self._rewrite()
                except Exception:  # noqa: BLE001 - the next beat retries; a missed one is harmless
                    pass

    def held(self) -> bool:
        """Whether this process still holds the lease: its generation's file holds its token
        and no newer generation exists."""
        if not self.generation:
            return False
        cur = self._read(self.path(self.generation))
        if cur is None or cur.get("owner") != self.owner or cur.get("released"):
            return False
        gens = self.generations()
        return bool(gens) and gens[-1] == self.generation

    def release(self) -> None:
        """Stop the heartbeat and mark the lease released (if still held), so the next
        process takes it at once."""
        self._stop.set()
        with self._io:
            if self.held():
                try:
                    self._rewrite(released=True)
                except Exception:  # noqa: BLE001 - then it expires after lease_timeout
                    pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
