"""StringTable (Cython) against a dict reference: dense ids in first-seen order."""
import numpy as np
import pyarrow as pa
from hypothesis import given, settings, strategies as st

from heliosdb.kernels._hashagg import StringTable


def _encode(table: StringTable, arr: pa.Array) -> list:
    bufs = arr.buffers()
    off_t = np.int32 if pa.types.is_string(arr.type) else np.int64
    offsets = np.frombuffer(bufs[1], dtype=off_t)[arr.offset: arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    out = np.empty(len(arr), np.int64)
    table.encode(offsets, data, out)
    return out.tolist()


@settings(max_examples=150, deadline=None)
@given(batches=st.lists(st.lists(st.text(max_size=6), max_size=40), max_size=6),
       large=st.booleans(), skip=st.integers(0, 3))
def test_ids_are_dense_in_first_seen_order_across_calls(batches, large, skip):
    table, ref = StringTable(), {}
    for values in batches:
        arr = pa.array(["pad"] * skip + values, pa.large_string() if large else pa.string()).slice(skip)
        assert _encode(table, arr) == [ref.setdefault(v, len(ref)) for v in values]
    assert len(table) == len(ref)
    offsets, data = table.values()
    back = pa.Array.from_buffers(pa.large_string(), len(table), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    assert back.to_pylist() == list(ref)


def test_growth_past_initial_capacity_keeps_every_id():
    values = [f"key-{i}" for i in range(50_000)] * 2
    table = StringTable()
    ids = _encode(table, pa.array(values))
    assert ids == list(range(50_000)) * 2
    assert len(table) == 50_000


def test_empty_and_unicode_strings_are_distinct_keys():
    table = StringTable()
    assert _encode(table, pa.array(["", "ä", "a", "", "ä"])) == [0, 1, 2, 0, 1]
