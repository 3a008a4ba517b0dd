"""What Python's operators, builtins and math functions mean, as expressions and checks.

``PythonSemantics`` is the half of the translator that knows Python: ``/`` of two ints is
rounded once, ``//`` and ``%`` floor, ints are exact (a result outside int64 is a deferred
OverflowError, since Python only fails when storing it), an int compares exactly with a float,
``min``/``max`` keep the first of equals, and every place Python raises becomes a check with
the exception Python raises there.  The syntax-tree walk it serves is in ``translate``.
"""
from __future__ import annotations

import ast
import math
from typing import Any, Dict, List, Optional, Tuple

import pyarrow as pa

from ..kernels.ir import BinOp, Cast, Expr, Func, IfElse, IsNull, Lit
from .values import (
    BOOL, DICT, FLOAT, I64_MIN, INT, NONE, NUMERIC, OBJ, OTHER, STR, TWO53, UNKNOWN, _OVERFLOW,
    Val, _a, _and, _code, _fits53, _ite_bool, _name_of, _not, _or, _what)


class PythonSemantics:
    """Operators, comparisons and calls with Python's semantics.  A mixin of ``Translator``,
    whose bookkeeping (``ev``, ``check``, ``not_none``, ``unsupported``, ``under``, ``truth``,
    ``as_int``, ``as_float``, ``const``) it uses."""

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
            complex_ = _and(_and(BinOp("<", x, Lit(0)), finite), BinOp("!=", Func("floor", (y,)), y))
            # Python computes that complex power, which overflows where |x| ** y does.
            self.check(_and(complex_, Func("isinf", (Func("pow", (Func("fabs", (x,)), y)),))),
                       OverflowError, "complex exponentiation", node)
            self.check(complex_, TypeError, "a negative number to a fractional power is a complex "
                       "number, which a column cannot hold", node, deferred=True)
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
        exact = i.kind == BOOL or (i.is_const and _fits53(int(i.const))) or (
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


# -- tables ------------------------------------------------------------------------------------------
_ARITH = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
          ast.Mod: "%", ast.Pow: "**"}
_OP_TEXT = {ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<",
            ast.RShift: ">>", ast.MatMult: "@"}
_CMP = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}

#: The math functions that compile: function -> (name in heliosdb.kernels.ir.FUNCTIONS, whether an
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
