"""Column expressions (``col``, ``lit``).  Aggregate specs (``count``, ``sum``, ...) live in
:mod:`heliosdb.aggregates`; their former names here still work.

An expression is an immutable tree.  It knows how to type itself against a schema
(:meth:`Expr.dtype`), which columns it reads (:meth:`Expr.columns`), and how to print itself.
It does not evaluate itself: ``kernels.codegen`` turns a chain of them into one Numba kernel and
``kernels.reference`` holds the plain numpy evaluator the tests compare against.

The nodes are those of the engine's expression IR (``heliosdb.kernels.ir``); the classes here
subclass them with what a user writes: Python operators (``+``, ``>``, ``&``, ``~``, ...),
:meth:`Expr.is_null`, :meth:`Expr.cast` and :meth:`Expr.alias`.

Semantics are SQL's: arithmetic and comparisons on a null give null, ``&``/``|`` are Kleene
logic, a filter keeps rows whose predicate is true (null drops), ``/`` is true division
(float64), ``//`` and ``%`` on integers floor like Python and give null for a zero divisor.
:func:`if_else` is SQL's CASE WHEN (a null condition takes the else branch); :func:`func` calls
a math function with C semantics (NaN for a domain error, never an exception).  Python
functions given to ``map``/``filter``/``process`` are translated into these trees by
``heliosdb.pyfunc``, which adds the checks that make them raise where Python would.
"""
from __future__ import annotations

from typing import Any, Tuple, Union

import pyarrow as pa

from .aggregates import AggSpec, constructors  # noqa: F401  (AggSpec moved; re-exported)
from .errors import SchemaError
from .kernels import ir
from .kernels.ir import (  # noqa: F401  (re-exported: heliosdb.expr's names before the IR moved)
    ARITH_OPS, BOOL_OPS, CMP_OPS, FUNCTIONS, INTEGER_FUNCTIONS, is_numeric, is_stringlike,
    strip_alias,
)


class Expr(ir.Expr):
    """A column expression.  Build with :func:`col` and :func:`lit` and Python operators.

    Examples
    --------
    >>> e = (col("value") * 2.0 > 0.4) & ~col("flag").is_null()
    >>> e
    (((col("value") * 2.0) > 0.4) & ~(col("flag").is_null()))
    >>> sorted(e.columns())
    ['flag', 'value']
    """

    __slots__ = ()

    # --- construction -----------------------------------------------------------------------
    def _bin(self, op: str, other: Any, reflected: bool = False) -> "Expr":
        other = lit(other)
        return BinOp(op, other, self) if reflected else BinOp(op, self, other)

    def __add__(self, o): return self._bin("+", o)
    def __radd__(self, o): return self._bin("+", o, True)
    def __sub__(self, o): return self._bin("-", o)
    def __rsub__(self, o): return self._bin("-", o, True)
    def __mul__(self, o): return self._bin("*", o)
    def __rmul__(self, o): return self._bin("*", o, True)
    def __truediv__(self, o): return self._bin("/", o)
    def __rtruediv__(self, o): return self._bin("/", o, True)
    def __floordiv__(self, o): return self._bin("//", o)
    def __rfloordiv__(self, o): return self._bin("//", o, True)
    def __mod__(self, o): return self._bin("%", o)
    def __rmod__(self, o): return self._bin("%", o, True)
    def __pow__(self, o): return self._bin("**", o)
    def __rpow__(self, o): return self._bin("**", o, True)
    def __eq__(self, o): return self._bin("==", o)  # type: ignore[override]
    def __ne__(self, o): return self._bin("!=", o)  # type: ignore[override]
    def __lt__(self, o): return self._bin("<", o)
    def __le__(self, o): return self._bin("<=", o)
    def __gt__(self, o): return self._bin(">", o)
    def __ge__(self, o): return self._bin(">=", o)
    def __and__(self, o): return self._bin("&", o)
    def __rand__(self, o): return self._bin("&", o, True)
    def __or__(self, o): return self._bin("|", o)
    def __ror__(self, o): return self._bin("|", o, True)
    def __invert__(self): return Not(self)
    def __neg__(self): return BinOp("-", lit(0), self)
    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        raise TypeError(
            "an expression has no truth value; combine predicates with & | ~ instead of "
            "and/or/not, and compare with == inside filter()"
        )

    def is_null(self) -> "Expr":
        """True where the value is null (never null itself).

        >>> col("x").is_null()
        col("x").is_null()
        """
        return IsNull(self, False)

    def is_not_null(self) -> "Expr":
        """True where the value is not null (never null itself).

        >>> col("x").is_not_null()
        col("x").is_not_null()
        """
        return IsNull(self, True)

    def cast(self, dtype: Union[str, pa.DataType]) -> "Expr":
        """Convert to ``dtype`` ("int64", "float64", "bool", "string", ... or a pyarrow type).

        Float to integer truncates toward zero; NaN and out-of-range values become null.

        >>> col("x").cast("int32")
        col("x").cast('int32')
        """
        if isinstance(dtype, str):
            if dtype not in ir.CAST_TYPES:
                raise SchemaError(f"cast(): unknown type {dtype!r}; use one of {sorted(ir.CAST_TYPES)}")
            dtype = ir.CAST_TYPES[dtype]
        return Cast(self, dtype)

    def alias(self, name: str) -> "Expr":
        """Name the expression's output column (used by ``select``).

        >>> (col("x") + 1).alias("y").output_name()
        'y'
        """
        return Alias(self, name)


# The user-facing node classes: the IR's nodes with the builders above.
class Col(Expr, ir.Col):
    """A column reference; build with :func:`col`."""


class Lit(Expr, ir.Lit):
    """A constant; build with :func:`lit` (or write the value next to an expression)."""


class BinOp(Expr, ir.BinOp):
    """A binary operation; build with Python's operators."""


class Not(Expr, ir.Not):
    """Logical not; build with ``~``."""


class IsNull(Expr, ir.IsNull):
    """A null test; build with :meth:`Expr.is_null` / :meth:`Expr.is_not_null`."""


class Cast(Expr, ir.Cast):
    """A conversion; build with :meth:`Expr.cast`."""


class Alias(Expr, ir.Alias):
    """A named output; build with :meth:`Expr.alias`."""


class IfElse(Expr, ir.IfElse):
    """A conditional; build with :func:`if_else`."""


class Func(Expr, ir.Func):
    """A math function call; build with :func:`func`."""


def if_else(cond: Expr, then: Any, otherwise: Any) -> Expr:
    """A conditional: ``then`` where ``cond`` is true, ``otherwise`` where it is false or null.

    Examples
    --------
    >>> if_else(col("x") > 0, col("x"), 0)
    if_else((col("x") > 0), col("x"), 0)
    """
    return IfElse(lit(cond), lit(then), lit(otherwise))


def func(name: str, *args: Any) -> Expr:
    """Call a math function by name (see :data:`FUNCTIONS`), e.g. ``func("sqrt", col("x"))``.

    Examples
    --------
    >>> func("sqrt", col("x") * 2)
    sqrt((col("x") * 2))
    """
    if name not in FUNCTIONS:
        raise SchemaError(f"unknown function {name!r}; use one of {sorted(FUNCTIONS)}")
    arity = FUNCTIONS[name][0]
    if len(args) != arity:
        raise SchemaError(f"{name}() takes {arity} argument(s), got {len(args)}")
    return Func(name, tuple(lit(a) for a in args))


def col(name: str) -> Expr:
    """Refer to an input column by name.

    Examples
    --------
    >>> col("value") * 2
    (col("value") * 2)
    """
    if not isinstance(name, str) or not name:
        raise SchemaError(f"col() takes a column name (a non-empty str), got {name!r}")
    return Col(name)


def lit(value: Any) -> Expr:
    """A constant: int, float, bool, str or None.

    Examples
    --------
    >>> lit(3) + col("x")
    (3 + col("x"))
    """
    if isinstance(value, ir.Expr):
        return value
    return Lit(value)


def as_expr(value: Union[str, Expr]) -> Expr:
    """A column name becomes ``col(name)``; an expression stays as it is.

    >>> as_expr("x"), as_expr(col("y") + 1)
    (col("x"), (col("y") + 1))
    """
    return col(value) if isinstance(value, str) else lit(value)


def __getattr__(name: str):
    """``count``, ``sum``, ... moved to :mod:`heliosdb.aggregates`; these names still work."""
    fn = constructors().get(name)
    if fn is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return fn


def parse_projection(items: Tuple[Union[str, Expr], ...], step: str) -> list:
    """``select()`` arguments -> list of (output name, expression)."""
    out = []
    for item in items:
        e = col(item) if isinstance(item, str) else item
        if not isinstance(e, Expr):
            raise SchemaError(f"step {step!r}: select() takes column names or expressions, got {item!r}")
        name = e.output_name()
        if name is None:
            raise SchemaError(
                f"step {step!r}: the expression {e!r} needs a name; write {e!r}.alias('name') or use "
                "with_columns(name=...)"
            )
        out.append((name, strip_alias(e)))
    return out
