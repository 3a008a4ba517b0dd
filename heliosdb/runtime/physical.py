"""The physical plan (what the planner hands the runtime), and how its stages become tasks.

A :class:`PhysicalPlan` is a source and a list of :class:`PhysicalStage`: operators run on one
thread, and fields that say where their output goes and how their input comes.  This module is
the one place those fields are read: :func:`stage_output` turns them into the stage's edges
(:mod:`heliosdb.runtime.edges`), :func:`stage_input` into its input
(:mod:`heliosdb.runtime.gate`).  The mapping:

=======================================  ==========================================================
field(s) set by the planner              part of the runtime
=======================================  ==========================================================
``children``                             :class:`~heliosdb.runtime.edges.Forward` (several: a broadcast)
``children`` + ``partitioner``           :class:`~heliosdb.runtime.edges.HashExchange`
``children`` + ``dispatch``              :class:`~heliosdb.runtime.edges.RoundRobinEdge`
``side_children[tag]``                   :class:`~heliosdb.runtime.edges.SideEdge` (one per tag)
``origin``                               each edge's position among its targets' inputs
``replica``                              :class:`~heliosdb.runtime.gate.ReplicaInput` in,
                                         :class:`~heliosdb.runtime.edges.Answers` out
``resequence`` + ``n_inputs``            :class:`~heliosdb.runtime.gate.ResequencingInput`
``n_inputs``                             :class:`~heliosdb.runtime.gate.InputGate` of n inputs
``sides``                                :class:`~heliosdb.runtime.gate.SidedInput`: a join's two sides
``source_children`` + ``source_dispatch``  the source's edge (forward or round-robin)
``source_inputs``                        a source of several inputs: :class:`~heliosdb.runtime.edges.RoutedEdge`
=======================================  ==========================================================
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..operators.base import Operator
from .edges import Answers, Edge, Forward, HashExchange, Output, RoundRobinEdge, RoutedEdge, SideEdge
from .gate import Entry, InputGate, ReplicaInput, ResequencingInput, SidedInput
from .sequence import RoundRobin


@dataclass
class PhysicalStage:
    """Operators run on one thread, in order; their output goes to the ``children`` stages.

    With a ``partitioner`` the output is split by key hash, part ``i`` to ``children[i]`` (the
    parallel subtasks of a keyed operator), and watermarks go to all.  ``n_inputs`` is the
    number of producers feeding this stage (a merge after parallel subtasks); ``origin`` is this
    stage's position among its children's producers.  ``side_children`` maps a side-output tag
    (``"late"``) to the stages reading it; they get watermarks, ticks and the end too.

    Replicas of a stateless stage (see :mod:`heliosdb.runtime.sequence`): their producer has a
    ``dispatch`` (its ``children`` are the replicas, fed round-robin), each replica is marked
    ``replica`` (it answers every item with one ``Sequenced`` message), and the stage after
    them is marked ``resequence`` (it takes the answers back in the producer's order).

    A stage whose first operator takes two inputs (a join, ``Operator.inputs == 2``) has
    ``sides``: the side (0: left, 1: right) each of its ``n_inputs`` producers feeds, by
    origin; its task hands that operator each batch with its side, and its one watermark is
    the minimum of all its inputs'.

    How these fields become edges and inputs: see the module docstring.
    """

    name: str
    operators: List[Operator]
    children: List[int] = field(default_factory=list)
    partitioner: Optional[Any] = None            # an operators.exchange.HashPartitioner
    n_inputs: int = 1
    origin: int = 0
    side_children: Dict[str, List[int]] = field(default_factory=dict)
    dispatch: Optional[RoundRobin] = None
    replica: bool = False
    resequence: bool = False
    sides: List[int] = field(default_factory=list)

    @property
    def takes_runs(self) -> bool:
        """Whether the stage reads a :class:`~heliosdb.operators.base.Run` as one message: one
        plain input (no merge, no replica protocol)."""
        return self.n_inputs == 1 and not self.replica and not self.resequence

    @property
    def outputs(self) -> List[int]:
        """Every stage this one feeds: its children, then the readers of its side outputs."""
        return self.children + [c for cs in self.side_children.values() for c in cs]


@dataclass
class PhysicalPlan:
    """The source, batched by ``batch_size`` rows or ``batch_timeout_ns``, feeding
    ``source_children`` (round-robin with a ``source_dispatch``), and the stages.

    A source of several inputs (``connectors/composite.py``: the sources of a join) has
    ``source_inputs``, the input each of ``source_children`` reads, and ``input_batching``,
    each input's (batch size, batch timeout ns).
    """

    source: Any                       # a connectors.base.SourceReader
    source_children: List[int]
    stages: List[PhysicalStage]
    batch_size: int
    batch_timeout_ns: int
    source_name: str = "source"
    source_dispatch: Optional[RoundRobin] = None     # the source feeds replicas round-robin
    source_inputs: List[int] = field(default_factory=list)
    input_batching: List[Tuple[int, int]] = field(default_factory=list)


def _edges(children: List[int], side: Dict[str, List[int]], origin: int, inboxes: List[Any],
           stages: List[PhysicalStage], partitioner: Any = None,
           dispatch: Optional[RoundRobin] = None) -> List[Edge]:
    targets = [inboxes[c] for c in children]
    edges: List[Edge] = []
    if dispatch is not None:
        edges.append(RoundRobinEdge(dispatch, targets, origin))
    elif partitioner is not None:
        edges.append(HashExchange(partitioner, targets, origin))
    elif targets:
        edges.append(Forward(targets, origin, all(stages[c].takes_runs for c in children)))
    for tag, cs in side.items():
        if cs:
            edges.append(SideEdge(tag, [inboxes[c] for c in cs], origin))
    return edges


def source_output(plan: PhysicalPlan, inboxes: List[Any]) -> Output:
    """The source's output: to its children, or round-robin to replicas; a source of several
    inputs sends each input's batches to the children reading that input."""
    if plan.source_inputs:
        routes = []
        for i in range(len(plan.input_batching)):
            kids = [c for c, k in zip(plan.source_children, plan.source_inputs) if k == i]
            routes.append(Forward([inboxes[c] for c in kids], 0))
        return Output([RoutedEdge(routes)])
    return Output(_edges(plan.source_children, {}, 0, inboxes, plan.stages,
                         dispatch=plan.source_dispatch))


def stage_input(stage: PhysicalStage, read: Callable[[], Entry]) -> Any:
    """What the stage's task reads (something with ``next()``), from its inbox's ``read``."""
    if stage.replica:
        first = stage.operators[0] if stage.operators else None
        return ReplicaInput(read, first.seek_rows if first is not None else None)
    if stage.resequence:
        return ResequencingInput(stage.n_inputs, read, stage.name)
    if stage.sides:
        return SidedInput(InputGate(stage.n_inputs, read), stage.sides)
    return InputGate(stage.n_inputs, read)


def stage_output(plan: PhysicalPlan, index: int, inboxes: List[Any], input_: Any) -> Output:
    """Stage ``index``'s output: its edges, or a replica's answers to the stage after it.

    Examples
    --------
    A window step whose late rows go to a stage of their own:

    >>> from heliosdb.runtime.channel import Channel
    >>> stages = [PhysicalStage("window", [], children=[1], side_children={"late": [2]}),
    ...           PhysicalStage("sink", []), PhysicalStage("late-sink", [])]
    >>> plan = PhysicalPlan(None, [0], stages, batch_size=100, batch_timeout_ns=10**8)
    >>> inboxes = [Channel(100, st.name) for st in stages]
    >>> [type(e).__name__ for e in stage_output(plan, 0, inboxes, None).edges]
    ['Forward', 'SideEdge']
    """
    st = plan.stages[index]
    if st.replica:
        return Answers([inboxes[c] for c in st.children], st.origin, input_)
    return Output(_edges(st.children, st.side_children, st.origin, inboxes, plan.stages,
                         st.partitioner, st.dispatch))


def reader(inbox: Any, waiter: Any) -> Callable[[], Entry]:
    """``inbox.get`` for the task whose statistics are ``waiter`` (its idle time is counted)."""
    return functools.partial(inbox.get, waiter)
