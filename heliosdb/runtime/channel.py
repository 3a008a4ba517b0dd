"""Bounded channels between stages.

A channel holds at most ``capacity`` events (rows); a producer whose batch does not fit waits,
and the time it waits is recorded: that is the backpressure signal.  An empty channel always
admits one batch, however large, so a batch bigger than the capacity still flows.

A ``waiter`` passed to ``put`` / ``get`` (a task's :class:`~heliosdb.metrics.TaskStats`) is told
when a wait starts (``blocked_since`` / ``idle_since``) and how long it took (``blocked_ns`` /
``idle_ns``); only calls that actually wait pay for the clock.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Tuple


class ChannelClosed(Exception):
    """The job is shutting down; the stage that saw this stops quietly."""


class End:
    """The type of :data:`END` (a class of its own, so edges tell it apart by type)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


END = End()
"""Sentinel: the producer has finished."""


class Channel:
    """A bounded FIFO of (item, rows, ingest_ns, origin) between stages.

    ``origin`` tells a stage with several producers (a merge after parallel subtasks) which
    producer an item came from.
    """

    def __init__(self, capacity: int, name: str):
        self.capacity = capacity
        self.name = name
        self._q: deque = deque()
        self._rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self.blocked_ns = 0

    @property
    def rows(self) -> int:
        """Events queued now."""
        return self._rows

    def put(self, item: Any, rows: int = 0, ingest_ns: int = 0, origin: int = 0,
            waiter: Any = None) -> None:
        with self._cond:
            if self._rows and self._rows + rows > self.capacity and not self._closed:
                t0 = time.perf_counter_ns()
                if waiter is not None:
                    waiter.blocked_since = t0
                while self._rows and self._rows + rows > self.capacity and not self._closed:
                    self._cond.wait()
                dt = time.perf_counter_ns() - t0
                self.blocked_ns += dt
                if waiter is not None:
                    waiter.blocked_since = 0
                    waiter.blocked_ns += dt
            if self._closed:
                raise ChannelClosed(self.name)
            self._q.append((item, rows, ingest_ns, origin))
            self._rows += rows
            self._cond.notify_all()

    def get(self, waiter: Any = None) -> Tuple[Any, int, int, int]:
        """The next (item, rows, ingest_ns, origin), waiting for one; ChannelClosed on shutdown."""
        with self._cond:
            if not self._q and not self._closed:
                t0 = time.perf_counter_ns()
                if waiter is not None:
                    waiter.idle_since = t0
                while not self._q and not self._closed:
                    self._cond.wait()
                if waiter is not None:
                    waiter.idle_since = 0
                    waiter.idle_ns += time.perf_counter_ns() - t0
            if not self._q:
                raise ChannelClosed(self.name)
            entry = self._q.popleft()
            self._rows -= entry[1]
            self._cond.notify_all()
            return entry

    def close(self) -> None:
        """Wake every waiter; later puts and gets on an empty channel raise ChannelClosed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
