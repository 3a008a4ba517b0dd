"""The join spec's validation, the output schema (Polars' rules), key type checks, and what the
operator declares."""
from __future__ import annotations

import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb.errors import ConfigError, ExecutionError, SchemaError
from heliosdb.operators.join import JoinOperator, JoinSpec, make_join, output_schema
from heliosdb.operators.join.asof import AsofJoin
from heliosdb.operators.join.session import SessionWindowJoin
from heliosdb.operators.join.symmetric import SymmetricJoin
from heliosdb.operators.join.window import PaneWindowJoin

LEFT = pa.schema([pa.field("ts", pa.int64(), False), pa.field("k", pa.int64(), False), ("v", pa.float64())])
RIGHT = pa.schema([pa.field("ts", pa.int64(), False), pa.field("k", pa.int32(), False), ("v_right", pa.int8()),
                   ("v", pa.string())])


def spec(kind="interval", **kw):
    base = dict(left_on="k", right_on="k", left_time="ts", right_time="ts")
    extra = {"window": dict(window=hdb.TumblingWindow.of(10)), "interval": dict(between=(0, 5)),
             "asof": dict(how="left"), "regular": {}}.get(kind, {})
    return JoinSpec(kind, **{**base, **extra, **kw})


def test_keys_kept_once_with_on_and_clashes_suffixed():
    s = output_schema(LEFT, pa.schema([("ts", pa.int64()), ("k", pa.int32()), ("w", pa.string())]),
                      spec(coalesce_keys=True))
    assert s.names == ["ts", "k", "v", "ts_right", "w"]
    assert s.field("k").type == pa.int64()


def test_left_on_right_on_keep_both_key_columns():
    s = output_schema(LEFT, pa.schema([("id", pa.int64()), ("t2", pa.int64())]),
                      spec(right_on="id", right_time="t2"))
    assert s.names == ["ts", "k", "v", "id", "t2"]


def test_a_clash_that_the_suffix_does_not_solve_is_an_error():
    with pytest.raises(SchemaError, match="even with suffix '_right'"):
        output_schema(LEFT, RIGHT, spec())


@pytest.mark.parametrize("right_cols", [["v", "v_right"], ["v_right", "v"]])
def test_a_suffixed_name_never_takes_another_columns_name_whatever_the_order(right_cols):
    # As Polars (DuplicateError): right's v would become v_right, which right has already.
    right = pa.schema([("ts", pa.int64()), ("k", pa.int32())] + [(c, pa.int8()) for c in right_cols])
    with pytest.raises(SchemaError, match=r"'v' clashes with the output column 'v_right' even with suffix "
                                          r"'_right' \(the right input has a column 'v_right'\)"):
        output_schema(LEFT, right, spec())
    assert output_schema(LEFT, right, spec(suffix="_r")).names[-2:] == \
        ["v_r" if c == "v" else c for c in right_cols]


@pytest.mark.parametrize("how, left_null, right_null", [
    ("inner", False, False), ("left", False, True), ("right", True, False), ("full", True, True)])
def test_outer_joins_make_the_padded_side_nullable(how, left_null, right_null):
    right = pa.schema([pa.field("t2", pa.int64(), False), pa.field("k", pa.int32(), False)])
    s = output_schema(LEFT, right, spec(how=how, right_time="t2"))
    assert s.field("ts").nullable == left_null and s.field("t2").nullable == right_null
    s = output_schema(LEFT, right, spec(how=how, right_time="t2", coalesce_keys=True))
    assert not s.field("k").nullable                  # both keys are non-null: the coalesced one is too


def test_asof_pads_the_right_side_and_window_joins_lead_with_the_window():
    right = pa.schema([pa.field("t2", pa.int64(), False), ("k", pa.int64())])
    assert output_schema(LEFT, right, spec("asof", right_time="t2")).field("t2").nullable
    s = output_schema(LEFT, right, spec("window", right_time="t2", coalesce_keys=True))
    assert s.names[:2] == ["window_start", "window_end"]
    assert s.field("window_start").type == pa.timestamp("ns", tz="UTC") and not s.field("window_end").nullable


def test_a_left_column_named_like_the_window_columns_is_an_error():
    left = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("window_start", pa.int64())])
    with pytest.raises(SchemaError, match="window_start"):
        output_schema(left, LEFT, spec("window"))


@pytest.mark.parametrize("kw, match", [
    (dict(kind="hash"), "join kind must be one of"),
    (dict(right_on=["k", "v"]), "must name as many"),
    (dict(how="outer"), "how must be one of"),
    (dict(left_time=None), "needs the event-time column"),
    (dict(between=(5, 0)), "lower <= upper"),
    (dict(between=None), "between="),
    (dict(left_on=[]), "column name or a list"),
    (dict(suffix=""), "suffix"),
])
def test_spec_errors_say_what_to_do(kw, match):
    kw = dict(kw)
    kind = kw.pop("kind", "interval")
    with pytest.raises(ConfigError, match=match):
        spec(kind, **kw)


def test_kind_specific_errors():
    with pytest.raises(ConfigError, match="needs window="):
        spec("window", window=None)
    with pytest.raises(ConfigError, match="must be a window spec"):
        spec("window", window="10s")
    with pytest.raises(ConfigError, match="tolerance"):
        spec("asof", tolerance_ns=-1)
    with pytest.raises(ConfigError, match="ttl"):
        spec("regular", ttl_ns=0)
    with pytest.raises(ConfigError, match="on both sides or on neither"):
        spec("regular", right_time=None)


@pytest.mark.parametrize("lt, rt, ok", [
    (pa.int64(), pa.int8(), True), (pa.string(), pa.large_string(), True), (pa.float32(), pa.float64(), True),
    (pa.timestamp("ms"), pa.timestamp("ms", tz="UTC"), True), (pa.timestamp("ms"), pa.timestamp("us"), False),
    (pa.int64(), pa.string(), False), (pa.bool_(), pa.int64(), False), (pa.date32(), pa.date32(), True),
    (pa.list_(pa.int64()), pa.list_(pa.int64()), False),
])
def test_key_types_must_compare(lt, rt, ok):
    left = pa.schema([("ts", pa.int64()), ("k", lt)])
    right = pa.schema([("ts", pa.int64()), ("k", rt)])
    if ok:
        make_join(spec(coalesce_keys=True), left, right)
    else:
        with pytest.raises(SchemaError, match="cannot be compared"):
            make_join(spec(coalesce_keys=True), left, right)


def test_missing_columns_are_named():
    with pytest.raises(SchemaError, match="'nope' is not in"):
        make_join(spec(left_on="nope"), LEFT, LEFT)
    with pytest.raises(SchemaError, match="time column 'when'"):
        make_join(spec(left_time="when"), LEFT, LEFT)


@pytest.mark.parametrize("kind, window, cls", [
    ("window", hdb.TumblingWindow.of(10), PaneWindowJoin), ("window", hdb.SlidingWindow.of(10, 5), PaneWindowJoin),
    ("window", hdb.SessionWindow.with_gap(10), SessionWindowJoin), ("interval", None, SymmetricJoin),
    ("regular", None, SymmetricJoin), ("asof", None, AsofJoin)])
def test_make_join_picks_the_operator_and_declares_it(kind, window, cls):
    op = make_join(spec(kind, **({"window": window} if window else {}), coalesce_keys=True), LEFT, LEFT, name="j")
    assert isinstance(op, cls) and isinstance(op, JoinOperator)
    assert (op.inputs, op.stateful, op.parallel_kind, op.late_events) == (2, True, "by_key", 0)
    assert op.watermark_ns() is None and op.state_size_bytes() == 0
    assert op.describe().startswith(f"join[j] {kind} join")
    with pytest.raises(ExecutionError, match="process_side"):
        op.process_batch(pa.record_batch({"ts": [1], "k": [1], "v": [1.0]}))
    op.on_watermark(5 * 10**9)
    assert op.watermark_ns() == 5 * 10**9


def test_null_event_time_is_an_error_naming_the_column():
    op = make_join(spec(coalesce_keys=True), LEFT, LEFT)
    with pytest.raises(hdb.errors.DataError, match="time column 'ts' is null"):
        op.process_side(0, pa.record_batch({"ts": pa.array([None], pa.int64()), "k": [1], "v": [1.0]}))


def test_timestamp_time_columns_carry_their_unit():
    left = pa.schema([("ts", pa.timestamp("us")), ("k", pa.int64())])
    op = make_join(spec(between=(0, 10**6), coalesce_keys=True), left, left)
    op.process_side(0, pa.record_batch({"ts": pa.array([0], pa.timestamp("us")), "k": [1]}))
    out = op.process_side(1, pa.record_batch({"ts": pa.array([1_000], pa.timestamp("us")), "k": [1]}))
    assert out[0].num_rows == 1
    out = op.process_side(1, pa.record_batch({"ts": pa.array([1_001], pa.timestamp("us")), "k": [1]}))
    assert out == []


def test_a_kept_key_takes_the_type_both_sides_fit():
    left = pa.schema([("ts", pa.int64()), ("k", pa.int32())])
    right = pa.schema([("ts", pa.int64()), ("k", pa.int64())])
    op = make_join(spec("regular", how="right", coalesce_keys=True), left, right)
    assert op.output_schema.field("k").type == pa.int64()
    op.process_side(0, pa.record_batch({"ts": [1], "k": pa.array([7], pa.int32())}))
    out = op.process_side(1, pa.record_batch({"ts": [2, 3], "k": [7, 2**40]}))
    out += op.close()
    assert sorted(v for b in out for v in b.column("k").to_pylist()) == [7, 2**40]
    snap_rows = make_join(spec("regular", coalesce_keys=True), left, right)
    snap_rows.process_side(1, pa.record_batch({"ts": [2], "k": [2**40]}))
    assert snap_rows.snapshot().tables["right"].column("k").to_pylist() == [2**40]
