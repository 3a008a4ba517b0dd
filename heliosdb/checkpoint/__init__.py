"""Checkpoints: the coordinator (epochs, commit order, restore), storage, and queryable state.

:func:`read_state` opens a checkpoint's state as an Arrow table, for pandas or DuckDB;
:func:`read_state_info` also says which checkpoint it read.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import pyarrow as pa

from ..errors import CheckpointError
from .coordinator import logical_name
from .storage import IncompleteCheckpoint, Store

__all__ = ["StateRead", "read_state", "read_state_info"]

log = logging.getLogger("heliosdb.checkpoint")

#: Schema metadata keys of :func:`read_state`'s table: which checkpoint it was read from.
EPOCH_KEY = b"heliosdb.checkpoint.epoch"
CHECKPOINT_KEY = b"heliosdb.checkpoint.path"


@dataclass(frozen=True)
class StateRead:
    """What :func:`read_state_info` read: the ``table``, the ``epoch`` and folder
    (``checkpoint``) of the checkpoint it came from, and the newer checkpoints it ``skipped``
    as unusable, as ``(epoch, reason)``."""

    table: pa.Table
    epoch: int
    checkpoint: str
    skipped: List[Tuple[int, str]] = field(default_factory=list)


def read_state(url: str, operator: str, table: Optional[str] = None,
               storage_options: Optional[dict] = None) -> pa.Table:
    """The state of ``operator`` in a checkpoint, as one Arrow table (all subtasks).

    ``url`` is a job's checkpoint directory (``{storage}/{job}``: its newest usable checkpoint
    is read, older ones if newer ones are unusable, each skip logged as a warning) or one
    checkpoint (``.../chk-0000000007``).  ``operator`` is the step name
    (``window-3``, or the name given with ``.name()``).  Window operators hold one row per
    open (pane or window, key) with its accumulators, sessions one row per open session, running
    aggregates one row per key; ``table`` picks another of the operator's tables (e.g.
    ``"distinct.u"`` for count_distinct values).  The manifest is checked and the files are
    verified against its checksums first; nothing is unpickled.  Anything unusable raises
    CheckpointError.

    The table's schema metadata says which checkpoint it came from:
    ``b"heliosdb.checkpoint.epoch"`` (the epoch, as text) and ``b"heliosdb.checkpoint.path"``
    (its folder); :func:`read_state_info` returns the same with the checkpoints it skipped.

    Examples
    --------
    >>> import heliosdb as hdb, tempfile
    >>> from datetime import timedelta
    >>> from heliosdb.checkpoint import read_state
    >>> d = tempfile.mkdtemp()
    >>> cfg = hdb.StreamingConfig(checkpoint=hdb.CheckpointConfig(interval=timedelta(hours=1), storage=d))
    >>> env = hdb.StreamEnvironment(cfg)
    >>> rows = [{"k": "a", "v": 1}, {"k": "b", "v": 2}, {"k": "a", "v": 3}]
    >>> _ = env.from_arrow(pa.Table.from_pylist(rows)).key_by("k").aggregate(total=hdb.sum("v")).name("totals").sink(hdb.sinks.memory())
    >>> _ = env.execute(name="doc-state")
    >>> state = read_state(f"{d}/doc-state", operator="totals")
    >>> state.select(["k", "v.sum"]).sort_by("k").to_pydict()
    {'k': ['a', 'b'], 'v.sum': [4, 2]}
    >>> state.schema.metadata[b"heliosdb.checkpoint.epoch"]
    b'1'
    """
    return read_state_info(url, operator, table, storage_options).table


def read_state_info(url: str, operator: str, table: Optional[str] = None,
                    storage_options: Optional[dict] = None) -> StateRead:
    """:func:`read_state`, returning which checkpoint was read and which were skipped.

    Examples
    --------
    >>> import heliosdb as hdb, tempfile
    >>> from datetime import timedelta
    >>> d = tempfile.mkdtemp()
    >>> cfg = hdb.StreamingConfig(checkpoint=hdb.CheckpointConfig(interval=timedelta(hours=1), storage=d))
    >>> env = hdb.StreamEnvironment(cfg)
    >>> _ = env.from_arrow(pa.table({"k": ["a"], "v": [1]})).key_by("k").aggregate(n=hdb.count()).name("n").sink(hdb.sinks.memory())
    >>> _ = env.execute(name="doc-info")
    >>> info = read_state_info(f"{d}/doc-info", operator="n")
    >>> info.epoch, info.checkpoint.endswith("doc-info/chk-0000000001"), info.skipped, info.table.num_rows
    (1, True, [], 1)
    """
    url = url.rstrip("/")
    m = re.search(r"/chk-(\d{10})$", url)
    job_url = url[: m.start()] if m else url
    root, _, job = job_url.rpartition("/")
    store = Store(root or "/", job, storage_options)
    if m:
        candidates = [int(m.group(1))]
    else:
        candidates = list(reversed(store.epochs()))
    manifest = None
    skipped: List[Tuple[int, str]] = []
    for e in candidates:
        try:
            manifest = store.read_manifest(e)
            data = store.verify(manifest)
            break
        except IncompleteCheckpoint as exc:
            if m:
                skipped.append((e, str(exc)))
        except CheckpointError as exc:
            skipped.append((e, str(exc)))
            if not m:
                log.warning("read_state: checkpoint %d of %r is unusable (%s); reading the previous one", e, job_url, exc)
        manifest = None
    if manifest is None:
        errors = [reason for _, reason in skipped]
        raise CheckpointError(f"no intact checkpoint at {url!r}" + (f": {'; '.join(errors)}" if errors else ""))
    epoch = manifest["epoch"]
    entries = [e for n, e in manifest["operators"].items() if e["logical"] == operator or n == operator]
    if not entries:
        names = sorted({e["logical"] for e in manifest["operators"].values()})
        raise CheckpointError(f"checkpoint {epoch} has no state for operator {operator!r}; it has {names}")
    parts = []
    for e in entries:
        names = list(e["files"])
        want = table or next((n for n in ("groups", "sessions", "keys") if n in names), None)
        if want is None or want not in e["files"]:
            if table is not None:
                raise CheckpointError(f"operator {operator!r} has no table {table!r}; it has {names}")
            continue
        parts += [store.read_table(f, data.get(f["path"])) for f in e["files"][want]]
    if not parts:
        raise CheckpointError(f"operator {operator!r} holds no state in checkpoint {epoch}")
    try:
        out = pa.concat_tables(parts)
    except pa.ArrowInvalid as exc:
        raise CheckpointError(f"checkpoint {epoch}: the files of operator {operator!r} have different schemas "
                              f"({exc})") from None
    where = f"{store.url.rstrip('/')}/{job}/chk-{epoch:010d}" if not m else url
    meta = dict(out.schema.metadata or {})
    meta.update({EPOCH_KEY: str(epoch).encode(), CHECKPOINT_KEY: where.encode()})
    return StateRead(out.replace_schema_metadata(meta), epoch, where, skipped)
