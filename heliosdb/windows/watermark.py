"""The watermark strategy: ``with_watermark(time=, max_out_of_orderness=, ...)``, a frozen,
validated config (the watermark step is ``heliosdb.operators.watermark``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError
from ..operators.clock import time_factor

__all__ = ["WatermarkStrategy", "time_factor"]


@dataclass(frozen=True)
class WatermarkStrategy:
    """Watermark = largest event time seen in ``time`` minus ``max_out_of_orderness_ns``.

    With ``idle_timeout_ns``, a source that has sent nothing for that long lets the watermark
    advance with the wall clock (as if events kept arriving at the last rate of event time),
    so windows of a quiet live stream still close.

    Examples
    --------
    >>> WatermarkStrategy("ts", max_out_of_orderness_ns=5_000_000).on_null
    'fail'
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
