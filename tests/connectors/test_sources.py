"""Sources: Arrow/pandas/polars replay, Parquet through fsspec, Python iterables, the generator.

Each source is collected through a real job and compared with the data it was given (the
oracle is the input itself, read back with pyarrow / pandas / polars).
"""
from __future__ import annotations

import uuid

import fsspec
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import heliosdb as hdb
from heliosdb import col
from heliosdb.errors import ConfigError, DataError, HeliosError, SchemaError

CATEGORIES = {"alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"}


def sample_table(n: int = 50, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "ts": pa.array(1_700_000_000_000 + np.arange(n), pa.int64()),
        "key": pa.array(rng.integers(0, 5, n), pa.int64()),
        "value": pa.array(rng.random(n), pa.float64(), mask=rng.random(n) < 0.1),
        "name": pa.array([f"n{i % 7}" if i % 11 else None for i in range(n)], pa.string()),
    })


def small_env(batch_size: int = 8) -> hdb.StreamEnvironment:
    return hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=batch_size))


# -- from_arrow ------------------------------------------------------------------------------
def test_from_arrow_table_replays_every_row_in_order():
    t = sample_table()
    assert small_env().from_arrow(t).collect().equals(t)


def test_from_arrow_record_batch():
    t = sample_table()
    batch = t.combine_chunks().to_batches()[0]
    assert small_env().from_arrow(batch).collect().equals(t)


def test_from_arrow_list_of_record_batches_keeps_their_order():
    t = sample_table(60)
    batches = t.to_batches(max_chunksize=13)
    assert len(batches) > 1
    assert small_env().from_arrow(batches).collect().equals(t)


def test_from_arrow_record_batch_reader():
    t = sample_table()
    reader = pa.RecordBatchReader.from_batches(t.schema, t.to_batches(max_chunksize=9))
    assert small_env().from_arrow(reader).collect().equals(t)


def test_from_arrow_pandas_dataframe_matches_pyarrow_conversion():
    df = pd.DataFrame({"ts": np.arange(20, dtype=np.int64), "k": list("abcd") * 5,
                       "v": np.linspace(0, 1, 20)}, index=np.arange(100, 120))
    got = small_env().from_arrow(df).collect()
    expected = pa.Table.from_pandas(df, preserve_index=False)
    assert got.equals(expected)
    pd.testing.assert_frame_equal(got.to_pandas(), df.reset_index(drop=True))


def test_from_pandas_is_the_same_as_from_arrow():
    df = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, None, 1.5]})
    assert small_env().from_pandas(df).collect().equals(small_env().from_arrow(df).collect())


def test_from_arrow_polars_dataframe_matches_polars():
    df = pl.DataFrame({"ts": list(range(30)), "k": ["x", "y", None] * 10,
                       "v": [float(i) / 3 for i in range(30)]})
    got = small_env().from_arrow(df).collect()
    assert got.equals(df.to_arrow())
    assert pl.from_arrow(got).equals(df)


def test_from_polars_then_to_polars_round_trips():
    df = pl.DataFrame({"a": [3, 1, 2], "s": ["u", "v", None]})
    assert small_env().from_polars(df).to_polars().equals(df)


def test_from_arrow_empty_table_gives_empty_result_with_schema():
    t = pa.table({"a": pa.array([], pa.int64()), "s": pa.array([], pa.string())})
    out = small_env().from_arrow(t).collect()
    assert out.num_rows == 0 and out.schema == t.schema


@pytest.mark.parametrize("bad", [{"a": [1]}, [{"a": 1}], "table", 42])
def test_from_arrow_rejects_other_types_with_config_error(bad):
    with pytest.raises(ConfigError, match="from_arrow"):
        hdb.StreamEnvironment().from_arrow(bad)


def test_from_arrow_through_a_pipeline_matches_pyarrow_compute():
    t = sample_table(200, seed=3)
    out = (small_env(16).from_arrow(t).filter(col("value") > 0.5)
           .with_columns(v2=col("value") * 2.0).collect())
    kept = t.filter(pc.greater(t["value"], 0.5))
    assert out.drop_columns(["v2"]).equals(kept)
    assert out["v2"].to_pylist() == pytest.approx([v * 2.0 for v in kept["value"].to_pylist()])


# -- from_parquet ----------------------------------------------------------------------------
def _write_parts(fs, root: str, table: pa.Table, parts: int) -> None:
    fs.makedirs(root, exist_ok=True)
    n = table.num_rows
    for i in range(parts):
        piece = table.slice(i * n // parts, (i + 1) * n // parts - i * n // parts)
        with fs.open(f"{root}/part-{i:03d}.parquet", "wb") as f:
            pq.write_table(piece, f)


@pytest.fixture
def memory_root():
    fs = fsspec.filesystem("memory")
    root = f"/heliosdb-tests/{uuid.uuid4().hex}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_from_parquet_folder_reads_every_file_in_name_order(tmp_path):
    t = sample_table(90)
    _write_parts(fsspec.filesystem("file"), str(tmp_path / "events"), t, 3)
    (tmp_path / "events" / "_SUCCESS").write_text("")
    (tmp_path / "events" / "notes.txt").write_text("not parquet")
    out = small_env().from_parquet(str(tmp_path / "events")).collect()
    assert out.equals(t)


def test_from_parquet_glob_reads_only_matching_files(tmp_path):
    t = sample_table(40)
    fs = fsspec.filesystem("file")
    _write_parts(fs, str(tmp_path), t, 4)
    with fs.open(str(tmp_path / "other-000.parquet"), "wb") as f:
        pq.write_table(sample_table(5, seed=9), f)
    out = small_env().from_parquet(str(tmp_path / "part-*.parquet")).collect()
    assert out.equals(t)


def test_from_parquet_single_file_path(tmp_path):
    t = sample_table(10)
    pq.write_table(t, tmp_path / "one.parquet")
    assert small_env().from_parquet(str(tmp_path / "one.parquet")).collect().equals(t)


def test_from_parquet_memory_url_folder_and_glob(memory_root):
    fs, root = memory_root
    t = sample_table(75)
    _write_parts(fs, root, t, 5)
    assert small_env().from_parquet(f"memory://{root}").collect().equals(t)
    assert small_env().from_parquet(f"memory://{root}/part-00[0-2].parquet").collect().equals(
        t.slice(0, 45))


def test_from_parquet_with_pipeline_reads_only_needed_columns_and_matches(memory_root):
    fs, root = memory_root
    t = sample_table(120, seed=4)
    _write_parts(fs, root, t, 3)
    out = small_env().from_parquet(f"memory://{root}").filter(col("key") == 2).select("ts", "value").collect()
    assert out.equals(t.filter(pc.equal(t["key"], 2)).select(["ts", "value"]))


@pytest.mark.parametrize("pattern", ["missing-folder", "*.parquet", "nothing-*.parquet"])
def test_from_parquet_without_matching_files_names_the_path(tmp_path, pattern):
    url = str(tmp_path / pattern)
    with pytest.raises(ConfigError) as info:
        hdb.StreamEnvironment().from_parquet(url)
    assert repr(url) in str(info.value) or url in str(info.value)


def test_from_parquet_memory_url_without_files_names_the_url(memory_root):
    _, root = memory_root
    url = f"memory://{root}/none/*.parquet"
    with pytest.raises(ConfigError, match=root):
        hdb.StreamEnvironment().from_parquet(url)


def test_from_parquet_files_with_different_schemas_name_the_file(tmp_path):
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "a-0.parquet")
    pq.write_table(pa.table({"a": ["x"]}), tmp_path / "a-1.parquet")
    with pytest.raises(SchemaError, match="a-1.parquet"):
        small_env().from_parquet(str(tmp_path)).collect()


# -- from_iterable ---------------------------------------------------------------------------
def test_from_iterable_infers_schema_from_first_record():
    records = [{"k": "a", "v": 1.5, "n": 1}, {"k": "b", "v": 2.5, "n": 2}, {"k": None, "v": None, "n": 3}]
    out = small_env(2).from_iterable(records).collect()
    assert out.schema == pa.schema([("k", pa.string()), ("v", pa.float64()), ("n", pa.int64())])
    assert out.to_pylist() == records


def test_from_iterable_with_explicit_schema_casts_and_fills_missing_fields():
    schema = pa.schema([("k", pa.string()), ("v", pa.float32()), ("n", pa.int16())])
    records = [{"k": "a", "v": 1, "n": 1}, {"k": "b", "n": 2}, {"v": 0.5, "n": None}]
    out = small_env(2).from_iterable(records, schema=schema).collect()
    assert out.schema == schema
    assert out.to_pylist() == [{"k": "a", "v": 1.0, "n": 1}, {"k": "b", "v": None, "n": 2},
                               {"k": None, "v": 0.5, "n": None}]


def test_from_iterable_explicit_schema_allows_a_null_first_record():
    schema = pa.schema([("x", pa.int64())])
    out = small_env().from_iterable([{"x": None}, {"x": 4}], schema=schema).collect()
    assert out["x"].to_pylist() == [None, 4]


def test_from_iterable_generator_is_consumed_lazily_and_fully():
    def records():
        for i in range(1_000):
            yield {"i": i, "even": i % 2 == 0}

    out = small_env(64).from_iterable(records()).collect()
    assert out["i"].to_pylist() == list(range(1_000))
    assert out["even"].to_pylist() == [i % 2 == 0 for i in range(1_000)]


def test_from_iterable_over_a_list_can_be_collected_twice():
    # A list is re-iterable, like a Table: a second run replays it (as from_arrow does).
    records = [{"a": i} for i in range(5)]
    s = small_env(2).from_iterable(records)
    assert s.collect()["a"].to_pylist() == [0, 1, 2, 3, 4]
    assert s.collect()["a"].to_pylist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("batch_size", [1, 4, 1_000])
def test_from_iterable_value_that_does_not_fit_names_record_index_and_field(batch_size):
    records = [{"a": i, "b": "x"} for i in range(10)]
    records[6] = {"a": "seven", "b": "x"}
    with pytest.raises(DataError) as info:
        small_env(batch_size).from_iterable(records).collect()
    msg = str(info.value)
    assert "record 6" in msg and "'a'" in msg and "'seven'" in msg and "int64" in msg


def test_from_iterable_value_out_of_range_for_explicit_schema_names_record_and_field():
    schema = pa.schema([("a", pa.int32()), ("b", pa.string())])
    records = [{"a": 1, "b": "x"}, {"a": 2, "b": 5}, {"a": 3, "b": "z"}]
    with pytest.raises(DataError) as info:
        small_env().from_iterable(records, schema=schema).collect()
    msg = str(info.value)
    assert "record 1" in msg and "'b'" in msg


@pytest.mark.parametrize("bad", [[3], "x", 5], ids=["list", "str", "int"])
def test_from_iterable_non_dict_record_names_its_index(bad):
    # A record that is not a dict must fail loudly, never turn into an all-null row.
    records = [{"a": 1}, {"a": 2}, bad]
    with pytest.raises(DataError, match="record 2"):
        small_env().from_iterable(records).collect()


def test_from_iterable_error_inside_the_iterable_surfaces_as_data_error():
    def records():
        yield {"a": 1}
        raise KeyError("upstream broke")

    with pytest.raises(DataError, match="upstream broke") as info:
        small_env().from_iterable(records()).collect()
    assert isinstance(info.value.__cause__, KeyError)


def test_from_iterable_empty_without_schema_is_a_schema_error():
    with pytest.raises(SchemaError, match="schema="):
        small_env().from_iterable([]).collect()


def test_from_iterable_empty_with_schema_gives_empty_table():
    schema = pa.schema([("a", pa.int64())])
    out = small_env().from_iterable([], schema=schema).collect()
    assert out.num_rows == 0 and out.schema == schema


@pytest.mark.parametrize("bad", [{"a": 1}, "abc", b"abc"])
def test_from_iterable_rejects_a_single_record_or_string(bad):
    with pytest.raises(ConfigError, match="iterable"):
        hdb.StreamEnvironment().from_iterable(bad)


def test_from_iterable_rejects_a_non_schema():
    with pytest.raises(ConfigError, match="schema"):
        hdb.StreamEnvironment().from_iterable([{"a": 1}], schema={"a": "int64"})


# -- generate --------------------------------------------------------------------------------
@pytest.mark.parametrize("count, batch_size", [(0, 64), (1, 64), (1_234, 100), (5_000, 65_536)])
def test_generate_count_produces_exactly_count_rows_with_documented_columns(count, batch_size):
    out = small_env(batch_size).generate(count=count, keys=7, start_ms=1_000, events_per_ms=10).collect()
    assert out.num_rows == count
    assert out.schema == pa.schema([("ts", pa.int64()), ("key", pa.int64()),
                                    ("value", pa.float64()), ("category", pa.string())])
    assert out.column("ts").to_pylist() == [1_000 + i // 10 for i in range(count)]
    keys = out.column("key").to_numpy()
    values = out.column("value").to_numpy()
    assert ((keys >= 0) & (keys < 7)).all()
    assert ((values >= 0.0) & (values < 1.0)).all()
    assert set(out.column("category").to_pylist()) <= CATEGORIES
    assert sum(c.null_count for c in out.columns) == 0


def test_generate_is_reproducible_for_the_same_seed_and_config():
    a = small_env(500).generate(count=2_000, seed=7).collect()
    b = small_env(500).generate(count=2_000, seed=7).collect()
    c = small_env(500).generate(count=2_000, seed=8).collect()
    assert a.equals(b)
    assert not a.equals(c)


def test_generate_defaults_start_at_documented_epoch_ms():
    out = small_env(1_000).generate(count=250).collect()
    assert out.column("ts").to_pylist() == [1_700_000_000_000 + i // 100 for i in range(250)]


@pytest.mark.parametrize("kwargs", [dict(rate=0), dict(rate=-5), dict(count=-1), dict(keys=0)])
def test_generate_rejects_invalid_arguments(kwargs):
    with pytest.raises(ConfigError, match=list(kwargs)[0]):
        hdb.StreamEnvironment().generate(**{"count": 10, **kwargs})


def test_source_errors_are_helios_errors():
    with pytest.raises(HeliosError):
        hdb.StreamEnvironment().from_parquet("memory://definitely/not/here/*.parquet")
