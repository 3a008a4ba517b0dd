"""Two-phase window aggregation: replicas pre-aggregate batches, one final step merges them.

With parallelism ``n``, a window made of panes (tumbling, sliding, ...) on event time runs as::

    n x [fused kernel -> PreAggregate] --in order--> [watermark -> window (merges)]

Each replica folds one batch at a time into per-pane partial accumulators with the same
clock, windower and pane store as the window (``operators/clock.py``, ``windower.py``,
``panes.py``), and sends them on with the batch itself, as one :class:`PanePartials` item
(a ``base.Partials``: an item of its own, not a batch).  The final window step takes them in
the order of the input (see :mod:`heliosdb.runtime.sequence`) and merges the partials into
its panes (``process_partials``), a few thousand groups instead of tens of thousands of rows,
when it can prove that the batch would have changed nothing else: no row of it is behind the
watermark, so none is late, none updates an emitted window and the watermark assigner would
not cut it.  Otherwise (out-of-order or late data, bad times, nulls) it processes the batch's
rows exactly as with parallelism 1.  Either way the windows, their rows, lateness, late
output and snapshots are those of parallelism 1; float sums (and the means, variances built
on them) can differ in the last bits, because the additions are grouped by batch.

Timeline (tumbling 1 s, watermark = max time seen):

    batch [0.2 s .. 0.9 s] -> replica 0: pane 0      -> final: new pane 0, taken whole
    batch [0.9 s .. 1.4 s] -> replica 1: panes 0, 1  -> final: pane 0 replayed, pane 1 taken
    batch [1.9 s .. 0.5 s] -> replica 0: out of order -> final: rows processed as at p=1
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa

from ..errors import HeliosError
from ..kernels.window import watermark_splits
from .base import Item, Partials, Watermark
from .clock import EventClock
from .keyedbase import Aggs, KeyedOperator
from .panes import PanePart, pane_store

_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min


class PanePartials(Partials):
    """One batch and what a replica made of it.

    ``parts`` (one :class:`~heliosdb.operators.panes.PanePart` per pane) is None when the
    batch could not be pre-aggregated: the final window then takes its rows.  ``direct`` says
    that key codes mean the same in every instance (no string keys), ``nulls`` that they
    carry a null word; ``keys`` is the key table of the whole batch when the panes share one
    (``panes.SharedKeyPanes``).
    """

    __slots__ = ("parts", "keys", "direct", "nulls")

    def __init__(self, batch: pa.RecordBatch):
        super().__init__(batch)
        self.parts: Optional[List[PanePart]] = None
        self.keys = None
        self.direct = False
        self.nulls = False

    @property
    def usable(self) -> bool:
        return self.parts is not None


class PreAggregate(KeyedOperator):
    """A replica's share of a two-phase window: ``process_batch`` returns one PanePartials.

    ``window`` is the window spec (its ``windower()`` says which panes), ``time`` the event
    time column; ``bound`` is the max out-of-orderness of the watermark assigner after the
    replicas (None: none there).  State lasts one batch (memory).

    Examples
    --------
    >>> import pyarrow as pa
    >>> import heliosdb as hdb
    >>> schema = pa.schema([("ts", pa.int64()), ("k", pa.int64())])
    >>> pre = PreAggregate("w.pre", schema, ["k"], hdb.TumblingWindow.of(1), "ts", [("n", hdb.count())], 0)
    >>> [p] = pre.process_batch(pa.record_batch({"ts": [0, 500, 1_200], "k": [1, 2, 1]}))
    >>> p.usable, [part.start for part in p.parts], (p.min_ns, p.max_ns)
    (True, [0, 1000000000], (0, 1200000000))
    """

    kind = "pre-aggregate"
    stateful = False
    parallel_kind = "replicas"

    def __init__(self, name: str, schema: pa.Schema, keys: List[str], window, time: str,
                 aggs: Aggs, bound: Optional[int]):
        super().__init__(name, schema, keys, aggs, _I64_MAX)
        self._args = (schema, keys, window, time, aggs, bound)
        self.windower = window.windower()
        self.clock = EventClock(schema, time, name)
        self.store = pane_store(self.acc, self.width, self.windower)
        self.bound = bound
        self.parallel = 1
        self.watermark = _I64_MIN       # the last watermark from upstream (an assigner there)

    def replica(self, index: int) -> "PreAggregate":
        return PreAggregate(f"{self.name}#{index}", *self._args)

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        pre = PanePartials(batch)
        clock = self.clock
        try:
            ts = clock.times(batch)
            lo, hi = int(ts.min()), int(ts.max())
            limit = _I64_MAX // clock.factor
            if hi > limit or lo < -limit:
                return [pre]                        # the final step reports the bad time
            pre.min_ns, pre.max_ns = lo * clock.factor, hi * clock.factor
            # A batch the final step will take as rows anyway is not pre-aggregated: one with a
            # row behind a row before it (the assigner after the replicas cuts it), or, with
            # the assigner before them, a row behind the watermark that came before the batch.
            if self.bound is not None:
                pre.ordered = watermark_splits(ts, clock.factor, self.bound, _I64_MIN, _I64_MIN)[2] == 0
                if not pre.ordered:
                    return [pre]
            elif pre.min_ns < self.watermark:
                return [pre]
            self._pre_aggregate(batch, pre)
        except HeliosError:
            return [pre]                            # the final step meets the error itself
        return [pre]

    def _values_portable(self) -> bool:
        """Whether aggregate inputs are coded alike in every instance (no string values in
        first/last/count_distinct: their codes come from a per-instance string table)."""
        return self.acc.values_portable()

    def _pre_aggregate(self, batch: pa.RecordBatch, pre: PanePartials) -> None:
        """Fold ``batch`` into fresh panes and hand them to ``pre`` with each run's rows
        (group ids and prepared values), so the final window can either take a new pane
        whole or replay the rows' updates in order."""
        if not self._values_portable():
            return                                    # the final window takes the rows
        store, windower = self.store, self.windower
        store.reset()
        self.seq = 0
        n = batch.num_rows
        batch, runs, ts, cols, prepared = self._in_pane_order(batch, [0, n], windower.pane_ns, self.clock)
        store.reserve(n)
        got: Dict[int, list] = {}
        for rb, starts in runs:
            s0, s1 = int(rb[0]), int(rb[-1])
            store.begin_part([c[s0:s1] for c in cols], s0, s1)
            for r in range(len(starts)):
                pane, b0, b1 = int(starts[r]), int(rb[r]), int(rb[r + 1])
                if windower.last_end(pane) > _I64_MAX:
                    raise self.clock.bad_time(ts, b0)
                run = prepared.slice(b0, b1)
                got.setdefault(pane, []).append((store.pre_add(pane, cols, run, b0, b1), run))
        pre.direct = "str" not in self.encoder.kinds     # key codes mean the same everywhere
        pre.nulls = self.nulls
        store.hand_over(pre, got, self._key_table)

    def _key_table(self, keys: np.ndarray) -> pa.Table:
        return pa.table(self._key_arrays(keys))

    def _widen(self) -> None:
        self.store.widen()

    def on_watermark(self, t: int) -> List[Item]:
        self.watermark = max(self.watermark, t)
        return [Watermark(t)]

    def describe(self) -> str:
        return f"pre-aggregate[{self.name}] partial window aggregates per batch"
