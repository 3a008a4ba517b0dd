"""Inputs of a task, without a job: the input gate (barrier alignment, minimum watermark, end of
input over any number of inputs), a replica's input and the resequencing input.

Each timeline lists entries as they are read: ``name@input``.
"""
from __future__ import annotations

import pyarrow as pa
import pytest

from heliosdb.errors import DataError, ExecutionError
from heliosdb.operators.base import WATERMARK_MAX, Barrier, Tick, Watermark
from heliosdb.runtime.channel import END
from heliosdb.runtime.gate import InputGate, ReplicaInput, ResequencingInput
from heliosdb.runtime.sequence import Sequenced


def batch(name: str, rows: int = 1) -> pa.RecordBatch:
    return pa.record_batch({"name": [name] * rows})


def entries(*items):
    """(item, origin) pairs as channel entries, rows counted as a channel would."""
    out = []
    for item, origin in items:
        rows = item.num_rows if isinstance(item, pa.RecordBatch) else 0
        out.append((item, rows, 1_000, origin))
    return iter(out).__next__


def drain(gate) -> list:
    """Everything the gate gives until the end (the end included), as names."""
    out = []
    while True:
        item = gate.next()[0]
        out.append(_name(item))
        if item is END:
            return out


def _name(item) -> str:
    if isinstance(item, pa.RecordBatch):
        return item.column(0)[0].as_py()
    if isinstance(item, Watermark):
        return f"w{item.t}"
    if isinstance(item, Barrier):
        return f"B{item.epoch}"
    if isinstance(item, Tick):
        return f"t{item.now}"
    return repr(item)


# -- barrier alignment ---------------------------------------------------------------------------
def test_barrier_waits_for_all_three_inputs_and_what_came_after_it_follows():
    #   input 0:  B1  a  c
    #   input 1:  x  B1  d
    #   input 2:  y  B1
    #   out:      x  y  B1  a  c  d    (a, c and d waited behind the barrier)
    read = entries((Barrier(1), 0), (batch("a"), 0), (batch("x"), 1), (Barrier(1), 1),
                   (batch("c"), 0), (batch("d"), 1), (batch("y"), 2), (Barrier(1), 2),
                   (END, 0), (END, 1), (END, 2))
    assert drain(InputGate(3, read)) == ["x", "y", "B1", "a", "c", "d", "END"]


def test_barrier_comes_out_once_with_no_rows():
    read = entries((Barrier(7), 0), (Barrier(7), 1), (END, 0), (END, 1))
    gate = InputGate(2, read)
    assert gate.next() == (Barrier(7), 0, 0, 0)
    assert gate.next()[0] is END


def test_a_second_barrier_from_an_aligned_input_waits_for_the_first():
    #   input 0:  B1  a  B2  b
    #   input 1:  c  B1  B2
    #   out:      c  B1  a  B2  b
    read = entries((Barrier(1), 0), (batch("a"), 0), (Barrier(2), 0), (batch("b"), 0),
                   (batch("c"), 1), (Barrier(1), 1), (Barrier(2), 1), (END, 0), (END, 1))
    assert drain(InputGate(2, read)) == ["c", "B1", "a", "B2", "b", "END"]


def test_an_input_that_ended_does_not_hold_a_barrier_back():
    #   input 0:  a  END
    #   input 1:  B1  b
    #   input 2:  B1
    read = entries((batch("a"), 0), (END, 0), (Barrier(1), 1), (batch("b"), 1), (Barrier(1), 2),
                   (END, 1), (END, 2))
    assert drain(InputGate(3, read)) == ["a", "B1", "b", "END"]


def test_an_input_ending_completes_the_barrier_the_others_delivered():
    #   input 0:  B1  a  END    (a and the end wait behind the barrier)
    #   input 1:  END           -> B1 (every open input delivered it), then a, then the end
    read = entries((Barrier(1), 0), (batch("a"), 0), (END, 0), (END, 1))
    assert drain(InputGate(2, read)) == ["B1", "a", "END"]


def test_end_comes_once_every_input_ended_and_nothing_is_read_after_it():
    read = entries((batch("a"), 0), (END, 1), (batch("b"), 0), (END, 0))
    gate = InputGate(2, read)
    assert drain(gate) == ["a", "b", "END"]
    assert gate.next()[0] is END            # read() is exhausted: the gate does not call it again


# -- watermarks ----------------------------------------------------------------------------------
def test_watermark_is_the_minimum_over_the_inputs_and_only_rises():
    #   input 0:  w10            w30
    #   input 1:       w20            w5 (behind its own: ignored)  w40
    #   input 2:            w15                                          w35
    #   out:                w10  w15                                     w30
    read = entries((Watermark(10), 0), (Watermark(20), 1), (Watermark(15), 2), (Watermark(30), 0),
                   (Watermark(5), 1), (Watermark(40), 1), (Watermark(35), 2),
                   (END, 0), (END, 1), (END, 2))
    gate = InputGate(3, read)
    assert drain(gate) == ["w10", "w15", "w30", "END"]
    assert gate.watermark == 30


def test_equal_watermarks_from_several_inputs_pass_once():
    # a tie: both inputs reach 50; the minimum rises to 50 once
    read = entries((Watermark(50), 0), (Watermark(50), 1), (Watermark(50), 0), (END, 0), (END, 1))
    assert drain(InputGate(2, read)) == ["w50", "END"]


def test_an_input_ending_without_a_final_watermark_keeps_holding_the_minimum():
    # input 1 ends at w20 (a stop without draining): the minimum stays at 20 however far input
    # 0 goes; a bounded source ends with WATERMARK_MAX, which lets the minimum go on
    read = entries((Watermark(20), 1), (END, 1), (Watermark(100), 0), (END, 0))
    assert drain(InputGate(2, read)) == ["w20", "END"]
    read = entries((Watermark(20), 1), (Watermark(WATERMARK_MAX), 1), (END, 1), (Watermark(100), 0),
                   (END, 0))
    assert drain(InputGate(2, read)) == ["w100", "END"]


def test_watermark_keeps_the_ingest_of_the_entry_that_raised_it():
    read = iter([(Watermark(3), 0, 11, 0), (Watermark(4), 0, 22, 1)]).__next__
    assert InputGate(2, read).next() == (Watermark(3), 0, 22, 1)


def test_watermarks_behind_a_barrier_wait_with_the_rest_of_their_input():
    #   input 0:  B1  w50
    #   input 1:  w40  B1
    read = entries((Watermark(10), 0), (Barrier(1), 0), (Watermark(50), 0), (Watermark(40), 1),
                   (Barrier(1), 1), (END, 0), (END, 1))
    assert drain(InputGate(2, read)) == ["w10", "B1", "w40", "END"]


# -- ticks, one input ----------------------------------------------------------------------------
def test_ticks_pass_from_input_zero_only():
    read = entries((Tick(1), 0), (Tick(1), 1), (Tick(2), 1), (Tick(2), 0), (END, 0), (END, 1))
    assert drain(InputGate(2, read)) == ["t1", "t2", "END"]


def test_one_input_passes_every_item_as_it_comes():
    read = entries((Watermark(5), 0), (Watermark(5), 0), (Watermark(3), 0), (Barrier(1), 0),
                   (batch("a"), 0), (END, 0))
    assert drain(InputGate(1, read)) == ["w5", "w5", "w3", "B1", "a", "END"]


def test_a_gate_needs_an_input():
    with pytest.raises(ValueError, match="at least one input"):
        InputGate(0, lambda: None)


# -- replicas ------------------------------------------------------------------------------------
def test_replica_input_numbers_its_items_and_seeks_before_each_but_a_barrier():
    read = iter([(Sequenced(4, [batch("a")], offset=10), 1, 5, 0),
                 (Sequenced(5, [Barrier(1)], offset=11), 0, 0, 0),
                 (Sequenced(6, [Watermark(9)], offset=11), 0, 6, 0),
                 (END, 0, 0, 0)]).__next__
    seeks = []
    r = ReplicaInput(read, seeks.append)
    got = []
    while True:
        item, rows, ingest, _ = r.next()
        if item is END:
            break
        got.append((_name(item), rows, ingest, r.seq))
    assert got == [("a", 1, 5, 4), ("B1", 0, 0, 5), ("w9", 0, 6, 6)]
    assert seeks == [10, 11]


def test_answers_come_out_in_the_producers_order_with_one_copy_of_a_broadcast():
    #   answers read: r1:1  r0:0  r0:2  r1:2  r0:3   ->   0  1  2 (once)  3
    read = iter([(Sequenced(1, [batch("b")]), 1, 0, 1), (Sequenced(0, [batch("a")]), 1, 0, 0),
                 (Sequenced(2, [Watermark(7)]), 0, 0, 0), (Sequenced(2, [Watermark(7)]), 0, 0, 1),
                 (Sequenced(3, [batch("c"), batch("d")]), 2, 0, 0),
                 (END, 0, 0, 0), (END, 0, 0, 1)]).__next__
    assert drain(ResequencingInput(2, read)) == ["a", "b", "w7", "c", "d", "END"]


def test_an_answer_holding_an_error_raises_it_after_the_items_before_it():
    err = DataError("bad record")
    read = iter([(Sequenced(1, [], error=err), 0, 0, 1), (Sequenced(0, [batch("a")]), 1, 0, 0)]).__next__
    r = ResequencingInput(2, read)
    assert _name(r.next()[0]) == "a"
    with pytest.raises(DataError, match="bad record"):
        r.next()


def test_answers_missing_at_the_end_are_an_engine_bug():
    read = iter([(Sequenced(1, [batch("b")]), 1, 0, 1), (END, 0, 0, 0), (END, 0, 0, 1)]).__next__
    with pytest.raises(ExecutionError, match="1 replica answers never came"):
        ResequencingInput(2, read, "merge").next()
