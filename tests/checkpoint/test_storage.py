"""Checkpoint paths are confined to the job's directory, and the restore path unpickles nothing.

- job and step names that could leave the storage root ('..', '/', absolute paths) are
  refused with an error naming them;
- a manifest is data too: one that references a file outside the job's directory is refused
  on restore, even when that file has the size and checksum the manifest claims.
"""
from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import zlib
from pathlib import Path

import pytest

import heliosdb as hdb
from heliosdb.testing import CrashAt, run_job

from . import pipelines as P

ROOT = Path(__file__).resolve().parents[2]
BAD_NAMES = ["..", "../escape", "a/b", "/etc/passwd", "/tmp/abs", "a/../../b", ".hidden", ""]


def _tiny(env, crash=None):
    env.from_arrow(P.events(100)).sink(hdb.sinks.memory())


@pytest.mark.parametrize("name", BAD_NAMES)
def test_job_names_that_leave_the_storage_root_are_refused(name, tmp_path):
    env = hdb.StreamEnvironment(P.config(str(tmp_path)))
    _tiny(env)
    with pytest.raises(hdb.ConfigError, match="job name") as err:
        env.execute(name=name)
    assert repr(name) in str(err.value)
    assert os.listdir(tmp_path) == [], "nothing is written for a refused job"


def test_a_job_name_with_dot_dot_inside_is_refused_before_anything_is_written(tmp_path):
    env = hdb.StreamEnvironment(P.config(str(tmp_path)))
    _tiny(env)
    with pytest.raises(hdb.ConfigError, match=r"'a\.\.b'"):
        env.execute(name="a..b")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", BAD_NAMES)
def test_step_names_that_leave_the_storage_root_are_refused(name):
    s = hdb.StreamEnvironment().from_arrow(P.events(10))
    with pytest.raises(hdb.ConfigError, match="step name") as err:
        s.name(name)
    assert repr(name) in str(err.value)


def test_a_step_name_that_cannot_be_a_checkpoint_path_is_refused(tmp_path):
    env = hdb.StreamEnvironment(P.config(str(tmp_path / "ckpt")))
    s = env.from_arrow(P.events()).key_by("k").window(hdb.TumblingWindow.of(2), time="ts").aggregate(n=hdb.count())
    with pytest.raises(hdb.ConfigError, match=r"'a\.\.b'"):
        s.name("a..b")


# -- manifests are data: references outside the job directory ------------------------------------
def _crashed_job(tmp_path):
    storage, out = str(tmp_path / "ckpt"), str(tmp_path / "out")
    build = P.build("tumbling", "arrow", out, P.events())
    crash = CrashAt(15)
    _, stats, err = run_job(build, P.config(storage, retain=3), "job", crash)
    assert err is not None and stats.count >= 1
    job = os.path.join(storage, "job")
    committed = sorted(n for n in os.listdir(job)
                       if n.startswith("chk-") and os.path.exists(os.path.join(job, n, "_manifest.json")))
    return storage, build, crash, job, committed


def _redirect(manifest_path: str, make_path) -> str:
    """Point the manifest's first state file at ``make_path(original)``, a copy of it (same
    size and CRC-32), so only the path check can refuse it."""
    m = json.loads(Path(manifest_path).read_text())
    entry = next(f for op in m["operators"].values() for fs in op["files"].values() for f in fs)
    original = os.path.join(os.path.dirname(os.path.dirname(manifest_path)), entry["path"])  # relative to the job
    target = make_path(original)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(original, target)
    assert zlib.crc32(Path(target).read_bytes()) & 0xFFFFFFFF == entry["crc32"]
    entry["path"] = target
    Path(manifest_path).write_text(json.dumps(m))
    return target


@pytest.mark.parametrize("where", ["outside", "dot-dot", "sibling-job"])
def test_a_manifest_referencing_a_file_outside_the_job_directory_is_refused(where, tmp_path, caplog):
    storage, build, crash, job, committed = _crashed_job(tmp_path)
    for name in committed[:-1]:                 # only the newest remains: no fallback possible
        shutil.rmtree(os.path.join(job, name))
    for name in os.listdir(job):                # nor an unfinished one
        if name.startswith("chk-") and name != committed[-1]:
            shutil.rmtree(os.path.join(job, name))
    moves = {
        "outside": lambda p: str(tmp_path / "elsewhere" / "state.parquet"),
        "dot-dot": lambda p: f"{job}/{committed[-1]}/../../../elsewhere/state.parquet",
        "sibling-job": lambda p: p.replace(f"{os.sep}job{os.sep}", f"{os.sep}job2{os.sep}"),
    }
    target = _redirect(os.path.join(job, committed[-1], "_manifest.json"), moves[where])
    with caplog.at_level(logging.WARNING, logger="heliosdb.checkpoint"):
        with pytest.raises(hdb.CheckpointError, match="refusing to start"):
            run_job(build, P.config(storage), "job", crash)
    reasons = [r.getMessage() for r in caplog.records if "outside" in r.getMessage()]
    assert reasons and target in reasons[0], "the warning names the file outside the job directory"


def test_a_manifest_referencing_a_file_outside_falls_back_to_the_previous_checkpoint(tmp_path, caplog):
    storage, build, crash, job, committed = _crashed_job(tmp_path)
    assert len(committed) >= 2
    _redirect(os.path.join(job, committed[-1], "_manifest.json"),
              lambda p: str(tmp_path / "elsewhere" / "state.parquet"))
    with caplog.at_level(logging.INFO, logger="heliosdb.checkpoint"):
        _, stats, _ = run_job(build, P.config(storage), "job", crash)
    assert stats.fallbacks >= 1
    assert any(f"restored checkpoint {int(committed[-2][4:])}" in r.getMessage() for r in caplog.records)


# -- nothing on the restore path unpickles --------------------------------------------------------
RESTORE_PATH = ["heliosdb/checkpoint", "heliosdb/operators", "heliosdb/state", "heliosdb/aggregates",
                "heliosdb/connectors/sources.py", "heliosdb/connectors/sinks.py"]
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "marshal", "shelve", "joblib"}
UNSAFE_CALLS = {"read_pickle", "loads", "load"}


def _modules():
    for entry in RESTORE_PATH:
        p = ROOT / entry
        yield from (sorted(p.rglob("*.py")) if p.is_dir() else [p])


def test_nothing_on_the_restore_path_imports_or_calls_an_unpickler():
    found = []
    for path in _modules():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [f"{path}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
                found.append(f"{path}: from {node.module} import ...")
            elif isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                owner = getattr(fn.value, "id", "") if isinstance(fn, ast.Attribute) else ""
                if name == "read_pickle" or (name in UNSAFE_CALLS and owner in UNSAFE_MODULES):
                    found.append(f"{path}:{node.lineno}: {owner}.{name}()")
                if any(k.arg == "allow_pickle" and getattr(k.value, "value", False) for k in node.keywords):
                    found.append(f"{path}:{node.lineno}: allow_pickle=True")
    assert not found, "the restore path must not unpickle:\n" + "\n".join(found)
    assert len(list(_modules())) >= 8
