"""Python function -> expression trees (``heliosdb.kernels.ir``), with Python's semantics.

The translator walks the function's syntax tree and builds, for every value, an expression over
the record's columns.  Where Python would raise (``None`` in arithmetic, a zero divisor, an
integer that leaves int64, a math domain error, ...) it adds a *check*: a boolean expression,
guarded by the conditions under which Python would evaluate that code (the branch taken, the
short-circuit of ``and``/``or``), that the kernel tests for every row.  The result is exactly
what Python computes, or an error on the same record.

What translates: arithmetic, comparisons (chained too), ``and``/``or``/``not``, ``x if c else
y``, ``is None``, ``in`` over a constant tuple, ``abs``, ``min``, ``max``, ``round(x)``,
``int``/``float``/``bool``, ``pow``, the functions of ``math`` listed in :data:`MATH`,
constants, and names read from the closure, the globals or default arguments (read once, when
the pipeline is planned).  A ``def`` function may also use local assignments and ``if`` /
``elif`` / ``else`` with ``return``.  Records are read with ``e.name``, ``e["name"]`` or
``e.get("name")``; a ``map`` or ``process`` function returns a dict literal (``{**e, ...}``
included), ``e`` itself, ``dict(...)``, or a single value.

Anything else makes the translator record *why* (e.g. "calls json.loads, which is not a math
function") and give up; it still works out as many result types as it can, so the fallback
knows its output schema when the types are evident (``len(...)`` is an int).
"""
from __future__ import annotations

import ast
import math
import types
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa

from ..errors import SchemaError
from ..kernels.ir import BinOp, Cast, Col, Expr, Func, IsNull, Lit
from .body import FunctionBody
from .semantics import _ARITH, _BUILTIN_CALLS, _CALL_KINDS, _OP_TEXT, MATH, PythonSemantics
from .source import _MISSING, FunctionSource
from .values import (
    BOOL, DICT, FLOAT, I64_MAX, I64_MIN, INT, NONE, NUMERIC, OBJ, STR, UNKNOWN, _OVERFLOW, _RECORD,
    CheckInfo, Translation, Val, _and, _code, _hashable, _kind_of, _name_of, _not, _or, _what)


class Translator(FunctionBody, PythonSemantics):
    """Translates one function against one input schema; see the module docstring."""

    def __init__(self, src: FunctionSource, schema: pa.Schema, step: str, mode: str):
        self.src = src
        self.schema = schema
        self.step = step
        self.mode = mode                       # "map", "filter" or "process"
        self.reasons: List[str] = []
        self.checks: List[Tuple[Expr, CheckInfo]] = []
        self.guard: Optional[Expr] = None
        self.env: Dict[str, Val] = {}
        self.leaves = 0

    # -- bookkeeping -------------------------------------------------------------------------
    def unsupported(self, reason: str, kind: str = UNKNOWN) -> Val:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return Val(kind)

    @contextmanager
    def under(self, cond: Optional[Expr]) -> Iterator[None]:
        """Code translated inside runs only where ``cond`` holds (a branch, a short-circuit)."""
        old = self.guard
        if cond is not None:
            self.guard = cond if old is None else _and(old, cond)
        try:
            yield
        finally:
            self.guard = old

    def check(self, cond: Expr, exc: type, message: str, node: ast.AST,
              deferred: bool = False) -> None:
        if isinstance(cond, Lit) and cond.value is False:
            return
        full = cond if self.guard is None else _and(self.guard, cond)
        deferred = deferred or message == _OVERFLOW
        self.checks.append((full, CheckInfo(exc, message, _code(node), self.src.where, deferred)))

    def not_none(self, v: Val, node: ast.AST, operand: ast.AST) -> None:
        """Python raises TypeError where ``v`` is None (arithmetic, ordering, math calls)."""
        if v.nullable and v.expr is not None and v.kind != NONE:
            self.check(IsNull(v.expr, False), TypeError, f"{_code(operand)} is None", node)

    # -- values --------------------------------------------------------------------------------
    def const(self, v: Any, node: ast.AST) -> Val:
        if v is None:
            return Val(NONE, Lit(None), nullable=True, const=None)
        if isinstance(v, (bool, np.bool_)):
            return Val(BOOL, Lit(bool(v)), const=bool(v))
        if isinstance(v, (int, np.integer)):
            v = int(v)
            if not I64_MIN <= v <= I64_MAX:
                return self.unsupported(f"uses the integer {v}, which does not fit in 64 bits", INT)
            return Val(INT, Lit(v), const=v)
        if isinstance(v, (float, np.floating)):
            return Val(FLOAT, Lit(float(v)), const=float(v))
        if isinstance(v, str):
            return Val(STR, Lit(v), const=v)
        return Val(OBJ, const=v)

    def field(self, name: str, node: ast.AST) -> Val:
        idx = self.schema.get_field_index(name)
        if idx < 0:
            import difflib

            close = difflib.get_close_matches(name, self.schema.names, n=1)
            hint = f"; you probably meant {close[0]!r}" if close else ""
            raise SchemaError(
                f"step {self.step!r}: {self.src.where} reads {_code(node)}, but the input has no "
                f"column {name!r} (it has {self.schema.names}){hint}"
            )
        f = self.schema.field(idx)
        return Val(_kind_of(f.type), Col(name), nullable=f.nullable, column=name)

    def record_items(self) -> List[Tuple[str, Val]]:
        return [(n, self.field(n, ast.Name(n))) for n in self.schema.names]

    def as_float(self, v: Val) -> Expr:
        return v.expr if v.kind == FLOAT else Cast(v.expr, pa.float64())

    def as_int(self, v: Val) -> Expr:
        return Cast(v.expr, pa.int64()) if v.kind == BOOL else v.expr

    # -- truth -------------------------------------------------------------------------------
    def truth(self, v: Val, node: ast.AST) -> Optional[Expr]:
        """``bool(v)`` as a never-null boolean expression (None is false, NaN is true)."""
        if v.kind == UNKNOWN:
            return None
        if v.is_const and v.kind != OBJ:
            return Lit(bool(v.const))
        if v.kind == NONE:
            return Lit(False)
        if v.kind == DICT:
            return Lit(bool(v.items))
        if v.kind == OBJ:
            if v.const is _RECORD:
                return Lit(len(self.schema) > 0)
            return self._unsupported_expr(f"tests the truth of {_code(node)}")
        if v.expr is None:
            return None
        if v.kind == BOOL:
            e = v.expr
        elif v.kind in (INT, FLOAT):
            e = BinOp("!=", v.expr, Lit(0))
        elif v.kind == STR:
            e = BinOp("!=", v.expr, Lit(""))
        else:
            return self._unsupported_expr(
                f"tests the truth of {_code(node)}, a {self.schema.field(v.column).type} field"
                if v.column else f"tests the truth of {_code(node)}")
        return _and(IsNull(v.expr, True), e) if v.nullable else e

    def _unsupported_expr(self, reason: str) -> None:
        self.unsupported(reason)
        return None

    def truth_of(self, node: ast.AST) -> Optional[Expr]:
        """The truth of an expression where only its truth matters (if, filter, not)."""
        if isinstance(node, ast.BoolOp):
            acc = self.truth_of(node.values[0])
            for sub in node.values[1:]:
                if isinstance(node.op, ast.And):
                    with self.under(acc):
                        t = self.truth_of(sub)
                    acc = None if acc is None or t is None else _and(acc, t)
                else:
                    with self.under(None if acc is None else _not(acc)):
                        t = self.truth_of(sub)
                    acc = None if acc is None or t is None else _or(acc, t)
            return acc
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            t = self.truth_of(node.operand)
            return None if t is None else _not(t)
        return self.truth(self.ev(node), node)

    # -- expressions -------------------------------------------------------------------------
    def ev(self, node: ast.AST) -> Val:
        method = getattr(self, "_ev_" + type(node).__name__, None)
        if method is None:
            return self.unsupported(f"uses {_describe_node(node)} ({_code(node)})",
                                    _guess_kind(node))
        return method(node)

    def _ev_Constant(self, node: ast.Constant) -> Val:
        if isinstance(node.value, (bytes, complex)) or node.value is Ellipsis:
            return self.unsupported(f"uses the constant {node.value!r}")
        return self.const(node.value, node)

    def _ev_Name(self, node: ast.Name) -> Val:
        if node.id in self.env:
            return self.env[node.id]
        if node.id == self.src.param:
            return Val(OBJ, const=_RECORD)
        if node.id in self.src.fn.__code__.co_varnames and node.id not in self.src.defaults:
            return self.unsupported(f"reads the local {node.id!r} where it may not be assigned")
        v = self.src.lookup(node.id)
        if v is _MISSING:
            return self.unsupported(f"reads the name {node.id!r}, which is not defined")
        return self.const(v, node)

    def _ev_Attribute(self, node: ast.Attribute) -> Val:
        base = self.ev(node.value)
        if base.kind == OBJ and base.const is _RECORD:
            return self.field(node.attr, node)
        if base.kind == OBJ and isinstance(base.const, types.ModuleType):
            v = getattr(base.const, node.attr, _MISSING)
            if v is _MISSING:
                return self.unsupported(f"reads {_code(node)}, which does not exist")
            return self.const(v, node)
        if base.kind == UNKNOWN:
            return base
        return self.unsupported(f"reads the attribute .{node.attr} of {_code(node.value)}")

    def _ev_Subscript(self, node: ast.Subscript) -> Val:
        base = self.ev(node.value)
        key = node.slice
        if base.kind == OBJ and base.const is _RECORD:
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                return self.field(key.value, node)
            return self.unsupported(f"reads a field by a computed name ({_code(node)})")
        k = self.ev(key)
        if base.kind == OBJ and k.is_const and isinstance(base.const, (tuple, list, dict, str)):
            try:
                return self.const(base.const[k.const], node)
            except (KeyError, IndexError, TypeError):
                return self.unsupported(f"indexes {_code(node)}, which raises in Python")
        if base.kind == OBJ:
            return self.unsupported(
                f"looks up {_code(node)} in a {type(base.const).__name__} by a value known only "
                "at run time")
        return self.unsupported(f"indexes {_what(base)} ({_code(node)})")

    def _ev_Tuple(self, node: Union[ast.Tuple, ast.List, ast.Set]) -> Val:
        vals = [self.ev(x) for x in node.elts]
        if all(v.is_const and v.kind != OBJ for v in vals):
            return Val(OBJ, const=tuple(v.const for v in vals))
        return self.unsupported(f"builds a {type(node).__name__.lower()} of values known only at "
                                f"run time ({_code(node)})")

    _ev_List = _ev_Set = _ev_Tuple

    def _ev_Dict(self, node: ast.Dict) -> Val:
        items: Dict[str, Val] = {}
        for k, v in zip(node.keys, node.values):
            if k is None:                                     # {**something}
                inner = self.ev(v)
                if inner.kind == OBJ and inner.const is _RECORD:
                    items.update(self.record_items())
                elif inner.kind == DICT:
                    items.update(inner.items)
                else:
                    return self.unsupported(f"unpacks {_code(v)} into a dict", DICT)
                continue
            if not (isinstance(k, ast.Constant) and isinstance(k.value, str)):
                return self.unsupported(f"builds a dict with the key {_code(k)}; keys must be "
                                        "string constants", DICT)
            items[k.value] = self.ev(v)
        return Val(DICT, items=tuple(items.items()))

    def _ev_BinOp(self, node: ast.BinOp) -> Val:
        op = _ARITH.get(type(node.op))
        a = self.ev(node.left)
        b = self.ev(node.right)
        if op is None:
            if type(node.op) in (ast.BitAnd, ast.BitOr, ast.BitXor) and a.kind == b.kind == BOOL:
                return self.bool_bitop(type(node.op), a, b, node)
            return self.unsupported(f"uses the operator {_OP_TEXT.get(type(node.op), '?')} "
                                    f"({_code(node)})", INT if a.kind == b.kind == INT else UNKNOWN)
        return self.arith(op, a, b, node)

    def _ev_UnaryOp(self, node: ast.UnaryOp) -> Val:
        if isinstance(node.op, ast.Not):
            t = self.truth_of(node.operand)
            return Val(BOOL, None if t is None else _not(t))
        v = self.ev(node.operand)
        if isinstance(node.op, ast.Invert):
            return self.unsupported(f"uses ~ ({_code(node)}); write 'not' for booleans", INT)
        if v.kind not in NUMERIC:
            if v.kind == UNKNOWN:
                return v
            return self.unsupported(f"negates {_code(node.operand)}, {_what(v)}")
        kind = INT if v.kind == BOOL else v.kind
        if v.is_const:
            return self.const(-v.const if isinstance(node.op, ast.USub) else +v.const, node)
        if v.expr is None:
            return Val(kind)
        self.not_none(v, node, node.operand)
        if isinstance(node.op, ast.UAdd):
            return Val(kind, self.as_int(v) if kind == INT else v.expr)
        if kind == INT:
            self.check(BinOp("==", v.expr, Lit(I64_MIN)), OverflowError, _OVERFLOW, node)
        return Val(kind, Func("neg", (v.expr,)))

    def _ev_BoolOp(self, node: ast.BoolOp) -> Val:
        cur = self.ev(node.values[0])
        for sub in node.values[1:]:
            t = self.truth(cur, node)
            if isinstance(node.op, ast.And):
                with self.under(t):
                    nxt = self.ev(sub)
                cur = self.pick(t, nxt, cur, node, nullable=cur.nullable or nxt.nullable)
            else:
                with self.under(None if t is None else _not(t)):
                    nxt = self.ev(sub)
                cur = self.pick(t, cur, nxt, node, nullable=nxt.nullable)
        return cur

    def _ev_IfExp(self, node: ast.IfExp) -> Val:
        t = self.truth_of(node.test)
        with self.under(t):
            a = self.ev(node.body)
        with self.under(None if t is None else _not(t)):
            b = self.ev(node.orelse)
        return self.pick(t, a, b, node)

    def _ev_Compare(self, node: ast.Compare) -> Val:
        left = self.ev(node.left)
        left_node = node.left
        result: Optional[Expr] = None
        ok = True
        for op, right_node in zip(node.ops, node.comparators):
            with self.under(result):
                right = self.ev(right_node)
                r = self.compare(op, left, right, node, left_node, right_node)
            if r is None:
                ok = False
            elif ok:
                result = r if result is None else _and(result, r)
            left, left_node = right, right_node
        return Val(BOOL, result if ok else None)

    def _ev_Call(self, node: ast.Call) -> Val:
        f = node.func
        if isinstance(f, ast.Attribute):
            base = self.ev(f.value)
            if base.kind == OBJ and base.const is _RECORD and f.attr == "get" \
                    and "get" not in self.schema.names:
                return self.record_get(node)
            if base.kind == STR:
                kind = _STR_METHODS.get(f.attr, UNKNOWN)
                return self.unsupported(f"calls the str method .{f.attr}() ({_code(node)})", kind)
            if base.kind in (INT, FLOAT, BOOL, UNKNOWN, DICT) or base.column:
                return self.unsupported(f"calls the method .{f.attr}() ({_code(node)})")
        callee = self.ev(f)
        if callee.kind == UNKNOWN:
            return callee
        fn = callee.const if callee.kind == OBJ else None
        if fn is None or not callable(fn):
            return self.unsupported(f"calls {_code(f)}, which is not a function")
        if any(isinstance(a, ast.Starred) for a in node.args):
            return self.unsupported(f"passes *arguments ({_code(node)})")
        if fn is dict:
            return self.dict_call(node)
        if node.keywords:
            return self.unsupported(f"passes keyword arguments to {_name_of(fn)}() ({_code(node)})",
                                    _CALL_KINDS.get(fn, UNKNOWN))
        handler = _BUILTIN_CALLS.get(fn) if _hashable(fn) else None
        if handler is not None:
            return getattr(self, handler)(fn, node)
        if _hashable(fn) and fn in MATH:
            return self.math_call(fn, node)
        for a in node.args:              # Python evaluates the arguments first: their
            self.ev(a)                   # reasons, if any, come first
        name = _name_of(fn)
        kind = _CALL_KINDS.get(fn, UNKNOWN) if _hashable(fn) else UNKNOWN
        if name.startswith("math."):
            return self.unsupported(f"calls {name}, which the compiler does not translate", kind)
        short = name.rsplit(".", 1)[-1]
        hint = f" (math.{short} compiles)" if getattr(math, short, None) in MATH else ""
        return self.unsupported(f"calls {name}, which is not a math function{hint}", kind)

    # -- records and dicts -----------------------------------------------------------------------
    def record_get(self, node: ast.Call) -> Val:
        if node.keywords or not 1 <= len(node.args) <= 2:
            return self.unsupported(f"calls {_code(node)} with unusual arguments")
        key = node.args[0]
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            return self.unsupported(f"reads a field by a computed name ({_code(node)})")
        if key.value in self.schema.names:
            return self.field(key.value, node)
        return self.ev(node.args[1]) if len(node.args) == 2 else self.const(None, node)

    def dict_call(self, node: ast.Call) -> Val:
        items: Dict[str, Val] = {}
        if len(node.args) > 1:
            return self.unsupported(f"calls dict() with {len(node.args)} arguments", DICT)
        if node.args:
            inner = self.ev(node.args[0])
            if inner.kind == OBJ and inner.const is _RECORD:
                items.update(self.record_items())
            elif inner.kind == DICT:
                items.update(inner.items)
            else:
                return self.unsupported(f"calls dict({_code(node.args[0])})", DICT)
        for kw in node.keywords:
            if kw.arg is None:
                inner = self.ev(kw.value)
                if inner.kind == OBJ and inner.const is _RECORD:
                    items.update(self.record_items())
                elif inner.kind == DICT:
                    items.update(inner.items)
                else:
                    return self.unsupported(f"unpacks {_code(kw.value)} into a dict", DICT)
            else:
                items[kw.arg] = self.ev(kw.value)
        return Val(DICT, items=tuple(items.items()))

    # -- the whole function ----------------------------------------------------------------------------
    def run(self) -> Translation:
        node = self.src.node
        tree = self.ret(node.body) if isinstance(node, ast.Lambda) else self.block(node.body)
        out = Translation(reasons=self.reasons)
        if self.mode == "filter":
            out.keep = self.fold_keep(tree, lambda v: v.expr)
        else:
            self.assemble(tree, out)
        # Python rejects an int that leaves int64 (or a complex number) only when it reaches the
        # output, after the function returned: on one record, every other error comes first.
        out.checks = ([c for c in self.checks if not c[1].deferred] +
                      [c for c in self.checks if c[1].deferred])
        return out

_STR_METHODS = {
    **{m: STR for m in ("upper", "lower", "strip", "lstrip", "rstrip", "title", "capitalize",
                        "casefold", "replace", "zfill", "center", "ljust", "rjust", "format",
                        "swapcase", "removeprefix", "removesuffix")},
    **{m: INT for m in ("find", "rfind", "index", "rindex", "count")},
    **{m: BOOL for m in ("startswith", "endswith", "isdigit", "isalpha", "isalnum", "isspace",
                         "islower", "isupper", "isnumeric", "isdecimal", "istitle")},
}


def _guess_kind(node: ast.AST) -> str:
    if isinstance(node, ast.JoinedStr):
        return STR
    return UNKNOWN


def _describe_node(node: ast.AST) -> str:
    return {
        "JoinedStr": "an f-string", "ListComp": "a list comprehension",
        "SetComp": "a set comprehension", "DictComp": "a dict comprehension",
        "GeneratorExp": "a generator expression", "Lambda": "a nested lambda",
        "NamedExpr": "the := operator", "List": "a list", "Tuple": "a tuple", "Set": "a set",
        "Await": "await", "Yield": "yield", "YieldFrom": "yield from", "Starred": "*unpacking",
        "Slice": "a slice",
    }.get(type(node).__name__, type(node).__name__)


def translate(src: FunctionSource, schema: pa.Schema, step: str, mode: str) -> Translation:
    """Translate the function of ``src`` over records of ``schema`` for a ``mode`` step."""
    return Translator(src, schema, step, mode).run()
