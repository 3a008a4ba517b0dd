"""Fuzz: whatever a manifest holds, restore uses it, falls back to the previous checkpoint, or
raises CheckpointError; never any other exception, never a crash.

Each example takes the newest manifest of a crashed job, applies 1-3 mutations (delete a key,
change a value's type, rename a key, nudge a number, swap files, point a path outside the job,
a bad source position, random operator meta, truncate the text, garbage), recomputes the
checksum most of the time (a forged manifest must be caught by its shape, not only by its
checksum), and restores::

    chk-(n-1)  intact        <- restored when chk-n is unusable (fallbacks == 1)
    chk-n      mutated       <- restored if the mutation is harmless (fallbacks == 0)

The suite runs 300 examples; ``HELIOSDB_FUZZ_EXAMPLES=10000`` runs more (random seeds; the
suite's run is derandomized), e.g.::

    HELIOSDB_FUZZ_EXAMPLES=10000 python -m pytest -q -p no:cacheprovider -s tests/checkpoint/test_manifest_fuzz.py
"""
from __future__ import annotations

import json
import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import heliosdb as hdb

from . import pipelines as P
from .restorer import Restorer, with_checksum

EXAMPLES = int(os.environ.get("HELIOSDB_FUZZ_EXAMPLES", "300"))
OUTCOMES: Counter = Counter()

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                      st.sampled_from([0, -1, 1, 2**32, 2**63, 1.5, "", "x", "row", "../x", "/etc/passwd"]),
                      st.text(max_size=12))
JSON = st.recursive(JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                    max_leaves=12)


@pytest.fixture(scope="module")
def restorer(tmp_path_factory):
    return Restorer(str(tmp_path_factory.mktemp("fuzz")), P.events(), parallelism=2)


def _paths(node, at=()):
    """Every (container path, key) in a JSON tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield at + (k,)
            yield from _paths(v, at + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield at + (i,)
            yield from _paths(v, at + (i,))


def _parent(m, path):
    for k in path[:-1]:
        m = m[k]
    return m


def _steps(m, group: str) -> dict:
    steps = m.get(group)
    return steps if isinstance(steps, dict) else {}


def _files(m):
    return [(group, name, t, i) for group in ("operators", "sinks")
            for name, e in _steps(m, group).items() if isinstance(e, dict) and isinstance(e.get("files"), dict)
            for t, fs in e["files"].items() if isinstance(fs, list) for i in range(len(fs))]


def _file(m, ref):
    g, name, t, i = ref
    return m[g][name]["files"][t][i]


OUTSIDE = ["/etc/passwd", "../../x.parquet", "chk-{e:010d}/../../x.parquet", "", "/", "chk-{e:010d}",
           "chk-{e:010d}/agg/agg-groups-000000000000.parquet", "chk-0000000001/agg/agg#0-groups-0123456789ab.parquet",
           "{job}2/chk-{e:010d}/agg/agg#0-groups-0123456789ab.parquet", "s3://bucket/x.parquet", "chk-{e:010d}//x",
           "C:\\x.parquet", "chk-{e:010d}/agg/\x00.parquet"]


@st.composite
def mutated(draw, manifest: dict, job_dir: str) -> bytes:
    m = json.loads(json.dumps(manifest))
    epoch = manifest["epoch"]
    for _ in range(draw(st.integers(1, 3))):
        if not isinstance(m, dict):
            break
        kind = draw(st.sampled_from(["delete", "retype", "rename", "nudge", "swap", "outside", "position",
                                     "meta", "text"]))
        paths = list(_paths(m))
        if kind in ("delete", "retype", "rename") and paths:
            path = draw(st.sampled_from(paths))
            parent = _parent(m, path)
            if kind == "delete":
                del parent[path[-1]]
            elif kind == "retype":
                parent[path[-1]] = draw(JSON)
            elif isinstance(parent, dict):
                parent[draw(st.text(max_size=8))] = parent.pop(path[-1])
        elif kind == "nudge":
            ints = [p for p in paths if type(_parent(m, p)[p[-1]]) is int]
            if ints:
                path = draw(st.sampled_from(ints))
                parent = _parent(m, path)
                parent[path[-1]] = draw(st.sampled_from([lambda v: v + 1, lambda v: v - 1, lambda v: -v,
                                                         lambda v: v * 2, lambda v: 0]))(parent[path[-1]])
        elif kind == "swap":
            refs = _files(m)
            if len(refs) >= 2:
                a, b = draw(st.sampled_from(refs)), draw(st.sampled_from(refs))
                fa, fb = _file(m, a), _file(m, b)
                if draw(st.booleans()):
                    m[a[0]][a[1]]["files"][a[2]][a[3]], m[b[0]][b[1]]["files"][b[2]][b[3]] = fb, fa
                else:                       # the same file listed twice, or paths swapped only
                    m[a[0]][a[1]]["files"][a[2]][a[3]] = dict(fa, path=fb["path"]) if isinstance(fa, dict) and \
                        isinstance(fb, dict) and "path" in fb else fb
        elif kind == "outside":
            refs = _files(m)
            if refs:
                f = _file(m, draw(st.sampled_from(refs)))
                if isinstance(f, dict):
                    f["path"] = draw(st.sampled_from(OUTSIDE)).format(e=epoch, job=job_dir)
        elif kind == "position":
            m["source"] = draw(st.one_of(JSON, st.fixed_dictionaries({"row": JSON}),
                                         st.fixed_dictionaries({"row": st.integers(-10, 10**12)})))
        elif kind == "meta":
            ops = [e for e in _steps(m, "operators").values() if isinstance(e, dict)]
            if ops:
                op = draw(st.sampled_from(ops))
                op["meta"] = draw(st.one_of(JSON, st.dictionaries(st.sampled_from(["watermark", "seq", "current",
                                                                                   "max_seen", "x"]), JSON)))
        else:
            text = json.dumps(m)
            if draw(st.booleans()):
                return text[: draw(st.integers(0, len(text)))].encode()
            return draw(st.binary(max_size=64))
    if draw(st.integers(0, 9)) < 8:
        m = with_checksum(m)
    return json.dumps(m).encode()


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          derandomize="HELIOSDB_FUZZ_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_a_mutated_manifest_is_used_falls_back_or_raises_checkpoint_error(restorer, data):
    text = data.draw(mutated(restorer.manifest(), os.path.dirname(restorer.pristine)))
    try:
        epoch, stats = restorer.restore(text)
    except hdb.CheckpointError:
        OUTCOMES["raised CheckpointError"] += 1
        return
    if epoch == restorer.newest:
        assert stats.fallbacks == 0
        OUTCOMES["used (harmless mutation)"] += 1
    else:
        assert epoch == restorer.previous and stats.fallbacks == 1, (epoch, stats.fallbacks)
        OUTCOMES["fell back"] += 1


def test_fuzz_outcomes_reported():
    """Prints the outcomes of the fuzz run above (with ``-s``); the contract is in its asserts."""
    if OUTCOMES:
        total = sum(OUTCOMES.values())
        print(f"\n{total:,} mutated manifests: " + ", ".join(f"{n:,} {k}" for k, n in OUTCOMES.most_common()))
