"""Interval and regular joins: symmetric hash joins over rows that expire.

Each side keeps its rows (``store.SideRows``) linked per key id in chains (``kernels._join``:
``chain_link``).  A batch of one side probes the other side's chains (``chain_pairs``, nogil)
and emits its matches at once, then waits in its own side's chains; so every pair is emitted
exactly once, when the later of its two rows arrives.

- **Interval join** (``between=(lower, upper)``): a right row ``r`` matches a left row ``l`` of
  the same key when ``l.t + lower <= r.t <= l.t + upper``.  A row is late when its time is
  behind the watermark (Flink's rule: rows behind it may already have lost their partners).
  A left row can match no future right row once ``l.t + upper < watermark``, a right row no
  future left row once ``r.t - lower < watermark``: then it is dropped, and in an outer join
  emitted with nulls if it never matched.

  Timeline (between=(-2, 3)): l at 10 waits for rights in [8, 13]; the watermark passing 13
  drops it (emitted unmatched by a left join if no right row came).

- **Regular join** (``ttl``): any two rows of the same key match.  Rows are never late.  A
  row is kept ``ttl`` after its event time (the watermark passing ``t + ttl`` drops it), or,
  without event-time columns, ``ttl`` after it arrived (the wall clock, checked after every
  batch and on ticks): per-row idle-state retention as Flink's table state TTL (on create
  and write).  ``ttl=None`` keeps rows for ever.  Outer joins emit a row that never matched
  when it expires, and the rest when both inputs end (``close``): no retractions.

Null keys never match: such rows are not kept (an outer join emits them unmatched at once).
The live rows are compacted (and their keys re-encoded) once dead rows outnumber them.
"""
from __future__ import annotations

import time as _time
from typing import Callable, Dict, List, Optional

import numpy as np
import pyarrow as pa

from ...kernels._join import chain_link, chain_pairs
from ..base import WATERMARK_MAX, Item, Snapshot, Tick
from .base import JoinOperator
from .keys import KeyIndex
from .store import SideRows

I64_MAX = np.iinfo(np.int64).max
I64_MIN = np.iinfo(np.int64).min
_NONE = np.zeros(0, np.uint8)
#: Compaction waits for at least this many dead rows.
MIN_DEAD = 1024


def sat_add(t: np.ndarray, d: int) -> np.ndarray:
    """``t + d`` per element, clamped to int64.

    >>> sat_add(np.array([1, 2**63 - 3]), 5).tolist()
    [6, 9223372036854775807]
    """
    with np.errstate(over="ignore"):
        out = t + np.int64(d)
    if d > 0:
        out[t > I64_MAX - d] = I64_MAX
    elif d < 0:
        out[t < I64_MIN - d] = I64_MIN
    return out


class ChainedJoin(JoinOperator):
    """Rows of both sides in per-key chains (the storage of interval, regular and as-of
    joins): key index, chains, compaction, snapshots."""

    def __init__(self, spec, left_schema, right_schema, name="join", max_state_bytes=None, backend=None):
        super().__init__(spec, left_schema, right_schema, name, max_state_bytes, backend)
        self.outer = (spec.outer_left, spec.outer_right)
        self.index: Optional[KeyIndex] = None
        self.sides = [SideRows(self._chunks(s), ("t", "kid", "nxt", "exp", "matched")) for s in (0, 1)]
        self.heads = [np.empty(0, np.int64), np.empty(0, np.int64)]
        self.min_exp = [I64_MAX, I64_MAX]

    def _ids(self, side: int, batch: pa.RecordBatch) -> np.ndarray:
        """Key ids of a batch of ``side`` (the chains' heads grown to cover them)."""
        if self.index is None:
            self.index = KeyIndex(self.keys)
        kid = self.index.ids(side, batch)
        self._grow_heads()
        return kid

    def _grow_heads(self) -> None:
        nk = self.index.n_keys + 1024
        for s in (0, 1):
            h = self.heads[s]
            if len(h) < self.index.n_keys:
                new = np.full(max(nk, 2 * len(h)), -1, np.int64)
                new[: len(h)] = h
                self.heads[s] = new

    def _keep(self, side: int, batch: pa.RecordBatch, **values: np.ndarray) -> None:
        """Rows of ``side`` wait: appended and linked into their keys' chains."""
        s = self.sides[side]
        base = s.append(batch, **values)
        chain_link(values["kid"], base, self.heads[side], s.full("nxt"))
        self.min_exp[side] = min(self.min_exp[side], int(values["exp"].min()))

    def _emit_unmatched(self, side: int, rows, idx: np.ndarray) -> List[pa.RecordBatch]:
        return self._emit(rows, idx, None, None) if side == 0 else self._emit(None, None, rows, idx)

    # -- state -----------------------------------------------------------------------------------
    def _maybe_compact(self) -> None:
        live = sum(s.live for s in self.sides)
        dead = sum(s.dead for s in self.sides)
        if not live:
            if self.index is not None or any(s.n for s in self.sides):
                self._clear()
            return
        many_keys = self.index is not None and self.index.n_keys > 2 * live + 4 * MIN_DEAD
        if (dead >= MIN_DEAD and dead > live) or many_keys:
            self._rebuild()

    def _clear(self) -> None:
        for s in self.sides:
            s.clear()
        self.heads = [np.empty(0, np.int64), np.empty(0, np.int64)]
        self.index = None
        self.min_exp = [I64_MAX, I64_MAX]

    def _rebuild(self) -> None:
        """Keep the live rows only, with their keys encoded afresh and chains relinked."""
        for s in self.sides:
            s.compact()
        self.index = KeyIndex(self.keys, capacity=max(1024, sum(s.n for s in self.sides)))
        kids = [self.index.ids(side, s.rows.all()) if s.n else np.empty(0, np.int64)
                for side, s in enumerate(self.sides)]
        self.heads = [np.empty(0, np.int64), np.empty(0, np.int64)]
        self._grow_heads()
        for side, s in enumerate(self.sides):
            if s.n:
                s.a("kid")[:] = kids[side]
                chain_link(kids[side], 0, self.heads[side], s.full("nxt"))

    def _release(self) -> None:
        self._clear()
        for s in self.sides:
            s.close()
        super()._release()

    def state_size_bytes(self) -> int:
        index = self.index           # read once: metrics read it while the join's thread clears it
        return (sum(s.nbytes() for s in self.sides) + sum(h.nbytes for h in self.heads)
                + (index.nbytes() if index is not None else 0))

    def _state_summary(self) -> str:
        return f"{self.sides[0].live:,} left and {self.sides[1].live:,} right rows"

    # -- snapshots ---------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Each side's live rows with ``__matched`` and ``__exp`` (when they expire)."""
        tables: Dict[str, pa.Table] = {}
        for side, name in enumerate(("left", "right")):
            s = self.sides[side]
            if not s.live:
                continue
            idx = s.alive_rows()
            rows = s.rows.take(idx)
            tables[name] = self._rows_table(side, rows, {"matched": s.a("matched")[idx].astype(np.int8),
                                                         "exp": s.a("exp")[idx]})
        return Snapshot(tables, self._meta())

    def restore(self, tables, metas, select=None, first=True, owned=False) -> None:
        self._restore_meta(metas, first)
        for side, name in enumerate(("left", "right")):
            got = self._restored(tables, name, side, select, ("matched", "exp"))
            if got is None:
                continue
            rows, extra = got
            kid = self._ids(side, rows)
            t = np.zeros(rows.num_rows, np.int64) if self.clocks[0] is None else self._times(side, rows)
            self._keep(side, rows, t=t, kid=kid, exp=extra["exp"].astype(np.int64),
                       matched=extra["matched"].astype(np.uint8))


class SymmetricJoin(ChainedJoin):
    """Interval (``spec.kind == "interval"``) and regular joins; see the module docstring.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from heliosdb.operators.join import JoinSpec, make_join
    >>> schema = pa.schema([("ts", pa.int64()), ("k", pa.int64())])
    >>> spec = JoinSpec("interval", "k", "k", coalesce_keys=True, between=(0, 5_000_000_000),
    ...                 left_time="ts", right_time="ts")
    >>> op = make_join(spec, schema, schema)
    >>> op.process_side(0, pa.record_batch({"ts": [1_000, 9_000], "k": [1, 1]}))
    []
    >>> op.process_side(1, pa.record_batch({"ts": [4_000], "k": [1]}))[0].to_pydict()
    {'ts': [1000], 'k': [1], 'ts_right': [4000]}
    >>> _ = op.close(); op.state_size_bytes()
    0
    """

    def __init__(self, spec, left_schema, right_schema, name="join", max_state_bytes=None, backend=None,
                 now: Callable[[], int] = _time.time_ns):
        super().__init__(spec, left_schema, right_schema, name, max_state_bytes, backend)
        self.now = now
        self.processing = self.clocks[0] is None          # regular join without event time
        if spec.kind == "interval":
            lower, upper = spec.between
            self.bounds = ((lower, upper), (-upper, -lower))
            self.keep_for: tuple = (upper, -lower)
            self.check_time = True
        else:
            self.bounds = ((I64_MIN, I64_MAX),) * 2
            self.keep_for = (spec.ttl_ns, spec.ttl_ns)
            self.check_time = False

    # -- per batch -------------------------------------------------------------------------------
    def process_side(self, side: int, batch: pa.RecordBatch) -> List[Item]:
        out: List[Item] = []
        late: List[Item] = []
        if self.processing:
            out += self._expire(self.now())
        if not batch.num_rows:
            return out
        if self.processing:
            t = np.full(batch.num_rows, self.now(), np.int64)
            limit = t[0] if len(t) else 0
        else:
            t = self._times(side, batch)
            limit = self.watermark
            if self.check_time:
                behind = t < self.watermark
                if behind.any():
                    late = self._late(side, batch.filter(pa.array(behind)))
                    keep = ~behind
                    batch, t = batch.filter(pa.array(keep)), t[keep]
                    if not batch.num_rows:
                        return out + late
        kid = self._ids(side, batch)
        n = batch.num_rows
        o = 1 - side
        pm = np.zeros(n, np.uint8) if self.outer[side] else _NONE
        other = self.sides[o]
        if other.live:
            sm = other.full("matched") if self.outer[o] else _NONE
            lo, hi = self.bounds[side]
            pi, si = chain_pairs(kid, t, lo, hi, self.check_time, self.heads[o], other.full("nxt"),
                                 other.full("t"), other.full("alive"), pm, sm)
            if len(pi):
                out += (self._emit(batch, pi, other.rows, si) if side == 0
                        else self._emit(other.rows, si, batch, pi))
        d = self.keep_for[side]
        exp = np.full(n, I64_MAX, np.int64) if d is None else sat_add(t, d)
        # Rows that can match nothing later are not kept: null keys, rows already expired.
        keep = (kid >= 0) & (exp >= limit)
        if self.outer[side] and not keep.all():
            gone = np.flatnonzero(~keep & (pm == 0))
            if len(gone):
                out += self._emit_unmatched(side, batch, gone)
        if keep.any():
            if not keep.all():
                batch, t, kid, exp = batch.filter(pa.array(keep)), t[keep], kid[keep], exp[keep]
                pm = pm[keep] if len(pm) else pm
            self._keep(side, batch, t=t, kid=kid, exp=exp, **({"matched": pm} if len(pm) else {}))
        self._check_memory()
        return out + late

    # -- time ------------------------------------------------------------------------------------
    def _advance(self, before: int, t: int) -> List[Item]:
        if self.processing and t < WATERMARK_MAX:
            return []
        return self._expire(t)

    def on_tick(self, now: int) -> List[Item]:
        return (self._expire(now) if self.processing else []) + [Tick(now)]

    def _expire(self, limit: int) -> List[Item]:
        """Rows whose keep-until is before ``limit`` go (all rows at the end of input); an
        outer join emits those that never matched."""
        out: List[Item] = []
        for side in (0, 1):
            s = self.sides[side]
            if not s.live or (self.min_exp[side] >= limit and limit < WATERMARK_MAX):
                continue
            alive = s.a("alive").astype(bool)
            exp = s.a("exp")
            dead = alive if limit >= WATERMARK_MAX else alive & (exp < limit)
            idx = np.flatnonzero(dead)
            if self.outer[side]:
                lonely = idx[s.a("matched")[idx] == 0]
                if len(lonely):
                    out += self._emit_unmatched(side, s.rows, lonely)
            s.kill(idx)
            rest = exp[alive & ~dead]
            self.min_exp[side] = int(rest.min()) if len(rest) else I64_MAX
        self._maybe_compact()
        return out
