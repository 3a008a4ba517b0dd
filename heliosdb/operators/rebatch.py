"""``batch(n)``: regroup the stream into record batches of exactly ``n`` rows.

Rows are buffered until ``n`` have arrived; the last batch at the end of the input may be
shorter.  A watermark never overtakes the rows it follows: one that arrives while rows are
buffered is held until the batch holding the last of those rows has been emitted (rows that
arrived after it may ride along in that batch, which only delays the watermark, and delaying a
watermark is always safe).  ``unbatch()`` ends the regrouping; it needs no operator.
"""
from __future__ import annotations

from collections import deque
from typing import Deque, List, Tuple

import pyarrow as pa

from .base import WATERMARK_MAX, Item, Operator, Watermark


class RebatchOperator(Operator):
    """Emits batches of exactly ``size`` rows (and a shorter last one when the input ends)."""

    kind = "batch"

    def __init__(self, size: int, name: str):
        self.size = size
        self.name = name
        self._pending: Deque[pa.RecordBatch] = deque()
        self._rows = 0                 # rows buffered
        self._taken = 0                # rows received so far
        self._emitted = 0              # rows emitted so far
        self._held: Deque[Tuple[int, int]] = deque()   # (rows received before it, watermark)

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        if not batch.num_rows:
            return []
        self._pending.append(batch)
        self._rows += batch.num_rows
        self._taken += batch.num_rows
        out: List[Item] = []
        while self._rows >= self.size:
            self._emit(self.size, out)
        return out

    def on_watermark(self, t: int) -> List[Item]:
        if t >= WATERMARK_MAX:           # the input has ended: flush the short last batch
            return self._flush() + [Watermark(t)]
        if not self._rows:
            return [Watermark(t)]
        self._held.append((self._taken, t))
        return []

    def close(self) -> List[Item]:
        return self._flush()

    def _flush(self) -> List[Item]:
        out: List[Item] = []
        if self._rows:
            self._emit(self._rows, out)
        return out

    def _emit(self, n: int, out: List[Item]) -> None:
        """Emit the next ``n`` buffered rows (zero-copy slices unless they span batches)."""
        pieces = []
        need = n
        while need:
            b = self._pending[0]
            if b.num_rows <= need:
                pieces.append(self._pending.popleft())
                need -= b.num_rows
            else:
                pieces.append(b.slice(0, need))
                self._pending[0] = b.slice(need)
                need = 0
        if len(pieces) == 1:
            out.append(pieces[0])
        else:
            out.append(pa.Table.from_batches(pieces).combine_chunks().to_batches()[0])
        self._rows -= n
        self._emitted += n
        while self._held and self._held[0][0] <= self._emitted:
            out.append(Watermark(self._held.popleft()[1]))

    def describe(self) -> str:
        return f"batch[{self.name}] regroup into batches of {self.size:,} rows"
