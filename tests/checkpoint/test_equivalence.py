"""Crash equivalence (STYLE habit 7): a job crashed at micro-batch k and started again with the
same name and checkpoint storage writes exactly the Parquet output of an uninterrupted run.

Timeline of one case (checkpoints every 1 ms, so nearly every batch boundary is a barrier)::

    batches   1 2 3 ... k-1 | k (InjectedCrash)
    epochs    e1 e2 ...  ej   (ej+1 in flight: its hidden sink files are dropped at restore)
    restart   restore ej -> source seeks to ej's position -> batches after ej -> final epoch

The outputs are read with pyarrow.dataset, pandas and DuckDB (which must agree, so none may
see a hidden file).  Window results are compared as multisets of rows; running aggregates
(an update stream, cut differently by the crash) by the last row of each key.
"""
from __future__ import annotations

import itertools

import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb.testing import (CrashAt, assert_same_rows, crash_and_restore, hidden_files, last_per_key,
                              read_parquet_output, run_job)

from . import pipelines as P

SOURCES = ("arrow", "parquet", "generate")
CRASH_AT = (1, 5, 13, 26)                        # of 30 batches
PARALLELISM = ((1, 1), (2, 2), (1, 2), (2, 1))   # (crashed run, restored run)


def _cases():
    """Every (kind, source) twice; per kind every crash position and parallelism pair."""
    out = []
    for i, (kind, src) in enumerate(itertools.product(P.KINDS, SOURCES)):
        for j in range(2):
            k = CRASH_AT[(i + 2 * j) % len(CRASH_AT)]
            par = PARALLELISM[(i + j) % len(PARALLELISM)]
            out.append(pytest.param(kind, src, k, par, id=f"{kind}-{src}-k{k}-p{par[0]}to{par[1]}"))
    return out


#: (kind, state backend of the crashed run, of the restored run).  Snapshots are
#: backend-neutral Parquet tables, so a checkpoint restores on either.  The parametrization
#: point for state backends: a new one goes here and in ``_backend``.
BACKEND_CASES = (("tumbling", "memory", "rocksdb"), ("sliding", "rocksdb", "memory"),
                 ("session", "rocksdb", "rocksdb"), ("running", "rocksdb", "memory"),
                 ("running", "memory", "rocksdb"))


def _backend(name: str, tmp_path) -> hdb.StateBackend:
    if name == "memory":
        return hdb.StateBackend.memory()
    if name == "rocksdb":
        return hdb.StateBackend.rocksdb(path=str(tmp_path / "rocks"))
    raise AssertionError(f"unknown state backend {name!r}")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    table = P.events()
    folder = P.write_parquet_input(table, str(tmp_path_factory.mktemp("input")))
    return table, folder


#: Pipelines whose output is an update stream: how many update rows a key (or window) gets
#: depends on where micro-batches were cut, which a barrier changes (it flushes a partial
#: batch), so only the last row of each key is compared.
UPDATE_STREAMS = ("running", "tumbling-late")

_REFERENCE: dict = {}


def reference(kind: str, src: str, inputs, tmp_path_factory, value_sets: bool = True) -> pa.Table:
    """The uninterrupted run's output (no checkpoints, parallelism 1), once per input."""
    data = "generate" if src == "generate" else "table"
    key = (kind, data, value_sets)
    if key not in _REFERENCE:
        out = str(tmp_path_factory.mktemp("reference"))
        table, folder = inputs
        run_job(P.build(kind, "generate" if data == "generate" else "arrow", out, table, folder,
                        value_sets=value_sets), P.config())
        got = read_parquet_output(out)
        assert got.num_rows > 0
        _REFERENCE[key] = got
    return _REFERENCE[key]


def check_output(kind: str, src: str, out: str, expected: pa.Table) -> None:
    assert hidden_files(out) == [], "uncommitted sink files left after the job completed"
    got = read_parquet_output(out)
    if kind in UPDATE_STREAMS:
        keys = P.result_keys(kind, src)
        assert_same_rows(last_per_key(got, keys), last_per_key(expected, keys))
    else:
        assert_same_rows(got, expected)


@pytest.mark.parametrize("kind,src,crash_at,par", _cases())
def test_crash_at_batch_k_then_restore_gives_the_uninterrupted_output(
        kind, src, crash_at, par, inputs, tmp_path, tmp_path_factory):
    table, folder = inputs
    out, storage = str(tmp_path / "out"), str(tmp_path / "ckpt")
    run = crash_and_restore(P.build(kind, src, out, table, folder), P.config(storage, par[0]),
                            crash_at, name="eq", restore_config=P.config(storage, par[1]))
    assert run.crashed
    if run.crashed_checkpoints.count:
        assert run.checkpoints.restores == 1
    if crash_at >= 13:           # dozens of 1 ms intervals passed: the restore had state to load
        assert run.crashed_checkpoints.count >= 1
    assert run.checkpoints.fallbacks <= 1      # the epoch in flight at the crash: incomplete
    check_output(kind, src, out, reference(kind, src, inputs, tmp_path_factory))


@pytest.mark.parametrize("kind,crashed,restored", BACKEND_CASES, ids=[f"{k}-{a}-to-{b}" for k, a, b in BACKEND_CASES])
def test_restore_moves_state_between_backends(kind, crashed, restored, inputs, tmp_path, tmp_path_factory):
    table, folder = inputs
    out, storage = str(tmp_path / "out"), str(tmp_path / "ckpt")
    run = crash_and_restore(
        P.build(kind, "arrow", out, table, folder, value_sets=False),
        P.config(storage, 2, backend=_backend(crashed, tmp_path)), 17, name="backends",
        restore_config=P.config(storage, 1, backend=_backend(restored, tmp_path)))
    assert run.crashed and run.crashed_checkpoints.count >= 1 and run.checkpoints.restores == 1
    check_output(kind, "arrow", out, reference(kind, "arrow", inputs, tmp_path_factory, value_sets=False))


def test_two_crashes_in_a_row_then_restore_gives_the_uninterrupted_output(inputs, tmp_path, tmp_path_factory):
    # crash at batch 9; restored, crash again 8 batches later; restore with parallelism 2
    table, folder = inputs
    out, storage = str(tmp_path / "out"), str(tmp_path / "ckpt")
    build = P.build("session", "parquet", out, table, folder)
    for k in (9, 8):
        _, _, err = run_job(build, P.config(storage, 1), "twice", CrashAt(k))
        assert err is not None
    _, stats, _ = run_job(build, P.config(storage, 2), "twice")
    assert stats.restores == 1
    check_output("session", "parquet", out, reference("session", "parquet", inputs, tmp_path_factory))


def test_restarting_a_completed_job_adds_no_rows(inputs, tmp_path, tmp_path_factory):
    table, folder = inputs
    out, storage = str(tmp_path / "out"), str(tmp_path / "ckpt")
    build = P.build("tumbling", "arrow", out, table, folder)
    run_job(build, P.config(storage))
    result, stats, _ = run_job(build, P.config(storage))
    assert stats.restores == 1
    assert result.metrics["streaming_events_processed_total"] == 0
    check_output("tumbling", "arrow", out, reference("tumbling", "arrow", inputs, tmp_path_factory))


def test_committed_output_after_a_crash_is_part_of_the_final_output(inputs, tmp_path, tmp_path_factory):
    # pyarrow and pandas only: DuckDB is the subject of the next test
    table, folder = inputs
    out, storage = str(tmp_path / "out"), str(tmp_path / "ckpt")
    build = P.build("tumbling", "arrow", out, table, folder, rows_per_file=20)
    crash = CrashAt(25)
    _, stats, err = run_job(build, P.config(storage), "partial", crash)
    assert err is not None and stats.count >= 1
    early = read_parquet_output(out, readers=("pyarrow", "pandas"))
    run_job(build, P.config(storage), "partial", crash)       # the same pipeline, crash spent
    check_output("tumbling", "arrow", out, reference("tumbling", "arrow", inputs, tmp_path_factory))
    final = read_parquet_output(out)
    assert 0 < early.num_rows < final.num_rows
    final_rows = {tuple(r.values()) for r in final.select(["window_start", "k", "n"]).to_pylist()}
    assert all(tuple(r.values()) in final_rows for r in early.select(["window_start", "k", "n"]).to_pylist())


def test_a_restore_whose_state_matches_no_operator_is_refused(inputs, tmp_path):
    # crashed with .inspect(crash) upstream, restarted without it: 'window-4' becomes 'window-3'
    table, folder = inputs
    out, storage = str(tmp_path / "out"), str(tmp_path / "ckpt")

    def build(with_inspect: bool):
        def wire(env, crash):
            s = env.from_arrow(table)
            if with_inspect:
                s = s.inspect(crash)
            (s.with_watermark(time="ts").key_by("k").window(hdb.TumblingWindow.of(60))
             .aggregate(n=hdb.count()).sink(hdb.sinks.parquet(out)))
        return wire

    _, stats, err = run_job(build(True), P.config(storage), "renamed", CrashAt(20))
    assert err is not None and stats.count >= 1
    with pytest.raises(hdb.CheckpointError, match="window-4"):
        run_job(build(False), P.config(storage), "renamed")


def test_duckdb_skips_uncommitted_files_after_a_crash(inputs, tmp_path):
    # no checkpoint completes before the crash (interval: 1 hour), so every row written so far
    # sits in hidden files rolled every 20 rows
    table, folder = inputs
    out, storage = str(tmp_path / "out"), str(tmp_path / "ckpt")
    build = P.build("running", "arrow", out, table, folder, rows_per_file=20)
    _, stats, err = run_job(build, P.config(storage, interval_ms=3_600_000), "hidden", CrashAt(10))
    assert err is not None and stats.count == 0
    assert hidden_files(out), "precondition: the crashed run left uncommitted files"
    assert read_parquet_output(out).num_rows == 0
