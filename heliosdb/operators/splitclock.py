"""Per-split event time for the watermark step after a source of several splits.

``SplitClock`` maps each row to its split (the source's split columns -> a dense index), keeps
each split's largest event time and whether it is live, and asks the kernel
``kernels.window.split_watermark_splits`` where a batch must be cut.  Splits the source
declared hold the watermark back until they send data, go idle (``idle_timeout``) or finish;
each split's watermark is published back to the source's ``Splits`` for watermark alignment.
"""
from __future__ import annotations

import time as _time
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from ..errors import SchemaError
from ..kernels.window import split_low, split_watermark_splits

_I64_MIN = np.iinfo(np.int64).min
_I64_MAX = np.iinfo(np.int64).max
_LUT = 1 << 16           # split codes below this map through an array, not a dict


class SplitClock:
    """Event time per split; see the module docstring.

    >>> import pyarrow as pa
    >>> from heliosdb.connectors.splits import Splits
    >>> splits = Splits(["p"]); splits.declare([(0,), (1,)])
    >>> clock = SplitClock(splits, pa.schema([("p", pa.int32()), ("ts", pa.int64())]), "wm", 0, None, None)
    >>> batch = pa.record_batch({"p": pa.array([0, 0], pa.int32()), "ts": [50, 90]})
    >>> clock.low_after(batch, np.array([50, 90]), 1, _I64_MIN)[3]   # split 1 sent nothing yet
    -9223372036854775808
    """

    def __init__(self, splits, schema: pa.Schema, step: str, bound: int,
                 idle_timeout: Optional[int], max_drift: Optional[int]):
        for c in splits.columns:
            if c not in schema.names:
                raise SchemaError(f"step {step!r}: the source's split column {c!r} is not in the stream")
            t = schema.field(c).type
            if not (pat.is_integer(t) or pat.is_string(t) or pat.is_large_string(t)):
                raise SchemaError(f"step {step!r}: split column {c!r} must be an integer or a string, got {t}")
        self.splits = splits
        self.idx = [schema.get_field_index(c) for c in splits.columns]
        self.bound = bound
        self.idle_timeout = idle_timeout
        self.max_drift = max_drift
        self.reset()

    def reset(self) -> None:
        self.keys: List[tuple] = []                  # dense index -> split key
        self.index: Dict[int, int] = {}              # split code -> dense index
        self.lut = np.full(_LUT, -1, np.int64)
        self.strings: Dict[str, int] = {}            # string values -> codes
        self.seen = np.full(0, _I64_MIN, np.int64)
        self.live = np.zeros(0, np.uint8)
        self.last_data = np.zeros(0, np.int64)
        self.rows = np.zeros(0, np.int64)            # rows seen per split
        self.done: set = set()                       # dense indices of finished splits
        self.first: Optional[int] = None             # the watermark the first rows implied
        self.started = False

    # -- split of each row -------------------------------------------------------------------
    def _value_code(self, v) -> int:
        if isinstance(v, str):
            return self.strings.setdefault(v, len(self.strings))
        return int(v)

    def _code(self, key: tuple) -> int:
        code = 0
        for v in key:
            code = code * (1 << 32) + self._value_code(v)
        return code

    def _add(self, code: int, key: tuple) -> int:
        i = len(self.keys)
        self.keys.append(key)
        self.index[code] = i
        if 0 <= code < _LUT:
            self.lut[code] = i
        self.seen = np.append(self.seen, np.int64(_I64_MIN))
        self.live = np.append(self.live, np.uint8(1))
        self.last_data = np.append(self.last_data, np.int64(_time.time_ns()))
        self.rows = np.append(self.rows, np.int64(0))
        return i

    def _column_codes(self, col: pa.Array) -> np.ndarray:
        if pat.is_integer(col.type):
            return col.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        enc = pc.dictionary_encode(col.fill_null(""))
        table = np.array([self._value_code(s) for s in enc.dictionary.to_pylist()], np.int64)
        return table[enc.indices.to_numpy(zero_copy_only=False)]

    def split_of(self, batch: pa.RecordBatch) -> np.ndarray:
        """The dense split index of every row (new splits are added)."""
        cols = [batch.column(i) for i in self.idx]
        codes = self._column_codes(cols[0])
        for col in cols[1:]:
            codes = codes * (1 << 32) + self._column_codes(col)
        if len(codes) and codes.min() >= 0 and codes.max() < _LUT:
            out = self.lut[codes]
            if (out >= 0).all():
                return out
        uniq, inverse = np.unique(codes, return_inverse=True)
        dense = np.empty(len(uniq), np.int64)
        for j, code in enumerate(uniq.tolist()):
            i = self.index.get(code)
            if i is None:
                row = int(np.flatnonzero(codes == code)[0])
                i = self._add(code, tuple(col[row].as_py() for col in cols))
            dense[j] = i
        return dense[inverse]

    # -- the watermark -----------------------------------------------------------------------
    def _start(self) -> None:
        """At the first batch: every split the source declared (it has opened by now)."""
        self.started = True
        for key in self.splits.declared():
            code = self._code(key)
            if code not in self.index:
                self._add(code, key)

    def _left(self) -> np.ndarray:
        """Rows each split will still send (-1: not known to end; 0: done)."""
        left = np.full(len(self.keys), -1, np.int64)
        for key, rows in self.splits.finished().items():
            i = self.index.get(self._code(key))
            if i is not None:
                left[i] = max(rows - int(self.rows[i]), 0)
        return left

    def _housekeeping(self, now: int, left: Optional[np.ndarray] = None) -> None:
        """Finished splits (``left``: from ``_left()`` if the caller has it) and idle ones stop
        holding the watermark back."""
        if left is not None or len(self.splits.finished()) != len(self.done):
            left = self._left() if left is None else left
            self.done |= set(np.flatnonzero(left == 0).tolist())
        for i in self.done:
            self.live[i] = 0
        if self.idle_timeout is not None and len(self.live):
            self.live[(now - self.last_data) >= self.idle_timeout] = 0

    def low_after(self, batch: pa.RecordBatch, ts: np.ndarray, factor: int, emitted: int,
                  grid=None) -> Tuple[np.ndarray, np.ndarray, int, int]:
        """``(cuts, marks, k, low)`` for ``batch`` (see ``split_watermark_splits``)."""
        if not self.started:
            self._start()
        now = _time.time_ns()
        split = self.split_of(batch)             # may add splits: before the rows left
        left = self._left()
        self._housekeeping(now, left)
        args = () if grid is None else (grid,)
        if self.first is None and len(ts):
            self.first = int(ts.min()) * factor - self.bound
        cuts, marks, k, low = split_watermark_splits(ts, split, factor, self.bound, self.seen,
                                                     self.live, emitted, *args, left=left)
        counts = np.bincount(split, minlength=len(self.keys))
        self.last_data[counts > 0] = now
        self.rows[: len(counts)] += counts
        self.done |= set(np.flatnonzero(left == 0).tolist())
        self._publish()
        return cuts, marks, k, low

    def low(self, now: int) -> int:
        """The watermark now (a tick): INT64_MAX when no split holds it back."""
        if not self.started:
            return _I64_MIN
        self._housekeeping(now)
        return int(split_low(self.seen, self.live, self.bound))

    def max_seen(self) -> int:
        return int(self.seen.max()) if len(self.seen) else _I64_MIN

    def _publish(self) -> None:
        marks = {self.keys[i]: int(s) - self.bound for i, s in enumerate(self.seen.tolist())
                 if s != _I64_MIN and i not in self.done}
        # A live split that has sent nothing is taken to be where the earliest split started.
        silent = any(s == _I64_MIN and a for s, a in zip(self.seen.tolist(), self.live.tolist()))
        self.splits.publish(marks, self.max_drift, self.first if silent else None)

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"splits": [[list(k), int(s)] for k, s in zip(self.keys, self.seen.tolist())]}

    def restore(self, metas: List[dict]) -> None:
        for m in metas:
            for key, seen in m.get("splits", []):
                key = tuple(key)
                code = self._code(key)
                i = self.index.get(code)
                if i is None:
                    i = self._add(code, key)
                self.seen[i] = max(self.seen[i], int(seen))
