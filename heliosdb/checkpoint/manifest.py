"""Checkpoint manifests: the one place that decides whether a ``_manifest.json`` may be used.

A manifest is data read back from storage, so it is checked like input: :func:`check_manifest`
takes the parsed JSON and either returns a checked copy or raises :class:`CheckpointError`
naming the first thing that is wrong.  Nothing after it indexes a manifest that was not
checked, so a manifest that is valid JSON but of the wrong shape (a key renamed, ``files`` a
string, a negative size, a position that is text) makes its checkpoint unusable, like a
truncated one, instead of failing the restore with a ``KeyError`` deep inside.

The shape (format version 1)::

    {"format_version": 1, "epoch": int >= 1 (its folder's), "job": str,
     "lease_generation": int >= 0, "created_unix_s": number, "size_bytes": int >= 0,
     "source": POSITION,
     "operators": {SUBTASK: {"logical": LOGICAL, "kind": str, "meta": {...},
                             "files": {TABLE: [FILE, ...]}}},
     "sinks":     {SUBTASK: {"meta": {...}, "files": {TABLE: [FILE, ...]}}},
     "checksum": CRC-32 of the rest}
    FILE     = {"path": "chk-{epoch:010d}/{LOGICAL}/{SUBTASK}-{table}-{12 hex}.parquet",
                "size": int >= 0, "crc32": 0 <= int < 2**32, "rows": int >= 0, "schema": str}
    POSITION = null | int >= 0 | [POSITION, ...] | {str: POSITION}   (at most 6 levels)

``SUBTASK`` is a step name, optionally with ``#i``; ``LOGICAL`` is the step name without it.
File paths are relative to the job's folder, so a checkpoint folder can be copied or moved;
manifests written before that hold absolute paths, which are read when they point inside the
job's folder where it is now.  What a position or an operator's ``meta`` mean belongs to the
source and the operator: the coordinator treats their refusal as a defect of the checkpoint.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, Dict, List

from ..errors import CheckpointError

FORMAT_VERSION = 1
#: A manifest lists files, not state: anything larger is not one (and is not parsed).
MAX_MANIFEST_BYTES = 64 * 2**20
#: Sizes past this (256 TiB) are not sizes of checkpoint files.
MAX_FILE_BYTES = 2**48
#: Nesting of source positions (Kafka's is topic -> partition -> [offset, rows]).
MAX_POSITION_DEPTH = 6
_INT64 = 2**63
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.#=-]{0,200}$")
_HEX12 = r"[0-9a-f]{12}"


def checksum(m: Dict[str, Any]) -> int:
    """CRC-32 of a manifest without its ``checksum`` field (keys sorted)."""
    import zlib

    body = {k: v for k, v in m.items() if k != "checksum"}
    return zlib.crc32(json.dumps(body, sort_keys=True).encode()) & 0xFFFFFFFF


def parse_manifest(data: bytes, where: str) -> Any:
    """The JSON of a manifest file, or CheckpointError (too large, not UTF-8, not JSON, nested
    too deep for the parser)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise CheckpointError(f"checkpoint manifest {where} is {len(data):,} bytes, more than any manifest "
                              f"({MAX_MANIFEST_BYTES:,})")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:        # UnicodeDecodeError is a ValueError
        raise CheckpointError(f"checkpoint manifest {where} is not valid JSON: {exc}") from None


def check_manifest(m: Any, epoch: int, where: str, relative: Callable[[str], str]) -> Dict[str, Any]:
    """A checked copy of the parsed manifest ``m`` of checkpoint ``epoch``, with every file's
    ``path`` relative to the job's folder; CheckpointError naming the first defect otherwise.

    ``relative(path)`` turns a stored path into one relative to the job's folder, or raises
    CheckpointError if it points outside it.

    Examples
    --------
    >>> m = {"format_version": 1, "epoch": 3, "job": "j", "source": {"row": 10},
    ...      "operators": {}, "sinks": {}}
    >>> m["checksum"] = checksum(m)
    >>> check_manifest(m, 3, "j/chk-0000000003", lambda p: p)["source"]
    {'row': 10}
    >>> m["source"] = {"row": "ten"}
    >>> m["checksum"] = checksum(m)
    >>> check_manifest(m, 3, "j/chk-0000000003", lambda p: p)
    Traceback (most recent call last):
    heliosdb.errors.CheckpointError: checkpoint manifest j/chk-0000000003: source.row must be an integer >= 0, a list or an object, got 'ten'
    """
    c = _Checker(where)
    c.check(isinstance(m, dict), "", "must be a JSON object", m)
    c.check(m.get("format_version") == FORMAT_VERSION and type(m.get("format_version")) is int,
            "format_version", f"must be {FORMAT_VERSION} (a checkpoint of another format)", m.get("format_version"))
    c.check(type(m.get("epoch")) is int and m.get("epoch") == epoch, "epoch",
            f"must be {epoch}, the epoch of its folder", m.get("epoch"))
    for key in ("source", "operators", "sinks", "checksum"):
        c.check(key in m, key, "is missing", None)
    c.check(type(m["checksum"]) is int, "checksum", "must be an integer", m["checksum"])
    if "job" in m:
        c.check(isinstance(m["job"], str), "job", "must be a string", m["job"])
    for key in ("lease_generation", "size_bytes"):
        if key in m:
            c.check(type(m[key]) is int and 0 <= m[key] < _INT64, key, "must be an integer >= 0", m[key])
    if "created_unix_s" in m:
        v = m["created_unix_s"]
        c.check(type(v) in (int, float) and math.isfinite(v), "created_unix_s", "must be a number", v)
    c.position(m["source"], "source", 0)
    out = dict(m)
    total = 0
    seen: set = set()
    for group in ("operators", "sinks"):
        entries = m[group]
        c.check(isinstance(entries, dict), group, "must be an object of steps", entries)
        checked = {}
        for name, entry in entries.items():
            at = f"{group}.{name}"
            c.check(bool(_NAME.match(name)) and ".." not in name, at, "is not a step name", name)
            c.check(isinstance(entry, dict), at, "must be an object", entry)
            logical = re.sub(r"#\d+$", "", name)
            if group == "operators":
                c.check(entry.get("logical") == logical, f"{at}.logical", f"must be {logical!r}", entry.get("logical"))
                c.check(isinstance(entry.get("kind"), str), f"{at}.kind", "must be a string", entry.get("kind"))
            c.check(isinstance(entry.get("meta", {}), dict), f"{at}.meta", "must be an object", entry.get("meta"))
            files = entry.get("files")
            c.check(isinstance(files, dict), f"{at}.files", "must be an object of tables", files)
            tables = {}
            for tname, listed in files.items():
                c.check(bool(_NAME.match(tname)) and ".." not in tname, f"{at}.files", "names no table", tname)
                c.check(isinstance(listed, list), f"{at}.files.{tname}", "must be a list of files", listed)
                tables[tname] = [c.file(f, f"{at}.files.{tname}[{i}]", epoch, logical, name, tname, relative)
                                 for i, f in enumerate(listed)]
                for i, f in enumerate(tables[tname]):
                    c.check(f["path"] not in seen, f"{at}.files.{tname}[{i}].path", "is listed twice", f["path"])
                    seen.add(f["path"])
                total += sum(f["size"] for f in tables[tname])
            checked[name] = dict(entry, files=tables)
        out[group] = checked
    if "size_bytes" in m:
        c.check(m["size_bytes"] == total, "size_bytes", f"must be the files' total, {total}", m["size_bytes"])
    # Last, so that a manifest edited to point elsewhere is refused naming the path.
    try:
        ok = checksum(m) == m["checksum"]
    except (ValueError, TypeError, RecursionError):
        ok = False
    if not ok:
        raise CheckpointError(f"checkpoint manifest {where} fails its checksum (edited or corrupted)")
    return out


class _Checker:
    """Raises CheckpointError naming the manifest, the field, the rule and the value."""

    def __init__(self, where: str):
        self.where = where

    def check(self, ok: bool, at: str, rule: str, value: Any) -> None:
        if not ok:
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            field = f" {at}" if at else ""
            raise CheckpointError(f"checkpoint manifest {self.where}:{field} {rule}, got {shown}")

    def position(self, v: Any, at: str, depth: int) -> None:
        if v is None:
            return
        self.check(depth < MAX_POSITION_DEPTH, at, f"is nested more than {MAX_POSITION_DEPTH} levels", v)
        ok = (type(v) is int and 0 <= v < _INT64) or isinstance(v, (list, dict))
        self.check(ok, at, "must be an integer >= 0, a list or an object", v)
        if isinstance(v, list):
            for i, x in enumerate(v):
                self.position(x, f"{at}[{i}]", depth + 1)
        elif isinstance(v, dict):
            for k, x in v.items():
                self.position(x, f"{at}.{k}", depth + 1)

    def file(self, f: Any, at: str, epoch: int, logical: str, subtask: str, table: str,
             relative: Callable[[str], str]) -> Dict[str, Any]:
        self.check(isinstance(f, dict), at, "must be an object", f)
        for key, hi in (("size", MAX_FILE_BYTES), ("crc32", 2**32), ("rows", _INT64)):
            v = f.get(key)
            self.check(type(v) is int and 0 <= v < hi, f"{at}.{key}", f"must be an integer in [0, {hi})", v)
        if "schema" in f:
            self.check(isinstance(f["schema"], str), f"{at}.schema", "must be a string", f["schema"])
        path = f.get("path")
        self.check(isinstance(path, str), f"{at}.path", "must be a string", path)
        rel = relative(path)
        want = re.compile(rf"^chk-{epoch:010d}/{re.escape(logical)}/"
                          rf"{re.escape(subtask)}-{re.escape(table.replace('.', '_'))}-{_HEX12}\.parquet$")
        self.check(bool(want.match(rel)), f"{at}.path",
                   f"must name a file of step {subtask!r}, table {table!r} in chk-{epoch:010d}/{logical}/", path)
        return dict(f, path=rel)


def manifest_files(manifest: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every file a (checked) manifest references: operator state and sinks' pre-committed
    output.

    >>> manifest_files({"operators": {"a": {"files": {"t": [{"path": "x"}]}}}, "sinks": {}})
    [{'path': 'x'}]
    """
    out: List[Dict[str, Any]] = []
    for group in ("operators", "sinks"):
        for op in manifest.get(group, {}).values():
            for entries in op.get("files", {}).values():
                out.extend(entries)
    return out
