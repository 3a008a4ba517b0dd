"""Cumulative windows (Flink's ``CUMULATE``): windows that grow by ``step`` from the same
start until ``max_size``, then start again.  A daily total updated every hour is one: for
``max_size`` 1 day and ``step`` 1 hour, the windows of a day are ``[0:00, 1:00)``,
``[0:00, 2:00)``, ... ``[0:00, 24:00)``, and an event at 05:30 belongs to ``[0:00, 6:00)``,
``[0:00, 7:00)`` ... ``[0:00, 24:00)``.

Timeline (max_size 6, step 2: panes of 2)::

    event time  0 ... 2 ... 4 ... 6 ... 8
    windows     [0,2)
                [0,4)
                [0,6)                         an event at 3 is in [0,4) and [0,6)
                            [6,8) [6,10) [6,12)

Everything this kind needs is in this module: the spec (registered, so ``hdb.CumulateWindow``
exists) and its windower; panes, lateness, event and processing time, two-phase aggregation
with parallelism, checkpoints and state backends come with the pane machinery
(``heliosdb.operators.window``).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Tuple

from ..config import Duration, to_nanos
from ..errors import ConfigError
from ..operators.windower import PaneWindower
from .spec import WindowSpec, register

#: At most this many windows (and panes) per cycle of ``max_size``.
MAX_STEPS = 100_000


class CumulateWindower(PaneWindower):
    """Panes of ``step``; a window is named by its end (a multiple of ``step``), and starts at
    the last multiple of ``max_size`` before it.

    Examples
    --------
    >>> hour = 3_600 * 10**9
    >>> w = CumulateWindower(24 * hour, hour)
    >>> pane = 5 * hour                              # the pane of an event at 05:30
    >>> [(w.start(x) // hour, w.end(x) // hour) for x in w.windows_of(pane)][:3]
    [(0, 6), (0, 7), (0, 8)]
    >>> len(w.windows_of(pane)), w.last_end(pane) // hour, [p // hour for p in w.panes_of(3 * hour)]
    (19, 24, [0, 1, 2])
    """

    def __init__(self, max_size_ns: int, step_ns: int):
        super().__init__(pane_ns=step_ns, id_step=step_ns, end_offset=0,
                         panes_per_window=max_size_ns // step_ns)
        self.max_size_ns = max_size_ns

    def first_window(self, pane: int) -> int:
        return pane + self.pane_ns

    def last_window(self, pane: int) -> int:
        return pane - pane % self.max_size_ns + self.max_size_ns

    def start(self, w: int) -> int:
        last_pane = w - self.pane_ns
        return last_pane - last_pane % self.max_size_ns


@register
@dataclass(frozen=True)
class CumulateWindow(WindowSpec):
    """Windows growing by ``step`` from a start aligned to ``max_size`` (multiples of
    ``max_size`` since the epoch) until they are ``max_size`` long.

    Every window is emitted when the watermark passes its end, like any other: with
    ``max_size`` 1 day and ``step`` 1 hour, each key gets a row for ``[0:00, 1:00)`` at 1:00,
    for ``[0:00, 2:00)`` at 2:00 (the day's total so far), and so on.  An event is late when
    the day's last window ended ``allowed_lateness`` before the watermark.

    Examples
    --------
    >>> from datetime import timedelta
    >>> import heliosdb as hdb
    >>> w = hdb.CumulateWindow.of(timedelta(days=1), timedelta(hours=1))
    >>> w
    CumulateWindow.of(1 day, 0:00:00, 1:00:00)
    >>> rows = [{"k": "a", "ts": 1_800_000}, {"k": "a", "ts": 5_400_000}]   # 0:30, 1:30
    >>> out = (hdb.StreamEnvironment().from_iterable(rows).key_by("k")
    ...        .window(hdb.CumulateWindow.of(timedelta(hours=3), timedelta(hours=1)), time="ts")
    ...        .aggregate(n=hdb.count()).collect())
    >>> [(r["window_end"].hour, r["n"]) for r in out.to_pylist()]
    [(1, 1), (2, 2), (3, 2)]
    """

    max_size_ns: int
    step_ns: int

    def __post_init__(self) -> None:
        for what, v in (("max_size", self.max_size_ns), ("step", self.step_ns)):
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"CumulateWindow {what} must be positive, got {v!r} ns")
        if self.max_size_ns % self.step_ns:
            raise ConfigError(
                f"CumulateWindow max_size ({self.max_size_ns} ns) must be a whole number of steps "
                f"({self.step_ns} ns); e.g. CumulateWindow.of(timedelta(days=1), timedelta(hours=1))"
            )
        if self.max_size_ns // self.step_ns > MAX_STEPS:
            raise ConfigError(
                f"CumulateWindow max_size / step is {self.max_size_ns // self.step_ns:,} windows per "
                f"cycle, over {MAX_STEPS:,}; choose a larger step"
            )

    @classmethod
    def of(cls, max_size: Duration, step: Duration) -> "CumulateWindow":
        """Windows growing by ``step`` up to ``max_size`` (timedeltas, or seconds)."""
        return cls(to_nanos(max_size, "CumulateWindow.of(max_size)"), to_nanos(step, "CumulateWindow.of(step)"))

    def __repr__(self) -> str:
        return (f"CumulateWindow.of({timedelta(microseconds=self.max_size_ns / 1000)}, "
                f"{timedelta(microseconds=self.step_ns / 1000)})")

    def windower(self) -> CumulateWindower:
        return CumulateWindower(self.max_size_ns, self.step_ns)

    def state_span(self) -> Tuple[int, str]:
        return self.max_size_ns, "window size"
