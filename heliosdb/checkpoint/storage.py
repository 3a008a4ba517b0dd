"""Checkpoint files through fsspec: confined paths, checksummed Parquet, manifests.

Layout under the storage root::

    {storage}/{job}/_lease/gen-{generation:010d}.json             who writes this job directory
    {storage}/{job}/chk-{epoch:010d}/{operator}/{subtask}-{table}-{uuid}.parquet
    {storage}/{job}/chk-{epoch:010d}/_manifest.json              written last: the commit point

Every path is built from validated name segments, so nothing is ever written outside the root
(no ``..``, absolute paths or other schemes in names).  Manifests are JSON, checked by
:mod:`.manifest` before use, and name files relative to the job's folder (so the folder can be
moved); state is Parquet: nothing on the restore path is unpickled.  A state file is read into
memory, checked against the manifest's size and CRC-32, and decoded from that copy: it is never
memory-mapped, so a file truncated or rewritten by another process while a restore reads it
fails the checksum (CheckpointError) instead of killing the process with SIGBUS.

The one-writer lease is in :mod:`.lease`.
"""
from __future__ import annotations

import json
import os
import re
import uuid
import zlib
from typing import Any, Dict, List, Optional

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from ..errors import CheckpointError, ConfigError
from .manifest import FORMAT_VERSION, check_manifest, manifest_files, parse_manifest

__all__ = ["FORMAT_VERSION", "MANIFEST", "IncompleteCheckpoint", "Store", "crc32", "failpoint",
           "manifest_files", "segment"]

MANIFEST = "_manifest.json"
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
        self.dir = f"{self.root}/{self.job}" if self.root != "/" else f"/{self.job}"
        self.local = isinstance(self.fs, LocalFileSystem)

    # -- paths -----------------------------------------------------------------------------------
    def chk(self, epoch: int) -> str:
        return f"{self.dir}/chk-{epoch:010d}"

    def path(self, epoch: int, *parts: str) -> str:
        return "/".join([self.chk(epoch)] + [segment(p, "checkpoint file name part") for p in parts])

    def relative(self, path: str) -> str:
        """A manifest's file path as a path relative to this job's folder: relative paths as
        they are, absolute ones (manifests written before checkpoints were relocatable) if they
        lie in the job's folder where it is now; CheckpointError for anything else (manifests
        are data too).

        >>> s = Store("memory://ck", "job")
        >>> s.relative("chk-0000000001/agg/agg#0-groups-0123456789ab.parquet")
        'chk-0000000001/agg/agg#0-groups-0123456789ab.parquet'
        >>> s.relative("/ck/job/chk-0000000001/agg/x.parquet")
        'chk-0000000001/agg/x.parquet'
        >>> s.relative("/etc/passwd")
        Traceback (most recent call last):
        heliosdb.errors.CheckpointError: checkpoint of job 'job' references '/etc/passwd', outside '/ck/job'
        """
        outside = CheckpointError(f"checkpoint of job {self.job!r} references {path!r}, outside {self.dir!r}")
        if not isinstance(path, str) or not path or "\\" in path or "\x00" in path:
            raise outside
        if path.startswith(self.dir + "/"):
            rel = path[len(self.dir) + 1:]
        elif path.startswith("/") or "://" in path or (self.local and os.path.isabs(path)):
            raise outside
        else:
            rel = path
        parts = rel.split("/")
        if any(not _SEGMENT.match(p) or ".." in p for p in parts):
            raise outside
        return rel

    def file(self, rel: str) -> str:
        """The full path of a file named relative to the job's folder (checked first)."""
        return f"{self.dir}/{self.relative(rel)}"

    def epochs(self) -> List[int]:
        """Epochs with a checkpoint directory, ascending."""
        try:
            self.fs.invalidate_cache(self.dir)
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.dir, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for m in (_CHK.match(n) for n in names) if m)

    # -- files -----------------------------------------------------------------------------------
    def write_table(self, epoch: int, operator: str, subtask: str, name: str, table: pa.Table,
                    compression: str, written: Optional[List[str]] = None) -> Dict[str, Any]:
        """Write ``table`` as Parquet under a unique name; returns its manifest entry (path
        relative to the job's folder).  ``written`` collects the file's full path before a
        byte is written, so a failed epoch can remove exactly the files its writer made."""
        rel = f"chk-{epoch:010d}/{segment(operator, 'step name')}/" \
              f"{segment(f'{subtask}-{name}-{uuid.uuid4().hex[:12]}.parquet', 'checkpoint file name')}"
        path = f"{self.dir}/{rel}"
        sink = pa.BufferOutputStream()
        # Dictionary encoding only where it pays (strings): accumulators and ids are
        # high-cardinality numbers, for which it costs time on both ends and saves nothing.
        strings = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        pq.write_table(table, sink, compression=None if compression == "none" else compression,
                       use_dictionary=strings, write_statistics=False)
        buf = sink.getvalue()
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        if written is not None:
            written.append(path)
        with self.fs.open(path, "wb") as f:
            half = buf.size // 2
            f.write(memoryview(buf)[:half])
            if os.environ.get("HELIOSDB_FAILPOINT") == "mid-data-file":
                f.flush()
                failpoint("mid-data-file")
            f.write(memoryview(buf)[half:])
        return {"path": rel, "size": buf.size, "crc32": crc32(buf), "rows": table.num_rows,
                "schema": table.schema.to_string(show_schema_metadata=False)}

    def read_table(self, entry: Dict[str, Any], data=None) -> pa.Table:
        """The table of a (checked) manifest entry (``data``: its bytes, already verified).

        A file that does not decode, or decodes to another number of rows than the manifest
        says, raises CheckpointError."""
        if data is None:
            data = self._verified(entry)
        try:
            # ParquetFile.read gives each column as one chunk (read_table cuts them in 128K-row
            # chunks), which a restore can keep as its arrays without concatenating them.
            table = pq.ParquetFile(pa.BufferReader(data)).read()
        except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
            raise CheckpointError(f"checkpoint file {entry['path']!r} of job {self.job!r} is not readable "
                                  f"Parquet ({type(exc).__name__}: {exc})") from None
        if table.num_rows != entry["rows"]:
            raise CheckpointError(f"checkpoint file {entry['path']!r} of job {self.job!r} holds {table.num_rows} "
                                  f"rows, the manifest says {entry['rows']}")
        return table

    def _verified(self, entry: Dict[str, Any]):
        path = self.file(entry["path"])
        try:
            data = self._read_bytes(path)
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint file {path!r} is missing") from None
        except OSError as exc:
            raise CheckpointError(f"checkpoint file {path!r} cannot be read: {exc}") from None
        if len(data) != entry["size"]:
            raise CheckpointError(f"checkpoint file {path!r} has {len(data)} bytes, the manifest says {entry['size']}")
        if crc32(data) != entry["crc32"]:
            raise CheckpointError(f"checkpoint file {path!r} fails its checksum (corrupted)")
        return data

    def _read_bytes(self, path: str):
        """The file's bytes, read into memory (a ``pyarrow.Buffer`` for a local file): a copy
        no other process can change, unlike a memory map, whose pages fault with SIGBUS when
        the file is truncated under it."""
        if self.local:
            with pa.OSFile(path, "r") as f:
                return f.read_buffer()
        return self.fs.cat_file(path)

    def verify(self, manifest: Dict[str, Any]) -> Dict[str, Any]:
        """Raise CheckpointError unless every file the (checked) manifest lists is intact;
        returns the files' bytes by their relative path, so a restore reads each file once."""
        return {entry["path"]: self._verified(entry) for entry in manifest_files(manifest)}

    def write_manifest(self, epoch: int, manifest: Dict[str, Any], written: Optional[List[str]] = None) -> None:
        from .manifest import checksum

        manifest = dict(manifest, checksum=checksum(manifest))
        data = json.dumps(manifest, sort_keys=True, indent=1).encode()
        final = f"{self.chk(epoch)}/{MANIFEST}"
        tmp = f"{self.chk(epoch)}/.{MANIFEST}.{uuid.uuid4().hex[:8]}"
        self.fs.makedirs(self.chk(epoch), exist_ok=True)
        if written is not None:
            written.append(tmp)
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, final)

    def read_manifest(self, epoch: int) -> Dict[str, Any]:
        """The checked manifest of checkpoint ``epoch`` (file paths relative to the job's
        folder); IncompleteCheckpoint if it has none, CheckpointError if it is unusable."""
        path = f"{self.chk(epoch)}/{MANIFEST}"
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            raise IncompleteCheckpoint(f"checkpoint {epoch} of job {self.job!r} has no manifest (incomplete)") from None
        except OSError as exc:
            raise CheckpointError(f"checkpoint manifest {path!r} cannot be read: {exc}") from None
        return check_manifest(parse_manifest(data, repr(path)), epoch, repr(path), self.relative)

    def delete(self, epoch: int) -> None:
        """Remove checkpoint ``epoch``'s folder (the caller has made sure it may)."""
        try:
            self.fs.rm(self.chk(epoch), recursive=True)
        except FileNotFoundError:
            pass

    def delete_files(self, paths: List[str], epoch: int) -> None:
        """Remove the files ``paths`` (full paths) and then checkpoint ``epoch``'s folder if it
        is left empty: what a failed epoch's writer made, and nothing another writer put there."""
        for p in paths:
            try:
                self.fs.rm_file(p)
            except FileNotFoundError:
                pass
        if self.local:
            for folder in sorted({p.rsplit("/", 1)[0] for p in paths} | {self.chk(epoch)}, key=len, reverse=True):
                try:
                    os.rmdir(folder)
                except OSError:
                    pass                  # not empty (another writer's files) or already gone
