"""Sinks: Parquet through fsspec, console, callback, memory.

Each sink receives a real job's output and is compared with the input data (sorted where the
sink does not promise an order), read back with pyarrow.dataset for Parquet.
"""
from __future__ import annotations

import io
import uuid
from datetime import timedelta

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import heliosdb as hdb
from heliosdb import col
from heliosdb.errors import ConfigError, HeliosError


def sample_table(n: int = 100, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "id": pa.array(np.arange(n), pa.int64()),
        "ts": pa.array(1_700_000_000_000 + np.arange(n) * 37, pa.int64()),
        "key": pa.array([["a", "b", "c", None][i] for i in rng.integers(0, 4, n)], pa.string()),
        "value": pa.array(rng.random(n), pa.float64(), mask=rng.random(n) < 0.1),
        "when": pa.array(np.arange(n) * 1_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    })


def run_to(table: pa.Table, sink, batch_size: int = 16, transform=None) -> hdb.JobResult:
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=batch_size))
    s = env.from_arrow(table)
    if transform is not None:
        s = transform(s)
    s.sink(sink)
    return env.execute(name=f"sink-test-{uuid.uuid4().hex[:8]}")


def sort_by_id(t: pa.Table) -> pa.Table:
    return t.sort_by("id")


# -- parquet ---------------------------------------------------------------------------------
def test_parquet_sink_round_trips_through_local_folder(tmp_path):
    t = sample_table(500)
    sink = hdb.sinks.parquet(str(tmp_path / "out"))
    run_to(t, sink)
    back = ds.dataset(str(tmp_path / "out"), format="parquet").to_table()
    assert back.schema.remove_metadata() == t.schema
    assert sort_by_id(back).equals(t)
    assert sink.files, "the sink reports the files it wrote"


def test_parquet_sink_rolls_files_and_loses_no_rows(tmp_path):
    t = sample_table(1_000)
    sink = hdb.sinks.parquet(str(tmp_path), rows_per_file=100)
    run_to(t, sink, batch_size=32)
    files = sorted(p.name for p in tmp_path.glob("*.parquet"))
    assert len(files) >= 2 and len(files) == len(sink.files)
    assert all(name.startswith("part-") for name in files)
    back = ds.dataset(str(tmp_path), format="parquet").to_table()
    assert sort_by_id(back).equals(t)


def test_parquet_sink_writes_zstd_by_default(tmp_path):
    run_to(sample_table(50), hdb.sinks.parquet(str(tmp_path)))
    (path,) = list(tmp_path.glob("*.parquet"))
    meta = pq.ParquetFile(path).metadata
    assert meta.row_group(0).column(0).compression.upper() == "ZSTD"


def test_parquet_sink_memory_url_round_trip():
    fs = fsspec.filesystem("memory")
    root = f"/heliosdb-sink-tests/{uuid.uuid4().hex}"
    try:
        t = sample_table(300, seed=1)
        sink = hdb.sinks.parquet(f"memory://{root}", rows_per_file=120)
        run_to(t, sink)
        back = ds.dataset(root, filesystem=fs, format="parquet").to_table()
        assert sort_by_id(back).equals(t)
    finally:
        if fs.exists(root):
            fs.rm(root, recursive=True)


def test_parquet_sink_of_a_filtered_stream_matches_pyarrow_filter(tmp_path):
    t = sample_table(400, seed=2)
    run_to(t, hdb.sinks.parquet(str(tmp_path)), transform=lambda s: s.filter(col("value") > 0.5))
    back = ds.dataset(str(tmp_path), format="parquet").to_table()
    assert sort_by_id(back).equals(t.filter(pc.greater(t["value"], 0.5)))


def test_parquet_sink_of_window_results_matches_collect(tmp_path):
    t = sample_table(400, seed=3)

    def windows(s):
        return (s.key_by("key").window(hdb.TumblingWindow.of(timedelta(seconds=1)), time="ts")
                .aggregate(n=hdb.count(), total=hdb.sum("value")))

    run_to(t, hdb.sinks.parquet(str(tmp_path)), transform=windows)
    back = ds.dataset(str(tmp_path), format="parquet").to_table()
    # The same pipeline and batch size into a memory sink: the Parquet files must hold exactly it.
    expected = windows(hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=16)).from_arrow(t)).collect()
    order = [("window_start", "ascending"), ("key", "ascending")]
    assert back.schema.remove_metadata() == expected.schema
    back, expected = back.sort_by(order), expected.sort_by(order)
    assert back.drop_columns(["total"]).equals(expected.drop_columns(["total"]))
    # Float sums compared with a tolerance (accumulation order is not part of the contract).
    np.testing.assert_allclose(back["total"].to_numpy(zero_copy_only=False),
                               expected["total"].to_numpy(zero_copy_only=False), rtol=1e-12)


def test_parquet_sink_rejects_non_positive_rows_per_file(tmp_path):
    with pytest.raises(ConfigError, match="rows_per_file"):
        hdb.sinks.parquet(str(tmp_path), rows_per_file=0)


# -- console ---------------------------------------------------------------------------------
def test_failed_job_lists_no_unfinished_parquet_file(tmp_path):
    seen = []

    def explode(batch):
        seen.append(batch.num_rows)
        if sum(seen) > 10:          # the second real batch fails (empty ones type the plan)
            raise ValueError("boom")
        return batch

    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=10))
    sink = hdb.sinks.parquet(str(tmp_path / "out"), rows_per_file=10**9)
    env.from_iterable([{"x": i} for i in range(50)]).map_batches(explode).name("explode").sink(sink)
    with pytest.raises(hdb.ExecutionError, match="explode"):
        env.execute(name="fails")
    for path in sink.files:                 # whatever is listed is a complete Parquet file
        pq.read_table(path)
    assert sink.files == []


def _console_rows(text: str, names):
    """Data rows printed by the console sink, as lists of cell strings."""
    header = " | ".join(names)
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(" | ")]
        if cells == list(names) or set(line) <= set("-+") or line.startswith("..."):
            continue
        rows.append(cells)
    assert header.split(" | ")[0] in text
    return rows


def test_console_sink_prints_every_row_of_every_batch_to_the_given_file():
    t = pa.table({"id": list(range(25)), "word": [f"w{i}" for i in range(25)],
                  "x": [i / 4 for i in range(25)]})
    buf = io.StringIO()
    run_to(t, hdb.sinks.console(max_rows=100, file=buf), batch_size=10)
    text = buf.getvalue()
    assert text.count("id | word") == 3, "one header per batch (10 + 10 + 5 rows)"
    rows = _console_rows(text, ["id", "word", "x"])
    assert sorted(rows, key=lambda r: int(r[0])) == [[str(i), f"w{i}", str(i / 4)] for i in range(25)]


def test_console_sink_truncates_each_batch_to_max_rows():
    t = pa.table({"id": list(range(12))})
    buf = io.StringIO()
    run_to(t, hdb.sinks.console(max_rows=3, file=buf), batch_size=6)
    text = buf.getvalue()
    assert text.count("... (3 more rows)") == 2
    assert sorted(int(r[0]) for r in _console_rows(text, ["id"])) == [0, 1, 2, 6, 7, 8]


def test_console_sink_prints_nulls_as_none():
    buf = io.StringIO()
    run_to(pa.table({"id": [1], "s": pa.array([None], pa.string())}), hdb.sinks.console(file=buf))
    assert _console_rows(buf.getvalue(), ["id", "s"]) == [["1", "None"]]


def test_console_sink_defaults_to_stdout(capsys):
    run_to(pa.table({"id": [41, 42]}), hdb.sinks.console())
    out = capsys.readouterr().out
    assert "41" in out and "42" in out


# -- callback --------------------------------------------------------------------------------
def test_callback_sink_receives_every_batch_in_order():
    t = sample_table(203)
    got = []
    run_to(t, hdb.sinks.callback(got.append), batch_size=20)
    assert all(isinstance(b, pa.RecordBatch) for b in got)
    assert len(got) >= 11, "203 rows in batches of at most 20"
    assert sum(b.num_rows for b in got) == 203
    assert all(b.num_rows <= 20 for b in got)
    assert pa.Table.from_batches(got).equals(t)


def test_callback_sink_after_filter_receives_exactly_the_kept_rows():
    t = sample_table(300, seed=5)
    got = []
    run_to(t, hdb.sinks.callback(got.append), batch_size=7,
           transform=lambda s: s.filter(col("key") == "a").select("id", "value"))
    expected = t.filter(pc.equal(t["key"], "a")).select(["id", "value"])
    assert pa.Table.from_batches(got, schema=expected.schema).equals(expected)


def test_callback_sink_rejects_non_callable():
    with pytest.raises(ConfigError, match="callback"):
        hdb.sinks.callback("print")


# -- memory ----------------------------------------------------------------------------------
def test_memory_sink_to_table_returns_everything_received():
    t = sample_table(77)
    sink = hdb.sinks.memory()
    result = run_to(t, sink, batch_size=10)
    assert sink.to_table().equals(t)
    assert result.metrics["streaming_events_processed_total"] == 77


def test_memory_sink_with_no_rows_gives_empty_table_with_schema():
    t = sample_table(20)
    sink = hdb.sinks.memory()
    run_to(t, sink, transform=lambda s: s.filter(col("value") > 2.0))
    out = sink.to_table()
    assert out.num_rows == 0 and out.schema == t.schema


def test_memory_sink_before_any_run_raises_config_error():
    with pytest.raises(HeliosError, match="not been part of an executed job"):
        hdb.sinks.memory().to_table()


def test_two_sinks_on_one_source_each_receive_everything():
    t = sample_table(150, seed=6)
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=16))
    src = env.from_arrow(t)
    everything, big = hdb.sinks.memory(), hdb.sinks.memory()
    src.sink(everything)
    src.filter(col("value") > 0.5).sink(big)
    env.execute(name="fan-out")
    assert everything.to_table().equals(t)
    assert big.to_table().equals(t.filter(pc.greater(t["value"], 0.5)))
