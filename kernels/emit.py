"""Tree -> the Python source of ONE fused Numba kernel.

:func:`emit_kernel` generates a single loop that reads each input row once, runs the checks,
evaluates the predicate and every computed output, and writes the kept rows compactly
(branch-free: ``j += 1 if keep else 0``).  Every node becomes one or two assignments, its
value ``tN`` and, where it may be null, its validity ``mN``; a node shared in the tree is
computed once.  Null handling is specialised for the batch: a column without nulls has
validity ``True``, and only arrays that hold nulls come with a validity array ``vK``.

Semantics are those of ``kernels.ir``, written so Numba cannot change them: int64 ``+ - *``
wrap through uint64 (signed overflow is undefined behaviour in LLVM), ``//`` and ``%`` by zero
give null and by -1 never trap, float-to-int casts test the range first.

Examples
--------
W1's stateless steps (``value > 0.2``, ``v2 = value * 2.0``, keep ``ts`` and ``key``):

>>> from heliosdb.kernels.ir import BinOp, Col, Lit
>>> schema = pa.schema([("ts", pa.int64()), ("key", pa.int64()), ("value", pa.float64())])
>>> code = emit_kernel(schema, {}, BinOp(">", Col("value"), Lit(0.2)),
...                    [("ts", Col("ts")), ("key", Col("key")),
...                     ("v2", BinOp("*", Col("value"), Lit(2.0)))], [])
>>> print(code.source)
import numpy as np
from heliosdb.kernels._jit import jit
<BLANKLINE>
<BLANKLINE>
@jit
def kernel(c0, c1, c2, n, o0, o1, o2):
    j = 0
    for i in range(n):
        t1 = c0[i] > np.float64(0.2)
        t2 = np.float64(c0[i]) * np.float64(np.float64(2.0))
        keep = t1
        o0[j] = c1[i]
        o1[j] = c2[i]
        o2[j] = t2
        j += 1 if keep else 0
    return j
<BLANKLINE>
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ..errors import PlanError
from .arrow_eval import kernel_type, needs_arrow
from .ir import BinOp, Cast, Col, Expr, Func, IfElse, IsNull, Lit, Not, Types
from .kernel_cache import source_digest

_PYOPS = ("int_truediv", "ipow", "add_overflows", "sub_overflows", "mul_overflows",
          "ipow_overflows", "cmp_int_float")
# Python's math.degrees / math.radians multiply by these constants (CPython's radToDeg, degToRad).
_FLOAT_CONST_MUL = {"degrees": 180.0 / math.pi, "radians": math.pi / 180.0}
_FUNC_CALLS = {
    **{n: f"math.{n}" for n in ("sqrt", "exp", "expm1", "log", "log2", "log10", "log1p", "sin",
                                "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh",
                                "asinh", "acosh", "atanh", "erf", "erfc", "fabs", "atan2",
                                "copysign", "isnan", "isinf", "isfinite")},
    **{n: f"np.{n}" for n in ("floor", "ceil", "trunc", "rint", "fmod")},
}


@dataclass
class KernelInput:
    """One array the kernel reads: a column or a pre-evaluated (pyarrow) sub-expression, and
    whether a validity array comes with it."""

    source: object            # column name (str) or an Expr evaluated by arrow_eval
    dtype: pa.DataType
    nullable: bool = False


@dataclass
class KernelSource:
    """A generated kernel and how to call it.

    The kernel is ``kernel(c0[, v0], c1[, v1], ..., n, o0[, ov0], ...[, sel][, err])``: an
    array per input (with its validity if nullable), the row count, then an array per computed
    output (with its validity if it may be null), the kept rows' indices if needed and the
    failed check's (number, row).  It returns the number of kept rows, or -1 if a check failed.
    """

    source: str
    inputs: List[KernelInput]
    computed: List[Tuple[str, pa.DataType, bool]]   # kernel outputs: name, type, nullable
    compacted: List[str]         # numeric pass-through columns compacted in the kernel
    taken: List[str]             # other pass-through columns, taken by index
    arrow_outputs: List[str]     # computed columns of types a kernel cannot write (strings)
    need_sel: bool               # the kernel writes the kept rows' indices
    check_ids: List[int]         # the caller's numbers of the checks the kernel tests
    has_loop: bool               # False: nothing to compute (the batch passes as it is)


def _lit_code(v) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, int):
        return f"np.int64({v})"
    if v != v:
        return "np.nan"
    if v in (float("inf"), float("-inf")):
        return "np.inf" if v > 0 else "(-np.inf)"
    return f"np.float64({v!r})"


def _np_name(t: pa.DataType) -> str:
    if pat.is_boolean(t):
        return "np.bool_"
    if pat.is_timestamp(t) or pat.is_duration(t) or pat.is_date64(t):
        return "np.int64"
    return "np." + t.to_pandas_dtype().__name__


def _and(a: str, b: str) -> str:
    """The code of ``a and b`` for never-null boolean codes, simplified for the constants."""
    if a == "True" or b == "False":
        return b
    if b == "True" or a == "False":
        return a
    return f"({a}) and ({b})"


def _or(a: str, b: str) -> str:
    """The code of ``a or b`` for never-null boolean codes, simplified for the constants."""
    if a == "True" or b == "False":
        return a
    if b == "True" or a == "False":
        return b
    return f"({a}) or ({b})"


class Emitter:
    """The statements of one kernel's loop body, built node by node."""

    def __init__(self, schema: pa.Schema, nullable: Mapping[str, bool]):
        self.schema = schema
        self.nullable = nullable
        self.types = Types(schema)
        self.inputs: List[KernelInput] = []
        self._input_ids: Dict[object, int] = {}
        self.lines: List[str] = []
        self._n = 0
        self._memo: Dict[int, Tuple[str, str]] = {}
        self.uses_math = False
        self.uses_pyops = False

    def tmp(self) -> str:
        self._n += 1
        return f"t{self._n}"

    def input(self, source, dtype: pa.DataType) -> Tuple[str, str]:
        """(value code, validity code) of an input array: a column name, or a node that
        pyarrow evaluates (always given a validity array)."""
        key = source if isinstance(source, str) else id(source)
        k = self._input_ids.get(key)
        if k is None:
            k = self._input_ids[key] = len(self.inputs)
            nullable = bool(self.nullable.get(source, False)) if isinstance(source, str) else True
            self.inputs.append(KernelInput(source, dtype, nullable))
        return f"c{k}[i]", f"v{k}[i]" if self.inputs[k].nullable else "True"

    def emit(self, e: Expr) -> Tuple[str, str]:
        """Statements for ``e``; returns (value code, validity code: 'True' if never null)."""
        if id(e) in self._memo:
            return self._memo[id(e)]
        r = self._emit(e)
        self._memo[id(e)] = r
        return r

    def _assign(self, value: str, valid: str) -> Tuple[str, str]:
        v = self.tmp()
        self.lines.append(f"{v} = {value}")
        if valid in ("True", "False"):
            return v, valid
        m = "m" + v[1:]
        self.lines.append(f"{m} = {valid}")
        return v, m

    def _emit(self, e: Expr) -> Tuple[str, str]:
        if needs_arrow(e, self.types):
            t = self.types(e)
            if not kernel_type(t):
                raise PlanError(f"internal: {e!r} of type {t} cannot enter a kernel")
            return self.input(e, t)
        if isinstance(e, Col):
            return self.input(e.name, self.types(e))
        if isinstance(e, Lit):
            if e.value is None:
                return "np.int64(0)", "False"
            return _lit_code(e.value), "True"
        if isinstance(e, Not):
            a, ma = self.emit(e.operand)
            return self._assign(f"not {a}", ma)
        if isinstance(e, IsNull):
            _, ma = self.emit(e.operand)
            return self._assign(ma if e.negate else f"not ({ma})", "True")
        if isinstance(e, Cast):
            return self._emit_cast(e)
        if isinstance(e, IfElse):
            return self._emit_if_else(e)
        if isinstance(e, Func):
            return self._emit_func(e)
        assert isinstance(e, BinOp), e
        return self._emit_binop(e)

    def _emit_if_else(self, e: IfElse) -> Tuple[str, str]:
        c, mc = self.emit(e.cond)
        a, ma = self.emit(e.then)
        b, mb = self.emit(e.otherwise)
        out_t = self.types(e)
        ct = self.tmp()
        self.lines.append(f"{ct} = {c if mc == 'True' else f'({c}) and ({mc})'}")
        if pat.is_boolean(out_t):
            a = "False" if ma == "False" else a
            b = "False" if mb == "False" else b
            value = f"{a} if {ct} else {b}"
        else:
            conv = "np.float64" if pat.is_floating(out_t) else "np.int64"
            value = f"{conv}({a}) if {ct} else {conv}({b})"
        valid = "True" if ma == mb == "True" else f"({ma}) if {ct} else ({mb})"
        return self._assign(value, valid)

    def _emit_func(self, e: Func) -> Tuple[str, str]:
        self.uses_math = True
        codes = [self.emit(a) for a in e.args]
        valid = "True"
        for _, m in codes:
            valid = _and(valid, m)
        args = [v for v, _ in codes]
        name = e.name
        if name in _PYOPS:
            self.uses_pyops = True
            conv = ["np.int64"] * 2 if name != "cmp_int_float" else ["np.int64", "np.float64"]
            call = ", ".join(f"{c}({a})" for c, a in zip(conv, args))
            return self._assign(f"pyops.{name}({call})", valid)
        if name in ("abs", "neg"):
            if pat.is_floating(self.types(e)):
                x = f"np.float64({args[0]})"
                return self._assign(f"math.fabs({x})" if name == "abs" else f"-({x})", valid)
            x = self.tmp()
            self.lines.append(f"{x} = np.int64({args[0]})")
            negated = f"np.int64(np.uint64(0) - np.uint64({x}))"      # wraps for INT64_MIN
            return self._assign(f"({x} if {x} >= 0 else {negated})" if name == "abs" else negated, valid)
        fargs = [f"np.float64({a})" for a in args]
        if name in _FLOAT_CONST_MUL:
            return self._assign(f"{fargs[0]} * {_FLOAT_CONST_MUL[name]!r}", valid)
        if name == "pow":
            return self._assign(f"{fargs[0]} ** {fargs[1]}", valid)
        return self._assign(f"{_FUNC_CALLS[name]}({', '.join(fargs)})", valid)

    def _emit_cast(self, e: Cast) -> Tuple[str, str]:
        src = self.types(e.operand)
        a, ma = self.emit(e.operand)
        to = e.to
        if pat.is_boolean(to):
            return self._assign(f"{a} != 0", ma)
        if pat.is_floating(to):
            return self._assign(f"{_np_name(to)}({a})", ma)
        # to an integer type: truncate toward zero; NaN, inf and out-of-range values are null
        if pat.is_floating(src):
            info = np.iinfo(to.to_pandas_dtype())
            if info.bits == 64:
                fits = f"{a} >= {-(2.0 ** 63)!r} and {a} < {2.0 ** 63!r}"
            else:
                fits = f"{a} > {float(info.min) - 1.0!r} and {a} < {float(info.max) + 1.0!r}"
            ok = self.tmp()
            self.lines.append(f"{ok} = {fits}")
            v, _ = self._assign(f"{a} if {ok} else 0.0", "True")
            return self._assign(f"{_np_name(to)}(np.int64({v}))", _and(ma, ok))
        return self._assign(f"{_np_name(to)}({a})", ma)

    def _emit_binop(self, e: BinOp) -> Tuple[str, str]:
        op = e.op
        a, ma = self.emit(e.left)
        b, mb = self.emit(e.right)
        both = _and(ma, mb)
        if op == "&":
            # Kleene: false if either side is a known false; true if both known true; else null
            f = _or(_and(ma, f"not {a}"), _and(mb, f"not {b}"))
            return self._assign(f"not ({f})", _or(both, f))
        if op == "|":
            t = _or(_and(ma, a), _and(mb, b))
            return self._assign(t, _or(both, t))
        if op in ("==", "!=", "<", "<=", ">", ">="):
            return self._assign(f"{a} {op} {b}", both)
        out_t = self.types(e)
        conv = "np.float64" if pat.is_floating(out_t) else "np.int64"
        a, b = f"{conv}({a})", f"{conv}({b})"
        if op in ("+", "-", "*"):
            if conv == "np.int64":
                # Wrap on overflow, visibly: Numba's signed overflow is undefined behaviour, and
                # the optimiser would fold e.g. (i + big) > i to True.
                return self._assign(f"np.int64(np.uint64({a}) {op} np.uint64({b}))", both)
            return self._assign(f"{a} {op} {b}", both)
        if op == "/":
            return self._assign(f"{a} / {b}", both)
        if op == "**":
            return self._assign(f"{a} ** {b}", both)
        if conv == "np.int64":  # // and % on integers: a zero divisor gives null
            d = self.tmp()
            self.lines.append(f"{d} = {b}")
            if op == "//":   # x // -1 is -x, wrapping for INT64_MIN (idiv would trap)
                value = f"(np.int64(np.uint64(0) - np.uint64({a})) if {d} == -1 else {a} // {d})"
            else:
                value = f"(np.int64(0) if {d} == -1 else {a} % {d})"
            return self._assign(f"{value} if {d} != 0 else np.int64(0)", _and(both, f"{d} != 0"))
        return self._assign(f"{a} {op} {b}", both)


def emit_kernel(schema: pa.Schema, nullable: Mapping[str, bool], predicate: Optional[Expr],
                outputs: List[Tuple[str, Expr]], checks: List[Tuple[int, Expr]]) -> KernelSource:
    """The kernel of a (folded) program over ``schema``: keep the rows where ``predicate`` is
    true, compute ``outputs``, and stop on the first row where a check's condition is true
    (``checks``: the caller's number of each check and its condition).  ``nullable`` tells
    which columns of the batch hold nulls (a column not in it holds none)."""
    gen = Emitter(schema, nullable)
    computed: List[Tuple[str, pa.DataType, bool]] = []
    compacted: List[str] = []
    taken: List[str] = []
    arrow_outputs: List[str] = []
    out_lines: List[Tuple[str, str]] = []   # (value code, valid code)
    has_pred = predicate is not None

    pred_code = None
    if has_pred:
        pv, pm = gen.emit(predicate)
        pred_code = pv if pm == "True" else f"({pv}) and ({pm})"
    for name, e in outputs:
        t = gen.types(e)
        if isinstance(e, Col) and not (has_pred and kernel_type(t)):
            taken.append(name)
            continue
        if not kernel_type(t):
            arrow_outputs.append(name)
            continue
        if isinstance(e, Col):
            compacted.append(name)
        v, m = gen.emit(e)
        out_lines.append((v, m))
        computed.append((name, t, m != "True"))
    check_codes = []
    for _, cond in checks:
        cv, cm = gen.emit(cond)
        check_codes.append(cv if cm == "True" else f"({cv}) and ({cm})")
    need_sel = has_pred and bool(taken or arrow_outputs)

    args = []
    for k, inp in enumerate(gen.inputs):
        args.append(f"c{k}")
        if inp.nullable:
            args.append(f"v{k}")
    # Outputs are allocated by the caller from Arrow's memory pool, so the kernel allocates
    # nothing and Arrow arrays wrap the results without a copy.
    outs = []
    for o, (_, _, nb) in enumerate(computed):
        outs.append(f"o{o}")
        if nb:
            outs.append(f"ov{o}")
    if need_sel:
        outs.append("sel")
    if check_codes:
        outs.append("err")
    header = ["import numpy as np"]
    if gen.uses_math:
        header.append("import math")
    if gen.uses_pyops:
        from . import pyops     # only kernels that call it import it (and name its version)

        header.append(f"from heliosdb.kernels import pyops  # pyops {source_digest(pyops)}")
    body = header + ["from heliosdb.kernels._jit import jit", "", "", "@jit",
                     f"def kernel({', '.join(args + ['n'] + outs)}):"]
    body += ["    j = 0", "    for i in range(n):"]
    body += ["        " + x for x in gen.lines]
    for k, code in enumerate(check_codes):
        # A failed check stops the kernel: err = (which check, which row), and -1 is returned.
        body += [f"        if {code}:", f"            err[0] = {k}", "            err[1] = i",
                 "            return -1"]
    if has_pred:
        body.append(f"        keep = {pred_code}")
    idx = "j" if has_pred else "i"
    for o, (v, m) in enumerate(out_lines):
        body.append(f"        o{o}[{idx}] = {v}")
        if computed[o][2]:
            body.append(f"        ov{o}[{idx}] = {m}")
    if has_pred:
        if need_sel:
            body.append("        sel[j] = i")
        body.append("        j += 1 if keep else 0")
    else:
        body.append("        j += 1")
    body.append("    return j")
    return KernelSource(
        "\n".join(body) + "\n", gen.inputs, computed, compacted, taken, arrow_outputs, need_sel,
        [k for k, _ in checks], bool(computed or has_pred or check_codes))
