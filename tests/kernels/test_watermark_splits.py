"""watermark_splits (Numba) against its plain reference, and what it guarantees."""
import numpy as np
from hypothesis import given, settings, strategies as st

from heliosdb.kernels import reference as ref
from heliosdb.kernels.window import window_grid, watermark_splits

I64_MIN = -(2**63)

times = st.lists(st.integers(-10**6, 10**6), max_size=60)


@settings(max_examples=200, deadline=None)
@given(ts=times, bound=st.integers(0, 5000), factor=st.sampled_from([1, 1_000_000]))
def test_cuts_match_reference(ts, bound, factor):
    arr = np.array(ts, dtype=np.int64)
    cuts, marks, k, seen = watermark_splits(arr, factor, bound, I64_MIN, I64_MIN)
    rcuts, rmarks, rseen = ref.watermark_splits(arr, factor, bound, I64_MIN, I64_MIN)
    assert cuts[:k].tolist() == rcuts
    assert marks[:k].tolist() == rmarks
    assert seen == rseen


@settings(max_examples=200, deadline=None)
@given(ts=times, bound=st.integers(0, 5000), split=st.integers(0, 60))
def test_state_carries_over_between_batches(ts, bound, split):
    # Cutting the input into two batches must give the same cut positions and watermarks.
    arr = np.array(ts, dtype=np.int64)
    whole = ref.watermark_splits(arr, 1, bound, I64_MIN, I64_MIN)
    a, b = arr[:split], arr[split:]
    c1, m1, k1, seen = watermark_splits(a, 1, bound, I64_MIN, I64_MIN)
    emitted = I64_MIN
    if k1:
        emitted = int(m1[k1 - 1])
    if seen != I64_MIN and seen - bound > emitted:
        emitted = seen - bound          # the watermark sent after the first batch
    c2, m2, k2, _ = watermark_splits(b, 1, bound, seen, emitted)
    cuts = c1[:k1].tolist() + [len(a) + int(c) for c in c2[:k2]]
    # The end-of-batch watermark already delivers every mark up to ``emitted``: cuts in the
    # second batch remain only where the whole run needs a larger watermark.
    expected = [c for c, m in zip(whole[0], whole[1]) if c < len(a) or m > emitted]
    assert cuts == expected


def test_ordered_input_never_needs_a_cut():
    ts = np.arange(0, 100_000, 7, dtype=np.int64)
    _, _, k, seen = watermark_splits(ts, 1_000_000, 0, I64_MIN, I64_MIN)
    assert k == 0 and seen == ts[-1] * 1_000_000


def test_disorder_within_the_bound_needs_no_cut():
    ts = np.array([100, 90, 120, 111, 130], dtype=np.int64)   # at most 10 behind the max so far
    _, _, k, _ = watermark_splits(ts, 1, 10, I64_MIN, I64_MIN)
    assert k == 0


def test_row_behind_the_implied_watermark_gets_it_first():
    # 5000 then 100 with bound 1000: the watermark 4000 must precede row 1.
    cuts, marks, k, _ = watermark_splits(np.array([5000, 100, 5100], np.int64), 1, 1000, I64_MIN, I64_MIN)
    assert (cuts[:k].tolist(), marks[:k].tolist()) == ([1], [4000])


def test_extreme_times_saturate_instead_of_overflowing():
    ts = np.array([2**62, -(2**62), 5], dtype=np.int64)
    cuts, marks, k, seen = watermark_splits(ts, 1_000_000, 0, I64_MIN, I64_MIN)
    rcuts, rmarks, rseen = ref.watermark_splits(ts, 1_000_000, 0, I64_MIN, I64_MIN)
    assert (cuts[:k].tolist(), marks[:k].tolist(), seen) == (rcuts, rmarks, rseen)


grids = st.lists(st.tuples(st.integers(1, 400), st.integers(1, 400), st.integers(0, 300))
                 .map(lambda t: (max(t[0], t[1]), t[1], t[2])), min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(ts=times, bound=st.integers(0, 5000), grid=grids)
def test_grid_cuts_match_reference(ts, bound, grid):
    arr = np.array(ts, dtype=np.int64)
    cuts, marks, k, seen = watermark_splits(arr, 1, bound, I64_MIN, I64_MIN, window_grid(grid))
    rcuts, rmarks, rseen = ref.watermark_splits(arr, 1, bound, I64_MIN, I64_MIN, grid)
    assert (cuts[:k].tolist(), marks[:k].tolist(), seen) == (rcuts, rmarks, rseen)


@settings(max_examples=300, deadline=None)
@given(ts=times, bound=st.integers(0, 5000), grid=grids)
def test_a_grid_delivers_a_watermark_on_the_same_side_of_every_threshold(ts, bound, grid):
    """Each row sees, under the grid's fewer cuts, a watermark with the same windows emitted and
    gone as under the exact watermark its predecessors imply: the windows treat it alike."""
    arr = np.array(ts, dtype=np.int64)

    def seen_by_rows(cuts, marks):
        out, w, j = [], I64_MIN, 0
        for i in range(len(arr)):
            while j < len(cuts) and cuts[j] == i:
                w, j = marks[j], j + 1
            out.append(w)
        return out

    exact = seen_by_rows(*ref.watermark_splits(arr, 1, bound, I64_MIN, I64_MIN)[:2])
    coarse = seen_by_rows(*ref.watermark_splits(arr, 1, bound, I64_MIN, I64_MIN, grid)[:2])
    for i, (e, c) in enumerate(zip(exact, coarse)):
        if arr[i] >= e:
            continue          # not behind: every window of the row is open under both
        for size, slide, late in grid:
            for off in (size, size + late):
                assert (e - off) // slide == (c - off) // slide, (i, e, c)


def test_late_rows_inside_one_window_period_need_no_cut():
    # 1 s windows, watermark 0 delivered; many rows behind the watermark, which never passes
    # a window end: no cut (exactly: one per row behind).
    ts = np.array([100, 50, 400, 120, 700, 300, 900, 10], np.int64)
    assert watermark_splits(ts, 1, 0, 0, 0, window_grid([(1000, 1000, 0)]))[2] == 0
    assert watermark_splits(ts, 1, 0, 0, 0)[2] == 4


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(-10**6, 10**6), st.integers(0, 3)), max_size=60),
       bound=st.integers(0, 5000), grid=st.one_of(st.none(), grids),
       live=st.lists(st.booleans(), min_size=4, max_size=4),
       ends=st.lists(st.booleans(), min_size=4, max_size=4))
def test_split_cuts_match_reference(rows, bound, grid, live, ends):
    from heliosdb.kernels.window import split_watermark_splits

    ts = np.array([t for t, _ in rows], np.int64)
    split = np.array([s for _, s in rows], np.int64)
    # splits that end: their number of rows is known (they stop holding after the last one)
    left = [int((split == j).sum()) if e and (split == j).any() else -1 for j, e in enumerate(ends)]
    seen = np.full(4, I64_MIN, np.int64)
    alive = np.array(live, np.uint8)
    cuts, marks, k, low = split_watermark_splits(ts, split, 1, bound, seen, alive, I64_MIN,
                                                 window_grid(grid) if grid else window_grid([None]),
                                                 left=np.array(left, np.int64))
    rseen, rlive = [I64_MIN] * 4, list(live)
    rcuts, rmarks, rlow = ref.split_watermark_splits(ts, split, 1, bound, rseen, rlive, I64_MIN, grid,
                                                     list(left))
    assert (cuts[:k].tolist(), marks[:k].tolist(), low) == (rcuts, rmarks, rlow)
    assert seen.tolist() == rseen and alive.astype(bool).tolist() == rlive


def test_a_split_read_late_is_not_behind():
    """Three splits, each in order, read one after another: with one watermark over all of
    them, the second and third splits' rows would all be behind; per split, none is."""
    from heliosdb.kernels.window import split_watermark_splits

    ts = np.concatenate([np.arange(0, 1000, 10)] * 3).astype(np.int64)
    split = np.repeat(np.arange(3), 100).astype(np.int64)
    assert watermark_splits(ts, 1, 0, I64_MIN, I64_MIN)[2] > 0
    seen, live = np.full(3, I64_MIN, np.int64), np.ones(3, np.uint8)
    _, _, k, low = split_watermark_splits(ts, split, 1, 0, seen, live, I64_MIN)
    assert k == 0 and low == 990


@settings(max_examples=200, deadline=None)
@given(splits=st.lists(st.tuples(st.one_of(st.just(I64_MIN), st.integers(-10**9, 10**9)), st.booleans()),
                       max_size=6), bound=st.integers(0, 10**6))
def test_split_low_matches_reference(splits, bound):
    from heliosdb.kernels.window import split_low

    seen = np.array([s for s, _ in splits], np.int64)
    live = np.array([a for _, a in splits], np.uint8)
    assert split_low(seen, live, bound) == ref.split_low(seen.tolist(), [bool(a) for a in live], bound)
