"""Corrupt checkpoints: detected at restore, the previous checkpoint used (counted, logged),
output still exact; nothing intact at all -> the job refuses to start.

Each case: a job crashed at batch 20 of 30 with ``retain=3`` (so >= 2 committed checkpoints),
then the newest committed checkpoint is damaged, then the job is started again::

    chk-(n-1)  intact   <- restored
    chk-n      damaged  <- detected, skipped: fallbacks == 1, WARNING names it
"""
from __future__ import annotations

import json
import logging
import os
import time

import pytest

import heliosdb as hdb
from heliosdb.testing import CrashAt, assert_same_rows, read_parquet_output, run_job

from . import pipelines as P


@pytest.fixture(scope="module")
def expected(table, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("expected"))
    run_job(P.build("tumbling", "arrow", out, table), P.config())
    return read_parquet_output(out)


class PacedCrashAt(CrashAt):
    """CrashAt that gives every batch 3 ms: checkpoints (due every 1 ms) then commit several
    times before batch 20 however fast the pipeline runs (with parallelism 2 it can reach
    batch 20 before the second commit)."""

    def __call__(self, batch) -> None:
        time.sleep(0.003)
        super().__call__(batch)


class Crashed:
    """A crashed job's folders, its committed checkpoints and their manifests."""

    def __init__(self, tmp_path, table, parallelism: int = 2):
        # How many checkpoints commit before the crash depends on thread timing (one is in
        # flight at a time; on a busy machine the writer may finish only one in 20 batches):
        # the run is repeated, in a fresh folder, until the precondition holds.
        for attempt in range(5):
            base = tmp_path / f"run{attempt}"
            self.storage, self.out = str(base / "ckpt"), str(base / "out")
            self.crash = PacedCrashAt(20)
            self.build = P.build("tumbling", "arrow", self.out, table)
            _, stats, err = run_job(self.build, self.config(parallelism), "job", self.crash)
            assert err is not None
            self.job = os.path.join(self.storage, "job")
            self.committed = [e for e in self.epochs() if os.path.exists(self.manifest_path(e))]
            if len(self.committed) >= 2:
                break
        assert len(self.committed) >= 2, f"precondition: >= 2 committed checkpoints, have {self.committed}"
        # the epoch in flight at the crash (if its files were written): never committed, so
        # ignored at restore (its epoch runs again), not counted as a fallback
        self.incomplete = [e for e in self.epochs() if e not in self.committed]

    def config(self, parallelism: int = 2):
        return P.config(self.storage, parallelism, retain=3)

    def epochs(self):
        return sorted(int(n[4:]) for n in os.listdir(self.job) if n.startswith("chk-"))

    def chk(self, epoch: int) -> str:
        return os.path.join(self.job, f"chk-{epoch:010d}")

    def manifest_path(self, epoch: int) -> str:
        return os.path.join(self.chk(epoch), "_manifest.json")

    def manifest(self, epoch: int) -> dict:
        with open(self.manifest_path(epoch)) as f:
            return json.load(f)

    def data_files(self, epoch: int) -> list:
        m = self.manifest(epoch)
        files = [os.path.join(self.job, f["path"])            # relative to the job's folder
                 for op in m["operators"].values() for fs in op["files"].values() for f in fs]
        assert files, "precondition: the checkpoint holds state files"
        return files

    def restart(self, parallelism: int = 1):
        return run_job(self.build, self.config(parallelism), "job", self.crash)


def truncate(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def flip_byte(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x01]))


def damage(kind: str, crashed: Crashed, epoch: int) -> None:
    if kind == "truncated-data-file":
        truncate(crashed.data_files(epoch)[0])
    elif kind == "flipped-byte":
        flip_byte(crashed.data_files(epoch)[-1])
    elif kind == "deleted-data-file":
        os.remove(crashed.data_files(epoch)[0])
    elif kind == "empty-manifest":
        open(crashed.manifest_path(epoch), "w").close()
    elif kind == "truncated-manifest":
        truncate(crashed.manifest_path(epoch))
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncated-data-file", "flipped-byte", "deleted-data-file",
                                  "empty-manifest", "truncated-manifest"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(kind, table, expected, tmp_path, caplog):
    crashed = Crashed(tmp_path, table)
    newest, previous = crashed.committed[-1], crashed.committed[-2]
    damage(kind, crashed, newest)
    with caplog.at_level(logging.INFO, logger="heliosdb.checkpoint"):
        result, stats, _ = crashed.restart()
    assert stats.fallbacks == 1 and stats.restores == 1       # the damaged one; never-committed ones are no fallback
    assert result.metrics.get("streaming_checkpoint_fallbacks_total", stats.fallbacks) == stats.fallbacks
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and f"checkpoint {newest} " in r.getMessage()]
    assert warned, f"no warning names the damaged checkpoint {newest}"
    restored = [r for r in caplog.records if f"restored checkpoint {previous}" in r.getMessage()]
    assert restored, f"checkpoint {previous} was not the one restored"
    assert_same_rows(read_parquet_output(crashed.out), expected)


def test_a_stray_temporary_file_in_an_unfinished_checkpoint_is_ignored(table, expected, tmp_path, caplog):
    # a crash between writing the manifest's temporary file and renaming it: that epoch never
    # committed, so restoring the previous one is no fallback (nothing committed was lost)
    crashed = Crashed(tmp_path, table)
    newest = crashed.committed[-1]
    stray = os.path.join(crashed.chk(newest + 1), "._manifest.json.1a2b3c4d")
    os.makedirs(os.path.dirname(stray), exist_ok=True)
    with open(crashed.manifest_path(newest)) as src, open(stray, "w") as dst:
        dst.write(src.read().replace(f'"epoch": {newest}', f'"epoch": {newest + 1}'))
    with caplog.at_level(logging.INFO, logger="heliosdb.checkpoint"):
        result, stats, _ = crashed.restart()
    assert stats.restores == 1 and stats.fallbacks == 0
    assert any(f"restored checkpoint {newest}" in r.getMessage() for r in caplog.records)
    assert not os.path.exists(stray), "the unfinished checkpoint is removed"
    # The restarted job runs epoch newest + 1 again: if it is among the retained ones at the
    # end, it is that run's committed checkpoint, not the unfinished one.
    if os.path.exists(crashed.chk(newest + 1)):
        assert os.path.exists(crashed.manifest_path(newest + 1))
        assert crashed.manifest(newest + 1)["epoch"] == newest + 1
    assert_same_rows(read_parquet_output(crashed.out), expected)


def test_stray_files_inside_a_committed_checkpoint_are_ignored(table, expected, tmp_path, caplog):
    crashed = Crashed(tmp_path, table)
    newest = crashed.committed[-1]
    for name in (".tmp-upload-77", "agg/stray.parquet.tmp"):
        path = os.path.join(crashed.chk(newest), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"not parquet")
    with caplog.at_level(logging.INFO, logger="heliosdb.checkpoint"):
        _, stats, _ = crashed.restart()
    assert stats.restores == 1 and stats.fallbacks == 0       # unfinished epochs are no fallback
    assert any(f"restored checkpoint {newest}" in r.getMessage() for r in caplog.records)
    assert_same_rows(read_parquet_output(crashed.out), expected)


def test_with_every_checkpoint_damaged_the_job_refuses_to_start(table, tmp_path):
    crashed = Crashed(tmp_path, table)
    for e in crashed.epochs():
        os.makedirs(crashed.chk(e), exist_ok=True)
        open(crashed.manifest_path(e), "w").close()
    for attempt in range(2):      # the refusal leaves no lease behind: the second says the same
        with pytest.raises(hdb.CheckpointError, match="refusing to start") as err:
            crashed.restart()
        assert "job" in str(err.value)
    assert crashed.epochs(), "the damaged checkpoints are kept for inspection"


def test_a_manifest_missing_its_fields_falls_back(table, expected, tmp_path):
    crashed = Crashed(tmp_path, table)
    newest = crashed.committed[-1]
    with open(crashed.manifest_path(newest), "w") as f:
        json.dump({"format_version": 1, "epoch": newest}, f)
    _, stats, _ = crashed.restart()              # no KeyError: the manifest is checked first
    assert stats.fallbacks >= 1
    assert_same_rows(read_parquet_output(crashed.out), expected)


def test_a_flipped_digit_in_the_manifest_is_detected(table, expected, tmp_path):
    crashed = Crashed(tmp_path, table)
    newest = crashed.committed[-1]
    text = open(crashed.manifest_path(newest)).read()
    row = crashed.manifest(newest)["source"]["row"]
    assert f'"row": {row}' in text
    with open(crashed.manifest_path(newest), "w") as f:
        f.write(text.replace(f'"row": {row}', f'"row": {row + 1}'))
    _, stats, _ = crashed.restart()
    assert stats.fallbacks >= 1
    assert_same_rows(read_parquet_output(crashed.out), expected)


def test_an_unfinished_first_checkpoint_does_not_block_the_job(table, expected, tmp_path):
    storage, out = str(tmp_path / "ckpt"), str(tmp_path / "out")
    build = P.build("tumbling", "arrow", out, table)
    first = os.path.join(storage, "job", "chk-0000000001", "agg#0")
    os.makedirs(first)
    with open(os.path.join(first, "agg#0-groups-0123456789ab.parquet"), "wb") as f:
        f.write(b"PAR1 half written")                          # what a SIGKILL mid-write leaves
    run_job(build, P.config(storage), "job")
    assert_same_rows(read_parquet_output(out), expected)
