"""Session windows: per key, a session ends after ``gap`` without events of its key.

Timeline (gap 3)::

    events  0 1 2 | 7 8 | 20   ->  sessions [0, 5) [7, 11) [20, 23)
    an event at 4 would bridge [0, 5) and [7, 11) into [0, 11)
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Tuple

from ..config import Duration, to_nanos
from ..errors import ConfigError
from ..operators.windower import SessionWindower
from .spec import WindowSpec, register


@register
@dataclass(frozen=True)
class SessionWindow(WindowSpec):
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

    def windower(self) -> SessionWindower:
        return SessionWindower(self.gap_ns)

    def state_span(self) -> Tuple[int, str]:
        return self.gap_ns, "session gap"
