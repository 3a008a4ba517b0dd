"""The values a translation works with: kinds, ``Val``, checks, the tree of returns, and the
small helpers on expressions shared by ``semantics`` and ``translate``."""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ..kernels.ir import BinOp, Expr, IfElse, Lit, Not

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


_OVERFLOW = "integer result does not fit in 64 bits (Python's ints are unbounded, a column's are int64)"


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
