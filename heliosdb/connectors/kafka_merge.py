"""What a Kafka source's poll releases from its partitions' queues, and in what order.

Reader threads queue decoded rows per partition (:meth:`PartitionMerge.push`); the source
thread takes rows out (:meth:`PartitionMerge.take`, then :meth:`PartitionMerge.build`).
This module is pure logic: no client, no thread, no lock (the caller holds one), so the
release order is unit-tested without a broker.

- Without ``event_time`` (``merged=False``) a poll releases what is queued, partition by
  partition, starting each poll with the next partition (round robin: a busy partition does
  not starve the others).
- With ``event_time`` (``merged=True``) the partitions are *merged*: each row's merge key is
  the running maximum of its event time within its partition; a row is released once every
  partition that is still active has seen a larger key (the *frontier*; a partition that has
  caught up with its end, or is finished, does not hold the others back), and the released
  rows are ordered by (key, partition, offset).  A backlog is therefore read in one order
  whatever the number of readers, the fetch timing or a restart.

Either way a take releases about one micro-batch (``budget`` rows; the merge cuts by key, so
a run of equal keys is never split), so a checkpoint barrier can follow any micro-batch.

A partition queue above ``buffer_rows`` rows is paused (its reader stops fetching it) and
read again once half of it has gone, or at once while it holds the merge back (only its next
rows can move the frontier).  With ``splits`` (per-partition watermarks after the source),
partitions the watermark step marks as ahead are not released (watermark alignment), and a
finished partition is announced to it.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa

from .base import Piece
from .splits import Splits

KEY_MIN = -(2**63)
KEY_MAX = 2**63 - 1

#: ``{topic: {partition: next_offset}}``; ``[offset, rows]`` inside a multi-row message.
Position = Dict[str, Dict[int, Union[int, List[int]]]]


@dataclass
class Chunk:
    """Decoded rows of one partition, in offset order, some of them possibly released."""

    batch: pa.RecordBatch           # projected columns
    offsets: np.ndarray             # the message offset of each row
    first_row: np.ndarray           # for each row, its index within its message
    keys: Optional[np.ndarray]      # merge keys (running max of event time), when merging
    next_offset: int                # the offset after the last message of the chunk
    ingest_ns: int
    dead: Optional[pa.RecordBatch] = None     # dead letters of these messages (not yet written)
    start: int = 0                  # rows already released

    @property
    def rows(self) -> int:
        return self.batch.num_rows - self.start


@dataclass(eq=False)
class Partition:
    """One partition's queue and position.  Fields above ``decode_max`` change under the
    source's lock; the ones from ``decode_max`` on belong to the partition's reader."""

    topic: str
    partition: int
    index: int                       # position in (topic, partition) order
    offset: int = 0                  # the next offset to release (the position)
    skip: int = 0                    # rows of message ``offset`` already released
    stop: Optional[int] = None       # bounded: the end offset
    high: int = 0                    # the end offset when the job opened (caught up past it)
    chunks: Deque[Chunk] = field(default_factory=deque)
    rows: int = 0                    # rows queued
    max_key: int = KEY_MIN           # largest merge key seen
    eof_at: int = -1                 # the offset of the last end-of-partition event
    fetched: int = -1                # the offset after the last message read
    paused: bool = False
    released: int = 0                # rows released since the source opened
    announced: bool = False          # its end told to the watermark (Splits.finish)
    decode_max: int = KEY_MIN        # running max of event time over decoded rows
    seek_skip: int = 0               # rows of message ``seek_offset`` to drop (restore)
    seek_offset: int = -1

    @property
    def label(self) -> str:
        return f"topic {self.topic!r} partition {self.partition}"

    def finished(self) -> bool:
        """Bounded and everything up to the end offset released."""
        return self.stop is not None and not self.chunks and self.offset >= self.stop

    def complete(self) -> bool:
        """No rows are on the way: bounded and read up to the end offset, or caught up with
        the end (past the backlog the job started with).  A complete partition holds no other
        partition back in the merge; its queued rows still merge by key."""
        if self.stop is not None and self.fetched >= self.stop:
            return True
        return self.eof_at >= max(self.high, 0) and self.eof_at >= self.fetched


#: A released slice: rows ``start:stop`` of ``chunk`` of ``partition``.
Slice = Tuple[Partition, Chunk, int, int]
#: What one fetch brings a partition: its chunk (None: messages but no rows), the offset
#: after its messages, and the partition's largest merge key so far.
Fetched = Tuple[Partition, Optional[Chunk], int, int]


@dataclass
class Taken:
    """What :meth:`PartitionMerge.take` released: ``slices`` in release order, and the
    paused partitions whose reader must fetch them again (``resume``)."""

    slices: List[Slice]
    resume: List[Partition]


class PartitionMerge:
    """The partitions' queues and their release order (see the module docstring).

    Examples
    --------
    Two bounded partitions, both read to their end; merged on event time, a take releases
    their rows in (time, partition, offset) order:

    >>> import numpy as np, pyarrow as pa
    >>> def chunk(ts, first_offset):
    ...     ts = np.array(ts, dtype=np.int64)
    ...     n = len(ts)
    ...     return Chunk(pa.record_batch({"ts": ts}), np.arange(first_offset, first_offset + n),
    ...                  np.zeros(n, np.int64), np.maximum.accumulate(ts), first_offset + n, 0)
    >>> a, b = Partition("t", 0, 0, stop=3), Partition("t", 1, 1, stop=2)
    >>> m = PartitionMerge([a, b], merged=True, buffer_rows=100)
    >>> m.push([(a, chunk([1, 4, 6], 0), 3, 6), (b, chunk([2, 5], 0), 2, 5)], {})
    []
    >>> pieces, dead = m.build(m.take(budget=10))
    >>> pieces[0][0]["ts"].to_pylist(), m.position(), m.finished()
    ([1, 2, 4, 5, 6], {'t': {0: 3, 1: 2}}, True)
    """

    def __init__(self, parts: List[Partition], merged: bool, buffer_rows: int,
                 splits: Optional[Splits] = None,
                 split_key: Optional[Callable[[Partition], tuple]] = None):
        self.parts = parts
        self.merged = merged
        self.buffer_rows = buffer_rows
        self.splits = splits
        self.split_key = split_key or (lambda p: (p.partition,))
        self._rr = -1                      # the partition the last round-robin take began with

    # -- queueing (reader threads, under the caller's lock) ---------------------------------------
    def push(self, fetched: List[Fetched], eofs: Dict[Partition, int]) -> List[Partition]:
        """Queue the decoded chunks of one fetch and its end-of-partition events (at the
        offsets given), together: a partition must never look caught up while its last rows
        are still on the way.  Returns the partitions to pause (too many rows queued)."""
        pause = []
        for p, chunk, after, max_key in fetched:
            if chunk is not None:
                p.chunks.append(chunk)
                p.rows += chunk.rows
            p.fetched = max(p.fetched, after)
            p.max_key = max(p.max_key, max_key)
            if p.rows >= self.buffer_rows and not p.paused:
                p.paused = True
                pause.append(p)
        for p, offset in eofs.items():
            p.eof_at = max(p.eof_at, offset)
        return pause

    # -- releasing (the source thread, under the caller's lock) ---------------------------------
    def finished(self) -> bool:
        """Every partition is bounded and released up to its end."""
        return all(p.finished() for p in self.parts)

    def position(self) -> Position:
        """The next offset of every partition after the rows released so far."""
        out: Position = {}
        for p in self.parts:
            out.setdefault(p.topic, {})[p.partition] = [p.offset, p.skip] if p.skip else p.offset
        return out

    def take(self, budget: int) -> Taken:
        """Decide what to release now, about ``budget`` rows, and advance the positions."""
        parts = self.parts
        budget = max(budget, 1)
        frontier = KEY_MAX
        holders: List[Partition] = []
        if self.merged:
            active = [p for p in parts if not p.complete()]
            # One partition still reading and nothing queued elsewhere: nothing to merge with.
            alone = len(active) == 1 and not any(p.chunks for p in parts if p is not active[0])
            if active and not alone:
                frontier = min(p.max_key for p in active)
                holders = [p for p in active if p.max_key == frontier]
            frontier = self._cut(frontier, budget)
        else:
            self._rr = (self._rr + 1) % max(len(parts), 1)
            parts = parts[self._rr:] + parts[:self._rr]
        # Watermark alignment: partitions far ahead of the slowest wait (their queue fills and
        # their reader pauses), unless the merge already orders partitions by event time.
        ahead = self.splits.ahead() if self.splits is not None else ()
        out: List[Slice] = []
        resume: List[Partition] = []
        for p in parts:
            if ahead and self.split_key(p) in ahead:
                continue
            budget = self._take_from(p, frontier, budget, out)
            if not p.chunks and p.eof_at > p.offset and p.eof_at >= p.fetched:
                p.offset, p.skip = p.eof_at, 0     # past transaction markers, aborted records
            # A paused partition reads again once half its queue has gone, and always while
            # it holds the merge back: only its next rows can move the frontier.
            if p.paused and (p.rows < self.buffer_rows // 2 or p in holders):
                p.paused = False
                resume.append(p)
            if self.splits is not None and not p.announced and p.finished():
                p.announced = True
                self.splits.finish(self.split_key(p), p.released)
        return Taken([t for t in out if t[3] > t[2] or t[1].dead is not None], resume)

    def _take_from(self, p: Partition, frontier: int, budget: int, out: List[Slice]) -> int:
        """Release ``p``'s queued rows below ``frontier`` (merged) or up to ``budget`` rows
        (round robin) into ``out``; the budget left."""
        while p.chunks:
            c = p.chunks[0]
            stop = c.batch.num_rows
            if frontier != KEY_MAX and c.keys is not None and stop:
                stop = int(np.searchsorted(c.keys, frontier, side="left"))
                if stop <= c.start:
                    if c.start == 0 and c.dead is not None:
                        out.append((p, c, 0, 0))       # write its dead letters now
                    break
            elif not self.merged:
                if budget <= 0:
                    break
                stop = min(stop, c.start + budget)
                budget -= stop - c.start
            out.append((p, c, c.start, stop))
            p.rows -= stop - c.start
            p.released += stop - c.start
            c.start = stop
            if stop < c.batch.num_rows:
                p.offset, p.skip = int(c.offsets[stop]), int(c.first_row[stop])
                break
            p.chunks.popleft()
            p.offset, p.skip = c.next_offset, 0
        return budget

    def _cut(self, frontier: int, budget: int) -> int:
        """The merge frontier lowered so that about ``budget`` rows (a micro-batch) are
        released: a poll never hands the micro-batcher more than a batch, so a checkpoint
        barrier can follow any batch however much is queued.  The cut is by merge key, so the
        released order stays (key, partition, offset) whatever the budget."""
        keys = []
        total = 0
        for p in self.parts:
            for c in p.chunks:
                if c.keys is None or c.start >= c.batch.num_rows:
                    continue
                stop = (c.batch.num_rows if frontier == KEY_MAX
                        else int(np.searchsorted(c.keys, frontier, side="left")))
                if stop > c.start:
                    keys.append(c.keys[c.start:min(stop, c.start + budget)])
                    total += stop - c.start
                if stop < c.batch.num_rows:
                    break
        if total <= budget:
            return frontier
        cand = np.concatenate(keys)
        k = int(np.partition(cand, budget - 1)[budget - 1])
        # Rows with key < k (fewer than budget); if a run of equal keys fills the budget,
        # release that run whole (it cannot be split without breaking the order).
        return k if (cand < k).any() else k + 1

    def build(self, taken: Taken) -> Tuple[List[Piece], List[pa.RecordBatch]]:
        """The released slices as record batches (merged: in key order), and the dead letters
        of the messages they came from (each chunk's once)."""
        dead = [c.dead for _, c, _, _ in taken.slices if c.dead is not None]
        for _, c, _, _ in taken.slices:
            c.dead = None
        slices = [(c, a, b) for _, c, a, b in taken.slices if b > a]
        if not slices:
            return [], dead
        ingest = min(c.ingest_ns for c, _, _ in slices)
        batches = [c.batch.slice(a, b - a) for c, a, b in slices]
        if len(batches) == 1:
            return [(batches[0], ingest)], dead
        table = pa.Table.from_batches(batches)
        if self.merged and len({id(c) for c, _, _ in slices}) > 1:
            keys = np.concatenate([c.keys[a:b] for c, a, b in slices])
            order = np.argsort(keys, kind="stable")
            if not np.array_equal(order, np.arange(len(order))):
                table = table.take(pa.array(order))
        return [(b, ingest) for b in table.combine_chunks().to_batches()], dead
