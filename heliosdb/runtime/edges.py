"""Edges: how what a task emits reaches the inputs of the tasks after it.

A task's output is a list of edges (an :class:`Output`); each edge is one object with one
``send(item, ingest_ns, waiter)``, and decides by itself where an item goes:

- :class:`Forward`: every item to every target (one target: a plain pipe; several: a
  broadcast to several children);
- :class:`SideEdge`: the ``SideOutput`` items of one tag (``"late"``), as batches, to the stages
  reading that side output;
- :class:`HashExchange`: each batch split by the hash of its key columns, part ``i`` to
  target ``i`` (the parallel subtasks of a keyed step);
- :class:`RoundRobinEdge`: each batch to one replica in turn, numbered so the stage after the
  replicas can put their answers back in order (:mod:`heliosdb.runtime.sequence`);
- :class:`RoutedEdge`: a source of several inputs (the sources of a join) sends each batch
  to its own input's stages, through one edge per input.

Whatever the edge, *control items* (watermarks, ticks, checkpoint barriers and the end of
input :data:`~heliosdb.runtime.channel.END`) go to every target, in the order they were
emitted; a side output goes only where its tag goes; anything else is *data*: a record batch
or an item that travels like one (it has ``num_rows``, e.g. pre-aggregated window partials).

A target is anything with ``put(item, rows, ingest_ns, origin, waiter)`` (a
:class:`~heliosdb.runtime.channel.Channel` here); ``origin`` is the edge's position among the
target's inputs, ``waiter`` the sending task's statistics (its blocked time is counted).  An
edge holds no serialisation: a target that crosses a process encodes what it is given.
"""
from __future__ import annotations

import re
import time
from typing import Any, List, Protocol, Sequence

import pyarrow as pa

from ..connectors.composite import Tagged
from ..errors import ExecutionError, HeliosError
from ..operators.base import Barrier, Run, SideOutput, Tick, Watermark
from ..operators.exchange import HashPartitioner, Partitioned
from .chain import StepFailed, is_run
from .channel import END, End
from .sequence import RoundRobin, Sequenced

#: Items every target of an edge gets (not data).
CONTROL = frozenset((Watermark, Tick, Barrier, End))


class Target(Protocol):
    """The input side an edge sends to: a local channel, or later one that crosses a process
    (it then encodes ``item``, e.g. an Arrow batch as IPC, however it likes)."""

    def put(self, item: Any, rows: int = 0, ingest_ns: int = 0, origin: int = 0,
            waiter: Any = None) -> None: ...


class Edge:
    """One output of a task: ``send`` routes each item to some of ``targets``.

    ``takes_runs``: whether a :class:`~heliosdb.operators.base.Run` (a batch cut by
    watermarks, sent as one message) may go through it as one item.
    """

    takes_runs = False

    def __init__(self, targets: Sequence[Target], origin: int = 0):
        self.targets = list(targets)
        self.origin = origin

    def send(self, item: Any, ingest_ns: int, waiter: Any = None) -> None:  # pragma: no cover
        """Route ``item`` (ingested at ``ingest_ns``) to some targets; ``waiter``: the sending
        task's statistics."""
        raise NotImplementedError(f"{type(self).__name__} must define send(item, ingest_ns, waiter)")

    def _broadcast(self, item: Any, ingest_ns: int, waiter: Any) -> None:
        for t in self.targets:
            t.put(item, 0, ingest_ns, self.origin, waiter)


class Forward(Edge):
    """Every item but side outputs to every target (a broadcast when there are several).

    Examples
    --------
    >>> from heliosdb.runtime.channel import Channel
    >>> a, b = Channel(100, "a"), Channel(100, "b")
    >>> edge = Forward([a, b])
    >>> edge.send(pa.record_batch({"x": [1, 2]}), ingest_ns=0)
    >>> edge.send(Watermark(5), ingest_ns=0)
    >>> a.rows, b.get()[0].num_rows, b.get()[0]
    (2, 2, Watermark(t=5))
    """

    def __init__(self, targets: Sequence[Target], origin: int = 0, takes_runs: bool = False):
        super().__init__(targets, origin)
        self.takes_runs = takes_runs

    def send(self, item: Any, ingest_ns: int, waiter: Any = None) -> None:
        t = type(item)
        if t is SideOutput:
            return
        rows = 0 if t in CONTROL else item.num_rows
        for target in self.targets:
            target.put(item, rows, ingest_ns, self.origin, waiter)


class SideEdge(Edge):
    """The side output ``tag`` of a task (its batches), and its control items, to ``targets``.

    Examples
    --------
    >>> from heliosdb.runtime.channel import Channel
    >>> late = Channel(100, "late")
    >>> edge = SideEdge("late", [late])
    >>> batch = pa.record_batch({"x": [1]})
    >>> for item in (batch, SideOutput("other", batch), SideOutput("late", batch), Watermark(3)):
    ...     edge.send(item, ingest_ns=0)
    >>> late.get()[0].num_rows, late.get()[0]
    (1, Watermark(t=3))
    """

    def __init__(self, tag: str, targets: Sequence[Target], origin: int = 0):
        super().__init__(targets, origin)
        self.tag = tag

    def send(self, item: Any, ingest_ns: int, waiter: Any = None) -> None:
        t = type(item)
        if t is SideOutput:
            if item.tag == self.tag:
                for target in self.targets:
                    target.put(item.batch, item.num_rows, ingest_ns, self.origin, waiter)
        elif t in CONTROL:
            self._broadcast(item, ingest_ns, waiter)


class HashExchange(Edge):
    """Each batch to the targets by the hash of its key columns: target ``i`` gets a
    :class:`~heliosdb.operators.exchange.Partitioned` (the batch and every row's part), and
    takes its rows out on its own thread (``resolve()``); a target with no rows of a batch
    gets nothing.  Only record batches can be split: another data item (e.g. window partials)
    is refused with an error.

    Examples
    --------
    >>> from heliosdb.runtime.channel import Channel
    >>> batch = pa.record_batch({"k": [1, 2, 3, 4, 5, 6]})
    >>> subtasks = [Channel(100, "s0"), Channel(100, "s1")]
    >>> HashExchange(HashPartitioner(batch.schema, ["k"], 2, "doc"), subtasks).send(batch, 0)
    >>> sum(ch.get()[0].resolve().num_rows for ch in subtasks)
    6
    """

    def __init__(self, partitioner: HashPartitioner, targets: Sequence[Target], origin: int = 0):
        super().__init__(targets, origin)
        self.partitioner = partitioner

    def send(self, item: Any, ingest_ns: int, waiter: Any = None) -> None:
        t = type(item)
        if t in CONTROL:
            self._broadcast(item, ingest_ns, waiter)
            return
        if t is SideOutput:
            return
        if t is not pa.RecordBatch:
            msg = (f"a {t.__name__} cannot be hash-partitioned by {self.partitioner.keys}: only "
                   "record batches can be split by key (an engine bug: the planner put a hash "
                   "exchange after a step that emits partial results)")
            raise ExecutionError(msg)
        parts, counts = self.partitioner.assign(item)
        for p, rows in enumerate(counts.tolist()):
            if rows:
                self.targets[p].put(Partitioned(item, parts, p), rows, ingest_ns, self.origin, waiter)


class RoundRobinEdge(Edge):
    """To the replicas of a stateless stage: each data item to one replica in turn; control
    items (but the end) to all of them, with the same number: a replica answers every item
    with one message, and the stage after the replicas releases the answers in this order
    (see :mod:`heliosdb.runtime.sequence`).

    Examples
    --------
    >>> from heliosdb.runtime.channel import Channel
    >>> replicas = [Channel(100, "r0"), Channel(100, "r1")]
    >>> edge = RoundRobinEdge(RoundRobin(2), replicas)
    >>> b = pa.record_batch({"x": [1]})
    >>> for item in (b, b, Watermark(1)):
    ...     edge.send(item, ingest_ns=0)
    >>> [m.seq for m, *_ in replicas[0]._q], [m.seq for m, *_ in replicas[1]._q]
    ([0, 2], [1, 2])
    """

    def __init__(self, dispatch: RoundRobin, targets: Sequence[Target], origin: int = 0):
        super().__init__(targets, origin)
        self.dispatch = dispatch

    def send(self, item: Any, ingest_ns: int, waiter: Any = None) -> None:
        t = type(item)
        if t is SideOutput:
            return
        if t is End:
            self._broadcast(item, 0, waiter)
            return
        is_batch = t not in CONTROL
        rows = item.num_rows if is_batch else 0
        msg, to = self.dispatch.route(is_batch, rows)
        msg.items.append(item)
        targets = self.targets
        for p in to:
            targets[p].put(msg, rows, ingest_ns, self.origin, waiter)


class RoutedEdge(Edge):
    """The output of a source of several inputs (``connectors/composite.py``): a batch of
    input ``i`` (a :class:`~heliosdb.connectors.composite.Tagged` item) through ``routes[i]``,
    the edge to that input's stages; a tagged watermark (the end of input ``i``) through
    ``routes[i]`` alone; any other control item through every route.  An input whose final
    watermark went out gets no other watermark.

    Examples
    --------
    >>> from heliosdb.connectors.composite import Tagged
    >>> from heliosdb.runtime.channel import Channel
    >>> left, right = Channel(100, "left"), Channel(100, "right")
    >>> edge = RoutedEdge([Forward([left]), Forward([right])])
    >>> edge.send(Tagged(1, pa.record_batch({"x": [1, 2]})), ingest_ns=0)
    >>> edge.send(Watermark(5), ingest_ns=0)
    >>> left.rows, right.rows, left.get()[0], right.get()[0].num_rows
    (0, 2, Watermark(t=5), 2)
    """

    def __init__(self, routes: Sequence[Edge]):
        super().__init__([t for e in routes for t in e.targets])
        self.routes = list(routes)
        self._ended = [False] * len(self.routes)

    def send(self, item: Any, ingest_ns: int, waiter: Any = None) -> None:
        t = type(item)
        if t is Tagged:
            inner = item.batch
            if type(inner) is Watermark:
                self._ended[item.index] = True
            self.routes[item.index].send(inner, ingest_ns, waiter)
            return
        for route, ended in zip(self.routes, self._ended):
            if not (ended and t is Watermark):
                route.send(item, ingest_ns, waiter)


class Output:
    """What a task emits, through its edges in order.

    ``emit(items, ...)`` sends each item through every edge; when every edge lets a run
    through and ``items`` is a batch cut by watermarks, they go as one
    :class:`~heliosdb.operators.base.Run` message.  ``finish(items, ...)`` sends what the
    operators flushed at the end, then the end of input.

    Examples
    --------
    >>> from heliosdb.runtime.channel import Channel
    >>> ch = Channel(100, "next")
    >>> out = Output([Forward([ch], takes_runs=True)])
    >>> b = pa.record_batch({"x": [1]})
    >>> out.emit([b, Watermark(1), b], ingest_ns=0)
    >>> out.finish([], waiter=None)
    >>> [type(m).__name__ for m, *_ in ch._q]
    ['Run', 'End']
    """

    answers_errors = False

    def __init__(self, edges: List[Edge]):
        self.edges = edges
        self.takes_runs = all(e.takes_runs for e in edges)

    def emit(self, items: list, ingest_ns: int, waiter: Any = None) -> None:
        edges = self.edges
        if len(items) > 1 and self.takes_runs and is_run(items):
            run = Run(items)                # a batch cut by watermarks travels as one message
            for e in edges:
                e.send(run, ingest_ns, waiter)
            return
        for it in items:
            for e in edges:
                e.send(it, ingest_ns, waiter)

    def finish(self, items: list, waiter: Any = None) -> None:
        """End of input: what the operators flushed, then END through every edge."""
        if not self.edges:
            return
        self.emit(items, time.time_ns(), waiter)
        for e in self.edges:
            e.send(END, 0, waiter)

    def fail(self, error: BaseException, ingest_ns: int, waiter: Any = None) -> None:  # pragma: no cover
        raise error


class Answers(Output):
    """A replica's output: one :class:`~heliosdb.runtime.sequence.Sequenced` answer per item
    it took (what its operators emitted for it, possibly nothing, or the error they raised),
    numbered as its input (``source.seq``) was, to the stage that puts answers back in order.
    """

    answers_errors = True

    def __init__(self, targets: Sequence[Target], origin: int, source: Any):
        super().__init__([Forward(targets, origin)])
        self.targets = list(targets)
        self.origin = origin
        self.source = source                # the replica's input: the number of its item

    def emit(self, items: list, ingest_ns: int, waiter: Any = None) -> None:
        answer = Sequenced(self.source.seq, items)
        rows = answer.num_rows
        for t in self.targets:
            t.put(answer, rows, ingest_ns, self.origin, waiter)

    def fail(self, error: BaseException, ingest_ns: int, waiter: Any = None) -> None:
        """Answer the item with the error its operators raised: the stage that takes the
        answers raises it in turn (a step named after the operator, not the replica)."""
        if isinstance(error, StepFailed):
            error = StepFailed(re.sub(r"#\d+$", "", error.step), error.error)
        elif not isinstance(error, HeliosError):
            raise error
        answer = Sequenced(self.source.seq, [], error=error)
        for t in self.targets:
            t.put(answer, 0, ingest_ns, self.origin, waiter)

    def finish(self, items: list, waiter: Any = None) -> None:
        if items:
            msg = (f"a replica flushed {len(items)} item(s) at the end of its input: replicated "
                   "operators must be stateless (an engine bug: the planner replicated a stateful one)")
            raise ExecutionError(msg)
        for t in self.targets:
            t.put(END, 0, 0, self.origin, waiter)
