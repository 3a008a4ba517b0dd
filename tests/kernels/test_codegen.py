"""Generated fused kernels (``heliosdb.kernels.codegen``) against ``kernels.reference``.

Every distinct program compiles its own Numba kernel (and one more per null pattern of the
columns it reads), so the programs are a fixed, parametrized list that together use every
operator, and hypothesis generates only the data: int64 / float64 / bool / string columns with
nulls, NaN, infinities, zeros, negatives and int64 extremes, empty batches and sliced batches.
Programs are compiled the way ``operators/fused.py`` does it: specialised for which input
columns of the batch hold nulls.

Semantics (``heliosdb/expr.py``): SQL nulls, Kleene ``&``/``|``, ``/`` true division, ``//``
and ``%`` floor like Python with null for an integer zero divisor, float->int casts truncate and
give null for NaN or out-of-range values.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from heliosdb.expr import Expr, col, lit, parse_projection
from heliosdb.kernels import reference
from heliosdb.kernels.codegen import FusedProgram, compile_program

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
NAN = float("nan")
INF = float("inf")

SCHEMA = pa.schema([("i", pa.int64()), ("j", pa.int64()), ("f", pa.float64()),
                    ("g", pa.float64()), ("b", pa.bool_()), ("s", pa.string())])
i, j, f, g, b, s = (col(n) for n in SCHEMA.names)


# -- programs ----------------------------------------------------------------------------------
class Case(NamedTuple):
    outputs: List[Tuple[str, Expr]]
    predicate: Optional[Expr] = None


CASES: Dict[str, Case] = {
    "int_add_sub_mul_wrap": Case([("add", i + j), ("sub", i - 3), ("mul", i * j)]),
    "float_and_mixed_arith": Case([("x", f * 2.5 - g), ("y", f + i), ("z", 1 - f)]),
    "negation": Case([("ni", -i), ("nf", -f)]),
    "true_division": Case([("ii", i / j), ("ff", f / g), ("fi", f / i)]),
    "int_floor_division": Case([("x", i // j)]),
    "int_modulo": Case([("x", i % j), ("y", i % 3)]),
    "float_floor_division_and_modulo": Case([("x", f // g), ("y", f % g), ("z", i // f)]),
    "power": Case([("ff", f ** g), ("i2", i ** 2), ("fi", f ** j)]),
    "int_comparisons": Case([("lt", i < j), ("le", i <= j), ("gt", i > 0), ("ge", i >= j),
                             ("eq", i == j), ("ne", i != 5)]),
    "float_comparisons": Case([("lt", f < g), ("le", f <= 0.5), ("eq", f == g), ("ne", f != g),
                               ("ge", f >= -INF)]),
    "int_float_comparison": Case([("lt", i < f), ("eq", i == f)]),
    "kleene_and": Case([("x", (f > 0) & b), ("y", b & lit(None)), ("z", (i > j) & (f < g))]),
    "kleene_or": Case([("x", (i < 0) | b), ("y", lit(None) | b), ("z", (i > j) | (f < g))]),
    "not": Case([("x", ~b), ("y", ~(f > g))]),
    "is_null": Case([("x", f.is_null()), ("y", (i + j).is_not_null()), ("z", s.is_null()),
                     ("w", (i // j).is_null())]),
    "cast_float_to_int64": Case([("x", f.cast("int64"))]),
    "cast_float_to_int32": Case([("x", f.cast("int32"))]),
    "cast_int_to_int32_float_bool": Case([("x", i.cast("int32")), ("y", i.cast("float64")),
                                          ("z", i.cast("bool"))]),
    "cast_bool_and_float": Case([("x", b.cast("int64")), ("y", b.cast("float64")),
                                 ("z", f.cast("bool")), ("w", f.cast("float64"))]),
    "literals": Case([("x", i + None), ("y", lit(7)), ("z", f * NAN), ("w", lit(2.5) - i),
                      ("v", lit(None).cast("float64")), ("u", f + INF)]),
    "string_comparison": Case([("eq", s == "x"), ("lt", s < "y"), ("ne", s != "")]),
    "filter_on_strings_keeps_passthrough_columns": Case(
        [("i", i), ("s", s), ("x", f + 1)], (s != "y") & (i > 0)),
    "filter_with_nullable_predicate": Case(
        [("f", f), ("b", b), ("i2", i * 2)], (f > 0) | b.is_null()),
    "filter_on_bool_column_drops_nulls": Case([("i", i), ("s", s)], b),
    "filter_on_division_result": Case([("q", i // j), ("g", g)], (i % j) == 0),
}


def compile_for(program: FusedProgram, batch: pa.RecordBatch):
    """Compile as ``FusedOperator`` does: specialised for the batch's nullable columns."""
    nullable = {fld.name: batch.column(k).null_count > 0 for k, fld in enumerate(batch.schema)}
    return compile_program(program, nullable)


# -- chained programs (filter -> with_columns -> select) ----------------------------------------
Step = Tuple[str, object]


def chain_rename_and_refilter() -> List[Step]:
    y = col("y")
    return [
        ("filter", f > -1.0),
        ("with_columns", {"y": i * 2, "f": f + 1.0}),
        ("filter", y > 0),
        ("select", ("s", y.alias("yy"), f.alias("ff"), (y + f).alias("z"))),
    ]


def chain_select_then_filter_on_new_column() -> List[Step]:
    k, zero = col("k"), col("zero")
    return [
        ("with_columns", {"k": i % 3, "t": (f // 2.0).cast("int64")}),
        ("select", ("k", (k == 0).alias("zero"), "b", "t", col("s").alias("name"))),
        ("filter", ~zero | b),
        ("with_columns", {"t": col("t") + k, "k": k - 1}),
    ]


def chain_overwrite_column_used_later() -> List[Step]:
    return [
        ("with_columns", {"i": i + 1, "j": i * j}),     # j reads the *old* i
        ("filter", col("j").is_not_null() & (col("s") != "x")),
        ("select", ("j", "i", (col("i") - col("j")).alias("d"), "g")),
    ]


CHAINS: Dict[str, Callable[[], List[Step]]] = {
    "rename_and_refilter": chain_rename_and_refilter,
    "select_then_filter_on_new_column": chain_select_then_filter_on_new_column,
    "overwrite_column_used_later": chain_overwrite_column_used_later,
}


def build_chain(steps: List[Step]) -> FusedProgram:
    program = FusedProgram.identity(SCHEMA)
    for n, (kind, arg) in enumerate(steps):
        name = f"{kind}{n}"
        if kind == "filter":
            program.add_filter(arg, name)
        elif kind == "with_columns":
            program.add_columns(arg, name)
        else:
            program.select(parse_projection(arg, name), name)
    return program


def reference_chain(steps: List[Step], batch: pa.RecordBatch) -> pa.RecordBatch:
    """Run the steps one at a time with ``reference.evaluate`` (no fusion, no substitution)."""
    cur = batch
    for kind, arg in steps:
        if kind == "filter":
            cur = cur.filter(reference.evaluate(arg, cur).fill_null(False))
            continue
        if kind == "with_columns":
            cols = {n: cur.column(k) for k, n in enumerate(cur.schema.names)}
            cols.update({n: reference.evaluate(e, cur) for n, e in arg.items()})
        else:
            cols = {n: reference.evaluate(e, cur) for n, e in parse_projection(arg, "select")}
        cur = pa.RecordBatch.from_arrays(list(cols.values()), names=list(cols))
    return cur


# -- data --------------------------------------------------------------------------------------
INTS = st.one_of(
    st.integers(I64_MIN, I64_MAX),
    st.integers(-10, 10),
    st.sampled_from([0, 1, -1, 2, -2, 3, I64_MIN, I64_MAX, I64_MIN + 1, 2**53 + 1, -(2**53) - 1]),
)
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-100, 100),
    st.sampled_from([0.0, -0.0, NAN, INF, -INF, 0.5, -0.5, 1.5, -2.5, 3.0, 2.0**53,
                     9.2e18, 9.22e18, -9.22e18, 2.0**63, -(2.0**63), 1e300,
                     2147483647.5, 2147483648.0, -2147483648.5, -2147483649.0]),
)
STRINGS = st.one_of(st.sampled_from(["x", "y", "", "xy", "é"]), st.text(max_size=3))
VALUES = {"i": INTS, "j": INTS, "f": FLOATS, "g": FLOATS, "b": st.booleans(), "s": STRINGS}


# Which columns may hold nulls.  Each pattern is one more kernel per program, so there are four:
# none, all, and two complementary mixes (every binary case sees a nullable side next to a
# null-free one, in both orders).
NULL_PATTERNS = [set(), set(SCHEMA.names), {"i", "f", "b"}, {"j", "g", "s"}]


@st.composite
def batches(draw, max_rows: int = 20) -> pa.RecordBatch:
    """A batch of SCHEMA, maybe with nulls, sometimes a slice of a larger batch."""
    n = draw(st.integers(0, max_rows))
    sliced = draw(st.booleans())
    lead, trail = (draw(st.integers(1, 5)), draw(st.integers(0, 5))) if sliced else (0, 0)
    total = lead + n + trail
    nullable = draw(st.sampled_from(NULL_PATTERNS))
    arrays = []
    for fld in SCHEMA:
        values = VALUES[fld.name]
        if fld.name in nullable:
            values = st.one_of(st.none(), values)
        column = draw(st.lists(values, min_size=total, max_size=total))
        if fld.name in nullable and n and None not in column[lead: lead + n]:
            column[draw(st.integers(lead, lead + n - 1))] = None     # the slice holds a null
        arrays.append(pa.array(column, fld.type))
    batch = pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)
    return batch.slice(lead, n) if sliced else batch


def batch_of(**columns) -> pa.RecordBatch:
    """A batch of SCHEMA from a few columns; the others are filled with a harmless value."""
    n = len(next(iter(columns.values())))
    fill = {"i": 1, "j": 1, "f": 1.0, "g": 1.0, "b": True, "s": "x"}
    return pa.RecordBatch.from_arrays(
        [pa.array(columns.get(fld.name, [fill[fld.name]] * n), fld.type) for fld in SCHEMA],
        schema=SCHEMA)


# -- comparison --------------------------------------------------------------------------------
def same_value(a, b) -> bool:
    """Equal, NaN equal to NaN; floats may differ by a few ulps (``**`` goes through different
    libm paths in Numba and numpy; + - * / are correctly rounded in both and agree exactly)."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or (math.isfinite(a) and math.isfinite(b)
                          and abs(a - b) <= 4 * math.ulp(max(abs(a), abs(b))))
    return type(a) is type(b) and a == b


def assert_same_table(got, exp) -> None:
    got_cols = [(fld.name, fld.type) for fld in got.schema]
    exp_cols = [(fld.name, fld.type) for fld in exp.schema]
    assert got_cols == exp_cols
    assert got.num_rows == exp.num_rows
    for name in got.schema.names:
        gv, ev = got.column(name).to_pylist(), exp.column(name).to_pylist()
        bad = [(r, x, y) for r, (x, y) in enumerate(zip(gv, ev)) if not same_value(x, y)]
        assert not bad, f"column {name!r}: (row, kernel, reference) {bad[:5]}"


def check_case(case: Case, batch: pa.RecordBatch) -> None:
    program = FusedProgram(SCHEMA, list(case.outputs), case.predicate)
    got = compile_for(program, batch)(batch)
    exp = reference.fused(program.outputs, program.predicate, batch)
    assert_same_table(got, exp)


def edge_batch() -> pa.RecordBatch:
    """Every program also runs on this batch: int64 extremes, floats at the int64 and int32
    cast bounds, integers next to the nearest float, zero and -1 divisors, NaN, infinities."""
    return batch_of(
        i=[I64_MIN, 2**53 + 1, I64_MAX, 2**62, None, -7, 0],
        j=[-1, 0, 2, -3, 7, None, I64_MIN],
        f=[9.22e18, 2.0**53, 2.0**63, -2147483648.5, NAN, -INF, None],
        g=[2.0, 0.0, -0.0, NAN, INF, -INF, None],
        b=[True, False, None, True, False, None, True],
        s=["x", "y", None, "", "é", "xy", "x"],
    )


# -- tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
@settings(max_examples=30, deadline=None)
@given(batch=batches())
@example(batch=edge_batch())
def test_fused_program_matches_reference(name, batch):
    check_case(CASES[name], batch)


@pytest.mark.parametrize("name", list(CHAINS))
@settings(max_examples=30, deadline=None)
@given(batch=batches())
@example(batch=edge_batch())
def test_chained_steps_fuse_into_one_kernel_matching_step_by_step_reference(name, batch):
    steps = CHAINS[name]()
    program = build_chain(steps)
    got = compile_for(program, batch)(batch)
    assert_same_table(got, reference_chain(steps, batch))
    # ... and the fused program itself agrees with the reference's fused evaluation
    assert_same_table(got, reference.fused(program.outputs, program.predicate, batch))


@pytest.mark.parametrize("name", ["int_add_sub_mul_wrap", "kleene_and", "string_comparison",
                                  "filter_on_strings_keeps_passthrough_columns"])
def test_empty_batch_gives_empty_typed_output(name):
    check_case(CASES[name], batch_of(i=[]))
    check_case(CASES[name], batch_of(i=[1, 2, 3]).slice(3, 0))


def test_kernel_is_specialised_per_null_pattern():
    # The same program compiled for a null-free batch must not be used for a batch with nulls
    # (FusedOperator keys its cache by null pattern); both specialisations agree with the reference.
    case = CASES["kleene_or"]
    check_case(case, batch_of(i=[-1, 1, 2], j=[0, 0, 5], b=[False, False, True]))
    check_case(case, batch_of(i=[-1, None, 2], j=[0, 0, None], b=[None, False, None]))


def test_integer_zero_divisor_gives_null():
    batch = batch_of(i=[7, -7, 0, I64_MIN], j=[0, 0, 0, 0])
    out = compile_for(FusedProgram(SCHEMA, [("q", i // j), ("r", i % j)]), batch)(batch)
    assert out.column("q").to_pylist() == [None] * 4
    assert out.column("r").to_pylist() == [None] * 4


def test_integer_floor_division_and_modulo_floor_like_python():
    xs, ys = [7, -7, 7, -7, 6, I64_MAX], [2, 2, -2, -2, -4, I64_MIN]
    batch = batch_of(i=xs, j=ys)
    out = compile_for(FusedProgram(SCHEMA, [("q", i // j), ("r", i % j)]), batch)(batch)
    assert out.column("q").to_pylist() == [x // y for x, y in zip(xs, ys)]
    assert out.column("r").to_pylist() == [x % y for x, y in zip(xs, ys)]


def test_int64_min_floor_divided_by_minus_one_wraps_like_other_integer_overflow():
    # 2**63 does not fit: + - * wrap (two's complement), and the reference wraps // the same way
    check_case(CASES["int_floor_division"], batch_of(i=[I64_MIN, I64_MIN], j=[-1, 1]))


def test_filter_on_overflowing_int_arithmetic_sees_the_wrapped_value():
    # i * 2 and i + i wrap to negative numbers for i >= 2**62 (as the output column shows), so a
    # filter "> 0" on the same expression must drop those rows, and "i + 2**62 > i" must be false
    # where the sum wraps.
    batch = batch_of(i=[2**62, 2**62 + 5, -(2**62) - 1, 3])
    check_case(Case([("y", i * 2)], i * 2 > 0), batch)
    check_case(Case([("y", i + i)], (i + i) > 0), batch)
    check_case(Case([("y", i + 2**62)], (i + 2**62) > i), batch)


def test_float_to_int64_cast_keeps_large_in_range_values():
    # |x| in [9.2e18, 2**63) fits in int64 and must truncate, not become 0
    check_case(CASES["cast_float_to_int64"], batch_of(f=[9.2e18, 9.22e18, -9.22e18, -(2.0**63)]))


def test_float_to_int32_cast_truncates_toward_zero_at_the_lower_bound():
    # -2147483648.5 truncates to -2147483648 == INT32_MIN, which fits; -2147483649.0 does not
    check_case(CASES["cast_float_to_int32"],
               batch_of(f=[-2147483648.5, -2147483649.0, 2147483647.5, 2147483648.0]))


def test_int_float_comparison_agrees_with_reference():
    # 2**53 + 1 and 2**63 - 1 are not equal to the nearest floats 2**53 and 2**63 when compared
    # exactly (the reference, like Python); converting the int to float first makes them equal
    check_case(CASES["int_float_comparison"],
               batch_of(i=[2**53 + 1, I64_MAX], f=[2.0**53, 2.0**63]))


def test_kleene_logic_truth_table():
    # every (left, right) pair of {true, false, null}
    vals = [True, False, None]
    pairs = [(x, y) for x in vals for y in vals]
    as_float = {True: 1.0, False: -1.0, None: None}                 # f > 0 gives x back
    batch = batch_of(b=[y for _, y in pairs], f=[as_float[x] for x, _ in pairs])
    program = FusedProgram(SCHEMA, [("and", (f > 0) & b), ("or", (f > 0) | b)])
    out = compile_for(program, batch)(batch)
    assert out.column("and").to_pylist() == [
        False if False in (x, y) else None if None in (x, y) else True for x, y in pairs]
    assert out.column("or").to_pylist() == [
        True if True in (x, y) else None if None in (x, y) else False for x, y in pairs]
    check_case(CASES["kleene_and"], batch)
    check_case(CASES["kleene_or"], batch)


@settings(max_examples=30, deadline=None)
@given(batch=batches(max_rows=30))
@example(batch=batch_of(f=[NAN, INF, -INF, 2.0**63, -0.5, 1e300]))
def test_float_casts_null_nan_and_out_of_range(batch):
    check_case(Case([("x", f.cast("bool")), ("y", f.cast("float64"))],
                    (f.cast("int64").is_null()) | (f.cast("int32") == 0)), batch)


# The kernel W1's stateless steps compile to (value > 0.2, v2 = value * 2.0, keeping ts and key
# for the window), for its null-free input.  W1's throughput is measured with this loop: a
# change here is a change to the benchmark's hot path, to be made on purpose.
W1_KERNEL = """\
import numpy as np
from heliosdb.kernels._jit import jit


@jit
def kernel(c0, c1, c2, n, o0, o1, o2):
    j = 0
    for i in range(n):
        t1 = c0[i] > np.float64(0.2)
        t2 = np.float64(c0[i]) * np.float64(np.float64(2.0))
        keep = t1
        o0[j] = c1[i]
        o1[j] = c2[i]
        o2[j] = t2
        j += 1 if keep else 0
    return j
"""


def test_w1_stateless_steps_compile_to_the_w1_kernel():
    schema = pa.schema([("ts", pa.int64()), ("key", pa.int64()), ("value", pa.float64()),
                        ("category", pa.string())])
    program = FusedProgram.identity(schema)
    program.add_filter(col("value") > 0.2, "filter")
    program.add_columns({"v2": col("value") * 2.0}, "with_columns")
    program.prune({"ts", "key", "v2"})
    compiled = compile_program(program, {name: False for name in schema.names})
    assert compiled.source == W1_KERNEL


def test_constants_are_folded_before_the_kernel_is_written():
    batch = batch_of(i=[1, None, 3])
    program = FusedProgram(SCHEMA, [("c", (lit(1) + lit(2)) * i), ("z", i // 0),
                                    ("t", i.is_null() | (lit(2.0) > lit(1)))])
    compiled = compile_for(program, batch)
    for computed_per_row in ("np.int64(1)", "np.int64(2)", "//", "2.0"):
        assert computed_per_row not in compiled.source
    assert compiled(batch).to_pydict() == {"c": [3, None, 9], "z": [None] * 3, "t": [True] * 3}
    check_case(Case(program.outputs), batch)
