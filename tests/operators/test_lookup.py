"""Lookup joins (``stream.join(hdb.table(...))``) against DuckDB's SQL join of the same rows,
on hypothesis-generated streams and tables: duplicate and null keys, strings, two key columns
of different types, inner and left; then Polars' naming rules, the errors, pruning, replicas.
"""
from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import heliosdb as hdb
from heliosdb.errors import ConfigError, PlanError, SchemaError
from heliosdb.operators.lookup import LookupJoinOperator

STREAM = pa.schema([("k1", pa.int32()), ("k2", pa.string()), ("v", pa.int64()), ("name", pa.string())])
TABLE = pa.schema([("id1", pa.int64()), ("id2", pa.large_string()), ("name", pa.string()), ("w", pa.float64())])
STRINGS = ["a", "b", "", "é", "long string key"]

ints = st.one_of(st.none(), st.integers(-2, 4))
strs = st.one_of(st.none(), st.sampled_from(STRINGS))


@st.composite
def stream_and_table(draw):
    n = draw(st.integers(0, 60))
    m = draw(st.integers(0, 12))
    stream = pa.table({"k1": draw(st.lists(ints, min_size=n, max_size=n)),
                       "k2": draw(st.lists(strs, min_size=n, max_size=n)),
                       "v": list(range(n)),
                       "name": [f"s{i}" for i in range(n)]}, schema=STREAM)
    table = pa.table({"id1": draw(st.lists(ints, min_size=m, max_size=m)),
                      "id2": draw(st.lists(strs, min_size=m, max_size=m)),
                      "name": [f"t{i}" for i in range(m)],
                      "w": [i / 2 for i in range(m)]}, schema=TABLE)
    return stream, table


KEYS = {"int": (["k1"], ["id1"]), "string": (["k2"], ["id2"]), "both": (["k1", "k2"], ["id1", "id2"])}


def duckdb_join(stream: pa.Table, table: pa.Table, left_on, right_on, how: str) -> list:
    con = duckdb.connect()
    con.register("s", stream)
    con.register("t", table)
    cond = " AND ".join(f"s.{a} = t.{b}" for a, b in zip(left_on, right_on))
    rest = [c for c in table.column_names if c not in right_on]
    cols = ", ".join(["s.*"] + [f"t.{c}" for c in rest])
    rows = con.execute(f"SELECT {cols} FROM s {how.upper()} JOIN t ON {cond}").fetchall()
    return sorted(rows, key=repr)


def rows(table: pa.Table) -> list:
    return sorted((tuple(r.values()) for r in table.to_pylist()), key=repr)


def run(stream: pa.Table, table, batch: int = 7, parallelism: int = 1, **join) -> pa.Table:
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=batch, parallelism=1))
    s = env.from_arrow(stream).join(table, **join)
    if parallelism > 1:
        s = s.set_parallelism(parallelism)
    return s.collect()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_and_table(), st.sampled_from(sorted(KEYS)), st.sampled_from(["inner", "left"]),
       st.integers(1, 25))
def test_the_join_equals_duckdbs(data, keys, how, batch):
    stream, table = data
    left_on, right_on = KEYS[keys]
    got = run(stream, hdb.table(table), batch, left_on=left_on, right_on=right_on, how=how)
    assert got.column_names == STREAM.names + [("name_right" if c == "name" else c)
                                               for c in TABLE.names if c not in right_on]
    assert rows(got) == duckdb_join(stream, table, left_on, right_on, how)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_and_table(), st.sampled_from(sorted(KEYS)), st.sampled_from(["inner", "left"]))
def test_two_replicas_give_the_same_rows_in_the_same_order(data, keys, how):
    stream, table = data
    left_on, right_on = KEYS[keys]
    spec = hdb.table(table)
    one = run(stream, spec, 5, left_on=left_on, right_on=right_on, how=how)
    two = run(stream, spec, 5, parallelism=2, left_on=left_on, right_on=right_on, how=how)
    assert two.equals(one)


def test_on_keeps_the_key_once_and_suffixes_a_clash():
    # Polars: df.join(other, on="id") -> id, v, name, v_right
    stream = pa.table({"id": [1, 2, 3], "v": [10, 20, 30], "name": ["x", "y", "z"]})
    table = hdb.table(pa.table({"id": [2, 3, 3], "v": [0.5, 1.5, 2.5]}))
    out = run(stream, table, on="id")
    assert out.column_names == ["id", "v", "name", "v_right"]
    assert out.to_pydict() == {"id": [2, 3, 3], "v": [20, 30, 30], "name": ["y", "z", "z"],
                               "v_right": [0.5, 1.5, 2.5]}
    out = run(stream, table, on=["id"], how="left", suffix="_dim")
    assert out.column_names == ["id", "v", "name", "v_dim"] and out["v_dim"].to_pylist() == [None, 0.5, 1.5, 2.5]


def test_a_null_key_never_matches_and_a_left_join_keeps_its_row():
    stream = pa.table({"k": pa.array([None, 1], pa.int64()), "s": ["a", None]})
    table = hdb.table(pa.table({"k": pa.array([None, 1], pa.int64()), "s": pa.array([None, "a"]),
                                "x": ["null-key", "one"]}))
    assert run(stream, table, on="k", how="left")["x"].to_pylist() == [None, "one"]
    assert run(stream, table, on=["k", "s"], how="left")["x"].to_pylist() == [None, None]
    assert run(stream, table, on="s").to_pydict() == {"k": [None], "s": ["a"], "k_right": [1], "x": ["one"]}


def test_integer_keys_of_any_width_and_sign_match_by_value():
    stream = pa.table({"k": pa.array([1, 255, -1, None], pa.int16())})
    table = hdb.table(pa.table({"k": pa.array([255, 1, 2**64 - 1], pa.uint64()), "x": ["ff", "one", "max"]}))
    assert run(stream, table, on="k", how="left")["x"].to_pylist() == ["one", "ff", None, None]
    big = hdb.table(pa.table({"k": pa.array([-1, 5], pa.int64()), "x": ["minus", "five"]}))
    stream = pa.table({"k": pa.array([2**64 - 1, 5], pa.uint64())})     # never equals -1
    assert run(stream, big, on="k", how="left")["x"].to_pylist() == [None, "five"]


def test_timestamps_of_one_unit_match_across_time_zones_and_other_units_do_not():
    stream = pa.table({"t": pa.array([0, 5], pa.timestamp("ms", tz="UTC"))})
    table = hdb.table(pa.table({"t": pa.array([5], pa.timestamp("ms")), "x": ["five"]}))
    assert run(stream, table, on="t", how="left")["x"].to_pylist() == [None, "five"]
    other = hdb.table(pa.table({"t": pa.array([5], pa.timestamp("us")), "x": ["five"]}))
    with pytest.raises(PlanError, match="cannot be compared"):
        run(stream, other, on="t")


def test_pandas_and_polars_tables_and_several_jobs_share_one_spec():
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    stream = pa.table({"u": [1, 2]})
    for data in (pd.DataFrame({"id": [1, 2], "n": ["a", "b"]}), pl.DataFrame({"id": [1, 2], "n": ["a", "b"]})):
        spec = hdb.table(data)
        for _ in range(2):
            assert run(stream, spec, left_on="u", right_on="id")["n"].to_pylist() == ["a", "b"]


def test_mismatched_keys_are_plan_errors_that_name_both_columns():
    env = hdb.StreamEnvironment()
    s = env.from_iterable([{"user": 1, "v": 1.0}])
    t = hdb.table(pa.table({"id": ["1"], "v": ["x"]}))
    with pytest.raises(PlanError, match=r"column 'user' of the stream \(int64\) cannot be compared with "
                                        r"column 'id' of the table \(string\)"):
        _ = s.join(t, left_on="user", right_on="id").schema
    with pytest.raises(SchemaError, match="join key column 'nope' is not in the table"):
        _ = s.join(t, left_on="user", right_on="nope").schema
    with pytest.raises(PlanError, match="how='inner' or 'left', got 'right': the table has no event time"):
        s.join(t, left_on="user", right_on="id", how="right")
    with pytest.raises(PlanError, match="not both"):
        s.join(t, on="v", left_on="user")
    with pytest.raises(PlanError, match="left_on= and right_on= together"):
        s.join(t, left_on="user")
    with pytest.raises(PlanError, match="matched pairwise"):
        s.join(t, left_on=["user", "v"], right_on="id")
    clash = hdb.table(pa.table({"k": [1], "v": [1], "v_right": [2]}))
    with pytest.raises(PlanError, match="would be named 'v_right'"):
        _ = env.from_iterable([{"k": 1, "v": 1, "v_right": 0}]).join(clash, on="k").schema
    for cols in (["v", "v_right"], ["v_right", "v"]):     # the table's own v_right, in either order
        clash = hdb.table(pa.table({"k": [1], **{c: [1] for c in cols}}))
        with pytest.raises(PlanError, match="'v' would be named 'v_right', which the table already has"):
            _ = env.from_iterable([{"k": 1, "v": 1}]).join(clash, on="k").schema
    with pytest.raises(ConfigError, match="re-reads a Parquet URL"):
        hdb.table(pa.table({"k": [1]}), refresh=10)


class CountingTable:
    """A table loader that records what it is asked for."""

    schema = pa.schema([("id", pa.int64()), ("a", pa.string()), ("b", pa.float64())])
    refresh_ns = None

    def __init__(self):
        self.reads = []

    def read(self, columns):
        self.reads.append(list(columns))
        return pa.table({"id": [1, 2], "a": ["x", "y"], "b": [0.5, 1.5]}).select(columns)

    def describe(self):
        return "counting table"


def test_only_the_columns_later_steps_read_are_read_and_taken():
    loader = CountingTable()
    env = hdb.StreamEnvironment()
    s = env.from_iterable([{"u": 1, "x": 5, "y": 6}, {"u": 2, "x": 7, "y": 8}])
    from heliosdb.logical import LookupJoin

    joined = s._then(LookupJoin(loader, ("u",), ("id",)))
    out = joined.key_by("x").aggregate(total=hdb.sum("b")).collect()
    assert out.to_pydict() == {"x": [5, 7], "total": [0.5, 1.5]}
    assert loader.reads == [["id", "b"]]


def test_replicas_share_one_index_loaded_once():
    loader = CountingTable()
    schema = pa.schema([("u", pa.int64())])
    op = LookupJoinOperator("j", schema, loader, ["u"], ["id"], "inner", "_right")
    reps = [op.replica(i) for i in range(3)]
    from heliosdb.operators.base import OperatorContext

    for r in reps:
        r.open(OperatorContext(job="j"))
    assert len(loader.reads) == 1 and len({id(r.table.current) for r in reps}) == 1
    batch = pa.record_batch({"u": [2, 1, 9]}, schema=schema)
    assert reps[1].process_batch(batch)[0].to_pydict() == {"u": [2, 1], "a": ["y", "x"], "b": [1.5, 0.5]}
    stats = op.table_stats()
    assert stats["rows"] == 2 and stats["version"] == 1 and stats["refreshes"] == 0
    assert op.state_size_bytes() > 0
    for r in reps:
        r.close()


def test_the_job_reports_the_tables_rows_and_bytes():
    env = hdb.StreamEnvironment()
    out = hdb.sinks.memory()
    table = hdb.table(pa.table({"id": list(range(1000)), "n": [str(i) for i in range(1000)]}))
    env.from_iterable([{"id": 3}]).join(table, on="id").name("enrich").sink(out)
    m = env.execute(name="lookup-metrics").metrics
    assert m["lookup_tables"]["enrich"]["rows"] == 1000
    assert m["streaming_state_size_bytes"] >= m["lookup_tables"]["enrich"]["bytes"] > 8000
    assert out.to_table().to_pydict() == {"id": [3], "n": ["3"]}


def test_explain_shows_the_join_and_its_replicas():
    env = hdb.StreamEnvironment()
    t = hdb.table(pa.table({"id": [1], "n": ["a"]}))
    s = env.from_iterable([{"u": 1}]).join(t, left_on="u", right_on="id", how="left").set_parallelism(2)
    text = str(s.explain())
    assert "lookup join" in text and "left on u=id" in text and "round-robin" in text
