"""Keyed tumbling-window aggregation on event time.

State is kept per open window: a hash table from key codes to dense group ids (Cython) and
accumulator arrays indexed by group id (Cython, nogil).  A batch is split into runs of rows in
the same window (Numba; ordered input costs a comparison per row, disordered input is sorted by
window first), and each run updates its window's state through zero-copy slices.  When the
watermark passes a window's end, the window's state is turned into output rows as a whole and
dropped, so memory is proportional to the open windows.
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
from ..kernels.window import tumbling_runs, tumbling_starts, watermark_splits
from ..windows import TumblingWindow, time_factor
from .base import Item, Operator, Watermark
from .keys import KeyEncoder

log = logging.getLogger("heliosdb.window")

_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min
WINDOW_TYPE = pa.timestamp("ns", tz="UTC")
MAX_RUNS = 64


class _ColumnStats:
    """Per-group non-null count, sum, min, max (and NaN count for floats) of one column.

    ``kind`` is "float", "int", or "count" for a column only counted (any type: only its
    non-null count is kept).
    """

    FIELDS = ("nn", "nan", "sum", "min", "max")

    def __init__(self, kind: str, capacity: int):
        self.kind = kind
        is_float = kind == "float"
        self.is_float = is_float
        dt = np.float64 if is_float else np.int64
        self.nn = np.zeros(capacity, np.int64)
        self.nan = np.zeros(capacity, np.int64)
        self.sum = np.zeros(capacity, dt)
        self.min = np.full(capacity, np.inf if is_float else _I64_MAX, dt)
        self.max = np.full(capacity, -np.inf if is_float else _I64_MIN, dt)

    def resize(self, capacity: int) -> None:
        fills = {"nn": 0, "nan": 0, "sum": 0, "min": np.inf if self.is_float else _I64_MAX,
                 "max": -np.inf if self.is_float else _I64_MIN}
        for a in self.FIELDS:
            old = getattr(self, a)
            new = np.full(capacity, fills[a], old.dtype)
            new[: len(old)] = old
            setattr(self, a, new)

    def update(self, gids: np.ndarray, values: Optional[np.ndarray], valid: Optional[np.ndarray]) -> None:
        if self.kind == "count":
            if valid is None:
                _hashagg.count_rows(gids, self.nn)
            else:
                _hashagg.count_valid(gids, valid, self.nn)
        elif self.is_float:
            _hashagg.update_f64(gids, values, valid, self.nn, self.nan, self.sum, self.min, self.max)
        else:
            _hashagg.update_i64(gids, values, valid, self.nn, self.sum, self.min, self.max)

    def result(self, kind: str, n: int) -> pa.Array:
        nn = self.nn[:n]
        empty = nn == 0
        mask = empty if empty.any() else None
        if kind == "count":
            return pa.array(nn, pa.int64())
        if kind == "sum":
            return pa.array(self.sum[:n], mask=mask)
        if kind == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                return pa.array(self.sum[:n] / np.maximum(nn, 1), pa.float64(), mask=mask)
        if kind == "min":
            v = self.min[:n]
            if self.is_float and self.nan[:n].any():
                v = np.where(self.nan[:n] == nn, np.nan, v)
            return pa.array(v, mask=mask)
        if kind == "max":
            v = self.max[:n]
            if self.is_float and self.nan[:n].any():
                v = np.where(self.nan[:n] > 0, np.nan, v)
            return pa.array(v, mask=mask)
        raise AssertionError(kind)

    def nbytes(self) -> int:
        return sum(getattr(self, a).nbytes for a in self.FIELDS)


class _WindowState:
    """The groups of one window: key codes -> group id, and their accumulators."""

    def __init__(self, width: int, stat_kinds: Dict[str, str], count_rows: bool, capacity: int):
        self.table = _hashagg.GroupTable(width, capacity)
        self.capacity = capacity
        self.counts = np.zeros(capacity, np.int64) if count_rows else None
        self.stats = {c: _ColumnStats(k, capacity) for c, k in stat_kinds.items()}

    def add(self, cols: List[np.ndarray], values: Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]],
            gids: np.ndarray) -> None:
        self.table.insert(cols, gids)
        groups = self.table.n_groups
        if groups > self.capacity:
            cap = self.capacity
            while cap < groups:
                cap *= 2
            if self.counts is not None:
                new = np.zeros(cap, np.int64)
                new[: self.capacity] = self.counts
                self.counts = new
            for st in self.stats.values():
                st.resize(cap)
            self.capacity = cap
        if self.counts is not None:
            _hashagg.count_rows(gids, self.counts)
        for c, st in self.stats.items():
            v, ok = values[c]
            st.update(gids, v, ok)

    def nbytes(self) -> int:
        n = self.table.nbytes + (self.counts.nbytes if self.counts is not None else 0)
        return n + sum(st.nbytes() for st in self.stats.values())


def _values(arr: pa.Array, kind: str) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(values as float64/int64, validity as uint8 or None); only validity for "count"."""
    valid = None
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False).view(np.uint8)
        if kind == "count":
            return None, valid
        arr = arr.fill_null(0)
    if kind == "count":
        return None, None
    dt = np.float64 if kind == "float" else np.int64
    return np.ascontiguousarray(arr.to_numpy(zero_copy_only=False), dtype=dt), valid


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
        self.stat_kinds: Dict[str, str] = {}
        self.count_rows = any(a.kind == "count" and a.column is None for _, a in aggs)
        for out_name, agg in aggs:
            out_fields.append(pa.field(out_name, agg.output_type(schema, name)))
            if agg.column is not None:
                t = schema.field(agg.column).type
                kind = "float" if pat.is_floating(t) else "int" if pat.is_integer(t) else "count"
                if agg.kind == "count" and self.stat_kinds.get(agg.column) in (None, "count"):
                    kind = "count"      # only counted so far: keep just the non-null count
                if self.stat_kinds.get(agg.column) in (None, "count"):
                    self.stat_kinds[agg.column] = kind
        self.output_schema = pa.schema(out_fields)
        self._stat_idx = {c: schema.get_field_index(c) for c in self.stat_kinds}
        self.width = self.encoder.width
        self.nulls = False                       # whether key tuples carry a null word
        self.windows: Dict[int, _WindowState] = {}
        self.watermark = _I64_MIN
        self.late_events = 0
        self._capacity_hint = 1024
        self._gids = np.empty(0, np.int64)

    # -- per batch ---------------------------------------------------------------------------
    def _times(self, batch: pa.RecordBatch) -> np.ndarray:
        tcol = batch.column(self.time_idx)
        if tcol.null_count:
            row = int(tcol.is_null().to_numpy(zero_copy_only=False).argmax())
            raise DataError(
                f"step {self.name!r}: time column {self.time!r} is null at row {row} of a batch; "
                "every event needs an event time (filter nulls out first)"
            )
        return (tcol.view(pa.int64()) if self.time_is_ts else tcol).to_numpy(zero_copy_only=False)

    def _bad_time(self, ts: np.ndarray, row: int) -> DataError:
        return DataError(
            f"step {self.name!r}: time column {self.time!r} value {int(ts[row])} (row {row}) is "
            "outside the range of int64 nanoseconds (years 1678-2262)"
        )

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        if batch.num_rows == 0:
            return []
        ts = self._times(batch)
        bounds, starts, k, bad = tumbling_runs(ts, self.factor, self.size_ns, MAX_RUNS)
        if bad >= 0:
            raise self._bad_time(ts, bad)
        if k < 0:
            # Many windows interleaved: sort the batch by window, then every window is one run.
            all_starts, _, _, bad = tumbling_starts(ts, self.factor, self.size_ns)
            if bad >= 0:
                raise self._bad_time(ts, bad)
            order = np.argsort(all_starts, kind="stable")
            batch = batch.take(pa.array(order))
            sorted_starts = all_starts[order]
            cut = np.flatnonzero(np.diff(sorted_starts)) + 1
            bounds = np.concatenate([[0], cut, [batch.num_rows]])
            starts = sorted_starts[bounds[:-1]]
            k = len(starts)
        n = batch.num_rows
        codes, nullword = self.encoder.encode(batch)
        if nullword is not None and not self.nulls:
            for st in self.windows.values():
                st.table = st.table.widen(0)
            self.nulls = True
        cols = codes
        if self.nulls:
            cols = codes + [nullword if nullword is not None else np.zeros(n, np.int64)]
        values = {c: _values(batch.column(i), self.stat_kinds[c]) for c, i in self._stat_idx.items()}
        if len(self._gids) < n:
            self._gids = np.empty(max(n, 2 * len(self._gids)), np.int64)
        for r in range(k):
            start, b0, b1 = int(starts[r]), int(bounds[r]), int(bounds[r + 1])
            if start + self.size_ns <= self.watermark:
                self.late_events += b1 - b0
                log.warning("step %r: %d late events for the closed window starting %d ns dropped",
                            self.name, b1 - b0, start)
                continue
            state = self.windows.get(start)
            if state is None:
                state = self.windows[start] = _WindowState(
                    len(cols), self.stat_kinds, self.count_rows, self._capacity_hint)
            state.add([c[b0:b1] for c in cols],
                      {c: (None if v is None else v[b0:b1], None if ok is None else ok[b0:b1])
                       for c, (v, ok) in values.items()},
                      self._gids[: b1 - b0])
        self._check_memory()
        return []

    def _check_memory(self) -> None:
        size = self.state_size_bytes()
        if size > self.max_state_bytes:
            groups = sum(st.table.n_groups for st in self.windows.values())
            raise HeliosError(
                f"step {self.name!r}: window state is {size:,} bytes ({groups:,} groups in "
                f"{len(self.windows)} open windows), over the memory backend's bound of "
                f"{self.max_state_bytes:,} bytes; raise StateBackend.memory(max_size_bytes=), use "
                "smaller windows or fewer keys"
            )

    def state_size_bytes(self) -> int:
        # list() copies the dict in one step, so a metrics reader on another thread never
        # iterates it while the window thread adds or drops a window.
        return sum(st.nbytes() for st in list(self.windows.values())) + self.encoder.nbytes()

    def open_windows(self) -> int:
        return len(self.windows)

    # -- event time --------------------------------------------------------------------------
    def on_watermark(self, t: int) -> List[Item]:
        out: List[Item] = []
        if t > self.watermark:
            self.watermark = t
            if self.windows:
                closed = sorted(s for s in self.windows if s + self.size_ns <= t)
                for s in closed:
                    state = self.windows.pop(s)
                    if state.table.n_groups:
                        out.append(self._results(s, state))
                    self._capacity_hint = max(1024, state.table.n_groups)
        out.append(Watermark(t))
        return out

    def _results(self, start: int, state: _WindowState) -> pa.RecordBatch:
        n = state.table.n_groups
        keys = state.table.keys_view()
        arrays = [pa.array(np.full(n, start, np.int64), pa.int64()).view(WINDOW_TYPE),
                  pa.array(np.full(n, start + self.size_ns, np.int64), pa.int64()).view(WINDOW_TYPE)]
        w = self.width
        nullword = keys[:, w] if self.nulls else None
        arrays += self.encoder.decode(keys[:, :w], nullword)
        for out_name, agg in self.aggs:
            if agg.kind == "count" and agg.column is None:
                arrays.append(pa.array(state.counts[:n], pa.int64()))
            else:
                arrays.append(state.stats[agg.column].result(agg.kind, n))
        return pa.RecordBatch.from_arrays(arrays, schema=self.output_schema)

    def describe(self) -> str:
        keys = ", ".join(self.encoder.names)
        aggs = ", ".join(f"{n}={a!r}" for n, a in self.aggs)
        return f"window[{self.name}] key_by({keys}) {self.window!r} on {self.time!r}: {aggs}"


class WatermarkAssigner(Operator):
    """Emits ``Watermark(max event time seen - max_out_of_orderness)`` after each batch.

    A row that is behind the watermark implied by the rows before it gets that watermark
    delivered first (the batch is cut there), so whether an event is late depends only on the
    order of events, never on where micro-batches were cut: replaying history and following a
    live source give the same results.
    """

    kind = "watermark"

    def __init__(self, name: str, schema: pa.Schema, time: str, max_out_of_orderness_ns: int):
        self.name = name
        self.time = time
        self.factor = time_factor(schema, time, name)
        self.idx = schema.get_field_index(time)
        self.is_ts = pat.is_timestamp(schema.field(time).type)
        self.bound = max_out_of_orderness_ns
        self.current = _I64_MIN           # last watermark emitted
        self.max_seen = _I64_MIN          # largest event time seen (ns)

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        col = batch.column(self.idx)
        if col.null_count:
            row = int(col.is_null().to_numpy(zero_copy_only=False).argmax())
            raise DataError(
                f"step {self.name!r}: time column {self.time!r} is null at row {row} of a batch; "
                "every event needs an event time (filter nulls out first)"
            )
        ts = (col.view(pa.int64()) if self.is_ts else col).to_numpy(zero_copy_only=False)
        cuts, marks, k, self.max_seen = watermark_splits(ts, self.factor, self.bound,
                                                         self.max_seen, self.current)
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
        if self.max_seen != _I64_MIN and self.max_seen - self.bound > self.current:
            self.current = self.max_seen - self.bound
            out.append(Watermark(self.current))
        return out

    def on_watermark(self, t: int) -> List[Item]:
        # An upstream watermark (e.g. end of input) only ever moves ours forward.
        if t > self.current:
            self.current = t
            return [Watermark(t)]
        return []

    def describe(self) -> str:
        return f"watermark[{self.name}] on {self.time!r}, max out-of-orderness {self.bound / 1e9:g}s"
