"""The event-time kernels of ``heliosdb.kernels.window`` against plain Python references.

``tumbling_starts`` is compared with ``kernels.reference.tumbling_starts``; ``tumbling_runs`` has
no twin there, so its reference is written below from the docstring: runs are the maximal
stretches of consecutive rows with the same reference start.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from heliosdb.kernels import reference
from heliosdb.kernels.window import tumbling_runs, tumbling_starts

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
SECOND = 1_000_000_000
YEAR = 365 * 86_400 * SECOND
FACTORS = [1, 1_000, 1_000_000, 1_000_000_000]          # ns, us, ms, s
SIZES = [1, 7, 1_000, SECOND, 60 * SECOND, 86_400 * SECOND, 10**18, I64_MAX // 2]


# -- references ------------------------------------------------------------------------------
def ref_runs(ts: np.ndarray, factor: int, size_ns: int, max_runs: int):
    """(bounds, starts, k, bad) from the reference starts: one run per stretch of equal starts."""
    starts, _, _, bad = reference.tumbling_starts(ts, factor, size_ns)
    if bad >= 0:
        return None, None, None, bad
    bounds, run_starts = [], []
    for i, s in enumerate(starts.tolist()):
        if not run_starts or s != run_starts[-1]:
            bounds.append(i)
            run_starts.append(s)
    if len(run_starts) > max_runs:
        return None, None, -1, -1
    return bounds + [len(ts)], run_starts, len(run_starts), -1


def assert_starts_match(ts: np.ndarray, factor: int, size_ns: int) -> None:
    got = tumbling_starts(ts, factor, size_ns)
    exp = reference.tumbling_starts(ts, factor, size_ns)
    assert int(got[3]) == exp[3], "bad (first overflowing row)"
    assert got[0].tolist() == exp[0].tolist(), "starts"
    assert (int(got[1]), int(got[2])) == (exp[1], exp[2]), "lo, hi"


def assert_runs_match(ts: np.ndarray, factor: int, size_ns: int, max_runs: int) -> None:
    bounds, starts, k, bad = tumbling_runs(ts, factor, size_ns, max_runs)
    e_bounds, e_starts, e_k, e_bad = ref_runs(ts, factor, size_ns, max_runs)
    assert int(bad) == e_bad, "bad (first overflowing row)"
    if e_bad >= 0:
        return
    assert int(k) == e_k, "k (-1 exactly when there are more than max_runs runs)"
    if k < 0:
        return
    assert bounds[: k + 1].tolist() == e_bounds
    assert starts[:k].tolist() == e_starts
    # Expanding the runs gives back the per-row starts of tumbling_starts.
    per_row = np.repeat(starts[:k], np.diff(bounds[: k + 1]))
    assert per_row.tolist() == tumbling_starts(ts, factor, size_ns)[0].tolist()


# -- strategies --------------------------------------------------------------------------------
@st.composite
def time_batches(draw, min_size=0, max_size=40):
    """(ts, factor, size_ns): times around 0, decades away, near the int64-ns limit, or anywhere."""
    factor = draw(st.sampled_from(FACTORS))
    size_ns = draw(st.sampled_from(SIZES))
    limit = I64_MAX // factor
    centers = [0, 50 * YEAR // factor, -50 * YEAR // factor, 290 * YEAR // factor,
               limit, -limit, (I64_MAX - size_ns) // factor]
    near = st.builds(lambda c, d: min(max(c + d, I64_MIN), I64_MAX),
                     st.sampled_from(centers), st.integers(-2_000, 2_000))
    element = st.one_of(
        near,
        st.integers(-10**6, 10**6),
        st.integers(I64_MIN, I64_MAX),
        st.sampled_from([I64_MIN, I64_MAX, I64_MIN + 1, -1, 0, 1]),
    )
    values = draw(st.lists(element, min_size=min_size, max_size=max_size))
    if draw(st.booleans()):
        values.sort()                                   # ordered input: few, long runs
    return np.array(values, dtype=np.int64), factor, size_ns


@st.composite
def in_range_batches(draw):
    """Times that never overflow, in order or not, with a few windows per batch."""
    factor = draw(st.sampled_from(FACTORS))
    size_ns = draw(st.sampled_from([SECOND, 60 * SECOND, 3_600 * SECOND]))
    base = draw(st.integers(-100 * YEAR, 100 * YEAR)) // factor
    span = max(1, 5 * size_ns // factor)
    values = draw(st.lists(st.integers(base - span, base + span), max_size=60))
    if draw(st.booleans()):
        values.sort()
    return np.array(values, dtype=np.int64), factor, size_ns


# -- tumbling_starts ---------------------------------------------------------------------------
def test_empty_input_has_no_starts_and_lo_above_hi():
    starts, lo, hi, bad = tumbling_starts(np.empty(0, np.int64), 1, 10)
    assert starts.shape == (0,)
    assert lo > hi
    assert bad == -1
    assert_starts_match(np.empty(0, np.int64), 1_000_000, SECOND)


def test_negative_times_align_to_epoch():
    # size 5:  [-10, -5) [-5, 0) [0, 5) [5, 10) [10, 15)
    #   times:   -7, -6    -1     0, 4     5        13
    ts = np.array([-7, -6, -1, 0, 4, 5, 13], np.int64)
    starts, lo, hi, bad = tumbling_starts(ts, 1, 5)
    assert starts.tolist() == [-10, -10, -5, 0, 0, 5, 10]
    assert (lo, hi, bad) == (-10, 10, -1)
    assert_starts_match(ts, 1, 5)


def test_times_decades_from_epoch_align_without_overflow():
    # epoch ms in 1700, 1970 and 2260 (Bytewax #413: windows far from the origin overflowed)
    ms = 1_000_000
    ts = np.array([-270 * YEAR // ms, 0, 290 * YEAR // ms + 12_345], np.int64)
    for size in (SECOND, 3_600 * SECOND, 86_400 * SECOND):
        starts, _, _, bad = tumbling_starts(ts, ms, size)
        assert bad == -1
        assert [(t * ms - s) for t, s in zip(ts.tolist(), starts.tolist())] == \
            [(t * ms) % size for t in ts.tolist()]
        assert_starts_match(ts, ms, size)


@pytest.mark.parametrize("factor", FACTORS[1:])
def test_first_overflowing_row_is_bad(factor):
    limit = I64_MAX // factor
    # rows 0, 1 fit; rows 2 and 4 overflow when scaled to ns; bad is the first of them, 2
    ts = np.array([limit - 1, -limit, limit + 1, 0, -limit - 1], np.int64)
    assert tumbling_starts(ts, factor, 1)[3] == 2
    assert_starts_match(ts, factor, 1)
    assert tumbling_starts(ts[3:], factor, 1)[3] == 1


def test_int64_min_is_an_overflowing_time_at_factor_one():
    ts = np.array([0, I64_MIN], np.int64)
    assert tumbling_starts(ts, 1, 10)[3] == 1
    assert_starts_match(ts, 1, 10)


def test_row_whose_window_end_overflows_matches_reference():
    # size 10: the window of I64_MAX - 3 starts at I64_MAX - 7 and would end past I64_MAX.
    # The reference marks the row bad, writes start 0 for it and leaves it out of lo/hi,
    # as the kernel already does for rows whose time itself overflows.
    ts = np.array([I64_MAX - 3, 0], np.int64)
    assert tumbling_starts(ts, 1, 10)[3] == 0
    assert_starts_match(ts, 1, 10)


def test_row_whose_window_starts_before_int64_min_is_bad():
    # size 1000: -I64_MAX + 6 = -9223372036854775801 lies in the window starting at
    # -9223372036854776000, below INT64_MIN; the start is not representable, so the row is bad
    # (the kernel flags it; the reference must too, rather than fail to store the start).
    ts = np.array([I64_MIN + 7, 0], np.int64)
    assert tumbling_starts(ts, 1, 1_000)[3] == 0
    assert_starts_match(ts, 1, 1_000)


@pytest.mark.parametrize("factor", [1, 1_000_000])
def test_sliced_arrays_match_their_contiguous_copy(factor):
    base = np.arange(-50, 50, dtype=np.int64) * 7_919
    for view in (base[13:], base[3:77], base[::3], base[::-2]):
        got = tumbling_starts(view, factor, 60 * SECOND)
        exp = tumbling_starts(np.ascontiguousarray(view), factor, 60 * SECOND)
        assert got[0].tolist() == exp[0].tolist()
        assert got[1:] == exp[1:]
        assert_starts_match(view, factor, 60 * SECOND)
        assert_runs_match(view, factor, 60 * SECOND, 8)


@settings(max_examples=300, deadline=None)
@given(time_batches())
@example((np.array([0, I64_MAX], np.int64), 1, 1))                  # window end overflows
@example((np.array([I64_MIN + 7], np.int64), 1, 1_000))             # window start underflows
def test_tumbling_starts_matches_reference(batch):
    ts, factor, size_ns = batch
    assert_starts_match(ts, factor, size_ns)


@settings(max_examples=100, deadline=None)
@given(time_batches(min_size=1), st.integers(0, 10), st.integers(0, 10))
def test_tumbling_starts_on_offset_slice_matches_reference(batch, lead, trail):
    ts, factor, size_ns = batch
    padded = np.concatenate([np.zeros(lead, np.int64), ts, np.zeros(trail, np.int64)])
    view = padded[lead: lead + len(ts)]
    assert_starts_match(view, factor, size_ns)


# -- tumbling_runs -----------------------------------------------------------------------------
def test_runs_of_empty_input_are_empty():
    bounds, starts, k, bad = tumbling_runs(np.empty(0, np.int64), 1_000_000, SECOND, 4)
    assert (k, bad) == (0, -1)
    assert bounds[:1].tolist() == [0]


def test_ordered_input_is_one_run_per_window():
    # size 10 ns:  [0, 10)       [10, 20)   [30, 40)
    #   rows:      0 1 2         3 4        5
    ts = np.array([0, 3, 9, 10, 19, 30], np.int64)
    bounds, starts, k, bad = tumbling_runs(ts, 1, 10, 8)
    assert (k, bad) == (3, -1)
    assert bounds[:4].tolist() == [0, 3, 5, 6]
    assert starts[:3].tolist() == [0, 10, 30]


def test_interleaved_windows_start_new_runs():
    # size 10 ns, windows alternate A B A B: four runs of one row
    ts = np.array([1, 11, 2, 12], np.int64)
    assert_runs_match(ts, 1, 10, 4)
    assert tumbling_runs(ts, 1, 10, 4)[2] == 4


def test_k_is_minus_one_exactly_when_runs_exceed_max_runs():
    ts = np.array([0, 10, 20, 30, 40], np.int64)            # five windows of size 10
    assert tumbling_runs(ts, 1, 10, 5)[2] == 5
    assert tumbling_runs(ts, 1, 10, 4)[2] == -1
    assert tumbling_runs(ts, 1, 10, 0)[2] == -1
    assert tumbling_runs(ts[:0], 1, 10, 0)[2] == 0


def test_runs_report_overflowing_row_even_after_many_runs():
    # Three windows (more than max_runs=2) before an overflowing row: the row must still be
    # reported.  The window operator sorts by tumbling_starts when k == -1 and ignores its `bad`,
    # so a -1 here lets an out-of-range time through as window start 0.
    ts = np.array([0, 10, 20, I64_MAX], np.int64)
    bounds, starts, k, bad = tumbling_runs(ts, 1, 10, 2)
    assert bad == 3


@settings(max_examples=300, deadline=None)
@given(time_batches(), st.sampled_from([0, 1, 2, 3, 8, 64]))
@example((np.array([0, 10, 20, I64_MAX], np.int64), 1, 10), 2)     # bad row after max_runs runs
def test_tumbling_runs_matches_reference(batch, max_runs):
    ts, factor, size_ns = batch
    assert_runs_match(ts, factor, size_ns, max_runs)


@settings(max_examples=200, deadline=None)
@given(in_range_batches(), st.sampled_from([1, 2, 4, 64]))
def test_concatenated_runs_reproduce_per_row_starts(batch, max_runs):
    ts, factor, size_ns = batch
    assert_runs_match(ts, factor, size_ns, max_runs)
