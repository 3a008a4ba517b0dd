"""The table of (Python value, Arrow type) pairs that the exact-input tests run, and a plain
Python oracle of what each must give: the value the column must hold, or ``ERROR``.

The oracle never calls pyarrow's conversion: it works out, with Python's exact int / float /
Decimal / datetime arithmetic, whether the type can hold the value unchanged.  What a column
holds is read back as Python values, or for temporal types as its raw int64 count of units.
"""
from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any, List, Tuple

import numpy as np
import pyarrow as pa

ERROR = "error"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
UNIT_US = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}

PLUS_ONE = dt.timezone(dt.timedelta(hours=1))
VALUES: List[Any] = [
    0, 1, -1, 127, 128, -129, 255, 256, -(2**31), 2**31, 2**53, 2**53 + 1, 2**63 - 1, 2**63,
    -(2**63), 2**64 - 1,
    0.0, 2.0, 2.5, -2.5, 2.7, 1e20, 1e300, 1e-300, float("nan"), float("inf"), 16777217.0,
    Decimal("2"), Decimal("2.5"), Decimal("2.555"), Decimal("-7.25"),
    dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, 0, 0, 1), dt.datetime(2024, 1, 1, 0, 0, 0, 1000),
    dt.datetime(2024, 1, 1, 0, 0, 0, 5), dt.datetime(2024, 1, 1, 1, 0, 0, tzinfo=PLUS_ONE),
    dt.date(2024, 1, 1),
    True, False, "3", "abc",
]
TYPES: List[pa.DataType] = [
    pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64(),
    pa.float32(), pa.float64(), pa.decimal128(10, 2), pa.decimal128(38, 0),
    pa.timestamp("s"), pa.timestamp("ms"), pa.timestamp("us"), pa.timestamp("ns"),
    pa.timestamp("ms", "UTC"), pa.timestamp("us", "America/New_York"), pa.timestamp("ns", "UTC"),
    pa.date32(), pa.string(), pa.bool_(),
]


def cases() -> List[Tuple[Any, pa.DataType]]:
    return [(v, t) for t in TYPES for v in VALUES]


def case_id(case: Tuple[Any, pa.DataType]) -> str:
    v, t = case
    return f"{type(v).__name__}:{v!r}->{t}"


def expected(v: Any, t: pa.DataType) -> Any:
    """What a column of type ``t`` must hold for ``v`` (Python value, or the raw count of
    units for temporal types), or ERROR."""
    if pa.types.is_integer(t):
        if isinstance(v, bool) or not isinstance(v, (int, float, Decimal)):
            return ERROR
        if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
            return ERROR
        if isinstance(v, Decimal) and v != v.to_integral_value():
            return ERROR
        n = int(v)
        lo, hi = ((0, 2**t.bit_width - 1) if pa.types.is_unsigned_integer(t)
                  else (-(2 ** (t.bit_width - 1)), 2 ** (t.bit_width - 1) - 1))
        return n if lo <= n <= hi else ERROR
    if pa.types.is_floating(t):
        exact_ints = 2**53 if t == pa.float64() else 2**24
        if isinstance(v, bool) or isinstance(v, Decimal) or not isinstance(v, (int, float)):
            return ERROR
        if isinstance(v, int):
            return float(v) if abs(v) <= exact_ints else ERROR
        if t == pa.float64():
            return v
        with np.errstate(over="ignore"):
            r = float(np.float32(v))
        return ERROR if math.isfinite(v) and not math.isfinite(r) else r
    if pa.types.is_decimal(t):
        if isinstance(v, bool) or not isinstance(v, (int, Decimal)):
            return ERROR
        d = Decimal(v)
        if d.as_tuple().exponent < -t.scale and d != d.quantize(Decimal(1).scaleb(-t.scale)):
            return ERROR
        digits = len(str(abs(int(d))).lstrip("0"))
        return d if digits <= t.precision - t.scale else ERROR
    if pa.types.is_timestamp(t):
        if isinstance(v, bool):
            return ERROR
        if isinstance(v, int):
            return v if -(2**63) <= v < 2**63 else ERROR
        if isinstance(v, dt.date) and not isinstance(v, dt.datetime):
            if t.tz not in (None, "UTC"):
                return ERROR                    # which midnight? not guessed
            v = dt.datetime(v.year, v.month, v.day)
        if not isinstance(v, dt.datetime):
            return ERROR                        # floats, strings
        aware = v if v.tzinfo is not None else v.replace(tzinfo=dt.timezone.utc)
        delta = aware - EPOCH
        us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        per = UNIT_US[t.unit]
        if per is None:
            return us * 1000
        return us // per if us % per == 0 else ERROR
    if pa.types.is_date32(t):
        if isinstance(v, dt.datetime):
            if v.tzinfo is not None:                # an instant: its date in UTC
                v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
            if v.time() != dt.time(0):
                return ERROR
            return (v.date() - EPOCH.date()).days
        if isinstance(v, dt.date):
            return (v - EPOCH.date()).days
        if isinstance(v, int) and not isinstance(v, bool):
            return v if -(2**31) <= v < 2**31 else ERROR
        return ERROR
    if pa.types.is_string(t):
        return v if isinstance(v, str) else ERROR
    if pa.types.is_boolean(t):
        return v if isinstance(v, bool) else ERROR
    raise AssertionError(f"no oracle for {t}")


def held(column: pa.Array, i: int) -> Any:
    """What ``column`` holds at row ``i``, in the oracle's terms."""
    t = column.type
    if pa.types.is_timestamp(t):
        return column.cast(pa.int64())[i].as_py()
    if pa.types.is_date32(t):
        return column.cast(pa.int32())[i].as_py()
    return column[i].as_py()


def same(got: Any, want: Any) -> bool:
    """Exactly equal (NaN equals NaN; 2 and 2.0 differ in type only where it matters)."""
    if isinstance(want, float) and isinstance(got, float) and math.isnan(want):
        return math.isnan(got)
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    return got == want
