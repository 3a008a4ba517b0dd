"""Checkpoints: the coordinator (epochs, commit order, restore), storage, and queryable state.

:func:`read_state` opens a checkpoint's state as an Arrow table, for pandas or DuckDB.
"""
from __future__ import annotations

import re
from typing import Optional

import pyarrow as pa

from ..errors import CheckpointError
from .coordinator import logical_name
from .storage import Store

__all__ = ["read_state"]


def read_state(url: str, operator: str, table: Optional[str] = None,
               storage_options: Optional[dict] = None) -> pa.Table:
    """The state of ``operator`` in a checkpoint, as one Arrow table (all subtasks).

    ``url`` is a job's checkpoint directory (``{storage}/{job}``: its newest intact checkpoint
    is read) or one checkpoint (``.../chk-0000000007``).  ``operator`` is the step name
    (``window-3``, or the name given with ``.name()``).  Window operators hold one row per
    open (pane or window, key) with its accumulators, sessions one row per open session, running
    aggregates one row per key; ``table`` picks another of the operator's tables (e.g.
    ``"distinct.user"`` for count_distinct values).  Files are verified against the manifest's
    checksums first; nothing is unpickled.

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
    >>> read_state(f"{d}/doc-state", operator="totals").select(["k", "v.sum"]).sort_by("k").to_pydict()
    {'k': ['a', 'b'], 'v.sum': [4, 2]}
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
    errors = []
    for e in candidates:
        try:
            manifest = store.read_manifest(e)
            data = store.verify(manifest)
            break
        except CheckpointError as exc:
            errors.append(str(exc))
            manifest = None
    if manifest is None:
        raise CheckpointError(f"no intact checkpoint at {url!r}" + (f": {'; '.join(errors)}" if errors else ""))
    entries = [e for n, e in manifest["operators"].items() if e["logical"] == operator or n == operator]
    if not entries:
        names = sorted({e["logical"] for e in manifest["operators"].values()})
        raise CheckpointError(f"checkpoint {manifest['epoch']} has no state for operator {operator!r}; it has {names}")
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
        raise CheckpointError(f"operator {operator!r} holds no state in checkpoint {manifest['epoch']}")
    return pa.concat_tables(parts)
