"""Window specs and the watermark strategy: frozen, validated configs.

A spec says *which* windows an event belongs to; the window operator
(:mod:`heliosdb.operators.window`) turns it into logic.  Windows align to the epoch:
``start = t - (t mod size)``, also for times before 1970.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Optional, Union

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


@dataclass(frozen=True)
class SlidingWindow:
    """Windows of ``size`` starting every ``slide`` (hopping windows), aligned to the epoch.

    An event belongs to ``size / slide`` windows.  The engine aggregates each event once, into
    a pane of ``gcd(size, slide)``, and combines a window's panes when it closes, so the cost
    per event does not grow with ``size / slide``.

    Examples
    --------
    >>> from datetime import timedelta
    >>> w = SlidingWindow.of(timedelta(seconds=10), timedelta(seconds=1))
    >>> w.size_ns // w.slide_ns, w.pane_ns
    (10, 1000000000)
    """

    size_ns: int
    slide_ns: int

    def __post_init__(self) -> None:
        for what, v in (("size", self.size_ns), ("slide", self.slide_ns)):
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"SlidingWindow {what} must be positive, got {v!r} ns")
        if self.slide_ns > self.size_ns:
            raise ConfigError(
                f"SlidingWindow slide ({self.slide_ns} ns) is larger than its size ({self.size_ns} "
                "ns), which would skip events; use a slide <= size (slide == size is a tumbling window)"
            )
        if self.size_ns // self.pane_ns > 100_000:
            raise ConfigError(
                "SlidingWindow size / gcd(size, slide) is over 100,000 panes per window; choose a "
                "slide that divides the size"
            )

    @property
    def pane_ns(self) -> int:
        import math

        return math.gcd(self.size_ns, self.slide_ns)

    @classmethod
    def of(cls, size: Duration, slide: Duration) -> "SlidingWindow":
        """Windows of ``size`` every ``slide`` (timedeltas, or seconds)."""
        return cls(to_nanos(size, "SlidingWindow.of(size)"), to_nanos(slide, "SlidingWindow.of(slide)"))

    def __repr__(self) -> str:
        return (f"SlidingWindow.of({timedelta(microseconds=self.size_ns / 1000)}, "
                f"{timedelta(microseconds=self.slide_ns / 1000)})")


@dataclass(frozen=True)
class SessionWindow:
    """Per-key sessions: a session ends after ``gap`` without events of its key.

    A session of events ``t1 <= ... <= tn`` is the window ``[t1, tn + gap)``; an event that
    falls between two sessions of its key within ``gap`` of both merges them.

    Examples
    --------
    >>> from datetime import timedelta
    >>> SessionWindow.with_gap(timedelta(minutes=5)).gap_ns
    300000000000
    """

    gap_ns: int

    def __post_init__(self) -> None:
        if not isinstance(self.gap_ns, int) or self.gap_ns <= 0:
            raise ConfigError(f"SessionWindow gap must be positive, got {self.gap_ns!r} ns")

    @classmethod
    def with_gap(cls, gap: Duration) -> "SessionWindow":
        """Sessions separated by more than ``gap`` (a timedelta, or seconds) of inactivity."""
        return cls(to_nanos(gap, "SessionWindow.with_gap(gap)"))

    def __repr__(self) -> str:
        return f"SessionWindow.with_gap({timedelta(microseconds=self.gap_ns / 1000)})"


WindowSpec = Union[TumblingWindow, SlidingWindow, SessionWindow]
WINDOW_SPECS = (TumblingWindow, SlidingWindow, SessionWindow)


@dataclass(frozen=True)
class WatermarkStrategy:
    """Watermark = largest event time seen in ``time`` minus ``max_out_of_orderness_ns``.

    With ``idle_timeout_ns``, a source that has sent nothing for that long lets the watermark
    advance with the wall clock (as if events kept arriving at the last rate of event time),
    so windows of a quiet live stream still close.
    """

    time: str
    max_out_of_orderness_ns: int = 0
    idle_timeout_ns: Optional[int] = None
    #: Watermark alignment (a source of several splits): pause a split this far ahead of the
    #: slowest; None: never.
    max_drift_ns: Optional[int] = None
    #: A row without an event time: "fail" (an error naming the row), "skip" (dropped,
    #: counted, logged once) or, where the source has dead letters, what its ``on_error`` says.
    on_null: str = "fail"

    def __post_init__(self) -> None:
        if not isinstance(self.time, str) or not self.time:
            raise ConfigError(f"with_watermark(time=) must be a column name, got {self.time!r}")
        if self.max_out_of_orderness_ns < 0:
            raise ConfigError("with_watermark(max_out_of_orderness=) must not be negative")
        if self.idle_timeout_ns is not None and self.idle_timeout_ns <= 0:
            raise ConfigError("with_watermark(idle_timeout=) must be positive")
        if self.max_drift_ns is not None and self.max_drift_ns <= 0:
            raise ConfigError("with_watermark(max_drift=) must be positive, or None for no alignment")
        if self.on_null not in ("fail", "skip", "source"):
            raise ConfigError(f"with_watermark(on_null=) must be 'fail' or 'skip', got {self.on_null!r}")


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
