"""Tables a stream is joined with (``hdb.table(...)``): a frozen spec of where the rows are.

A :class:`TableSpec` holds an in-memory Arrow table (from Arrow, pandas or polars) or a
Parquet URL or glob read through fsspec (local files, ``memory://``, ``s3://``...), and how often
to read the URL again (``refresh``).  It is configuration, like a source spec: usable in
several jobs, each of which reads it when it opens (``read``) and builds its own index
(``heliosdb.operators.lookup``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Tuple

import pyarrow as pa

from .._optional import require_storage
from ..config import Duration, to_nanos
from ..errors import ConfigError, DataError, SchemaError
from .sources import to_arrow_table

__all__ = ["TableSpec", "table"]


@dataclass(frozen=True, eq=False)
class TableSpec:
    """A table to join a stream with: ``data`` (a pyarrow Table) or ``url`` (Parquet files),
    re-read every ``refresh_ns`` (URLs only; None: read once per job).  Make it with
    :func:`table`.

    ``schema`` is the table's (a URL's first file's, read when the spec is made); a later
    version of the files must have those columns with those types (else that reload fails
    and the version in use stays).

    Examples
    --------
    >>> spec = TableSpec(data=pa.table({"id": [1, 2], "name": ["a", "b"]}))
    >>> spec.schema.names, spec.read(["name"]).to_pydict()
    (['id', 'name'], {'name': ['a', 'b']})
    """

    data: Optional[pa.Table] = field(default=None, repr=False)
    url: Optional[str] = None
    refresh_ns: Optional[int] = None
    storage_options: Optional[dict] = field(default=None, repr=False)
    schema: pa.Schema = field(default=None, repr=False)      # type: ignore[assignment]

    def __post_init__(self) -> None:
        if (self.data is None) == (self.url is None):
            raise ConfigError("a table needs exactly one of data= (an Arrow table) or url= (Parquet files)")
        if self.refresh_ns is not None and (self.url is None or self.refresh_ns <= 0):
            raise ConfigError(
                "hdb.table(refresh=) re-reads a Parquet URL and must be a positive duration; an "
                f"in-memory table never changes (got refresh={self.refresh_ns} ns for "
                f"{'a URL' if self.url else 'an in-memory table'}). Build a new hdb.table() for new data")
        if self.storage_options is not None and self.url is None:
            raise ConfigError("hdb.table(storage_options=) applies to a URL, not to an in-memory table")
        if self.schema is None:
            schema = self.data.schema if self.data is not None else self._files_schema()
            object.__setattr__(self, "schema", schema)

    # -- reading ----------------------------------------------------------------------------------
    def _fs(self) -> Tuple[Any, str]:
        import fsspec

        return fsspec.core.url_to_fs(self.url, **(self.storage_options or {}))

    def files(self) -> Tuple[Any, Tuple[str, ...]]:
        """(file system, the Parquet files the URL names now, in order).  A folder means the
        ``.parquet`` files under it (not ``_``/``.``-prefixed ones); a glob, its matches.

        >>> import tempfile, pyarrow as pa, pyarrow.parquet as pq, heliosdb as hdb
        >>> folder = tempfile.mkdtemp()
        >>> for name in ("b.parquet", "a.parquet", "_tmp.parquet"):
        ...     pq.write_table(pa.table({"id": [1]}), f"{folder}/{name}")
        >>> [p.rsplit("/", 1)[-1] for p in hdb.table(folder).files()[1]]
        ['a.parquet', 'b.parquet']
        """
        fs, path = self._fs()
        fs.invalidate_cache()
        if any(ch in path for ch in "*?["):
            found = sorted(fs.glob(path))
        elif fs.isdir(path):
            found = sorted(p for p in fs.find(path) if p.endswith(".parquet")
                           and not p.rsplit("/", 1)[-1].startswith(("_", ".")))
        else:
            found = [path] if fs.exists(path) else []
        if not found:
            raise ConfigError(f"hdb.table({self.url!r}): no Parquet files found at that path or glob")
        return fs, tuple(found)

    def _files_schema(self) -> pa.Schema:
        import pyarrow.parquet as pq

        require_storage(self.url, "hdb.table()")
        fs, files = self.files()
        try:
            with fs.open(files[0], "rb") as f:
                return pq.read_schema(f)
        except Exception as exc:
            raise DataError(f"hdb.table: cannot read the schema of {files[0]!r}: {exc}") from exc

    def read(self, columns: Sequence[str]) -> pa.Table:
        """The table's current version with ``columns`` (a URL is listed and read again).

        Raises SchemaError when a file lacks a column or has another type, DataError when a
        file cannot be read; the message names the file.

        >>> import pyarrow as pa, heliosdb as hdb
        >>> hdb.table(pa.table({"id": [1, 2], "name": ["ann", "bob"]})).read(["name"]).to_pydict()
        {'name': ['ann', 'bob']}
        """
        columns = list(columns)
        want = pa.schema([self.schema.field(c) for c in columns])
        if self.data is not None:
            return self.data.select(columns)
        import pyarrow.parquet as pq

        fs, files = self.files()
        parts = []
        for path in files:
            try:
                with fs.open(path, "rb") as f:
                    t = pq.read_table(f, columns=columns)
            except Exception as exc:
                raise DataError(f"hdb.table: cannot read {path!r}: {type(exc).__name__}: {exc}") from exc
            for fld in want:
                got = t.schema.field(fld.name).type
                if got != fld.type:
                    raise SchemaError(f"hdb.table: file {path!r}, column {fld.name!r} is {got}, but the "
                                      f"table's is {fld.type} (its first file's when the spec was made)")
            parts.append(t.select(columns).cast(want))
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    def describe(self) -> str:
        """What explain() says of the table.

        >>> import pyarrow as pa, heliosdb as hdb
        >>> hdb.table(pa.table({"id": [1, 2], "name": ["ann", "bob"]})).describe()
        'arrow table (2 rows, columns id, name)'
        """
        if self.data is not None:
            return f"arrow table ({self.data.num_rows:,} rows, columns {', '.join(self.schema.names)})"
        every = "" if self.refresh_ns is None else f", refreshed every {self.refresh_ns / 1e9:g}s"
        return f"parquet {self.url!r}{every}"


def table(data: Any, refresh: Optional[Duration] = None, storage_options: Optional[dict] = None) -> TableSpec:
    """A table to join streams with: ``stream.join(hdb.table(...), on=...)`` (a lookup join).

    Parameters
    ----------
    data
        A pyarrow Table (or RecordBatch), a pandas or polars DataFrame, or the URL or glob of
        Parquet files (any fsspec file system: a path, ``memory://``, ``s3://``...).
    refresh
        For a URL: read it again every ``refresh`` (a ``timedelta`` or seconds) in the
        background and swap the new version in between two batches, without stopping the
        stream.  A failed read (a missing or broken file, a changed schema) keeps the version
        in use; it is logged once (until a read succeeds again) and counted in
        ``streaming_lookup_table_refresh_failures_total``.  None: read once, when the job
        starts.
    storage_options
        For a URL: the file system's options (e.g. S3 credentials and endpoint).

    The spec is frozen and holds no job state: every job that uses it reads the table when it
    starts (a job restored from a checkpoint reads it again; no table row is checkpointed).

    Examples
    --------
    >>> import heliosdb as hdb
    >>> users = hdb.table(pa.table({"id": [1, 2], "name": ["ann", "bob"]}))
    >>> users.schema.names
    ['id', 'name']
    >>> import pyarrow.parquet as pq, fsspec
    >>> with fsspec.open("memory://doc-table/users.parquet", "wb") as f:
    ...     pq.write_table(pa.table({"id": [1], "name": ["ann"]}), f)
    >>> hdb.table("memory://doc-table/", refresh=60).describe()
    "parquet 'memory://doc-table/', refreshed every 60s"
    """
    refresh_ns = None if refresh is None else to_nanos(refresh, "hdb.table(refresh=)")
    if isinstance(data, str):
        return TableSpec(url=data, refresh_ns=refresh_ns, storage_options=storage_options)
    if refresh is not None:
        raise ConfigError(
            "hdb.table(refresh=) re-reads a Parquet URL; an in-memory table never changes. Pass the "
            "files' URL to have them re-read, or build a new hdb.table() for new data")
    if storage_options is not None:
        raise ConfigError("hdb.table(storage_options=) applies to a URL, not to an in-memory table")
    return TableSpec(data=to_arrow_table(data, "hdb.table"))
