"""Window specs and the watermark strategy: frozen, validated configs.

A spec says *which* windows an event belongs to; the window operator
(:mod:`heliosdb.operators.window`) turns it into logic.  Windows align to the epoch:
``start = t - (t mod size)``, also for times before 1970.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Union

import pyarrow as pa
import pyarrow.types as pat

from .config import Duration, to_nanos
from .errors import ConfigError, SchemaError

_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


@dataclass(frozen=True)
class TumblingWindow:
    """Fixed-size, non-overlapping windows aligned to the epoch.

    Examples
    --------
    >>> from datetime import timedelta
    >>> TumblingWindow.of(timedelta(seconds=1)).size_ns
    1000000000
    """

    size_ns: int

    def __post_init__(self) -> None:
        if not isinstance(self.size_ns, int) or self.size_ns <= 0:
            raise ConfigError(f"TumblingWindow size must be positive, got {self.size_ns!r} ns")

    @classmethod
    def of(cls, size: Duration) -> "TumblingWindow":
        """Windows of ``size`` (a timedelta, or seconds)."""
        return cls(to_nanos(size, "TumblingWindow.of(size)"))

    def __repr__(self) -> str:
        return f"TumblingWindow.of({timedelta(microseconds=self.size_ns / 1000)})"


WindowSpec = Union[TumblingWindow]


@dataclass(frozen=True)
class WatermarkStrategy:
    """Watermark = largest event time seen in ``time`` minus ``max_out_of_orderness_ns``."""

    time: str
    max_out_of_orderness_ns: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.time, str) or not self.time:
            raise ConfigError(f"with_watermark(time=) must be a column name, got {self.time!r}")
        if self.max_out_of_orderness_ns < 0:
            raise ConfigError("with_watermark(max_out_of_orderness=) must not be negative")


def time_factor(schema: pa.Schema, column: str, step: str) -> int:
    """Nanoseconds per unit of the time column: int64 is epoch ms, timestamps carry a unit."""
    idx = schema.get_field_index(column)
    if idx < 0:
        raise SchemaError(
            f"step {step!r}: time column {column!r} is not in the input; it has {schema.names}"
        )
    t = schema.field(idx).type
    if pat.is_timestamp(t):
        return _UNIT_NS[t.unit]
    if pat.is_integer(t) and t.bit_width == 64 and pat.is_signed_integer(t):
        return 1_000_000
    raise SchemaError(
        f"step {step!r}: time column {column!r} must be int64 epoch milliseconds or a timestamp, "
        f"got {t}; convert it with with_columns({column}=col({column!r}).cast('int64'))"
    )
