"""The lookup join's Cython index (``kernels/_lookup.pyx``) against a plain-Python reference:
every layout (direct, hash1, wide), duplicate and null keys, empty sides, inner and left."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heliosdb.kernels._lookup import JoinIndex, StringIndex


def reference(table_keys, table_ok, probe_keys, probe_ok, keep):
    """(left, right) pairs: each probe row with every table row of its key, in table order."""
    rows = defaultdict(list)
    for r, (k, ok) in enumerate(zip(table_keys, table_ok)):
        if ok:
            rows[k].append(r)
    left, right = [], []
    for i, (k, ok) in enumerate(zip(probe_keys, probe_ok)):
        matches = rows.get(k, []) if ok else []
        for r in matches:
            left.append(i)
            right.append(r)
        if not matches and keep:
            left.append(i)
            right.append(-1)
    return left, right


def run(cols_t, ok_t, cols_p, ok_p, keep):
    ix = JoinIndex([np.ascontiguousarray(c, dtype=np.int64) for c in cols_t],
                   None if ok_t is None else np.asarray(ok_t, np.uint8))
    left, right, unmatched = ix.probe([np.ascontiguousarray(c, dtype=np.int64) for c in cols_p],
                                      None if ok_p is None else np.asarray(ok_p, np.uint8), keep)
    n = len(cols_p[0])
    left = list(range(n)) if left is None else left.tolist()
    return ix, left, right.tolist(), unmatched


def _tuples(cols):
    return list(zip(*[list(c) for c in cols]))


keys_small = st.integers(-5, 40)
keys_wide = st.sampled_from([-(2**63), 2**63 - 1, 0, 7, 10**15, -(10**12)])


@settings(max_examples=150, deadline=None)
@given(st.data(), st.integers(1, 3), st.booleans(), st.booleans(), st.booleans())
def test_the_index_matches_the_reference(data, width, sparse, nulls, keep):
    keys = keys_wide if sparse else keys_small
    nt = data.draw(st.integers(0, 30))
    npb = data.draw(st.integers(0, 40))
    cols_t = [data.draw(st.lists(keys, min_size=nt, max_size=nt)) for _ in range(width)]
    cols_p = [data.draw(st.lists(keys, min_size=npb, max_size=npb)) for _ in range(width)]
    ok_t = data.draw(st.lists(st.booleans(), min_size=nt, max_size=nt)) if nulls else None
    ok_p = data.draw(st.lists(st.booleans(), min_size=npb, max_size=npb)) if nulls else None
    ix, left, right, unmatched = run(cols_t, ok_t, cols_p, ok_p, keep)
    want = reference(_tuples(cols_t), ok_t or [True] * nt, _tuples(cols_p), ok_p or [True] * npb, keep)
    assert (left, right) == want
    assert unmatched == (sum(1 for r in right if r < 0) if keep else 0)
    if width > 1:
        assert ix.layout == "wide"


@pytest.mark.parametrize("keys,layout", [
    (np.arange(1000, 2000), "direct"),                 # dense ids
    (np.arange(0, 10**9, 10**6), "hash1"),              # sparse
    (np.array([2**63 - 1, -(2**63), 0]), "hash1"),      # a range that overflows int64
])
def test_one_key_column_picks_its_layout_and_unique_keys_map_rows(keys, layout):
    ix = JoinIndex([keys.astype(np.int64)])
    assert ix.layout == layout and ix.unique and ix.n_groups == len(keys)
    probe = np.concatenate([keys[::-1], [12345678901]]).astype(np.int64)
    left, right, unmatched = ix.probe([probe], None, True)
    assert left is None and unmatched == 1
    assert right.tolist() == list(range(len(keys)))[::-1] + [-1]
    left, right, _ = ix.probe([probe], None, False)
    assert left.tolist() == list(range(len(keys))) and right.tolist() == list(range(len(keys)))[::-1]


def test_duplicate_keys_give_every_match_in_table_order():
    ix = JoinIndex([np.array([5, 3, 5, 5], np.int64)])
    assert not ix.unique and ix.n_groups == 2 and ix.n_keyed == 4
    left, right, _ = ix.probe([np.array([5, 4, 3], np.int64)], None, True)
    assert left.tolist() == [0, 0, 0, 1, 2] and right.tolist() == [0, 2, 3, -1, 1]


def test_a_table_with_only_null_keys_or_no_rows_matches_nothing():
    for ix in (JoinIndex([np.array([1, 2], np.int64)], np.zeros(2, np.uint8)),
               JoinIndex([np.zeros(0, np.int64)])):
        left, right, unmatched = ix.probe([np.array([1, 2], np.int64)], None, True)
        assert left is None and right.tolist() == [-1, -1] and unmatched == 2
        left, right, _ = ix.probe([np.array([1, 2], np.int64)], None, False)
        assert len(left) == len(right) == 0


def test_the_index_rejects_bad_arguments():
    with pytest.raises(ValueError, match="int64"):
        JoinIndex([np.array([1, 2], np.int32)])
    with pytest.raises(ValueError, match="1..32"):
        JoinIndex([])
    ix = JoinIndex([np.array([1], np.int64), np.array([1], np.int64)])
    with pytest.raises(ValueError, match="expected 2 key columns"):
        ix.probe([np.array([1], np.int64)])
    with pytest.raises(ValueError, match="valid"):
        ix.probe([np.array([1], np.int64)] * 2, np.ones(3, np.uint8))


def _buffers(strings):
    data = b"".join(s.encode() for s in strings)
    offs = np.cumsum([0] + [len(s.encode()) for s in strings]).astype(np.int64)
    return offs, np.frombuffer(data, np.uint8) if data else np.zeros(0, np.uint8)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=20)), max_size=20),
       st.lists(st.text(max_size=20), max_size=30), st.booleans())
def test_string_ids_are_first_positions_and_unknown_strings_are_invalid(table, probe, int32):
    ok = np.array([s is not None for s in table], np.uint8)
    idx = StringIndex(*_buffers([s or "" for s in table]), ok)
    first = {}
    for i, s in enumerate(table):
        if s is not None:
            first.setdefault(s, i)
    assert [c for c, s in zip(idx.codes.tolist(), table) if s is not None] == \
        [first[s] for s in table if s is not None]
    assert idx.n_strings == len(first)
    offs, data = _buffers(probe)
    out = np.empty(len(probe), np.int64)
    valid = np.ones(len(probe), np.uint8)
    valid[::3] = 0                                       # nulls stay invalid, never looked up
    before = valid.copy()
    idx.lookup(offs.astype(np.int32) if int32 else offs, data, out, valid)
    for i, s in enumerate(probe):
        if before[i] and s in first:
            assert valid[i] == 1 and out[i] == first[s]
        else:
            assert valid[i] == 0
