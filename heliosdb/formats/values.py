"""Python values -> Arrow columns, keeping every value exactly.

``pa.array(values, type=t)`` converts a column in one C++ call, but some conversions change
values without a word: a float with a fraction into an integer column is truncated (2.7 -> 2),
a ``datetime`` with microseconds into a ``timestamp[ms]`` column loses them, a float too large
for ``float32`` becomes infinity, a ``datetime`` into a ``date32`` column loses its time.
:func:`to_column` converts a whole column at once and then checks, vectorised, that nothing
changed; only when something did does it look value by value, to name the records.

The rules (what a value may become in a column of type ``t``):

- integers: any integer, or a float or Decimal with no fraction, in ``t``'s range;
- floats: any int that ``t`` holds exactly (up to 2**53 for float64, 2**24 for float32), any
  float, rounded to the nearest ``t`` as floats always are; a finite float that overflows to
  infinity is an error;
- decimals: ints and Decimals that fit ``t``'s precision and scale without rounding;
- timestamps, dates, times, durations: values whose instant or length ``t`` holds without
  truncation (a ``datetime`` with a time of day is not a date; microseconds are not
  milliseconds); ints are taken as counts of ``t``'s unit; a naive ``datetime`` is UTC; a
  ``date`` is midnight UTC (so not a value for a column in another time zone);
- strings, binary, booleans: values of that kind only (no ``1`` for ``True``, no ``3`` for
  ``"3"``).

Examples
--------
>>> import pyarrow as pa
>>> column, bad = to_column([1, 2.0, None], pa.int64())
>>> column.to_pylist(), bad
([1, 2, None], [])
>>> to_column([1, 2.5], pa.int64())[1]
[(1, 'value 2.5 would change to 2 as int64')]
"""
from __future__ import annotations

import datetime as _dt
import math
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: What pyarrow raises when a value does not convert.
CONVERT_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError,
                  ValueError, OverflowError)

Bad = Tuple[int, str]


def needs_check(t: pa.DataType) -> bool:
    """Whether converting Python values to ``t`` with pyarrow can change a value silently."""
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return needs_check(t.value_type)
    if pa.types.is_struct(t):
        return any(needs_check(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_map(t):
        return needs_check(t.key_type) or needs_check(t.item_type)
    if pa.types.is_dictionary(t):
        return needs_check(t.value_type)
    return False


def to_column(values: Sequence[Any], t: pa.DataType,
              first_only: bool = False) -> Tuple[Optional[pa.Array], List[Bad]]:
    """``values`` as an Arrow array of type ``t``, or the values that would not be kept.

    Returns ``(array, [])`` when every value converts exactly, else ``(None, bad)`` where
    ``bad`` lists ``(index, why)`` for every value that would fail or change (only the first
    one with ``first_only``).

    >>> import pyarrow as pa
    >>> to_column([1.5, 300], pa.int8())[1]
    [(0, 'value 1.5 would change to 1 as int8'), (1, 'value 300 does not fit int8 (...)')]
    """
    if pa.types.is_timestamp(t):
        sub_us = [i for i, v in enumerate(values) if getattr(v, "nanosecond", 0)]
        if sub_us:
            # pandas Timestamps with nanoseconds: inference (microseconds) would drop them.
            if t.unit != "ns":
                sub_us = sub_us[:1] if first_only else sub_us
                return None, [(i, f"value {values[i]!r} would lose its nanoseconds as {t}") for i in sub_us]
            try:
                return pa.array(values, type=t), []
            except CONVERT_ERRORS:
                return None, scan(values, t, first_only)
    inferred: Optional[pa.Array]
    try:
        inferred = pa.array(values)
    except CONVERT_ERRORS:
        inferred = None
    if inferred is not None:
        column = cast_exact(inferred, t)
        if column is not None:
            return column, []                     # the common case: vectorised and exact
    try:
        direct = pa.array(values, type=t)
    except CONVERT_ERRORS:
        return None, scan(values, t, first_only)
    if not needs_check(t) or (inferred is not None and inferred.null_count == len(inferred)):
        return direct, []
    bad = _changed(direct, inferred, t) if inferred is not None else None
    if bad is None:
        return (direct, []) if not (found := scan(values, t, first_only)) else (None, found)
    if not bad.any():
        return direct, []
    idx = np.flatnonzero(bad)
    if first_only:
        idx = idx[:1]
    return None, [(int(i), _why_changed(values[i], direct[int(i)].as_py(), t)) for i in idx]


def _kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_null(t):
        return "null"
    return str(t)


#: Kinds of column an array may be cast to without its values changing meaning (the values
#: are still checked): no "3" -> 3, no 1 -> True, no float -> timestamp.
_CASTS = {"int": {"int", "float", "decimal", "timestamp"}, "float": {"int", "float"},
          "timestamp": {"timestamp", "date"}, "date": {"date", "timestamp"},
          "decimal": {"decimal"}, "string": {"string"}}


def cast_exact(arr: pa.Array, t: pa.DataType) -> Optional[pa.Array]:
    """``arr`` cast to ``t`` if every value is kept exactly (vectorised), else None.

    None also means "not a cast this module makes" (e.g. strings to numbers): callers then
    look at the values one by one to say which one does not fit.

    >>> import pyarrow as pa
    >>> cast_exact(pa.array([1, 2]), pa.int8()).type
    DataType(int8)
    >>> cast_exact(pa.array([1.5]), pa.int64()) is None
    True
    """
    if arr.type == t:
        return arr
    src = _kind(arr.type)
    if src == "null":
        return pa.nulls(len(arr), t)
    if _kind(t) not in _CASTS.get(src, ()):
        return None
    try:
        out = pc.cast(arr, t, safe=True)
    except CONVERT_ERRORS:
        return None
    if needs_check(t):
        bad = _changed(out, arr, t)
        if bad is None or bad.any():
            return None
    return out


def scan(values: Sequence[Any], t: pa.DataType, first_only: bool = False) -> List[Bad]:
    """Value by value: the values that do not convert to ``t`` exactly (the slow path, taken
    only for columns that failed as a whole)."""
    out: List[Bad] = []
    for i, v in enumerate(values):
        why = check_one(v, t)
        if why is not None:
            out.append((i, why))
            if first_only:
                break
    return out


def check_one(v: Any, t: pa.DataType) -> Optional[str]:
    """Why ``v`` cannot be kept exactly in a column of type ``t``, or None if it can."""
    if v is None:
        return None
    try:
        direct = pa.array([v], type=t)
    except CONVERT_ERRORS as exc:
        return f"value {short(v)} does not fit {t} ({exc})"
    if not needs_check(t):
        return None
    if pa.types.is_temporal(t) and isinstance(v, (float, np.floating)):
        return (f"value {short(v)} is a float; a {t} column takes ints (a count of its unit) or "
                "datetime/date/time/timedelta objects")
    try:
        inferred = pa.array([v])
    except CONVERT_ERRORS:
        inferred = None
    bad = _changed(direct, inferred, t) if inferred is not None else None
    out = direct[0].as_py()
    if bad is None:
        if _same_py(v, out):
            return None
    elif not bad.any():
        return None
    return _why_changed(v, out, t)


def _changed(direct: pa.Array, inferred: pa.Array, t: pa.DataType) -> Optional[np.ndarray]:
    """A mask of the values that ``direct`` (converted to ``t``) does not hold exactly, found
    by comparing it with ``inferred`` (the same values as pyarrow infers them); None when the
    two cannot be compared."""
    n = len(direct)
    if pa.types.is_null(inferred.type):
        return np.zeros(n, dtype=bool)
    if pa.types.is_floating(t):
        if not (pa.types.is_integer(inferred.type) or pa.types.is_floating(inferred.type)):
            return None
        if pa.types.is_integer(inferred.type):
            return np.zeros(n, dtype=bool)        # pyarrow refuses ints it cannot hold exactly
        overflow = pc.and_(pc.is_finite(inferred), pc.invert(pc.is_finite(direct)))
        return _mask(overflow)
    if pa.types.is_temporal(t) and pa.types.is_integer(inferred.type):
        # Ints are counts of the column's unit: compare them with what the column stores.
        try:
            back = direct.view(pa.int32() if t.bit_width == 32 else pa.int64())
            inferred = pc.cast(inferred, back.type, safe=False)
        except CONVERT_ERRORS:
            return None
    else:
        try:
            back = pc.cast(direct, inferred.type, safe=False)
        except CONVERT_ERRORS:
            return None
    if back.equals(inferred):
        return np.zeros(n, dtype=bool)
    if not (pa.types.is_primitive(inferred.type) or pa.types.is_decimal(inferred.type)):
        return None                               # nested: find the records value by value
    try:
        differs = pc.not_equal(back, inferred)
    except CONVERT_ERRORS:
        return None
    return _mask(differs)


def _mask(arr: pa.Array) -> np.ndarray:
    return arr.fill_null(False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def _same_py(v: Any, out: Any) -> bool:
    """``v`` and ``out`` (what Arrow holds) are the same value, compared as Python objects."""
    if isinstance(v, float) and isinstance(out, float):
        # A float column rounds (as floats do), but never turns a finite value infinite.
        return not (math.isinf(out) and math.isfinite(v))
    if isinstance(v, dict) and isinstance(out, dict):
        return all(_same_py(v.get(k), out[k]) for k in out) and all(k in out for k in v)
    if isinstance(v, (list, tuple)) and isinstance(out, list):
        return len(v) == len(out) and all(_same_py(a, b) for a, b in zip(v, out))
    if isinstance(v, _dt.datetime) and isinstance(out, _dt.datetime):
        if (v.tzinfo is None) != (out.tzinfo is None):
            v = v.replace(tzinfo=_dt.timezone.utc) if v.tzinfo is None else v
            out = out.replace(tzinfo=_dt.timezone.utc) if out.tzinfo is None else out
        return v == out
    if isinstance(v, bool) != isinstance(out, bool):
        return False
    try:
        return bool(v == out)
    except Exception:  # noqa: BLE001 - incomparable means not the same
        return False


def _why_changed(v: Any, out: Any, t: pa.DataType) -> str:
    return f"value {short(v)} would change to {short(out)} as {t}"


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
