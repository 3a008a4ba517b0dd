"""Tumbling windows: fixed-size, non-overlapping, aligned to the epoch.

Timeline (size 10)::

    event time  0 ........ 10 ........ 20
    windows     [0, 10)    [10, 20)         an event at 12 is in [10, 20) only
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Tuple

from ..config import Duration, to_nanos
from ..errors import ConfigError
from ..operators.windower import PaneWindower
from .spec import WindowSpec, register


class TumblingWindower(PaneWindower):
    """A window is one pane of ``size``, named by its start.

    >>> w = TumblingWindower(10)
    >>> list(w.windows_of(20)), w.last_end(20), w.due([0, 10, 20], 5, 20)
    ([20], 30, [0, 10])
    """

    pane_is_window = True

    def __init__(self, size_ns: int):
        super().__init__(pane_ns=size_ns, id_step=size_ns, end_offset=size_ns, panes_per_window=1)

    def first_window(self, pane: int) -> int:
        return pane

    def last_window(self, pane: int) -> int:
        return pane

    def start(self, w: int) -> int:
        return w


@register
@dataclass(frozen=True)
class TumblingWindow(WindowSpec):
    """Fixed-size, non-overlapping windows aligned to the epoch: ``start = t - (t mod size)``,
    also for times before 1970.

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

    def windower(self) -> TumblingWindower:
        return TumblingWindower(self.size_ns)

    def state_span(self) -> Tuple[int, str]:
        return self.size_ns, "window size"
