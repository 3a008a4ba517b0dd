"""The operator contract every physical operator follows, and the items that flow between them.

This module is the whole contract: the runtime, the checkpoint coordinator, the metrics and the
planner call only what :class:`Operator` declares here (each with a default), never probe an
operator for what it happens to have.  In the order the runtime calls them:

- ``open(ctx)``: once, before a restore and before the first item; ``ctx`` is the
  :class:`OperatorContext` (job, subtask index, parallelism, partition keys, metrics, state
  backend);
- ``restore(tables, metas, ...)``: state saved by ``snapshot()`` (any old parallelism); sinks
  that take part in the commit (``commits``) get ``recover(meta, epoch, tables)`` instead;
- ``process_batch(batch) -> list[Item]``: a batch in, zero or more batches (or watermarks) out;
  ``process_run(items)`` when the operator ``takes_runs``; an operator of two inputs (a join,
  ``inputs == 2``) gets ``process_side(side, batch)`` instead, ``side`` 0 (left) or 1 (right),
  and one watermark: the minimum of its inputs';
- ``on_watermark(t) -> list[Item]``: event time has reached ``t`` (ns); emit what closes and
  forward the watermark;
- ``on_tick(now) -> list[Item]``: wall-clock timer (ns since the epoch), sent after idle
  batch timeouts so processing-time windows and idle watermarks advance without data;
- at a checkpoint barrier: ``prepare_snapshot()``, then ``snapshot()`` (``snapshot_epoch`` is
  the barrier's epoch); once the epoch's manifest is written, ``on_commit(meta)`` on the
  committing sinks;
- ``close() -> list[Item]``: the input has ended; flush.  Then ``finish()`` (release clients),
  or ``abort()`` when the job failed.

What the planner and the observers read is declared too: capabilities (``stateful``,
``commits``, ``parallel_kind``, ``emits_updates``, ``takes_runs``) and statistics
(``late_events``, ``watermark_ns()``, ``open_windows()``, ``state_size_bytes()``, ...).

An operator may also emit ``SideOutput(tag, batch)``: it skips the rest of the stage and goes
to the stages reading that side output (``late_output()``).

Operators in one stage call each other directly (no queue between them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import pyarrow as pa

WATERMARK_MAX = 2**63 - 1
WATERMARK_MIN = -(2**63)


@dataclass(frozen=True)
class Watermark:
    """Event time (int64 ns UTC) below which no more events are expected."""

    t: int


@dataclass(frozen=True)
class Tick:
    """Wall-clock time (int64 ns since the epoch): runs timers while no data arrives."""

    now: int


@dataclass(frozen=True)
class SideOutput:
    """A batch for a side output (e.g. ``"late"``) of the operator that emitted it."""

    tag: str
    batch: pa.RecordBatch

    @property
    def num_rows(self) -> int:
        return self.batch.num_rows


class Partials:
    """Partial aggregates a replica of a two-phase step made of one batch, sent with the
    batch: the final step merges them (``Operator.process_partials``), any other operator
    takes the batch's rows.  ``min_ns``/``max_ns`` are the batch's event-time range,
    ``ordered`` says no row is more than the watermark bound behind a row before it, and
    ``usable`` whether there are partials at all (else only the rows).  What they hold is
    the producer's (windows: ``operators/preagg.py``)."""

    __slots__ = ("batch", "min_ns", "max_ns", "ordered")

    def __init__(self, batch: pa.RecordBatch):
        self.batch, self.min_ns, self.max_ns, self.ordered = batch, WATERMARK_MAX, WATERMARK_MIN, False

    @property
    def num_rows(self) -> int:
        return self.batch.num_rows

    @property
    def usable(self) -> bool:
        return False


@dataclass(frozen=True)
class Barrier:
    """Checkpoint barrier ``epoch``: everything before it belongs to the epoch's snapshot."""

    epoch: int


@dataclass
class Snapshot:
    """An operator's state at a barrier: Arrow tables (written as Parquet) and JSON-able meta
    (watermarks, timers, counters).  Nothing in it is pickled."""

    tables: Dict[str, pa.Table] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)
    #: Builds ``tables`` later, on the checkpoint writer's thread, from copies the snapshot
    #: took: the processing thread only pays for the copy.
    build: Optional[Callable[[], Dict[str, pa.Table]]] = None
    #: Called once the tables are written (or the epoch is abandoned): buffers they were
    #: built from may be reused.
    release: Optional[Callable[[], None]] = None

    def materialize(self) -> Dict[str, pa.Table]:
        return self.build() if self.build is not None else self.tables

    def done(self) -> None:
        """The snapshot's tables are written, or will never be: let go of its buffers."""
        if self.release is not None:
            self.release()


@dataclass(frozen=True)
class Sided:
    """A batch of input ``side`` (0: left, 1: right) on its way to the first operator of a
    stage of two inputs: the task wraps each batch it reads there, the chain hands it to
    ``process_side``.

    >>> Sided(1, pa.record_batch({"x": [1, 2]})).num_rows
    2
    """

    side: int
    batch: pa.RecordBatch

    @property
    def num_rows(self) -> int:
        return self.batch.num_rows


Item = Union[pa.RecordBatch, Partials, Watermark, Tick, SideOutput, Barrier]


class Run:
    """Batches and the watermarks between them, as one operator emitted them for one input
    batch (e.g. a watermark assigner that cut a disordered batch): they cross a channel as one
    message, so an operator that declares ``takes_runs`` can take them in one call."""

    __slots__ = ("items", "num_rows")

    def __init__(self, items: List[Item]):
        self.items = items
        self.num_rows = sum(it.num_rows for it in items if not isinstance(it, Watermark))


@dataclass(frozen=True)
class Placement:
    """Where an operator instance runs among the subtasks of its step: ``subtask`` of
    ``parallelism``, partitioned by the hash of ``keys`` (empty: not partitioned).  Set by the
    planner; the runtime passes it on in the :class:`OperatorContext`.

    Examples
    --------
    >>> Placement(subtask=1, parallelism=2, keys=("key",)).partitioned
    True
    >>> Placement().partitioned
    False
    """

    subtask: int = 0
    parallelism: int = 1
    keys: Tuple[str, ...] = ()
    #: The types ``keys`` are cast to before hashing (empty: their own): a join hashes keys
    #: of compatible types (int32 and int64, int and float) as one type, so equal keys meet.
    key_types: Tuple[pa.DataType, ...] = ()

    @property
    def partitioned(self) -> bool:
        return self.parallelism > 1 and bool(self.keys)


@dataclass
class OperatorContext:
    """What the runtime tells an operator when it opens it.

    Examples
    --------
    >>> ctx = OperatorContext(job="daily", placement=Placement(0, 2, ("key",)))
    >>> ctx.subtask, ctx.parallelism, ctx.partition_keys
    (0, 2, ('key',))
    """

    job: str = "job"
    placement: Placement = field(default_factory=Placement)
    #: The job's metrics (a ``heliosdb.metrics.JobMetrics``), or None outside a job.
    metrics: Any = None
    #: The configured state backend (a ``heliosdb.config.StateBackend``), or None.
    state_backend: Any = None

    @property
    def subtask(self) -> int:
        return self.placement.subtask

    @property
    def parallelism(self) -> int:
        return self.placement.parallelism

    @property
    def partition_keys(self) -> Tuple[str, ...]:
        return self.placement.keys


@dataclass(frozen=True)
class LateCount:
    """Late events of one late output of an operator: the ``operator``'s name, the input
    ``side`` they came on (None for an operator of one input; ``"left"`` or ``"right"`` for a
    join), how many (``events``), and whether a stage reads that late output (``read``: they
    were sent there) or not (they were counted and dropped).

    Examples
    --------
    >>> c = LateCount("join-4", "right", 3, False)
    >>> c.output, c.fate
    ("late_output('right')", 'dropped')
    """

    operator: str
    side: Optional[str]
    events: int
    read: bool

    @property
    def output(self) -> str:
        """How the user names the late output: ``late_output()`` or ``late_output('left')``."""
        return "late_output()" if self.side is None else f"late_output({self.side!r})"

    @property
    def fate(self) -> str:
        """``"kept"`` (sent to the late output) or ``"dropped"``."""
        return "kept" if self.read else "dropped"


#: What an operator's ``parallel_kind`` may say.
PARALLEL_KINDS = ("one", "replicas", "by_key")


class Operator:
    """Base class: a stateless pass-through that forwards watermarks.

    Examples
    --------
    >>> op = Operator()
    >>> op.open(OperatorContext(job="j"))
    >>> op.ctx.job, op.stateful, op.parallel_kind, op.commits
    ('j', False, 'one', False)
    """

    name: str = "operator"
    #: Display name of the kind, shown by explain().
    kind: str = "operator"

    #: Set by :meth:`open`; a default one until then.
    ctx: OperatorContext = OperatorContext()

    # -- capabilities --------------------------------------------------------------------------
    #: How the planner may run this operator on several threads: ``"one"`` (a single instance),
    #: ``"replicas"`` (stateless and ordered: ``parallel`` copies made by :meth:`replica` take
    #: batches round-robin and their answers are put back in order), ``"by_key"`` (keyed state:
    #: one instance per hash partition of the key, see ``placement``).
    parallel_kind: str = "one"
    #: For ``"replicas"``: how many copies run (set by the planner).
    parallel: int = 1
    #: For ``"by_key"`` instances: which partition this one is (set by the planner).
    placement: Placement = Placement()
    #: Whether its output rows are updates of earlier ones (running aggregates), not appends.
    emits_updates: bool = False
    #: A sink that takes part in the checkpoint's commit: its ``snapshot()`` meta goes into the
    #: manifest, ``on_commit(meta)`` runs once the manifest is written, and a restore calls
    #: ``recover`` (instead of ``restore``).
    commits: bool = False

    def open(self, ctx: OperatorContext) -> None:
        """Called once by the runtime before a restore and before the first item."""
        self.ctx = ctx

    def replica(self, index: int) -> "Operator":
        """Copy ``index`` of a ``"replicas"`` operator (same program, its own counters)."""
        raise TypeError(f"{self.describe()} declares parallel_kind={self.parallel_kind!r}: it has "
                        "no replicas (an engine bug: the planner asked for them)")

    def seek_rows(self, rows: int) -> None:
        """As a replica: the next batch starts after ``rows`` rows of the whole input (used to
        name a failed record by its position in the input)."""

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        return [batch]

    #: How many inputs the operator takes: 1, or 2 for a join (its stage then reads both
    #: inputs through one gate and calls :meth:`process_side`).
    inputs: int = 1

    def process_side(self, side: int, batch: pa.RecordBatch) -> List[Item]:
        """A batch of input ``side`` (0: left, 1: right) of an operator of two inputs."""
        raise TypeError(f"{self.describe()} takes one input, but got a batch of input {side} (an "
                        "engine bug: the planner put it first in a stage of two inputs)")

    def on_watermark(self, t: int) -> List[Item]:
        return [Watermark(t)]

    def process_partials(self, partials: Partials) -> List[Item]:
        """A replica's partial aggregates of a batch: an operator that merges them overrides
        this; by default it takes the batch's rows."""
        return self.process_batch(partials.batch)

    def on_tick(self, now: int) -> List[Item]:
        return [Tick(now)]

    def close(self) -> List[Item]:
        return []

    #: Whether ``process_run`` does better than one call per item (the executor then hands
    #: it the batches and watermarks that one upstream batch became in one call).
    takes_runs = False

    def process_run(self, items: List[Item]) -> List[Item]:
        """Batches and watermarks in order (no other items): the same as one ``process_batch``
        or ``on_watermark`` call per item, which is what this default does."""
        out: List[Item] = []
        for it in items:
            out += self.on_watermark(it.t) if isinstance(it, Watermark) else self.process_batch(it)
        return out

    #: Whether ``snapshot()`` holds state worth writing (stateless operators: False).
    stateful = False

    #: The epoch of the barrier being snapshotted (set by the runtime before ``snapshot()``).
    snapshot_epoch: Optional[int] = None

    def prepare_snapshot(self) -> None:
        """Before the barrier's ``snapshot()``: e.g. write buffered state down."""

    def snapshot(self) -> Optional[Snapshot]:
        """State at a checkpoint barrier (a copy: the caller writes it on another thread)."""
        return None

    def on_commit(self, meta: dict) -> None:
        """The epoch whose ``snapshot()`` gave ``meta`` is committed (its manifest is written):
        a committing sink makes its output visible.  Called for ``commits`` operators."""

    def recover(self, meta: dict, epoch: int, tables: Optional[Dict[str, pa.Table]] = None) -> None:
        """A committing sink's restore: finish or roll back what epoch ``epoch`` (0: none) left,
        from its manifest ``meta`` and snapshot ``tables``."""

    def configure_checkpoints(self, interval_s: float, timeout_s: float) -> None:
        """The job checkpoints every ``interval_s`` and gives up on one after ``timeout_s``
        (e.g. a transactional sink sizes its transaction timeout)."""

    def restore(self, tables: Dict[str, pa.Table], metas: List[dict], select=None,
                first: bool = True, owned: bool = False) -> None:
        """Load state saved by ``snapshot()`` of this operator at any parallelism: ``metas``
        from every old subtask, ``select(table)`` (a bool mask) picks this subtask's rows,
        ``first`` says whether this is subtask 0 (which carries counters on).  ``owned``:
        the tables' buffers belong to this call alone (the coordinator decoded them for it),
        so the operator may keep them as its state instead of copying them."""

    def finish(self) -> None:
        """After the run (and its last commit): release clients and handles."""

    def abort(self) -> None:
        """The job failed or was cancelled: release files and handles, flush nothing."""

    # -- declared statistics ---------------------------------------------------------------------
    # Metrics, diagnose() and JobResult read these from other threads, and never ask an
    # operator what it happens to have: an operator with something to report overrides them.

    #: Events this operator found late and kept out of its results (sent to its
    #: ``late_output()``, or dropped when nothing reads it).  Written by its thread only.
    late_events: int = 0
    #: Rows dropped for having no event time (a watermark step with ``on_null='skip'``).
    null_event_times: int = 0

    #: Set by the planner: whether some stage reads this operator's ``late_output()``.  When
    #: nothing does, an operator with late events counts and drops them (the window warns
    #: once), rather than building a side output no one reads.  An operator of two inputs
    #: (a join) has a late output per input, each read or not (``late_sides_read``).
    late_output_read: bool = False
    #: Set by the planner for an operator of two inputs: per input (left, right), whether
    #: some stage reads that input's late rows (``late_output("left" | "right")``).
    late_sides_read: Tuple[bool, bool] = (False, False)

    #: The state backend's bound on this operator's state in bytes (None: unbounded, or
    #: stateless).
    max_state_bytes: Optional[int] = None

    def state_size_bytes(self) -> int:
        """Bytes of state held now (0 for stateless operators)."""
        return 0

    def late_counts(self) -> List["LateCount"]:
        """The late events of each of the operator's late outputs that found any: one for an
        operator of one input, one per side for a join.

        Examples
        --------
        >>> op = Operator(); op.name, op.late_events = "window-3", 12
        >>> op.late_counts()
        [LateCount(operator='window-3', side=None, events=12, read=False)]
        """
        if not self.late_events:
            return []
        return [LateCount(self.name, None, self.late_events, self.late_output_read)]

    def watermark_ns(self) -> Optional[int]:
        """The operator's current event-time watermark (int64 ns UTC), or None when it has
        none: no event time, no watermark yet, or the input has ended (the watermark is then
        ``WATERMARK_MAX``, which is no time at all).

        Examples
        --------
        >>> Operator().watermark_ns() is None
        True
        """
        return None

    def holding_split(self) -> Optional[str]:
        """The input split (e.g. a Kafka partition) that holds this operator's watermark back,
        or None (no watermark, one split, or not known).  Watermark assigners override it.

        Examples
        --------
        >>> Operator().holding_split() is None
        True
        """
        return None

    def open_windows(self) -> Optional[int]:
        """Windows (or sessions) held open now; None for an operator that holds no windows.

        Examples
        --------
        >>> Operator().open_windows() is None
        True
        """
        return None

    def table_stats(self) -> Optional[Dict[str, int]]:
        """A lookup join's table (``hdb.table``): ``rows``, ``bytes``, ``version`` (1 for the
        first read, one more per reload swapped in), ``refreshes`` and ``refresh_failures``;
        None for every other operator.

        Examples
        --------
        >>> Operator().table_stats() is None
        True
        """
        return None

    def describe(self) -> str:
        return f"{self.kind}[{self.name}]"
