"""The record a per-event function receives, turning its results back into Arrow columns, and
the error that names the step and the record when a function fails.

A record is a read-only tuple with one C-level field getter per column (``e.value``) and
mapping access (``e["value"]``, ``e.get("value")``, ``{**e}``, ``dict(e)``).  Building one per row
costs about as much as a tuple; reading a field as much as a namedtuple's.
"""
from __future__ import annotations

import itertools
import operator
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Type

import pyarrow as pa
import pyarrow.types as pat

from ..errors import RecordError
from ..formats.values import to_column as exact_column

try:  # the C field getter namedtuple uses
    from collections import _tuplegetter as _getter  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other Pythons
    def _getter(index: int, doc: str):  # type: ignore[misc]
        return property(operator.itemgetter(index), doc=doc)


class Record(tuple):
    """One event: fields by attribute (``e.value``) or by key (``e["value"]``).

    Examples
    --------
    >>> R = record_type(("key", "value"))
    >>> e = R(("a", 0.5))
    >>> e.value, e["key"], e.get("missing", 0), {**e}
    (0.5, 'a', 0, {'key': 'a', 'value': 0.5})
    """

    __slots__ = ()
    _hdb_fields: Tuple[str, ...] = ()
    _hdb_index: Dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:           # record_type() installs a faster one
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._hdb_index[key])
            except KeyError:
                raise KeyError(f"the record has no field {key!r}; its fields are "
                               f"{list(self._hdb_fields)}") from None
        return tuple.__getitem__(self, key)

    def __getattr__(self, name: str) -> Any:      # only reached when no field has that name
        raise AttributeError(f"the record has no field {name!r}; its fields are "
                             f"{list(self._hdb_fields)}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("records are read-only; return a new dict instead, e.g. {**e, 'x': ...}")

    __setitem__ = __setattr__

    def get(self, key: str, default: Any = None) -> Any:
        i = self._hdb_index.get(key)
        return default if i is None else tuple.__getitem__(self, i)

    def keys(self) -> Tuple[str, ...]:
        return self._hdb_fields

    def values(self) -> List[Any]:
        return list(tuple.__iter__(self))

    def items(self) -> List[Tuple[str, Any]]:
        return list(zip(self._hdb_fields, tuple.__iter__(self)))

    def __iter__(self):                # a mapping iterates over its keys
        return iter(self._hdb_fields)

    def __contains__(self, key: object) -> bool:
        return key in self._hdb_index

    def to_dict(self) -> Dict[str, Any]:
        return dict(zip(self._hdb_fields, tuple.__iter__(self)))

    def __repr__(self) -> str:
        return "Record(" + ", ".join(f"{k}={v!r}" for k, v in Record.items(self)) + ")"


_TYPES: Dict[Tuple[str, ...], Type[Record]] = {}


def record_type(names: Sequence[str]) -> Type[Record]:
    """The Record class for these field names (one per distinct list of names)."""
    key = tuple(names)
    cls = _TYPES.get(key)
    if cls is None:
        index = {n: i for i, n in enumerate(key)}

        def __getitem__(self, k, _index=index.__getitem__, _item=tuple.__getitem__):
            # One frame and two C calls: ``{**e}`` calls this once per field.
            try:
                return _item(self, _index(k))
            except (KeyError, TypeError):
                return Record.__getitem__(self, k)

        ns: Dict[str, Any] = {"__slots__": (), "_hdb_fields": key, "_hdb_index": index,
                              "__getitem__": __getitem__}
        for i, n in enumerate(key):
            if not (n.startswith("__") or n.startswith("_hdb_")):
                ns[n] = _getter(i, f"field {n!r}")
        cls = type("Record", (Record,), ns)
        _TYPES[key] = cls
    return cls


def rows(batch: pa.RecordBatch) -> Iterator[tuple]:
    """The rows of ``batch`` as tuples of Python values (make records with ``record_type``)."""
    if not batch.num_columns:
        return itertools.repeat((), batch.num_rows)
    return zip(*[c.to_pylist() for c in batch.columns])


# -------------------------------------------------------------------------------------------------
# Results -> Arrow
# -------------------------------------------------------------------------------------------------
class BadValue(Exception):
    """Internal: the value at ``index`` cannot go into its output column (``error`` says why)."""

    def __init__(self, index: int, error: BaseException):
        super().__init__(index, error)
        self.index = index
        self.error = error


def _convert(values: List[Any], t: pa.DataType) -> pa.Array:
    """``values`` (Python objects) as an Arrow array of type ``t``, with Python's types: an int
    column takes ints (not floats or bools), a float column ints or floats, and so on.  Raises
    on the first value that does not fit."""
    if not (pat.is_integer(t) or pat.is_floating(t) or pat.is_boolean(t) or pat.is_string(t)
            or pat.is_large_string(t)):
        # Times, dates, decimals, nested: kept exactly or refused (Arrow's own conversion would
        # truncate microseconds into a ms column, or round a decimal).
        column, bad = exact_column(values, t, first_only=True)
        if column is None:
            raise ValueError(bad[0][1])
        return column
    arr = pa.array(values)          # infer first: typed conversion would truncate 1.5 to 1
    src = arr.type
    if src == t:
        return arr
    if pat.is_null(src):
        return pa.nulls(len(values), t)
    if pat.is_integer(t):
        ok = pat.is_integer(src)
    elif pat.is_floating(t):
        ok = pat.is_integer(src) or pat.is_floating(src)
        if ok:
            return arr.cast(t, safe=False)     # int -> float rounds, as Python's float() does
    elif pat.is_boolean(t):
        ok = False
    else:
        ok = pat.is_string(src) or pat.is_large_string(src)
    if not ok:
        raise TypeError(f"got {src} values for a {t} column")
    return arr.cast(t, safe=True)


def to_column(values: List[Any], t: pa.DataType, name: str) -> pa.Array:
    """Convert a column of results; on failure raise BadValue naming the first bad value."""
    try:
        return _convert(values, t)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError,
            OverflowError, ValueError):
        pass
    for i, v in enumerate(values):
        try:
            _convert([v], t)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError,
                OverflowError, ValueError):
            if isinstance(v, int) and not isinstance(v, bool) and pat.is_integer(t):
                err: BaseException = OverflowError(
                    f"{v} does not fit in the {t} column {name!r} (Python's ints are unbounded, "
                    "a column's are not)")
            else:
                _, bad = exact_column([v], t, first_only=True)
                why = f": {bad[0][1]}" if bad else ""
                err = TypeError(f"the column {name!r} is {t}, but the function returned "
                                f"{v!r} ({type(v).__name__}){why}")
            raise BadValue(i, err) from None
    raise BadValue(0, TypeError(f"the values of column {name!r} do not form one {t} column"))


# -------------------------------------------------------------------------------------------------
# Errors
# -------------------------------------------------------------------------------------------------
def _show(row: Optional[Dict[str, Any]]) -> str:
    text = repr(row)
    return text if len(text) <= 300 else text[:297] + "..."


def record_error(step: str, index: int, row: Optional[Dict[str, Any]], error: BaseException,
                 detail: str) -> RecordError:
    """The error for a function that failed on a record; ``error`` becomes its ``__cause__``."""
    msg = (f"step {step!r}: {type(error).__name__}: {error} ({detail}) on record {index} "
           f"{_show(row)}")
    out = RecordError(msg, step, index, row)
    out.__cause__ = error
    return out


def batch_row(batch: pa.RecordBatch, i: int) -> Optional[Dict[str, Any]]:
    try:
        return batch.slice(i, 1).to_pylist()[0]
    except Exception:  # noqa: BLE001 - only for the message
        return None
