"""Tree -> tree rewrites: column substitution and constant folding.

:func:`substitute` is how a chain of steps fuses: a step's expressions are rewritten over the
chain's input columns.  :class:`Folder` simplifies a tree before code is emitted for it,
knowing which input columns of the batch hold nulls:

- operations on constants are computed now, with the kernel's semantics (int64 wraps, ``//``
  and ``%`` by zero give null, float64 follows IEEE: ``1.0 / 0.0`` is inf, NaN stays NaN);
- a null constant makes arithmetic, comparisons, casts and function calls null (of the node's
  type, so the output schema never changes), and ``is_null()`` of a value that cannot be null
  is false: most checks of a compiled Python function test for None, and fold away for
  columns without nulls;
- ``&``/``|``/``~``/``if_else`` fold through constants with Kleene logic (``False & null`` is
  False, ``True & x`` is ``x``).

What is not folded is left to the kernel, and computed there exactly as before: ``**``,
``//`` and ``%`` on floats, math functions, casts to types other than int64, float64 and bool,
and anything over strings.  Folding never changes a node's type.

Examples
--------
>>> from heliosdb.kernels.ir import BinOp, Col, IsNull, Lit
>>> schema = pa.schema([("x", pa.int64())])
>>> fold = Folder(schema, nullable={"x": False})
>>> fold(BinOp("*", BinOp("+", Lit(1), Lit(2)), Col("x")))
(3 * col("x"))
>>> fold(BinOp("|", IsNull(Col("x"), False), BinOp(">", Col("x"), Lit(0))))
(col("x") > 0)
>>> fold(BinOp("//", Lit(7), Lit(0)))
None.cast('int64')
"""
from __future__ import annotations

import operator
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ..errors import PlanError
from .ir import (
    CMP_OPS, BinOp, Cast, Col, Expr, Func, IfElse, IsNull, Lit, Not, Types, children,
    is_stringlike, strip_alias, with_children,
)

_NODES = (Col, Lit, BinOp, Not, IsNull, Cast, IfElse, Func)


def substitute(e: Expr, mapping: Dict[str, Expr], memo: Optional[Dict[int, Expr]] = None) -> Expr:
    """Rewrite ``e`` so that every ``col(name)`` reads ``mapping[name]`` instead.

    A sub-expression shared within ``e`` (or across calls given the same ``memo``) stays shared
    in the result, so the kernel computes it once; aliases are dropped.

    >>> substitute(BinOp("+", Col("y"), Lit(1)), {"y": BinOp("*", Col("x"), Lit(2))})
    ((col("x") * 2) + 1)
    """
    memo = {} if memo is None else memo
    key = id(e)
    if key in memo:
        return memo[key]
    node = strip_alias(e)
    if not isinstance(node, _NODES):
        raise PlanError(f"cannot fuse expression {node!r}")
    if isinstance(node, Col):
        out = mapping.get(node.name, node)
    else:
        out = with_children(node, lambda c: substitute(c, mapping, memo))
    memo[key] = out
    return out


_NO = object()          # "not a constant"
_INT64 = 2**63


def constant(e: Expr) -> Any:
    """The value of a numeric, boolean or null constant (None for null), else ``_NO``.

    A null of a given type is ``Cast(Lit(None), type)``, which is how folding writes one.
    """
    if isinstance(e, Lit) and not isinstance(e.value, str):
        return e.value
    if isinstance(e, Cast) and isinstance(e.operand, Lit) and e.operand.value is None:
        return None
    return _NO


def null_of(t: pa.DataType) -> Expr:
    """A null constant of type ``t``.

    >>> null_of(pa.float64())
    None.cast('double')
    """
    return Lit(None) if pat.is_null(t) else Cast(Lit(None), t)


def _wrap64(v: int) -> int:
    return (v + _INT64) % (2 * _INT64) - _INT64


_CMP: Dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}
_FLOAT_ARITH = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide}


class Folder:
    """Constant folding over trees of one schema, for one null pattern of the input.

    ``nullable`` maps a column to whether the batch's column holds nulls (a column not in it
    holds none).  Calling the folder on several trees keeps the nodes they share shared.
    """

    def __init__(self, schema: pa.Schema, nullable: Mapping[str, bool]):
        self.schema = schema
        self.nullable = nullable
        self.types = Types(schema)
        self._memo: Dict[int, Tuple[Expr, Expr]] = {}
        self._nulls: Dict[int, Tuple[Expr, bool]] = {}

    def __call__(self, e: Expr) -> Expr:
        hit = self._memo.get(id(e))
        if hit is not None:
            return hit[1]
        out = self._fold(with_children(strip_alias(e), self))
        self._memo[id(e)] = (e, out)
        return out

    def never_true(self, e: Expr) -> bool:
        """True if the folded boolean ``e`` is a constant false or null (a check that cannot
        fail)."""
        v = constant(e)
        return v is None or v is False

    # -- nulls -------------------------------------------------------------------------------
    def may_be_null(self, e: Expr) -> bool:
        """False only if ``e`` (a folded tree) is never null for this null pattern."""
        hit = self._nulls.get(id(e))
        if hit is None:
            hit = (e, self._may_be_null(e))
            self._nulls[id(e)] = hit
        return hit[1]

    def _may_be_null(self, e: Expr) -> bool:
        if isinstance(e, Col):
            return bool(self.nullable.get(e.name, False))
        if isinstance(e, Lit):
            return e.value is None
        if isinstance(e, IsNull):
            return False
        if isinstance(e, Cast):
            src = self.types(e.operand)
            if is_stringlike(src) or is_stringlike(e.to):
                return True                       # pyarrow's cast: not worth proving
            if pat.is_integer(e.to) and pat.is_floating(src):
                return True                       # NaN and out-of-range values become null
            return self.may_be_null(e.operand)
        if isinstance(e, BinOp) and e.op in ("//", "%") and not pat.is_floating(self.types(e)):
            d = constant(e.right)
            if d is _NO or d is None or d == 0:
                return True                       # an integer zero divisor gives null
        if isinstance(e, IfElse):                 # a null condition takes the else branch
            return self.may_be_null(e.then) or self.may_be_null(e.otherwise)
        if isinstance(e, (BinOp, Not, Func)):     # null in, null out
            return any(self.may_be_null(k) for k in children(e))
        return True

    # -- folding -----------------------------------------------------------------------------
    def _fold(self, e: Expr) -> Expr:
        """``e``, whose children are folded already, folded."""
        if isinstance(e, IsNull):
            v = constant(e.operand)
            if v is None:
                return Lit(not e.negate)
            if not self.may_be_null(e.operand):
                return Lit(e.negate)
            return e
        if isinstance(e, Not):
            v = constant(e.operand)
            if v is None:
                return null_of(pa.bool_())
            return Lit(not v) if isinstance(v, bool) else e
        if isinstance(e, BinOp):
            return self._fold_binop(e)
        if isinstance(e, Cast):
            return self._fold_cast(e)
        if isinstance(e, IfElse):
            c = constant(e.cond)
            if c is _NO:
                return e
            return self._as_type(e.then if c is True else e.otherwise, self.types(e))
        if isinstance(e, Func):
            if any(constant(a) is None for a in e.args):
                return null_of(self.types(e))
            return e                              # C's math, left to the kernel
        return e

    def _as_type(self, e: Expr, t: pa.DataType) -> Expr:
        """``e`` as a value of type ``t`` (an if_else branch as the if_else's type)."""
        if constant(e) is None:
            return null_of(t)
        if self.types(e) == t:
            return e
        return self._fold_cast(Cast(e, t))       # int -> int64 or float64: widening

    def _fold_binop(self, e: BinOp) -> Expr:
        op = e.op
        a, b = constant(e.left), constant(e.right)
        if op in ("&", "|"):
            absorbing = op == "|"                 # True absorbs |, False absorbs &
            if a is absorbing or b is absorbing:
                return Lit(absorbing)
            if a is (not absorbing):
                return null_of(pa.bool_()) if b is None else e.right
            if b is (not absorbing):
                return null_of(pa.bool_()) if a is None else e.left
            if a is None and b is None:
                return null_of(pa.bool_())
            return e                              # null & x: false or null, by row
        if a is None or b is None:
            return null_of(self.types(e))
        if op in ("//", "%") and b is not _NO and b == 0 and not pat.is_floating(self.types(e)):
            return null_of(pa.int64())            # an integer zero divisor: null, whatever x is
        if a is _NO or b is _NO:
            return e
        if op in CMP_OPS:
            if isinstance(a, float) or isinstance(b, float):
                a, b = float(a), float(b)         # int vs float compares as float64
            return Lit(bool(_CMP[op](a, b)))
        if pat.is_floating(self.types(e)):
            if op not in _FLOAT_ARITH:
                return e                          # **, // and % on floats: left to the kernel
            with np.errstate(all="ignore"):
                return Lit(float(_FLOAT_ARITH[op](np.float64(a), np.float64(b))))
        a, b = int(a), int(b)
        if op in ("+", "-", "*"):
            return Lit(_wrap64({"+": a + b, "-": a - b, "*": a * b}[op]))
        if op in ("//", "%"):
            if b == -1:                           # x // -1 is -x, wrapping for INT64_MIN
                return Lit(_wrap64(-a) if op == "//" else 0)
            return Lit(a // b if op == "//" else a % b)
        return e

    def _fold_cast(self, e: Cast) -> Expr:
        v = constant(e.operand)
        if v is None:
            return e if isinstance(e.operand, Lit) else null_of(e.to)
        if v is _NO:
            return e
        if pat.is_boolean(e.to):
            return Lit(v != 0)
        if pat.is_float64(e.to):
            return Lit(float(v))
        if pat.is_int64(e.to):
            if isinstance(v, float) and not -(2.0**63) <= v < 2.0**63:
                return null_of(e.to)              # NaN, infinities and out of range: null
            return Lit(int(v))
        return e                                  # other widths: left to the kernel
