"""What every join operator shares: two inputs, event time and the watermark, late rows, the
output rows, the memory bound, and the snapshot tables' layout.

The runtime calls ``process_side(side, batch)`` (side 0 = left, 1 = right) for each input
batch, ``on_watermark(t)`` with the minimum of both sides' watermarks, and ``close()`` once
both inputs ended.  A subclass says what a batch does (``process_side``), what a watermark
makes final (``_advance``), and how its state is saved and restored.

Output rows are built from pairs of row numbers, ``(left row, right row)`` with ``-1`` for
the side an outer join pads with nulls: one Arrow ``take`` per side
(:meth:`JoinOperator._emit`), never a Python loop over rows.

Snapshots: one table per side (``left``, ``right``, plus what a kind keeps besides rows), whose
rows are the side's rows as ``row.<column>``, the join's bookkeeping as ``__<name>``, and the
key columns under the **left** key names, in a type both sides' values fit (the wider one), for
both sides: a restore into another parallelism picks a subtask's rows of both sides with one
selector, which hashes them as the exchange routed them.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...errors import ExecutionError, StateLimitError
from ...state.rows import open_rows_db, row_chunks
from ..base import WATERMARK_MAX, WATERMARK_MIN, Item, LateCount, Operator, SideOutput, Snapshot, Watermark
from ..clock import EventClock
from .keys import JoinKeys
from .spec import WINDOW_TYPE, JoinSpec, output_columns, output_schema

log = logging.getLogger("heliosdb.join")

#: The side outputs of late rows, by side.
LATE_TAGS = ("late_left", "late_right")
SIDES = ("left", "right")
#: Output batches hold at most this many rows.
OUT_ROWS = 1 << 20

Rows = Union[pa.RecordBatch, object]       # a RecordBatch or a state.rows.RowChunks


def _take(src: Rows, idx: np.ndarray) -> pa.RecordBatch:
    """Rows ``idx`` of a batch or of row state (``-1``: a row of nulls)."""
    if isinstance(src, pa.RecordBatch):
        neg = idx < 0
        return src.take(pa.array(idx, pa.int64(), mask=neg) if neg.any() else pa.array(idx, pa.int64()))
    return src.take(idx)


def _ts(values: Union[int, np.ndarray], m: int) -> pa.Array:
    arr = np.full(m, values, np.int64) if np.isscalar(values) else np.asarray(values, np.int64)
    return pa.array(arr, pa.int64()).view(WINDOW_TYPE)


class JoinOperator(Operator):
    """The base of the stream joins (see the module docstring); :func:`make_join` builds one.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from heliosdb.operators.join import JoinSpec, make_join
    >>> schema = pa.schema([("ts", pa.int64()), ("k", pa.int64())])
    >>> spec = JoinSpec("interval", "k", "k", between=(0, 0), left_time="ts", right_time="ts")
    >>> op = make_join(spec, schema, schema)
    >>> op.late_sides_read = (False, True)          # the planner: late_output("right") is read
    >>> op.on_watermark(5_000_000)
    [Watermark(t=5000000)]
    >>> late = op.process_side(1, pa.record_batch({"ts": [4, 6], "k": [1, 1]}))
    >>> late[0].tag, late[0].batch.to_pydict(), op.late_events
    ('late_right', {'ts': [4], 'k': [1]}, 1)
    >>> op.process_side(0, pa.record_batch({"ts": [3], "k": [1]}))   # nothing reads the left's: dropped
    []
    >>> [(c.side, c.events, c.fate) for c in op.late_counts()]
    [('left', 1, 'dropped'), ('right', 1, 'kept')]
    """

    kind = "join"
    #: How many inputs the operator reads (the runtime routes them by ``process_side``).
    inputs = 2
    stateful = True
    parallel_kind = "by_key"
    state_noun = "join state"
    # late_sides_read (the Operator contract's, set by the planner): a side's late rows go to
    # its late_output(side), or, when nothing reads it, are counted and dropped (the first
    # drop of each side is a warning).

    @property  # type: ignore[override]
    def late_output_read(self) -> bool:
        """Whether both sides' late outputs are read (setting it sets both)."""
        return all(self.late_sides_read)

    @late_output_read.setter
    def late_output_read(self, value: bool) -> None:
        self.late_sides_read = (bool(value), bool(value))

    def __init__(self, spec: JoinSpec, left_schema: pa.Schema, right_schema: pa.Schema, name: str = "join",
                 max_state_bytes: Optional[int] = None, backend=None):
        self.spec = spec
        self.name = name
        self.schemas = (left_schema, right_schema)
        self.keys = JoinKeys(left_schema, right_schema, spec.left_on, spec.right_on, name)
        self.columns = output_columns(left_schema, right_schema, spec)
        self.output_schema = output_schema(left_schema, right_schema, spec)
        self.max_state_bytes = max_state_bytes
        self.backend = backend
        self._db = None                        # RocksDB of the rows (opened on first use)
        self.clocks: Tuple[Optional[EventClock], ...] = (None, None)
        if spec.left_time is not None:
            self.clocks = (EventClock(left_schema, spec.left_time, name),
                           EventClock(right_schema, spec.right_time, name))
        self.watermark = WATERMARK_MIN
        self.late_by_side = [0, 0]
        self.late_events = 0
        self._late_warned = [False, False]
        self.emitted = 0                       # output rows so far

    # -- inputs --------------------------------------------------------------------------------
    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        raise ExecutionError(f"step {self.name!r}: a join reads two inputs through process_side(side, batch); "
                             "process_batch was called (an engine bug)")

    def process_side(self, side: int, batch: pa.RecordBatch) -> List[Item]:
        """A batch of ``side`` (0: left, 1: right) arrives; returns the rows it completes and
        its late rows (``SideOutput`` tagged ``late_left`` / ``late_right``)."""
        raise NotImplementedError  # pragma: no cover

    def _times(self, side: int, batch: pa.RecordBatch, headroom: int = 0) -> np.ndarray:
        return self.clocks[side].times_ns(batch, headroom)

    def on_watermark(self, t: int) -> List[Item]:
        out: List[Item] = []
        if t > self.watermark:
            before, self.watermark = self.watermark, t
            out = self._advance(before, t)
            self._check_memory()
        return out + [Watermark(t)]

    def _advance(self, before: int, t: int) -> List[Item]:
        """The watermark moved from ``before`` to ``t``: emit what it makes final and drop the
        state it makes useless."""
        raise NotImplementedError  # pragma: no cover

    def close(self) -> List[Item]:
        """Both inputs ended: emit everything still pending (e.g. an outer join's unmatched
        rows), then hold nothing."""
        out = self.on_watermark(WATERMARK_MAX)[:-1] if self.watermark < WATERMARK_MAX else []
        self._release()
        return out

    def abort(self) -> None:
        self._release()

    def _release(self) -> None:
        """Let go of all state (and the RocksDB files)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- rows ------------------------------------------------------------------------------------
    def _chunks(self, side: int):
        """New row state for ``side`` on the operator's backend."""
        if self._db is None and self.backend is not None and self.backend.kind != "memory":
            self._db = open_rows_db(self.backend, self.name)
        return row_chunks(self.schemas[side], self._db)

    def _late(self, side: int, rows: pa.RecordBatch) -> List[Item]:
        """Count late ``rows`` of ``side``; send them to its late output, or drop them (warning
        once) when nothing reads it."""
        n = rows.num_rows
        if not n:
            return []
        self.late_by_side[side] += n
        self.late_events += n
        if not self.late_sides_read[side]:
            if not self._late_warned[side]:
                self._late_warned[side] = True
                log.warning(
                    "step %r: %d late %s row%s dropped (behind the watermark when %s arrived) and nothing reads "
                    "this join's late_output(%r). To keep them: sink .late_output(%r), or raise "
                    "with_watermark(max_out_of_orderness=) on the %s input to its real disorder. Further drops "
                    "are only counted (streaming_late_events_total, JobResult.late_events); this warning is "
                    "logged once per side.",
                    self.name, n, SIDES[side], "" if n == 1 else "s", "it" if n == 1 else "they",
                    SIDES[side], SIDES[side], SIDES[side], extra={"operator": self.name})
            return []
        return [SideOutput(LATE_TAGS[side], rows)]

    def late_counts(self) -> List[LateCount]:
        """Late rows per side that found any, each kept (its ``late_output(side)`` is read) or
        dropped."""
        return [LateCount(self.name, SIDES[s], n, bool(self.late_sides_read[s]))
                for s, n in enumerate(self.late_by_side) if n]

    def _emit(self, left: Optional[Rows], li: Optional[np.ndarray], right: Optional[Rows],
              ri: Optional[np.ndarray], start=None, end=None) -> List[pa.RecordBatch]:
        """Output rows of pairs ``(left[li[i]], right[ri[i]])`` (``-1``, or a side of None: that
        side is nulls), with ``window_start``/``window_end`` from ``start``/``end`` (ns; a
        scalar or one per pair) for window joins."""
        m = len(li) if li is not None else len(ri)
        out = []
        for a in range(0, m, OUT_ROWS):
            b = min(m, a + OUT_ROWS)
            lrows = None if left is None or li is None else _take(left, li[a:b])
            rrows = None if right is None or ri is None else _take(right, ri[a:b])
            s = None if start is None or np.isscalar(start) else start[a:b]
            e = None if end is None or np.isscalar(end) else end[a:b]
            out.append(self._assemble(lrows, rrows, b - a,
                                      start if s is None else s, end if e is None else e))
        self.emitted += m
        return out

    def _assemble(self, left: Optional[pa.RecordBatch], right: Optional[pa.RecordBatch], m: int,
                  start, end) -> pa.RecordBatch:
        arrays: List[pa.Array] = []
        if self.spec.kind == "window":
            arrays += [_ts(start, m), _ts(end, m)]
        for c in self.columns:
            t = c.field.type
            if c.side == 0:
                a = left.column(c.index) if left is not None else pa.nulls(m, t)
                if a.type != t:
                    a = a.cast(t)
                if c.coalesce is not None and right is not None and self.spec.outer_right:
                    r = right.column(c.coalesce).cast(t)
                    a = r if left is None else pc.coalesce(a, r)
            else:
                a = right.column(c.index) if right is not None else pa.nulls(m, t)
            arrays.append(a)
        return pa.RecordBatch.from_arrays(arrays, schema=self.output_schema)

    # -- state -----------------------------------------------------------------------------------
    def _state_summary(self) -> str:
        return ""

    def _check_memory(self) -> None:
        if self.max_state_bytes is None:
            return
        size = self.state_size_bytes()
        if self._db is not None:       # rows in RocksDB are state, but not memory
            size -= self._db.held_bytes
        if size > self.max_state_bytes:
            bound = "a smaller window, interval or ttl, or a smaller watermark delay (max_out_of_orderness=)"
            if self._db is not None or (self.backend is not None and self.backend.kind != "memory"):
                fix = (f"the rows are on disk, this is what stays in memory (key index and per-row times); "
                       f"raise StateBackend.rocksdb(max_size_bytes=), or bound the state: {bound}")
                where = "RocksDB backend's bound"
            else:
                fix = ("raise StateBackend.memory(max_size_bytes=), use StateBackend.rocksdb(path=) to keep the "
                       f"rows on disk, or bound the state: {bound}")
                where = "memory backend's bound"
            raise StateLimitError(
                f"step {self.name!r}: {self.state_noun} is {size:,} bytes ({self._state_summary()}), over the "
                f"{where} of {self.max_state_bytes:,} bytes; {fix}", step=self.name)

    def watermark_ns(self) -> Optional[int]:
        wm = self.watermark
        if wm == WATERMARK_MIN or wm >= WATERMARK_MAX:
            return None
        return int(wm)

    # -- snapshots ---------------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {"watermark": int(self.watermark), "late_left": self.late_by_side[0],
                "late_right": self.late_by_side[1], "emitted": self.emitted}

    def _restore_meta(self, metas: List[dict], first: bool) -> None:
        if metas:
            self.watermark = max(m["watermark"] for m in metas)
            if first:              # counters: one subtask carries them on
                self.late_by_side = [sum(m["late_left"] for m in metas), sum(m["late_right"] for m in metas)]
                self.late_events = sum(self.late_by_side)
                self.emitted = sum(m["emitted"] for m in metas)

    def _rows_table(self, side: int, rows: pa.RecordBatch, extra: Dict[str, np.ndarray]) -> pa.Table:
        """A snapshot table of ``side``'s ``rows`` (see the module docstring)."""
        cols: Dict[str, pa.Array] = dict(zip(self.spec.left_on, self.keys.common(side, rows)))
        cols.update({f"__{k}": pa.array(np.ascontiguousarray(v)) for k, v in extra.items()})
        cols.update({f"row.{n}": rows.column(i) for i, n in enumerate(rows.schema.names)})
        return pa.table(cols)

    def _restored(self, tables: Dict[str, pa.Table], name: str, side: int, select,
                  extra: Sequence[str]) -> Optional[Tuple[pa.RecordBatch, Dict[str, np.ndarray]]]:
        """This subtask's rows of snapshot table ``name`` (of ``side``) and their bookkeeping
        columns ``extra``; None when there are none."""
        t = tables.get(name)
        if t is None or not t.num_rows:
            return None
        if select is not None:
            t = t.filter(pa.array(np.asarray(select(t), bool)))
            if not t.num_rows:
                return None
        schema = self.schemas[side]
        arrays = [t.column(f"row.{f.name}").combine_chunks().cast(f.type) for f in schema]
        rows = pa.RecordBatch.from_arrays(arrays, schema=schema)
        return rows, {k: t.column(f"__{k}").to_numpy() for k in extra}

    def describe(self) -> str:
        """What explain() shows: the kind, ``how``, keys, the kind's parameter, and where each
        side's late rows go (regular joins have none)."""
        out = f"join[{self.name}] {self.spec.describe()}"
        if self.spec.kind != "regular":
            fate = [f"{s} to late_output({s!r})" if read else f"{s} dropped"
                    for s, read in zip(SIDES, self.late_sides_read)]
            out += f"; late rows: {', '.join(fate)}"
        return out


def make_schema_rows(schema: pa.Schema) -> pa.RecordBatch:
    """An empty batch of ``schema``."""
    return pa.RecordBatch.from_pylist([], schema=schema)
