"""Checkpoint files through fsspec: confined paths, checksummed Parquet, manifests, the lease.

Layout under the storage root::

    {storage}/{job}/_lease.json                                  who writes this job directory
    {storage}/{job}/chk-{epoch:010d}/{operator}/{subtask}-{table}-{uuid}.parquet
    {storage}/{job}/chk-{epoch:010d}/_manifest.json              written last: the commit point

Every path is built from validated name segments, so nothing is ever written outside the root
(no ``..``, absolute paths or other schemes in names).  Manifests are JSON and state is Parquet:
nothing on the restore path is unpickled.
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from ..errors import CheckpointError, ConfigError

FORMAT_VERSION = 1
MANIFEST = "_manifest.json"
LEASE = "_lease.json"
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.#=-]{0,200}$")
_CHK = re.compile(r"^chk-(\d{10})$")


def failpoint(name: str) -> None:
    """Crash the process here (SIGKILL-like, no cleanup) if ``HELIOSDB_FAILPOINT`` names this
    point: used by the crash tests (``mid-data-file``, ``before-manifest``,
    ``after-manifest``)."""
    if os.environ.get("HELIOSDB_FAILPOINT") == name:
        os._exit(137)


def segment(name: str, what: str) -> str:
    """A name that becomes one path segment: plain characters only, never ``.``/``..``."""
    if not isinstance(name, str) or not _SEGMENT.match(name) or name in (".", "..") or ".." in name:
        raise ConfigError(
            f"{what} {name!r} cannot be used in a checkpoint path: use letters, digits, '_', '-', "
            "'.', '#', '=' (no '..', no '/', not starting with '.' or '_')"
        )
    return name


class IncompleteCheckpoint(CheckpointError):
    """A checkpoint directory without a manifest: its epoch never committed."""


def _manifest_checksum(m: Dict[str, Any]) -> int:
    body = {k: v for k, v in m.items() if k != "checksum"}
    return crc32(json.dumps(body, sort_keys=True).encode())


def crc32(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


class Store:
    """The checkpoint directory of one job on an fsspec filesystem."""

    def __init__(self, url: str, job: str, storage_options: Optional[dict] = None):
        import fsspec

        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = root.rstrip("/") or "/"
        self.job = segment(job, "job name")
        self.dir = f"{self.root}/{self.job}"

    # -- paths -----------------------------------------------------------------------------------
    def chk(self, epoch: int) -> str:
        return f"{self.dir}/chk-{epoch:010d}"

    def path(self, epoch: int, *parts: str) -> str:
        return "/".join([self.chk(epoch)] + [segment(p, "checkpoint file name part") for p in parts])

    def inside(self, path: str) -> str:
        """``path`` if it lies in this job's directory, else an error (manifests are data too)."""
        norm = os.path.normpath(path) if not self.fs.protocol or "file" in self.fs.protocol else path
        if ".." in path.split("/") or not (norm == self.dir or norm.startswith(self.dir + "/")):
            raise CheckpointError(f"checkpoint of job {self.job!r} references {path!r}, outside {self.dir!r}")
        return path

    def epochs(self) -> List[int]:
        """Epochs with a checkpoint directory, ascending."""
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.dir, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for m in (_CHK.match(n) for n in names) if m)

    # -- files -----------------------------------------------------------------------------------
    def write_table(self, epoch: int, operator: str, subtask: str, name: str, table: pa.Table,
                    compression: str) -> Dict[str, Any]:
        """Write ``table`` as Parquet under a unique name; returns its manifest entry."""
        path = self.path(epoch, operator, f"{subtask}-{name}-{uuid.uuid4().hex[:12]}.parquet")
        sink = pa.BufferOutputStream()
        # Dictionary encoding only where it pays (strings): accumulators and ids are
        # high-cardinality numbers, for which it costs time on both ends and saves nothing.
        strings = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        pq.write_table(table, sink, compression=None if compression == "none" else compression,
                       use_dictionary=strings, write_statistics=False)
        buf = sink.getvalue()
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(path, "wb") as f:
            half = buf.size // 2
            f.write(memoryview(buf)[:half])
            if os.environ.get("HELIOSDB_FAILPOINT") == "mid-data-file":
                f.flush()
                failpoint("mid-data-file")
            f.write(memoryview(buf)[half:])
        return {"path": path, "size": buf.size, "crc32": crc32(buf), "rows": table.num_rows,
                "schema": table.schema.to_string(show_schema_metadata=False)}

    def read_table(self, entry: Dict[str, Any], data=None) -> pa.Table:
        """The table of a manifest entry (``data``: its bytes or buffer, already verified)."""
        if data is None:
            data = self._verified(entry)
        # ParquetFile.read gives each column as one chunk (read_table cuts them in 128K-row
        # chunks), which a restore can keep as its arrays without concatenating them.
        return pq.ParquetFile(pa.BufferReader(data)).read()

    def _verified(self, entry: Dict[str, Any]):
        path = self.inside(entry["path"])
        try:
            data = self._read_bytes(path)
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint file {path!r} is missing") from None
        if len(data) != entry["size"]:
            raise CheckpointError(f"checkpoint file {path!r} has {len(data)} bytes, the manifest says {entry['size']}")
        if crc32(data) != entry["crc32"]:
            raise CheckpointError(f"checkpoint file {path!r} fails its checksum (corrupted)")
        return data

    def _read_bytes(self, path: str):
        """The file's bytes: on local disk a memory map of it (pages from the page cache, no
        copy: a restore of a large state would otherwise fault in a fresh buffer as large as
        the file); elsewhere its contents, read whole."""
        if isinstance(self.fs, LocalFileSystem):
            if os.path.getsize(path) == 0:
                return b""                  # an empty file cannot be mapped
            with pa.memory_map(path, "r") as f:
                return f.read_buffer()      # the buffer keeps the mapping alive
        return self.fs.cat_file(path)

    def verify(self, manifest: Dict[str, Any]) -> Dict[str, Any]:
        """Raise CheckpointError unless every file the manifest lists is intact; returns the
        files' bytes (a ``pyarrow.Buffer`` mapping a local file) by path, so a restore reads
        each file once."""
        return {entry["path"]: self._verified(entry) for entry in manifest_files(manifest)}

    def write_manifest(self, epoch: int, manifest: Dict[str, Any]) -> None:
        manifest = dict(manifest, checksum=_manifest_checksum(manifest))
        data = json.dumps(manifest, sort_keys=True, indent=1).encode()
        final = f"{self.chk(epoch)}/{MANIFEST}"
        tmp = f"{self.chk(epoch)}/.{MANIFEST}.{uuid.uuid4().hex[:8]}"
        self.fs.makedirs(self.chk(epoch), exist_ok=True)
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, final)

    def read_manifest(self, epoch: int) -> Dict[str, Any]:
        path = f"{self.chk(epoch)}/{MANIFEST}"
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            raise IncompleteCheckpoint(f"checkpoint {epoch} of job {self.job!r} has no manifest (incomplete)") from None
        try:
            m = json.loads(data)
        except ValueError as exc:
            raise CheckpointError(f"checkpoint manifest {path!r} is not valid JSON: {exc}") from None
        if not isinstance(m, dict) or m.get("format_version") != FORMAT_VERSION or m.get("epoch") != epoch:
            raise CheckpointError(f"checkpoint manifest {path!r} is empty or of another format/epoch")
        missing = [k for k in ("source", "operators", "sinks") if k not in m]
        if missing or not isinstance(m["operators"], dict) or not isinstance(m["sinks"], dict):
            raise CheckpointError(f"checkpoint manifest {path!r} lacks {missing or 'well-formed operators/sinks'}")
        for entry in manifest_files(m):
            self.inside(entry["path"])         # names the file if it points elsewhere
        if m.get("checksum") != _manifest_checksum(m):
            raise CheckpointError(f"checkpoint manifest {path!r} fails its checksum (edited or corrupted)")
        return m

    def delete(self, epoch: int) -> None:
        try:
            self.fs.rm(self.chk(epoch), recursive=True)
        except FileNotFoundError:
            pass


def manifest_files(manifest: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every file a manifest references: operator state and sinks' pre-committed output."""
    out = []
    for group in ("operators", "sinks"):
        for op in manifest.get(group, {}).values():
            for entries in op.get("files", {}).values():
                out.extend(entries)
    return out


@dataclass
class Lease:
    """One writer per job directory: ``_lease.json`` holds a generation number, the owner and a
    heartbeat.  A live owner (fresh heartbeat, and on this host a running pid) keeps others out;
    each taker bumps the generation, and a writer whose generation is no longer the lease's
    has been fenced off and must not commit."""

    store: Store
    timeout_s: float
    generation: int = 0

    def __post_init__(self) -> None:
        self.owner = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def path(self) -> str:
        return f"{self.store.dir}/{LEASE}"

    def _read(self) -> Optional[Dict[str, Any]]:
        try:
            return json.loads(self.store.fs.cat_file(self.path))
        except FileNotFoundError:
            return None
        except ValueError:
            return None          # torn lease file: its writer died mid-write

    @staticmethod
    def _alive(lease: Dict[str, Any], timeout_s: float) -> bool:
        if time.time() - lease.get("heartbeat", 0) > timeout_s:
            return False
        if lease.get("host") == socket.gethostname():
            try:
                os.kill(int(lease.get("pid", -1)), 0)
            except (OSError, ValueError):
                return False
        return True

    def acquire(self) -> None:
        cur = self._read()
        if cur is not None and cur.get("owner") != self.owner and self._alive(cur, self.timeout_s):
            raise CheckpointError(
                f"job {self.store.job!r} is already running (lease generation {cur.get('generation')} held by "
                f"pid {cur.get('pid')} on {cur.get('host')}); one writer per job directory: stop it, or "
                "use another job name"
            )
        self.generation = (cur or {}).get("generation", 0) + 1
        self._write()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"{self.store.job}:lease")
        self._thread.start()

    def _write(self) -> None:
        self.store.fs.makedirs(self.store.dir, exist_ok=True)
        data = {"generation": self.generation, "owner": self.owner, "host": socket.gethostname(),
                "pid": os.getpid(), "heartbeat": time.time()}
        self.store.fs.pipe_file(self.path, json.dumps(data).encode())

    def _beat(self) -> None:
        while not self._stop.wait(self.timeout_s / 3):
            if self.held():
                self._write()

    def held(self) -> bool:
        cur = self._read()
        return cur is not None and cur.get("owner") == self.owner and cur.get("generation") == self.generation

    def release(self) -> None:
        self._stop.set()
        if self.held():
            try:
                self.store.fs.rm(self.path)
            except FileNotFoundError:
                pass

