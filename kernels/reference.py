"""Plain, obvious numpy versions of every public kernel.  Tests compare the kernels with these.

Nothing here is fast, and nothing here is used by the engine at run time.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from .ir import (BinOp, Cast, Col, Expr, Func, IfElse, IsNull, Lit, Not, is_stringlike,
                 strip_alias)

INT64_MAX = 2**63 - 1


def tumbling_starts(ts: np.ndarray, factor: int, size_ns: int):
    """Reference for :func:`heliosdb.kernels.window.tumbling_starts` (Python integers)."""
    out = np.zeros(len(ts), dtype=np.int64)
    lo, hi, bad = INT64_MAX, -INT64_MAX - 1, -1
    for i, t in enumerate(ts.tolist()):
        t = t * factor
        s = t - t % size_ns                 # Python's % floors: right for negative times
        if not (-INT64_MAX <= t <= INT64_MAX) or s + size_ns > INT64_MAX or s < -INT64_MAX - 1:
            bad = i if bad < 0 else bad
            continue
        out[i] = s
        lo, hi = min(lo, s), max(hi, s)
    return out, lo, hi, bad


def _py(arr: pa.Array) -> list:
    return arr.to_pylist()


def evaluate(e: Expr, batch: pa.RecordBatch) -> pa.Array:
    """Evaluate ``e`` row by row with Python values and the engine's documented semantics."""
    n = batch.num_rows
    t = e.dtype(batch.schema)
    e = strip_alias(e)
    if isinstance(e, Col):
        return batch.column(batch.schema.get_field_index(e.name))
    if isinstance(e, Lit):
        return pa.array([e.value] * n, type=t if not pat.is_null(t) else pa.int64())
    if isinstance(e, Not):
        return pa.array([None if v is None else not v for v in _py(evaluate(e.operand, batch))], pa.bool_())
    if isinstance(e, IsNull):
        vals = _py(evaluate(e.operand, batch))
        return pa.array([(v is not None) if e.negate else (v is None) for v in vals], pa.bool_())
    if isinstance(e, Cast):
        vals = _py(evaluate(e.operand, batch))
        if is_stringlike(e.to) or is_stringlike(e.operand.dtype(batch.schema)):
            import pyarrow.compute as pc

            return pc.cast(evaluate(e.operand, batch), e.to, safe=False)
        out = []
        for v in vals:
            if v is None:
                out.append(None)
            elif pat.is_boolean(e.to):
                out.append(v != 0)
            elif pat.is_floating(e.to):
                out.append(float(v))
            else:
                if isinstance(v, float) and (not math.isfinite(v)):
                    out.append(None)
                    continue
                iv = int(v)
                info = np.iinfo(e.to.to_pandas_dtype())
                if isinstance(v, float) and not (info.min <= iv <= info.max):
                    out.append(None)
                    continue
                bits = info.bits
                iv = (iv + 2 ** (bits - 1)) % 2**bits - 2 ** (bits - 1)   # wrap like C
                out.append(iv)
        return pa.array(out, e.to)
    if isinstance(e, IfElse):
        conds = _py(evaluate(e.cond, batch))
        a, b = _py(evaluate(e.then, batch)), _py(evaluate(e.otherwise, batch))
        conv = float if pat.is_floating(t) else (lambda v: v)
        out = [x if c else y for c, x, y in zip(conds, a, b)]
        return pa.array([None if v is None else conv(v) for v in out], t)
    if isinstance(e, Func):
        cols = [_py(evaluate(a, batch)) for a in e.args]
        return pa.array([None if None in row else func(e.name, *row, out=t) for row in zip(*cols)], t)
    assert isinstance(e, BinOp)
    lv, rv = _py(evaluate(e.left, batch)), _py(evaluate(e.right, batch))
    out = [_binop(e.op, a, b, t) for a, b in zip(lv, rv)]
    return pa.array(out, t)


def _ieee_pow(a: float, b: float) -> float:
    """C99/IEEE pow, as compiled kernels compute it (numpy's power differs, e.g. (-inf)**0.5)."""
    try:
        return math.pow(a, b)
    except ValueError:
        if a == 0.0 and b < 0:  # pole: +-inf, negative only for -0.0 to an odd integer power
            odd = float(b).is_integer() and int(b) % 2 == 1
            return float("-inf") if odd and math.copysign(1.0, a) < 0 else float("inf")
        return float("nan")     # negative base, non-integer exponent
    except OverflowError:
        negative = a < 0 and float(b).is_integer() and int(b) % 2 == 1
        return float("-inf") if negative else float("inf")


def _wrap64(v: int) -> int:
    return (v + 2**63) % 2**64 - 2**63


def _c_math(name: str, *args: float) -> float:
    """A C math function: Python's math module (the same libm) where it returns, and the IEEE
    result (NaN, +-inf) where Python raises a domain or range error."""
    try:
        return float(getattr(math, name)(*args))
    except (ValueError, OverflowError):
        with np.errstate(all="ignore"):
            return float(getattr(np, {"asin": "arcsin", "acos": "arccos", "atan": "arctan",
                                      "asinh": "arcsinh", "acosh": "arccosh",
                                      "atanh": "arctanh", "pow": "power"}.get(name, name))(*args))


def func(name: str, *args, out: pa.DataType = pa.float64()):
    """Reference for a :class:`heliosdb.expr.Func` call on non-null Python values."""
    M = 2**63
    if name == "int_truediv":
        a, b = int(args[0]), int(args[1])
        if b == 0:
            return float("nan") if a == 0 else math.copysign(float("inf"), a)
        return a / b
    if name == "ipow":
        a, b = int(args[0]), int(args[1])
        return 0 if b < 0 else _wrap64(pow(a, b, 2**64))
    if name in ("add_overflows", "sub_overflows", "mul_overflows", "ipow_overflows"):
        a, b = int(args[0]), int(args[1])
        if name == "ipow_overflows" and (b < 0 or a in (-1, 0, 1)):
            return False
        if name == "ipow_overflows" and b >= 64:
            return True                      # |a| >= 2, so |a| ** b >= 2 ** 64
        r = {"add_overflows": lambda: a + b, "sub_overflows": lambda: a - b,
             "mul_overflows": lambda: a * b, "ipow_overflows": lambda: a ** b}[name]()
        return not -M <= r < M
    if name == "cmp_int_float":
        a, f = int(args[0]), float(args[1])
        return 2 if f != f else (-1 if a < f else (1 if a > f else 0))
    if name in ("abs", "neg"):
        x = args[0]
        if pat.is_floating(out):
            return math.fabs(x) if name == "abs" else -float(x)
        x = int(x)
        return _wrap64(abs(x) if name == "abs" else -x)
    x = [float(a) for a in args]
    if name in ("isnan", "isinf", "isfinite"):
        return getattr(math, name)(x[0])
    if name in ("floor", "ceil", "trunc", "rint"):
        return float(getattr(np, name)(x[0]))
    if name == "degrees":
        return x[0] * (180.0 / math.pi)
    if name == "radians":
        return x[0] * (math.pi / 180.0)
    if name == "pow":
        return _ieee_pow(x[0], x[1])
    return _c_math(name, *x)


def _binop(op: str, a, b, t: pa.DataType):
    if op == "&":
        if a is False or b is False:
            return False
        if a is None or b is None:
            return None
        return True
    if op == "|":
        if a is True or b is True:
            return True
        if a is None or b is None:
            return None
        return False
    if a is None or b is None:
        return None
    if op in ("==", "!=", "<", "<=", ">", ">="):
        if isinstance(a, float) or isinstance(b, float):
            a, b = float(a), float(b)      # int vs float compares as float64 (as SQL engines do)
        return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    if pat.is_floating(t):
        a, b = float(a), float(b)
        with np.errstate(all="ignore"):
            fa, fb = np.float64(a), np.float64(b)
            if op == "+": return float(fa + fb)
            if op == "-": return float(fa - fb)
            if op == "*": return float(fa * fb)
            if op == "/": return float(fa / fb)
            if op == "**": return _ieee_pow(a, b)
            if op == "//": return float(np.floor_divide(fa, fb))
            if op == "%": return float(np.mod(fa, fb))
    a, b = int(a), int(b)
    if op == "+": return _wrap64(a + b)
    if op == "-": return _wrap64(a - b)
    if op == "*": return _wrap64(a * b)
    if b == 0:
        return None
    if op == "//": return _wrap64(a // b)
    if op == "%": return _wrap64(a % b)
    raise AssertionError(op)


def first_failed_check(checks: List[Expr], batch: pa.RecordBatch) -> Optional[Tuple[int, int]]:
    """Reference for a fused program's checks: (check index, row) of the first row, in row
    order, where a check is true (the first such check of that row), or None."""
    values = [_py(evaluate(c, batch)) for c in checks]
    for row in range(batch.num_rows):
        for k, v in enumerate(values):
            if v[row] is True:
                return k, row
    return None


def fused(outputs: List[Tuple[str, Expr]], predicate: Optional[Expr], batch: pa.RecordBatch) -> pa.Table:
    """Reference for a fused program: evaluate every output, then keep rows where predicate is true."""
    cols = {name: evaluate(e, batch) for name, e in outputs}
    table = pa.table(cols) if cols else pa.table({"__n": pa.nulls(batch.num_rows)}).drop(["__n"])
    if predicate is not None:
        keep = evaluate(predicate, batch).fill_null(False)
        table = table.filter(keep)
    return table


def group_aggregate(keys: List[tuple], values: Dict[str, List], aggs: List[Tuple[str, str, Optional[str]]]):
    """Reference keyed aggregation over Python rows.

    ``keys`` is one tuple per row; ``values`` maps column -> list of values (None = null);
    ``aggs`` is (output name, kind, column).  Returns {key tuple: {output: value}} in
    first-seen order with SQL null semantics and NaN ordered above every number.
    """
    groups: Dict[tuple, List[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    out = {}
    for k, rows in groups.items():
        res = {}
        for name, kind, column in aggs:
            if kind == "count":
                res[name] = len(rows) if column is None else sum(values[column][i] is not None for i in rows)
                continue
            vs = [values[column][i] for i in rows if values[column][i] is not None]
            if not vs:
                res[name] = None
            elif kind == "sum":
                res[name] = math.fsum(vs) if isinstance(vs[0], float) else _wrap64(sum(vs))
            elif kind == "mean":
                res[name] = math.fsum(vs) / len(vs)
            elif kind == "min":
                nums = [v for v in vs if v == v]
                res[name] = min(nums) if nums else float("nan")
            elif kind == "max":
                res[name] = float("nan") if any(v != v for v in vs) else max(vs)
        out[k] = res
    return out


_M64 = 2**64 - 1


def _mix64(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _M64
    h ^= h >> 33
    return h


def _combine64(h: int, v: int) -> int:
    return _mix64(h ^ ((v + 0x9E3779B97F4A7C15 + ((h << 6) & _M64) + (h >> 2)) & _M64))


def key_hash(rows: List[tuple]) -> List[int]:
    """Reference for the exchange hash: each row a tuple of int / str / None key values."""
    out = []
    for row in rows:
        h = 0
        for v in row:
            if v is None:
                x = 0x5BD1E9955BD1E995
            elif isinstance(v, str):
                x = 0xCBF29CE484222325
                for b in v.encode():
                    x = ((x ^ b) * 0x100000001B3) & _M64
            else:
                x = _mix64(int(v) & _M64)
            h = _combine64(h, x)
        out.append(h)
    return out


def watermark_splits(ts: np.ndarray, factor: int, bound: int, max_seen: int, emitted: int,
                     grid=None):
    """Reference for :func:`heliosdb.kernels.window.watermark_splits` (Python integers);
    ``grid``: ``(size, slide, lateness)`` triples, None for every value a threshold."""
    cuts, marks = [], []
    lo, hi = -INT64_MAX, INT64_MAX

    def bucket(w: int, off: int, step: int) -> Optional[int]:
        return None if w < -INT64_MAX - 1 + off else (w - off) // step

    def crosses(a: int, b: int) -> bool:       # a threshold off + k * step in (a, b]
        return grid is None or any(
            bucket(a, off, step) != bucket(b, off, step)
            for size, slide, late in grid for off, step in ((size, slide), (size + late, slide)))

    for i, t in enumerate(ts.tolist()):
        t = min(max(t * factor, lo), hi)
        if max_seen > -INT64_MAX - 1:
            implied = max_seen - bound
            if t < implied and implied > emitted and crosses(emitted, implied):
                cuts.append(i)
                marks.append(implied)
                emitted = implied
        max_seen = max(max_seen, t)
    return cuts, marks, max_seen


def split_low(seen: List[int], live: List[bool], bound: int) -> int:
    """Reference for :func:`heliosdb.kernels.window.split_low`."""
    ws = [s - bound if s != -INT64_MAX - 1 else -INT64_MAX - 1 for s, a in zip(seen, live) if a]
    return min(ws) if ws else INT64_MAX


def split_watermark_splits(ts: np.ndarray, split: np.ndarray, factor: int, bound: int,
                           seen: List[int], live: List[bool], emitted: int, grid=None,
                           left: Optional[List[int]] = None):
    """Reference for :func:`heliosdb.kernels.window.split_watermark_splits` (Python integers;
    ``seen``/``live`` are lists, updated in place)."""
    lo, hi = -INT64_MAX, INT64_MAX
    i64_min = -INT64_MAX - 1

    def bucket(w: int, off: int, step: int) -> Optional[int]:
        return None if w < i64_min + off else (w - off) // step

    def crosses(a: int, b: int) -> bool:
        return grid is None or any(
            bucket(a, off, step) != bucket(b, off, step)
            for size, slide, late in grid for off, step in ((size, slide), (size + late, slide)))

    cuts, marks = [], []
    for i, (t, s) in enumerate(zip(ts.tolist(), split.tolist())):
        t = min(max(t * factor, lo), hi)
        w = split_low(seen, live, bound)
        if w != INT64_MAX and t < w and w > emitted and crosses(emitted, w):
            cuts.append(i)
            marks.append(w)
            emitted = w
        live[s] = True
        seen[s] = max(seen[s], t)
        if left is not None and left[s] > 0:
            left[s] -= 1
            live[s] = left[s] != 0
    return cuts, marks, split_low(seen, live, bound)
