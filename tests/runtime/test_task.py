"""The task loop, without a job: items through the operators and out through the edges, a
barrier's snapshot and acknowledgement, the end, a failure, and a replica's answers."""
from __future__ import annotations

import pyarrow as pa
import pytest

from heliosdb.errors import DataError
from heliosdb.metrics import JobMetrics, TaskStats
from heliosdb.operators.base import Barrier, Operator, Snapshot, Watermark
from heliosdb.runtime.chain import Chain, StepFailed
from heliosdb.runtime.channel import END
from heliosdb.runtime.edges import Answers, Forward, Output
from heliosdb.runtime.gate import ReplicaInput
from heliosdb.runtime.sequence import Sequenced
from heliosdb.runtime.task import StageTask

B = pa.record_batch({"x": [1, 2, 3]})


class Target:
    def __init__(self):
        self.items = []

    def put(self, item, rows=0, ingest_ns=0, origin=0, waiter=None):
        self.items.append(item)


class Counting(Operator):
    """Stateful: counts rows; its snapshot says at which epoch it was taken."""

    kind = "counting"
    stateful = True

    def __init__(self, name="count", fail_on=None, flush=(Watermark(99),)):
        self.name = name
        self.flush = list(flush)
        self.rows = 0
        self.fail_on = fail_on
        self.calls = []

    def process_batch(self, batch):
        if self.fail_on is not None and self.rows >= self.fail_on:
            raise ZeroDivisionError("boom")
        self.rows += batch.num_rows
        return [batch]

    def snapshot(self):
        self.calls.append(("snapshot", self.snapshot_epoch, self.rows))
        return Snapshot(meta={"rows": self.rows})

    def close(self):
        self.calls.append("close")
        return self.flush

    def abort(self):
        self.calls.append("abort")


def task(entries, op, output, ack=None):
    metrics = JobMetrics("test-task")
    chain = Chain([op], metrics, 10**12)
    return StageTask("stage-1", chain, iter(entries).__next__, output, TaskStats("t", []), metrics, ack)


def test_items_go_through_the_operators_and_out_then_the_flush_and_the_end():
    out = Target()
    op = Counting()
    task([(B, 3, 0, 0), (Watermark(5), 0, 0, 0), (END, 0, 0, 0)], op, Output([Forward([out])])).run()
    assert out.items == [B, Watermark(5), Watermark(99), END]
    assert op.calls == ["close"]


def test_a_barrier_snapshots_at_its_epoch_acknowledges_and_passes_on():
    out, acks = Target(), []
    op = Counting()
    entries = [(B, 3, 0, 0), (Barrier(4), 0, 0, 0), (B, 3, 0, 0), (END, 0, 0, 0)]
    task(entries, op, Output([Forward([out])]), lambda *a: acks.append(a)).run()
    assert op.calls[0] == ("snapshot", 4, 3)         # the state after the first batch only
    (stage, epoch, snaps, pause), = acks
    assert (stage, epoch, snaps[0][0], snaps[0][1].meta) == ("stage-1", 4, op, {"rows": 3})
    assert out.items[:3] == [B, Barrier(4), B]


def test_a_failing_operator_aborts_the_stage_and_the_error_names_the_step():
    op = Counting(fail_on=3)
    t = task([(B, 3, 0, 0), (B, 3, 0, 0), (END, 0, 0, 0)], op, Output([Forward([Target()])]))
    with pytest.raises(StepFailed) as info:
        t.run()
    assert info.value.step == "count" and isinstance(info.value.error, ZeroDivisionError)
    assert op.calls == ["abort"]
    assert t.stats.finished_ns >= t.stats.started_ns > 0


def test_a_replica_answers_every_item_with_its_output_or_its_error():
    merge = Target()
    op = Counting(name="count#1", fail_on=3, flush=())
    read = iter([(Sequenced(0, [B], offset=0), 3, 0, 0), (Sequenced(1, [B], offset=3), 3, 0, 0),
                 (END, 0, 0, 0)]).__next__
    inp = ReplicaInput(read, op.seek_rows)
    metrics = JobMetrics("test-replica")
    StageTask("count#1", Chain([op], metrics, 10**12), inp.next, Answers([merge], 1, inp),
              TaskStats("r", []), metrics).run()
    ok, failed, end = merge.items
    assert (ok.seq, ok.items) == (0, [B])
    assert failed.seq == 1 and failed.error.step == "count" and not failed.items
    assert end is END


def test_a_helios_error_in_a_stage_is_raised_as_it_is():
    class Bad(Operator):
        name = "bad"

        def process_batch(self, batch):
            raise DataError("record 3 is bad")

    metrics = JobMetrics("test-bad")
    t = StageTask("s", Chain([Bad()], metrics, 10**12), iter([(B, 3, 0, 0)]).__next__, Output([]),
                  TaskStats("t", []), metrics)
    with pytest.raises(DataError, match="record 3"):
        t.run()
