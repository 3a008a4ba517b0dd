"""The expression IR: the nodes of an expression tree, their types, and walks over them.

An expression is an immutable tree (a DAG where a sub-expression is shared: the kernels compute
a shared node once).  A node knows which columns it reads (:meth:`Expr.columns`), how to type
itself against a schema (:meth:`Expr.dtype`) and how to print itself.  It does not evaluate
itself: ``kernels.rewrite`` simplifies trees, ``kernels.emit`` turns them into a Numba kernel
and ``kernels.reference`` evaluates them plainly for the tests.

These are the plain nodes the engine works with.  Users build trees with ``heliosdb.expr``
(``col()``, ``lit()``, Python operators), whose classes subclass these and add only the
builders; a node built here compares by identity and has no operators.

Semantics are SQL's: arithmetic and comparisons on a null give null, ``&``/``|`` are Kleene
logic, ``/`` is true division (float64), ``//`` and ``%`` on integers floor like Python and
give null for a zero divisor, :class:`IfElse` is CASE WHEN (a null condition takes the else
branch) and :class:`Func` calls a math function with C semantics (NaN for a domain error).

Examples
--------
>>> e = BinOp(">", BinOp("*", Col("value"), Lit(2.0)), Lit(0.4))
>>> e
((col("value") * 2.0) > 0.4)
>>> sorted(e.columns()), e.dtype(pa.schema([("value", pa.float64())]))
(['value'], DataType(bool))
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import pyarrow as pa
import pyarrow.types as pat

from ..errors import SchemaError

ARITH_OPS = ("+", "-", "*", "/", "//", "%", "**")
CMP_OPS = ("==", "!=", "<", "<=", ">", ">=")
BOOL_OPS = ("&", "|")

#: The type names ``cast()`` accepts, and the Arrow type each stands for.
CAST_TYPES: Dict[str, pa.DataType] = {
    "int64": pa.int64(), "int32": pa.int32(), "int16": pa.int16(), "int8": pa.int8(),
    "float64": pa.float64(), "float32": pa.float32(), "bool": pa.bool_(), "boolean": pa.bool_(),
    "string": pa.string(), "str": pa.string(), "utf8": pa.string(),
}


def is_numeric(t: pa.DataType) -> bool:
    """Integer, floating-point or boolean: the types a compiled kernel computes on.

    >>> is_numeric(pa.int8()), is_numeric(pa.string())
    (True, False)
    """
    return pat.is_integer(t) or pat.is_floating(t) or pat.is_boolean(t)


def is_stringlike(t: pa.DataType) -> bool:
    """A string column (``string`` or ``large_string``): evaluated by pyarrow, not in a kernel.

    >>> is_stringlike(pa.large_string())
    True
    """
    return pat.is_string(t) or pat.is_large_string(t)


def promote(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """The type arithmetic on ``a`` and ``b`` computes in: float64 if either is floating,
    else int64.

    >>> promote(pa.int32(), pa.float32())
    DataType(double)
    """
    if pat.is_floating(a) or pat.is_floating(b):
        return pa.float64()
    return pa.int64()


class Expr:
    """A node of an expression tree (see the module docstring)."""

    __slots__ = ()

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
    """An input column, by name."""

    name: str

    def columns(self) -> set:
        return {self.name}

    def dtype(self, schema, step="expression"):
        idx = schema.get_field_index(self.name)
        if idx < 0:
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
    """A constant: int (int64), float (float64), bool, str or None (null)."""

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
    """``left op right`` for an operator of :data:`ARITH_OPS`, :data:`CMP_OPS` or
    :data:`BOOL_OPS`."""

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
        return promote(lt if not pat.is_null(lt) else rt, rt if not pat.is_null(rt) else lt)

    def __repr__(self):
        return f"({self.left!r} {self.op} {self.right!r})"


@dataclass(frozen=True, eq=False, repr=False)
class Not(Expr):
    """Logical not (null stays null)."""

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
    """True where ``operand`` is null (``negate``: where it is not); never null itself."""

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
    """``operand`` converted to the Arrow type ``to`` (float to integer truncates toward zero;
    NaN and out-of-range values become null)."""

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
    """``operand`` under an output column name (used by ``select``)."""

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
    as SQL's CASE WHEN does)."""

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
            return t if pat.is_boolean(t) else promote(t, t)
        if pat.is_boolean(a) and pat.is_boolean(b):
            return pa.bool_()
        if pat.is_boolean(a) != pat.is_boolean(b):
            raise SchemaError(
                f"step {step!r}: if_else branches {self.then!r} ({a}) and {self.otherwise!r} ({b}) "
                "mix boolean and numeric; cast one of them"
            )
        return promote(a, b)

    def __repr__(self):
        return f"if_else({self.cond!r}, {self.then!r}, {self.otherwise!r})"


@dataclass(frozen=True, eq=False, repr=False)
class Func(Expr):
    """A call of one of :data:`FUNCTIONS` (null in any argument gives null)."""

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


# -------------------------------------------------------------------------------------------
# Walks
# -------------------------------------------------------------------------------------------


def strip_alias(e: Expr) -> Expr:
    """``e`` without the :class:`Alias` nodes on top of it.

    >>> strip_alias(Alias(Col("x"), "y"))
    col("x")
    """
    while isinstance(e, Alias):
        e = e.operand
    return e


def children(e: Expr) -> Tuple[Expr, ...]:
    """The direct sub-expressions of ``e``, in evaluation order.

    >>> children(IfElse(Col("c"), Lit(1), Lit(2)))
    (col("c"), 1, 2)
    """
    if isinstance(e, BinOp):
        return (e.left, e.right)
    if isinstance(e, (Not, IsNull, Cast, Alias)):
        return (e.operand,)
    if isinstance(e, IfElse):
        return (e.cond, e.then, e.otherwise)
    if isinstance(e, Func):
        return e.args
    return ()


def with_children(e: Expr, fn: Callable[[Expr], Expr]) -> Expr:
    """``e`` with ``fn`` applied to each direct sub-expression; ``e`` itself (not a copy) when
    ``fn`` changes none of them, so shared nodes stay shared.

    >>> e = BinOp("+", Col("x"), Lit(1))
    >>> with_children(e, lambda c: Col("y") if isinstance(c, Col) else c)
    (col("y") + 1)
    >>> with_children(e, lambda c: c) is e
    True
    """
    old = children(e)
    new = tuple(fn(c) for c in old)
    if all(a is b for a, b in zip(old, new)):
        return e
    if isinstance(e, BinOp):
        return BinOp(e.op, *new)
    if isinstance(e, Not):
        return Not(*new)
    if isinstance(e, IsNull):
        return IsNull(new[0], e.negate)
    if isinstance(e, Cast):
        return Cast(new[0], e.to)
    if isinstance(e, Alias):
        return Alias(new[0], e.name)
    if isinstance(e, IfElse):
        return IfElse(*new)
    assert isinstance(e, Func), e
    return Func(e.name, new)


@dataclass(frozen=True, eq=False, repr=False)
class _Typed(Expr):
    """A stand-in of a known type for an already-typed child (see :class:`Types`)."""

    type: pa.DataType

    def columns(self) -> set:
        return set()

    def dtype(self, schema, step="expression"):
        return self.type

    def __repr__(self):
        return f"<{self.type}>"


class Types:
    """The types of the nodes of trees over one schema, each shared node typed once (typing a
    tree with :meth:`Expr.dtype` re-types a node once per path to it).

    >>> x = Col("x")
    >>> types = Types(pa.schema([("x", pa.int32())]))
    >>> types(BinOp("+", x, x)), types(x)
    (DataType(int64), DataType(int32))
    """

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self._memo: Dict[int, Tuple[Expr, pa.DataType]] = {}

    def __call__(self, e: Expr) -> pa.DataType:
        hit = self._memo.get(id(e))
        if hit is not None:
            return hit[1]
        if children(e):
            try:
                t = with_children(e, lambda c: _Typed(self(c))).dtype(self.schema)
            except SchemaError:
                t = e.dtype(self.schema)    # raises again, naming the whole expression
        else:
            t = e.dtype(self.schema)
        self._memo[id(e)] = (e, t)          # e is kept: its id stays its own
        return t
