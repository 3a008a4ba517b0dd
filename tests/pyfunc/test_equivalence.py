"""Compiled and interpreted per-event functions give the same results, and fail alike.

Each function below is run twice over the same hypothesis-generated batch: compiled into a
fused kernel, and record by record in Python (``compile=False``).  Both must produce the same
table (floats bit for bit) or fail on the same record with the same Python exception type (a
RecordError whose ``__cause__`` is, e.g., ZeroDivisionError).  When they fail, the records
before the failing one are run again and compared, so failing examples still check values.

Every function is planned once per null pattern, and a pattern compiles one kernel, so the
data keeps the pattern fixed per function: columns a function reads as possibly None always
hold a None (in a first row that the function handles), the others never do.
"""
from __future__ import annotations

import math
import struct
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heliosdb.errors import RecordError
from heliosdb.kernels.program import FusedProgram
from heliosdb.operators.fused import FusedOperator
from heliosdb.operators.pyfunc import PythonFunctionOperator
from heliosdb.pyfunc import plan_function
from heliosdb.logical import FUNCTION_STEPS, Node

SCHEMA = pa.schema([("i", pa.int64()), ("j", pa.int64()), ("x", pa.float64()),
                    ("y", pa.float64()), ("b", pa.bool_()), ("s", pa.string()),
                    ("n", pa.int32())])
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
LIMIT = 1000.0
OFFSET = 3


def scale(v):          # a global function: calling it is not compiled (see test_fallback)
    return v * 2


# -- the functions ---------------------------------------------------------------------------------
def branches(e):
    """Assignments and if/elif/else with returns."""
    v = e.x * 2
    if v > 1:
        return {"v": v, "k": 1}
    elif e.i < 0:
        w = -v
        return {"v": w, "k": 2}
    k = 3
    if e.b:
        k += 1
    return {"v": 0.0, "k": k}


def keep_non_negative(e):
    if e.i is None or e.i < 0:
        return None
    return {"i": e.i, "sq": e.i * e.i, "half": e.i / 2}


def with_default(e, factor=OFFSET):
    return e.i * factor + (1 if e.b else 0)


class Case(NamedTuple):
    kind: str
    fn: Callable
    nulls: Tuple[str, ...] = ()        # columns that hold a None in every batch


CASES: Dict[str, Case] = {
    "int_arithmetic": Case("map", lambda e: {"a": e.i + e.j, "b": e.i - e.j, "c": e.i * e.j,
                                             "d": e.i // e.j, "m": e.i % e.j}),
    "true_division": Case("map", lambda e: {"q": e.i / e.j, "r": e.x / e.y, "s": e.i / e.x}),
    "float_floor_and_mod": Case("map", lambda e: {"a": e.x // e.y, "b": e.x % e.y,
                                                  "c": e.i // e.x, "d": e.i % e.y}),
    "powers": Case("map", lambda e: {"a": e.x ** 2, "b": e.i ** 3, "c": e.x ** e.y,
                                     "d": e.i ** -1, "e": 2 ** 0.5, "f": e.j ** 0}),
    "signs": Case("map", lambda e: {"a": -e.i, "b": -e.x, "c": abs(e.i), "d": abs(e.x),
                                    "e": +e.b, "f": -e.n}),
    "mixed_comparisons": Case("map", lambda e: {"lt": e.i < e.x, "eq": e.i == e.x,
                                                "ge": e.x >= e.j, "chain": 0 <= e.i < e.j,
                                                "ne": e.n != e.y}),
    "boolean_logic": Case("map", lambda e: {"a": e.b and e.i > 0, "b": e.b or e.x > 0.5,
                                            "c": not e.b, "d": e.i > 0 and e.j > 1,
                                            "e": e.j or 7, "f": e.b ^ (e.i > 1),
                                            "g": e.i and e.j, "h": e.x or e.y}),
    "conditionals": Case("map", lambda e: {"a": e.x if e.x > e.y else e.y,
                                           "b": e.i if e.b else 0, "c": 1.5 if e.b else 2,
                                           "d": e.i // e.j if e.j != 0 else None}),
    "none_handling": Case("map", lambda e: {"a": e.x is None, "b": 0 if e.i is None else e.i * 2,
                                            "c": e.x == None, "d": e.s == "a",  # noqa: E711
                                            "e": e.i or 0, "f": e.s != e.s,
                                            "g": e.i if e.i is not None else -1}, ("i", "x", "s")),
    "math_functions": Case("map", lambda e: {"s": math.sqrt(e.x), "l": math.log(e.x),
                                             "e": math.exp(e.y), "f": math.floor(e.x),
                                             "c": math.ceil(e.y), "r": round(e.x),
                                             "h": math.atan2(e.x, e.y), "p": math.pow(e.x, e.y),
                                             "l2": math.log(e.x, 2), "t": math.tanh(e.y),
                                             "fm": math.fmod(e.x, e.y), "nan": math.isnan(e.y),
                                             "ac": math.acos(e.y), "deg": math.degrees(e.x),
                                             "pi": math.pi * e.i, "sh": math.sinh(e.y)}),
    "min_max": Case("map", lambda e: {"mn": min(e.x, e.y), "mx": max(e.i, e.j, 0),
                                      "c": min(e.x, 0), "d": max(e.n, e.i)}),
    "conversions": Case("map", lambda e: {"f": float(e.i), "i": int(e.x), "b": bool(e.x),
                                          "bi": int(e.b), "t": math.trunc(e.y),
                                          "fb": float(e.b)}),
    "strings": Case("map", lambda e: {"s": e.s, "eq": e.s == "a", "lt": e.s < "b",
                                      "in": e.s in ("a", "c"), "t": bool(e.s), "tag": "yes",
                                      "k": e.b and e.s == "a"}),
    "constants": Case("map", lambda e: {"a": e.x * LIMIT + OFFSET, "b": e["i"] - OFFSET,
                                        "c": e.get("j") * 2, "d": e.get("nope", 5)}),
    "def_with_branches": Case("map", branches),
    "default_argument": Case("map", with_default),
    "scalar_result": Case("map", lambda e: e.i * 2 + 1),
    "whole_record": Case("map", lambda e: {**e, "z": e.x + 1, "i": e.j}),
    "filter_comparison": Case("filter", lambda e: e.x > 0.2),
    "filter_logic": Case("filter", lambda e: e.i % 3 == 0 and (e.x > 0 or e.b)),
    "filter_truthy_int": Case("filter", lambda e: e.i),
    "filter_none": Case("filter", lambda e: e.s is not None and e.s != "" and not e.x is None,
                        ("s", "x")),
    "process_drop": Case("process", keep_non_negative, ("i",)),
    "process_conditional": Case("process", lambda e: {"x": e.x, "s": e.s} if e.x > 0 else None),
    "process_scalar": Case("process", lambda e: e.x * 2 if e.b else None),
}


# -- running one function both ways ------------------------------------------------------------------
def run(case: Case, batch: pa.RecordBatch, compiled: bool):
    """(table, None) or (None, (record index, type of the Python error))."""
    node = Node(FUNCTION_STEPS[case.kind](case.fn, compile=compiled), None, "step")
    planned = plan_function(node, batch.schema)
    assert planned.compiled == compiled, planned.reason
    if compiled:
        program = FusedProgram.identity(batch.schema)
        planned.apply(program)
        op = FusedOperator(program, "step")
    else:
        op = PythonFunctionOperator(planned.kind, planned.fn, planned.name, planned.input_schema,
                                    planned.output_schema, planned.where, planned.reason)
    try:
        out = op.process_batch(batch)
    except RecordError as err:
        assert err.step == "step"
        return None, (err.index, type(err.__cause__))
    return pa.Table.from_batches(out, schema=planned.output_schema), None


def _key(v):
    if isinstance(v, float):
        return ("nan",) if v != v else ("f", struct.pack("<d", v))
    return v


def assert_same(a: pa.Table, b: pa.Table) -> None:
    assert a.schema == b.schema
    for name in a.column_names:
        x, y = a[name].to_pylist(), b[name].to_pylist()
        assert [_key(v) for v in x] == [_key(v) for v in y], name


# -- data ----------------------------------------------------------------------------------------------
small_ints = st.integers(-6, 6)
ints = st.one_of(small_ints, small_ints, small_ints, st.integers(-(2**40), 2**40),
                 st.sampled_from([I64_MIN, I64_MAX, 2**53 + 1, -(2**31), 2**32]))
floats = st.one_of(st.floats(-4, 4), st.floats(-4, 4), st.integers(-3, 3).map(float),
                   st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, -0.0, 0.5, 1.0, -1.0, 1e308, 2.0**63, 800.0]))
row = st.fixed_dictionaries({
    "i": ints, "j": ints, "x": floats, "y": floats, "b": st.booleans(),
    "s": st.sampled_from(["a", "b", "c", "", "ab"]), "n": st.integers(-(2**31), 2**31 - 1)})


def make_batch(case: Case, rows) -> pa.RecordBatch:
    first = {"i": 1, "j": 1, "x": 0.5, "y": 0.25, "b": True, "s": "a", "n": 1}
    first.update(dict.fromkeys(case.nulls))
    data = [first] + rows
    if case.nulls:        # sprinkle more Nones into the columns the function handles
        for k, r in enumerate(data[1:]):
            for c in case.nulls:
                if (k + len(c)) % 3 == 0:
                    r[c] = None
    return pa.RecordBatch.from_pylist(data, schema=SCHEMA)


@pytest.mark.parametrize("name", sorted(CASES))
@given(rows=st.lists(row, max_size=25))
@settings(max_examples=40, deadline=None)
def test_compiled_and_interpreted_agree(name, rows):
    case = CASES[name]
    batch = make_batch(case, [dict(r) for r in rows])
    got, got_err = run(case, batch, compiled=True)
    want, want_err = run(case, batch, compiled=False)
    assert got_err == want_err, (got_err, want_err)
    if got_err is None:
        assert_same(got, want)
        return
    index = got_err[0]
    if index > 0:                       # the records before the failing one still agree
        head = batch.slice(0, index)
        got, e1 = run(case, head, compiled=True)
        want, e2 = run(case, head, compiled=False)
        assert e1 is None and e2 is None
        assert_same(got, want)


def test_every_case_compiles():
    batch = make_batch(CASES["int_arithmetic"], [])
    for name, case in CASES.items():
        node = Node(FUNCTION_STEPS[case.kind](case.fn), None, name)
        planned = plan_function(node, make_batch(case, []).schema)
        assert planned.compiled, (name, planned.reason)
    assert batch.num_rows == 1
