"""Manifests are checked before use; checkpoint folders can be moved; a file that changes under
a restore raises CheckpointError, never SIGBUS.

Each fallback case forges the newest manifest (its checksum recomputed, so only the shape
check can refuse it) and restores::

    chk-(n-1)  intact                     <- restored, fallbacks == 1, a WARNING names chk-n
    chk-n      valid JSON, wrong shape
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import heliosdb as hdb
from heliosdb.checkpoint import read_state, read_state_info
from heliosdb.checkpoint.manifest import check_manifest, checksum

from . import pipelines as P
from .restorer import Restorer, with_checksum

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def restorer(tmp_path_factory):
    return Restorer(str(tmp_path_factory.mktemp("manifest")), P.events(), parallelism=2)


def _first_file(m: dict) -> dict:
    return next(f for e in m["operators"].values() for fs in e["files"].values() for f in fs)


def _rename_key(m):
    m["operators"] = {k: {("fils" if kk == "files" else kk): v for kk, v in e.items()} for k, e in m["operators"].items()}


def _files_a_string(m):
    next(iter(m["operators"].values()))["files"] = "agg-groups.parquet"


def _position_text(m):
    m["source"] = {"row": "12"}


def _position_negative(m):
    m["source"] = {"row": -400}


def _position_missing(m):
    m["source"] = {"rows": 400}


def _size_negative(m):
    _first_file(m)["size"] = -1


def _size_text(m):
    _first_file(m)["size"] = "1024"


def _path_outside(m):
    _first_file(m)["path"] = "/etc/passwd"


def _listed_twice(m):
    e = next(e for e in m["operators"].values() for fs in e["files"].values() if fs)
    fs = next(fs for fs in e["files"].values() if fs)
    fs.append(dict(fs[0]))


def _swapped_tables(m):
    files = m["operators"]["agg"]["files"]               # groups <-> distinct.u (same sizes, CRCs)
    files["groups"], files["distinct.u"] = files["distinct.u"], files["groups"]


def _moved_to_another_step(m):
    m["operators"]["watermark-3"]["files"] = m["operators"]["agg"]["files"]
    m["operators"]["agg"]["files"] = {}


def _epoch_other(m):
    m["epoch"] += 1


def _operators_list(m):
    m["operators"] = list(m["operators"].values())


def _rows_wrong(m):
    _first_file(m)["rows"] += 1


def _meta_a_list(m):
    next(iter(m["operators"].values()))["meta"] = []


FORGERIES = [_rename_key, _files_a_string, _position_text, _position_negative, _position_missing,
             _size_negative, _size_text, _path_outside, _listed_twice, _swapped_tables, _moved_to_another_step,
             _epoch_other,
             _operators_list, _rows_wrong, _meta_a_list]


@pytest.mark.parametrize("forge", FORGERIES, ids=[f.__name__.strip("_") for f in FORGERIES])
def test_a_manifest_of_the_wrong_shape_falls_back_to_the_previous_checkpoint(forge, restorer, caplog):
    m = restorer.manifest()
    forge(m)
    with caplog.at_level(logging.WARNING, logger="heliosdb.checkpoint"):
        epoch, stats = restorer.restore(json.dumps(with_checksum(m)).encode())
    assert epoch == restorer.previous and stats.fallbacks == 1
    warned = [r.getMessage() for r in caplog.records if f"checkpoint {restorer.newest} is unusable" in r.getMessage()]
    assert warned, "a warning names the unusable checkpoint"


def test_an_intact_manifest_is_used(restorer):
    epoch, stats = restorer.restore()
    assert epoch == restorer.newest and stats.fallbacks == 0


def test_the_check_names_the_field_and_the_value():
    m = {"format_version": 1, "epoch": 2, "source": None, "sinks": {},
         "operators": {"agg#0": {"logical": "agg", "kind": "window", "meta": {},
                                 "files": {"groups": [{"path": "chk-0000000002/agg/agg#0-groups-0123456789ab.parquet",
                                                       "size": -5, "crc32": 1, "rows": 1}]}}}}
    m["checksum"] = checksum(m)
    with pytest.raises(hdb.CheckpointError, match=r"operators\.agg#0\.files\.groups\[0\]\.size must be an integer "
                                                  r"in \[0, \d+\), got -5"):
        check_manifest(m, 2, "M", lambda p: p)


def test_read_state_skips_an_unusable_checkpoint_and_says_which_it_read(restorer, tmp_path, caplog):
    job = str(tmp_path / "job")
    shutil.copytree(restorer.pristine, job)
    m = restorer.manifest()
    _files_a_string(m)
    Path(job, f"chk-{restorer.newest:010d}", "_manifest.json").write_text(json.dumps(with_checksum(m)))
    with caplog.at_level(logging.WARNING, logger="heliosdb.checkpoint"):
        info = read_state_info(job, operator="agg")
    assert info.epoch == restorer.previous
    assert info.checkpoint == f"{job}/chk-{restorer.previous:010d}"
    assert [e for e, _ in info.skipped] == [restorer.newest] and "files" in info.skipped[0][1]
    assert any(f"checkpoint {restorer.newest} of" in r.getMessage() for r in caplog.records)
    table = read_state(job, operator="agg")
    assert table.schema.metadata[b"heliosdb.checkpoint.epoch"] == str(restorer.previous).encode()
    assert table.equals(info.table)
    with pytest.raises(hdb.CheckpointError, match="must be an object of tables"):
        read_state(f"{job}/chk-{restorer.newest:010d}", operator="agg")


# -- relocatable folders ----------------------------------------------------------------------------
def test_manifests_name_files_relative_to_the_job_folder(restorer):
    for e in restorer.committed:
        m = json.loads(Path(restorer.chk(restorer.pristine, e), "_manifest.json").read_text())
        paths = [f["path"] for g in ("operators", "sinks") for x in m[g].values() for fs in x["files"].values()
                 for f in fs]
        assert paths and all(p.startswith(f"chk-{e:010d}/") for p in paths), paths


def test_a_checkpoint_folder_copied_elsewhere_restores(restorer, tmp_path):
    moved = tmp_path / "elsewhere" / "ckpt" / "job"
    shutil.copytree(restorer.pristine, moved)
    renamed = tmp_path / "other" / "renamed-job"
    shutil.copytree(restorer.pristine, renamed)
    shutil.rmtree(restorer.pristine)                 # nothing may still point at the old place
    try:
        assert read_state_info(str(moved), operator="agg").epoch == restorer.newest
        assert read_state_info(str(renamed), operator="agg").epoch == restorer.newest
        # a job restores from a fresh copy of the folder (in another directory) each time
        epoch, stats = restorer.restore(source=str(moved))
        assert epoch == restorer.newest and stats.fallbacks == 0 and stats.restores == 1
    finally:
        shutil.copytree(moved, restorer.pristine)


def _absolute(m: dict, job: str) -> dict:
    for g in ("operators", "sinks"):
        for e in m[g].values():
            for fs in e["files"].values():
                for f in fs:
                    f["path"] = f"{job}/{f['path']}"
    return with_checksum(m)


def test_an_old_manifest_with_absolute_paths_inside_the_job_folder_is_read(restorer, tmp_path):
    job = str(tmp_path / "ckpt" / "job")
    shutil.copytree(restorer.pristine, job)
    manifest = Path(job, f"chk-{restorer.newest:010d}", "_manifest.json")
    manifest.write_text(json.dumps(_absolute(restorer.manifest(), job)))
    info = read_state_info(job, operator="agg")
    assert info.epoch == restorer.newest and not info.skipped


def test_an_old_manifest_with_absolute_paths_to_where_the_folder_was_is_refused(restorer, tmp_path):
    job = str(tmp_path / "ckpt" / "job")
    shutil.copytree(restorer.pristine, job)
    manifest = Path(job, f"chk-{restorer.newest:010d}", "_manifest.json")
    manifest.write_text(json.dumps(_absolute(restorer.manifest(), restorer.pristine)))
    info = read_state_info(job, operator="agg")
    assert info.epoch == restorer.previous
    assert "outside" in info.skipped[0][1]


# -- files changing under a restore ----------------------------------------------------------------
SCRIPT = """
import os, sys
import heliosdb.checkpoint.storage as storage
from heliosdb.checkpoint import read_state_info

job, when = sys.argv[1], sys.argv[2]
real_read, real_crc = storage.Store._read_bytes, storage.crc32

def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)

def read_bytes(self, path):            # another process truncates the file as it is opened
    if when == "before-read":
        truncate(path)
    data = real_read(self, path)
    if when == "after-read":
        truncate(path)
    return data

storage.Store._read_bytes = read_bytes
try:
    info = read_state_info(job, operator="agg")
    print("read", info.epoch, info.table.num_rows, len(info.skipped))
except Exception as exc:
    print("raised", type(exc).__name__, exc)
"""


@pytest.mark.parametrize("when", ["before-read", "after-read"])
def test_a_file_truncated_during_a_restore_raises_checkpoint_error_or_is_read_intact(when, restorer, tmp_path):
    # run in a child: with a memory map, the truncation is a SIGBUS that kills the process
    job = str(tmp_path / "job")
    shutil.copytree(restorer.pristine, job)
    for e in restorer.committed[:-1]:
        shutil.rmtree(restorer.chk(job, e))          # no fallback: the outcome is the newest's
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), job, when], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"the restore killed the process (status {done.returncode}): {done.stderr[-2000:]}"
    out = done.stdout.strip().splitlines()[-1]
    if when == "before-read":
        assert out.startswith("raised CheckpointError") and "bytes, the manifest says" in out, out
    else:                                              # the verified copy in memory is what is decoded
        assert out.startswith(f"read {restorer.newest} "), out
