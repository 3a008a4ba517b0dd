"""Expression trees -> the Python source of ONE fused Numba kernel, and its compile cache.

A chain of consecutive stateless operators (filter, with_columns, select) is folded into a
:class:`FusedProgram`: one predicate (the AND of every filter, rewritten over the chain's input
columns) and one list of outputs.  :func:`compile_program` generates a single loop that reads
each input row once, evaluates the predicate and every computed output, and writes the kept
rows compactly (branch-free).  Sub-expressions over strings, which Numba cannot read from
Arrow, are evaluated first with ``pyarrow.compute`` and enter the loop as boolean or numeric
input columns.

Generated modules are written to the cache directory under a name derived from their source,
so Numba's on-disk cache finds them again in a new process.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import math
import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from ..errors import DataError, PlanError, SchemaError
from .ir import (
    BinOp, Cast, Col, Expr, Func, IfElse, IsNull, Lit, Not, is_numeric, is_stringlike, strip_alias,
)
from ._jit import cache_dir  # (and sets NUMBA_CACHE_DIR before numba is imported)

# -------------------------------------------------------------------------------------------
# Folding a chain of operators into one program
# -------------------------------------------------------------------------------------------


def substitute(e: Expr, mapping: Dict[str, Expr], memo: Optional[Dict[int, Expr]] = None) -> Expr:
    """Rewrite ``e`` so that every ``col(name)`` reads ``mapping[name]`` instead.

    A sub-expression shared within ``e`` (or across calls given the same ``memo``) stays shared
    in the result, so the kernel computes it once.
    """
    memo = {} if memo is None else memo
    key = id(e)
    if key in memo:
        return memo[key]
    out = _substitute(strip_alias(e), mapping, memo)
    memo[key] = out
    return out


def _substitute(e: Expr, mapping: Dict[str, Expr], memo: Dict[int, Expr]) -> Expr:
    if isinstance(e, Col):
        return mapping.get(e.name, e)
    if isinstance(e, Lit):
        return e
    if isinstance(e, BinOp):
        return BinOp(e.op, substitute(e.left, mapping, memo), substitute(e.right, mapping, memo))
    if isinstance(e, Not):
        return Not(substitute(e.operand, mapping, memo))
    if isinstance(e, IsNull):
        return IsNull(substitute(e.operand, mapping, memo), e.negate)
    if isinstance(e, Cast):
        return Cast(substitute(e.operand, mapping, memo), e.to)
    if isinstance(e, IfElse):
        return IfElse(substitute(e.cond, mapping, memo), substitute(e.then, mapping, memo),
                      substitute(e.otherwise, mapping, memo))
    if isinstance(e, Func):
        return Func(e.name, tuple(substitute(a, mapping, memo) for a in e.args))
    raise PlanError(f"cannot fuse expression {e!r}")


@dataclass
class Check:
    """A condition that must never hold for a row that reaches ``step``: where ``cond`` is true,
    the kernel stops and the batch fails on that row.  ``info`` is the caller's description of
    the error (``heliosdb.pyfunc`` uses it to raise what Python would have raised)."""

    cond: Expr
    info: object
    step: str


@dataclass
class FusedProgram:
    """What a chain of stateless operators computes, over the chain's input schema."""

    input_schema: pa.Schema
    outputs: List[Tuple[str, Expr]]
    predicate: Optional[Expr] = None
    steps: List[str] = field(default_factory=list)
    checks: List[Check] = field(default_factory=list)

    @classmethod
    def identity(cls, schema: pa.Schema) -> "FusedProgram":
        return cls(schema, [(n, Col(n)) for n in schema.names])

    def _mapping(self) -> Dict[str, Expr]:
        return dict(self.outputs)

    def output_schema(self) -> pa.Schema:
        fields = []
        for name, e in self.outputs:
            if isinstance(e, Col):
                fields.append(self.input_schema.field(e.name).with_name(name))
            else:
                fields.append(pa.field(name, e.dtype(self.input_schema)))
        return pa.schema(fields)

    def add_filter(self, pred: Expr, step: str) -> None:
        schema = self.output_schema()
        t = pred.dtype(schema, step)
        if not (pat.is_boolean(t) or pat.is_null(t)):
            raise SchemaError(f"step {step!r}: filter needs a boolean expression, {pred!r} is {t}")
        p = substitute(pred, self._mapping())
        self.predicate = p if self.predicate is None else BinOp("&", self.predicate, p)
        self.steps.append(step)

    def add_columns(self, exprs: Dict[str, Expr], step: str) -> None:
        schema = self.output_schema()
        mapping = self._mapping()
        new = dict(self.outputs)
        for name, e in exprs.items():
            e.dtype(schema, step)
            new[name] = substitute(e, mapping)
        self.outputs = list(new.items())
        self.steps.append(step)

    def select(self, items: List[Tuple[str, Expr]], step: str) -> None:
        schema = self.output_schema()
        mapping = self._mapping()
        seen = set()
        out = []
        for name, e in items:
            if name in seen:
                raise SchemaError(f"step {step!r}: select() names column {name!r} twice")
            seen.add(name)
            e.dtype(schema, step)
            out.append((name, substitute(e, mapping)))
        self.outputs = out
        self.steps.append(step)

    def add_function(self, checks: List[Tuple[Expr, object]], keep: Optional[Expr],
                     outputs: Optional[List[Tuple[str, Expr]]], step: str) -> None:
        """One step compiled from a Python function: its checks, then the rows it keeps, then
        (if ``outputs`` is not None) its new record.  Sub-expressions shared between them stay
        shared, so the kernel computes each once."""
        schema = self.output_schema()
        mapping = self._mapping()
        memo: Dict[int, Expr] = {}
        before = self.predicate
        for cond, info in checks:
            t = cond.dtype(schema, step)
            if not (pat.is_boolean(t) or pat.is_null(t)):
                raise SchemaError(f"step {step!r}: a check must be boolean, {cond!r} is {t}")
            c = substitute(cond, mapping, memo)
            self.checks.append(Check(c if before is None else BinOp("&", before, c), info, step))
        if keep is not None:
            t = keep.dtype(schema, step)
            if not (pat.is_boolean(t) or pat.is_null(t)):
                raise SchemaError(f"step {step!r}: a filter must be boolean, {keep!r} is {t}")
            p = substitute(keep, mapping, memo)
            self.predicate = p if before is None else BinOp("&", before, p)
        if outputs is not None:
            new = []
            for name, e in outputs:
                e.dtype(schema, step)
                new.append((name, substitute(e, mapping, memo)))
            self.outputs = new
        self.steps.append(step)

    def prune(self, needed: Optional[set]) -> None:
        """Drop outputs nothing downstream reads (``needed`` None keeps all)."""
        if needed is not None:
            self.outputs = [(n, e) for n, e in self.outputs if n in needed]

    def is_identity(self) -> bool:
        return self.predicate is None and not self.checks and all(
            isinstance(e, Col) and e.name == n for n, e in self.outputs
        ) and [n for n, _ in self.outputs] == self.input_schema.names


# -------------------------------------------------------------------------------------------
# Arrow-side evaluation of string sub-expressions
# -------------------------------------------------------------------------------------------
_ARROW_CMP = {"==": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
              ">": pc.greater, ">=": pc.greater_equal}


def needs_arrow(e: Expr, schema: pa.Schema) -> bool:
    """True if ``e`` itself (not just a child) must be evaluated by pyarrow (strings)."""
    if isinstance(e, BinOp) and e.op in _ARROW_CMP:
        return is_stringlike(e.left.dtype(schema)) or is_stringlike(e.right.dtype(schema))
    if isinstance(e, Cast):
        return is_stringlike(e.to) or is_stringlike(e.operand.dtype(schema))
    if isinstance(e, IsNull):
        return not _kernel_type(e.operand.dtype(schema))
    return False


def arrow_eval(e: Expr, batch: pa.RecordBatch) -> pa.Array:
    """Evaluate a string-valued or string-reading expression with pyarrow.compute."""
    if isinstance(e, Col):
        return batch.column(batch.schema.get_field_index(e.name))
    if isinstance(e, Lit):
        return pa.scalar(e.value, type=e.dtype(batch.schema))     # pyarrow.compute broadcasts it
    if isinstance(e, BinOp) and e.op in _ARROW_CMP:
        return _ARROW_CMP[e.op](arrow_eval(e.left, batch), arrow_eval(e.right, batch))
    if isinstance(e, IsNull):
        v = arrow_eval(e.operand, batch)
        return pc.is_valid(v) if e.negate else pc.is_null(v)
    if isinstance(e, Cast):
        return pc.cast(arrow_eval(e.operand, batch), e.to, safe=False)
    raise PlanError(
        f"{e!r} mixes string and arithmetic operations in a way the engine does not compile; "
        "compute the numeric part in its own with_columns() step"
    )


# -------------------------------------------------------------------------------------------
# Code generation
# -------------------------------------------------------------------------------------------


def _kernel_type(t: pa.DataType) -> bool:
    return is_numeric(t) or pat.is_timestamp(t) or pat.is_duration(t) or pat.is_date64(t)


def _np_name(t: pa.DataType) -> str:
    if pat.is_boolean(t):
        return "np.bool_"
    if pat.is_timestamp(t) or pat.is_duration(t) or pat.is_date64(t):
        return "np.int64"
    return "np." + t.to_pandas_dtype().__name__


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


@dataclass
class _Input:
    """One array the kernel reads: a column or a pre-evaluated (pyarrow) sub-expression."""

    source: object            # column name (str) or an Expr evaluated by arrow_eval
    dtype: pa.DataType
    nullable: bool = False


class _Gen:
    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self.inputs: List[_Input] = []
        self._input_ids: Dict[object, int] = {}
        self.lines: List[str] = []
        self._n = 0
        self._memo: Dict[int, Tuple[str, str]] = {}
        self.uses_math = False
        self.uses_pyops = False

    def tmp(self) -> str:
        self._n += 1
        return f"t{self._n}"

    def input(self, source, dtype) -> int:
        key = source if isinstance(source, str) else id(source)
        if key not in self._input_ids:
            self._input_ids[key] = len(self.inputs)
            self.inputs.append(_Input(source, dtype))
        return self._input_ids[key]

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
        schema = self.schema
        if needs_arrow(e, schema):
            t = e.dtype(schema)
            if not _kernel_type(t):
                raise PlanError(f"internal: {e!r} of type {t} cannot enter a kernel")
            k = self.input(e, t)
            return f"c{k}[i]", f"__valid{k}__"
        if isinstance(e, Col):
            t = e.dtype(schema)
            k = self.input(e.name, t)
            return f"c{k}[i]", f"__valid{k}__"
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
        assert isinstance(e, BinOp)
        return self._emit_binop(e)

    def _emit_if_else(self, e: IfElse) -> Tuple[str, str]:
        c, mc = self.emit(e.cond)
        a, ma = self.emit(e.then)
        b, mb = self.emit(e.otherwise)
        out_t = e.dtype(self.schema)
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
            valid = _and_valid(valid, m)
        args = [v for v, _ in codes]
        name = e.name
        if name in _PYOPS:
            self.uses_pyops = True
            conv = ["np.int64"] * 2 if name != "cmp_int_float" else ["np.int64", "np.float64"]
            call = ", ".join(f"{c}({a})" for c, a in zip(conv, args))
            return self._assign(f"pyops.{name}({call})", valid)
        if name in ("abs", "neg"):
            if pat.is_floating(e.dtype(self.schema)):
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
        src = e.operand.dtype(self.schema)
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
            return self._assign(f"{_np_name(to)}(np.int64({v}))", _and_valid(ma, ok))
        return self._assign(f"{_np_name(to)}({a})", ma)

    def _emit_binop(self, e: BinOp) -> Tuple[str, str]:
        op = e.op
        a, ma = self.emit(e.left)
        b, mb = self.emit(e.right)
        both = _and_valid(ma, mb)
        if op == "&":
            # Kleene: false if either side is a known false; true if both known true; else null
            f = f"(({ma}) and not {a}) or (({mb}) and not {b})"
            return self._assign(f"not ({f})", _or_valid(both, f"({f})"))
        if op == "|":
            t = f"(({ma}) and {a}) or (({mb}) and {b})"
            return self._assign(f"{t}", _or_valid(both, f"({t})"))
        if op in ("==", "!=", "<", "<=", ">", ">="):
            return self._assign(f"{a} {op} {b}", both)
        out_t = e.dtype(self.schema)
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
            return self._assign(f"{value} if {d} != 0 else np.int64(0)", _and_valid(both, f"{d} != 0"))
        return self._assign(f"{a} {op} {b}", both)


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


def _pyops_version() -> str:
    """A digest of kernels/pyops.py: generated kernels that call it name it in their source, so
    Numba's cache (which does not track called functions) never serves a kernel built against an
    older version."""
    global _PYOPS_VERSION
    if _PYOPS_VERSION is None:
        from . import pyops

        with open(pyops.__file__, "rb") as f:
            _PYOPS_VERSION = hashlib.sha256(f.read()).hexdigest()[:16]
    return _PYOPS_VERSION


_PYOPS_VERSION: Optional[str] = None


def _and_valid(a: str, b: str) -> str:
    if a == "True":
        return b
    if b == "True":
        return a
    if "False" in (a, b):
        return "False"
    return f"({a}) and ({b})"


def _or_valid(a: str, b: str) -> str:
    if "True" in (a, b):
        return "True"
    return f"({a}) or ({b})"


@dataclass
class CompiledProgram:
    """A FusedProgram ready to run on batches of its input schema."""

    program: FusedProgram
    kernel: Optional[Callable]
    source: str
    inputs: List[_Input]
    computed: List[Tuple[str, pa.DataType, bool]]   # kernel outputs: name, type, nullable
    compacted: List[str]                            # numeric pass-through columns compacted in-kernel
    taken: List[str]                                # other pass-through columns, taken by index
    arrow_outputs: List[str]                        # string-typed computed columns (pyarrow)
    output_schema: pa.Schema
    need_sel: bool = False
    check_ids: List[int] = field(default_factory=list)   # program checks the kernel tests

    def __call__(self, batch: pa.RecordBatch, on_check: Optional[Callable] = None) -> pa.RecordBatch:
        return run_program(self, batch, on_check)


_MODULES: Dict[str, object] = {}
_LOCK = threading.Lock()


def _load_kernel(src: str) -> Callable:
    digest = hashlib.sha256(src.encode()).hexdigest()[:20]
    with _LOCK:
        if digest in _MODULES:
            return _MODULES[digest].kernel  # type: ignore[attr-defined]
        folder = cache_dir() / "kernels"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"fused_{digest}.py"
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(src)
            os.replace(tmp, path)
        name = f"heliosdb_fused_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        _MODULES[digest] = module
        return module.kernel  # type: ignore[attr-defined]


def compile_program(program: FusedProgram, nullable: Dict[str, bool]) -> CompiledProgram:
    """Generate (or fetch from the cache) the fused kernel of ``program``.

    ``nullable`` tells which input columns of the current batch hold nulls; the kernel is
    specialised for it (columns without nulls pay nothing for null handling).
    """
    schema = program.input_schema
    gen = _Gen(schema)
    computed: List[Tuple[str, pa.DataType, bool]] = []
    compacted: List[str] = []
    taken: List[str] = []
    arrow_outputs: List[str] = []
    out_lines: List[Tuple[str, str, str]] = []   # (name, value code, valid code)
    has_pred = program.predicate is not None

    pred_code = None
    if has_pred:
        pv, pm = gen.emit(program.predicate)
        pred_code = pv if pm == "True" else f"({pv}) and ({pm})"
    out_types: List[pa.DataType] = []
    for name, e in program.outputs:
        t = e.dtype(schema)
        if isinstance(e, Col):
            if has_pred and _kernel_type(t):
                compacted.append(name)
                k = gen.input(e.name, t)
                out_lines.append((name, f"c{k}[i]", f"__valid{k}__"))
                out_types.append(t)
            else:
                taken.append(name)
            continue
        if not _kernel_type(t):
            arrow_outputs.append(name)
            continue
        v, m = gen.emit(e)
        out_lines.append((name, v, m))
        out_types.append(t)
    check_codes = []
    for c in program.checks:
        cv, cm = gen.emit(c.cond)
        check_codes.append(cv if cm == "True" else f"({cv}) and ({cm})")

    # Resolve validity placeholders now that the inputs are known.
    for inp in gen.inputs:
        inp.nullable = bool(
            nullable.get(inp.source, False) if isinstance(inp.source, str) else True
        )

    def fix(code: str) -> str:
        for k, inp in enumerate(gen.inputs):
            code = code.replace(f"__valid{k}__", f"v{k}[i]" if inp.nullable else "True")
        return code

    lines = [fix(x) for x in gen.lines]
    pred_code = fix(pred_code) if pred_code else None
    check_codes = [fix(c) for c in check_codes]
    out_lines = [(n, fix(v), fix(m)) for n, v, m in out_lines]
    check_ids = list(range(len(check_codes)))
    if check_codes:
        # Most checks test for nulls; for columns without nulls they are constant False.
        # Fold them away here, so the kernel is the one the same expressions would give.
        lines, consts = _fold_constants(lines)
        pred_code = _fold_code(pred_code, consts) if pred_code else None
        out_lines = [(n, _fold_code(v, consts), _fold_code(m, consts)) for n, v, m in out_lines]
        folded = [(k, _fold_code(c, consts)) for k, c in enumerate(check_codes)]
        folded = [(k, c) for k, c in folded if _bool_constant(c) is not False]
        check_ids = [k for k, _ in folded]
        check_codes = [c for _, c in folded]
    for (n, v, m), t in zip(out_lines, out_types):
        computed.append((n, t, m != "True"))
    need_sel = has_pred and bool(taken or arrow_outputs)

    args = []
    for k, inp in enumerate(gen.inputs):
        args.append(f"c{k}")
        if inp.nullable:
            args.append(f"v{k}")
    # Outputs are allocated by the caller from Arrow's memory pool (see run_program), so the
    # kernel allocates nothing and Arrow arrays wrap the results without a copy.
    outs = []
    for o, (n, t, nb) in enumerate(computed):
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
        header.append(f"from heliosdb.kernels import pyops  # pyops {_pyops_version()}")
    body = header + ["from heliosdb.kernels._jit import jit", "", "", "@jit",
                     f"def kernel({', '.join(args + ['n'] + outs)}):"]
    body += ["    j = 0", "    for i in range(n):"]
    body += ["        " + x for x in lines]
    for k, code in enumerate(check_codes):
        # A failed check stops the kernel: err = (which check, which row), and -1 is returned.
        body += [f"        if {code}:", f"            err[0] = {k}", "            err[1] = i",
                 "            return -1"]
    if has_pred:
        body.append(f"        keep = {pred_code}")
    idx = "j" if has_pred else "i"
    for o, (n, v, m) in enumerate(out_lines):
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
    src = "\n".join(body) + "\n"

    kernel = _load_kernel(src) if (computed or has_pred or check_codes) else None
    return CompiledProgram(
        program, kernel, src, gen.inputs, computed, compacted, taken, arrow_outputs,
        program.output_schema(), need_sel, check_ids,
    )


_NAME = re.compile(r"\b[tm]\d+\b")
_ASSIGN = re.compile(r"^(\w+) = (.+)$")


def _substitute_names(code: str, consts: Dict[str, bool]) -> str:
    if not consts:
        return code
    return _NAME.sub(lambda m: str(consts[m.group(0)]) if m.group(0) in consts else m.group(0), code)


def _simplify(node: ast.AST) -> ast.AST:
    """Fold boolean constants through not/and/or/if-else (operands are never-null bools)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _simplify(node.operand)
        if isinstance(inner, ast.Constant) and isinstance(inner.value, bool):
            return ast.Constant(not inner.value)
        return ast.UnaryOp(ast.Not(), inner)
    if isinstance(node, ast.BoolOp):
        absorbing = isinstance(node.op, ast.Or)          # True absorbs `or`, False absorbs `and`
        kept = []
        for v in map(_simplify, node.values):
            if isinstance(v, ast.Constant) and isinstance(v.value, bool):
                if v.value is absorbing:
                    return ast.Constant(absorbing)
                continue                                  # the neutral element
            kept.append(v)
        if not kept:
            return ast.Constant(not absorbing)
        return kept[0] if len(kept) == 1 else ast.BoolOp(node.op, kept)
    if isinstance(node, ast.IfExp):
        test = _simplify(node.test)
        if isinstance(test, ast.Constant) and isinstance(test.value, bool):
            return _simplify(node.body if test.value else node.orelse)
        return ast.IfExp(test, _simplify(node.body), _simplify(node.orelse))
    return node


def _fold_code(code: str, consts: Dict[str, bool]) -> str:
    code = _substitute_names(code, consts)
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        return code
    return ast.unparse(_simplify(tree.body))


def _bool_constant(code: str) -> Optional[bool]:
    """``True`` / ``False`` if ``code`` is that constant, else None."""
    return {"True": True, "False": False}.get(code.strip())


def _fold_constants(lines: List[str]) -> Tuple[List[str], Dict[str, bool]]:
    """Drop ``tN = <boolean constant expression>`` lines, substituting their value later on."""
    consts: Dict[str, bool] = {}
    out = []
    for line in lines:
        m = _ASSIGN.match(line)
        if m is None:
            out.append(_substitute_names(line, consts))
            continue
        name, code = m.group(1), _fold_code(m.group(2), consts)
        value = _bool_constant(code)
        if value is not None and _NAME.fullmatch(name):
            consts[name] = value
            continue
        out.append(f"{name} = {code}")
    return out, consts


# -------------------------------------------------------------------------------------------
# Running a compiled program on a batch
# -------------------------------------------------------------------------------------------


def column_numpy(arr: pa.Array) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(values, validity or None) of an Arrow array as numpy, zero-copy where possible."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pat.is_timestamp(t) or pat.is_duration(t) or pat.is_date64(t):
        arr = arr.view(pa.int64())
    valid = None
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        if pat.is_boolean(arr.type):
            values = arr.fill_null(False).to_numpy(zero_copy_only=False)
        else:
            values = arr.fill_null(0).to_numpy(zero_copy_only=False)
    else:
        values = arr.to_numpy(zero_copy_only=False)
    return values, valid


def _np_dtype(t: pa.DataType) -> np.dtype:
    if pat.is_boolean(t):
        return np.dtype(np.bool_)
    if pat.is_timestamp(t) or pat.is_duration(t) or pat.is_date64(t):
        return np.dtype(np.int64)
    return np.dtype(t.to_pandas_dtype())


def pool_array(n: int, dtype: np.dtype) -> Tuple[np.ndarray, pa.Buffer]:
    """A writable numpy array over a buffer from Arrow's memory pool (no page faults per batch:
    the pool keeps freed memory, unlike large mallocs that glibc maps and unmaps)."""
    buf = pa.allocate_buffer(max(n, 1) * dtype.itemsize)
    return np.frombuffer(buf, dtype=dtype)[:n], buf


def numpy_column(values: np.ndarray, valid: Optional[np.ndarray], t: pa.DataType,
                 buf: Optional[pa.Buffer] = None) -> pa.Array:
    """An Arrow array of type ``t`` over ``values`` (zero-copy for fixed-width types)."""
    n = len(values)
    validity = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    if buf is not None and not pat.is_boolean(t):
        storage = pa.int64() if (pat.is_timestamp(t) or pat.is_duration(t) or pat.is_date64(t)) else t
        arr = pa.Array.from_buffers(storage, n, [validity, buf])
        return arr.view(t) if storage != t else arr
    mask = None if valid is None else ~valid
    if pat.is_timestamp(t) or pat.is_duration(t) or pat.is_date64(t):
        return pa.array(values, type=pa.int64(), mask=mask).view(t)
    return pa.array(values, type=t, mask=mask)


def _full(x, n: int) -> pa.Array:
    """``x`` as an array of ``n`` rows (a scalar from arrow_eval is broadcast)."""
    return pa.repeat(x, n) if isinstance(x, pa.Scalar) else x


def _input_array(inp: _Input, batch: pa.RecordBatch) -> pa.Array:
    if isinstance(inp.source, str):
        return batch.column(batch.schema.get_field_index(inp.source))
    return _full(arrow_eval(inp.source, batch), batch.num_rows)


def run_program(cp: CompiledProgram, batch: pa.RecordBatch,
                on_check: Optional[Callable] = None) -> pa.RecordBatch:
    """Run the kernel on ``batch``.  If one of the program's checks fails, ``on_check(check,
    row)`` is called (it should raise); without it a DataError names the step and the row."""
    n = batch.num_rows
    args = []
    for inp in cp.inputs:
        values, valid = column_numpy(_input_array(inp, batch))
        args.append(values)
        if inp.nullable:
            args.append(valid if valid is not None else np.ones(n, dtype=np.bool_))
    outs = []
    bufs = []
    for name, t, nb in cp.computed:
        arr, buf = pool_array(n, _np_dtype(t))
        outs.append(arr)
        bufs.append(buf)
        if nb:
            outs.append(np.empty(n, dtype=np.bool_))
    sel = np.empty(n, dtype=np.int64) if cp.need_sel else None
    if sel is not None:
        outs.append(sel)
    err = None
    if cp.check_ids:
        err = np.zeros(2, dtype=np.int64)
        outs.append(err)
    j = cp.kernel(*args, n, *outs) if cp.kernel is not None else n
    if j < 0:
        check, row = cp.program.checks[cp.check_ids[int(err[0])]], int(err[1])
        if on_check is not None:
            on_check(check, row)
        raise DataError(f"step {check.step!r}: row {row} of the batch fails the check {check.cond!r}")
    cols: Dict[str, pa.Array] = {}
    k = 0
    for o, (name, t, nb) in enumerate(cp.computed):
        values = outs[k][:j]
        k += 1
        valid = None
        if nb:
            valid = outs[k][:j]
            k += 1
        cols[name] = numpy_column(values, valid, t, bufs[o])
    idx = None if sel is None else pa.array(sel[:j])
    outputs = dict(cp.program.outputs)
    for name in cp.taken:
        a = batch.column(batch.schema.get_field_index(outputs[name].name))
        cols[name] = a if idx is None else a.take(idx)
    for name in cp.arrow_outputs:
        a = _full(arrow_eval(outputs[name], batch), n)
        cols[name] = a if idx is None else a.take(idx)
    arrays = [cols[f.name] for f in cp.output_schema]
    return pa.RecordBatch.from_arrays(arrays, schema=cp.output_schema)
