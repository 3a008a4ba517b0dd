"""Column expressions (``col``, ``lit``) and aggregate specs (``count``, ``sum``, ...).

An expression is an immutable tree.  It knows how to type itself against a schema
(:meth:`Expr.dtype`), which columns it reads (:meth:`Expr.columns`), and how to print itself.
It does not evaluate itself: ``kernels.codegen`` turns a chain of them into one Numba kernel and
``kernels.reference`` holds the plain numpy evaluator the tests compare against.

Semantics are SQL's: arithmetic and comparisons on a null give null, ``&``/``|`` are Kleene
logic, a filter keeps rows whose predicate is true (null drops), ``/`` is true division
(float64), ``//`` and ``%`` on integers floor like Python and give null for a zero divisor.
:func:`if_else` is SQL's CASE WHEN (a null condition takes the else branch); :func:`func` calls
a math function with C semantics (NaN for a domain error, never an exception).  Python
functions given to ``map``/``filter``/``process`` are translated into these trees by
``heliosdb.pyfunc``, which adds the checks that make them raise where Python would.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

import pyarrow as pa
import pyarrow.types as pat

from .errors import SchemaError

ARITH_OPS = ("+", "-", "*", "/", "//", "%", "**")
CMP_OPS = ("==", "!=", "<", "<=", ">", ">=")
BOOL_OPS = ("&", "|")

_CAST_NAMES = {
    "int64": pa.int64(), "int32": pa.int32(), "int16": pa.int16(), "int8": pa.int8(),
    "float64": pa.float64(), "float32": pa.float32(), "bool": pa.bool_(), "boolean": pa.bool_(),
    "string": pa.string(), "str": pa.string(), "utf8": pa.string(),
}


def is_numeric(t: pa.DataType) -> bool:
    """Integer, floating-point or boolean: the types a compiled kernel computes on."""
    return pat.is_integer(t) or pat.is_floating(t) or pat.is_boolean(t)


def is_stringlike(t: pa.DataType) -> bool:
    return pat.is_string(t) or pat.is_large_string(t)


def _promote(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    if pat.is_floating(a) or pat.is_floating(b):
        return pa.float64()
    return pa.int64()


class Expr:
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
        other = other if isinstance(other, Expr) else lit(other)
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
        """True where the value is null (never null itself)."""
        return IsNull(self, False)

    def is_not_null(self) -> "Expr":
        """True where the value is not null (never null itself)."""
        return IsNull(self, True)

    def cast(self, dtype: Union[str, pa.DataType]) -> "Expr":
        """Convert to ``dtype`` ("int64", "float64", "bool", "string", ... or a pyarrow type).

        Float to integer truncates toward zero; NaN and out-of-range values become null.
        """
        if isinstance(dtype, str):
            if dtype not in _CAST_NAMES:
                raise SchemaError(f"cast(): unknown type {dtype!r}; use one of {sorted(_CAST_NAMES)}")
            dtype = _CAST_NAMES[dtype]
        return Cast(self, dtype)

    def alias(self, name: str) -> "Expr":
        """Name the expression's output column (used by ``select``)."""
        return Alias(self, name)

    # --- analysis ---------------------------------------------------------------------------
    def columns(self) -> set:
        """Names of the input columns this expression reads."""
        raise NotImplementedError  # pragma: no cover - abstract

    def dtype(self, schema: pa.Schema, step: str = "expression") -> pa.DataType:
        """The Arrow type of the result against ``schema``; raises SchemaError naming ``step``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def output_name(self) -> Optional[str]:
        """The column name this expression produces in ``select`` (None if it needs an alias)."""
        return None


@dataclass(frozen=True, eq=False, repr=False)
class Col(Expr):
    name: str

    def columns(self) -> set:
        return {self.name}

    def dtype(self, schema, step="expression"):
        idx = schema.get_field_index(self.name)
        if idx < 0:
            import difflib

            close = difflib.get_close_matches(self.name, schema.names, n=1)
            hint = f"; you probably meant {close[0]!r}" if close else ""
            raise SchemaError(
                f"step {step!r}: unknown column {self.name!r}; the input has columns "
                f"{schema.names}{hint}"
            )
        return schema.field(idx).type

    def output_name(self):
        return self.name

    def __repr__(self):
        return f'col("{self.name}")'


@dataclass(frozen=True, eq=False, repr=False)
class Lit(Expr):
    value: Any

    def columns(self) -> set:
        return set()

    def dtype(self, schema, step="expression"):
        v = self.value
        if v is None:
            return pa.null()
        if isinstance(v, bool):
            return pa.bool_()
        if isinstance(v, int):
            if not -(2**63) <= v < 2**63:
                raise SchemaError(f"step {step!r}: literal {v} does not fit in int64")
            return pa.int64()
        if isinstance(v, float):
            return pa.float64()
        if isinstance(v, str):
            return pa.string()
        raise SchemaError(
            f"step {step!r}: literal {v!r} of type {type(v).__name__} is not supported; "
            "use an int, float, bool, str or None"
        )

    def __repr__(self):
        if isinstance(self.value, float) and (math.isnan(self.value) or math.isinf(self.value)):
            return f"lit({self.value!r})"
        return repr(self.value)


@dataclass(frozen=True, eq=False, repr=False)
class BinOp(Expr):
    op: str
    left: Expr
    right: Expr

    def columns(self) -> set:
        return self.left.columns() | self.right.columns()

    def dtype(self, schema, step="expression"):
        lt, rt = self.left.dtype(schema, step), self.right.dtype(schema, step)
        op = self.op
        if op in BOOL_OPS:
            for side, t in (("left", lt), ("right", rt)):
                if not (pat.is_boolean(t) or pat.is_null(t)):
                    raise SchemaError(
                        f"step {step!r}: {op!r} needs boolean operands, but the {side} side "
                        f"{self.left if side == 'left' else self.right!r} is {t}; compare it first, "
                        "e.g. (col('x') > 0) & (col('y') < 1)"
                    )
            return pa.bool_()
        if op in CMP_OPS:
            ok = (is_numeric(lt) or pat.is_null(lt)) and (is_numeric(rt) or pat.is_null(rt))
            ok = ok or (is_stringlike(lt) or pat.is_null(lt)) and (is_stringlike(rt) or pat.is_null(rt))
            ok = ok or (pat.is_timestamp(lt) and (pat.is_timestamp(rt) or pat.is_integer(rt)))
            if not ok:
                raise SchemaError(f"step {step!r}: cannot compare {lt} with {rt} in {self!r}")
            return pa.bool_()
        for side, t in (("left", lt), ("right", rt)):
            if not (is_numeric(t) or pat.is_null(t)):
                raise SchemaError(
                    f"step {step!r}: arithmetic {op!r} needs numeric operands, but the {side} side "
                    f"{self.left if side == 'left' else self.right!r} is {t}"
                    + ("; cast it with .cast('int64') first" if pat.is_timestamp(t) else "")
                )
        if op in ("/", "**"):
            return pa.float64()
        if pat.is_null(lt) and pat.is_null(rt):
            return pa.int64()
        return _promote(lt if not pat.is_null(lt) else rt, rt if not pat.is_null(rt) else lt)

    def __repr__(self):
        return f"({self.left!r} {self.op} {self.right!r})"


@dataclass(frozen=True, eq=False, repr=False)
class Not(Expr):
    operand: Expr

    def columns(self) -> set:
        return self.operand.columns()

    def dtype(self, schema, step="expression"):
        t = self.operand.dtype(schema, step)
        if not (pat.is_boolean(t) or pat.is_null(t)):
            raise SchemaError(f"step {step!r}: '~' needs a boolean operand, {self.operand!r} is {t}")
        return pa.bool_()

    def __repr__(self):
        return f"~({self.operand!r})"


@dataclass(frozen=True, eq=False, repr=False)
class IsNull(Expr):
    operand: Expr
    negate: bool

    def columns(self) -> set:
        return self.operand.columns()

    def dtype(self, schema, step="expression"):
        self.operand.dtype(schema, step)
        return pa.bool_()

    def __repr__(self):
        return f"{self.operand!r}.{'is_not_null' if self.negate else 'is_null'}()"


@dataclass(frozen=True, eq=False, repr=False)
class Cast(Expr):
    operand: Expr
    to: pa.DataType

    def columns(self) -> set:
        return self.operand.columns()

    def dtype(self, schema, step="expression"):
        src = self.operand.dtype(schema, step)
        if is_stringlike(self.to) or is_stringlike(src):
            if not (is_stringlike(self.to) or is_numeric(self.to)):
                raise SchemaError(f"step {step!r}: cannot cast {src} to {self.to}")
            return self.to
        if not (is_numeric(src) or pat.is_null(src)) or not is_numeric(self.to):
            raise SchemaError(
                f"step {step!r}: cannot cast {self.operand!r} of type {src} to {self.to}; "
                "casts between numeric, boolean and string types are supported"
            )
        return self.to

    def output_name(self):
        return self.operand.output_name()

    def __repr__(self):
        return f"{self.operand!r}.cast({str(self.to)!r})"


@dataclass(frozen=True, eq=False, repr=False)
class Alias(Expr):
    operand: Expr
    name: str

    def columns(self) -> set:
        return self.operand.columns()

    def dtype(self, schema, step="expression"):
        return self.operand.dtype(schema, step)

    def output_name(self):
        return self.name

    def __repr__(self):
        return f"{self.operand!r}.alias({self.name!r})"


#: Functions a :class:`Func` node can call: name -> (number of arguments, result kind).
#: Result kinds: "float" (float64; integer arguments are converted), "bool", "int" (int64,
#: integer arguments only) and "same" (int64 for integer or boolean input, float64 for float).
#: Semantics are C's (IEEE): no function raises; a domain error gives NaN, an overflow +-inf.
FUNCTIONS: dict = {
    **{name: (1, "float") for name in (
        "sqrt", "exp", "expm1", "log", "log2", "log10", "log1p", "sin", "cos", "tan", "asin",
        "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erf", "erfc",
        "fabs", "floor", "ceil", "trunc", "rint", "degrees", "radians")},
    **{name: (2, "float") for name in ("atan2", "copysign", "fmod", "pow")},
    **{name: (1, "bool") for name in ("isnan", "isinf", "isfinite")},
    "abs": (1, "same"),
    "neg": (1, "same"),
    # Python's integer semantics, for functions compiled from Python (see heliosdb.pyfunc):
    "int_truediv": (2, "float"),     # a / b of two integers, correctly rounded as Python does
    "ipow": (2, "int"),              # a ** b for b >= 0, wrapping on overflow (0 for b < 0)
    "add_overflows": (2, "bool"),    # a + b leaves int64
    "sub_overflows": (2, "bool"),
    "mul_overflows": (2, "bool"),
    "ipow_overflows": (2, "bool"),
    "cmp_int_float": (2, "int"),     # exact comparison: -1, 0, 1, or 2 if the float is NaN
}

#: Functions whose arguments must be integers (or booleans).
INTEGER_FUNCTIONS = frozenset(
    ("int_truediv", "ipow", "add_overflows", "sub_overflows", "mul_overflows", "ipow_overflows"))


@dataclass(frozen=True, eq=False, repr=False)
class IfElse(Expr):
    """``then`` where ``cond`` is true, else ``otherwise`` (a null condition takes ``otherwise``,
    as SQL's CASE WHEN does).  Build with :func:`if_else`."""

    cond: Expr
    then: Expr
    otherwise: Expr

    def columns(self) -> set:
        return self.cond.columns() | self.then.columns() | self.otherwise.columns()

    def dtype(self, schema, step="expression"):
        ct = self.cond.dtype(schema, step)
        if not (pat.is_boolean(ct) or pat.is_null(ct)):
            raise SchemaError(f"step {step!r}: if_else needs a boolean condition, {self.cond!r} is {ct}")
        a, b = self.then.dtype(schema, step), self.otherwise.dtype(schema, step)
        for t, e in ((a, self.then), (b, self.otherwise)):
            if not (is_numeric(t) or pat.is_null(t)):
                raise SchemaError(
                    f"step {step!r}: if_else branches must be numeric or boolean, {e!r} is {t}"
                )
        if pat.is_null(a) and pat.is_null(b):
            return pa.int64()
        if pat.is_null(a) or pat.is_null(b):
            t = b if pat.is_null(a) else a
            return t if pat.is_boolean(t) else _promote(t, t)
        if pat.is_boolean(a) and pat.is_boolean(b):
            return pa.bool_()
        if pat.is_boolean(a) != pat.is_boolean(b):
            raise SchemaError(
                f"step {step!r}: if_else branches {self.then!r} ({a}) and {self.otherwise!r} ({b}) "
                "mix boolean and numeric; cast one of them"
            )
        return _promote(a, b)

    def __repr__(self):
        return f"if_else({self.cond!r}, {self.then!r}, {self.otherwise!r})"


@dataclass(frozen=True, eq=False, repr=False)
class Func(Expr):
    """A call of one of :data:`FUNCTIONS` (null in any argument gives null).  Build with
    :func:`func`."""

    name: str
    args: Tuple[Expr, ...]

    def columns(self) -> set:
        out: set = set()
        for a in self.args:
            out |= a.columns()
        return out

    def dtype(self, schema, step="expression"):
        arity, kind = FUNCTIONS[self.name]
        types = [a.dtype(schema, step) for a in self.args]
        for t, a in zip(types, self.args):
            if not (is_numeric(t) or pat.is_null(t)):
                raise SchemaError(f"step {step!r}: {self.name}() needs numeric arguments, {a!r} is {t}")
            if self.name in INTEGER_FUNCTIONS and pat.is_floating(t):
                raise SchemaError(f"step {step!r}: {self.name}() needs integer arguments, {a!r} is {t}")
        if kind == "float":
            return pa.float64()
        if kind == "bool":
            return pa.bool_()
        if kind == "int":
            return pa.int64()
        return pa.float64() if pat.is_floating(types[0]) else pa.int64()

    def __repr__(self):
        return f"{self.name}({', '.join(repr(a) for a in self.args)})"


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
    if isinstance(value, Expr):
        return value
    return Lit(value)


def strip_alias(e: Expr) -> Expr:
    while isinstance(e, Alias):
        e = e.operand
    return e


def as_expr(value: Union[str, Expr]) -> Expr:
    """A column name becomes ``col(name)``; an expression stays as it is."""
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
