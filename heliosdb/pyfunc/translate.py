"""Python function -> expression trees of ``heliosdb.expr``, with Python's semantics.

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
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ..errors import SchemaError
from ..expr import BinOp, Cast, Col, Expr, Func, IfElse, IsNull, Lit, Not
from .source import _MISSING, FunctionSource

INT, FLOAT, BOOL, STR, NONE, OTHER, DICT, OBJ, UNKNOWN = (
    "int", "float", "bool", "str", "None", "other", "dict", "object", "unknown")
NUMERIC = (INT, FLOAT, BOOL)
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
TWO53 = 2**53
MAX_LEAVES = 64
#: The output column of a function that returns a single value rather than a dict.
SCALAR_COLUMN = "value"

_NO = object()
_RECORD = object()     # the record parameter, as a plan-time object


@dataclass(frozen=True)
class Val:
    """A Python value during translation: its kind, and the expression that computes it.

    ``expr`` is None when the value cannot be compiled (only its kind may be known).
    ``nullable``: the value may be Python's None (a null field).  ``const``: the value itself
    when it is known at plan time.  ``column``: set when the value is a field read as is (it
    passes through with its Arrow type).  ``items``: the keys and values of a dict.
    """

    kind: str
    expr: Optional[Expr] = None
    nullable: bool = False
    const: Any = _NO
    column: Optional[str] = None
    items: Optional[Tuple[Tuple[str, "Val"], ...]] = None

    @property
    def is_const(self) -> bool:
        return self.const is not _NO


@dataclass(frozen=True)
class CheckInfo:
    """What Python would raise where a check fails: the exception type and message, the
    source of the expression, and the function (for the error message)."""

    exc: type
    message: str
    code: str
    where: str
    deferred: bool = False     # Python fails only when the value reaches the output column


@dataclass
class Leaf:
    value: Optional[Val]           # None: the function returns None here


@dataclass
class Branch:
    cond: Optional[Expr]
    then: "Tree"
    otherwise: "Tree"


Tree = Union[Leaf, Branch]


@dataclass
class Translation:
    """The result: either compiled (``reasons`` empty) or why not, with the types it found."""

    checks: List[Tuple[Expr, CheckInfo]] = field(default_factory=list)
    keep: Optional[Expr] = None                     # rows kept (filter, process)
    outputs: Optional[List[Tuple[str, Expr]]] = None  # the new record (map, process)
    reasons: List[str] = field(default_factory=list)
    kinds: Optional[List[Tuple[str, Optional[pa.DataType]]]] = None   # output types, if known

    @property
    def compiled(self) -> bool:
        return not self.reasons


def _code(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # noqa: BLE001 - only used in messages
        return type(node).__name__


def _kind_of(t: pa.DataType) -> str:
    if pat.is_boolean(t):
        return BOOL
    if pat.is_integer(t):
        return OTHER if pat.is_uint64(t) else INT
    if pat.is_floating(t):
        return OTHER if pat.is_float16(t) else FLOAT
    if pat.is_string(t) or pat.is_large_string(t):
        return STR
    return OTHER


def _arrow(kind: str) -> Optional[pa.DataType]:
    return {INT: pa.int64(), FLOAT: pa.float64(), BOOL: pa.bool_(), STR: pa.string()}.get(kind)


def _and(a: Optional[Expr], b: Optional[Expr]) -> Optional[Expr]:
    if a is None or b is None:
        return b if a is None else a
    if isinstance(a, Lit) and a.value is True:
        return b
    if isinstance(b, Lit) and b.value is True:
        return a
    return BinOp("&", a, b)


def _or(a: Expr, b: Expr) -> Expr:
    if isinstance(a, Lit) and a.value is False:
        return b
    if isinstance(b, Lit) and b.value is False:
        return a
    return BinOp("|", a, b)


def _not(a: Expr) -> Expr:
    if isinstance(a, Lit) and isinstance(a.value, bool):
        return Lit(not a.value)
    if isinstance(a, Not):
        return a.operand
    return Not(a)


def _ite_bool(c: Expr, a: Expr, b: Expr) -> Expr:
    """``a if c else b`` for never-null booleans, simplified where a side is constant."""
    la = a.value if isinstance(a, Lit) else None
    lb = b.value if isinstance(b, Lit) else None
    if la is not None and la == lb:
        return a
    if la is True:
        return _or(c, b)
    if la is False:
        return _and(_not(c), b)
    if lb is True:
        return _or(_not(c), a)
    if lb is False:
        return _and(c, a)
    return IfElse(c, a, b)


def _fits53(v: Any) -> bool:
    return isinstance(v, int) and -TWO53 <= v <= TWO53


class Translator:
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

    # -- choosing between values -----------------------------------------------------------------
    def pick(self, cond: Optional[Expr], a: Val, b: Val, node: ast.AST,
             nullable: Optional[bool] = None) -> Val:
        """``a if cond else b`` (cond a never-null boolean), as one typed value."""
        nullable = (a.nullable or b.nullable) if nullable is None else nullable
        if isinstance(cond, Lit):
            return a if cond.value else b
        if a.kind == UNKNOWN or b.kind == UNKNOWN:
            return Val(a.kind if a.kind == b.kind else UNKNOWN)
        if a.expr is not None and (a.expr is b.expr or (a.column and a.column == b.column)):
            return a
        if a.kind == NONE and b.kind == NONE:
            return a
        kinds = {a.kind, b.kind}
        if NONE in kinds:
            other = b if a.kind == NONE else a
            if other.kind not in NUMERIC:
                return self.unsupported(f"chooses between None and {_a(other.kind)} ({_code(node)})",
                                        other.kind)
            kind = INT if other.kind == INT else other.kind
        elif kinds <= {INT, FLOAT}:
            if len(kinds) == 2:
                ints = a if a.kind == INT else b
                if not (ints.is_const and _fits53(ints.const)):
                    return self.unsupported(
                        f"gives an int on one side and a float on the other ({_code(node)}), so "
                        "Python's result type depends on the data; convert with float()", FLOAT)
            kind = FLOAT if FLOAT in kinds else INT
        elif len(kinds) == 1 and a.kind in (INT, FLOAT, BOOL):
            kind = a.kind
        else:
            if a.kind == b.kind:
                return self.unsupported(f"chooses between two {a.kind} values ({_code(node)}); the "
                                        "compiled kernel chooses only numbers and booleans", a.kind)
            return self.unsupported(f"chooses between {_a(a.kind)} and {_a(b.kind)} ({_code(node)}), "
                                    "so Python's result type depends on the data")
        if cond is None or a.expr is None or b.expr is None:
            return Val(kind)
        ea, eb = a.expr, b.expr
        if kind == FLOAT:
            ea = Cast(ea, pa.float64()) if a.kind == INT else ea
            eb = Cast(eb, pa.float64()) if b.kind == INT else eb
        if kind == BOOL and not nullable:
            return Val(BOOL, _ite_bool(cond, ea, eb))
        return Val(kind, IfElse(cond, ea, eb), nullable=nullable)

    # -- operators ---------------------------------------------------------------------------------
    def arith(self, op: str, a: Val, b: Val, node: ast.BinOp) -> Val:
        if UNKNOWN in (a.kind, b.kind):
            return Val(FLOAT if op == "/" else UNKNOWN)
        if a.kind not in NUMERIC or b.kind not in NUMERIC:
            kind = STR if STR in (a.kind, b.kind) and op in ("+", "*", "%") else UNKNOWN
            return self.unsupported(
                f"applies {op} to {_what(a)} and {_what(b)} ({_code(node)})", kind)
        kind = FLOAT if FLOAT in (a.kind, b.kind) or op == "/" else INT
        if op == "**" and kind == INT:
            if not b.is_const:
                return self.unsupported(
                    f"raises an int to an int power that is only known at run time "
                    f"({_code(node)}): Python gives an int or a float depending on its sign; "
                    "write float(...) ** ...", UNKNOWN)
            if b.const < 0:
                kind = FLOAT
        if a.expr is None or b.expr is None:
            return Val(kind)
        self.not_none(a, node, node.left)
        self.not_none(b, node, node.right)
        x, y = a.expr, b.expr
        zero = BinOp("==", y, Lit(0))
        if kind == INT:
            x, y = self.as_int(a), self.as_int(b)
            if op in ("+", "-", "*"):
                ovf = {"+": "add_overflows", "-": "sub_overflows", "*": "mul_overflows"}[op]
                self.check(Func(ovf, (x, y)), OverflowError, _OVERFLOW, node)
                return Val(INT, BinOp(op, x, y))
            if op in ("//", "%"):
                self.check(zero, ZeroDivisionError, "integer division or modulo by zero", node)
                if op == "//":
                    self.check(_and(BinOp("==", x, Lit(I64_MIN)), BinOp("==", y, Lit(-1))),
                               OverflowError, _OVERFLOW, node)
                return Val(INT, BinOp(op, x, y))
            assert op == "**"
            self.check(Func("ipow_overflows", (x, y)), OverflowError, _OVERFLOW, node)
            return Val(INT, Func("ipow", (x, y)))
        if op == "/" and a.kind != FLOAT and b.kind != FLOAT:
            self.check(zero, ZeroDivisionError, "division by zero", node)
            return Val(FLOAT, Func("int_truediv", (self.as_int(a), self.as_int(b))))
        if op in ("/", "//", "%"):
            message = {"/": "float division by zero", "//": "float floor division by zero",
                       "%": "float modulo"}[op]
            self.check(zero, ZeroDivisionError, message, node)
            return Val(FLOAT, BinOp(op, x, y))
        if op == "**":
            x, y = self.as_float(a), self.as_float(b)
            r = BinOp("**", x, y)
            finite = _and(Func("isfinite", (x,)), Func("isfinite", (y,)))
            self.check(_and(BinOp("==", x, Lit(0)), _and(BinOp("<", y, Lit(0)),
                                                           Func("isfinite", (y,)))),
                       ZeroDivisionError, "0.0 cannot be raised to a negative power", node)
            self.check(_and(_and(BinOp("<", x, Lit(0)), finite),
                            BinOp("!=", Func("floor", (y,)), y)),
                       TypeError, "a negative number to a fractional power is a complex number, "
                       "which a column cannot hold", node, deferred=True)
            self.check(_and(Func("isinf", (r,)), finite), OverflowError,
                       "(34, 'Numerical result out of range')", node)
            return Val(FLOAT, r)
        return Val(FLOAT, BinOp(op, x, y))

    def bool_bitop(self, op: type, a: Val, b: Val, node: ast.BinOp) -> Val:
        if a.expr is None or b.expr is None:
            return Val(BOOL)
        self.not_none(a, node, node.left)
        self.not_none(b, node, node.right)
        if op is ast.BitXor:
            return Val(BOOL, BinOp("!=", a.expr, b.expr))
        return Val(BOOL, BinOp("&" if op is ast.BitAnd else "|", a.expr, b.expr))

    def compare(self, op: ast.cmpop, a: Val, b: Val, node: ast.AST, left: Optional[ast.AST] = None,
                right: Optional[ast.AST] = None) -> Optional[Expr]:
        if isinstance(op, (ast.Is, ast.IsNot)):
            if not (a.kind == NONE or b.kind == NONE):
                return self._unsupported_expr(f"uses 'is' on values other than None ({_code(node)})")
            other = b if a.kind == NONE else a
            if other.kind == UNKNOWN or (other.expr is None and other.kind != NONE):
                return None
            is_none = (Lit(True) if other.kind == NONE else
                       IsNull(other.expr, False) if other.nullable else Lit(False))
            return is_none if isinstance(op, ast.Is) else _not(is_none)
        if isinstance(op, (ast.In, ast.NotIn)):
            if not (b.kind == OBJ and isinstance(b.const, (tuple, list, set, frozenset))):
                return self._unsupported_expr(
                    f"tests membership in {_code(node.comparators[0])}; only constant tuples, "
                    "lists and sets compile")
            acc: Expr = Lit(False)
            for item in b.const:
                e = self.equal(a, self.const(item, node), node)
                if e is None:
                    return None
                acc = _or(acc, e)
            return acc if isinstance(op, ast.In) else _not(acc)
        if isinstance(op, (ast.Eq, ast.NotEq)):
            e = self.equal(a, b, node)
            return None if e is None else (e if isinstance(op, ast.Eq) else _not(e))
        sym = _CMP[type(op)]
        if UNKNOWN in (a.kind, b.kind):
            return None
        ok = (a.kind in NUMERIC and b.kind in NUMERIC) or (a.kind == b.kind == STR)
        if not ok:
            return self._unsupported_expr(f"orders {_what(a)} and {_what(b)} ({_code(node)}), "
                                          "which raises TypeError in Python")
        if a.expr is None or b.expr is None:
            return None
        self.not_none(a, node, left or node)
        self.not_none(b, node, right or node)
        return self.compare_values(sym, a, b)

    def equal(self, a: Val, b: Val, node: ast.AST) -> Optional[Expr]:
        """Python's ``a == b``: never null; None equals only None."""
        if UNKNOWN in (a.kind, b.kind):
            return None
        if a.kind == NONE or b.kind == NONE:
            other = b if a.kind == NONE else a
            if other.kind == NONE:
                return Lit(True)
            if other.expr is None:
                return None
            return IsNull(other.expr, False) if other.nullable else Lit(False)
        if OTHER in (a.kind, b.kind) or OBJ in (a.kind, b.kind) or DICT in (a.kind, b.kind):
            return self._unsupported_expr(f"compares {_what(a)} with {_what(b)} ({_code(node)})")
        if a.expr is None or b.expr is None:
            return None
        if a.kind in NUMERIC and b.kind in NUMERIC:
            base = self.compare_values("==", a, b)
        elif a.kind == b.kind == STR:
            base = BinOp("==", a.expr, b.expr)
        else:
            return Lit(False)            # a str never equals a number
        if a.nullable and b.nullable:
            both_none = _and(IsNull(a.expr, False), IsNull(b.expr, False))
            neither = _and(_and(IsNull(a.expr, True), IsNull(b.expr, True)), base)
            return _or(both_none, neither)
        if a.nullable or b.nullable:
            return _and(IsNull((a if a.nullable else b).expr, True), base)
        return base

    def compare_values(self, op: str, a: Val, b: Val) -> Expr:
        """``a op b`` for non-null numbers, exactly as Python compares an int with a float."""
        ints = {INT, BOOL}
        if (a.kind in ints) == (b.kind in ints) or STR in (a.kind, b.kind):
            return BinOp(op, a.expr, b.expr)
        i, f = (a, b) if a.kind in ints else (b, a)
        exact = (i.is_const and _fits53(int(i.const))) or (
            f.is_const and (not math.isfinite(f.const) or abs(f.const) < TWO53))
        if exact:
            return BinOp(op, a.expr, b.expr)
        if i is b:                       # write it as (int op' float)
            op = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}[op]
        c = Func("cmp_int_float", (self.as_int(i), f.expr))
        if op == "<":
            return BinOp("==", c, Lit(-1))
        if op == "<=":
            return BinOp("<=", c, Lit(0))
        if op == ">":
            return BinOp("==", c, Lit(1))
        if op == ">=":
            return _and(BinOp(">=", c, Lit(0)), BinOp("<=", c, Lit(1)))
        return BinOp(op, c, Lit(0))

    # -- calls -------------------------------------------------------------------------------------
    def _args(self, fn: Any, node: ast.Call, lo: int, hi: int) -> Optional[List[Val]]:
        if not lo <= len(node.args) <= hi:
            self.unsupported(f"calls {_name_of(fn)}() with {len(node.args)} arguments")
            return None
        return [self.ev(a) for a in node.args]

    def _numeric(self, fn: Any, args: List[Val], node: ast.Call) -> bool:
        for v, a in zip(args, node.args):
            if v.kind == UNKNOWN:
                return False
            if v.kind not in NUMERIC:
                self.unsupported(f"calls {_name_of(fn)}() on {_what(v)} ({_code(node)})")
                return False
            if v.expr is None:
                return False
        for v, a in zip(args, node.args):
            self.not_none(v, node, a)
        return True

    def to_int(self, f: Expr, node: ast.AST) -> Expr:
        """A float64 expression holding an integral value (or NaN/inf) as Python's int."""
        self.check(Func("isnan", (f,)), ValueError, "cannot convert float NaN to integer", node)
        self.check(Func("isinf", (f,)), OverflowError, "cannot convert float infinity to integer", node)
        self.check(_or(BinOp(">=", f, Lit(2.0**63)), BinOp("<", f, Lit(-(2.0**63)))),
                   OverflowError, _OVERFLOW, node)
        return Cast(f, pa.int64())

    def call_abs(self, fn: Any, node: ast.Call) -> Val:
        args = self._args(fn, node, 1, 1)
        if args is None:
            return Val(UNKNOWN)
        v = args[0]
        kind = INT if v.kind == BOOL else v.kind
        if not self._numeric(fn, args, node):
            return Val(kind if kind in NUMERIC else UNKNOWN)
        if kind == INT:
            self.check(BinOp("==", v.expr, Lit(I64_MIN)), OverflowError, _OVERFLOW, node)
        return Val(kind, Func("abs", (v.expr,)))

    def call_round(self, fn: Any, node: ast.Call) -> Val:
        if len(node.args) != 1:
            return self.unsupported(f"calls round() with a number of digits ({_code(node)})",
                                    UNKNOWN)
        return self._to_integer(fn, node, "rint")

    def call_int(self, fn: Any, node: ast.Call) -> Val:
        if not node.args:
            return self.const(0, node)
        if len(node.args) == 1:
            v = self.ev(node.args[0])
            if v.kind == STR:
                return self.unsupported(f"parses a string with int() ({_code(node)})", INT)
        return self._to_integer(fn, node, None)

    def _to_integer(self, fn: Any, node: ast.Call, rounding: Optional[str]) -> Val:
        args = self._args(fn, node, 1, 1)
        if args is None or not self._numeric(fn, args, node):
            return Val(INT)
        v = args[0]
        if v.kind != FLOAT:
            return Val(INT, self.as_int(v))
        f = v.expr if rounding is None else Func(rounding, (v.expr,))
        return Val(INT, self.to_int(f, node))

    def call_float(self, fn: Any, node: ast.Call) -> Val:
        if not node.args:
            return self.const(0.0, node)
        args = self._args(fn, node, 1, 1)
        if args is None:
            return Val(FLOAT)
        if args[0].kind == STR:
            return self.unsupported(f"parses a string with float() ({_code(node)})", FLOAT)
        if not self._numeric(fn, args, node):
            return Val(FLOAT)
        return Val(FLOAT, self.as_float(args[0]))

    def call_bool(self, fn: Any, node: ast.Call) -> Val:
        if not node.args:
            return self.const(False, node)
        if len(node.args) != 1:
            return self.unsupported("calls bool() with several arguments", BOOL)
        return Val(BOOL, self.truth_of(node.args[0]))

    def call_minmax(self, fn: Any, node: ast.Call) -> Val:
        if len(node.args) < 2:
            return self.unsupported(f"calls {fn.__name__}() on an iterable ({_code(node)})")
        cur = self.ev(node.args[0])
        for a in node.args[1:]:
            nxt = self.ev(a)
            c = self.compare(ast.Lt() if fn is min else ast.Gt(), nxt, cur, node, a, node.args[0])
            cur = self.pick(c, nxt, cur, node)
            if cur.kind not in NUMERIC and cur.kind != STR:
                return cur
        return cur

    def call_pow(self, fn: Any, node: ast.Call) -> Val:
        args = self._args(fn, node, 2, 2)
        if args is None:
            return Val(UNKNOWN)
        return self.arith("**", args[0], args[1], ast.BinOp(node.args[0], ast.Pow(), node.args[1]))

    def math_call(self, fn: Any, node: ast.Call) -> Val:
        name, can_overflow = MATH[fn]
        if name in ("floor", "ceil", "trunc"):
            return self._to_integer(fn, node, name)
        if name == "log" and len(node.args) == 2:
            num = self.math_call(fn, ast.Call(node.func, node.args[:1], []))
            den = self.math_call(fn, ast.Call(node.func, node.args[1:], []))
            if num.expr is None or den.expr is None:
                return Val(FLOAT)
            self.check(BinOp("==", den.expr, Lit(0)), ZeroDivisionError, "float division by zero",
                       node)
            return Val(FLOAT, BinOp("/", num.expr, den.expr))
        arity = 2 if name in ("pow", "atan2", "copysign", "fmod") else 1
        args = self._args(fn, node, arity, arity)
        if args is None or not self._numeric(fn, args, node):
            return Val(BOOL if name in ("isnan", "isinf", "isfinite") else FLOAT)
        xs = tuple(self.as_float(v) for v in args)
        r = Func(name, xs)
        if name in ("isnan", "isinf", "isfinite"):
            return Val(BOOL, r)
        if name in _NEVER_RAISES:
            return Val(FLOAT, r)
        not_nan = None
        finite = None
        for x in xs:
            not_nan = _and(not_nan, _not(Func("isnan", (x,))))
            finite = _and(finite, Func("isfinite", (x,)))
        self.check(_and(Func("isnan", (r,)), not_nan), ValueError, "math domain error", node)
        inf = _and(Func("isinf", (r,)), finite)
        if name == "pow":     # CPython: 0.0 ** negative is a domain error, else a range error
            zero = BinOp("==", xs[0], Lit(0))
            self.check(_and(inf, zero), ValueError, "math domain error", node)
            self.check(_and(inf, _not(zero)), OverflowError, "math range error", node)
        elif can_overflow:
            self.check(inf, OverflowError, "math range error", node)
        else:
            self.check(inf, ValueError, "math domain error", node)
        return Val(FLOAT, r)

    # -- statements ----------------------------------------------------------------------------------
    def block(self, stmts: List[ast.stmt]) -> Tree:
        for k, st in enumerate(stmts):
            if isinstance(st, ast.Return):
                return self.ret(st.value)
            if isinstance(st, ast.If):
                t = self.truth_of(st.test)
                rest = stmts[k + 1:]
                if isinstance(t, Lit):
                    return self.block((st.body if t.value else st.orelse) + rest)
                env = dict(self.env)
                with self.under(t):
                    a = self.block(st.body + rest)
                self.env = dict(env)
                with self.under(None if t is None else _not(t)):
                    b = self.block(st.orelse + rest)
                self.env = env
                return Branch(t, a, b)
            if isinstance(st, (ast.Pass,)) or (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant)):
                continue
            if isinstance(st, ast.Assign):
                v = self.ev(st.value)
                for target in st.targets:
                    if not self.assign(target, v, st.value):
                        return Leaf(Val(UNKNOWN))
                continue
            if isinstance(st, ast.AnnAssign) and st.value is not None and st.simple:
                if not self.assign(st.target, self.ev(st.value), st.value):
                    return Leaf(Val(UNKNOWN))
                continue
            if isinstance(st, ast.AugAssign) and isinstance(st.target, ast.Name) \
                    and st.target.id in self.env:
                node = ast.BinOp(ast.Name(st.target.id, ast.Load()), st.op, st.value)
                ast.copy_location(node, st)
                self.env[st.target.id] = self._ev_BinOp(node)
                continue
            self.unsupported(_describe_stmt(st))
            return Leaf(Val(UNKNOWN))
        return self.ret(None)

    def assign(self, target: ast.AST, v: Val, value: ast.AST) -> bool:
        if isinstance(target, ast.Name):
            self.env[target.id] = v
            return True
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and \
                len(target.elts) == len(value.elts) and all(isinstance(t, ast.Name) for t in target.elts):
            vals = [self.ev(x) for x in value.elts]
            for t, x in zip(target.elts, vals):
                self.env[t.id] = x
            return True
        if isinstance(target, ast.Subscript):
            self.unsupported(f"assigns to an item ({_code(target)} = ...); build the dict in one "
                             "expression instead, e.g. {**e, 'x': ...}")
        else:
            self.unsupported(f"assigns to {_code(target)}")
        return False

    def ret(self, node: Optional[ast.AST]) -> Tree:
        self.leaves += 1
        if self.leaves > MAX_LEAVES:
            self.unsupported(f"has more than {MAX_LEAVES} paths to a return")
            return Leaf(Val(UNKNOWN))
        if node is None or (isinstance(node, ast.Constant) and node.value is None):
            return Leaf(None)
        if isinstance(node, ast.IfExp):
            t = self.truth_of(node.test)
            if isinstance(t, Lit):
                return self.ret(node.body if t.value else node.orelse)
            with self.under(t):
                a = self.ret(node.body)
            with self.under(None if t is None else _not(t)):
                b = self.ret(node.orelse)
            return Branch(t, a, b)
        if self.mode == "filter":
            return Leaf(Val(BOOL, self.truth_of(node)))
        v = self.ev(node)
        if v.kind == OBJ and v.const is _RECORD:
            v = Val(DICT, items=tuple(self.record_items()))
        return Leaf(v)

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

    def _leaves(self, tree: Tree, cond: Optional[Expr] = None) -> List[Tuple[Optional[Expr], Leaf]]:
        if isinstance(tree, Leaf):
            return [(cond, tree)]
        if tree.cond is None:
            return self._leaves(tree.then) + self._leaves(tree.otherwise)
        return (self._leaves(tree.then, _and(cond, tree.cond)) +
                self._leaves(tree.otherwise, _and(cond, _not(tree.cond))))

    def fold_keep(self, tree: Tree, value) -> Optional[Expr]:
        if isinstance(tree, Leaf):
            if tree.value is None:
                return Lit(False)
            return value(tree.value)
        a, b = self.fold_keep(tree.then, value), self.fold_keep(tree.otherwise, value)
        if tree.cond is None or a is None or b is None:
            return None
        return _ite_bool(tree.cond, a, b)

    def assemble(self, tree: Tree, out: Translation) -> None:
        """map/process: the rows kept and the new record, from every return of the function."""
        leaves = self._leaves(tree)
        values = [leaf.value for _, leaf in leaves if leaf.value is not None]
        if any(v.kind == UNKNOWN for v in values):
            return
        dicts = [v for v in values if v.kind == DICT]
        if dicts and len(dicts) != len(values):
            self.unsupported("returns a dict in one place and a single value in another")
            return
        if not values:
            self.unsupported("always returns None")
            return
        if dicts:
            keys = [k for k, _ in dicts[0].items]
        else:
            keys = [SCALAR_COLUMN]
        wanted = set(keys)

        def usable(v: Optional[Val]) -> bool:
            return v is not None and (v.kind != DICT or {k for k, _ in v.items} == wanted)

        # Paths that Python would reject at run time: None from map(), other keys.
        for cond, leaf in leaves:
            guard = Lit(True) if cond is None else cond
            if leaf.value is None and self.mode == "map":
                self.checks.append((guard, CheckInfo(
                    TypeError, "map() function returned None; use process() to drop records",
                    "return None", self.src.where)))
            elif leaf.value is not None and not usable(leaf.value):
                got = sorted(k for k, _ in leaf.value.items)
                self.checks.append((guard, CheckInfo(
                    ValueError, f"returned a dict with keys {got}, but the step's output "
                    f"columns are {keys}", "return {...}", self.src.where)))
        if self.mode == "process":
            out.keep = self.fold_keep(tree, lambda v: Lit(usable(v)))
        out.kinds = []
        outputs = []
        for k in keys:
            v = self.fold_value(tree, k, usable)
            if v is None or v.kind in (UNKNOWN, NONE) or (v.expr is None and not v.column):
                if v is not None and v.kind == NONE:
                    self.unsupported(f"always returns None for {k!r}")
                out.kinds.append((k, None if v is None or v.kind in (UNKNOWN, NONE) else
                                  (self.schema.field(v.column).type if v.column else _arrow(v.kind))))
                continue
            if v.kind in (STR, OTHER) and not v.column and not v.is_const:
                self.unsupported(f"computes {_a(v.kind)} for {k!r}")
            out.kinds.append((k, self.schema.field(v.column).type if v.column else _arrow(v.kind)))
            outputs.append((k, v.expr))
        if not self.reasons:
            out.outputs = outputs

    def fold_value(self, tree: Tree, key: str, usable) -> Optional[Val]:
        if isinstance(tree, Leaf):
            v = tree.value
            if not usable(v):
                return None
            return dict(v.items)[key] if v.kind == DICT else v
        a = self.fold_value(tree.then, key, usable)
        b = self.fold_value(tree.otherwise, key, usable)
        if a is None or b is None:
            return b if a is None else a
        return self.pick(tree.cond, a, b, ast.Name(key))


# -- tables ------------------------------------------------------------------------------------------
_OVERFLOW = "integer result does not fit in 64 bits (Python's ints are unbounded, a column's are int64)"
_ARITH = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
          ast.Mod: "%", ast.Pow: "**"}
_OP_TEXT = {ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<",
            ast.RShift: ">>", ast.MatMult: "@"}
_CMP = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}

#: The math functions that compile: function -> (name in heliosdb.expr.FUNCTIONS, whether an
#: infinite result from finite input is an OverflowError rather than a ValueError, as in CPython).
MATH: Dict[Any, Tuple[str, bool]] = {
    **{getattr(math, n): (n, False) for n in (
        "sqrt", "log", "log2", "log10", "log1p", "sin", "cos", "tan", "asin", "acos", "atan",
        "tanh", "asinh", "acosh", "atanh", "erf", "erfc", "fabs", "floor", "ceil", "trunc",
        "degrees", "radians", "atan2", "copysign", "fmod", "isnan", "isinf", "isfinite")},
    **{getattr(math, n): (n, True) for n in ("exp", "expm1", "sinh", "cosh", "pow")},
}
_NEVER_RAISES = ("erf", "erfc", "fabs", "degrees", "radians", "atan2", "copysign")
_BUILTIN_CALLS = {abs: "call_abs", round: "call_round", int: "call_int", float: "call_float",
                  bool: "call_bool", min: "call_minmax", max: "call_minmax", pow: "call_pow"}
_CALL_KINDS = {len: INT, str: STR, repr: STR, format: STR, int: INT, float: FLOAT, bool: BOOL,
               isinstance: BOOL, hash: INT, ord: INT, chr: STR}
_STR_METHODS = {
    **{m: STR for m in ("upper", "lower", "strip", "lstrip", "rstrip", "title", "capitalize",
                        "casefold", "replace", "zfill", "center", "ljust", "rjust", "format",
                        "swapcase", "removeprefix", "removesuffix")},
    **{m: INT for m in ("find", "rfind", "index", "rindex", "count")},
    **{m: BOOL for m in ("startswith", "endswith", "isdigit", "isalpha", "isalnum", "isspace",
                         "islower", "isupper", "isnumeric", "isdecimal", "istitle")},
}


def _hashable(x: Any) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


def _name_of(fn: Any) -> str:
    if isinstance(fn, np.ufunc):
        return f"numpy.{fn.__name__}"
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    if module in (None, "builtins"):
        return name
    return f"{module}.{name}"


def _a(kind: str) -> str:
    return {INT: "an int", NONE: "None", OBJ: "an object", UNKNOWN: "an unknown value"}.get(
        kind, f"a {kind}")


def _what(v: Val) -> str:
    if v.kind == OBJ:
        return "the record" if v.const is _RECORD else f"a {type(v.const).__name__}"
    return _a(v.kind)


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


def _describe_stmt(st: ast.stmt) -> str:
    kind = type(st).__name__
    if isinstance(st, ast.Expr) and isinstance(st.value, ast.Call):
        return f"calls {_code(st.value.func)}() for its side effect"
    return {
        "For": "uses a for loop", "AsyncFor": "uses a for loop", "While": "uses a while loop",
        "Try": "uses try/except", "TryStar": "uses try/except", "With": "uses a with block",
        "AsyncWith": "uses a with block", "Raise": "raises an exception", "Assert": "uses assert",
        "Import": "imports a module", "ImportFrom": "imports a module",
        "Global": "declares global names", "Nonlocal": "declares nonlocal names",
        "Delete": "deletes names", "FunctionDef": "defines a nested function",
        "AsyncFunctionDef": "defines a nested function", "ClassDef": "defines a class",
        "Match": "uses match", "Expr": "evaluates an expression for its side effect",
    }.get(kind, f"uses a {kind} statement")


def translate(src: FunctionSource, schema: pa.Schema, step: str, mode: str) -> Translation:
    """Translate the function of ``src`` over records of ``schema`` for a ``mode`` step."""
    return Translator(src, schema, step, mode).run()

