"""The release order of a Kafka source's partition queues, without a broker: the event-time
merge (order, ties, cuts by budget, partitions that hold the merge back or end), empty takes,
pausing and resuming, round robin, watermark alignment and positions.

Each partition's rows carry their partition (``p``) and offset (``o``), so the released order
can be compared with the oracle: every queued row sorted by (merge key, partition, offset).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pytest

from heliosdb.connectors.kafka_merge import KEY_MIN, Chunk, Partition, PartitionMerge
from heliosdb.connectors.splits import Splits


def chunk(p: Partition, ts: Sequence[int], first_offset: int, dead: Optional[pa.RecordBatch] = None,
          ingest_ns: int = 0) -> Tuple[Partition, Chunk, int, int]:
    """A fetch of ``len(ts)`` one-row messages of ``p`` from ``first_offset``, as a reader
    pushes it: the chunk, the offset after it, the partition's largest merge key."""
    ts = np.asarray(ts, dtype=np.int64)
    n = len(ts)
    offsets = np.arange(first_offset, first_offset + n, dtype=np.int64)
    keys = np.maximum.accumulate(np.maximum(ts, p.decode_max)) if n else ts
    if n:
        p.decode_max = int(keys[-1])
    batch = pa.record_batch({"ts": ts, "p": np.full(n, p.partition, np.int64), "o": offsets})
    return p, Chunk(batch, offsets, np.zeros(n, np.int64), keys, first_offset + n, ingest_ns, dead=dead), \
        first_offset + n, p.decode_max


def bounded(i: int, n: int) -> Partition:
    """Partition ``i`` of a bounded read of ``n`` messages."""
    return Partition("t", i, i, stop=n, high=n)


def live(i: int, high: int = 1_000) -> Partition:
    """Partition ``i`` of a live read whose backlog ends at offset ``high``."""
    return Partition("t", i, i, high=high)


def rows(merge: PartitionMerge, budget: int = 1_000) -> List[Tuple[int, int, int]]:
    """(ts, partition, offset) of the rows one take releases."""
    pieces, _ = merge.build(merge.take(budget))
    out: List[Tuple[int, int, int]] = []
    for b, _ in pieces:
        out += zip(b["ts"].to_pylist(), b["p"].to_pylist(), b["o"].to_pylist())
    return out


def drain(merge: PartitionMerge, budget: int) -> List[List[Tuple[int, int, int]]]:
    """Every take until nothing more comes."""
    takes = []
    while True:
        got = rows(merge, budget)
        if not got:
            return takes
        takes.append(got)


# -- order -------------------------------------------------------------------------------------
def test_partitions_read_to_their_end_merge_into_event_time_order():
    rng = np.random.default_rng(4)
    parts = [bounded(i, 50) for i in range(3)]
    merge = PartitionMerge(parts, merged=True, buffer_rows=10_000)
    expected = []
    fetches = []
    for p in parts:
        ts = np.sort(rng.integers(0, 40, 50))
        fetches.append(chunk(p, ts, 0))
        expected += [(int(t), p.partition, o) for o, t in enumerate(ts)]
    merge.push(fetches, {})
    assert rows(merge) == sorted(expected)
    assert merge.finished() and merge.position() == {"t": {0: 50, 1: 50, 2: 50}}


def test_ties_are_released_by_partition_then_offset():
    a, b = bounded(0, 3), bounded(1, 3)
    merge = PartitionMerge([a, b], merged=True, buffer_rows=100)
    merge.push([chunk(b, [7, 7, 8], 0), chunk(a, [7, 8, 8], 0)], {})
    assert rows(merge) == [(7, 0, 0), (7, 1, 0), (7, 1, 1), (8, 0, 1), (8, 0, 2), (8, 1, 2)]


def test_the_merge_key_is_the_running_maximum_within_a_partition():
    # Partition 0's row at ts 1 comes after its ts 5: its merge key is 5, so it is released
    # with the rows of key 5, not before partition 1's ts 3.
    a, b = bounded(0, 2), bounded(1, 1)
    merge = PartitionMerge([a, b], merged=True, buffer_rows=100)
    merge.push([chunk(a, [5, 1], 0), chunk(b, [3], 0)], {})
    assert rows(merge) == [(3, 1, 0), (5, 0, 0), (1, 0, 1)]


def test_takes_are_cut_by_key_to_about_a_batch_and_keep_the_order():
    parts = [bounded(i, 200) for i in range(4)]
    merge = PartitionMerge(parts, merged=True, buffer_rows=10_000)
    merge.push([chunk(p, np.arange(200) * 4 + p.partition, 0) for p in parts], {})   # no ties
    takes = drain(merge, budget=64)
    assert all(len(t) <= 64 for t in takes) and len(takes) == 800 // 64 + 1
    flat = [r for t in takes for r in t]
    assert flat == sorted(flat) and len(set(flat)) == 800


def test_a_run_of_equal_keys_is_released_whole_past_the_budget():
    a, b = bounded(0, 4), bounded(1, 2)
    merge = PartitionMerge([a, b], merged=True, buffer_rows=100)
    merge.push([chunk(a, [5, 5, 5, 5], 0), chunk(b, [5, 6], 0)], {})
    assert [r[0] for r in rows(merge, budget=2)] == [5, 5, 5, 5, 5]
    assert rows(merge, budget=2) == [(6, 1, 1)]


# -- partitions that hold the merge back, or end ---------------------------------------------------
def test_an_active_partition_holds_back_rows_past_its_largest_key():
    # timeline: partition 0 is live and has seen up to ts 3; partition 1's 5 and 7 must wait.
    slow, fast = live(0), bounded(1, 4)
    merge = PartitionMerge([slow, fast], merged=True, buffer_rows=100)
    merge.push([chunk(slow, [0, 3], 0), chunk(fast, [1, 2, 5, 7], 0)], {})
    assert rows(merge) == [(0, 0, 0), (1, 1, 0), (2, 1, 1)]
    merge.push([chunk(slow, [6], 2)], {})
    assert rows(merge) == [(3, 0, 1), (5, 1, 2)]
    # Partition 0 catches up with its end (an end-of-partition event at the offset after its
    # last message, past its backlog): it holds nothing back any more.
    slow.high = 3
    merge.push([], {slow: 3})
    assert rows(merge) == [(6, 0, 2), (7, 1, 3)]


def test_a_partition_that_sent_nothing_yet_holds_every_other_back():
    quiet, busy = live(0), bounded(1, 3)
    merge = PartitionMerge([quiet, busy], merged=True, buffer_rows=100)
    merge.push([chunk(busy, [1, 2, 3], 0)], {})
    assert quiet.max_key == KEY_MIN
    taken = merge.take(100)
    assert taken.slices == [] and not merge.finished()
    assert merge.position() == {"t": {0: 0, 1: 0}}


def test_a_bounded_partition_read_to_its_end_does_not_hold_the_others():
    ended, other = bounded(0, 1), live(1)
    merge = PartitionMerge([ended, other], merged=True, buffer_rows=100)
    merge.push([chunk(ended, [1], 0), chunk(other, [2, 9], 0)], {})
    # Partition 0 is fetched to its end: only partition 1 holds the merge (below its 9).
    assert rows(merge) == [(1, 0, 0), (2, 1, 0)]
    assert ended.finished() and not merge.finished()
    # Partition 1 is the only one still reading and nothing else is queued: alone, it
    # releases everything it has.
    assert rows(merge) == [(9, 1, 1)]


def test_empty_takes_until_rows_come_and_none_after_the_end():
    p = bounded(0, 2)
    merge = PartitionMerge([p], merged=True, buffer_rows=100)
    assert merge.take(10).slices == [] and not merge.finished()
    merge.push([chunk(p, [], 0)], {})               # a fetch with no rows (all undecodable)
    assert rows(merge) == []
    merge.push([chunk(p, [4, 5], 0)], {})
    assert rows(merge) == [(4, 0, 0), (5, 0, 1)]
    assert merge.take(10).slices == [] and merge.finished()


def test_the_position_passes_transaction_markers_at_the_end_of_a_partition():
    p = live(0, high=3)
    merge = PartitionMerge([p], merged=False, buffer_rows=100)
    merge.push([chunk(p, [1, 2], 0)], {p: 3})        # offset 2 is a commit marker: no row
    assert rows(merge) == [(1, 0, 0), (2, 0, 1)]
    assert merge.position() == {"t": {0: 3}}


# -- pausing -------------------------------------------------------------------------------------
def test_a_full_queue_pauses_and_resumes_once_half_has_gone():
    p, q = live(0), live(1)
    merge = PartitionMerge([p, q], merged=False, buffer_rows=4)
    assert merge.push([chunk(p, [1, 2, 3, 4, 5], 0)], {}) == [p]
    assert p.paused and merge.push([chunk(p, [6], 5)], {}) == []      # paused once
    taken = merge.take(3)                              # 6 queued -> 3: not below half (2)
    assert [s[3] - s[2] for s in taken.slices] == [3] and taken.resume == []
    taken = merge.take(2)
    assert taken.resume == [p] and not p.paused


def test_a_paused_partition_that_holds_the_merge_back_resumes_at_once():
    slow, fast = live(0), live(1)
    merge = PartitionMerge([slow, fast], merged=True, buffer_rows=2)
    assert merge.push([chunk(slow, [1, 1, 1], 0), chunk(fast, [5, 6], 0)], {}) == [slow, fast]
    taken = merge.take(100)
    # Nothing is below the frontier (partition 0's 1); partition 0 holds it, so it reads
    # again although its queue is full: only its next rows can move the frontier.
    assert taken.slices == [] and taken.resume == [slow]
    assert not slow.paused and fast.paused


# -- round robin (no event time) -------------------------------------------------------------------
def test_without_event_time_each_take_starts_with_the_next_partition_and_keeps_to_the_budget():
    parts = [bounded(i, 4) for i in range(3)]
    merge = PartitionMerge(parts, merged=False, buffer_rows=100)
    merge.push([chunk(p, [10 * p.partition + k for k in range(4)], 0) for p in parts], {})
    first, second = rows(merge, budget=3), rows(merge, budget=3)
    assert [r[1] for r in first] == [0, 0, 0] and [r[1] for r in second] == [1, 1, 1]
    assert merge.position() == {"t": {0: 3, 1: 3, 2: 0}}
    rest = drain(merge, budget=3)
    assert sorted(first + second + [r for t in rest for r in t]) == sorted(
        (10 * i + k, i, k) for i in range(3) for k in range(4))


def test_partitions_ahead_of_the_watermark_wait_and_finished_ones_are_announced():
    parts = [bounded(0, 2), bounded(1, 2)]
    splits = Splits(["kafka_partition"])
    merge = PartitionMerge(parts, merged=False, buffer_rows=100, splits=splits)
    merge.push([chunk(p, [1, 2], 0) for p in parts], {})
    splits.publish({(0,): 10_000, (1,): 0}, max_drift_ns=100)      # partition 0 runs ahead
    assert {r[1] for r in rows(merge)} == {1}
    assert splits.finished() == {(1,): 2}
    splits.publish({(0,): 10_000, (1,): 10_000}, max_drift_ns=100)
    assert {r[1] for r in rows(merge)} == {0}
    assert splits.finished() == {(0,): 2, (1,): 2}


# -- positions inside multi-row messages; dead letters -------------------------------------------
def test_a_cut_inside_a_multi_row_message_is_a_position_with_rows():
    p = bounded(0, 2)
    merge = PartitionMerge([p], merged=False, buffer_rows=100)
    batch = pa.record_batch({"ts": np.arange(5), "p": np.zeros(5, np.int64), "o": [0, 0, 0, 1, 1]})
    c = Chunk(batch, np.array([0, 0, 0, 1, 1]), np.array([0, 1, 2, 0, 1]), None, 2, 0)
    merge.push([(p, c, 2, KEY_MIN)], {})
    assert len(rows(merge, budget=2)) == 2 and merge.position() == {"t": {0: [0, 2]}}
    assert len(rows(merge, budget=2)) == 2 and merge.position() == {"t": {0: [1, 1]}}
    assert len(rows(merge, budget=2)) == 1 and merge.position() == {"t": {0: 2}}


def test_dead_letters_go_out_once_even_while_their_rows_wait():
    dead = pa.record_batch({"reason": ["malformed"]})
    slow, fast = live(0), bounded(1, 2)
    merge = PartitionMerge([slow, fast], merged=True, buffer_rows=100)
    merge.push([chunk(slow, [1, 3], 0), chunk(fast, [4, 5], 0, dead=dead)], {})
    pieces, out = merge.build(merge.take(100))         # below partition 0's 3: its 1 alone
    assert [b.num_rows for b, _ in pieces] == [1] and out == [dead]
    slow.high = 2
    merge.push([], {slow: 2})
    pieces, out = merge.build(merge.take(100))
    assert sum(b.num_rows for b, _ in pieces) == 3 and out == []


def test_the_ingest_time_of_a_take_is_its_oldest_rows():
    a, b = bounded(0, 1), bounded(1, 1)
    merge = PartitionMerge([a, b], merged=True, buffer_rows=100)
    merge.push([chunk(a, [1], 0, ingest_ns=200), chunk(b, [2], 0, ingest_ns=100)], {})
    pieces, _ = merge.build(merge.take(10))
    assert [ingest for _, ingest in pieces] == [100]


@pytest.mark.parametrize("seed", range(5))
def test_any_fetch_order_gives_the_same_merged_stream(seed):
    """Rows pushed in random fetch sizes and orders, taken with random budgets, come out in
    the one order (key, partition, offset): the stream does not depend on fetch timing."""
    rng = np.random.default_rng(seed)
    n = [int(x) for x in rng.integers(1, 60, 4)]
    data = [np.sort(rng.integers(0, 30, k)) for k in n]
    parts = [bounded(i, n[i]) for i in range(4)]
    merge = PartitionMerge(parts, merged=True, buffer_rows=10_000)
    sent = [0] * 4
    got: List[Tuple[int, int, int]] = []
    while not merge.finished():
        i = int(rng.integers(0, 4))
        if sent[i] < n[i]:
            k = int(rng.integers(1, n[i] - sent[i] + 1))
            merge.push([chunk(parts[i], data[i][sent[i]:sent[i] + k], sent[i])], {})
            sent[i] += k
        got += rows(merge, budget=int(rng.integers(1, 20)))
    expected = sorted((int(t), i, o) for i in range(4) for o, t in enumerate(data[i]))
    assert got == expected
