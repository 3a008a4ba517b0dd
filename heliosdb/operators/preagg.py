"""Two-phase window aggregation: replicas pre-aggregate batches, one final step merges them.

With parallelism ``n``, a tumbling or sliding event-time window runs as::

    n x [fused kernel -> PreAggregate] --in order--> [watermark -> window (merges)]

Each replica folds one batch at a time into per-pane partial accumulators
(``accumulators.Partial``: count, sum, min, max, ... per group) and sends them on with the
batch itself.  The final window step takes them in the order of the input (see
:mod:`heliosdb.runtime.sequence`) and merges the partials into its panes, a few thousand
groups instead of tens of thousands of rows, when it can prove that the batch would have
changed nothing else: no row of it is behind the watermark, so none is late, none updates an
emitted window and the watermark assigner would not cut it.  Otherwise (out-of-order or late
data, bad times, nulls) it processes the batch's rows exactly as with parallelism 1.  Either
way the windows, their rows, lateness, late output and snapshots are those of parallelism 1;
float sums (and the means, variances built on them) can differ in the last bits, because the
additions are grouped by batch.

Timeline (tumbling 1 s, watermark = max time seen):

    batch [0.2 s .. 0.9 s] -> replica 0: pane 0      -> final: new pane 0, taken whole
    batch [0.9 s .. 1.4 s] -> replica 1: panes 0, 1  -> final: pane 0 replayed, pane 1 taken
    batch [1.9 s .. 0.5 s] -> replica 0: out of order -> final: rows processed as at p=1
"""
from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np
import pyarrow as pa

from ..errors import HeliosError
from ..kernels.window import watermark_splits
from .base import Item, Operator, Watermark

_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min


class PanePart:
    """What a replica made of one pane's rows of a batch: its state (``pane``: key table and
    accumulators, tumbling windows), each run of rows as (group ids in that table, prepared
    values), and the keys decoded (``keys``) when codes do not carry over (string keys)."""

    __slots__ = ("start", "pane", "runs", "keys")

    def __init__(self, start: int, pane, runs: list, keys: Optional[pa.Table]):
        self.start, self.pane, self.runs, self.keys = start, pane, runs, keys


class PreAggregated:
    """One batch and what a replica made of it.

    ``parts`` (one :class:`PanePart` per pane) is None when the batch could not be
    pre-aggregated: the final window then takes its rows.  ``direct`` says that key codes
    mean the same in every instance (no string keys), ``nulls`` that they carry a null word;
    ``keys`` is a sliding window's key table of the whole batch.  ``min_ns``/``max_ns`` are
    the batch's event-time range, ``ordered`` says that no row is more than ``bound`` behind
    a row before it in the batch.
    """

    __slots__ = ("batch", "parts", "keys", "direct", "nulls", "min_ns", "max_ns", "ordered")

    def __init__(self, batch: pa.RecordBatch):
        self.batch = batch
        self.parts: Optional[List[PanePart]] = None
        self.keys = None
        self.direct = False
        self.nulls = False
        self.min_ns = _I64_MAX
        self.max_ns = _I64_MIN
        self.ordered = False

    @property
    def num_rows(self) -> int:
        return self.batch.num_rows

    @property
    def usable(self) -> bool:
        return self.parts is not None


class PreAggregate(Operator):
    """A replica's share of a two-phase window: ``process_batch`` returns one PreAggregated.

    ``make`` builds a window operator of the same spec (memory state) to aggregate into;
    ``bound`` is the max out-of-orderness of the watermark assigner after the replicas
    (None: none there).
    """

    kind = "pre-aggregate"

    def __init__(self, name: str, make: Callable[[], Operator], bound: Optional[int]):
        self.name = name
        self.make = make
        self.bound = bound
        self.window = make()
        self.parallel = 1
        self.watermark = _I64_MIN       # the last watermark from upstream (an assigner there)

    def replica(self, index: int) -> "PreAggregate":
        return PreAggregate(f"{self.name}#{index}", self.make, self.bound)

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        pre = PreAggregated(batch)
        w = self.window
        try:
            ts = w._times(batch)
            lo, hi = int(ts.min()), int(ts.max())
            limit = _I64_MAX // w.factor
            if hi > limit or lo < -limit:
                return [pre]                        # the final step reports the bad time
            pre.min_ns, pre.max_ns = lo * w.factor, hi * w.factor
            # A batch the final step will take as rows anyway is not pre-aggregated: one with a
            # row behind a row before it (the assigner after the replicas cuts it), or, with
            # the assigner before them, a row behind the watermark that came before the batch.
            if self.bound is not None:
                pre.ordered = watermark_splits(ts, w.factor, self.bound, _I64_MIN, _I64_MIN)[2] == 0
                if not pre.ordered:
                    return [pre]
            elif pre.min_ns < self.watermark:
                return [pre]
            w.pre_aggregate(batch, pre)
        except HeliosError:
            return [pre]                            # the final step meets the error itself
        return [pre]

    def on_watermark(self, t: int) -> List[Item]:
        self.watermark = max(self.watermark, t)
        return [Watermark(t)]

    def describe(self) -> str:
        return f"pre-aggregate[{self.name}] partial window aggregates per batch"
