"""Aggregate state of many groups, as arrays indexed by dense group id.

``AccPlan`` is built once per operator from its aggregates and input schema: which arrays each
group needs, and the codecs that turn values into int64 codes (shared by all the operator's
state, so codes from different windows, panes or sessions agree).  ``Partial`` holds the
arrays for the groups of one window, pane, session set or keyed table, with the four
operations every accumulator has (as in DataFusion's GroupsAccumulator): ``update`` from a
batch, ``merge`` another partial's groups in, ``take`` a subset of groups (compaction), and
``results``.  Everything merges, which is what lets sliding windows combine panes, sessions
merge when an event bridges them, and parallel subtasks stay independent.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ..expr import AggSpec
from ..kernels import _accum, _hashagg
from .keys import KeyEncoder

_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min


def _grow(a: np.ndarray, capacity: int, fill) -> np.ndarray:
    # Zero-filled arrays come from calloc: their pages are faulted in when first written, not
    # here (page faults are the main cost of growing large state on this kind of machine).
    if fill == 0:
        new = np.zeros(capacity, a.dtype)
    else:
        new = np.empty(capacity, a.dtype)
        new[len(a):] = fill
    new[: len(a)] = a
    return new


def _validity(arr: pa.Array) -> Optional[np.ndarray]:
    if not arr.null_count:
        return None
    return arr.is_valid().to_numpy(zero_copy_only=False).view(np.uint8)


def _numbers(arr: pa.Array, as_float: bool) -> np.ndarray:
    if arr.null_count:
        arr = arr.fill_null(0)
    dt = np.float64 if as_float else np.int64
    return np.ascontiguousarray(arr.to_numpy(zero_copy_only=False), dtype=dt)


class _Codec:
    """Values of one column <-> int64 codes.  ``exact`` keeps float bits as they are (for
    first/last); otherwise -0.0 and 0.0, and all NaNs, share a code (for distinct counts)."""

    def __init__(self, schema: pa.Schema, column: str, exact: bool, step: str):
        self.type = schema.field(column).type
        self.float = pat.is_floating(self.type)
        self.exact = exact
        self.encoder = KeyEncoder(schema, [column], step) if not (self.float and exact) else None
        if self.encoder is None and not pat.is_floating(self.type):
            raise AssertionError(self.type)

    def encode(self, arr: pa.Array) -> np.ndarray:
        if self.encoder is None:
            return np.ascontiguousarray(_numbers(arr.cast(pa.float64()), True)).view(np.int64)
        return self.encoder._encode_column(0, arr)

    def decode(self, codes: np.ndarray, valid: np.ndarray) -> pa.Array:
        mask = ~valid
        if self.encoder is None:
            return pa.array(codes.view(np.float64), mask=mask).cast(self.type)
        return self.encoder.decode(codes.reshape(-1, 1), mask.astype(np.int64))[0]

    def nbytes(self) -> int:
        return self.encoder.nbytes() if self.encoder is not None else 0


class _Sketch:
    """Log-bucketed quantile sketch parameters: value -> bucket code, code -> value.

    Bucket ``k`` of positive values holds ``(gamma^(k-1), gamma^k]`` and answers
    ``2 gamma^k / (gamma + 1)``, within ``alpha`` relative error of every value in it.  Codes
    sort like the values: negatives mirror positives, 0 is code 0, infinities sit outside.
    """

    OFFSET = 1 << 20
    INF = 1 << 40

    def __init__(self, alpha: float):
        self.alpha = alpha
        self.gamma = (1 + alpha) / (1 - alpha)
        self.log_gamma = math.log(self.gamma)

    def encode(self, v: np.ndarray) -> np.ndarray:
        a = np.abs(v)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.ceil(np.log(a) / self.log_gamma)
        k = np.where(np.isfinite(k), k, 0).astype(np.int64) + self.OFFSET
        k = np.where(np.isinf(a), self.INF, k)
        k = np.where(a == 0, 0, k)
        return np.where(v < 0, -k, k)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        a = np.abs(codes)
        with np.errstate(over="ignore"):
            mag = 2.0 * np.power(self.gamma, (a - self.OFFSET).astype(np.float64)) / (self.gamma + 1)
        mag = np.where(a == self.INF, np.inf, mag)
        mag = np.where(a == 0, 0.0, mag)
        return np.where(codes < 0, -mag, mag)


class AccPlan:
    """What each group holds for a list of aggregates over a schema (built once per operator)."""

    def __init__(self, schema: pa.Schema, aggs: List[Tuple[str, AggSpec]], step: str, backend=None):
        self.aggs = aggs
        self.step = step
        self.backend = backend            # a config.StateBackend; None: memory
        self._db = None
        self.count_rows = False
        self.stats: Dict[str, str] = {}          # column -> "float" | "int" | "count"
        self.var: List[str] = []
        self.first: Dict[str, _Codec] = {}
        self.last: Dict[str, _Codec] = {}
        self.distinct: Dict[str, _Codec] = {}
        self.sketch: Dict[Tuple[str, float], _Sketch] = {}
        self.output_fields: List[pa.Field] = []
        for out_name, agg in aggs:
            self.output_fields.append(pa.field(out_name, agg.output_type(schema, step)))
            c, kind = agg.column, agg.kind
            if kind == "count" and c is None:
                self.count_rows = True
                continue
            t = schema.field(c).type
            if kind in ("count", "sum", "min", "max", "mean"):
                k = "float" if pat.is_floating(t) else "int" if pat.is_integer(t) else "count"
                if kind == "count":
                    k = self.stats.get(c, "count")
                self.stats[c] = k if self.stats.get(c) in (None, "count") else self.stats[c]
            elif kind in ("var", "stddev"):
                if c not in self.var:
                    self.var.append(c)
            elif kind == "first":
                self.first.setdefault(c, _Codec(schema, c, True, step))
            elif kind == "last":
                self.last.setdefault(c, _Codec(schema, c, True, step))
            elif kind == "count_distinct":
                self.distinct.setdefault(c, _Codec(schema, c, False, step))
            elif kind == "quantile":
                self.sketch.setdefault((c, agg.relative_accuracy), _Sketch(agg.relative_accuracy))
        self.columns = sorted({a.column for _, a in aggs if a.column})
        self.index = {c: schema.get_field_index(c) for c in self.columns}
        self.needs_seq = bool(self.first or self.last)

    def new_state(self, capacity: int = 1024, rows: bool = False):
        """Long-lived group state on this operator's backend (a Partial, or a RocksPartial)."""
        if self.backend is None or self.backend.kind == "memory":
            return Partial(self, capacity, rows)
        from ..state.rocksdb import RocksDB, RocksPartial

        if self._db is None:
            b = self.backend
            self._db = RocksDB(b.path, self.step, b.block_cache_size, b.write_buffer_size)
        return RocksPartial(self, self._db, rows)

    def close_state(self) -> None:
        """Delete the backend's working files (RocksDB): the job is over."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def prepare(self, batch: pa.RecordBatch, seqs: Optional[np.ndarray]) -> "Prepared":
        """Turn a batch's aggregate inputs into numpy arrays, once per batch."""
        p = Prepared(batch.num_rows, seqs)
        for c, kind in self.stats.items():
            arr = batch.column(self.index[c])
            ok = _validity(arr)
            p.stats[c] = (None if kind == "count" else _numbers(arr, kind == "float"), ok)
        for c in self.var:
            arr = batch.column(self.index[c])
            p.var[c] = (_numbers(arr, True), _validity(arr))
        for group, out in ((self.first, p.first), (self.last, p.last), (self.distinct, p.distinct)):
            for c, codec in group.items():
                arr = batch.column(self.index[c])
                out[c] = (codec.encode(arr), _validity(arr))
        for (c, alpha), sk in self.sketch.items():
            arr = batch.column(self.index[c])
            v = _numbers(arr, True)
            ok = ~np.isnan(v)
            valid = _validity(arr)
            if valid is not None:
                ok &= valid.astype(bool)
            p.sketch[(c, alpha)] = (sk.encode(v), ok.view(np.uint8) if not ok.all() else None)
        return p

    def frozen(self) -> "AccPlan":
        """A copy whose codecs decode with the values known now (for snapshots built on the
        checkpoint writer's thread)."""
        import copy

        out = copy.copy(self)
        for name in ("first", "last", "distinct"):
            codecs = {}
            for c, codec in getattr(self, name).items():
                fc = copy.copy(codec)
                if codec.encoder is not None:
                    fc.encoder = codec.encoder.frozen()
                codecs[c] = fc
            setattr(out, name, codecs)
        return out

    def codec_bytes(self) -> int:
        return sum(c.nbytes() for g in (self.first, self.last, self.distinct) for c in g.values())


class Prepared:
    """One batch's aggregate inputs as numpy arrays: (values or codes, validity) per column."""

    def __init__(self, n: int, seqs: Optional[np.ndarray]):
        self.n = n
        self.seqs = seqs
        self.stats: Dict[str, Tuple[Optional[np.ndarray], Optional[np.ndarray]]] = {}
        self.var: Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]] = {}
        self.first: Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]] = {}
        self.last: Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]] = {}
        self.distinct: Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]] = {}
        self.sketch: Dict[Tuple[str, float], Tuple[np.ndarray, Optional[np.ndarray]]] = {}

    def slice(self, b0: int, b1: int) -> "Prepared":
        if b0 == 0 and b1 == self.n:
            return self
        p = Prepared(b1 - b0, None if self.seqs is None else self.seqs[b0:b1])

        def cut(d):
            return {k: (None if v is None else v[b0:b1], None if ok is None else ok[b0:b1])
                    for k, (v, ok) in d.items()}

        p.stats, p.var, p.first, p.last = cut(self.stats), cut(self.var), cut(self.first), cut(self.last)
        p.distinct, p.sketch = cut(self.distinct), cut(self.sketch)
        return p

    def take(self, idx: np.ndarray) -> "Prepared":
        """The rows ``idx`` (e.g. the non-late rows, or rows reordered by window)."""
        p = Prepared(len(idx), None if self.seqs is None else self.seqs[idx])

        def pick(d):
            return {k: (None if v is None else v[idx], None if ok is None else ok[idx])
                    for k, (v, ok) in d.items()}

        p.stats, p.var, p.first, p.last = pick(self.stats), pick(self.var), pick(self.first), pick(self.last)
        p.distinct, p.sketch = pick(self.distinct), pick(self.sketch)
        return p


class _Pairs:
    """A set of (group id, code) pairs with a count each: distinct values, sketch buckets."""

    def __init__(self):
        self.table = _hashagg.GroupTable(2, 256)
        self.counts = np.zeros(256, np.int64)

    def add(self, gids: np.ndarray, codes: np.ndarray, weights: Optional[np.ndarray] = None) -> np.ndarray:
        """Insert pairs; returns the group ids of pairs that are new."""
        before = self.table.n_groups
        ids = np.empty(len(gids), np.int64)
        self.table.insert([np.ascontiguousarray(gids), np.ascontiguousarray(codes)], ids)
        n = self.table.n_groups
        if n > len(self.counts):
            self.counts = _grow(self.counts, max(n, 2 * len(self.counts)), 0)
        if weights is None:
            _hashagg.count_rows(ids, self.counts)
        else:
            _accum.merge_add_i64(np.arange(len(ids), dtype=np.int64), ids, weights, self.counts)
        return np.ascontiguousarray(self.table.keys_slice(before, n)[:, 0])

    def items(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = self.table.keys_view()
        n = self.table.n_groups
        return np.ascontiguousarray(k[:n, 0]), np.ascontiguousarray(k[:n, 1]), self.counts[:n]

    def nbytes(self) -> int:
        return self.table.nbytes + self.counts.nbytes


class _FrozenPairs:
    """A copy of a ``_Pairs``' contents, for a snapshot."""

    def __init__(self, pairs: _Pairs):
        g, k, w = pairs.items()              # g, k are copies; w is a view of live counts
        self._items = (g, k, w.copy())

    def items(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._items


def _filter(gids: np.ndarray, codes: np.ndarray, ok: Optional[np.ndarray]):
    if ok is None:
        return gids, codes
    keep = ok.astype(bool)
    return gids[keep], codes[keep]


class Partial:
    """The accumulators of groups 0..n-1 under one ``AccPlan``."""

    def __init__(self, plan: AccPlan, capacity: int = 1024, rows: bool = False):
        self.plan = plan
        self.capacity = capacity = max(capacity, 16)
        self.n = 0
        # rows: keep a row count per group even if no count() asks for it (to know which
        # groups hold anything after an aligned merge)
        self.counts = np.zeros(capacity, np.int64) if plan.count_rows or rows else None
        self.stats = {}
        for c, kind in plan.stats.items():
            f = kind == "float"
            dt = np.float64 if f else np.int64
            self.stats[c] = {"nn": np.zeros(capacity, np.int64),
                             "nan": np.zeros(capacity, np.int64) if f else None,
                             "sum": np.zeros(capacity, dt) if kind != "count" else None,
                             "min": np.full(capacity, np.inf if f else _I64_MAX, dt) if kind != "count" else None,
                             "max": np.full(capacity, -np.inf if f else _I64_MIN, dt) if kind != "count" else None}
        self.var = {c: {"cnt": np.zeros(capacity, np.int64), "mean": np.zeros(capacity),
                        "m2": np.zeros(capacity)} for c in plan.var}
        self.first = {c: {"seq": np.full(capacity, -1, np.int64), "val": np.zeros(capacity, np.int64)}
                      for c in plan.first}
        self.last = {c: {"seq": np.full(capacity, -1, np.int64), "val": np.zeros(capacity, np.int64)}
                     for c in plan.last}
        self.distinct = {c: (_Pairs(), np.zeros(capacity, np.int64)) for c in plan.distinct}
        self.sketch = {k: (_Pairs(), np.zeros(capacity, np.int64)) for k in plan.sketch}

    _FILL = {"nn": 0, "nan": 0, "sum": 0, "cnt": 0, "mean": 0.0, "m2": 0.0, "seq": -1, "val": 0}

    def ensure(self, n: int) -> None:
        """Make room for groups 0..n-1 (new groups start empty)."""
        if n > self.capacity:
            cap = self.capacity
            while cap < n:
                cap *= 2
            if self.counts is not None:
                self.counts = _grow(self.counts, cap, 0)
            for c, d in self.stats.items():
                f = self.plan.stats[c] == "float"
                for k, a in d.items():
                    if a is None:
                        continue
                    fill = {"min": np.inf if f else _I64_MAX, "max": -np.inf if f else _I64_MIN}.get(k, self._FILL.get(k))
                    d[k] = _grow(a, cap, fill)
            for group in (self.var, self.first, self.last):
                for d in group.values():
                    for k, a in d.items():
                        d[k] = _grow(a, cap, self._FILL[k])
            for group in (self.distinct, self.sketch):
                for k, (pairs, per) in group.items():
                    group[k] = (pairs, _grow(per, cap, 0))
            self.capacity = cap
        self.n = max(self.n, n)

    def update(self, gids: np.ndarray, p: Prepared) -> None:
        """Fold the rows of ``p`` into groups ``gids`` (one per row; ``ensure`` done)."""
        if self.counts is not None:
            _hashagg.count_rows(gids, self.counts)
        for c, (v, ok) in p.stats.items():
            d = self.stats[c]
            kind = self.plan.stats[c]
            if kind == "count":
                if ok is None:
                    _hashagg.count_rows(gids, d["nn"])
                else:
                    _hashagg.count_valid(gids, ok, d["nn"])
            elif kind == "float":
                _hashagg.update_f64(gids, v, ok, d["nn"], d["nan"], d["sum"], d["min"], d["max"])
            else:
                _hashagg.update_i64(gids, v, ok, d["nn"], d["sum"], d["min"], d["max"])
        for c, (v, ok) in p.var.items():
            d = self.var[c]
            _accum.update_var(gids, v, ok, d["cnt"], d["mean"], d["m2"])
        for c, (codes, ok) in p.first.items():
            d = self.first[c]
            _accum.update_first(gids, p.seqs, codes, ok, d["seq"], d["val"])
        for c, (codes, ok) in p.last.items():
            d = self.last[c]
            _accum.update_last(gids, p.seqs, codes, ok, d["seq"], d["val"])
        for c, (codes, ok) in p.distinct.items():
            pairs, per = self.distinct[c]
            g, k = _filter(gids, codes, ok)
            _hashagg.count_rows(pairs.add(g, k), per)
        for key, (codes, ok) in p.sketch.items():
            pairs, per = self.sketch[key]
            g, k = _filter(gids, codes, ok)
            pairs.add(g, k)
            _hashagg.count_rows(np.ascontiguousarray(g), per)

    def merge(self, src: "Partial", src_ids: np.ndarray, dst_ids: np.ndarray) -> None:
        """Combine group ``src_ids[i]`` of ``src`` into group ``dst_ids[i]`` (``ensure`` done)."""
        s, d = np.ascontiguousarray(src_ids, np.int64), np.ascontiguousarray(dst_ids, np.int64)
        if not isinstance(src, Partial):
            src, s = src.load(s), np.arange(len(s), dtype=np.int64)   # another backend's state
        if self.counts is not None:
            _accum.merge_add_i64(s, d, src.counts, self.counts)
        for c, a in self.stats.items():
            b = src.stats[c]
            _accum.merge_add_i64(s, d, b["nn"], a["nn"])
            kind = self.plan.stats[c]
            if kind == "float":
                _accum.merge_add_i64(s, d, b["nan"], a["nan"])
                _accum.merge_stats_f64(s, d, b["sum"], b["min"], b["max"], a["sum"], a["min"], a["max"])
            elif kind == "int":
                _accum.merge_stats_i64(s, d, b["sum"], b["min"], b["max"], a["sum"], a["min"], a["max"])
        for c, a in self.var.items():
            b = src.var[c]
            _accum.merge_var(s, d, b["cnt"], b["mean"], b["m2"], a["cnt"], a["mean"], a["m2"])
        for c, a in self.first.items():
            b = src.first[c]
            _accum.merge_pick(s, d, b["seq"], b["val"], a["seq"], a["val"], True)
        for c, a in self.last.items():
            b = src.last[c]
            _accum.merge_pick(s, d, b["seq"], b["val"], a["seq"], a["val"], False)
        if self.distinct or self.sketch:
            remap = np.full(src.n, -1, np.int64)
            remap[s] = d
            for c, (pairs, per) in self.distinct.items():
                g, k, _ = src.distinct[c][0].items()
                g = remap[g]
                keep = g >= 0
                _hashagg.count_rows(pairs.add(g[keep], k[keep]), per)
            for key, (pairs, per) in self.sketch.items():
                g, k, w = src.sketch[key][0].items()
                g = remap[g]
                keep = g >= 0
                pairs.add(g[keep], k[keep], np.ascontiguousarray(w[keep]))
                _accum.merge_add_i64(s, d, src.sketch[key][1], per)

    def merge_aligned(self, src: "Partial") -> None:
        """Combine ``src``'s group ``g`` into group ``g`` for every group of ``src`` (both index
        the same key table); vectorised for count/sum/min/max.  ``ensure`` done."""
        if not isinstance(src, Partial):
            src = src.materialize()                 # another backend's state, loaded
        m = src.n
        if not m:
            return
        if self.counts is not None:
            self.counts[:m] += src.counts[:m]
        for c, a in self.stats.items():
            b = src.stats[c]
            a["nn"][:m] += b["nn"][:m]
            if a["nan"] is not None:
                a["nan"][:m] += b["nan"][:m]
            if a["sum"] is not None:
                a["sum"][:m] += b["sum"][:m]            # int64 wraps, as the kernels do
                np.minimum(a["min"][:m], b["min"][:m], out=a["min"][:m])
                np.maximum(a["max"][:m], b["max"][:m], out=a["max"][:m])
        if self.var or self.first or self.last or self.distinct or self.sketch:
            ids = np.arange(m, dtype=np.int64)
            rest = Partial.__new__(Partial)
            rest.__dict__.update(self.__dict__)
            rest.counts, rest.stats = None, {}
            rest.merge(src, ids, ids)

    def arrays(self) -> List[Tuple[str, np.ndarray]]:
        """(name, array) of every per-group array, in a fixed order."""
        out = []
        if self.counts is not None:
            out.append(("rows", self.counts))
        for c, d in self.stats.items():
            out += [(f"{c}.{k}", a) for k, a in d.items() if a is not None]
        for group, tag in ((self.var, "var"), (self.first, "first"), (self.last, "last")):
            for c, d in group.items():
                out += [(f"{c}.{tag}.{k}", a) for k, a in d.items()]
        for group, tag in ((self.distinct, "distinct"), (self.sketch, "sketch")):
            for c, (_, per) in group.items():
                out.append((f"{c}.{tag}", per))
        return out

    def frozen_into(self, bufs: Dict[str, np.ndarray], n: int) -> Tuple["Partial", List[Tuple[np.ndarray, np.ndarray]]]:
        """A snapshot of groups 0..n-1 whose arrays are buffers from ``bufs`` (reused from one
        checkpoint to the next, so their pages are already mapped), and the ``(live array,
        buffer)`` pairs still to copy: the caller copies them (at once, or chunk by chunk
        with ``cow.CowCopy``) before the snapshot is read.  Value sets (distinct, sketch)
        are copied here, as their pairs."""
        out = Partial.__new__(Partial)
        out.__dict__.update(self.__dict__)
        out.n = out.capacity = n
        copies = {}
        pairs = []
        for name, a in self.arrays():
            buf = bufs.get(name)
            if buf is None or len(buf) < n or buf.dtype != a.dtype:
                buf = bufs[name] = np.empty(max(n + n // 4, 16), a.dtype)
            copies[name] = buf[:n]
            pairs.append((a, buf[:n]))
        if self.counts is not None:
            out.counts = copies["rows"]
        out.stats = {c: {k: (copies[f"{c}.{k}"] if a is not None else None) for k, a in d.items()}
                     for c, d in self.stats.items()}
        out.var = {c: {k: copies[f"{c}.var.{k}"] for k in d} for c, d in self.var.items()}
        out.first = {c: {k: copies[f"{c}.first.{k}"] for k in d} for c, d in self.first.items()}
        out.last = {c: {k: copies[f"{c}.last.{k}"] for k in d} for c, d in self.last.items()}
        out.distinct = {c: (_FrozenPairs(pairs_), copies[f"{c}.distinct"]) for c, (pairs_, _) in self.distinct.items()}
        out.sketch = {c: (_FrozenPairs(pairs_), copies[f"{c}.sketch"]) for c, (pairs_, _) in self.sketch.items()}
        return out, pairs

    def take(self, ids: np.ndarray) -> "Partial":
        """A new partial holding groups ``ids`` as 0..len(ids)-1."""
        out = Partial(self.plan, len(ids), self.counts is not None)
        out.ensure(len(ids))
        out.merge(self, ids, np.arange(len(ids), dtype=np.int64))
        return out

    # -- results -------------------------------------------------------------------------------
    def results(self, ids: Optional[np.ndarray] = None) -> List[pa.Array]:
        """One Arrow array per aggregate, for groups ``ids`` (default: all, in id order)."""
        n = self.n
        # Copies, never views: the state may change after the rows are emitted (lateness
        # updates), and emitted rows must not change with it.
        sel = (lambda a: a[:n].copy()) if ids is None else (lambda a: a[ids])
        out = []
        for _, agg in self.plan.aggs:
            out.append(self._result(agg, sel, n if ids is None else len(ids), ids))
        return out

    def _result(self, agg: AggSpec, sel, m: int, ids) -> pa.Array:
        kind, c = agg.kind, agg.column
        if kind == "count" and c is None:
            return pa.array(sel(self.counts), pa.int64())
        if kind in ("count", "sum", "mean", "min", "max"):
            d = self.stats[c]
            nn = sel(d["nn"])
            if kind == "count":
                return pa.array(nn, pa.int64())
            empty = nn == 0
            mask = empty if empty.any() else None
            if kind == "sum":
                return pa.array(sel(d["sum"]), mask=mask)
            if kind == "mean":
                with np.errstate(invalid="ignore", divide="ignore"):
                    return pa.array(sel(d["sum"]) / np.maximum(nn, 1), pa.float64(), mask=mask)
            v = sel(d[kind])
            if d["nan"] is not None:
                nan = sel(d["nan"])
                if nan.any():
                    v = np.where(nan == nn if kind == "min" else nan > 0, np.nan, v)
            return pa.array(v, mask=mask)
        if kind in ("var", "stddev"):
            d = self.var[c]
            cnt = sel(d["cnt"])
            with np.errstate(invalid="ignore", divide="ignore"):
                v = sel(d["m2"]) / (cnt - 1)
            v = np.where(cnt >= 2, np.maximum(v, 0.0), 0.0)     # NaN stays NaN
            if kind == "stddev":
                v = np.sqrt(v)
            small = cnt < 2
            return pa.array(v, pa.float64(), mask=small if small.any() else None)
        if kind in ("first", "last"):
            d = (self.first if kind == "first" else self.last)[c]
            codec = (self.plan.first if kind == "first" else self.plan.last)[c]
            seq = sel(d["seq"])
            return codec.decode(np.ascontiguousarray(sel(d["val"])), seq >= 0)
        if kind == "count_distinct":
            return pa.array(sel(self.distinct[c][1]), pa.int64())
        if kind == "quantile":
            return self._quantile(agg, m, ids)
        raise AssertionError(kind)

    def _quantile(self, agg: AggSpec, m: int, ids: Optional[np.ndarray]) -> pa.Array:
        pairs, per = self.sketch[(agg.column, agg.relative_accuracy)]
        sketch = self.plan.sketch[(agg.column, agg.relative_accuracy)]
        g, k, w = pairs.items()
        want = np.arange(self.n) if ids is None else np.asarray(ids)
        if not len(k):                             # no value in any group: all null
            return pa.nulls(len(want), pa.float64())
        order = np.lexsort((k, g))
        g, k, w = g[order], k[order], w[order]
        cum = np.cumsum(w)
        total = per[: self.n]
        want = np.arange(self.n) if ids is None else np.asarray(ids)
        tot = total[want]
        starts = np.searchsorted(g, want)
        base = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0)
        rank = np.floor(agg.q * np.maximum(tot - 1, 0)).astype(np.int64)
        pos = np.searchsorted(cum, base + rank, side="right")
        ok = tot > 0
        pos = np.where(ok, np.minimum(pos, max(len(k) - 1, 0)), 0)
        values = sketch.decode(k[pos]) if len(k) else np.zeros(len(want))
        return pa.array(values, pa.float64(), mask=~ok if not ok.all() else None)

    def nbytes(self) -> int:
        n = 0 if self.counts is None else self.counts.nbytes
        for d in list(self.stats.values()) + list(self.var.values()) + list(self.first.values()) + list(self.last.values()):
            n += sum(a.nbytes for a in d.values() if a is not None)
        for pairs, per in list(self.distinct.values()) + list(self.sketch.values()):
            n += pairs.nbytes() + per.nbytes
        return n


# -- snapshots: state as Arrow, portable between backends and parallelisms -----------------------
def partial_to_arrow(part: Partial, ids: np.ndarray, frozen: bool = False) -> Tuple[Dict[str, pa.Array], Dict[str, pa.Table]]:
    """Groups ``ids`` of ``part`` as Arrow columns (row i = group ids[i]), plus the tables of
    per-group value sets (distinct values, sketch buckets) keyed by row number.

    Values are stored decoded (strings as strings), never as this process's codes, so a
    snapshot restores into any operator instance, backend or parallelism.  The arrays are
    copies unless ``frozen`` (``part`` is already a private copy): Arrow would otherwise share
    the live state's memory, which keeps changing after the barrier.
    """
    ids = np.asarray(ids, np.int64)
    if not isinstance(part, Partial):
        part, ids = part.load(ids), np.arange(len(ids), dtype=np.int64)
    if frozen and len(ids) == part.n and (not len(ids) or (ids[0] == 0 and ids[-1] == part.n - 1)):
        pick = lambda a: a[: part.n]              # a private copy, every group: no gather  # noqa: E731
    else:
        pick = lambda a: a[ids]                   # noqa: E731
    cols: Dict[str, pa.Array] = {}
    if part.counts is not None:
        cols["rows"] = pa.array(pick(part.counts))
    for c, d in part.stats.items():
        for k, a in d.items():
            if a is not None:
                cols[f"{c}.{k}"] = pa.array(pick(a))
    for c, d in part.var.items():
        for k, a in d.items():
            cols[f"{c}.var_{k}"] = pa.array(pick(a))
    for which, group, codecs in (("first", part.first, part.plan.first), ("last", part.last, part.plan.last)):
        for c, d in group.items():
            seq = pick(d["seq"])
            cols[f"{c}.{which}_seq"] = pa.array(seq)
            cols[f"{c}.{which}"] = codecs[c].decode(np.ascontiguousarray(pick(d["val"])), seq >= 0)
    extra: Dict[str, pa.Table] = {}
    row_of = np.full(part.n, -1, np.int64)
    row_of[ids] = np.arange(len(ids), dtype=np.int64)
    for c, (pairs, _) in part.distinct.items():
        g, k, _w = pairs.items()
        keep = row_of[g] >= 0
        codes = np.ascontiguousarray(k[keep])
        extra[f"distinct.{c}"] = pa.table({"row": pa.array(row_of[g[keep]]),
                                          "value": part.plan.distinct[c].decode(codes, np.ones(len(codes), bool))})
    for (c, alpha), (pairs, _) in part.sketch.items():
        g, k, w = pairs.items()
        keep = row_of[g] >= 0
        extra[f"sketch.{c}.{alpha!r}"] = pa.table({"row": pa.array(row_of[g[keep]]), "bucket": pa.array(k[keep]),
                                                  "count": pa.array(w[keep])})
    return cols, extra


def fill_from_column(dst: np.ndarray, column: pa.ChunkedArray) -> None:
    """``dst[:len(column)] = column``, one chunk at a time.

    ``column.to_numpy()`` of a column in several chunks (as Parquet decodes them) first
    concatenates them into a new array: a fresh allocation as large as the column, i.e. page
    faults, only to copy it again.  Chunks without nulls are read in place.
    """
    off = 0
    for chunk in column.chunks:
        k = len(chunk)
        if k:
            dst[off: off + k] = chunk.to_numpy(zero_copy_only=False)
            off += k


def adopt_column(column: pa.ChunkedArray, dtype) -> Optional[np.ndarray]:
    """The values of ``column`` as a writable numpy array over its own buffer (no copy), or
    None where that is not possible (several chunks, nulls, an offset, another type, an
    immutable buffer).

    Only for tables whose buffers belong to the caller alone (decoded from a checkpoint for
    this restore): the array *becomes* state, and writing to it writes to the buffer.
    """
    if column.num_chunks != 1:
        return None
    arr = column.chunk(0)
    if arr.null_count or arr.offset or arr.type != pa.from_numpy_dtype(np.dtype(dtype)):
        return None
    buf = arr.buffers()[1]
    if buf is None or not buf.is_mutable:
        return None
    out = np.frombuffer(buf, dtype=dtype)[: len(arr)]
    return out if out.flags.writeable else None


def partial_from_arrow(plan: AccPlan, table: pa.Table, extra: Dict[str, pa.Table], owned: bool = False) -> Partial:
    """The inverse of :func:`partial_to_arrow`: row i of ``table`` becomes group i.

    ``owned``: the table's buffers belong to this call alone (decoded from a checkpoint for
    it), so numeric columns are kept as the state's arrays instead of being copied (on a
    virtual machine, 10^7 groups' fresh arrays cost seconds of page faults).
    """
    m = table.num_rows
    cap = max(m, 16)
    part = Partial(plan, 16, "rows" in table.column_names)      # small: arrays replaced below

    def load(name: str, small: np.ndarray) -> np.ndarray:
        column = table.column(name)
        a = adopt_column(column, small.dtype) if owned and m >= 16 else None
        if a is None:
            a = np.empty(cap, small.dtype)
            a[m:] = small[0]                        # the empty group's fill, past the rows
            fill_from_column(a, column)
        return a

    if part.counts is not None:
        part.counts = load("rows", part.counts)
    for c, d in part.stats.items():
        for k, a in d.items():
            if a is not None:
                d[k] = load(f"{c}.{k}", a)
    for c, d in part.var.items():
        for k, a in d.items():
            d[k] = load(f"{c}.var_{k}", a)
    for which, group, codecs in (("first", part.first, plan.first), ("last", part.last, plan.last)):
        for c, d in group.items():
            d["seq"] = load(f"{c}.{which}_seq", d["seq"])
            d["val"] = _grow(d["val"], cap, 0)
            values = table.column(f"{c}.{which}").combine_chunks()
            d["val"][:m] = codecs[c].encode(values)
    for group in (part.distinct, part.sketch):
        for key, (pairs, per) in group.items():
            group[key] = (pairs, _grow(per, cap, 0))
    part.capacity = cap
    part.n = m
    for c, (pairs, per) in part.distinct.items():
        t = extra.get(f"distinct.{c}")
        if t is not None and t.num_rows:
            rows = np.ascontiguousarray(t.column("row").to_numpy())
            codes = plan.distinct[c].encode(t.column("value").combine_chunks())
            _hashagg.count_rows(pairs.add(rows, codes), per)
    for (c, alpha), (pairs, per) in part.sketch.items():
        t = extra.get(f"sketch.{c}.{alpha!r}")
        if t is not None and t.num_rows:
            rows = np.ascontiguousarray(t.column("row").to_numpy())
            w = np.ascontiguousarray(t.column("count").to_numpy())
            pairs.add(rows, np.ascontiguousarray(t.column("bucket").to_numpy()), w)
            _accum.merge_add_i64(np.arange(len(rows), dtype=np.int64), rows, w, per)
    return part


def snapshot_rows(tables: Dict[str, pa.Table], name: str, select=None) -> Optional[Tuple[pa.Table, Dict[str, pa.Table]]]:
    """A snapshot's main table ``name`` and its value-set tables, narrowed to this subtask's
    rows by ``select(table)`` (a bool mask); None when nothing is left."""
    t = tables.get(name)
    if t is None or not t.num_rows:
        return None
    extra = {k: v for k, v in tables.items() if k != name}
    if select is not None:
        t, extra = filter_rows(t, extra, select(t))
    return (t, extra) if t.num_rows else None


def filter_rows(table: pa.Table, extra: Dict[str, pa.Table], keep: np.ndarray) -> Tuple[pa.Table, Dict[str, pa.Table]]:
    """Rows ``keep`` (bool mask) of a snapshot and of its per-row value sets, renumbered."""
    idx = np.flatnonzero(keep)
    new_row = np.full(len(keep), -1, np.int64)
    new_row[idx] = np.arange(len(idx), dtype=np.int64)
    out = {}
    for name, t in extra.items():
        r = t.column("row").to_numpy()
        sel = new_row[r] >= 0
        t = t.filter(pa.array(sel))
        out[name] = t.set_column(0, "row", pa.array(new_row[r[sel]]))
    return table.take(pa.array(idx)), out
