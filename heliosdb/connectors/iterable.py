"""Python iterables as a source: ``env.from_iterable(records, schema=)``.

A reader thread pulls records into a buffer; the batcher takes what is there when the batch
is full or its timeout expires, so a slow iterable still flows.  Values are kept exactly
(see :mod:`heliosdb.formats.values`): one that would change in its column, and (with
``extra="error"``) a field the schema does not have, is a DataError naming the record's
index (0-based, in the iterable's order) and the field.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, List, Optional, Sized, Tuple

import pyarrow as pa

from ..errors import ConfigError, DataError, SchemaError
from ..formats.values import CONVERT_ERRORS, cast_exact, to_column
from .base import Piece, SourceReader, SourceSpec

#: What ``extra=`` accepts (from_iterable, from_parquet): what to do with fields or columns
#: that the schema does not have.
EXTRA = ("error", "ignore")


def infer_schema(record: dict) -> pa.Schema:
    """The schema of one dict record, as pyarrow infers it.

    >>> infer_schema({"a": 1, "b": "x"}).types
    [DataType(int64), DataType(string)]
    """
    if not isinstance(record, dict):
        raise SchemaError(f"from_iterable: records must be dicts, the first one is {type(record).__name__}")
    return pa.Table.from_pylist([record]).schema


class _Records:
    """The iterable of an :class:`IterableSource` and what was taken from it: the first
    record (read at plan time to infer the schema) and whether a run consumed it."""

    def __init__(self, records: Iterable[dict]):
        self.records = records
        self.it: Optional[Iterator[dict]] = None
        self.first: List[dict] = []
        self.schema: Optional[pa.Schema] = None
        self.consumed = False

    def infer_schema(self) -> pa.Schema:
        if self.schema is None:
            self.it = iter(self.records)
            first = next(self.it, None)
            if first is None:
                raise SchemaError("from_iterable: the iterable is empty, so no schema can be inferred; pass schema=")
            self.first = [first]
            self.schema = infer_schema(first)
        return self.schema

    def take(self) -> Tuple[Iterator[dict], List[dict]]:
        """The records of a run: an iterator, and the records already read from it."""
        if self.it is None or self.consumed:
            if self.consumed and iter(self.records) is self.records:
                raise ConfigError(
                    "from_iterable: this source wraps a one-shot iterator (e.g. a generator) that an "
                    "earlier run consumed; pass a list, or create the source again for each run"
                )
            self.it = iter(self.records)
            self.first = []
        self.consumed = True
        return self.it, self.first


@dataclass(frozen=True, eq=False)
class IterableSource(SourceSpec):
    """Python dict records from any iterable (possibly slow or blocking); see the module
    docstring.  Without ``given_schema`` the schema is inferred from the first record, read
    when the schema is first asked for.

    >>> spec = IterableSource([{"x": 1}, {"x": 2}, {"x": 3}])
    >>> spec.schema.names, spec.inferred
    (['x'], True)
    >>> reader = spec.build()
    >>> reader.open(batch_size=2)
    >>> [b["x"].to_pylist() for b, _ in reader.poll(1.0)]
    [[1, 2]]
    >>> reader.close()
    """

    records: Iterable[dict]
    given_schema: Optional[pa.Schema] = None
    extra: str = "error"
    _records: _Records = field(init=False, repr=False)

    kind = "iterable"

    @property
    def bounded(self) -> bool:  # type: ignore[override]
        """A collection ends; a generator may not."""
        return isinstance(self.records, Sized)

    def __post_init__(self) -> None:
        if self.extra not in EXTRA:
            raise ConfigError(f"from_iterable(extra=) must be 'error' or 'ignore', got {self.extra!r}")
        object.__setattr__(self, "_records", _Records(self.records))

    @property
    def inferred(self) -> bool:
        """Whether the schema is inferred from the first record."""
        return self.given_schema is None

    @property
    def schema(self) -> pa.Schema:  # type: ignore[override]
        return self.given_schema if self.given_schema is not None else self._records.infer_schema()

    def build(self) -> "IterableReader":
        return IterableReader(self)


class IterableReader(SourceReader):
    """One run over an :class:`IterableSource`'s records (a reader thread fills a buffer)."""

    def __init__(self, spec: IterableSource):
        super().__init__(spec)
        self.spec = spec
        self._it: Iterator[dict] = iter(())
        self._rows: List[dict] = []
        self._first_ns = 0
        self._done = False
        self._error: Optional[BaseException] = None
        self._closed = False
        self._cond = threading.Condition()
        self._index = 0

    def open(self, batch_size: int) -> None:
        super().open(batch_size)
        self._it, first = self.spec._records.take()
        self._rows = list(first)
        self._first_ns = time.time_ns() if self._rows else 0
        self._reader = threading.Thread(target=self._read, name="iterable-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for rec in self._it:
                with self._cond:
                    if self._closed:
                        return
                    self._rows.append(rec)
                    if len(self._rows) == 1:
                        self._first_ns = time.time_ns()
                        self._cond.notify()
                    elif len(self._rows) >= self.batch_size:
                        self._cond.notify()
                        # Bound the buffer: wait while a whole batch is already waiting.
                        self._cond.wait_for(lambda: len(self._rows) < 2 * self.batch_size or self._closed)
        except BaseException as exc:  # noqa: BLE001 - reported from poll()
            self._error = exc
        with self._cond:
            self._done = True
            self._cond.notify()

    def poll(self, timeout_s: float) -> Optional[List[Piece]]:
        with self._cond:
            if not self._rows and not self._done:
                self._cond.wait_for(lambda: self._rows or self._done, timeout_s)
            if self._error is not None:
                raise DataError(f"from_iterable: the iterable raised {type(self._error).__name__}: "
                                f"{self._error}") from self._error
            if not self._rows:
                return None if self._done else []
            rows, self._rows = self._rows[: self.batch_size], self._rows[self.batch_size:]
            ingest = self._first_ns
            self._first_ns = time.time_ns() if self._rows else 0
            self._cond.notify_all()
        start = self._index
        self._index += len(rows)
        return [(self._to_batch(rows, start), ingest)]

    def _to_batch(self, rows: List[dict], start: int) -> pa.RecordBatch:
        schema = self.schema
        if not all(isinstance(r, dict) for r in rows):
            i, r = next((i, r) for i, r in enumerate(rows) if not isinstance(r, dict))
            raise DataError(
                f"from_iterable: record {start + i} is a {type(r).__name__}, not a dict; every "
                "record must be a dict of field name -> value"
            )
        names = set(schema.names)
        if self.spec.extra == "error" and not names.issuperset(set().union(*rows)):
            i, r = next((i, r) for i, r in enumerate(rows) if not names.issuperset(r))
            raise DataError(self._extra_message(start + i, [k for k in r if k not in names]))
        try:                # one C++ pass, types inferred from the values (keys: the first row's)
            inferred: Optional[pa.RecordBatch] = pa.RecordBatch.from_pylist(rows)
        except CONVERT_ERRORS:
            inferred = None
        arrays = []
        for f in schema:
            name = f.name
            column = None
            if inferred is not None and name in inferred.schema.names:
                column = cast_exact(inferred.column(name), f.type)
            if column is None:          # absent from the first row, or a value does not fit
                values = [r.get(name) for r in rows]
                column, bad = to_column(values, f.type, first_only=True)
                if bad:
                    i, why = bad[0]
                    raise DataError(self._value_message(start + i, f, values[i], why))
            if not f.nullable and column.null_count:
                values = [r.get(name) for r in rows]
                i = next(j for j, v in enumerate(values) if v is None)
                what = "absent" if name not in rows[i] else "None"
                raise DataError(f"from_iterable: record {start + i}, field {name!r}: the value is {what}, "
                                f"but the field is non-nullable in the schema ({f.type}); give it a "
                                "value, or make the field nullable")
            arrays.append(column)
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def _extra_message(self, index: int, fields: List[Any]) -> str:
        listed = ", ".join(repr(k) for k in fields)
        where = ("the schema inferred from record 0" if self.spec.inferred else "the schema")
        return (f"from_iterable: record {index} has field(s) {listed} that {where} does not have "
                f"(it has {', '.join(self.schema.names)}); pass extra='ignore' to drop such "
                "fields, or schema= with them")

    def _value_message(self, index: int, f: pa.Field, value: Any, why: str) -> str:
        msg = f"from_iterable: record {index}, field {f.name!r}: {why}"
        if not self.spec.inferred:
            return msg + "; clean the record, or declare the field with a type that holds the value"
        try:
            hint = pa.array([value]).type
        except CONVERT_ERRORS:
            hint = None
        typ = "null (record 0 had None)" if pa.types.is_null(f.type) else str(f.type)
        msg += (f". The field's type {typ} was inferred from record 0; pass schema= with the "
                "type you want")
        if hint is not None and not pa.types.is_null(hint):
            msg += f", e.g. schema=pa.schema([({f.name!r}, pa.{_type_call(hint)})])"
        return msg

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _type_call(t: pa.DataType) -> str:
    """How to write ``t`` as a pyarrow call (for error messages): ``float64()``."""
    if pa.types.is_timestamp(t):
        return f"timestamp({t.unit!r}" + (f", {t.tz!r})" if t.tz else ")")
    if pa.types.is_decimal(t):
        return f"decimal128({t.precision}, {t.scale})"
    simple = {"double": "float64()", "float": "float32()", "bool": "bool_()", "string": "string()"}
    return simple.get(str(t), f"{t}()")
