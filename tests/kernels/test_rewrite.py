"""Tree rewrites of ``heliosdb.kernels.rewrite``: constant folding and column substitution.

Folding must change nothing but the work a kernel does: every folded tree has the type of the
original and, evaluated by ``kernels.reference``, the same values (nulls, NaN, int64 wrapping
and zero divisors included).  The unit tests pin what folds and what is left to the kernel;
the property test checks the two promises on random trees.
"""
from __future__ import annotations

import math

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heliosdb.errors import SchemaError
from heliosdb.expr import col, func, if_else, lit
from heliosdb.kernels import reference
from heliosdb.kernels.ir import BinOp, Cast, Col, Func, IfElse, IsNull, Lit, Not
from heliosdb.kernels.rewrite import Folder, constant, null_of, substitute

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
NAN, INF = float("nan"), float("inf")
SCHEMA = pa.schema([("x", pa.int64()), ("y", pa.int64()), ("f", pa.float64()),
                    ("b", pa.bool_()), ("n", pa.int32()), ("s", pa.string())])


def fold(e, nullable=None):
    """Fold ``e`` for a batch where the columns in ``nullable`` hold nulls (default: none)."""
    out = Folder(SCHEMA, {c: True for c in (nullable or ())})(e)
    assert out.dtype(SCHEMA) == e.dtype(SCHEMA), f"{e!r} -> {out!r} changed type"
    return out


def is_const(e, value) -> bool:
    v = constant(e)
    if isinstance(value, float) and math.isnan(value):
        return isinstance(v, float) and math.isnan(v)
    return type(v) is type(value) and v == value


def is_null_const(e) -> bool:
    return constant(e) is None


# -- arithmetic ---------------------------------------------------------------------------------
def test_constant_subtree_folds_and_the_column_part_stays():
    assert repr(fold((lit(1) + lit(2)) * col("x"))) == '(3 * col("x"))'
    assert is_const(fold(lit(1) + lit(2) * lit(3)), 7)


def test_folding_does_not_reassociate_around_a_column():
    # 1 + 2 * x has no constant sub-expression: the tree comes back as it was, the same object
    e = lit(1) + lit(2) * col("x")
    assert fold(e) is e


def test_int64_arithmetic_wraps_like_the_kernel():
    assert is_const(fold(lit(2**62) * lit(4)), 0)
    assert is_const(fold(lit(I64_MAX) + lit(1)), I64_MIN)
    assert is_const(fold(lit(I64_MIN) - lit(1)), I64_MAX)


def test_integer_floor_division_and_modulo_floor_and_zero_divisor_is_null():
    assert is_const(fold(lit(-7) // lit(2)), -4)
    assert is_const(fold(lit(-7) % lit(2)), 1)
    assert is_const(fold(lit(7) % lit(-2)), -1)
    assert is_const(fold(lit(I64_MIN) // lit(-1)), I64_MIN)      # wraps, never traps
    assert is_const(fold(lit(I64_MIN) % lit(-1)), 0)
    for e in (lit(7) // lit(0), lit(7) % lit(0), lit(True) // lit(False), col("x") // 0,
              col("n") % lit(False)):
        out = fold(e)
        assert is_null_const(out) and out.dtype(SCHEMA) == pa.int64()


def test_float_arithmetic_follows_ieee():
    assert is_const(fold(lit(1.0) / lit(0.0)), INF)
    assert is_const(fold(lit(-1) / lit(0)), -INF)              # int / int is float division
    assert is_const(fold(lit(0.0) / lit(0.0)), NAN)
    assert is_const(fold(lit(NAN) * lit(0.0)), NAN)
    assert is_const(fold(lit(INF) - lit(INF)), NAN)
    assert is_const(fold(lit(0.1) + lit(0.2)), 0.1 + 0.2)
    assert is_const(fold(lit(1) / lit(3)), 1 / 3)
    assert is_const(fold(lit(1) + lit(0.5)), 1.5)              # int + float is float64


def test_nan_compares_unequal_to_everything_including_itself():
    assert is_const(fold(lit(NAN) == lit(NAN)), False)
    assert is_const(fold(lit(NAN) != lit(NAN)), True)
    assert is_const(fold(lit(NAN) < lit(1)), False)
    assert is_const(fold(lit(2**53 + 1) == lit(2.0**53)), True)  # int vs float compares as float64


def test_left_to_the_kernel():
    # C's pow and math functions, Python's float // and %, other cast widths and strings are
    # computed by the kernel (or pyarrow) exactly as before
    for e in (lit(2.0) ** lit(0.5), lit(2) ** lit(3), func("sqrt", lit(4.0)),
              lit(7.5) // lit(2.0), lit(7.5) % lit(2.0), lit(3).cast("int32"),
              lit(1.5).cast("float32"), lit("a") == lit("a"), lit(3).cast("string")):
        assert fold(e) is e


# -- nulls -------------------------------------------------------------------------------------
def test_a_null_constant_makes_the_node_null_of_its_own_type():
    for e, t in ((lit(None) + col("x"), pa.int64()), (col("f") * None, pa.float64()),
                 (col("x") > None, pa.bool_()), (lit(None) / lit(2), pa.float64()),
                 (func("sqrt", lit(None)), pa.float64()), (~lit(None), pa.bool_()),
                 (lit(None).cast("float64") + lit(1), pa.float64())):
        out = fold(e)
        assert is_null_const(out) and out.dtype(SCHEMA) == t, (e, out)
    assert fold(lit(None)).dtype(SCHEMA) == pa.null()


def test_is_null_of_constants_and_of_columns_without_nulls():
    assert is_const(fold(lit(None).is_null()), True)
    assert is_const(fold((lit(None) + 1).is_not_null()), False)
    assert is_const(fold(lit(3).is_null()), False)
    assert is_const(fold(col("x").is_null()), False)
    assert is_const(fold(col("s").is_not_null()), True)
    e = col("x").is_null()
    assert fold(e, nullable={"x"}) is e                      # the batch holds nulls in x


def test_what_may_be_null_follows_the_kernels_nulls():
    # a nullable input, an integer zero divisor and a float->int cast can make a null; a
    # non-zero constant divisor, is_null() and a float division cannot
    for e in ((col("x") // col("y")).is_null(), col("f").cast("int64").is_null(),
              (col("x") + col("y")).is_null()):
        assert not isinstance(fold(e, nullable={"y"}), Lit), e
    assert is_const(fold((col("x") % lit(0)).is_null()), True)
    for e in ((col("x") // lit(2)).is_null(), (col("x") // col("y")).is_null().is_null(),
              (col("x") / col("y")).is_null(), if_else(col("b"), col("x"), 0).is_null(),
              col("x").cast("float64").is_null()):
        assert is_const(fold(e), False), e


def test_kleene_logic_with_constants():
    b = col("b")
    assert is_const(fold(lit(False) & lit(None)), False)
    assert is_const(fold(lit(None) | lit(True)), True)
    assert is_null_const(fold(lit(True) & lit(None)))
    assert is_null_const(fold(lit(False) | lit(None)))
    assert is_null_const(fold(lit(None) & lit(None)))
    assert fold(b & lit(True)) is b and fold(lit(False) | b) is b
    assert is_const(fold(b & lit(False)), False) and is_const(fold(lit(True) | b), True)
    e = b & lit(None)                                        # false or null, row by row
    assert fold(e) is e
    assert is_const(fold(~lit(True)), False)


def test_pyfunc_null_checks_fold_away_for_columns_without_nulls():
    # the shape of a compiled function's check: "e.x is None" where Python would raise
    check = (col("f") > 0) & (col("x").is_null() | col("y").is_null())
    assert is_const(fold(check), False)
    assert not isinstance(fold(check, nullable={"y"}), Lit)
    assert Folder(SCHEMA, {}).never_true(fold(check))
    assert Folder(SCHEMA, {}).never_true(fold(col("x") > None))
    assert not Folder(SCHEMA, {}).never_true(fold(col("b")))


# -- casts and conditionals ----------------------------------------------------------------------
def test_constant_casts_truncate_and_out_of_range_is_null():
    assert is_const(fold(lit(2.7).cast("int64")), 2)
    assert is_const(fold(lit(-2.7).cast("int64")), -2)
    assert is_const(fold(lit(-(2.0**63)).cast("int64")), I64_MIN)
    for v in (NAN, INF, 2.0**63, 1e19):
        assert is_null_const(fold(lit(v).cast("int64"))), v
    assert is_const(fold(lit(True).cast("float64")), 1.0)
    assert is_const(fold(lit(NAN).cast("bool")), True)
    assert is_const(fold(lit(0).cast("bool")), False)
    assert is_null_const(fold(lit(None).cast("int32")))


def test_if_else_on_a_constant_condition_takes_its_branch_with_the_if_else_type():
    n = col("n")                                             # int32
    out = fold(if_else(lit(True), n, 1.5))
    assert isinstance(out, Cast) and out.operand is n and out.to == pa.float64()
    assert is_const(fold(if_else(lit(False), n, 1.5)), 1.5)
    assert is_const(fold(if_else(lit(None), 1.5, 2)), 2.0)   # a null condition takes else
    assert is_null_const(fold(if_else(lit(True), lit(None), col("f"))))
    x = col("x")
    assert fold(if_else(lit(True), x, col("y"))) is x         # same type: the branch itself


# -- sharing and substitution --------------------------------------------------------------------
def test_a_shared_node_stays_shared_after_folding():
    shared = col("x") * (lit(2) + lit(3))
    fold_ = Folder(SCHEMA, {})
    a, b = fold_(shared + 1), fold_(shared > 0)
    assert a.left is b.left and repr(a.left) == '(col("x") * 5)'


def test_substitute_keeps_sharing_and_drops_aliases():
    y = col("x") + 1
    out = substitute(col("y") * col("y").alias("z"), {"y": y})
    assert out.left is y and out.right is y
    e = col("x") > 0
    assert substitute(e, {"q": lit(1)}) is e                 # nothing to rewrite: the same tree


def test_null_of_gives_a_typed_null():
    assert null_of(pa.null()).dtype(SCHEMA) == pa.null()
    assert null_of(pa.int32()).dtype(SCHEMA) == pa.int32() and is_null_const(null_of(pa.int32()))


# -- property: same type, same values ------------------------------------------------------------
NUM_LITS = st.one_of(st.none(), st.booleans(),
                     st.sampled_from([0, 1, -1, 2, -2, 7, I64_MIN, I64_MAX, 2**62, 2**53 + 1]),
                     st.sampled_from([0.0, -0.0, 0.5, -2.5, 3.0, NAN, INF, -INF, 2.0**63, 1e19]))


def trees(kind: str, depth: int = 3):
    """Random trees of ``kind`` "num" or "bool" over SCHEMA's numeric columns."""
    if kind == "bool":
        leaves = st.one_of(st.just(Col("b")), st.sampled_from([Lit(True), Lit(False), Lit(None)]))
    else:
        leaves = st.one_of(st.sampled_from([Col("x"), Col("y"), Col("f"), Col("n")]),
                           NUM_LITS.map(Lit))
    if depth == 0:
        return leaves
    num, boolean = trees("num", depth - 1), trees("bool", depth - 1)
    if kind == "bool":
        nodes = st.one_of(
            st.builds(BinOp, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), num, num),
            st.builds(BinOp, st.sampled_from(["&", "|"]), boolean, boolean),
            st.builds(Not, boolean),
            st.builds(IsNull, st.one_of(num, boolean), st.booleans()),
            st.builds(Cast, num, st.just(pa.bool_())),
            st.builds(IfElse, boolean, boolean, boolean))
    else:
        nodes = st.one_of(
            st.builds(BinOp, st.sampled_from(["+", "-", "*", "/", "//", "%"]), num, num),
            st.builds(Cast, st.one_of(num, boolean),
                      st.sampled_from([pa.int64(), pa.float64(), pa.int32()])),
            st.builds(IfElse, boolean, num, num),
            st.builds(lambda a: Func("abs", (a,)), num))
    return st.one_of(leaves, nodes)


def valid(e) -> bool:
    try:
        e.dtype(SCHEMA)
    except SchemaError:
        return False
    return True


@st.composite
def batches(draw):
    n = draw(st.integers(1, 6))
    nulls = draw(st.sets(st.sampled_from(["x", "y", "f", "b", "n"])))
    ints = st.one_of(st.sampled_from([0, 1, -1, 3, I64_MIN, I64_MAX]), st.integers(-5, 5))
    values = {"x": ints, "y": ints, "f": st.sampled_from([0.0, -1.5, 2.0, NAN, INF, 1e19]),
              "b": st.booleans(), "n": st.integers(-100, 100), "s": st.just("a")}
    cols = []
    for fld in SCHEMA:
        strat = st.one_of(st.none(), values[fld.name]) if fld.name in nulls else values[fld.name]
        cols.append(pa.array(draw(st.lists(strat, min_size=n, max_size=n)), fld.type))
    return pa.RecordBatch.from_arrays(cols, schema=SCHEMA)


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(e=st.one_of(trees("num"), trees("bool")).filter(valid), batch=batches())
def test_folding_keeps_the_type_and_the_values(e, batch):
    nullable = {f.name: batch.column(k).null_count > 0 for k, f in enumerate(batch.schema)}
    out = Folder(SCHEMA, nullable)(e)
    assert out.dtype(SCHEMA) == e.dtype(SCHEMA)
    want = reference.evaluate(e, batch).to_pylist()
    got = reference.evaluate(out, batch).to_pylist()
    assert all(same(a, b) for a, b in zip(got, want)), (e, out, got, want)
