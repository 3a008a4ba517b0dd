"""The group-state interface (``heliosdb.state``) on both backends, memory and RocksDB:
every aggregate, and the operations windows rely on.

Sliding windows merge panes, sessions merge when an event bridges them, state is compacted
with ``take``: all of it is only right if

    update(all rows)  ==  update(part 1), update(part 2), ... then merge the parts (any order)

and both equal the oracle (``tests/oracle.py``) over each group's rows.  Also checked: merging
with a remapping of group ids, merging a group into another of the same partial (what
sessions do), ``merge_aligned`` (sliding panes), ``take``, and the Arrow form of checkpoints
(``to_arrow`` / ``state_from_arrow``), on either backend and from one to the other.
"""
from __future__ import annotations

import tempfile
from typing import Dict, List

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import heliosdb as hdb
from heliosdb.state import AccPlan, GroupState, state_from_arrow
from tests.oracle import ALL_AGGS, agg_specs, assert_row_matches

SCHEMA = pa.schema([("v", pa.int64()), ("f", pa.float64()), ("s", pa.string())])
PLAN_AGGS = list(agg_specs().items())
_settings = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


BACKENDS = ["memory", "rocksdb"]
_plans: Dict[str, AccPlan] = {}


def _plan(backend: str = "memory", aggs=PLAN_AGGS) -> AccPlan:
    """One plan per backend for the module (a RocksDB plan opens one database)."""
    if aggs is not PLAN_AGGS:
        return AccPlan(SCHEMA, aggs, "acc-test", _backend(backend))
    if backend not in _plans:
        _plans[backend] = AccPlan(SCHEMA, PLAN_AGGS, "acc-test", _backend(backend))
    return _plans[backend]


def _backend(name: str):
    return None if name == "memory" else hdb.StateBackend.rocksdb(path=tempfile.mkdtemp(prefix="acc-test-"))


@pytest.fixture(scope="module", autouse=True)
def _close_databases():
    yield
    for plan in _plans.values():
        plan.close_state()


def Partial(plan: AccPlan, capacity: int = 16, rows: bool = False) -> GroupState:
    """A new group state on the plan's backend."""
    return plan.new_state(capacity, rows)


def _batch(rows: List[dict]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=SCHEMA)


def _update(part: GroupState, plan: AccPlan, rows: List[dict], gids: List[int], seq0: int) -> None:
    part.ensure(max(gids) + 1 if gids else 0)
    if rows:
        seqs = np.arange(seq0, seq0 + len(rows), dtype=np.int64)
        part.update(np.array(gids, np.int64), plan.prepare(_batch(rows), seqs))


def _results(part: GroupState, ids=None) -> List[Dict[str, object]]:
    arrays = part.results(ids)
    names = [name for name, *_ in ALL_AGGS]
    return [dict(zip(names, vals)) for vals in zip(*(a.to_pylist() for a in arrays))]


def _same(a: Dict[str, object], b: Dict[str, object]) -> None:
    """Two result rows agree: exactly, floats to 1e-9 (NaN == NaN)."""
    assert repr(sorted(a)) == repr(sorted(b))
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, float) and isinstance(y, float):
            assert x == pytest.approx(y, rel=1e-9, abs=1e-9, nan_ok=True), k
        else:
            assert x == y, k


_rows = st.lists(st.fixed_dictionaries({
    "v": st.one_of(st.none(), st.integers(-50, 50)),
    "f": st.one_of(st.none(), st.integers(-80, 80).map(lambda x: x / 4),
                   st.sampled_from([float("nan"), -0.0])),
    "s": st.one_of(st.none(), st.sampled_from(["a", "b", "", "ü"])),
}), min_size=1, max_size=40)


@pytest.mark.parametrize("backend", BACKENDS)
@_settings
@given(rows=_rows, data=st.data())
def test_update_in_parts_then_merge_equals_update_all_at_once(backend, rows, data):
    # rows -> groups 0..G-1; cut into 1-4 parts (arrival numbers kept), merged in random order:
    #   [r0 r1 r2 | r3 r4 | r5]  ->  P1, P2, P3  ->  merge(P3), merge(P1), merge(P2)  ==  P(all)
    n = len(rows)
    groups = data.draw(st.integers(1, 4))
    gids = data.draw(st.lists(st.integers(0, groups - 1), min_size=n, max_size=n))
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=3)))
    bounds = [0] + cuts + [n]
    plan = _plan(backend)
    whole = Partial(plan, 16)
    _update(whole, plan, rows, gids, 0)
    merged = Partial(plan, 16)
    merged.ensure(groups)
    parts = []
    for b0, b1 in zip(bounds, bounds[1:]):
        p = Partial(plan, 16)
        _update(p, plan, rows[b0:b1], gids[b0:b1], b0)
        parts.append(p)
    order = data.draw(st.permutations(range(len(parts))))
    for i in order:
        ids = np.arange(parts[i].n, dtype=np.int64)
        merged.ensure(groups)
        merged.merge(parts[i], ids, ids)
    merged.n = max(merged.n, whole.n)
    got_whole, got_merged = _results(whole), _results(merged)
    for g in range(whole.n):
        events = [r for r, gg in zip(rows, gids) if gg == g]
        assert_row_matches(got_whole[g], events, where=f"group {g}, all at once")
        assert_row_matches(got_merged[g], events, where=f"group {g}, merged parts")
        _same(got_whole[g], got_merged[g])


@pytest.mark.parametrize("backend", BACKENDS)
@_settings
@given(rows=_rows, data=st.data())
def test_merge_with_remapped_ids_and_take_follow_the_groups(backend, rows, data):
    # src group i -> dst group perm[i]; take(perm) reorders; both keep each group's results
    n = len(rows)
    groups = data.draw(st.integers(1, 5))
    gids = data.draw(st.lists(st.integers(0, groups - 1), min_size=n, max_size=n))
    plan = _plan(backend)
    src = Partial(plan, 16)
    _update(src, plan, rows, gids, 0)
    src.ensure(groups)
    perm = np.array(data.draw(st.permutations(range(groups))), np.int64)
    dst = Partial(plan, 16)
    dst.ensure(groups)
    dst.merge(src, np.arange(groups, dtype=np.int64), perm)
    before = _results(src)
    after = _results(dst)
    picked = _results(src, perm)
    taken = _results(src.take(perm))        # src is gone after take (RocksDB drops its rows)
    for i in range(groups):
        _same(after[perm[i]], before[i])
        _same(taken[i], before[perm[i]])
        _same(picked[i], before[perm[i]])


@pytest.mark.parametrize("backend", BACKENDS)
@_settings
@given(rows=_rows, data=st.data())
def test_merge_aligned_equals_merge_by_identity(backend, rows, data):
    # sliding panes share one key table: pane A's group g and pane B's group g are one key
    n = len(rows)
    gids = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    cut = data.draw(st.integers(0, n))
    plan = _plan(backend)
    a, b = Partial(plan, 16, rows=True), Partial(plan, 16, rows=True)
    _update(a, plan, rows[:cut], gids[:cut], 0)
    _update(b, plan, rows[cut:], gids[cut:], cut)
    aligned, by_id = Partial(plan, 16, rows=True), Partial(plan, 16, rows=True)
    for p in (a, b):
        aligned.ensure(p.n)
        aligned.merge_aligned(p)
        by_id.ensure(p.n)
        by_id.merge(p, np.arange(p.n, dtype=np.int64), np.arange(p.n, dtype=np.int64))
    for g, (x, y) in enumerate(zip(_results(aligned), _results(by_id))):
        _same(x, y)
        assert_row_matches(x, [r for r, gg in zip(rows, gids) if gg == g], where=f"group {g}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_merging_a_group_into_another_of_the_same_partial_combines_them(backend):
    # sessions: session 0 (v 1, 2) is folded into session 1 (v 10) -> 1 holds all three rows,
    # first/last still by arrival: first = 1 (seq 0), last = 10 (seq 2)
    plan = _plan(backend)
    p = Partial(plan, 16)
    rows = [{"v": 1, "f": 1.0, "s": "a"}, {"v": 2, "f": 2.0, "s": "b"}, {"v": 10, "f": 10.0, "s": "c"}]
    _update(p, plan, rows, [0, 0, 1], 0)
    p.merge(p, np.array([0], np.int64), np.array([1], np.int64))
    assert_row_matches(_results(p)[1], rows, where="merged session")


@pytest.mark.parametrize("backend", BACKENDS)
def test_groups_without_rows_are_null_and_count_zero(backend):
    # groups 0..2 exist, rows only in group 1: groups 0 and 2 give count 0 and nulls
    plan = _plan(backend)
    p = Partial(plan, 16)
    _update(p, plan, [{"v": 3, "f": 0.5, "s": "x"}], [1], 0)
    p.ensure(3)
    res = _results(p)
    for g in (0, 2):
        assert_row_matches(res[g], [], where=f"empty group {g}")


def test_quantile_of_groups_without_values_is_null():
    # one group, f = null, NaN: quantile over no numbers is null, like every other aggregate
    # (no value in the whole partial once raised IndexError)
    plan = _plan("memory", [("q", agg_specs()["q50f"])])
    p = Partial(plan, 16)
    p.ensure(1)
    p.update(np.zeros(2, np.int64), plan.prepare(_batch([{"v": 1, "f": None, "s": None},
                                                          {"v": 2, "f": float("nan"), "s": None}]), None))
    assert p.results()[0].to_pylist() == [None]


@pytest.mark.parametrize("backend", BACKENDS)
@_settings
@given(rows=_rows, data=st.data())
def test_a_snapshot_restores_its_groups_into_either_backend(backend, rows, data):
    # groups 0..G-1 on one backend -> Arrow (some groups, in any order) -> memory state ->
    # merged into a fresh state of the other backend: each group's results come along,
    # and a frozen copy (the keyed operator's copy-on-write snapshot) reads the same
    n = len(rows)
    groups = data.draw(st.integers(1, 4))
    gids = data.draw(st.lists(st.integers(0, groups - 1), min_size=n, max_size=n))
    plan = _plan(backend)
    src = Partial(plan, 16)
    _update(src, plan, rows, gids, 0)
    src.ensure(groups)
    ids = np.array(data.draw(st.permutations(range(groups))), np.int64)[: data.draw(st.integers(1, groups))]
    cols, extra = src.to_arrow(ids)
    other = _plan("rocksdb" if backend == "memory" else "memory")
    restored = state_from_arrow(other, pa.table(cols), extra)
    into = Partial(other, 16)
    into.ensure(len(ids))
    into.merge(restored, np.arange(len(ids), dtype=np.int64), np.arange(len(ids), dtype=np.int64))
    want = _results(src, ids)
    for g, (x, y) in enumerate(zip(_results(into), want)):
        _same(x, y)
    frozen, pairs = src.frozen_into({}, groups)
    for live, copy in pairs:
        copy[:] = live[: len(copy)]
    cols2, extra2 = frozen.to_arrow(np.arange(groups, dtype=np.int64), frozen=True)
    again = state_from_arrow(plan, pa.table(cols2), extra2)
    for x, y in zip(_results(again, ids), want):
        _same(x, y)


def test_the_memory_state_hands_its_arrays_to_a_snapshot_and_back_without_copies():
    # arrays(): every per-group array by name (what RocksDB packs into a record, what the
    # keyed operator's snapshot buffers are sized for); a restore of owned columns adopts them
    plan = _plan("memory")
    p = Partial(plan, 16)
    _update(p, plan, [{"v": i, "f": i / 2, "s": "x"} for i in range(40)], [i % 20 for i in range(40)], 0)
    names = [name for name, _ in p.arrays()]
    assert len(names) == len(set(names)) and names[0] == "rows" and "v.nn" in names and "f.var_m2" in names
    cols, extra = p.to_arrow(np.arange(p.n, dtype=np.int64))
    nn = np.array(cols["v.nn"].to_numpy())              # a buffer the restore owns
    table = pa.table({**cols, "v.nn": pa.chunked_array([pa.array(nn)])})
    kept = state_from_arrow(plan, table, extra, owned=True)
    assert np.shares_memory(dict(kept.arrays())["v.nn"], nn)
    assert _results(kept) == _results(p)
