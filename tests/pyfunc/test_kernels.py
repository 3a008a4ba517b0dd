"""The kernel side of compiled Python functions: ``kernels/pyops.py`` against Python's own
integer arithmetic, and the ``if_else`` / ``func`` expression nodes and fused-program checks in
generated kernels against ``kernels.reference``.

Python's ints are exact, so the reference for every pyops helper is Python itself.  Float
results are compared bit for bit (NaN equal to NaN, -0.0 distinct from 0.0): the kernels call
the same libm as Python's math module.
"""
from __future__ import annotations

import math
import struct

import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from heliosdb.expr import FUNCTIONS, IfElse, col, func, if_else, lit
from heliosdb.kernels import pyops, reference
from heliosdb.kernels.codegen import FusedProgram, compile_program

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
ints = st.one_of(st.integers(I64_MIN, I64_MAX), st.integers(-(2**54), 2**54), st.integers(-40, 40),
                 st.sampled_from([0, 1, -1, I64_MIN, I64_MAX, 2**53, 2**53 + 1, -(2**53) - 1]))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5).map(float),
                   st.sampled_from([0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 2.0**63, -(2.0**63),
                                    9.007199254740993e15, 710.0, -745.5, 1e-320]))


def same(a, b) -> bool:
    """Equal as values of the same type, floats bit for bit (NaN == NaN, -0.0 != 0.0)."""
    if isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, float) and isinstance(b, float)):
            return False
        return struct.pack("<d", a) == struct.pack("<d", b) or (a != a and b != b)
    return a == b and type(a) is type(b)


# -- pyops: Python's integer semantics ----------------------------------------------------------
@given(ints, ints)
@example(0, 2**60)
@example(I64_MIN, -1)
@example(2**53 + 1, 3)
@example(-(2**63), 7)
@settings(max_examples=500, deadline=None)
def test_int_truediv_rounds_once_like_python(a, b):
    if b == 0:
        return
    assert same(pyops.int_truediv(a, b), a / b)


@given(ints, ints)
@example(I64_MAX, 1)
@example(I64_MIN, -1)
@example(-1, I64_MIN)
@example(2**32, 2**31)
@settings(max_examples=500, deadline=None)
def test_overflow_tests_match_python_range(a, b):
    fits = lambda v: I64_MIN <= v <= I64_MAX  # noqa: E731
    assert pyops.add_overflows(a, b) == (not fits(a + b))
    assert pyops.sub_overflows(a, b) == (not fits(a - b))
    assert pyops.mul_overflows(a, b) == (not fits(a * b))


@given(st.one_of(ints, st.integers(-20, 20)), st.integers(0, 130))
@example(-2, 63)
@example(2, 63)
@example(-1, 2**62)
@settings(max_examples=500, deadline=None)
def test_ipow_and_its_overflow_test_match_python(a, b):
    assert pyops.ipow(a, b) == (pow(a, b, 2**64) + 2**63) % 2**64 - 2**63
    if b <= 70 or a in (-1, 0, 1):
        assert pyops.ipow_overflows(a, b) == (not I64_MIN <= a ** b <= I64_MAX)
    else:
        assert pyops.ipow_overflows(a, b)          # |a| >= 2 and b > 70


@given(ints, floats)
@example(2**53 + 1, float(2**53))
@example(I64_MAX, 2.0**63)
@example(I64_MIN, -(2.0**63))
@settings(max_examples=500, deadline=None)
def test_int_float_comparison_is_exact(a, f):
    expected = 2 if f != f else (-1 if a < f else (1 if a > f else 0))
    assert pyops.cmp_int_float(a, f) == expected


# -- if_else / func in generated kernels vs the reference ---------------------------------------
SCHEMA = pa.schema([("x", pa.float64()), ("y", pa.float64()), ("i", pa.int64()), ("j", pa.int64()),
                    ("b", pa.bool_())])
x, y, i, j, b = (col(n) for n in SCHEMA.names)


def _unary_float_funcs():
    return [n for n, (arity, kind) in FUNCTIONS.items() if arity == 1 and n not in ("abs", "neg")]


OUTPUTS = {
    **{f"f_{n}": func(n, x) for n in _unary_float_funcs()},
    **{f"f_{n}": func(n, x, y) for n in ("atan2", "copysign", "fmod", "pow")},
    **{f"i_{n}": func(n, i, j) for n in ("int_truediv", "ipow", "add_overflows", "sub_overflows",
                                         "mul_overflows", "ipow_overflows")},
    "cmp": func("cmp_int_float", i, x),
    "abs_i": func("abs", i), "abs_x": func("abs", x), "neg_i": func("neg", i),
    "neg_x": func("neg", x), "abs_b": func("abs", b),
    "ite_num": if_else(x > 0, i, x), "ite_int": if_else(b, i, j),
    "ite_bool": if_else(i > j, b, x < y), "ite_null": if_else(b, None, i),
    "ite_null_bool": if_else(x > y, b, None), "ite_null_cond": if_else(lit(None).cast("bool"), i, j),
}


def _rows(n_max=12):
    row = st.fixed_dictionaries({
        "x": st.one_of(st.none(), floats), "y": st.one_of(st.none(), floats),
        "i": st.one_of(st.none(), ints), "j": st.one_of(st.none(), st.integers(-3, 130), ints),
        "b": st.one_of(st.none(), st.booleans())})
    return st.lists(row, max_size=n_max)


def _run(program: FusedProgram, batch: pa.RecordBatch):
    nullable = {f.name: batch.column(k).null_count > 0 for k, f in enumerate(batch.schema)}
    return compile_program(program, nullable)(batch)


@pytest.fixture(scope="module")
def function_program():
    p = FusedProgram.identity(SCHEMA)
    p.add_columns(OUTPUTS, "funcs")
    return p


@given(rows=_rows(), nulls=st.booleans())
@settings(max_examples=60, deadline=None)
def test_func_and_if_else_match_reference(function_program, rows, nulls):
    # Two null patterns only (every column nullable, or none), so two kernels are compiled.
    if nulls:
        rows = rows + [dict.fromkeys(SCHEMA.names)]
    else:
        rows = [{k: (v if v is not None else (False if k == "b" else 0)) for k, v in r.items()}
                for r in rows]
        rows = [{k: (float(v) if k in "xy" else v) for k, v in r.items()} for r in rows]
    batch = pa.RecordBatch.from_pylist(rows, schema=SCHEMA)
    got = _run(function_program, batch).to_pydict()
    want = reference.fused(function_program.outputs, None, batch).to_pydict()
    for name in OUTPUTS:
        for r, (g, w) in enumerate(zip(got[name], want[name])):
            assert same(g, w) or (g is None and w is None), (name, rows[r], g, w)


def test_if_else_types_promote_and_refuse_mixing_bool_with_numbers():
    assert if_else(b, i, x).dtype(SCHEMA) == pa.float64()
    assert if_else(b, i, None).dtype(SCHEMA) == pa.int64()
    assert if_else(b, b, None).dtype(SCHEMA) == pa.bool_()
    with pytest.raises(Exception, match="mix boolean and numeric"):
        IfElse(b, b, i).dtype(SCHEMA)


# -- checks ---------------------------------------------------------------------------------------
def test_first_failed_check_is_the_first_row_in_row_order():
    p = FusedProgram.identity(SCHEMA)
    p.add_function([(j == 0, "zero"), (i < 0, "negative")], x > 0, None, "step-1")
    p.add_function([(i == 5, "five")], None, None, "step-2")
    rows = [{"x": 1.0, "y": 0.0, "i": 1, "j": 1, "b": True},
            {"x": -1.0, "y": 0.0, "i": 5, "j": 1, "b": True},    # dropped: step-2 never sees it
            {"x": 2.0, "y": 0.0, "i": -3, "j": 0, "b": True},    # both step-1 checks: first wins
            {"x": 2.0, "y": 0.0, "i": 5, "j": 1, "b": True}]
    batch = pa.RecordBatch.from_pylist(rows, schema=SCHEMA)
    failed = []

    def on_check(check, row):
        failed.append((check.info, check.step, row))
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        _run_with(p, batch, on_check)
    assert failed == [("zero", "step-1", 2)]
    assert reference.first_failed_check([c.cond for c in p.checks], batch) == (0, 2)
    without = batch.slice(3)
    with pytest.raises(RuntimeError):
        _run_with(p, without, on_check)
    assert failed[-1] == ("five", "step-2", 0)


def _run_with(program, batch, on_check):
    nullable = {f.name: batch.column(k).null_count > 0 for k, f in enumerate(batch.schema)}
    return compile_program(program, nullable)(batch, on_check)


def test_a_program_without_checks_generates_the_same_kernel_as_before():
    p = FusedProgram.identity(SCHEMA)
    p.add_filter(x > 0.2, "f")
    p.add_columns({"v2": x * 2.0}, "w")
    src = compile_program(p, {}).source
    assert "err" not in src and "import math" not in src and "pyops" not in src


def test_math_helpers_in_reference_follow_ieee_not_python_exceptions():
    assert math.isnan(reference.func("sqrt", -1.0))
    assert reference.func("log", 0.0) == float("-inf")
    assert reference.func("exp", 1000.0) == float("inf")
