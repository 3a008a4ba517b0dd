"""A two-input test operator for the join plumbing, without the join operators.

:class:`SideTagger` takes the place of a join: every row of either side leaves at once in
the join's output schema (its own side's columns filled, the other side's null, coalesced keys
from whichever side it is), with two more columns: ``side`` (0 left, 1 right) and ``n``, how
many rows of the same key and side came before it (its state, snapshotted and restored by key,
so a restore into another parallelism continues the counts).  A row whose event time (when
its side has one) is behind the join's watermark leaves instead as a late row, to
``late_output(side)``.  ``install(monkeypatch)`` makes the planner build it for every join;
``BUILT`` lists the instances built.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from heliosdb.operators.base import Item, Operator, SideOutput, Snapshot
from heliosdb.planner import join as planner_join

_join_columns = planner_join.join_columns
#: The two columns the tagger adds to the join's output.
EXTRA = [(pa.field("side", pa.int8()), None, None), (pa.field("n", pa.int64()), None, None)]


class SideTagger(Operator):
    kind = "side_tagger"
    inputs = 2
    stateful = True
    parallel_kind = "by_key"

    def __init__(self, node, left: pa.Schema, right: pa.Schema, times: Tuple[Optional[str], Optional[str]]):
        self.name = node.name
        step, types = node.step, planner_join.key_types(node, left, right)
        self.times = times
        self.max_seen = [None, None]
        self.step = step
        self.types = types
        self.columns = _join_columns(node, left, right, *times)
        self.output_schema = pa.schema([c[0] for c in self.columns + EXTRA])
        self.counts: Dict[Tuple, int] = {}
        self.watermarks: List[int] = []
        self.seen_at_watermark: List[Tuple] = []      # each side's largest event time then

    def _keys(self, side: int, batch: pa.RecordBatch) -> List[pa.Array]:
        names = self.step.left_on if side == 0 else self.step.right_on
        return [batch.column(k).cast(t) for k, t in zip(names, self.types)]

    def process_side(self, side: int, batch: pa.RecordBatch) -> List[Item]:
        late: List[Item] = []
        time = self.times[side]
        if time is not None:
            ns = pc.multiply(batch.column(time).cast(pa.int64()), 1_000_000)
            if self.watermarks:
                behind = pc.less(ns, self.watermarks[-1])
                if pc.any(behind).as_py():
                    late = [SideOutput(f"late_{'left' if side == 0 else 'right'}", batch.filter(behind))]
                    batch = batch.filter(pc.invert(behind))
            if batch.num_rows:
                top = pc.max(ns).as_py()
                self.max_seen[side] = max(self.max_seen[side] or top, top)
        keys = self._keys(side, batch)
        left_keys = dict(zip(self.step.left_on, range(len(self.step.left_on))))
        cols = []
        for f, s, c in self.columns:
            if s == side:
                cols.append(batch.column(c))
            elif s == 0 and self.step.coalesce_keys and f.name in left_keys:
                cols.append(keys[left_keys[f.name]])
            else:
                cols.append(pa.nulls(batch.num_rows, f.type))
        rows = list(zip(*[k.to_pylist() for k in keys])) if keys else []
        n = []
        for r in rows:
            k = (side,) + r
            n.append(self.counts.get(k, 0))
            self.counts[k] = n[-1] + 1
        cols += [pa.array([side] * batch.num_rows, pa.int8()), pa.array(n, pa.int64())]
        return late + [pa.RecordBatch.from_arrays(cols, schema=self.output_schema)]

    def on_watermark(self, t: int) -> List[Item]:
        self.watermarks.append(t)
        self.seen_at_watermark.append(tuple(self.max_seen))
        return super().on_watermark(t)

    def snapshot(self) -> Snapshot:
        names = list(self.step.left_on)
        items = sorted(self.counts.items())
        data = {k: pa.array([key[1 + j] for key, _ in items], t)
                for j, (k, t) in enumerate(zip(names, self.types))}
        data["side"] = pa.array([key[0] for key, _ in items], pa.int8())
        data["count"] = pa.array([c for _, c in items], pa.int64())
        return Snapshot({"counts": pa.table(data)}, {})

    def restore(self, tables, metas, select=None, first=True, owned=False) -> None:
        t = tables.get("counts")
        if t is None:
            return
        if select is not None:
            t = t.filter(pa.array(select(t)))
        names = list(self.step.left_on)
        for row in t.to_pylist():
            self.counts[(row["side"],) + tuple(row[k] for k in names)] = row["count"]

    def state_size_bytes(self) -> int:
        return 64 * len(self.counts)


#: Every tagger built (the tests read their watermarks).
BUILT: List[SideTagger] = []


def build(node, left, right, left_time, right_time, ttl_ns, max_bytes, backend=None) -> Operator:
    op = SideTagger(node, left, right, (left_time, right_time))
    BUILT.append(op)
    return op


def columns(node, left, right, left_time, right_time):
    return _join_columns(node, left, right, left_time, right_time) + EXTRA


def install(monkeypatch) -> None:
    """Make the planner build a :class:`SideTagger` for every join (and type its output)."""
    BUILT.clear()
    monkeypatch.setattr(planner_join, "build_operator", build)
    monkeypatch.setattr(planner_join, "join_columns", columns)
