"""Round-robin dispatch to replicas of a stateless stage, and merging their output back in order.

A producer with a :class:`RoundRobin` numbers every item it emits.  Each batch goes to one
replica (in turn); watermarks, ticks and checkpoint barriers go to every replica with the same
number (each replica acknowledges the barrier; the copies are one item).  A replica answers
every item it receives with one :class:`Sequenced` message holding what its operators emitted
for it (possibly nothing, or the error they raised), so the stage after the replicas, with a
:class:`Resequencer`, can release the items in the producer's order: its output, watermarks,
barriers and errors are those of one replica fed everything.

Timeline of two replicas (b = batch, w = watermark)::

    producer   b0 -> r0   b1 -> r1   w2 -> r0, r1   b3 -> r0
    merge      gets r1:1, r0:0, r0:2, r1:2, r0:3  ->  releases 0, 1, 2, 3 (one copy of w2)
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from ..operators.base import Barrier, Tick, Watermark

_NO_ROWS = (Watermark, Tick, Barrier)


class Sequenced:
    """Item ``seq`` of a round-robin producer, as dispatched (``items`` holds the one input
    item) or as answered by a replica (``items``: what its operators emitted; ``error``: what
    they raised instead).  ``offset`` is the number of rows dispatched before this item, so a
    replica can number records in errors as one operator would."""

    __slots__ = ("seq", "items", "offset", "error")

    def __init__(self, seq: int, items: list, offset: int = 0, error: Optional[BaseException] = None):
        self.seq, self.items, self.offset, self.error = seq, items, offset, error

    @property
    def num_rows(self) -> int:
        """Rows of the batches (and partials, side outputs) among ``items``."""
        return sum(it.num_rows for it in self.items if type(it) not in _NO_ROWS)


class RoundRobin:
    """The dispatch state of one producer feeding ``n`` replicas.

    >>> rr = RoundRobin(2)
    >>> [rr.route(True)[1] for _ in range(3)], rr.route(False)[1]
    ([[0], [1], [0]], [0, 1])
    """

    def __init__(self, n: int):
        self.n = n
        self.seq = 0            # number of the next item
        self.turn = 0           # the replica the next batch goes to
        self.rows = 0           # rows dispatched so far

    def route(self, is_batch: bool, rows: int = 0) -> Tuple[Sequenced, List[int]]:
        """The message for the next item and the replicas (positions) it goes to."""
        msg = Sequenced(self.seq, [], self.rows)
        self.seq += 1
        if not is_batch:
            return msg, list(range(self.n))
        to = self.turn
        self.turn = (self.turn + 1) % self.n
        self.rows += rows
        return msg, [to]


class Resequencer:
    """Puts replicas' answers back in the producer's order.

    ``add(msg)`` files an answer; ``ready()`` returns the answers whose turn has come, in
    order.  Copies of a broadcast item after the first are dropped.

    >>> r = Resequencer()
    >>> r.add(Sequenced(1, ["b"])); r.ready()
    []
    >>> r.add(Sequenced(0, ["a"])); [m.items for m in r.ready()]
    [['a'], ['b']]
    >>> r.add(Sequenced(1, ["b"])); r.ready(), r.pending
    ([], 0)
    """

    def __init__(self):
        self.next = 0
        self._held: Dict[int, Sequenced] = {}

    @property
    def pending(self) -> int:
        return len(self._held)

    def add(self, msg: Sequenced) -> None:
        if msg.seq >= self.next and msg.seq not in self._held:
            self._held[msg.seq] = msg

    def ready(self) -> List[Sequenced]:
        out = []
        while self.next in self._held:
            out.append(self._held.pop(self.next))
            self.next += 1
        return out
