"""Inputs of a task: what it reads next, in the order it must process it.

A task reads *entries* ``(item, rows, ingest_ns, origin)`` (what a
:class:`~heliosdb.runtime.channel.Channel` holds) through one ``next()``:

- :class:`InputGate` over any number of inputs (a merge after parallel subtasks, a join):
  checkpoint barrier alignment, the minimum watermark of the inputs, and the end of input once
  every input has ended;
- :class:`SidedInput`: a join's gate, whose batches carry the side their input feeds;
- :class:`ReplicaInput`: a replica's input, the numbered items of a round-robin edge;
- :class:`ResequencingInput`: the answers of the replicas, put back in the order their
  producer sent the items (one logical input, made of one physical input per replica).

Each reads from a ``read()`` callable giving the next entry (a channel's ``get``, or a list in
a test), so none needs a running job.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, List, Optional, Set, Tuple

from ..errors import ExecutionError
from ..operators.base import WATERMARK_MIN, Barrier, Sided, Tick, Watermark
from ..operators.exchange import Partitioned
from .channel import END, End
from .sequence import Resequencer, Sequenced

Entry = Tuple[Any, int, int, int]
"""(item, rows, ingest_ns, origin): an item, the rows it carries, when its first row was
ingested (int64 ns), and which input it came from."""

_NO_ROWS = (Watermark, Tick, Barrier)


class InputGate:
    """Merges ``n`` inputs into one stream of items for a task.

    - **Barrier alignment**: an input that delivered checkpoint barrier ``e`` is blocked (what
      it sends next is held) until every input that has not ended delivered it too; then the
      barrier comes out, once, and the held items follow in their order.
    - **Watermarks**: each input's watermark is the largest it sent; the gate passes on the
      minimum over the inputs, whenever it rises.  An input that ends without a final
      watermark keeps holding the minimum where it was (a bounded source sends
      ``WATERMARK_MAX`` before it ends).
    - **Ticks**: input 0's only (one per round of the timers is enough).
    - **End**: :data:`~heliosdb.runtime.channel.END` once every input has ended.

    With one input, items pass as they come (nothing to align, no minimum to take).

    Examples
    --------
    Two inputs; input 0 delivers barrier 1 first, its next batch waits for input 1's barrier::

        input 0:  w5  B1  b  END
        input 1:  w3  w9  B1  END
        out:      w3  w5  B1  b  END

    >>> entries = iter([(Watermark(5), 0, 0, 0), (Watermark(3), 0, 0, 1), (Barrier(1), 0, 0, 0),
    ...                 ("b", 1, 0, 0), (Watermark(9), 0, 0, 1), (Barrier(1), 0, 0, 1),
    ...                 (END, 0, 0, 0), (END, 0, 0, 1)])
    >>> gate = InputGate(2, entries.__next__)
    >>> [gate.next()[0] for _ in range(5)]
    [Watermark(t=3), Watermark(t=5), Barrier(epoch=1), 'b', END]
    """

    def __init__(self, n: int, read: Callable[[], Entry]):
        if n < 1:
            raise ValueError(f"an input gate needs at least one input, got n={n}")
        self.n = n
        self._read = read
        self._marks: List[int] = [WATERMARK_MIN] * n
        self._current = WATERMARK_MIN
        self._open = n
        self._ended: Set[int] = set()
        self._blocked: Set[int] = set()         # inputs that delivered the pending barrier
        self._held: Deque[Entry] = deque()      # what they sent after it
        self._replay: Deque[Entry] = deque()    # released after the barrier, read first
        self._barrier: Optional[Barrier] = None
        if n == 1:
            # Nothing to align or merge: the task reads its channel directly (no extra call
            # per item on the most common path).
            self.next = read                    # type: ignore[method-assign]

    @property
    def watermark(self) -> int:
        """The minimum watermark passed on so far (``WATERMARK_MIN``: none yet)."""
        return self._current

    def next(self) -> Entry:
        """The next entry to process; ``(END, 0, 0, 0)`` once every input has ended."""
        while True:
            if self._replay:
                entry = self._replay.popleft()
            elif not self._open:
                return (END, 0, 0, 0)
            else:
                entry = self._read()
            item, _, _, origin = entry
            if origin in self._blocked:
                self._held.append(entry)        # after the barrier: waits for the others
                continue
            t = type(item)
            if t is End:
                self._open -= 1
                self._ended.add(origin)
                if self._blocked and len(self._blocked | self._ended) == self.n:
                    return self._release()
                continue
            if t is Barrier:
                self._barrier = item
                self._blocked.add(origin)
                if len(self._blocked | self._ended) < self.n:
                    continue
                return self._release()
            if t is Tick and origin:
                continue                        # one tick per round is enough
            if t is Watermark:
                marks = self._marks
                if item.t > marks[origin]:
                    marks[origin] = item.t
                low = min(marks)
                if low <= self._current:
                    continue
                self._current = low
                return (Watermark(low), 0, entry[2], origin)
            return entry

    def _release(self) -> Entry:
        """Every open input delivered the barrier: pass it on, then what was held."""
        self._blocked.clear()
        self._replay.extend(self._held)
        self._held.clear()
        return (self._barrier, 0, 0, 0)


class SidedInput:
    """The input of a stage of two inputs (a join): an :class:`InputGate` over its producers,
    whose batches leave as :class:`~heliosdb.operators.base.Sided` items, tagged with the side
    (``sides[origin]``: 0 left, 1 right) their producer feeds; the rows of an exchanged batch
    are taken out first.  Watermarks, barriers and ticks pass as the gate gives them: one
    watermark, the minimum of both sides'.

    Examples
    --------
    >>> import pyarrow as pa
    >>> b = pa.record_batch({"x": [1]})
    >>> entries = iter([(b, 1, 0, 1), (Watermark(4), 0, 0, 0), (Watermark(3), 0, 0, 1), (b, 1, 0, 0),
    ...                 (END, 0, 0, 0), (END, 0, 0, 1)])
    >>> gate = SidedInput(InputGate(2, entries.__next__), [0, 1])
    >>> [item.side if isinstance(item, Sided) else item for item, *_ in (gate.next() for _ in range(4))]
    [1, Watermark(t=3), 0, END]
    """

    def __init__(self, gate: InputGate, sides: List[int]):
        if len(sides) != gate.n:
            raise ValueError(f"a stage of {gate.n} inputs needs a side for each, got {sides}")
        self._gate = gate
        self._sides = list(sides)

    @property
    def watermark(self) -> int:
        return self._gate.watermark

    def next(self) -> Entry:
        entry = self._gate.next()
        item = entry[0]
        t = type(item)
        if t in _NO_ROWS or t is End:
            return entry
        if t is Partitioned:
            item = item.resolve()       # this subtask's rows of an exchanged batch
        return (Sided(self._sides[entry[3]], item), entry[1], entry[2], entry[3])


class ReplicaInput:
    """A replica's input: the numbered items of a round-robin edge.

    ``next()`` gives the item of each message; ``seq`` is its number (the replica answers
    with it), and ``seek(offset)`` (the replica's first operator's ``seek_rows``) is told how
    many rows its producer dispatched before it, so errors name records by their position in
    the whole input.

    Examples
    --------
    >>> entries = iter([(Sequenced(7, ["b"], offset=100), 1, 0, 0), (END, 0, 0, 0)])
    >>> seen = []
    >>> r = ReplicaInput(entries.__next__, seen.append)
    >>> r.next()[0], r.seq, seen, r.next()[0]
    ('b', 7, [100], END)
    """

    def __init__(self, read: Callable[[], Entry], seek: Optional[Callable[[int], None]] = None):
        self._read = read
        self._seek = seek
        self.seq = 0

    def next(self) -> Entry:
        msg, rows, ingest, origin = self._read()
        if msg is END:
            return (END, 0, 0, origin)
        self.seq = msg.seq
        item = msg.items[0]
        if self._seek is not None and type(item) is not Barrier:
            self._seek(msg.offset)
        return (item, rows, ingest, origin)


class ResequencingInput:
    """The answers of ``n`` replicas, released in the order their producer numbered the items:
    what comes out is what one replica fed everything would have emitted.  A barrier needs no
    alignment here (every item before it was released before it); an answer holding an error
    raises it when its turn comes.

    Examples
    --------
    Replica 1 answers item 1 before replica 0 answers item 0:

    >>> import pyarrow as pa
    >>> b0, b1 = pa.record_batch({"x": [0]}), pa.record_batch({"x": [1, 1]})
    >>> entries = iter([(Sequenced(1, [b1]), 2, 0, 1), (Sequenced(0, [b0, Watermark(2)]), 1, 0, 0),
    ...                 (END, 0, 0, 0), (END, 0, 0, 1)])
    >>> r = ResequencingInput(2, entries.__next__)
    >>> [(type(item).__name__, rows) for item, rows, _, _ in (r.next() for _ in range(4))]
    [('RecordBatch', 1), ('Watermark', 0), ('RecordBatch', 2), ('End', 0)]
    """

    def __init__(self, n: int, read: Callable[[], Entry], step: str = "stage"):
        self._read = read
        self._open = n
        self._step = step
        self._order = Resequencer()
        self._released: Deque[Sequenced] = deque()
        self._items: List[Any] = []
        self._pos = 0
        self._ingest = 0

    def next(self) -> Entry:
        while True:
            if self._pos < len(self._items):
                item = self._items[self._pos]
                self._pos += 1
                rows = 0 if type(item) in _NO_ROWS else item.num_rows
                # Timed from the ingest of the answer that let these through.
                return (item, rows, self._ingest, 0)
            if self._released:
                m = self._released.popleft()
                if m.error is not None:
                    raise m.error
                self._items, self._pos = m.items, 0
                continue
            if not self._open:
                if self._order.pending:
                    raise ExecutionError(f"stage {self._step!r}: {self._order.pending} replica answers "
                                         "never came in turn (an engine bug)")
                return (END, 0, 0, 0)
            msg, _, ingest, _ = self._read()
            if msg is END:
                self._open -= 1
                continue
            self._ingest = ingest
            self._order.add(msg)
            self._released.extend(self._order.ready())
