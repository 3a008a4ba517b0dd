"""The watermark step: ``with_watermark(time=, max_out_of_orderness=)`` (or a window's own
``time=``) turns event times into watermarks, per split right after a source of several."""
from __future__ import annotations

import logging
import time as _time
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ..errors import DataError
from ..kernels.window import EXACT_GRID, watermark_splits
from .base import WATERMARK_MAX, Item, Operator, Partials, Snapshot, Tick, Watermark
from .clock import time_factor
from .splitclock import SplitClock

log = logging.getLogger("heliosdb.window")
_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min


class WatermarkAssigner(Operator):
    """Emits ``Watermark(max event time seen - max_out_of_orderness)`` after each batch.

    A row that is behind the watermark implied by the rows before it gets that watermark
    delivered first (the batch is cut there), so whether an event is late depends only on the
    order of events, never on where micro-batches were cut: replaying history and following a
    live source give the same results.  ``grid`` (``kernels.window.window_grid`` of the windows
    downstream) says which watermark values matter: the batch is cut only where the watermark
    passes a window end (or end + allowed lateness) since the last one delivered, so a burst
    of late or out-of-order rows costs a few cuts per batch, not one per row.  With
    ``idle_timeout_ns``, ticks that find no data for that long advance the watermark by the
    wall time since the last event.

    Right after a source of several splits (``splits``: the source's
    ``connectors.splits.Splits``, e.g. Kafka partitions) the watermark is kept per split and
    is their minimum (``operators/splitclock.py``): a split read later or more slowly than the
    others is not behind them.  A split idle for ``idle_timeout_ns`` stops holding the
    watermark back until it sends data again; a split more than ``max_drift_ns`` ahead of the
    slowest is marked for the source to pause (watermark alignment).
    """

    kind = "watermark"
    stateful = True

    def __init__(self, name: str, schema: pa.Schema, time: str, max_out_of_orderness_ns: int,
                 idle_timeout_ns: Optional[int] = None, grid: tuple = EXACT_GRID, splits=None,
                 max_drift_ns: Optional[int] = None, on_null: str = "fail"):
        self.name = name
        self.skip_nulls = on_null == "skip"
        self.time = time
        self.grid = grid
        self.clock = None if splits is None else SplitClock(
            splits, schema, name, max_out_of_orderness_ns, idle_timeout_ns, max_drift_ns)
        self.factor = time_factor(schema, time, name)
        self.idx = schema.get_field_index(time)
        self.is_ts = pat.is_timestamp(schema.field(time).type)
        self.bound = max_out_of_orderness_ns
        self.idle_timeout = idle_timeout_ns
        self.current = _I64_MIN           # last watermark emitted
        self.max_seen = _I64_MIN          # largest event time seen (ns)
        self.last_data = _time.time_ns()  # wall time of the last batch

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        col = batch.column(self.idx)
        if col.null_count:
            if not self.skip_nulls:
                row = int(col.is_null().to_numpy(zero_copy_only=False).argmax())
                raise DataError(
                    f"step {self.name!r}: time column {self.time!r} is null at row {row} of a batch; "
                    "every event needs an event time: with_watermark(on_null='skip') drops such "
                    "rows (counted), kafka_source(on_error='dead_letter') keeps them as dead letters"
                )
            batch = self._skip_nulls(batch, col)
            if not batch.num_rows:
                return []
            col = batch.column(self.idx)
        if self.idle_timeout is not None:
            self.last_data = _time.time_ns()
        ts = (col.view(pa.int64()) if self.is_ts else col).to_numpy(zero_copy_only=False)
        if self.clock is not None:
            cuts, marks, k, low = self.clock.low_after(batch, ts, self.factor, self.current, self.grid)
            self.max_seen = max(self.max_seen, self.clock.max_seen())
        else:
            cuts, marks, k, self.max_seen = watermark_splits(ts, self.factor, self.bound,
                                                             self.max_seen, self.current, self.grid)
            low = self.max_seen - self.bound if self.max_seen != _I64_MIN else _I64_MIN
        out: List[Item] = []
        start = 0
        for j in range(k):
            cut, mark = int(cuts[j]), int(marks[j])
            if cut > start:
                out.append(batch.slice(start, cut - start))
            out.append(Watermark(mark))
            self.current = mark
            start = cut
        out.append(batch.slice(start) if start else batch)
        if _I64_MIN < low < _I64_MAX and low > self.current:
            self.current = low
            out.append(Watermark(low))
        return out

    def _skip_nulls(self, batch: pa.RecordBatch, col: pa.Array) -> pa.RecordBatch:
        n = col.null_count
        if not self.null_event_times:
            log.warning("step %r: %d rows without an event time (%r is null) dropped, as "
                        "with_watermark(on_null='skip') asks; further ones are counted in "
                        "streaming_dead_letters_total{reason=\"null_event_time\"}", self.name, n,
                        self.time, extra={"operator": self.name})
        self.null_event_times += n
        return batch.filter(col.is_valid())

    def process_partials(self, pre: Partials) -> List[Item]:
        """A replica's pre-aggregated batch that needs no cut (no row behind the rows before
        it, in the batch or before it): passed on whole, then the watermark; else its rows
        are cut and sent on, as with parallelism 1."""
        if not (pre.usable and pre.ordered) or self.clock is not None:
            return self.process_batch(pre.batch)
        if self.max_seen != _I64_MIN and pre.min_ns < self.max_seen - self.bound:
            return self.process_batch(pre.batch)
        if self.idle_timeout is not None:
            self.last_data = _time.time_ns()
        self.max_seen = max(self.max_seen, pre.max_ns)
        out: List[Item] = [pre]
        if self.max_seen - self.bound > self.current:
            self.current = self.max_seen - self.bound
            out.append(Watermark(self.current))
        return out

    def on_watermark(self, t: int) -> List[Item]:
        # An upstream watermark (e.g. end of input) only ever moves ours forward.
        if t > self.current:
            self.current = t
            return [Watermark(t)]
        return []

    def on_tick(self, now: int) -> List[Item]:
        out: List[Item] = []
        idle = now - self.last_data
        if self.clock is not None:
            low = self.clock.low(now)          # a split went idle or finished: may rise
            if _I64_MIN < low < _I64_MAX:
                if low > self.current:
                    self.current = low
                    out.append(Watermark(low))
                return out + [Tick(now)]
        if (self.idle_timeout is not None and self.max_seen != _I64_MIN
                and idle >= self.idle_timeout):
            mark = self.max_seen - self.bound + idle
            if mark > self.current:
                self.current = mark
                out.append(Watermark(mark))
        return out + [Tick(now)]

    def snapshot(self) -> Snapshot:
        meta = {"current": self.current, "max_seen": self.max_seen}
        if self.clock is not None:
            meta.update(self.clock.snapshot())
        return Snapshot({}, meta)

    def restore(self, tables: Dict[str, pa.Table], metas: List[dict], select=None, first: bool = True,
                owned: bool = False) -> None:
        if metas:
            self.current = max(m["current"] for m in metas)
            self.max_seen = max(m["max_seen"] for m in metas)
            if self.clock is not None:
                self.clock.restore(metas)

    def describe(self) -> str:
        idle = f", idle timeout {self.idle_timeout / 1e9:g}s" if self.idle_timeout else ""
        per = "" if self.clock is None else f", per split of {', '.join(self.clock.splits.columns)}"
        return f"watermark[{self.name}] on {self.time!r}, max out-of-orderness {self.bound / 1e9:g}s{idle}{per}"

    # -- declared statistics (metrics, diagnose) --------------------------------------------------
    def watermark_ns(self) -> Optional[int]:
        """The watermark last emitted (None: none yet, or the input has ended)."""
        wm = self.current
        if wm == _I64_MIN or wm >= WATERMARK_MAX:
            return None
        return int(wm)

    def holding_split(self) -> Optional[str]:
        """The live split whose watermark is the lowest, named ``column=value`` (e.g.
        ``"kafka_partition=3"``), when it holds the watermark back: None without per-split
        watermarks, with fewer than two live splits, or when they are all at the same one.

        ``JobHandle.diagnose()`` names it.  Read from other threads: it copies the split
        clock's arrays (the processing thread replaces them when a split appears), so at worst
        it names the split that was lowest a moment ago.

        Examples
        --------
        >>> import pyarrow as pa
        >>> from heliosdb.connectors.splits import Splits
        >>> schema = pa.schema([("p", pa.int32()), ("ts", pa.int64())])
        >>> WatermarkAssigner("wm", schema, "ts", 0).holding_split() is None
        True
        >>> splits = Splits(["p"]); splits.declare([(0,), (1,)])
        >>> wm = WatermarkAssigner("wm", schema, "ts", 0, splits=splits)
        >>> _ = wm.process_batch(pa.record_batch({"p": pa.array([0], pa.int32()), "ts": [5_000]}))
        >>> wm.holding_split()                          # partition 1 has sent nothing yet
        'p=1'
        """
        clock = self.clock
        if clock is None:
            return None
        keys, seen, live = list(clock.keys), clock.seen.copy(), clock.live.copy()
        n = min(len(keys), len(seen), len(live))
        alive = np.flatnonzero(live[:n])
        if len(alive) < 2 or seen[alive].min() == seen[alive].max():
            return None
        key = keys[int(alive[np.argmin(seen[alive])])]
        return ", ".join(f"{c}={v}" for c, v in zip(clock.splits.columns, key))


