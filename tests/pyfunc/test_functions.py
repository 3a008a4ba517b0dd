"""``map`` / ``filter`` / ``process`` with Python functions, end to end: what compiles and fuses,
what falls back (with one warning naming why), output schemas, and errors that name the step
and the record."""
from __future__ import annotations

import contextlib
import json
import math
import operator
import warnings

import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb import col
from heliosdb.errors import PlanError, PythonFallbackWarning, RecordError, SchemaError

THRESHOLD = 0.5


@pytest.fixture
def env():
    return hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=4))


@pytest.fixture
def table():
    return pa.table({"k": ["a", "b", "c", "d", "e", "f"], "v": [7, -2, 0, 3, 10, -5],
                     "x": [0.1, 0.9, 0.5, 0.7, 0.3, 1.5]})


@contextlib.contextmanager
def no_fallback():
    """A context in which any PythonFallbackWarning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PythonFallbackWarning)
        yield


def kernels(stream) -> int:
    return str(stream.explain()).count("fused kernel [")


# -- compiled and fused ---------------------------------------------------------------------------
def test_lambdas_fuse_with_expression_steps_into_one_kernel(env, table):
    s = (env.from_arrow(table)
         .filter(col("x") > 0.2)
         .map(lambda e: {"k": e.k, "v2": e.v * 2, "x": e.x})
         .with_columns(y=col("x") + 1)
         .filter(lambda e: e.v2 != 0 and e.y < 2.4)
         .select("k", "v2"))
    plan = str(s.explain())
    assert kernels(s) == 1 and "python [" not in plan
    assert "filter-2 -> map-3 -> with_columns-4 -> filter-5 -> select-6" in plan
    with no_fallback():
        assert s.collect().to_pydict() == {"k": ["b", "d", "e"], "v2": [-4, 6, 20]}


def test_def_function_with_branches_compiles_and_fuses(env, table):
    def bucket(e):
        """Docstrings are fine."""
        if e.v < 0:
            return {"k": e.k, "b": -1}
        elif e.v == 0:
            return {"k": e.k, "b": 0}
        return {"k": e.k, "b": 1 if e.x < THRESHOLD else 2}

    s = env.from_arrow(table).map(bucket).filter(col("b") != 0)
    assert kernels(s) == 1
    with no_fallback():
        assert s.collect().to_pydict() == {"k": ["a", "b", "d", "e", "f"], "b": [1, -1, 2, 1, -1]}


def test_map_returning_a_single_value_gives_a_value_column(env, table):
    s = env.from_arrow(table).map(lambda e: e.v * 2)
    assert s.schema == pa.schema([("value", pa.int64())])
    assert s.collect()["value"].to_pylist() == [14, -4, 0, 6, 20, -10]
    named = env.from_arrow(table).map(lambda e: e.x * 2, schema=pa.schema([("x2", pa.float64())]))
    assert named.collect().column_names == ["x2"]


def test_record_access_forms_and_whole_record_passthrough(env, table):
    s = env.from_arrow(table).map(lambda e: {**e, "v": e["v"] + 1, "w": e.get("missing", 0.5)})
    out = s.collect()
    assert out.column_names == ["k", "v", "x", "w"]
    assert out["v"].to_pylist() == [8, -1, 1, 4, 11, -4] and set(out["w"].to_pylist()) == {0.5}
    assert kernels(env.from_arrow(table).process(lambda e: e if e.v > 0 else None)) == 1
    for compiled in (True, False):
        kept = env.from_arrow(table).process(lambda e: e if e.v > 0 else None, compile=compiled)
        assert kept.collect().to_pydict() == {"k": ["a", "d", "e"], "v": [7, 3, 10],
                                              "x": [0.1, 0.7, 0.3]}


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "interpreted"])
def test_timestamps_strings_and_narrow_ints_pass_through_unchanged(env, compiled):
    t = pa.table({"ts": pa.array([1_700_000_000_123_456_789, None], pa.timestamp("ns", tz="UTC")),
                  "d": pa.array([19000, 19001], pa.date32()), "s": pa.array(["x", None], pa.large_string()),
                  "n": pa.array([1, 2], pa.int8()), "v": [1.5, 2.5]})
    out = env.from_arrow(t).map(lambda e: {"ts": e.ts, "d": e.d, "s": e.s, "n": e.n, "w": e.v * 2},
                                compile=compiled).collect()
    assert out.schema == pa.schema([t.schema.field("ts"), t.schema.field("d"), t.schema.field("s"),
                                    t.schema.field("n"), ("w", pa.float64())])
    assert out.select(["ts", "d", "s", "n"]).equals(t.select(["ts", "d", "s", "n"]))


def test_process_drops_records_returning_none(env, table):
    def positive(e):
        if e.v <= 0:
            return None
        return {"k": e.k, "sqrt": math.sqrt(e.v)}

    for compiled in (True, False):
        out = env.from_arrow(table).process(positive, compile=compiled).collect()
        assert out.to_pydict() == {"k": ["a", "d", "e"],
                                   "sqrt": [math.sqrt(7), math.sqrt(3), math.sqrt(10)]}


def test_closures_globals_and_defaults_are_read_as_constants(env, table):
    factor = 3

    def scaled(e, offset=100):
        return {"y": e.v * factor + offset if e.x > THRESHOLD else -offset}

    with no_fallback():
        out = env.from_arrow(table).map(scaled).collect()
    assert out["y"].to_pylist() == [-100, 94, -100, 109, -100, 85]


def test_filter_with_an_expression_still_works_and_a_bad_argument_is_refused(env, table):
    assert env.from_arrow(table).filter(col("v") > 0).collect().num_rows == 3
    with pytest.raises(PlanError, match="filter\\(\\) takes an expression"):
        env.from_arrow(table).filter(42)
    with pytest.raises(PlanError, match="map\\(\\) takes a function"):
        env.from_arrow(table).map("v * 2")


def test_unknown_field_is_a_schema_error_with_a_hint(env, table):
    with pytest.raises(SchemaError, match="you probably meant 'v'") as info:
        env.from_arrow(table).map(lambda e: e.vv * 2).name("double").collect()
    assert "'double'" in str(info.value)


# -- lambdas that share a line -------------------------------------------------------------------------
def test_lambdas_on_one_line_are_told_apart(env, table):
    s = env.from_arrow(table).filter(lambda e: e.v > 0).map(lambda e: {"neg": -e.v, "k": e.k})
    with no_fallback():
        assert s.collect().to_pydict() == {"neg": [-7, -3, -10], "k": ["a", "d", "e"]}


def test_identical_lambdas_on_one_line_compile(env, table):
    s = env.from_arrow(table).filter(lambda e: e.v > 0).filter(lambda e: e.v > 0)
    with no_fallback():
        assert s.collect()["v"].to_pylist() == [7, 3, 10]


def test_lambda_nested_in_a_lambda_line(env, table):
    make = lambda t: (lambda e: e.v > t)  # noqa: E731
    with no_fallback():
        assert env.from_arrow(table).filter(make(5)).collect()["v"].to_pylist() == [7, 10]


def test_lambdas_are_told_apart_by_byte_code_without_positions(env, table, monkeypatch):
    from heliosdb.pyfunc import source

    monkeypatch.setattr(source, "_by_positions", lambda found, code: [])
    k = 1
    s = env.from_arrow(table).filter(lambda e: e.v > k).map(lambda e: {"d": e.v - k})
    with no_fallback():
        assert s.collect()["d"].to_pylist() == [6, 2, 9]


# -- fallback -------------------------------------------------------------------------------------------
def test_fallback_warns_once_per_step_naming_the_construct(env, table):
    s = env.from_arrow(table).map(lambda e: {"k": e.k, "n": len(json.dumps(e.v))}).name("dump")
    with pytest.warns(PythonFallbackWarning) as record:
        first = s.collect()
        s.explain()
        second = s.collect()
    assert len(record) == 1
    msg = str(record[0].message)
    assert "step 'dump'" in msg and "calls json.dumps, which is not a math function" in msg
    assert first.equals(second) and first["n"].to_pylist() == [1, 2, 1, 1, 2, 2]
    assert "python [dump] map per record; not compiled: it calls json.dumps" in str(s.explain())


@pytest.mark.parametrize("fn, construct", [
    (lambda e: e.v.bit_length() > 1, "calls the method .bit_length()"),
    (lambda e: e.k.upper() == "A", "calls the str method .upper()"),
    (lambda e: [e.v][0] > 0, "builds a list"),
    (lambda e: e.v & 1 == 1, "uses the operator &"),
    (lambda e: sum([e.v, 1]) > 0, "builds a list"),
    (lambda e: math.hypot(e.v, 1.0) > 1, "calls math.hypot, which the compiler does not translate"),
    (lambda e: e.v ** e.v > 0, "raises an int to an int power"),
    (operator.itemgetter("v"), "is not a plain Python function or lambda (it is an "
                               "operator.itemgetter)"),
], ids=["method", "str-method", "list", "bitwise", "sum", "hypot", "int-power", "itemgetter"])
def test_fallback_reasons_name_the_construct(env, table, fn, construct):
    s = env.from_arrow(table).filter(fn)
    with pytest.warns(PythonFallbackWarning) as record:
        plan = str(s.explain())
    assert construct in str(record[0].message)
    assert "python [" in plan


def test_numpy_function_fallback_suggests_the_math_one(env, table):
    import numpy as np

    with pytest.warns(PythonFallbackWarning, match=r"numpy.sqrt.*math.sqrt compiles"):
        out = env.from_arrow(table).filter(lambda e: np.sqrt(e.x) > 0.5).collect()
    assert out.num_rows == 5


def test_statement_fallbacks(env, table):
    def loop(e):
        total = 0
        for _ in range(2):
            total += e.v
        return {"t": total}

    with pytest.raises(PlanError, match=r"it uses a for loop.*pass schema="):
        env.from_arrow(table).map(loop).collect()
    with pytest.warns(PythonFallbackWarning, match="uses a for loop"):
        out = env.from_arrow(table).map(loop, schema=pa.schema([("t", pa.int64())])).collect()
    assert out["t"].to_pylist() == [14, -4, 0, 6, 20, -10]


def test_fallback_output_types_are_inferred_or_declared(env, table):
    with pytest.warns(PythonFallbackWarning):
        s = env.from_arrow(table).map(lambda e: {"s": str(e.v), "n": len(e.k), "v": e.v})
        assert s.schema == pa.schema([("s", pa.string()), ("n", pa.int64()), ("v", pa.int64())])
    with pytest.raises(PlanError, match=r"step 'parse'.*json.loads.*\['obj'\].*schema="):
        env.from_arrow(table).map(lambda e: {"obj": json.loads("1")}).name("parse").collect()
    declared = pa.schema([("obj", pa.int64())])
    with pytest.warns(PythonFallbackWarning):
        out = env.from_arrow(table).map(lambda e: {"obj": json.loads(str(e.v))},
                                        schema=declared).collect()
    assert out["obj"].to_pylist() == [7, -2, 0, 3, 10, -5]


def test_compile_false_runs_in_python_without_a_warning(env, table):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = env.from_arrow(table).map(lambda e: {"q": e.v // 4, "r": e.x / 3}, compile=False)
        plan = str(s.explain())
        out = s.collect()
    assert "python [map-2] map per record (compile=False)" in plan
    compiled = env.from_arrow(table).map(lambda e: {"q": e.v // 4, "r": e.x / 3}).collect()
    assert out.equals(compiled)


def test_string_valued_conditionals_fall_back_with_the_reason(env, table):
    with pytest.warns(PythonFallbackWarning, match="chooses between two str values"):
        out = env.from_arrow(table).map(lambda e: {"t": "pos" if e.v > 0 else "neg"}).collect()
    assert out["t"].to_pylist() == ["pos", "neg", "neg", "pos", "pos", "neg"]


# -- errors name the step and the record -------------------------------------------------------------------
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "interpreted"])
def test_division_by_zero_names_step_record_and_python_error(env, table, compiled):
    s = env.from_arrow(table).map(lambda e: {"q": 10 // e.v}, compile=compiled).name("tenths")
    with pytest.raises(RecordError) as info:
        s.collect()
    err = info.value
    assert err.step == "tenths" and err.index == 2 and err.record == {"k": "c", "v": 0, "x": 0.5}
    assert isinstance(err.__cause__, ZeroDivisionError)
    assert "step 'tenths'" in str(err) and "record 2" in str(err)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "interpreted"])
def test_record_index_counts_across_batches(env, compiled):
    t = pa.table({"v": [1, 2, 3, 4, 5, 0, 7]})       # batch_size=4: the zero is row 1 of batch 2
    with pytest.raises(RecordError) as info:
        env.from_arrow(t).filter(lambda e: 100 % e.v == 0, compile=compiled).collect()
    assert info.value.index == 5


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "interpreted"])
def test_none_in_arithmetic_raises_type_error_like_python(env, compiled):
    t = pa.table({"v": pa.array([1, None, 3], pa.int64())})
    with pytest.raises(RecordError) as info:
        env.from_arrow(t).map(lambda e: {"w": e.v + 1}, compile=compiled).collect()
    assert info.value.index == 1 and isinstance(info.value.__cause__, TypeError)
    handled = env.from_arrow(t).map(lambda e: {"w": e.v + 1 if e.v is not None else None},
                                    compile=compiled).collect()
    assert handled["w"].to_pylist() == [2, None, 4]


def test_an_error_in_a_user_function_is_chained(env, table):
    def lookup(e):
        return {"r": {"a": 1}[e.k]}

    with pytest.warns(PythonFallbackWarning, match=r"indexes a dict \(\{'a': 1\}\[e.k\]\)"):
        with pytest.raises(RecordError) as info:
            env.from_arrow(table).map(lookup, schema=pa.schema([("r", pa.int64())])).collect()
    assert info.value.index == 1 and isinstance(info.value.__cause__, KeyError)
    assert "raised by lookup at test_functions.py" in str(info.value)


def test_int_overflow_raises_instead_of_wrapping(env):
    t = pa.table({"v": pa.array([2**62, 3], pa.int64())})
    for compiled in (True, False):
        with pytest.raises(RecordError) as info:
            env.from_arrow(t).map(lambda e: e.v * 4, compile=compiled).collect()
        assert info.value.index == 0 and isinstance(info.value.__cause__, OverflowError)


def test_wrong_result_types_in_python_name_the_record(env, table):
    with pytest.warns(PythonFallbackWarning):
        s = env.from_arrow(table).map(lambda e: {"v": json.loads("1.5") if e.v == 0 else e.v},
                                      schema=pa.schema([("v", pa.int64())]))
        with pytest.raises(RecordError, match="record 2") as info:
            s.collect()
    assert isinstance(info.value.__cause__, TypeError)


def test_map_returning_none_or_other_keys_fails_on_that_record(env, table):
    for compiled in (True, False):
        with pytest.raises(RecordError, match="use process\\(\\) to drop records") as info:
            env.from_arrow(table).map(lambda e: {"v": e.v} if e.v else None,
                                      compile=compiled).collect()
        assert info.value.index == 2
        with pytest.raises(RecordError, match="keys") as info:
            env.from_arrow(table).map(lambda e: {"v": e.v} if e.v else {"w": 1},
                                      compile=compiled).collect()
        assert info.value.index == 2 and isinstance(info.value.__cause__, ValueError)


def test_records_are_read_only(env, table):
    def mutate(e):
        e["v"] = 1
        return e

    with pytest.warns(PythonFallbackWarning, match="assigns to an item"):
        with pytest.raises(RecordError, match="read-only"):
            env.from_arrow(table).map(mutate, schema=table.schema).collect()


def test_null_checks_fold_away_when_the_columns_have_no_nulls(table):
    from heliosdb.connectors.sinks import MemorySink
    from heliosdb.operators.fused import FusedOperator
    from heliosdb.plan import build
    from heliosdb.logical import Node, Sink

    env = hdb.StreamEnvironment()
    s = env.from_arrow(table).filter(lambda e: e.x > 0.2).map(lambda e: {**e, "x2": e.x * 2.0})
    plan = build(env, [Node(Sink(MemorySink()), s._node, "out")])[0]
    op = next(o for st in plan.stages for o in st.operators if isinstance(o, FusedOperator))
    (compiled,) = op._compiled.values()          # warmed for null-free input
    assert compiled.check_ids == [] and "err" not in compiled.source
    with_nulls = pa.table({"k": ["a"], "v": [1], "x": pa.array([None], pa.float64())})
    assert env.from_arrow(with_nulls).filter(lambda e: e.x is None or e.x > 0.2).collect().num_rows == 1
    with pytest.raises(RecordError) as info:
        env.from_arrow(with_nulls).filter(lambda e: e.x > 0.2).collect()
    assert isinstance(info.value.__cause__, TypeError) and "e.x is None" in str(info.value)


def _identity(fn):
    return fn


def test_decorated_def_functions_are_found(env, table):
    @_identity
    def big(e):
        return e.v > 5

    with no_fallback():
        assert env.from_arrow(table).filter(big).collect()["v"].to_pylist() == [7, 10]


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "interpreted"])
@pytest.mark.parametrize("x, y, error", [
    (-8.0, 0.5, TypeError),                  # a complex result cannot be stored in a column
    (-2.335036524926179e-262, -1.5, OverflowError),   # Python's complex power overflows
    (0.0, -1.0, ZeroDivisionError),
    (10.0, 400.0, OverflowError),
], ids=["complex", "complex-overflow", "zero-to-negative", "overflow"])
def test_float_power_errors_match_python(env, compiled, x, y, error):
    t = pa.table({"x": [2.0, x], "y": [2.0, y]})
    with pytest.raises(RecordError) as info:
        env.from_arrow(t).map(lambda e: {"p": e.x ** e.y}, compile=compiled).collect()
    assert info.value.index == 1 and type(info.value.__cause__) is error


def test_a_returned_time_that_a_column_cannot_hold_exactly_is_an_error_not_truncated():
    """map() output into a timestamp[ms] column: microseconds would be cut off; the record
    and the column are named instead."""
    import datetime as dt

    import pytest

    schema = pa.schema([("t", pa.timestamp("ms", "UTC"))])
    ok = dt.datetime(2024, 1, 1, 0, 0, 0, 5_000, tzinfo=dt.timezone.utc)       # 5 ms: fits
    out = (hdb.StreamEnvironment().from_iterable([{"a": 1}])
           .map(lambda e: {"t": [ok][0]}, schema=schema, compile=False).collect())
    assert out["t"].to_pylist() == [ok]
    cut = dt.datetime(2024, 1, 1, 0, 0, 0, 5_123, tzinfo=dt.timezone.utc)     # 5.123 ms
    with pytest.raises(hdb.RecordError, match="'t'"):
        (hdb.StreamEnvironment().from_iterable([{"a": 1}])
         .map(lambda e: {"t": [cut][0]}, schema=schema, compile=False).collect())
