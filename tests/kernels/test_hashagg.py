"""The Cython hash table and grouped accumulators of ``heliosdb.kernels._hashagg``.

``GroupTable`` is compared with a dict that hands out ids in first-seen order; the accumulators
with a straightforward per-row Python loop.  Accumulators are initialised and finalised the way
the window operator's ``_ColumnStats`` does it (sum 0, min +inf / INT64_MAX, max -inf /
INT64_MIN; min is NaN only when every value was NaN, max is NaN when any was), and the finalised
values are checked against ``kernels.reference.group_aggregate``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heliosdb.kernels import reference
from heliosdb.kernels._hashagg import (
    GroupTable, count_rows, count_valid, update_f64, update_i64,
)

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
SPECIAL_KEYS = [0, 1, -1, I64_MIN, I64_MAX, I64_MIN + 1, I64_MAX - 1]


class DictTable:
    """The reference: key tuple -> dense id in first-seen order."""

    def __init__(self):
        self.ids: dict = {}

    def insert(self, columns):
        rows = list(zip(*[c.tolist() for c in columns]))
        return [self.ids.setdefault(r, len(self.ids)) for r in rows]

    def keys(self):
        return list(self.ids)


def insert(table: GroupTable, columns) -> list:
    out = np.empty(len(columns[0]), np.int64)
    table.insert(columns, out)
    return out.tolist()


def keys_of(table: GroupTable) -> list:
    return [tuple(r) for r in table.keys_view().tolist()]


# -- strategies --------------------------------------------------------------------------------
def key_values(spread: int):
    return st.one_of(st.sampled_from(SPECIAL_KEYS), st.integers(-spread, spread),
                     st.integers(I64_MIN, I64_MAX))


@st.composite
def key_batches(draw, width: int, max_batches: int = 5):
    """A few batches of ``width`` int64 key columns, with repeated keys across batches."""
    spread = draw(st.sampled_from([1, 3, 1_000]))
    batches = []
    for _ in range(draw(st.integers(1, max_batches))):
        n = draw(st.integers(0, 50))
        rows = draw(st.lists(st.tuples(*[key_values(spread)] * width), min_size=n, max_size=n))
        batches.append([np.array([r[j] for r in rows], dtype=np.int64) for j in range(width)])
    return batches


# -- GroupTable --------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [1, 2, 3, 5])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_ids_are_dense_in_first_seen_order_across_batches(width, data):
    batches = data.draw(key_batches(width))
    table, ref = GroupTable(width, 16), DictTable()
    for cols in batches:
        before = len(ref.ids)
        out = np.empty(len(cols[0]), np.int64)
        added = table.insert(cols, out)
        assert out.tolist() == ref.insert(cols)
        assert added == len(ref.ids) - before
        assert table.n_groups == len(ref.ids)
    assert keys_of(table) == ref.keys()


@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_int64_extremes_and_zero_are_distinct_keys(width):
    rows = [tuple([v] * width) for v in SPECIAL_KEYS]
    rows += [tuple(SPECIAL_KEYS[(i + j) % len(SPECIAL_KEYS)] for j in range(width))
             for i in range(len(SPECIAL_KEYS))]
    rows = rows + rows[::-1]
    cols = [np.array([r[j] for r in rows], np.int64) for j in range(width)]
    table, ref = GroupTable(width), DictTable()
    assert insert(table, cols) == ref.insert(cols)
    assert keys_of(table) == ref.keys()


@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_100k_distinct_keys_grow_past_initial_capacity(width):
    # 100k groups from a 16-group table: storage doubles and slots rehash many times; keys are
    # spread over the whole int64 range and every group is looked up again afterwards.
    rng = np.random.default_rng(width)
    n = 100_000
    first = rng.choice(I64_MAX - 1, size=n, replace=False).astype(np.int64) + 1   # 1..MAX-1
    first[:3] = [I64_MIN, I64_MAX, 0]
    first[3:] = np.where(np.arange(3, n) % 2 == 0, -first[3:], first[3:])
    cols = [first] + [(first * (j + 3)) ^ j for j in range(1, width)]
    table = GroupTable(width, 16)
    for lo in range(0, n, 30_000):                      # several calls, each adding groups
        part = [c[lo: lo + 30_000] for c in cols]
        assert insert(table, part) == list(range(lo, min(n, lo + 30_000)))
    assert table.n_groups == n
    assert np.array_equal(table.keys_view(), np.stack(cols, axis=1))
    order = rng.permutation(n)
    assert insert(table, [np.ascontiguousarray(c[order]) for c in cols]) == order.tolist()
    assert table.n_groups == n


def test_sparse_keys_with_the_same_low_bits_do_not_collide():
    # multiples of 2**32: identical low bits, so only the hash separates them
    keys = (np.arange(-5_000, 5_000, dtype=np.int64) << 32)
    table, ref = GroupTable(1), DictTable()
    assert insert(table, [keys]) == ref.insert([keys])
    assert insert(table, [keys[::-1].copy()]) == ref.insert([keys[::-1].copy()])


def test_empty_insert_adds_nothing():
    table = GroupTable(2)
    assert table.insert([np.empty(0, np.int64)] * 2, np.empty(0, np.int64)) == 0
    assert table.n_groups == 0
    assert table.keys_view().shape == (0, 2)


def test_insert_reads_offset_slices_of_key_columns():
    base = np.arange(100, dtype=np.int64) % 7
    table, ref = GroupTable(2), DictTable()
    cols = [base[13:60], base[40:87]]
    assert insert(table, cols) == ref.insert(cols)


def test_insert_rejects_mismatched_columns():
    table = GroupTable(2)
    out = np.empty(4, np.int64)
    with pytest.raises(ValueError):
        table.insert([np.zeros(4, np.int64)], out)                          # one column, not two
    with pytest.raises(ValueError):
        table.insert([np.zeros(4, np.int64), np.zeros(3, np.int64)], out)   # wrong length
    with pytest.raises(ValueError):
        table.insert([np.zeros(4, np.int64), np.zeros(8, np.int64)[::2]], out)  # strided
    with pytest.raises(ValueError):
        table.insert([np.zeros(4, np.int64), np.zeros(4, np.int32)], out)   # not int64


@pytest.mark.parametrize("width", [1, 2, 3, 5])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_compact_renumbers_kept_groups_and_later_inserts_find_them(width, data):
    batches = data.draw(key_batches(width, max_batches=3))
    table, ref = GroupTable(width, 16), DictTable()
    for cols in batches:
        insert(table, cols)
        ref.insert(cols)
    n = table.n_groups
    keep = sorted(data.draw(st.sets(st.integers(0, max(n - 1, 0)), max_size=n)) if n else [])
    kept_keys = [ref.keys()[g] for g in keep]
    table.compact(np.array(keep, dtype=np.int64))
    assert table.n_groups == len(keep)
    assert keys_of(table) == kept_keys
    # A reference that only knows the kept groups, in their new order.
    ref2 = DictTable()
    ref2.ids = {k: i for i, k in enumerate(kept_keys)}
    for cols in batches + data.draw(key_batches(width, max_batches=2)):
        assert insert(table, cols) == ref2.insert(cols)
    assert keys_of(table) == ref2.keys()


def test_compact_after_growth_keeps_every_other_group():
    n = 50_000
    keys = np.arange(n, dtype=np.int64) * 1_000_003 - 7
    table = GroupTable(1, 16)
    insert(table, [keys])
    keep = np.arange(0, n, 2, dtype=np.int64)
    table.compact(keep)
    assert table.keys_view()[:, 0].tolist() == keys[keep].tolist()
    got = insert(table, [keys])
    # kept groups: their new ids; dropped ones: new groups after them, in first-seen order
    exp = [i // 2 if i % 2 == 0 else n // 2 + i // 2 for i in range(n)]
    assert got == exp


def test_compact_to_nothing_then_reinsert_starts_from_zero():
    table = GroupTable(3)
    cols = [np.array([5, 6, 5], np.int64)] * 3
    insert(table, cols)
    table.compact(np.empty(0, np.int64))
    assert table.n_groups == 0
    assert insert(table, [np.array([6, 5], np.int64)] * 3) == [0, 1]


@pytest.mark.parametrize("keep", [[1, 0], [0, 0], [2], [-1]])
def test_compact_rejects_unsorted_duplicate_or_unknown_ids(keep):
    table = GroupTable(1)
    insert(table, [np.array([10, 20], np.int64)])
    with pytest.raises(ValueError):
        table.compact(np.array(keep, dtype=np.int64))
    assert keys_of(table) == [(10,), (20,)]


@pytest.mark.parametrize("width", [1, 2, 3, 5])
@settings(max_examples=30, deadline=None)
@given(data=st.data(), fill=st.sampled_from([0, -1, I64_MIN, I64_MAX]))
def test_widen_appends_a_fill_column_and_keeps_ids(width, data, fill):
    batches = data.draw(key_batches(width, max_batches=3))
    table, ref = GroupTable(width, 16), DictTable()
    for cols in batches:
        insert(table, cols)
        ref.insert(cols)
    wide = table.widen(fill)
    assert wide.width == width + 1
    assert keys_of(wide) == [k + (fill,) for k in ref.keys()]
    # Old rows with the fill word find their groups; any other word makes new groups.
    ref2 = DictTable()
    ref2.ids = {k + (fill,): i for i, k in enumerate(ref.keys())}
    for cols in batches:
        n = len(cols[0])
        for word in (fill, fill ^ 1):
            wcols = cols + [np.full(n, word, np.int64)]
            assert insert(wide, wcols) == ref2.insert(wcols)


def test_widen_of_a_large_table_keeps_every_group():
    n = 40_000
    keys = np.arange(n, dtype=np.int64) * -31
    table = GroupTable(1, 16)
    insert(table, [keys])
    wide = table.widen(0)
    assert insert(wide, [keys, np.zeros(n, np.int64)]) == list(range(n))
    assert wide.n_groups == n


@pytest.mark.parametrize("width", [1, 2, 3])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_gather_slice_and_copy_of_keys_agree_with_the_dict_reference(width, data):
    batches = data.draw(key_batches(width))
    table, ref = GroupTable(width, 16), DictTable()
    for cols in batches:
        insert(table, cols)
        ref.insert(cols)
    keys = ref.keys()
    n = len(keys)
    ids = data.draw(st.lists(st.integers(0, n - 1), max_size=20)) if n else []
    got = table.gather_keys(np.array(ids, dtype=np.int64))
    assert got.shape == (len(ids), width)
    assert [tuple(r) for r in got.tolist()] == [keys[i] for i in ids]
    a = data.draw(st.integers(0, n))
    b = data.draw(st.integers(a, n))
    assert [tuple(r) for r in table.keys_slice(a, b).tolist()] == keys[a:b]
    buf = np.full(n * width + 3, 7, np.int64)
    assert table.copy_keys_into(buf) == n
    assert [tuple(r) for r in buf[: n * width].reshape(n, width).tolist()] == keys
    assert buf[n * width:].tolist() == [7, 7, 7]          # nothing written past the keys


def test_gather_slice_and_copy_of_keys_reject_what_is_out_of_range():
    table = GroupTable(2, 16)
    insert(table, [np.array([1, 2], np.int64), np.array([3, 4], np.int64)])
    with pytest.raises(IndexError, match="out of range"):
        table.gather_keys(np.array([0, 2], np.int64))
    with pytest.raises(IndexError, match="out of range"):
        table.gather_keys(np.array([-1], np.int64))
    with pytest.raises(IndexError, match="out of range"):
        table.keys_slice(1, 3)
    with pytest.raises(ValueError, match="the keys need 4"):
        table.copy_keys_into(np.empty(3, np.int64))


# -- accumulators ------------------------------------------------------------------------------
def fresh_stats(is_float: bool, groups: int):
    dt = np.float64 if is_float else np.int64
    return dict(
        nn=np.zeros(groups, np.int64),
        nan=np.zeros(groups, np.int64),
        sum=np.zeros(groups, dt),
        min=np.full(groups, np.inf if is_float else I64_MAX, dt),
        max=np.full(groups, -np.inf if is_float else I64_MIN, dt),
    )


def update(stats, is_float, gids, values, valid):
    if is_float:
        update_f64(gids, values, valid, stats["nn"], stats["nan"], stats["sum"], stats["min"],
                   stats["max"])
    else:
        update_i64(gids, values, valid, stats["nn"], stats["sum"], stats["min"], stats["max"])


def ref_stats(is_float: bool, groups: int, gids, values, valid):
    """Per-row Python fold: what the accumulators must hold (sum added in row order)."""
    nn, nan = [0] * groups, [0] * groups
    sm = [0.0 if is_float else 0] * groups
    mn = [math.inf if is_float else I64_MAX] * groups
    mx = [-math.inf if is_float else I64_MIN] * groups
    for i, g in enumerate(gids):
        if valid is not None and not valid[i]:
            continue
        v = values[i]
        nn[g] += 1
        if is_float:
            sm[g] = sm[g] + v
            if v != v:
                nan[g] += 1
                continue
        else:
            sm[g] = (sm[g] + v + 2**63) % 2**64 - 2**63          # wrapping int64 sum
        mn[g] = min(mn[g], v)
        mx[g] = max(mx[g], v)
    return dict(nn=nn, nan=nan if is_float else [0] * groups, sum=sm, min=mn, max=mx)


def same(a, b) -> bool:
    """Element-wise equality where NaN equals NaN."""
    return len(a) == len(b) and all(x == y or (x != x and y != y) for x, y in zip(a, b))


def finalise(stats, is_float: bool, kind: str, g: int):
    """One group's result, finalised as ``_ColumnStats.result`` does (None = SQL null)."""
    if kind == "count":
        return int(stats["nn"][g])
    if stats["nn"][g] == 0:
        return None
    if kind == "sum":
        return stats["sum"][g].item()
    if kind == "min":
        if is_float and stats["nan"][g] == stats["nn"][g]:
            return math.nan
        return stats["min"][g].item()
    if kind == "max":
        if is_float and stats["nan"][g] > 0:
            return math.nan
        return stats["max"][g].item()
    raise AssertionError(kind)


FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 1.5, -2.25, 5e-324]),
)
INTS = st.one_of(st.integers(I64_MIN, I64_MAX), st.sampled_from(SPECIAL_KEYS),
                 st.integers(-100, 100))


@st.composite
def grouped_columns(draw, is_float: bool):
    """(groups, gids, values, valid or None) with every group id below ``groups``."""
    groups = draw(st.integers(1, 6))
    n = draw(st.integers(0, 60))
    gids = draw(st.lists(st.integers(0, groups - 1), min_size=n, max_size=n))
    values = draw(st.lists(FLOATS if is_float else INTS, min_size=n, max_size=n))
    valid = None
    if draw(st.booleans()):
        valid = draw(st.lists(st.sampled_from([0, 1, 1]), min_size=n, max_size=n))
    return groups, gids, values, valid


def as_arrays(is_float, gids, values, valid, pad: int):
    """Numpy arrays, each an offset slice (``pad`` rows in) of a larger buffer."""
    dt = np.float64 if is_float else np.int64
    g = np.concatenate([np.zeros(pad, np.int64), np.array(gids, np.int64)])[pad:]
    v = np.concatenate([np.zeros(pad, dt), np.array(values, dt)])[pad:]
    ok = None
    if valid is not None:
        ok = np.concatenate([np.zeros(pad, np.uint8), np.array(valid, np.uint8)])[pad:]
    return g, v, ok


@pytest.mark.parametrize("is_float", [True, False], ids=["f64", "i64"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_update_matches_per_row_reference(is_float, data):
    groups, gids, values, valid = data.draw(grouped_columns(is_float))
    pad = data.draw(st.integers(0, 3))
    stats = fresh_stats(is_float, groups)
    update(stats, is_float, *as_arrays(is_float, gids, values, valid, pad))
    exp = ref_stats(is_float, groups, gids, values, valid)
    for field in ("nn", "nan", "sum", "min", "max"):
        assert same(stats[field].tolist(), exp[field]), field


@pytest.mark.parametrize("is_float", [True, False], ids=["f64", "i64"])
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_update_in_several_calls_equals_one_call(is_float, data):
    groups, gids, values, valid = data.draw(grouped_columns(is_float))
    cut = data.draw(st.integers(0, len(gids)))
    one, two = fresh_stats(is_float, groups), fresh_stats(is_float, groups)
    update(one, is_float, *as_arrays(is_float, gids, values, valid, 0))
    for lo, hi in ((0, cut), (cut, len(gids))):
        part_valid = None if valid is None else valid[lo:hi]
        update(two, is_float, *as_arrays(is_float, gids[lo:hi], values[lo:hi], part_valid, 1))
    for field in one:
        assert same(one[field].tolist(), two[field].tolist()), field


@pytest.mark.parametrize("is_float", [True, False], ids=["f64", "i64"])
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_finalised_min_max_count_agree_with_reference_group_aggregate(is_float, data):
    groups, gids, values, valid = data.draw(grouped_columns(is_float))
    stats = fresh_stats(is_float, groups)
    update(stats, is_float, *as_arrays(is_float, gids, values, valid, 0))
    column = [v if valid is None or valid[i] else None for i, v in enumerate(values)]
    kinds = [("count", "count", "v"), ("min", "min", "v"), ("max", "max", "v")]
    if not is_float:
        kinds.append(("sum", "sum", "v"))   # float sums: the reference uses fsum, the kernel adds
                                            # in row order (checked in the per-row test above)
    exp = reference.group_aggregate([(g,) for g in gids], {"v": column}, kinds)
    for (g,), res in exp.items():
        for name, kind, _ in kinds:
            got = finalise(stats, is_float, kind, g)
            assert same([got], [res[name]]), (g, kind)


def test_min_skips_nan_and_nan_count_is_recorded():
    # group 0: 3.0 NaN 1.0 -> min 1.0, max 3.0, 1 NaN;  group 1: only NaN -> min/max untouched
    stats = fresh_stats(True, 2)
    gids = np.array([0, 0, 1, 0, 1], np.int64)
    values = np.array([3.0, np.nan, np.nan, 1.0, np.nan])
    update(stats, True, gids, values, None)
    assert stats["min"].tolist() == [1.0, math.inf]
    assert stats["max"].tolist() == [3.0, -math.inf]
    assert stats["nan"].tolist() == [1, 2]
    assert stats["nn"].tolist() == [3, 2]
    assert [finalise(stats, True, "min", g) for g in (0, 1)][0] == 1.0
    assert math.isnan(finalise(stats, True, "min", 1))
    assert math.isnan(finalise(stats, True, "max", 0))


def test_null_rows_are_skipped_even_when_their_value_slot_holds_nan():
    stats = fresh_stats(True, 1)
    update(stats, True, np.zeros(3, np.int64), np.array([np.nan, 2.0, -1.0]),
           np.array([0, 1, 1], np.uint8))
    assert (stats["nn"][0], stats["nan"][0], stats["sum"][0]) == (2, 0, 1.0)
    assert (stats["min"][0], stats["max"][0]) == (-1.0, 2.0)


def test_int_sum_wraps_around_int64():
    stats = fresh_stats(False, 1)
    update(stats, False, np.zeros(3, np.int64), np.array([I64_MAX, 1, I64_MAX], np.int64), None)
    assert stats["sum"][0] == (I64_MAX + 1 + I64_MAX + 2**63) % 2**64 - 2**63
    assert (stats["min"][0], stats["max"][0]) == (1, I64_MAX)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 8).flatmap(
    lambda g: st.tuples(st.just(g), st.lists(st.integers(0, g - 1), max_size=80))),
    st.integers(0, 3))
def test_count_rows_counts_each_group(case, pad):
    groups, gids = case
    counts = np.zeros(groups, np.int64)
    g = np.concatenate([np.zeros(pad, np.int64), np.array(gids, np.int64)])[pad:]
    count_rows(g, counts)
    count_rows(g, counts)
    assert counts.tolist() == [2 * gids.count(i) for i in range(groups)]


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 8).flatmap(lambda g: st.tuples(
    st.just(g), st.lists(st.tuples(st.integers(0, g - 1), st.sampled_from([0, 1])), max_size=80))),
    st.integers(0, 3))
def test_count_valid_counts_non_null_rows_of_each_group(case, pad):
    groups, rows = case
    gids = np.concatenate([np.zeros(pad, np.int64), np.array([r[0] for r in rows], np.int64)])[pad:]
    valid = np.concatenate([np.zeros(pad, np.uint8),
                            np.array([r[1] for r in rows], np.uint8)])[pad:]
    counts = np.zeros(groups, np.int64)
    count_valid(gids, valid, counts)
    assert counts.tolist() == [sum(ok for gid, ok in rows if gid == k) for k in range(groups)]
