"""Column expressions (``col``, ``lit``) and aggregate specs (``count``, ``sum``, ...).

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

from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

import pyarrow as pa
import pyarrow.types as pat

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


# -------------------------------------------------------------------------------------------
# Aggregates
# -------------------------------------------------------------------------------------------
AGG_KINDS = ("count", "sum", "min", "max", "mean", "var", "stddev", "first", "last",
             "count_distinct", "quantile")
_NUMERIC_AGGS = ("sum", "min", "max", "mean", "var", "stddev", "quantile")


@dataclass(frozen=True)
class AggSpec:
    """One aggregate of a window or keyed aggregation: ``kind`` over ``column``.

    ``count()`` (no column) counts rows; every other aggregate skips nulls and gives null for a
    group whose values are all null.  Build them with :func:`count`, :func:`sum`, ...
    ``q`` and ``relative_accuracy`` are the parameters of :func:`quantile`.
    """

    kind: str
    column: Optional[str] = None
    q: Optional[float] = None
    relative_accuracy: float = 0.01

    def __post_init__(self) -> None:
        if self.kind not in AGG_KINDS:
            raise SchemaError(f"unknown aggregate {self.kind!r}; use one of {AGG_KINDS}")
        if self.kind != "count" and not self.column:
            raise SchemaError(f"{self.kind}() needs a column name, e.g. hdb.{self.kind}('value')")
        if self.kind == "quantile":
            if not isinstance(self.q, (int, float)) or not 0.0 <= self.q <= 1.0:
                raise SchemaError(f"quantile({self.column!r}, q) needs 0 <= q <= 1, got {self.q!r}")
            if not 0.0 < self.relative_accuracy < 1.0:
                raise SchemaError(
                    f"quantile(relative_accuracy=) must be between 0 and 1, got {self.relative_accuracy!r}"
                )

    def output_type(self, schema: pa.Schema, step: str) -> pa.DataType:
        """The result type; raises SchemaError naming the step if the column does not fit."""
        if self.kind in ("count", "count_distinct"):
            if self.column is not None:
                Col(self.column).dtype(schema, step)
            return pa.int64()
        t = Col(self.column).dtype(schema, step)
        if self.kind in ("first", "last"):
            return t
        if not is_numeric(t) or pat.is_boolean(t):
            raise SchemaError(
                f"step {step!r}: {self.kind}({self.column!r}) needs a numeric column, but "
                f"{self.column!r} is {t}; use count(), count_distinct(), first() or last() for "
                "non-numeric columns, or cast it"
            )
        if self.kind in ("mean", "var", "stddev", "quantile"):
            return pa.float64()
        return pa.float64() if pat.is_floating(t) else pa.int64()

    def __repr__(self) -> str:
        if self.kind == "quantile":
            return f"quantile({self.column!r}, {self.q!r})"
        return f"{self.kind}({self.column!r})" if self.column else f"{self.kind}()"


def count(column: Optional[str] = None) -> AggSpec:
    """Rows in the group; ``count("x")`` counts the rows where ``x`` is not null.

    Examples
    --------
    >>> count(), count("value")
    (count(), count('value'))
    """
    return AggSpec("count", column)


def sum(column: str) -> AggSpec:  # noqa: A001 - the user guide's name
    """Sum of the non-null values: int64 for integer columns (wrapping on overflow, as C and
    numpy do), float64 for floats (NaN if any value is NaN).

    >>> sum("v2")
    sum('v2')
    """
    return AggSpec("sum", column)


def min(column: str) -> AggSpec:  # noqa: A001
    """Smallest non-null value (NaN only if every value is NaN).

    >>> min("v2")
    min('v2')
    """
    return AggSpec("min", column)


def max(column: str) -> AggSpec:  # noqa: A001
    """Largest non-null value (NaN sorts above every number, as in SQL).

    >>> max("v2")
    max('v2')
    """
    return AggSpec("max", column)


def mean(column: str) -> AggSpec:
    """Mean of the non-null values, float64.

    >>> mean("v2")
    mean('v2')
    """
    return AggSpec("mean", column)


def var(column: str) -> AggSpec:
    """Sample variance (n - 1 in the denominator) of the non-null values, float64; null for
    fewer than two values.  Computed with Welford's method, merged with Chan's formula.

    >>> var("v2")
    var('v2')
    """
    return AggSpec("var", column)


def stddev(column: str) -> AggSpec:
    """Sample standard deviation: the square root of :func:`var`.

    >>> stddev("v2")
    stddev('v2')
    """
    return AggSpec("stddev", column)


def first(column: str) -> AggSpec:
    """The first non-null value in arrival order (per key, arrival order is kept across
    parallel subtasks); any column type.

    >>> first("category")
    first('category')
    """
    return AggSpec("first", column)


def last(column: str) -> AggSpec:
    """The last non-null value in arrival order; any column type.

    >>> last("category")
    last('category')
    """
    return AggSpec("last", column)


def count_distinct(column: str) -> AggSpec:
    """Exact number of distinct non-null values (floats: -0.0 equals 0.0, NaN equals NaN).

    >>> count_distinct("category")
    count_distinct('category')
    """
    return AggSpec("count_distinct", column)


def quantile(column: str, q: float, relative_accuracy: float = 0.01) -> AggSpec:
    """Approximate ``q``-quantile (0 <= q <= 1) of the non-null, non-NaN values, float64.

    A mergeable log-bucket sketch (in the style of DDSketch): the result is within
    ``relative_accuracy`` (relative error) of the exact value at rank ``floor(q * (n - 1))``
    of the sorted values, and memory per group grows with the log of the value range, not
    with n.

    >>> quantile("latency", 0.99)
    quantile('latency', 0.99)
    """
    return AggSpec("quantile", column, float(q), relative_accuracy)


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
