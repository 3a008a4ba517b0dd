"""Keyed tumbling-window aggregation on event time.

Per batch: window starts from the time column (Numba) -> (window start, key codes) to a dense
group id in a hash table (Cython) -> accumulator arrays updated by group id (Cython, nogil).
On a watermark, every group whose window ended at or before it is emitted and its state freed
(the table is compacted, so state stays proportional to the open windows).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ..errors import DataError, HeliosError
from ..expr import AggSpec
from ..kernels import _hashagg
from ..kernels.window import tumbling_starts
from ..windows import TumblingWindow, time_factor
from .base import Item, Operator, Watermark
from .keys import KeyEncoder

log = logging.getLogger("heliosdb.window")

_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min
WINDOW_TYPE = pa.timestamp("ns", tz="UTC")


class _ColumnStats:
    """Per-group non-null count, sum, min, max (and NaN count for floats) of one column."""

    def __init__(self, is_float: bool, capacity: int):
        self.is_float = is_float
        dt = np.float64 if is_float else np.int64
        self.nn = np.zeros(capacity, np.int64)
        self.nan = np.zeros(capacity, np.int64)
        self.sum = np.zeros(capacity, dt)
        self.min = np.full(capacity, np.inf if is_float else _I64_MAX, dt)
        self.max = np.full(capacity, -np.inf if is_float else _I64_MIN, dt)

    def arrays(self):
        return ("nn", "nan", "sum", "min", "max")

    def fill_values(self):
        return {"nn": 0, "nan": 0, "sum": 0, "min": np.inf if self.is_float else _I64_MAX,
                "max": -np.inf if self.is_float else _I64_MIN}

    def resize(self, capacity: int) -> None:
        fills = self.fill_values()
        for a in self.arrays():
            old = getattr(self, a)
            new = np.full(capacity, fills[a], old.dtype)
            n = min(len(old), capacity)
            new[:n] = old[:n]
            setattr(self, a, new)

    def take(self, idx: np.ndarray, capacity: int) -> None:
        fills = self.fill_values()
        for a in self.arrays():
            old = getattr(self, a)
            new = np.full(capacity, fills[a], old.dtype)
            new[: len(idx)] = old[idx]
            setattr(self, a, new)

    def update(self, gids: np.ndarray, arr: pa.Array) -> None:
        valid = None
        if arr.null_count:
            valid = arr.is_valid().to_numpy(zero_copy_only=False).view(np.uint8)
            arr = arr.fill_null(0)
        if self.is_float:
            v = np.ascontiguousarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)
            _hashagg.update_f64(gids, v, valid, self.nn, self.nan, self.sum, self.min, self.max)
        else:
            v = np.ascontiguousarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)
            _hashagg.update_i64(gids, v, valid, self.nn, self.sum, self.min, self.max)

    def result(self, kind: str, idx: np.ndarray) -> pa.Array:
        nn = self.nn[idx]
        empty = nn == 0
        mask = empty if empty.any() else None
        if kind == "count":
            return pa.array(nn, pa.int64())
        if kind == "sum":
            return pa.array(self.sum[idx], mask=mask)
        if kind == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                return pa.array(self.sum[idx] / np.maximum(nn, 1), pa.float64(), mask=mask)
        if kind == "min":
            v = self.min[idx]
            if self.is_float:
                v = np.where(self.nan[idx] == nn, np.nan, v)
            return pa.array(v, mask=mask)
        if kind == "max":
            v = self.max[idx]
            if self.is_float:
                v = np.where(self.nan[idx] > 0, np.nan, v)
            return pa.array(v, mask=mask)
        raise AssertionError(kind)

    def nbytes(self) -> int:
        return sum(getattr(self, a).nbytes for a in self.arrays())


class TumblingWindowAggregate(Operator):
    """``key_by(...).window(TumblingWindow.of(size), time=...).aggregate(...)``."""

    kind = "window"

    def __init__(self, name: str, schema: pa.Schema, keys: List[str], window: TumblingWindow,
                 time: str, aggs: List[Tuple[str, AggSpec]], max_state_bytes: int):
        self.name = name
        self.window = window
        self.size_ns = window.size_ns
        self.time = time
        self.factor = time_factor(schema, time, name)
        self.time_idx = schema.get_field_index(time)
        self.time_is_ts = pat.is_timestamp(schema.field(time).type)
        self.encoder = KeyEncoder(schema, keys, name)
        self.aggs = aggs
        self.max_state_bytes = max_state_bytes
        out_fields = [pa.field("window_start", WINDOW_TYPE, nullable=False),
                      pa.field("window_end", WINDOW_TYPE, nullable=False)]
        out_fields += [schema.field(k) for k in keys]
        self.stats: Dict[str, _ColumnStats] = {}
        self.count_rows = any(a.kind == "count" and a.column is None for _, a in aggs)
        for out_name, agg in aggs:
            out_fields.append(pa.field(out_name, agg.output_type(schema, name)))
            if agg.column is not None and agg.column not in self.stats:
                t = schema.field(agg.column).type
                self.stats[agg.column] = _ColumnStats(pat.is_floating(t), 1024)
        self.output_schema = pa.schema(out_fields)
        self._stat_idx = {c: schema.get_field_index(c) for c in self.stats}
        self.capacity = 1024
        self.counts = np.zeros(self.capacity, np.int64)
        self.nulls = False                      # whether the table carries a null word
        self.table = _hashagg.GroupTable(1 + self.encoder.width, 1024)
        self.watermark = _I64_MIN
        self.min_open = _I64_MAX                # smallest window start with state
        self.late_events = 0
        self._gids = np.empty(0, np.int64)

    # -- per batch ---------------------------------------------------------------------------
    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        n = batch.num_rows
        if n == 0:
            return []
        tcol = batch.column(self.time_idx)
        if tcol.null_count:
            row = tcol.is_null().to_numpy(zero_copy_only=False).argmax()
            raise DataError(
                f"step {self.name!r}: time column {self.time!r} is null at row {row} of a batch; "
                "every event needs an event time (filter nulls out first)"
            )
        ts = (tcol.view(pa.int64()) if self.time_is_ts else tcol).to_numpy(zero_copy_only=False)
        starts, lo, hi, bad = tumbling_starts(ts, self.factor, self.size_ns)
        if bad >= 0:
            raise DataError(
                f"step {self.name!r}: time column {self.time!r} value {int(ts[bad])} (row {bad}) is "
                "outside the range of int64 nanoseconds (years 1678-2262)"
            )
        if lo + self.size_ns <= self.watermark:
            # Windows that already closed: these events are late (counted, not aggregated).
            ontime = starts + self.size_ns > self.watermark
            late = n - int(ontime.sum())
            self.late_events += late
            log.warning("step %r: %d late events dropped (watermark %d)", self.name, late, self.watermark)
            batch = batch.filter(pa.array(ontime))
            starts = np.ascontiguousarray(starts[ontime])
            n = batch.num_rows
            if n == 0:
                return []
            lo = int(starts.min())
        codes, nullword = self.encoder.encode(batch)
        if nullword is not None and not self.nulls:
            self.table = self.table.widen(0)
            self.nulls = True
        cols = [starts] + codes
        if self.nulls:
            cols.append(nullword if nullword is not None else np.zeros(n, np.int64))
        if len(self._gids) < n:
            self._gids = np.empty(max(n, 2 * len(self._gids)), np.int64)
        gids = self._gids[:n]
        self.table.insert(cols, gids)
        self._reserve(self.table.n_groups)
        if self.count_rows:
            _hashagg.count_rows(gids, self.counts)
        for c, st in self.stats.items():
            st.update(gids, batch.column(self._stat_idx[c]))
        if lo < self.min_open:
            self.min_open = lo
        self._check_memory()
        return []

    def _reserve(self, groups: int) -> None:
        if groups <= self.capacity:
            return
        cap = self.capacity
        while cap < groups:
            cap *= 2
        new = np.zeros(cap, np.int64)
        new[: self.capacity] = self.counts
        self.counts = new
        for st in self.stats.values():
            st.resize(cap)
        self.capacity = cap

    def _check_memory(self) -> None:
        size = self.state_size_bytes()
        if size > self.max_state_bytes:
            raise HeliosError(
                f"step {self.name!r}: window state is {size:,} bytes ({self.table.n_groups:,} open "
                f"groups), over the memory backend's bound of {self.max_state_bytes:,} bytes; raise "
                "StateBackend.memory(max_size_bytes=), use smaller windows, or fewer keys"
            )

    def state_size_bytes(self) -> int:
        return (self.table.nbytes + self.counts.nbytes + self.encoder.nbytes()
                + sum(st.nbytes() for st in self.stats.values()))

    @property
    def open_groups(self) -> int:
        return self.table.n_groups

    def open_windows(self) -> int:
        if not self.table.n_groups:
            return 0
        return int(np.unique(self.table.keys_view()[:, 0]).size)

    # -- event time --------------------------------------------------------------------------
    def on_watermark(self, t: int) -> List[Item]:
        out: List[Item] = []
        if t > self.watermark:
            self.watermark = t
            if self.table.n_groups and self.min_open <= t - self.size_ns:
                out.append(self._emit_closed())
        out.append(Watermark(t))
        return out

    def _emit_closed(self) -> pa.RecordBatch:
        keys = self.table.keys_view()
        starts = keys[:, 0]
        closed = starts <= self.watermark - self.size_ns
        idx = np.flatnonzero(closed)
        keep = np.flatnonzero(~closed)
        batch = self._results(keys, idx)
        self.table.compact(np.ascontiguousarray(keep, dtype=np.int64))
        cap = max(1024, 1 << int(max(len(keep), 1) - 1).bit_length())
        counts = np.zeros(cap, np.int64)
        counts[: len(keep)] = self.counts[keep]
        self.counts = counts
        for st in self.stats.values():
            st.take(keep, cap)
        self.capacity = cap
        self.min_open = int(starts[keep].min()) if len(keep) else _I64_MAX
        return batch

    def _results(self, keys: np.ndarray, idx: np.ndarray) -> pa.RecordBatch:
        starts = np.ascontiguousarray(keys[idx, 0])
        arrays = [pa.array(starts, pa.int64()).view(WINDOW_TYPE),
                  pa.array(starts + self.size_ns, pa.int64()).view(WINDOW_TYPE)]
        w = self.encoder.width
        nullword = keys[idx, 1 + w] if self.nulls else None
        arrays += self.encoder.decode(keys[idx, 1: 1 + w], nullword)
        for out_name, agg in self.aggs:
            if agg.kind == "count" and agg.column is None:
                arrays.append(pa.array(self.counts[idx], pa.int64()))
            else:
                arrays.append(self.stats[agg.column].result(agg.kind, idx))
        return pa.RecordBatch.from_arrays(arrays, schema=self.output_schema)

    def close(self) -> List[Item]:
        return []

    def describe(self) -> str:
        keys = ", ".join(self.encoder.names)
        aggs = ", ".join(f"{n}={a!r}" for n, a in self.aggs)
        return f"window[{self.name}] key_by({keys}) {self.window!r} on {self.time!r}: {aggs}"


class WatermarkAssigner(Operator):
    """Emits ``Watermark(max event time seen - max_out_of_orderness)`` after each batch."""

    kind = "watermark"

    def __init__(self, name: str, schema: pa.Schema, time: str, max_out_of_orderness_ns: int):
        from ..kernels.window import max_time

        self._max_time = max_time
        self.name = name
        self.time = time
        self.factor = time_factor(schema, time, name)
        self.idx = schema.get_field_index(time)
        self.is_ts = pat.is_timestamp(schema.field(time).type)
        self.bound = max_out_of_orderness_ns
        self.current = _I64_MIN

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        col = batch.column(self.idx)
        if col.null_count:
            col = col.drop_null()
        ts = (col.view(pa.int64()) if self.is_ts else col).to_numpy(zero_copy_only=False)
        m = int(self._max_time(ts, self.factor))
        if m != _I64_MIN and m - self.bound > self.current:
            self.current = m - self.bound
            return [batch, Watermark(self.current)]
        return [batch]

    def on_watermark(self, t: int) -> List[Item]:
        # An upstream watermark (e.g. end of input) only ever moves ours forward.
        if t > self.current:
            self.current = t
            return [Watermark(t)]
        return []

    def describe(self) -> str:
        return f"watermark[{self.name}] on {self.time!r}, max out-of-orderness {self.bound / 1e9:g}s"
