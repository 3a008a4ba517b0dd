"""Sliding (hopping) windows: windows of ``size`` starting every ``slide``, aligned to the
epoch.  An event belongs to ``size / slide`` windows, but is aggregated once, into a pane of
``gcd(size, slide)``; a window's panes are merged when it closes.

Timeline (size 10, slide 5: panes of 5)::

    event time  0 ..... 5 ..... 10 ..... 15
    windows     [0, 10)
                        [5, 15)              an event at 7 is in [0, 10) and [5, 15)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Tuple

from ..config import Duration, to_nanos
from ..errors import ConfigError
from ..operators.windower import PaneWindower
from .spec import WindowSpec, register


class SlidingWindower(PaneWindower):
    """Windows named by their start (a multiple of ``slide``), made of panes of ``pane_ns``.

    >>> w = SlidingWindower(10, 5, 5)
    >>> list(w.windows_of(5)), list(w.panes_of(5)), w.last_end(5)
    ([0, 5], [5, 10], 15)
    """

    def __init__(self, size_ns: int, slide_ns: int, pane_ns: int):
        super().__init__(pane_ns=pane_ns, id_step=slide_ns, end_offset=size_ns,
                         panes_per_window=size_ns // pane_ns)
        self.size_ns = size_ns
        self.slide_ns = slide_ns

    def first_window(self, pane: int) -> int:
        s = pane - self.size_ns + self.pane_ns          # earliest start whose window holds pane
        r = s % self.slide_ns
        return s if r == 0 else s + (self.slide_ns - r)

    def last_window(self, pane: int) -> int:
        return pane - (pane % self.slide_ns)

    def start(self, w: int) -> int:
        return w


@register
@dataclass(frozen=True)
class SlidingWindow(WindowSpec):
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
        return math.gcd(self.size_ns, self.slide_ns)

    @classmethod
    def of(cls, size: Duration, slide: Duration) -> "SlidingWindow":
        """Windows of ``size`` every ``slide`` (timedeltas, or seconds)."""
        return cls(to_nanos(size, "SlidingWindow.of(size)"), to_nanos(slide, "SlidingWindow.of(slide)"))

    def __repr__(self) -> str:
        return (f"SlidingWindow.of({timedelta(microseconds=self.size_ns / 1000)}, "
                f"{timedelta(microseconds=self.slide_ns / 1000)})")

    def windower(self) -> SlidingWindower:
        return SlidingWindower(self.size_ns, self.slide_ns, self.pane_ns)

    def state_span(self) -> Tuple[int, str]:
        return self.size_ns, "window size"
