"""The join kernels of ``heliosdb.kernels._join`` against numpy brute force: every pair of rows
is checked by comparing all rows with all rows, never by the kernels' own layouts.

Key ids include ``-1`` (null: never matches), duplicates and keys with no rows; times include
the int64 ends (where ``t + lower`` must clamp, not wrap)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heliosdb.kernels._join import (asof_pick, asof_prune, chain_link, chain_pairs, csr_by_key, hash_join, hash_pairs,
                                    sat_add)

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
NONE = np.zeros(0, np.uint8)
times = st.one_of(st.integers(-20, 20), st.sampled_from([I64_MIN, I64_MIN + 3, I64_MAX, I64_MAX - 3]))


def ids(n_keys: int, max_size: int = 30):
    return st.lists(st.integers(-1, n_keys - 1), max_size=max_size).map(lambda v: np.array(v, np.int64))


def pairs_of(p: np.ndarray, b: np.ndarray) -> list:
    return sorted(zip(p.tolist(), b.tolist()))


def linked(kid: np.ndarray, n_keys: int, cuts=()) -> tuple:
    """Chains over ``kid``, linked in batches cut at ``cuts``."""
    head, nxt = np.full(n_keys, -1, np.int64), np.full(len(kid), -1, np.int64)
    bounds = [0] + sorted(c for c in cuts if 0 < c < len(kid)) + [len(kid)]
    for a, b in zip(bounds, bounds[1:]):
        chain_link(np.ascontiguousarray(kid[a:b]), a, head, nxt)
    return head, nxt


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5).flatmap(lambda k: st.tuples(st.just(k), ids(k), ids(k))))
def test_hash_pairs_is_every_pair_of_equal_keys(case):
    n_keys, build, probe = case
    off, rows = csr_by_key(build, n_keys)
    pm, bm = np.zeros(len(probe), np.uint8), np.zeros(len(build), np.uint8)
    p, b = hash_pairs(probe, off, rows, pm, bm)
    eq = (probe[:, None] == build[None, :]) & (probe[:, None] >= 0)
    want = [(int(i), int(j)) for i, j in zip(*np.nonzero(eq))]
    assert pairs_of(p, b) == sorted(want)
    assert list(p) == sorted(p.tolist())                  # probe order
    assert pm.tolist() == eq.any(axis=1).astype(np.uint8).tolist()
    assert bm.tolist() == eq.any(axis=0).astype(np.uint8).tolist()


def test_csr_by_key_rejects_ids_outside_the_keys():
    with pytest.raises(IndexError, match="outside"):
        csr_by_key(np.array([0, 3], np.int64), 2)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4).flatmap(lambda k: st.tuples(
    st.just(k), ids(k), st.data())), st.tuples(times, times).map(sorted), st.booleans())
def test_chain_pairs_is_every_live_pair_in_range(case, bounds, check_time):
    n_keys, stored, data = case
    m = len(stored)
    stored_t = np.array(data.draw(st.lists(times, min_size=m, max_size=m)), np.int64)
    alive = np.array(data.draw(st.lists(st.integers(0, 1), min_size=m, max_size=m)), np.uint8)
    probe = data.draw(ids(n_keys))
    probe_t = np.array(data.draw(st.lists(times, min_size=len(probe), max_size=len(probe))), np.int64)
    cuts = data.draw(st.lists(st.integers(0, m), max_size=3))
    head, nxt = linked(stored, n_keys, cuts)
    lo, hi = bounds
    pm, sm = np.zeros(len(probe), np.uint8), np.zeros(m, np.uint8)
    p, s = chain_pairs(probe, probe_t, lo, hi, check_time, head, nxt, stored_t, alive, pm, sm)
    want = []
    for i in range(len(probe)):
        a = min(max(int(probe_t[i]) + lo, I64_MIN), I64_MAX)
        b = min(max(int(probe_t[i]) + hi, I64_MIN), I64_MAX)
        for j in range(m):
            if probe[i] >= 0 and probe[i] == stored[j] and alive[j] and (not check_time or a <= stored_t[j] <= b):
                want.append((i, j))
    assert pairs_of(p, s) == sorted(want)
    assert pm.tolist() == [int(any(i == w[0] for w in want)) for i in range(len(probe))]
    assert sm.tolist() == [int(any(j == w[1] for w in want)) for j in range(m)]
    # newest stored row first, per probe row
    for i in set(p.tolist()):
        mine = s[p == i].tolist()
        assert mine == sorted(mine, reverse=True)


def test_chain_link_rejects_a_key_beyond_head():
    with pytest.raises(IndexError, match="outside head"):
        chain_link(np.array([2], np.int64), 0, np.full(2, -1, np.int64), np.full(1, -1, np.int64))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4).flatmap(lambda k: st.tuples(st.just(k), ids(k), st.data())),
       st.one_of(st.just(-1), st.integers(0, 10)))
def test_asof_pick_is_the_latest_version_at_or_before(case, tolerance):
    n_keys, stored, data = case
    m = len(stored)
    stored_t = np.array(data.draw(st.lists(st.integers(-10, 10), min_size=m, max_size=m)), np.int64)
    alive = np.array(data.draw(st.lists(st.integers(0, 1), min_size=m, max_size=m)), np.uint8)
    probe = data.draw(ids(n_keys))
    probe_t = np.array(data.draw(st.lists(st.integers(-12, 12), min_size=len(probe), max_size=len(probe))),
                       np.int64)
    head, nxt = linked(stored, n_keys, data.draw(st.lists(st.integers(0, m), max_size=3)))
    got = asof_pick(probe, probe_t, tolerance, head, nxt, stored_t, alive)
    for i in range(len(probe)):
        cand = [j for j in range(m) if probe[i] >= 0 and stored[j] == probe[i] and alive[j]
                and stored_t[j] <= probe_t[i]]
        best = max(cand, key=lambda j: (stored_t[j], j)) if cand else -1
        if best >= 0 and tolerance >= 0 and probe_t[i] - stored_t[best] > tolerance:
            best = -1
        assert got[i] == best


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4).flatmap(lambda k: st.tuples(st.just(k), ids(k), st.data())),
       st.integers(-12, 12), st.one_of(st.just(-1), st.integers(0, 10)))
def test_asof_prune_keeps_what_a_later_row_can_pick(case, wm, tolerance):
    n_keys, kid, data = case
    m = len(kid)
    t = np.array(data.draw(st.lists(st.integers(-10, 10), min_size=m, max_size=m)), np.int64)
    alive = np.array(data.draw(st.lists(st.integers(0, 1), min_size=m, max_size=m)), np.uint8)
    before = alive.copy()
    best = np.full(n_keys, -1, np.int64)
    dropped = asof_prune(kid, t, alive, m, wm, tolerance, best)
    assert (best == -1).all()
    assert dropped == int(before.sum() - alive.sum())
    assert not (alive & ~before.astype(bool)).any()
    # Whatever a probe at or after the watermark picks is the same before and after.
    head, nxt = linked(kid, n_keys)
    for k in range(n_keys):
        for pt in range(wm, wm + 25):
            probe, at = np.array([k], np.int64), np.array([pt], np.int64)
            assert (asof_pick(probe, at, tolerance, head, nxt, t, before)
                    == asof_pick(probe, at, tolerance, head, nxt, t, alive)).all()
    # and nothing it keeps is useless: at most one version per key before the watermark.
    for k in range(n_keys):
        old = [j for j in range(m) if alive[j] and kid[j] == k and t[j] < wm]
        assert len(old) <= 1
    assert all(alive[j] == before[j] for j in range(m) if kid[j] < 0 or t[j] >= wm)


def test_sat_add_clamps():
    assert sat_add(I64_MAX, 1) == I64_MAX and sat_add(I64_MIN, -1) == I64_MIN and sat_add(-3, 5) == 2


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3).flatmap(lambda w: st.tuples(
    st.just(w),
    st.lists(st.tuples(*[st.integers(-2, 2)] * w, st.booleans()), max_size=30),
    st.lists(st.tuples(*[st.integers(-2, 2)] * w, st.booleans()), max_size=30))))
def test_hash_join_is_every_pair_of_equal_valid_tuples(case):
    w, build, probe = case

    def cols(rows):
        return ([np.array([r[j] for r in rows], np.int64) for j in range(w)],
                np.array([r[w] for r in rows], np.uint8))

    bc, bv = cols(build)
    pc, pv = cols(probe)
    pm, bm = np.zeros(len(probe), np.uint8), np.zeros(len(build), np.uint8)
    p, b = hash_join(bc, bv, pc, pv, pm, bm)
    want = [(i, j) for i in range(len(probe)) for j in range(len(build))
            if pv[i] and bv[j] and probe[i][:w] == build[j][:w]]
    assert list(zip(p.tolist(), b.tolist())) == want            # probe order, then build order
    assert pm.tolist() == [int(any(x == i for x, _ in want)) for i in range(len(probe))]
    assert bm.tolist() == [int(any(y == j for _, y in want)) for j in range(len(build))]
    p2, b2 = hash_join(bc, None, pc, None, NONE, NONE)
    assert len(p2) == sum(1 for i in range(len(probe)) for j in range(len(build)) if probe[i][:w] == build[j][:w])


def test_hash_join_checks_its_columns():
    with pytest.raises(ValueError, match="build has 1 key columns, probe 2"):
        hash_join([np.zeros(1, np.int64)], None, [np.zeros(1, np.int64)] * 2, None, NONE, NONE)
    with pytest.raises(ValueError, match="C-contiguous int64"):
        hash_join([np.zeros(2, np.int32)], None, [np.zeros(1, np.int64)], None, NONE, NONE)
