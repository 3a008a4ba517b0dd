"""The Cython kernels of ``kernels/_accum.pyx`` against numpy and plain-Python references.

- variance: Welford updates and Chan merges give numpy's ``var(ddof=1)``, in one pass or in
  chunks merged in any order, also for values far from zero;
- first / last: the value with the smallest / largest arrival number, nulls skipped, also
  after ``merge_pick``;
- ``merge_add_i64`` / ``merge_stats_*``: sums (wrapping), min and max per destination group;
- ``SessionSet``: ``assign``, ``remove`` and ``compact`` against a reference written from the
  docstrings (a key's open sessions, newest first; an event joins every session its
  ``[t, t + gap)`` overlaps, the first found survives; no overlap and ``t + gap <= late_before``
  means late).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heliosdb.kernels import _accum

I64 = np.int64
I64_MIN = -(2**63)

_settings = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _valid(mask: Optional[List[bool]]) -> Optional[np.ndarray]:
    return None if mask is None else np.array(mask, np.uint8)


# -------------------------------------------------------------------------------------------
# Variance
# -------------------------------------------------------------------------------------------
def _var_state(groups: int):
    return np.zeros(groups, I64), np.zeros(groups), np.zeros(groups)


def _var_of(cnt, mean, m2, g) -> Optional[float]:
    return None if cnt[g] < 2 else m2[g] / (cnt[g] - 1)


_values = st.lists(st.tuples(st.integers(0, 3), st.floats(-1e3, 1e3, allow_nan=False),
                             st.booleans()), max_size=60)


@_settings
@given(rows=_values, offset=st.sampled_from([0.0, 1e9, -1e12]), cut=st.integers(0, 60))
def test_update_var_in_one_pass_or_in_merged_chunks_equals_numpy(rows, offset, cut):
    # rows (group, value, valid); chunk A = rows[:cut], chunk B = rows[cut:]
    #   one pass:   update_var(all)              -> numpy var(ddof=1) per group
    #   in chunks:  update_var(A), update_var(B), merge_var(B into A) -> the same
    groups = 4
    gids = np.array([g for g, _, _ in rows], I64)
    vals = np.array([v + offset for _, v, _ in rows], np.float64)
    ok = [o for _, _, o in rows]
    whole = _var_state(groups)
    _accum.update_var(gids, vals, _valid(ok), *whole)
    a, b = _var_state(groups), _var_state(groups)
    _accum.update_var(gids[:cut], vals[:cut], _valid(ok[:cut]), *a)
    _accum.update_var(gids[cut:], vals[cut:], _valid(ok[cut:]), *b)
    ids = np.arange(groups, dtype=I64)
    _accum.merge_var(ids, ids, *b, *a)
    for g in range(groups):
        xs = np.array([v + offset for gg, v, o in rows if gg == g and o])
        assert whole[0][g] == a[0][g] == len(xs)
        expected = float(np.var(xs, ddof=1)) if len(xs) >= 2 else None
        for state in (whole, a):
            got = _var_of(*state, g)
            if expected is None:
                assert got is None
            else:
                # error scales with the spread and with the rounding of values near ``offset``
                spread = max(1.0, float(np.ptp(xs)))
                tol = 1e-9 * spread**2 + 16 * np.finfo(float).eps * abs(offset) * spread
                assert got == pytest.approx(expected, rel=1e-7, abs=tol)
                assert state[1][g] == pytest.approx(float(np.mean(xs)), rel=1e-12, abs=1e-9)


def test_variance_of_large_values_with_small_spread_keeps_precision():
    # 1e9 + {0, 1, 2, 3} in 4 chunks merged pairwise: naive sum of squares loses every digit;
    # Welford + Chan give exactly var = 1.6667
    vals = 1e9 + np.array([0.0, 1.0, 2.0, 3.0] * 250)
    states = []
    for chunk in np.array_split(vals, 4):
        s = _var_state(1)
        _accum.update_var(np.zeros(len(chunk), I64), np.ascontiguousarray(chunk), None, *s)
        states.append(s)
    zero = np.zeros(1, I64)
    _accum.merge_var(zero, zero, *states[1], *states[0])
    _accum.merge_var(zero, zero, *states[3], *states[2])
    _accum.merge_var(zero, zero, *states[2], *states[0])
    assert _var_of(*states[0], 0) == pytest.approx(np.var(vals, ddof=1), rel=1e-9)


def test_nan_spreads_through_variance_and_its_merge():
    # group 0: 1, NaN, 2 -> NaN; merging NaN state into a clean one gives NaN
    s = _var_state(2)
    _accum.update_var(np.array([0, 0, 0, 1, 1], I64), np.array([1.0, np.nan, 2.0, 1.0, 3.0]), None, *s)
    assert np.isnan(_var_of(*s, 0))
    assert _var_of(*s, 1) == pytest.approx(2.0)
    _accum.merge_var(np.array([0], I64), np.array([1], I64), *s, *s)
    assert np.isnan(_var_of(*s, 1))


def test_merge_var_of_an_empty_group_changes_nothing_and_into_empty_copies():
    src, dst = _var_state(2), _var_state(2)
    _accum.update_var(np.array([1, 1], I64), np.array([4.0, 6.0]), None, *src)
    _accum.update_var(np.array([0, 0, 0], I64), np.array([1.0, 2.0, 3.0]), None, *dst)
    before = [a.copy() for a in dst]
    _accum.merge_var(np.array([0], I64), np.array([0], I64), *src, *dst)     # src group 0 empty
    assert all((x == y).all() for x, y in zip(before, dst))
    _accum.merge_var(np.array([1], I64), np.array([1], I64), *src, *dst)     # into empty dst 1
    assert (dst[0][1], dst[1][1], dst[2][1]) == (2, 5.0, 2.0)


# -------------------------------------------------------------------------------------------
# First / last
# -------------------------------------------------------------------------------------------
def _pick_state(groups: int):
    return np.full(groups, -1, I64), np.zeros(groups, I64)


def _ref_pick(rows, earliest: bool) -> Dict[int, Tuple[int, int]]:
    """group -> (seq, code) of the non-null row with the smallest (largest) seq."""
    out: Dict[int, Tuple[int, int]] = {}
    for g, seq, code, ok in rows:
        if not ok:
            continue
        if g not in out or (seq < out[g][0] if earliest else seq > out[g][0]):
            out[g] = (seq, code)
    return out


_pick_rows = st.lists(st.tuples(st.integers(0, 3), st.integers(-5, 5), st.booleans()), max_size=40)


@_settings
@given(rows=_pick_rows, perm_seed=st.integers(0, 2**16), cut=st.integers(0, 40))
def test_first_and_last_pick_by_arrival_number_whatever_the_row_order(rows, perm_seed, cut):
    # rows carry arrival numbers 0..n-1 but are fed shuffled (as after sorting a batch by
    # pane) and in two parts merged with merge_pick: the result depends on seq only.
    n = len(rows)
    perm = np.random.default_rng(perm_seed).permutation(n)
    full = [(g, int(i), code, ok) for i, (g, code, ok) in enumerate(rows)]
    shuffled = [full[i] for i in perm]
    for earliest, update in ((True, _accum.update_first), (False, _accum.update_last)):
        whole = _pick_state(4)
        parts = [_pick_state(4), _pick_state(4)]
        for state, chunk in ((whole, shuffled), (parts[0], shuffled[:cut]), (parts[1], shuffled[cut:])):
            update(np.array([r[0] for r in chunk], I64), np.array([r[1] for r in chunk], I64),
                   np.array([r[2] for r in chunk], I64), _valid([r[3] for r in chunk]), *state)
        ids = np.arange(4, dtype=I64)
        _accum.merge_pick(ids, ids, *parts[1], *parts[0], earliest)
        ref = _ref_pick(full, earliest)
        for g in range(4):
            exp = ref.get(g, (-1, None))
            for seq, val in (whole, parts[0]):
                assert seq[g] == exp[0]
                if exp[1] is not None:
                    assert val[g] == exp[1]


def test_merge_pick_skips_empty_sources_and_fills_empty_destinations():
    # src: g0 empty, g1 (seq 7, 70)   dst: g0 (seq 3, 30), g1 empty
    s_seq, s_val = np.array([-1, 7], I64), np.array([0, 70], I64)
    d_seq, d_val = np.array([3, -1], I64), np.array([30, 0], I64)
    _accum.merge_pick(np.array([0, 1], I64), np.array([0, 1], I64), s_seq, s_val, d_seq, d_val, True)
    assert d_seq.tolist() == [3, 7] and d_val.tolist() == [30, 70]


# -------------------------------------------------------------------------------------------
# count / sum / min / max merges
# -------------------------------------------------------------------------------------------
def test_merge_add_i64_wraps_like_numpy():
    # int64 max + 1 wraps to int64 min, as numpy and the update kernels do
    d = np.array([2**63 - 1, 5], I64)
    _accum.merge_add_i64(np.array([0, 1], I64), np.array([0, 0], I64), np.array([1, 2], I64), d)
    assert d.tolist() == [-(2**63) + 2, 5]


@_settings
@given(pairs=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), max_size=30), seed=st.integers(0, 999))
def test_merge_stats_equal_a_grouped_numpy_reduction(pairs, seed):
    # src group s -> dst group d, with repeats: dst sums add, min/max take the extreme
    rng = np.random.default_rng(seed)
    src = np.array([p[0] for p in pairs], I64)
    dst = np.array([p[1] for p in pairs], I64)
    for dtype, update in ((np.float64, _accum.merge_stats_f64), (I64, _accum.merge_stats_i64)):
        s_sum, s_min, s_max = (rng.integers(-100, 100, 6).astype(dtype) for _ in range(3))
        d0 = [rng.integers(-100, 100, 4).astype(dtype) for _ in range(3)]
        d_sum, d_min, d_max = (a.copy() for a in d0)
        update(src, dst, s_sum, s_min, s_max, d_sum, d_min, d_max)
        for g in range(4):
            from_ = src[dst == g]
            assert d_sum[g] == d0[0][g] + s_sum[from_].sum()
            assert d_min[g] == min([d0[1][g]] + s_min[from_].tolist())
            assert d_max[g] == max([d0[2][g]] + s_max[from_].tolist())


# -------------------------------------------------------------------------------------------
# SessionSet
# -------------------------------------------------------------------------------------------
class RefSessions:
    """Reference for ``SessionSet``: sessions as dicts, ids never reused, lists newest first."""

    def __init__(self, gap: int):
        self.gap = gap
        self.s: List[dict] = []          # id -> {key, start, last, alive}

    def open_of(self, key: int) -> List[int]:
        return [i for i in range(len(self.s) - 1, -1, -1) if self.s[i]["alive"] and self.s[i]["key"] == key]

    def assign(self, keys, ts, late_before):
        out, log = [], []
        for k, t in zip(keys, ts):
            target = None
            for i in self.open_of(k):
                s = self.s[i]
                if t < s["last"] + self.gap and s["start"] < t + self.gap:
                    if target is None:
                        target = i
                    else:
                        tg = self.s[target]
                        tg["start"] = min(tg["start"], s["start"])
                        tg["last"] = max(tg["last"], s["last"])
                        s["alive"] = False
                        log.append((i, target))
            if target is None:
                if t + self.gap <= late_before:
                    out.append(-1)
                    continue
                self.s.append({"key": k, "start": t, "last": t, "alive": True})
                out.append(len(self.s) - 1)
            else:
                tg = self.s[target]
                tg["start"] = min(tg["start"], t)
                tg["last"] = max(tg["last"], t)
                out.append(target)
        return out, log

    def remove(self, ids):
        for i in ids:
            self.s[i]["alive"] = False

    def compact(self, keep, key_map):
        self.s = [{**self.s[i], "key": key_map[self.s[i]["key"]]} for i in keep]


def _check_same(ss, ref: RefSessions, n_keys: int) -> None:
    n = ss.n
    assert n == len(ref.s)
    alive = np.asarray(ss.alive)[:n].astype(bool).tolist()
    assert alive == [s["alive"] for s in ref.s]
    for i, s in enumerate(ref.s):
        if s["alive"]:
            assert (int(ss.key[i]), int(ss.start[i]), int(ss.last[i])) == (s["key"], s["start"], s["last"])
    # each key's linked list holds exactly its open sessions, newest first
    for k in range(n_keys):
        chain, i = [], int(ss.head[k]) if k < len(ss.head) else -1
        while i >= 0:
            chain.append(i)
            i = int(ss.nxt[i])
        assert chain == ref.open_of(k)


_batches = st.lists(st.lists(st.tuples(st.integers(0, 2), st.integers(-30, 30)), max_size=12),
                    min_size=1, max_size=6)


@_settings
@given(batches=_batches, gap=st.sampled_from([1, 3, 10]), late_step=st.integers(-40, 20),
       removes=st.lists(st.integers(0, 100), max_size=5))
def test_session_set_assign_remove_compact_match_reference(batches, gap, late_step, removes):
    # batches of (key, t); between batches some sessions are removed, then compacted:
    #   gap 3:  t = 0, 2 -> [0, 5)   t = 9 -> [9, 12)   t = 6 bridges them -> [0, 12)
    batches = [list(b) for b in batches]
    ss, ref = _accum.SessionSet(gap), RefSessions(gap)
    n_keys = 3
    late_before = I64_MIN
    for j, batch in enumerate(batches):
        keys = np.array([k for k, _ in batch], I64)
        ts = np.array([t for _, t in batch], I64)
        out = np.empty(len(batch), I64)
        mf, mi = ss.assign(keys, ts, n_keys, late_before, out)
        exp_out, exp_log = ref.assign(keys.tolist(), ts.tolist(), late_before)
        assert out.tolist() == exp_out
        assert list(zip(mf.tolist(), mi.tolist())) == exp_log
        _check_same(ss, ref, n_keys)
        late_before = late_step * j
        gone = sorted({r % max(ss.n, 1) for r in removes if ss.n})
        if gone:
            ss.remove(np.array(gone, I64))
            ref.remove(gone)
            _check_same(ss, ref, n_keys)
        if j % 2:
            keep = [i for i, s in enumerate(ref.s) if s["alive"]]
            live_keys = sorted({ref.s[i]["key"] for i in keep})
            key_map = np.full(n_keys, -1, I64)
            key_map[live_keys] = np.arange(len(live_keys))
            ss.compact(np.array(keep, I64), key_map, max(len(live_keys), 1))
            ref.compact(keep, key_map.tolist())
            n_keys = max(len(live_keys), 1)
            _check_same(ss, ref, n_keys)
            # keys renumbered: later batches use only the keys that still exist
            batches[j + 1:] = [[(k % n_keys, t) for k, t in b] for b in batches[j + 1:]]


def test_session_event_bridging_two_sessions_merges_them_and_logs_the_merge():
    # gap 10 (one key):  0 ........ [0,10)    18 ..... [18,28)
    #                    9: [9,19) overlaps both -> one session [0, 28)
    ss = _accum.SessionSet(10)
    out = np.empty(2, I64)
    ss.assign(np.zeros(2, I64), np.array([0, 18], I64), 1, I64_MIN, out)
    assert out.tolist() == [0, 1]
    one = np.empty(1, I64)
    mf, mi = ss.assign(np.zeros(1, I64), np.array([9], I64), 1, I64_MIN, one)
    # the newest session (1) is found first and survives; 0 is folded into it
    assert one.tolist() == [1] and mf.tolist() == [0] and mi.tolist() == [1]
    assert (int(ss.start[1]), int(ss.last[1])) == (0, 18)
    assert np.asarray(ss.alive)[:2].tolist() == [0, 1]


def test_session_events_exactly_gap_apart_are_separate_sessions():
    # gap 10: 0 -> [0, 10);  10 -> [10, 20) does not overlap [0, 10) (ends are open)
    ss = _accum.SessionSet(10)
    out = np.empty(2, I64)
    ss.assign(np.zeros(2, I64), np.array([0, 10], I64), 1, I64_MIN, out)
    assert out.tolist() == [0, 1]


def test_session_event_late_only_if_it_overlaps_no_open_session():
    # gap 10, late_before 20: t=5 -> 15 <= 20 late (-1); with a session [8, 18) open, 5 joins it
    ss = _accum.SessionSet(10)
    out = np.empty(1, I64)
    ss.assign(np.zeros(1, I64), np.array([5], I64), 1, 20, out)
    assert out.tolist() == [-1] and ss.n == 0
    ss.assign(np.zeros(1, I64), np.array([8], I64), 1, I64_MIN, out)
    ss.assign(np.zeros(1, I64), np.array([5], I64), 1, 20, out)
    assert out.tolist() == [0] and (int(ss.start[0]), int(ss.last[0])) == (5, 8)


# -------------------------------------------------------------------------------------------
# session_assign_run: a run's parts in one call, against RefSessions driven part by part
# -------------------------------------------------------------------------------------------
def _ref_run(ref: RefSessions, parts, wp, lateness):
    """What one ``assign`` per part with the watermarks fired between the parts does: rows'
    sessions (the part's survivors), merges (into the part's survivor), emissions
    ``(pos, sid, start, end)`` after a part's rows (by sid) and at a watermark (a set), the
    number of updates, and the emitted flags."""
    gap = ref.gap
    emitted: Dict[int, int] = {}
    out, merges, after_rows, at_marks, updates = [], [], [], set(), 0
    for k, part in enumerate(parts):
        lim = wp[k] - lateness
        sids, log = ref.assign([kk for kk, _ in part], [t for _, t in part], lim)
        to = {}
        for s, into in log:
            to[s] = into
        def final(s):
            while s in to:
                s = to[s]
            return s
        merges += [(s, final(s)) for s, _ in log]
        for s, _ in log:
            emitted[final(s)] = emitted.get(final(s), 0) | emitted.get(s, 0)
        sids = [final(s) if s >= 0 else -1 for s in sids]
        out += sids
        for s in sorted({s for s in sids if s >= 0}):
            end = ref.s[s]["last"] + gap
            if end <= wp[k]:
                after_rows.append((2 * k, s, ref.s[s]["start"], end))
                updates += emitted.get(s, 0)
                emitted[s] = 1
            else:
                emitted[s] = 0
        # the watermark after the part
        t = wp[k + 1]
        for i, s in enumerate(ref.s):
            end = s["last"] + gap
            if s["alive"] and end <= t and not emitted.get(i, 0):
                at_marks.add((2 * (k + 1) - 1, i, s["start"], end))
                emitted[i] = 1
        ref.remove([i for i, s in enumerate(ref.s) if s["alive"] and s["last"] + gap <= t - lateness])
    return out, merges, after_rows, at_marks, updates, emitted


@_settings
@given(parts=_batches, gap=st.sampled_from([1, 3, 10]), steps=st.lists(st.integers(0, 15), min_size=7, max_size=7),
       lateness=st.sampled_from([0, 4, 30]), base=st.integers(0, 50))
def test_session_assign_run_equals_assign_per_part_with_watermarks_between(parts, gap, steps, lateness, base):
    # gap 3, lateness 0: part 0 [a@0] | wm 4: [0,3) emitted, gone | part 1 [a@1]: late
    parts = [list(p) for p in parts]
    wp = np.array(list(itertools.accumulate(steps[: len(parts) + 1], initial=-20))[1:], I64)
    ss = _accum.SessionSet(gap)
    n_keys = 3
    rows = [r for p in parts for r in p]
    m = len(rows)
    kg = np.array([k for k, _ in rows], I64)
    ts = np.array([t for _, t in rows], I64)
    bounds = np.array(list(itertools.accumulate([len(p) for p in parts], initial=0)), I64)
    limits = wp[: len(parts)] - lateness
    emitted = np.zeros(m + 1, np.uint8)
    scratch = [np.full(m + 1, -1, I64) for _ in range(4)]
    out, rounds = np.empty(m, I64), np.empty(m, I64)
    mf, mi, mr, ev, updates = _accum.session_assign_run(ss, kg, ts, n_keys, bounds, limits, wp, base,
                                                        emitted, *scratch, out, rounds)
    ref = RefSessions(gap)
    e_out, e_merges, e_after, e_marks, e_updates, _ = _ref_run(ref, parts, wp, lateness)
    assert out.tolist() == e_out
    assert list(zip(mf.tolist(), mi.tolist())) == e_merges
    pos = lambda p: p - 2 * base                                           # noqa: E731
    got_after = sorted((pos(p), s, a, b) for kind, s, p, a, b, _ in ev.tolist() if kind == 1)
    assert got_after == e_after
    assert updates == e_updates
    # watermark emissions: those the kernel found (a row touched the session later) and the
    # caller's scan at the end (due, untouched since)
    got_marks = {(pos(p), s, a, b) for kind, s, p, a, b, _ in ev.tolist() if kind == 0}
    n = ss.n
    end = np.asarray(ss.last)[:n] + gap
    alive = np.asarray(ss.alive)[:n].astype(bool)
    for s in np.flatnonzero(alive & (end <= wp[-1]) & (emitted[:n] == 0)).tolist():
        j = int(np.searchsorted(wp, end[s]))
        got_marks.add((2 * j - 1, s, int(ss.start[s]), int(end[s])))
    assert got_marks == e_marks
    # sessions still open after the run (the kernel leaves those past their lateness linked,
    # for the caller to remove)
    open_ = {i for i in np.flatnonzero(alive & (end > wp[-1] - lateness)).tolist()}
    assert open_ == {i for i, s in enumerate(ref.s) if s["alive"]}
    for i in open_:
        assert (int(ss.start[i]), int(ss.last[i])) == (ref.s[i]["start"], ref.s[i]["last"])
    # rounds (their order is checked, value by value, by the operator's tests): round 0 is
    # only for reading states from before the run
    assert all(r >= 1 for r in mr.tolist())
    assert all(r >= 1 for r, o in zip(rounds.tolist(), out.tolist()) if o >= 0)
