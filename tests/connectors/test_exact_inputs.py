"""Issue 13, "inputs kept exactly": every source keeps every value, or says which one it cannot.

- from_iterable over the table of (value, type) pairs in tests/formats/exact_cases.py: the
  column holds exactly what the oracle says, or the job fails with a DataError naming the
  record and the field.  Zero silent value changes.
- Fields a schema lacks (``extra=``), Parquet files that disagree (the error names the file
  and the column), and replays: every source gives the same stream at any batch size.
"""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import heliosdb as hdb
from heliosdb.connectors.sources import GENERATOR_BLOCK, CATEGORIES
from heliosdb.errors import ConfigError, DataError, SchemaError

from ..formats.exact_cases import ERROR, case_id, cases, expected, held, same


def env_with(batch_size: int = 8, timeout_ms: float = 100) -> hdb.StreamEnvironment:
    return hdb.StreamEnvironment(hdb.StreamingConfig(
        batch_size=batch_size, batch_timeout=timedelta(milliseconds=timeout_ms)))


# -- from_iterable: the (value, type) table ------------------------------------------------------
CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_from_iterable_keeps_each_value_exactly_or_names_record_and_field(case):
    v, t = case
    want = expected(v, t)
    stream = env_with(2).from_iterable([{"x": None}, {"x": v}, {"x": None}],
                                       schema=pa.schema([("x", t)]))
    if want == ERROR:
        with pytest.raises(DataError, match=r"record 1, field 'x'"):
            stream.collect()
    else:
        out = stream.collect().column("x").combine_chunks()
        assert out.type == t
        assert same(held(out, 1), want), (held(out, 1), want)
        assert out.null_count == 2


def test_float_with_a_fraction_into_a_declared_int_column_is_an_error_not_a_truncation():
    # The second example: 2.7 became 2.
    with pytest.raises(DataError, match=r"record 1, field 'a': value 2.7 would change to 2 as int64"):
        hdb.StreamEnvironment().from_iterable([{"a": 1}, {"a": 2.7}],
                                              schema=pa.schema([("a", pa.int64())])).collect()


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_inferred_int_then_a_float_names_record_field_type_and_says_pass_schema(batch_size):
    records = [{"a": 1}, {"a": 2}, {"a": 3}, {"a": 2.5}]
    with pytest.raises(DataError) as info:
        env_with(batch_size).from_iterable(records).collect()
    msg = str(info.value)
    assert "record 3, field 'a': value 2.5 would change to 2 as int64" in msg
    assert "inferred from record 0" in msg and "schema=pa.schema([('a', pa.float64())])" in msg


def test_inferred_float_then_an_int_is_kept_as_that_float():
    out = hdb.StreamEnvironment().from_iterable([{"a": 1.5}, {"a": 2}]).collect()
    assert out.column("a").to_pylist() == [1.5, 2.0] and out.schema.field("a").type == pa.float64()


def test_explicit_float_schema_takes_ints_and_floats():
    out = hdb.StreamEnvironment().from_iterable(
        [{"a": 1}, {"a": 2.5}], schema=pa.schema([("a", pa.float64())])).collect()
    assert out.column("a").to_pylist() == [1.0, 2.5]


def test_non_nullable_field_absent_names_record_and_field():
    schema = pa.schema([pa.field("a", pa.int64(), nullable=False)])
    with pytest.raises(DataError, match=r"record 1, field 'a': the value is absent"):
        hdb.StreamEnvironment().from_iterable([{"a": 1}, {}], schema=schema).collect()


def test_from_pandas_object_column_that_would_change_is_a_data_error_naming_the_column():
    import pandas as pd

    df = pd.DataFrame({"a": pd.Series([2**60 + 1, 0.5], dtype=object)})
    with pytest.raises(DataError, match="column a"):
        hdb.StreamEnvironment().from_pandas(df)


# -- from_iterable: fields the schema does not have ----------------------------------------------
def test_extra_field_is_an_error_naming_record_and_field_by_default():
    # The example: "c" vanished without a word.
    records = [{"a": 1, "b": 2}, {"a": 3, "b": 4, "c": 5}]
    with pytest.raises(DataError, match=r"record 1 has field\(s\) 'c' .*extra='ignore'"):
        hdb.StreamEnvironment().from_iterable(records).collect()


def test_extra_fields_against_a_declared_schema_are_all_named():
    schema = pa.schema([("a", pa.int64())])
    with pytest.raises(DataError, match=r"record 2 has field\(s\) 'b', 'c'"):
        env_with(2).from_iterable([{"a": 1}, {"a": 2}, {"a": 3, "b": 1, "c": 2}], schema=schema).collect()


def test_extra_ignore_drops_the_fields_the_schema_lacks():
    records = [{"a": 1, "b": 2}, {"a": 3, "b": 4, "c": 5}]
    out = hdb.StreamEnvironment().from_iterable(records, extra="ignore").collect()
    assert out.to_pydict() == {"a": [1, 3], "b": [2, 4]}


def test_extra_must_be_error_or_ignore():
    with pytest.raises(ConfigError, match="extra="):
        hdb.StreamEnvironment().from_iterable([{"a": 1}], extra="drop")
    with pytest.raises(ConfigError, match="extra="):
        hdb.StreamEnvironment().from_parquet("memory://x/none.parquet", extra="drop")


# -- from_parquet: mismatches name the file and the column ----------------------------------------
def test_parquet_extra_column_in_second_file_names_file_and_column(tmp_path):
    # The example gave "ArrowInvalid: Schema at index 1 was different".
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "p-0.parquet")
    pq.write_table(pa.table({"a": [3], "b": [4]}), tmp_path / "p-1.parquet")
    with pytest.raises(SchemaError, match=r"p-1\.parquet' has column\(s\) 'b' .*extra='ignore'"):
        env_with().from_parquet(str(tmp_path)).collect()


def test_parquet_extra_ignore_reads_the_first_files_columns_in_its_order(tmp_path):
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), tmp_path / "p-0.parquet")
    pq.write_table(pa.table({"c": [0.5], "b": ["z"], "a": [3]}), tmp_path / "p-1.parquet")
    out = env_with().from_parquet(str(tmp_path), extra="ignore").collect()
    assert out.to_pydict() == {"a": [1, 2, 3], "b": ["x", "y", "z"]}


def test_parquet_missing_column_names_file_and_column(tmp_path):
    pq.write_table(pa.table({"a": [1], "b": [2]}), tmp_path / "p-0.parquet")
    pq.write_table(pa.table({"a": [3]}), tmp_path / "p-1.parquet")
    with pytest.raises(SchemaError, match=r"p-1\.parquet' has no column 'b'"):
        env_with().from_parquet(str(tmp_path), extra="ignore").collect()


def test_parquet_other_type_names_file_column_and_both_types(tmp_path):
    pq.write_table(pa.table({"a": [1]}), tmp_path / "p-0.parquet")
    pq.write_table(pa.table({"a": [2.5]}), tmp_path / "p-1.parquet")
    with pytest.raises(SchemaError, match=r"p-1\.parquet', column 'a' is double, but .* int64"):
        env_with().from_parquet(str(tmp_path)).collect()


def test_parquet_unreadable_row_group_names_file_and_row_group(tmp_path):
    path = tmp_path / "p-0.parquet"
    pq.write_table(pa.table({"a": np.arange(2_000, dtype=np.int64)}), path, row_group_size=1_000,
                   compression="zstd", use_dictionary=False)
    meta = pq.read_metadata(path)
    col = meta.row_group(1).column(0)
    data = bytearray(path.read_bytes())
    start = col.data_page_offset
    for i in range(start + 20, start + col.total_compressed_size - 8):
        data[i] ^= 0x5A                       # garble the second row group's pages
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"p-0\.parquet', row group 1 \(rows 1,000\.\.1,999\)"):
        env_with(500).from_parquet(str(path)).collect()


# -- generate: the same events whatever the batching ----------------------------------------------
def reference_events(count: int, seed: int, keys: int) -> dict:
    """Event i from the seed and i alone: block b = i // GENERATOR_BLOCK of default_rng([seed, b])."""
    out = {"key": [], "value": [], "category": []}
    for b in range(-(-count // GENERATOR_BLOCK)):
        rng = np.random.default_rng([seed, b])
        n = min(GENERATOR_BLOCK, count - b * GENERATOR_BLOCK)
        out["key"] += rng.integers(0, keys, GENERATOR_BLOCK, dtype=np.int64)[:n].tolist()
        out["value"] += rng.random(GENERATOR_BLOCK)[:n].tolist()
        out["category"] += [CATEGORIES[c] for c in rng.integers(0, 8, GENERATOR_BLOCK, dtype=np.int8)[:n]]
    return out


@pytest.mark.parametrize("batch_size, timeout_ms", [(1_000, 100), (7_777, 1), (65_536, 100), (100_000, 50)])
def test_generate_same_seed_gives_the_same_events_at_any_batch_size(batch_size, timeout_ms):
    count = 2 * GENERATOR_BLOCK + 123            # three blocks, batches straddling them
    out = env_with(batch_size, timeout_ms).generate(count=count, seed=11, keys=1_000).collect()
    ref = reference_events(count, 11, 1_000)
    assert out.column("key").to_pylist() == ref["key"]
    assert out.column("value").to_pylist() == ref["value"]
    assert out.column("category").to_pylist() == ref["category"]
    assert out.column("ts").to_pylist() == [1_700_000_000_000 + i // 100 for i in range(count)]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_generate_gives_the_same_events_at_any_parallelism(parallelism):
    def run(p: int, batch_size: int) -> pa.Table:
        env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=p, batch_size=batch_size))
        return (env.generate(count=20_000, seed=4).filter(hdb.col("value") > 0.5)
                .with_columns(v2=hdb.col("value") * 2.0).collect())

    assert run(parallelism, 999).equals(run(1, 65_536))


def test_generate_with_tiny_batches_matches_one_big_batch():
    a = env_with(3).generate(count=500, seed=5).collect()
    b = env_with(65_536).generate(count=500, seed=5).collect()
    assert a.equals(b)


def test_generate_restarted_from_a_position_continues_the_same_events():
    from heliosdb.connectors.sources import GeneratorSource

    whole = GeneratorSource(None, 3_000, None, 100, 3, 0, 1).build()
    whole.open(1_000)
    full = pa.Table.from_batches([whole.poll(0)[0][0] for _ in range(3)])
    part = GeneratorSource(None, 3_000, None, 100, 3, 0, 1).build()
    part.open(700)
    part.poll(0)
    pos = part.position()
    resumed = GeneratorSource(None, 3_000, None, 100, 3, 0, 1).build()
    resumed.seek(pos)
    resumed.open(999)
    rest = []
    while (p := resumed.poll(0)) is not None:
        rest.append(p[0][0])
    assert pa.Table.from_batches(rest).equals(full.slice(700))


# -- every source: a replay is the same stream -----------------------------------------------------
def sample(n: int = 300) -> pa.Table:
    rng = np.random.default_rng(1)
    return pa.table({
        "ts": pa.array(1_700_000_000_000 + np.arange(n), pa.int64()),
        "key": pa.array(rng.integers(0, 5, n), pa.int64()),
        "value": pa.array(rng.random(n), pa.float64(), mask=rng.random(n) < 0.1),
        "name": pa.array([f"n{i % 7}" if i % 11 else None for i in range(n)], pa.string()),
    })


def make_stream(env: hdb.StreamEnvironment, kind: str, folder) -> hdb.Stream:
    table = sample()
    if kind == "arrow":
        return env.from_arrow(table)
    if kind == "parquet":
        if not list(folder.glob("*.parquet")):
            for i in range(3):
                pq.write_table(table.slice(i * 100, 100), folder / f"part-{i}.parquet", row_group_size=37)
        return env.from_parquet(str(folder))
    if kind == "iterable":
        return env.from_iterable(table.to_pylist(), schema=table.schema)
    return env.generate(count=5_000, seed=9, keys=50)


@pytest.mark.parametrize("kind", ["arrow", "parquet", "iterable", "generate"])
def test_every_source_replays_the_same_stream_at_any_batch_size(kind, tmp_path):
    outs = []
    for batch_size, timeout_ms in [(1, 100), (7, 1), (64, 100), (65_536, 100)]:
        if kind == "generate" and batch_size == 1:
            batch_size = 3
        env = env_with(batch_size, timeout_ms)
        outs.append(make_stream(env, kind, tmp_path).collect())
        regrouped = make_stream(env, kind, tmp_path).batch(13).unbatch().batch(50).unbatch()
        outs.append(regrouped.collect())
    first = outs[0].combine_chunks()
    for other in outs[1:]:
        assert other.combine_chunks().equals(first)
    if kind != "generate":
        assert first.equals(sample().combine_chunks())


def test_parquet_files_read_only_for_the_columns_used_are_still_checked_whole(tmp_path):
    """A pipeline that reads one column of files with three: the unread columns are neither
    'extra' nor missing; a file that really differs is still named."""
    import pyarrow.parquet as pq

    import heliosdb as hdb

    for i in range(2):
        pq.write_table(pa.table({"a": [i], "b": [1.0], "c": ["x"]}), tmp_path / f"p{i}.parquet")
    out = hdb.StreamEnvironment().from_parquet(str(tmp_path / "*.parquet")).select("a").collect()
    assert out["a"].to_pylist() == [0, 1]
    pq.write_table(pa.table({"a": [2], "b": [1.0]}), tmp_path / "p2.parquet")
    with pytest.raises(hdb.SchemaError, match=r"p2\.parquet.*no column 'c'"):
        hdb.StreamEnvironment().from_parquet(str(tmp_path / "*.parquet")).select("a").collect()
