"""Replicas of stateless operators: the plan's last pass.

An operator that runs as copies of itself (``parallel_kind == "replicas"``: a fused kernel, or a
window's pre-aggregation, see :mod:`heliosdb.operators.preagg`) and that the parallelism pass
gave ``parallel = n > 1`` runs as ``n`` replica stages made by ``replica(i)``.  Its stage is
cut in three::

    [prefix ops] --round-robin--> n x [replicated ops] --in order--> [suffix ops]

The producer of the replicas numbers what it emits (``heliosdb.runtime.sequence``); the stage
after them releases their answers in that order, so what follows sees exactly the stream one
copy would have produced: same batches, watermarks, barriers, errors.  Consecutive marked
operators with the same ``n`` share replicas.  Where nothing precedes them, the source or the
stage before dispatches directly, and where nothing follows, the next stage takes the
answers: no thread is added for an empty part.
"""
from __future__ import annotations

import re
from typing import List, Optional, Set, Tuple

from ..operators.base import Operator
from ..runtime.physical import PhysicalPlan, PhysicalStage
from ..runtime.sequence import RoundRobin


def _copies(op: Operator) -> int:
    """How many replicas ``op`` runs as (1: it runs once, as it is)."""
    return op.parallel if op.parallel_kind == "replicas" and op.parallel > 1 else 1


def _run(ops: List[Operator]) -> Optional[Tuple[int, int, int]]:
    """(start, end, n) of the first run of operators to replicate ``n`` times."""
    for a, op in enumerate(ops):
        n = _copies(op)
        if n > 1:
            b = a + 1
            while b < len(ops) and _copies(ops[b]) == n:
                b += 1
            return a, b, n
    return None


class _Replicator:
    def __init__(self, plan: PhysicalPlan):
        self.plan = plan
        self.stages = plan.stages
        self.dead: Set[int] = set()

    def _producers(self, s: int) -> List[int]:
        return [j for j, st in enumerate(self.stages) if j not in self.dead and
                (s in st.children or any(s in cs for cs in st.side_children.values()))]

    def _can_feed_directly(self, s: int) -> Optional[int]:
        """The one producer of stage ``s`` that can dispatch to replicas itself: -1 for the
        source, a stage index, or None (a new dispatching stage is needed)."""
        producers = self._producers(s)
        if not producers and self.plan.source_children == [s] and self.plan.source_dispatch is None:
            return -1
        if len(producers) == 1 and s not in self.plan.source_children:
            p = self.stages[producers[0]]
            if (p.children == [s] and not p.side_children and p.partitioner is None
                    and p.dispatch is None and not p.replica):
                return producers[0]
        return None

    def _takes_answers(self, s: int) -> Optional[int]:
        """The next stage, if it can take the replicas' answers itself (stage ``s`` keeps no
        operator after the replicated ones and only feeds that stage)."""
        st = self.stages[s]
        if st.operators or st.side_children or st.partitioner is not None or len(st.children) != 1:
            return None
        c = st.children[0]
        nxt = self.stages[c]
        if nxt.n_inputs != 1 or nxt.resequence or nxt.replica or self._producers(c) != [s]:
            return None
        return c

    def split(self, s: int, a: int, b: int, n: int) -> None:
        st = self.stages[s]
        ops = st.operators
        prefix, run, suffix = ops[:a], ops[a:b], ops[b:]
        feeder = None if prefix else self._can_feed_directly(s)
        producers = self._producers(s)                # before the replicas become producers
        inputs, in_order = st.n_inputs, st.resequence  # how this stage takes its input
        from_source = s in self.plan.source_children
        replicas = []
        for i in range(n):
            copies = [op.replica(i) for op in run]
            for c in copies:
                c.parallel = 1
            self.stages.append(PhysicalStage(copies[0].name, copies, replica=True, origin=i))
            replicas.append(len(self.stages) - 1)
        # The consumer side: the next stage, or this one with the suffix.
        st.operators = suffix
        merge = self._takes_answers(s)
        if merge is None:
            merge, producer_side = s, None
            st.n_inputs, st.resequence = n, True
        else:
            nxt = self.stages[merge]
            nxt.n_inputs, nxt.resequence = n, True
            producer_side = s                          # this stage is free for the prefix
        for r in replicas:
            self.stages[r].children = [merge]
        # The producer side: dispatch from the producer itself, or from a stage with the prefix.
        if feeder is not None:
            if feeder == -1:
                self.plan.source_children = replicas
                self.plan.source_dispatch = RoundRobin(n)
            else:
                p = self.stages[feeder]
                p.children, p.dispatch = replicas, RoundRobin(n)
            if producer_side is not None:
                self.dead.add(s)
            return
        if producer_side is None:
            self.stages.append(PhysicalStage(f"{st.name}.dispatch", []))
            producer_side = len(self.stages) - 1
            for j in producers:
                p = self.stages[j]
                p.children = [producer_side if c == s else c for c in p.children]
                for tag, cs in p.side_children.items():
                    p.side_children[tag] = [producer_side if c == s else c for c in cs]
            if from_source:
                self.plan.source_children = [producer_side if c == s else c
                                             for c in self.plan.source_children]
        d = self.stages[producer_side]
        d.operators, d.children, d.side_children = prefix, replicas, {}
        d.partitioner, d.dispatch, d.n_inputs, d.resequence = None, RoundRobin(n), inputs, in_order
        if d is not st:
            # The prefix's operators emit the side outputs (late rows), and a join first in
            # the stage reads two sides: both move with them.
            d.side_children, st.side_children = st.side_children, {}
            d.sides, st.sides = st.sides, []
            d.origin = st.origin

    def renumber(self) -> None:
        """Drop unused stages; number the rest in data-flow order (what explain() lists)."""
        order: List[int] = []
        seen: Set[int] = set()
        queue = list(self.plan.source_children)
        while queue:
            i = queue.pop(0)
            if i in seen or i in self.dead:
                continue
            seen.add(i)
            order.append(i)
            st = self.stages[i]
            queue.extend(st.children)
            for cs in st.side_children.values():
                queue.extend(cs)
        new = {old: k for k, old in enumerate(order)}
        stages = []
        for k, old in enumerate(order):
            st = self.stages[old]
            if re.fullmatch(r"stage-\d+", st.name):
                st.name = f"stage-{k}"
            st.children = [new[c] for c in st.children]
            st.side_children = {t: [new[c] for c in cs] for t, cs in st.side_children.items()}
            stages.append(st)
        self.plan.stages[:] = stages
        self.plan.source_children = [new[c] for c in self.plan.source_children]


def replicate(plan: PhysicalPlan) -> PhysicalPlan:
    """Cut every stage holding operators marked for replicas (see the module docstring)."""
    r = _Replicator(plan)
    i = 0
    changed = False
    while i < len(r.stages):
        run = None if i in r.dead else _run(r.stages[i].operators)
        if run is None:
            i += 1
            continue
        r.split(i, *run)
        changed = True
    if changed:
        r.renumber()
    return plan
