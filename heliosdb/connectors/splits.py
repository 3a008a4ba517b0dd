"""Splits: the parts of a source read independently (Kafka partitions, the partitions of a
replayed capture), each with its own event-time order.

A source of several splits owns one ``Splits``; the watermark step right after the source
keeps a watermark per split and emits their minimum (``operators/window.py``
``WatermarkAssigner``).  They talk through this object only:

- the source names the column(s) that carry a row's split (``columns``) and, when it opens,
  every split it will read (``declare``): a declared split that has sent nothing holds the
  watermark back, so a partition fetched late is not late;
- the source marks a split ``finish``-ed when it will send nothing more (a bounded read that
  reached its end), with the number of rows it sent of it since it opened: once the watermark
  step has seen that many, the split stops holding the watermark back;
- the watermark step publishes each split's watermark (``publish``); the splits more than
  ``max_drift`` ahead of the slowest split that has sent data are ``ahead``, and a source that
  can pause a split does so (watermark alignment: state stays bounded when one partition has a
  backlog).

A split is named by the tuple of its values in ``columns``.
"""
from __future__ import annotations

import threading
from typing import Dict, Iterable, List, Optional, Set, Tuple

SplitKey = Tuple


class Splits:
    """The splits of one source (see the module docstring).

    >>> s = Splits(["kafka_partition"])
    >>> s.declare([(0,), (1,)]); s.finish((1,), rows=10)
    >>> s.declared(), s.finished()
    ([(0,), (1,)], {(1,): 10})
    >>> s.publish({(0,): 5_000, (1,): 1_000}, max_drift_ns=2_000); s.ahead()
    {(0,)}
    """

    def __init__(self, columns: List[str]):
        self.columns = list(columns)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget what a previous run said (a source calls it when it opens)."""
        with self._lock:
            self._declared: List[SplitKey] = []
            self._finished: Dict[SplitKey, int] = {}
            self._ahead: Set[SplitKey] = set()
            self._watermarks: Dict[SplitKey, int] = {}

    def declare(self, keys: Iterable[SplitKey]) -> None:
        with self._lock:
            self._declared = [tuple(k) for k in keys]

    def finish(self, key: SplitKey, rows: int) -> None:
        """Split ``key`` sends nothing more; ``rows`` of it were sent since the source opened."""
        with self._lock:
            self._finished[tuple(key)] = int(rows)

    def declared(self) -> List[SplitKey]:
        with self._lock:
            return list(self._declared)

    def finished(self) -> Dict[SplitKey, int]:
        with self._lock:
            return dict(self._finished)

    def publish(self, watermarks: Dict[SplitKey, int], max_drift_ns: Optional[int],
                silent_at: Optional[int] = None) -> None:
        """Each split's watermark (splits that sent data); marks the ones to pause.
        ``silent_at``: where a split that has sent nothing yet is taken to be (it holds the
        watermark back, so the others must not run away from it either)."""
        ahead: Set[SplitKey] = set()
        if max_drift_ns is not None and watermarks:
            slowest = min(watermarks.values())
            if silent_at is not None:
                slowest = min(slowest, silent_at)
            ahead = {k for k, w in watermarks.items() if w > slowest + max_drift_ns}
        with self._lock:
            self._watermarks = dict(watermarks)
            self._ahead = ahead

    def ahead(self) -> Set[SplitKey]:
        with self._lock:
            return set(self._ahead)

    def watermarks(self) -> Dict[SplitKey, int]:
        with self._lock:
            return dict(self._watermarks)
