"""Aggregate specs and their registry (``heliosdb.aggregates``): how a user names an aggregate,
the errors a wrong one gets, which accumulators an operator's aggregates share, and each
accumulator's snapshot columns and restore.  Results of every aggregate against the oracle,
on both backends: ``tests/state/test_group_state.py``.
"""
from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

import heliosdb as hdb
import heliosdb.aggregates as aggregates
from heliosdb.aggregates import AggregatePlan, AggSpec, Selection
from heliosdb.aggregates.count import RowCount
from heliosdb.aggregates.numeric import NumericStats
from tests.oracle import ALL_AGGS, agg_specs

SCHEMA = pa.schema([("v", pa.int64()), ("f", pa.float64()), ("s", pa.string()), ("b", pa.bool_())])
BUILT_IN = ("count", "sum", "min", "max", "mean", "var", "stddev", "first", "last", "count_distinct", "quantile")


def test_every_built_in_aggregate_is_registered_and_exported_under_its_name():
    assert set(BUILT_IN) <= set(aggregates.kinds())
    for kind in BUILT_IN:
        assert getattr(hdb, kind) is aggregates.constructors()[kind]
        assert kind in hdb.__all__


@pytest.mark.parametrize("name,kind,column,q,acc", ALL_AGGS, ids=[a[0] for a in ALL_AGGS])
def test_a_spec_by_kind_is_the_spec_by_name(name, kind, column, q, acc):
    by_name = agg_specs()[name]
    args = (column, q, acc) if kind == "quantile" else (column,)
    assert AggSpec(kind, *args) == by_name and hash(AggSpec(kind, *args)) == hash(by_name)
    assert type(by_name) is aggregates.aggregate_class(kind) and by_name.kind == kind
    assert pickle.loads(pickle.dumps(by_name)) == by_name       # specs travel to Ray workers


def test_reprs_are_what_the_user_wrote():
    assert [repr(a) for a in (hdb.count(), hdb.count("v"), hdb.sum("v"), hdb.quantile("v", 0.9))] == [
        "count()", "count('v')", "sum('v')", "quantile('v', 0.9)"]


@pytest.mark.parametrize("make,message", [
    (lambda: AggSpec("median", "v"), r"unknown aggregate 'median'; use one of \(.*'quantile'"),
    (lambda: hdb.sum(None), r"sum\(\) needs a column name, e.g. hdb.sum\('value'\)"),
    (lambda: hdb.quantile("v", 1.5), r"needs 0 <= q <= 1, got 1.5"),
    (lambda: hdb.quantile("v", 0.5, 0.0), r"relative_accuracy=\) must be between 0 and 1"),
])
def test_a_wrong_spec_is_refused_with_what_to_do(make, message):
    with pytest.raises(hdb.SchemaError, match=message):
        make()


@pytest.mark.parametrize("agg,message", [
    (hdb.sum("s"), r"step 'w': sum\('s'\) needs a numeric column, but 's' is string; use count\(\)"),
    (hdb.mean("b"), r"mean\('b'\) needs a numeric column, but 'b' is bool"),
    (hdb.first("vv"), r"step 'w': unknown column 'vv'; .* you probably meant 'v'"),
    (hdb.count("nope"), r"unknown column 'nope'"),
])
def test_an_aggregate_over_a_column_that_does_not_fit_names_the_step(agg, message):
    with pytest.raises(hdb.SchemaError, match=message):
        AggregatePlan(SCHEMA, [("x", agg)], "w")


def test_a_second_class_of_the_same_kind_is_refused():
    with pytest.raises(TypeError, match="aggregate 'sum' is defined twice"):
        type("OtherSum", (AggSpec,), {"kind": "sum"})


def test_w1_aggregates_share_one_accumulator_one_kernel_call_per_batch():
    # count, sum, min, max, mean of v2 (the W1 pipeline): the row counter and one NumericStats
    plan = AggregatePlan(pa.schema([("v2", pa.float64())]),
                         [("count", hdb.count()), ("sum", hdb.sum("v2")), ("min", hdb.min("v2")),
                          ("max", hdb.max("v2")), ("mean", hdb.mean("v2"))], "w1")
    assert [type(a) for a in plan.accumulators] == [RowCount, NumericStats]
    assert [i for _, i in plan.readers] == [0, 1, 1, 1, 1]


def test_count_of_a_column_alone_keeps_only_its_non_null_count():
    # count('f') alone: f.nn only; with sum('f') the shared stats are the float ones
    alone = AggregatePlan(SCHEMA, [("n", hdb.count("f"))], "w")
    both = AggregatePlan(SCHEMA, [("n", hdb.count("f")), ("s", hdb.sum("f"))], "w")
    assert [n for n, _ in alone.accumulators[0].empty(4).arrays()] == ["f.nn"]
    assert [n for n, _ in both.accumulators[0].empty(4).arrays()] == ["f.nn", "f.nan", "f.sum", "f.min", "f.max"]


def test_snapshot_columns_are_in_accumulator_order_whatever_the_order_of_the_aggregates():
    # rows, stats, var, first, last, then the value sets' own tables: the checkpoint format
    aggs = [("l", hdb.last("s")), ("q", hdb.quantile("f", 0.5)), ("d", hdb.count_distinct("s")),
            ("sd", hdb.stddev("f")), ("fi", hdb.first("v")), ("m", hdb.max("v")), ("n", hdb.count())]
    plan = AggregatePlan(SCHEMA, aggs, "w")
    accs = [a.empty(2) for a in plan.accumulators]
    sel = Selection(2, np.arange(2, dtype=np.int64))
    cols, extra = {}, {}
    for a in accs:
        c, e = a.state(sel)
        cols.update(c)
        extra.update(e)
    assert list(cols) == ["rows", "v.nn", "v.sum", "v.min", "v.max", "f.var_cnt", "f.var_mean", "f.var_m2",
                          "v.first_seq", "v.first", "s.last_seq", "s.last"]
    assert list(extra) == ["distinct.s", "sketch.f.0.01"]


@pytest.mark.parametrize("name", [a[0] for a in ALL_AGGS])
def test_each_accumulator_restores_the_groups_its_snapshot_holds(name):
    # groups 0..2 updated, snapshot of groups [2, 0] -> restored as 0, 1 -> same results
    agg = agg_specs()[name]
    plan = AggregatePlan(SCHEMA, [(name, agg)], "w")
    acc = plan.accumulators[0].empty(4)
    batch = pa.record_batch({"v": [1, None, 3, 4, 5], "f": [0.5, float("nan"), None, -0.0, 2.0],
                             "s": ["a", "b", None, "a", "c"], "b": [True] * 5}, schema=SCHEMA)
    acc.update(np.array([0, 2, 2, 0, 1]), acc.prepare(batch), np.arange(5, dtype=np.int64))
    ids = np.array([2, 0], np.int64)
    cols, extra = acc.state(Selection(3, ids))
    back = plan.accumulators[0].empty(16)
    back.restore(pa.table(cols) if cols else pa.table({"x": [0, 0]}), extra, 16, owned=False)
    got, want = agg.evaluate(back, Selection(2)).to_pylist(), agg.evaluate(acc, Selection(3, ids)).to_pylist()
    assert repr(got) == repr(want)            # NaN and -0.0 included
