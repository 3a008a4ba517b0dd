"""A new aggregate is one new file: the worked example of ``docs/aggregates.md`` (``product``),
copied from the page into a new module of ``heliosdb.aggregates`` (a fresh folder on the
package's path, so the source tree is left alone), works with no other file changed.

Checked: ``hdb.product`` and ``AggSpec("product", ...)`` find it; its results equal an oracle
computed in the same job (``exp(sum(log v))``) in tumbling, sliding, cumulative and session windows and
running aggregates, on memory and RocksDB state; a job crashed and restored (from one backend
to the other, and at another parallelism) writes what an uninterrupted one does.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import heliosdb as hdb
import heliosdb.aggregates as aggregates
from heliosdb.testing import assert_same_rows, crash_and_restore, last_per_key, read_parquet_output, run_job
from tests.checkpoint import pipelines as P

DOC = Path(__file__).resolve().parents[2] / "docs" / "aggregates.md"
KINDS = ("tumbling", "sliding", "cumulate", "session", "running")


def _blocks() -> list:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    """The doc's module, discovered as ``heliosdb.aggregates.product``; forgotten after."""
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "product.py").write_text(_blocks()[0])
    aggregates.__path__.append(str(folder))
    try:
        assert aggregates.discover() == ["heliosdb.aggregates.product"]
        yield hdb.product
    finally:
        aggregates.__path__.remove(str(folder))
        aggregates.unregister("product")
        sys.modules.pop("heliosdb.aggregates.product", None)
        aggregates.__dict__.pop("product", None)


def test_the_new_file_is_found_by_its_kind_and_its_name(product):
    assert hdb.product("v") == hdb.AggSpec("product", "v") == product("v")
    assert repr(hdb.product("v")) == "product('v')" and "product" in aggregates.kinds()
    with pytest.raises(hdb.SchemaError, match=r"step 'agg': product\('k'\) needs a numeric column"):
        hdb.StreamEnvironment().from_iterable([{"k": "a"}]).key_by("k").aggregate(p=hdb.product("k")).name("agg").collect()


def test_the_usage_example_of_the_page_gives_what_it_says(product):
    scope: dict = {}
    exec(_blocks()[1], scope)                                       # noqa: S102 - the doc's own code
    out = scope["out"]
    assert out.to_pydict() == {"window_start": out.column("window_start").to_pylist(),
                               "window_end": out.column("window_end").to_pylist(),
                               "k": ["a", "b"], "p": [6.0, None], "n": [2, 1]}


def _events() -> pa.Table:
    """The checkpoint tests' events with some ``v`` null, and ``lv = log(v)`` for the oracle."""
    t = P.events()
    v = t.column("v").to_numpy()
    null = np.random.default_rng(3).random(len(v)) < 0.05
    v = pa.array(np.maximum(v, 0.5), mask=null)          # >= 0.5: running products stay normal floats
    return t.set_column(2, "v", v).append_column("lv", pc.ln(v))


def _build(kind: str, out: str, table: pa.Table):
    def wire(env: hdb.StreamEnvironment, crash) -> None:
        s = env.from_arrow(table).inspect(crash or (lambda b: None))
        aggs = dict(p=hdb.product("v"), lsum=hdb.sum("lv"), n=hdb.count())
        if kind == "running":
            s = s.key_by("k").aggregate(**aggs)
        else:
            from datetime import timedelta
            spec = {"tumbling": hdb.TumblingWindow.of(timedelta(seconds=2)),
                    "sliding": hdb.SlidingWindow.of(timedelta(seconds=3), timedelta(seconds=1)),
                    "cumulate": hdb.CumulateWindow.of(timedelta(seconds=3), timedelta(seconds=1)),
                    "session": hdb.SessionWindow.with_gap(timedelta(milliseconds=100))}[kind]
            s = (s.with_watermark(time="ts", max_out_of_orderness=timedelta(milliseconds=300))
                 .key_by("k").window(spec).aggregate(**aggs))
        s.name("agg").sink(hdb.sinks.parquet(out, rows_per_file=700))
    return wire


def _backend(name: str, tmp_path) -> hdb.StateBackend:
    return hdb.StateBackend.memory() if name == "memory" else hdb.StateBackend.rocksdb(path=str(tmp_path / "rocks"))


_REFERENCE: dict = {}


def _reference(kind: str, tmp_path_factory) -> pa.Table:
    if kind not in _REFERENCE:
        out = str(tmp_path_factory.mktemp("reference"))
        run_job(_build(kind, out, _events()), P.config())
        _REFERENCE[kind] = read_parquet_output(out)
    return _REFERENCE[kind]


def _final(kind: str, t: pa.Table) -> pa.Table:
    return last_per_key(t, ["k"]) if kind == "running" else t


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
@pytest.mark.parametrize("kind", KINDS)
def test_results_equal_the_oracle_on_either_backend(product, kind, backend, tmp_path):
    # product(v) == exp(sum(log v)) row by row; null where the group has no value
    out = str(tmp_path / "out")
    run_job(_build(kind, out, _events()), P.config(backend=_backend(backend, tmp_path)))
    got = read_parquet_output(out)             # every row (running: every update)
    assert got.num_rows >= 40
    p = got.column("p").to_numpy(zero_copy_only=False).astype(float)
    want = np.exp(got.column("lsum").to_numpy(zero_copy_only=False).astype(float))
    assert np.allclose(p, want, rtol=1e-9, atol=0.0, equal_nan=True)
    assert got.column("p").null_count == got.column("lsum").null_count


CRASHES = (("tumbling", "memory", "rocksdb", 2), ("sliding", "rocksdb", "memory", 1),
           ("session", "rocksdb", "rocksdb", 1), ("running", "memory", "rocksdb", 2))


@pytest.mark.parametrize("kind,crashed,restored,parallelism", CRASHES,
                         ids=[f"{k}-{a}-to-{b}-p{p}" for k, a, b, p in CRASHES])
def test_a_crashed_job_restores_from_its_checkpoint_to_the_uninterrupted_output(
        product, kind, crashed, restored, parallelism, tmp_path, tmp_path_factory):
    out, storage = str(tmp_path / "out"), str(tmp_path / "ckpt")
    run = crash_and_restore(_build(kind, out, _events()),
                            P.config(storage, parallelism, backend=_backend(crashed, tmp_path)), 17,
                            name="product", restore_config=P.config(storage, 1, backend=_backend(restored, tmp_path)))
    assert run.crashed and run.crashed_checkpoints.count >= 1 and run.checkpoints.restores == 1
    assert_same_rows(_final(kind, read_parquet_output(out)), _final(kind, _reference(kind, tmp_path_factory)))
