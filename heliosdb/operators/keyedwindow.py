"""What every keyed window operator shares (``operators/window.py``: tumbling and sliding,
``operators/session.py``: sessions): keys, event or processing time, aggregates, lateness and
the late output, the output schema, and the helpers for runs of cut batches and snapshots.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ..errors import DataError, HeliosError
from ..expr import AggSpec
from ..windows import time_factor
from .accumulators import AccPlan
from .base import WATERMARK_MAX, Item, Operator, SideOutput, Watermark
from .keys import KeyEncoder

log = logging.getLogger("heliosdb.window")

_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min
WINDOW_TYPE = pa.timestamp("ns", tz="UTC")
MAX_RUNS = 64
LATE = "late"


def _ts_array(values: np.ndarray) -> pa.Array:
    return pa.array(values, pa.int64()).view(WINDOW_TYPE)



class _KeyedBase(Operator):
    """What every keyed window operator shares: keys, time, aggregates, lateness, output."""

    kind = "window"
    stateful = True
    #: Set by the planner: ``max_out_of_orderness`` (ns) of the watermark this window reads
    #: (None: not known, e.g. an operator built outside a plan).  Only quoted in the warning.
    out_of_orderness_ns: Optional[int] = None
    _late_warned = False

    def __init__(self, name: str, schema: pa.Schema, keys: List[str], time: Optional[str],
                 aggs: List[Tuple[str, AggSpec]], max_state_bytes: int, allowed_lateness_ns: int,
                 backend=None):
        self.name = name
        self.input_schema = schema
        self.time = time                      # None: processing time (arrival at this operator)
        if time is not None:
            self.factor = time_factor(schema, time, name)
            self.time_idx = schema.get_field_index(time)
            self.time_is_ts = pat.is_timestamp(schema.field(time).type)
        self.encoder = KeyEncoder(schema, keys, name)
        self.aggs = aggs
        self.acc = AccPlan(schema, aggs, name, backend)
        self.max_state_bytes = max_state_bytes
        self.lateness = allowed_lateness_ns
        fields = [pa.field("window_start", WINDOW_TYPE, nullable=False),
                  pa.field("window_end", WINDOW_TYPE, nullable=False)]
        fields += [schema.field(k) for k in keys]
        self.output_schema = pa.schema(fields + self.acc.output_fields)
        self.width = self.encoder.width
        self.nulls = False                    # whether key tuples carry a null word
        self.watermark = _I64_MIN
        self.late_events = 0
        self.updates = 0                      # update rows emitted for already-emitted windows
        self.seq = 0                          # arrival number of the next row (first/last)

    # -- inputs --------------------------------------------------------------------------------
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

    def _seqs(self, n: int) -> Optional[np.ndarray]:
        base = self.seq
        self.seq += n
        return np.arange(base, base + n, dtype=np.int64) if self.acc.needs_seq else None

    def _key_columns(self, batch: pa.RecordBatch) -> List[np.ndarray]:
        codes, nullword = self.encoder.encode(batch)
        if nullword is not None and not self.nulls:
            self._widen()
            self.nulls = True
        if self.nulls:
            codes = codes + [nullword if nullword is not None else np.zeros(batch.num_rows, np.int64)]
        return codes

    def _widen(self) -> None:
        """Key tuples gain a null word (the first null key arrived)."""
        raise NotImplementedError  # pragma: no cover - each operator widens its tables

    def _decode_keys(self, keys: np.ndarray) -> List[pa.Array]:
        w = self.width
        return self.encoder.decode(keys[:, :w], keys[:, w] if self.nulls else None)

    def _late(self, rows: List[pa.RecordBatch]) -> List[Item]:
        """Count late ``rows``; send them to the late output, or drop them (warning once)
        when nothing reads it."""
        if not rows:
            return []
        n = sum(r.num_rows for r in rows)
        self.late_events += n
        if not self.late_output_read:
            if not self._late_warned:
                self._late_warned = True
                self._warn_dropped()
            return []
        log.debug("step %r: %d late events to the late output", self.name, n,
                 extra={"operator": self.name})
        batch = rows[0] if len(rows) == 1 else pa.Table.from_batches(rows).combine_chunks().to_batches()[0]
        return [SideOutput(LATE, batch)]

    def _warn_dropped(self) -> None:
        n = self.late_events
        bound = "unknown" if self.out_of_orderness_ns is None else f"{self.out_of_orderness_ns / 1e9:g}s"
        log.warning(
            "step %r: %s late event%s dropped so far: %s after %s window had closed "
            "(watermark max_out_of_orderness=%s, allowed_lateness=%gs) and nothing reads this "
            "window's late_output(). To keep them: sink its .late_output(), raise "
            "with_watermark(max_out_of_orderness=) to the source's real disorder, or pass "
            "window(..., allowed_lateness=). Further drops are only counted "
            "(streaming_late_events_total, JobResult.late_events); this warning is logged once.",
            self.name, f"{n:,}", "" if n == 1 else "s", "it arrived" if n == 1 else "they arrived",
            "its" if n == 1 else "their", bound, self.lateness / 1e9,
            extra={"operator": self.name})

    def watermark_ns(self) -> Optional[int]:
        """The event-time watermark the window has reached (None: processing time, no
        watermark yet, or the input has ended)."""
        wm = self.watermark
        if self.time is None or wm == _I64_MIN or wm >= WATERMARK_MAX:
            return None
        return int(wm)

    def _check_memory(self) -> None:
        size = self.state_size_bytes()
        if size > self.max_state_bytes:
            raise HeliosError(
                f"step {self.name!r}: window state is {size:,} bytes ({self._state_summary()}), "
                f"over the memory backend's bound of {self.max_state_bytes:,} bytes; raise "
                "StateBackend.memory(max_size_bytes=), use smaller windows or fewer keys"
            )

    def _state_summary(self) -> str:
        return ""

    def close(self) -> List[Item]:
        self.acc.close_state()
        return []

    def abort(self) -> None:
        self.acc.close_state()

    # -- snapshots -------------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {"watermark": self.watermark, "seq": self.seq, "late_events": self.late_events,
                "updates": self.updates}

    def _restore_meta(self, metas: List[dict], first: bool) -> None:
        if metas:
            self.watermark = max(m["watermark"] for m in metas)
            self.seq = max(m["seq"] for m in metas)
            if first:       # counters: one subtask carries them on
                self.late_events = sum(m["late_events"] for m in metas)
                self.updates = sum(m["updates"] for m in metas)

    def _key_arrays(self, keys: np.ndarray) -> Dict[str, pa.Array]:
        return dict(zip(self.encoder.names, self._decode_keys(keys)))

    def _key_codes(self, table: pa.Table) -> List[np.ndarray]:
        """Key columns of a snapshot table -> this operator's key codes (widening for nulls)."""
        batch = pa.RecordBatch.from_arrays(
            [table.column(k).combine_chunks() for k in self.encoder.names], names=self.encoder.names)
        return self._key_columns(batch)

    def _batch(self, start: np.ndarray, end: np.ndarray, keys: np.ndarray, aggs: List[pa.Array]) -> pa.RecordBatch:
        arrays = [_ts_array(start), _ts_array(end)] + self._decode_keys(keys) + aggs
        return pa.RecordBatch.from_arrays(arrays, schema=self.output_schema)



def _run_parts(items: List[Item]):
    """A run's items as ``(first, batches, bounds, after)``: the watermark before any rows
    (None: none), the batches, the row bounds of the parts (batches between two watermarks),
    and the watermark after each part (the largest, if several; None: none after the last)."""
    first: Optional[int] = None
    batches: List[pa.RecordBatch] = []
    bounds = [0]
    after: List[Optional[int]] = []
    for it in items:
        if isinstance(it, Watermark):
            if not batches:
                first = it.t if first is None else max(first, it.t)
            else:
                after[-1] = it.t if after[-1] is None else max(after[-1], it.t)
        elif it.num_rows:
            if not after or after[-1] is not None:
                bounds.append(bounds[-1])
                after.append(None)
            batches.append(it)
            bounds[-1] += it.num_rows
    return first, batches, bounds, after


def _concat_batches(batches: List[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _concat_state(tables: List[pa.Table], extras: List[Dict[str, pa.Table]], name: str) -> Dict[str, pa.Table]:
    """One snapshot table ``name`` from parts, with the per-row value sets renumbered."""
    if not tables:
        return {}
    out: Dict[str, List[pa.Table]] = {}
    offset = 0
    for t, extra in zip(tables, extras):
        for k, e in extra.items():
            rows = e.column("row").to_numpy() + offset
            out.setdefault(k, []).append(e.set_column(0, "row", pa.array(rows)))
        offset += t.num_rows
    result = {name: pa.concat_tables(tables)}
    result.update({k: pa.concat_tables(v) for k, v in out.items()})
    return result

