"""As-of (temporal) joins: each left row with the right row of its key whose time is the latest
at or before the left row's (within ``tolerance``), as Polars' ``join_asof`` (backward).

The right side is a versioned table kept by the watermark: its rows wait in per-key chains
(``symmetric.ChainedJoin``).  A left row waits until the watermark passes its time: then no
right row at or before it can still arrive, so the answer does not depend on arrival order.
At each watermark the waiting left rows it passed pick their version in one compiled pass
(``kernels._join.asof_pick``, ties to the right row that arrived last) and are emitted, with
nulls where there is none (``how="left"``; ``how="inner"`` drops them).  Versions no later
left row can pick go (``asof_prune``): of each key's rows before the watermark only the latest
is kept, and not even that one once it is more than ``tolerance`` behind.

Rows of either side behind the watermark are late (a right row could change answers already
given; a left row could need versions already dropped).  A left row with a null key has no
version (emitted at once, with nulls, by a left join); a right row with a null key is never
picked and is not kept.

Timeline::

    right k=1 at 2 (v=a), at 6 (v=b) | left k=1 at 5 | watermark 6 -> (5, a)
    watermark 7: the version at 2 is dropped (the one at 6 answers every later left row)
"""
from __future__ import annotations

from typing import List

import numpy as np
import pyarrow as pa

from ...kernels._join import asof_pick, asof_prune
from ..base import WATERMARK_MAX, Item
from .symmetric import I64_MAX, MIN_DEAD, ChainedJoin


class AsofJoin(ChainedJoin):
    """``left.join_asof(right, on=..., tolerance=...)``; see the module docstring.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from heliosdb.operators.join import JoinSpec, make_join
    >>> left = pa.schema([("ts", pa.int64()), ("k", pa.int64())])
    >>> right = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("v", pa.string())])
    >>> spec = JoinSpec("asof", "k", "k", how="left", coalesce_keys=True, left_time="ts", right_time="ts")
    >>> op = make_join(spec, left, right)
    >>> op.process_side(1, pa.record_batch({"ts": [2, 6], "k": [1, 1], "v": ["a", "b"]}))
    []
    >>> op.process_side(0, pa.record_batch({"ts": [5, 1], "k": [1, 1]}))
    []
    >>> op.on_watermark(6_000_000)[0].to_pydict()
    {'ts': [5, 1], 'k': [1, 1], 'ts_right': [2, None], 'v': ['a', None]}
    """

    def __init__(self, spec, left_schema, right_schema, name="join", max_state_bytes=None, backend=None):
        super().__init__(spec, left_schema, right_schema, name, max_state_bytes, backend)
        self.tolerance = -1 if spec.tolerance_ns is None else spec.tolerance_ns
        self._unpruned = 0                 # right rows added since the last prune

    def process_side(self, side: int, batch: pa.RecordBatch) -> List[Item]:
        if not batch.num_rows:
            return []
        t = self._times(side, batch)
        late: List[Item] = []
        behind = t < self.watermark
        if behind.any():
            late = self._late(side, batch.filter(pa.array(behind)))
            batch, t = batch.filter(pa.array(~behind)), t[~behind]
        out: List[Item] = []
        if batch.num_rows:
            kid = self._ids(side, batch)
            null = kid < 0
            if null.any():
                if side == 0 and self.spec.how == "left":
                    out = self._emit(batch, np.flatnonzero(null), None, None)
                batch, t, kid = batch.filter(pa.array(~null)), t[~null], kid[~null]
            if batch.num_rows:
                self._keep(side, batch, t=t, kid=kid, exp=t)
                if side == 1:
                    self._unpruned += batch.num_rows
        self._check_memory()
        return out + late

    def _advance(self, before: int, t: int) -> List[Item]:
        left, right = self.sides
        out: List[Item] = []
        if left.live:
            lt = left.a("t")
            idx = np.flatnonzero((left.a("alive") == 1) & (lt < t))
            if len(idx):
                pick = asof_pick(np.ascontiguousarray(left.a("kid")[idx]), np.ascontiguousarray(lt[idx]),
                                 self.tolerance, self.heads[1], right.full("nxt"), right.full("t"),
                                 right.full("alive"))
                rows = idx
                if self.spec.how == "inner":
                    found = pick >= 0
                    rows, pick = idx[found], pick[found]
                if len(rows):
                    out += self._emit(left.rows, rows, right.rows, pick)
                left.kill(idx)
        if right.live:
            if t >= WATERMARK_MAX:
                right.kill(right.alive_rows())
            elif self._unpruned * 2 >= right.live or right.live < MIN_DEAD:
                best = np.full(len(self.heads[1]), -1, np.int64)
                n = right.n
                asof_prune(right.full("kid"), right.full("t"), right.full("alive"), n, t, self.tolerance, best)
                right.live = int(right.a("alive").sum())
                self._unpruned = 0
        self.min_exp = [I64_MAX, I64_MAX]
        self._maybe_compact()
        return out

    def _state_summary(self) -> str:
        return f"{self.sides[0].live:,} waiting left rows and {self.sides[1].live:,} right versions"
