"""A source of several inputs: the sources of one job that a join brings together.

A job reads through one source task and keeps one source position per checkpoint.  When its
pipeline starts from several sources (the two sides of a join, each from its own
``env.from_...()`` or ``env.kafka_source()``), the planner puts them in one
:class:`CompositeSource` and the job reads that:

- its reader polls every input in turn (round-robin, never waiting on one while another has
  rows), or, when every input has event time (``clocks``: its time column, as the watermark
  right after the source reads it), the input furthest behind in event time first
  (**alignment**: a join's watermark is the minimum of its inputs', so rows read ahead of it
  only wait in the join's state; an input with nothing ready is passed over, never waited
  on); it tags each piece it returns with its input's index (:class:`Tagged`); the source
  task batches each input on its own (its batch size and timeout), and the source's output
  edge sends a batch of input ``i`` to the stages of input ``i`` only, while barriers,
  watermarks, ticks and the end go to every input's stages;
- an input that ends (a bounded read at its end) drops out; the reader says so once with a
  :class:`Tagged` piece holding :data:`INPUT_END`, and the source task sends that input's
  stages the final watermark, so a join's watermark (the minimum of its inputs') is not held
  back by an input that will send nothing more;
- its position is the list of its inputs' positions, and ``seek`` seeks each: the checkpoint
  coordinator sees one source.  It is replayable when every input is; ``attach_metrics`` and
  ``commit_offsets`` go to every input, and the time it waited for data is its inputs'.

Examples
--------
>>> import pyarrow as pa
>>> from heliosdb.connectors.sources import ArrowSource
>>> spec = CompositeSource((ArrowSource(pa.table({"a": [1, 2, 3]})), ArrowSource(pa.table({"b": [9]}))),
...                        batch_sizes=(2, 2))
>>> reader = spec.build()
>>> reader.open(batch_size=2)
>>> [(t.index, t.num_rows) for t, _ in reader.poll(0) + reader.poll(0) + reader.poll(0) + reader.poll(0)]
[(0, 2), (1, 1), (0, 1), (1, 0)]
>>> reader.position()
[{'row': 3}, {'row': 1}]
"""
from __future__ import annotations

import time
from typing import Any, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConfigError
from .base import Piece, SourceReader, SourceSpec


class _InputEnd:
    """What a :class:`Tagged` piece holds when its input has ended."""

    def __repr__(self) -> str:
        return "INPUT_END"


#: The end of one input of a composite source (the others go on).
INPUT_END = _InputEnd()
#: The watermark of an input that has read nothing yet: before every time.
_NEVER = -(2**63)


class Tagged:
    """A piece of input ``index`` of a composite source: a record batch, or :data:`INPUT_END`
    (and, on the way to the source's edge, a watermark of that input alone).

    >>> Tagged(1, pa.record_batch({"x": [1, 2]})).num_rows, Tagged(1, INPUT_END).num_rows
    (2, 0)
    """

    __slots__ = ("index", "batch")

    def __init__(self, index: int, batch: Any):
        self.index = index
        self.batch = batch

    @property
    def num_rows(self) -> int:
        b = self.batch
        return b.num_rows if type(b) is pa.RecordBatch else 0

    def __repr__(self) -> str:
        return f"Tagged({self.index}, {self.batch!r:.40})"


#: An input's event time as its reader sees it: (column, ns per unit, max out-of-orderness ns).
Clock = Tuple[str, int, int]


class CompositeSource(SourceSpec):
    """The sources of one job, one per input (see the module docstring).  ``batch_sizes``
    and ``batch_timeouts_ns`` are each input's micro-batching; ``clocks`` each input's event
    time (:data:`Clock`, or None: none), for reading them aligned.

    Examples
    --------
    Aligned: the input behind in event time is read first (``ts`` epoch ms, no disorder).

    >>> from heliosdb.connectors.sources import ArrowSource
    >>> fast = ArrowSource(pa.table({"ts": [0, 60_000, 120_000]}))          # a minute a row
    >>> slow = ArrowSource(pa.table({"ts": [0, 10_000, 20_000, 30_000, 40_000, 50_000, 70_000]}))
    >>> clock = ("ts", 1_000_000, 0)
    >>> reader = CompositeSource((fast, slow), (1, 1), clocks=(clock, clock)).build()
    >>> reader.open(batch_size=1)
    >>> [t.index for _ in range(10) for t, _ in reader.poll(0)]
    [0, 1, 0, 1, 1, 1, 1, 1, 1, 0]
    """

    kind = "composite"

    def __init__(self, inputs: Sequence[SourceSpec], batch_sizes: Sequence[int],
                 batch_timeouts_ns: Optional[Sequence[int]] = None,
                 clocks: Optional[Sequence[Optional[Clock]]] = None):
        if len(inputs) < 2:
            raise ConfigError(f"a composite source holds two or more sources, got {len(inputs)}")
        self.inputs: Tuple[SourceSpec, ...] = tuple(inputs)
        self.batch_sizes = tuple(int(n) for n in batch_sizes)
        self.batch_timeouts_ns = tuple(batch_timeouts_ns or ())
        self.clocks: Tuple[Optional[Clock], ...] = tuple(clocks) if clocks else (None,) * len(self.inputs)
        if len(self.clocks) != len(self.inputs):
            raise ConfigError(f"a composite source of {len(self.inputs)} inputs needs a clock (or None) for "
                              f"each, got {len(self.clocks)}")
        #: The first input's schema (each input's stages know their own).
        self.schema = self.inputs[0].schema

    @property
    def bounded(self) -> bool:  # type: ignore[override]
        return all(s.bounded for s in self.inputs)

    @property
    def declared_rate(self) -> Optional[float]:
        rates = [s.declared_rate for s in self.inputs]
        return None if any(r is None for r in rates) else float(sum(rates))   # type: ignore[misc]

    def describe(self) -> str:
        return " + ".join(f"[{i}] {s.describe()}" for i, s in enumerate(self.inputs))

    def build(self) -> "CompositeReader":
        return CompositeReader(self, [s.build() for s in self.inputs])


class CompositeReader(SourceReader):
    """One run's reading of a :class:`CompositeSource`: its inputs' readers, polled in turn."""

    def __init__(self, spec: CompositeSource, readers: List[SourceReader]):
        super().__init__(spec)
        self.readers = readers
        self.batch_sizes = spec.batch_sizes
        self.replayable = all(r.replayable for r in readers)      # type: ignore[misc]
        # Named after the inputs that cannot seek, if any: what an error about it must say.
        fixed = [r.kind for r in readers if not r.replayable]
        self.kind = " and ".join(fixed) if fixed else " + ".join(r.kind for r in readers)
        self._live = [True] * len(readers)
        self._ended: List[int] = []          # inputs that ended and have not been said so
        self._next = 0                       # the input polled first next time
        self._waited = 0                     # ns of polls that found an input empty
        #: Each input's event time (``CompositeSource(clocks=)``); aligned when all have one.
        self.clocks = spec.clocks
        self._aligned = all(c is not None for c in spec.clocks)
        self._at = [_NEVER] * len(readers)   # each input's watermark as read so far (ns)

    @property
    def inputs(self) -> int:
        return len(self.readers)

    def open(self, batch_size: int) -> None:
        super().open(batch_size)
        self._live = [True] * len(self.readers)
        self._ended = []
        self._at = [_NEVER] * len(self.readers)
        opened = []
        try:
            for r, n in zip(self.readers, self.batch_sizes):
                r.open(n)
                opened.append(r)
        except BaseException:
            for r in opened:
                r.close()
            raise

    @property
    def waited_ns(self) -> int:  # type: ignore[override]
        """What the inputs say they waited, and the polls that found an input empty."""
        return self._waited + sum(r.waited_ns for r in self.readers)

    @property
    def paced_ns(self) -> int:  # type: ignore[override]
        return sum(r.paced_ns for r in self.readers)

    def _poll_one(self, i: int, timeout_s: float) -> List[Piece]:
        r = self.readers[i]
        if timeout_s > 0:
            w0, t0 = r.waited_ns, time.perf_counter_ns()
            pieces = r.poll(timeout_s)
            if pieces == []:        # a wait for data (less what the reader counted itself)
                self._waited += max(0, time.perf_counter_ns() - t0 - (r.waited_ns - w0))
        else:
            pieces = r.poll(0)
        if pieces is None:
            self._live[i] = False
            return [(Tagged(i, INPUT_END), 0)]
        self._next = (i + 1) % len(self.readers)
        if self._aligned:
            for b, _ in pieces:
                self._advance(i, b)
        return [(Tagged(i, b), t) for b, t in pieces]

    def _advance(self, i: int, batch: Any) -> None:
        """Input ``i``'s watermark after ``batch``, as the watermark step will compute it
        (its largest event time less the disorder bound); a batch without the column (e.g.
        bytes still to deserialize) says nothing."""
        column, factor, bound = self.clocks[i]     # type: ignore[misc]
        if type(batch) is not pa.RecordBatch or not batch.num_rows:
            return
        idx = batch.schema.get_field_index(column)
        if idx < 0:
            return
        arr = batch.column(idx)
        if pa.types.is_timestamp(arr.type):
            arr = arr.view(pa.int64())
        elif not pa.types.is_integer(arr.type):
            return
        if arr.null_count:
            top = pc.max(arr).as_py()
            if top is None:
                return
        else:
            top = arr.to_numpy().max()
        self._at[i] = max(self._at[i], int(top) * factor - bound)

    def _order(self) -> List[int]:
        """The live inputs in the order to poll them: round-robin from the one after the
        input served last, or aligned: by their watermark as read so far, lowest first."""
        n = len(self.readers)
        live = [i for k in range(n) for i in [(self._next + k) % n] if self._live[i]]
        if self._aligned:
            live.sort(key=self._at.__getitem__)      # stable: ties stay round-robin
        return live

    def poll(self, timeout_s: float) -> Optional[List[Piece]]:
        """The pieces of the first input that has any, in the order of :meth:`_order` (each
        tagged with its input); an input that ends gives one :data:`INPUT_END` piece.  With
        none ready, waits on each live input in turn for a share of ``timeout_s``; None once
        every input has ended."""
        live = self._order()
        if not live:
            return None
        for i in live:
            out = self._poll_one(i, 0)
            if out:
                return out
        share = timeout_s / len(live)
        for i in live:
            out = self._poll_one(i, share)
            if out:
                return out
        return []

    def close(self) -> None:
        errors = []
        for r in self.readers:
            try:
                r.close()
            except Exception as exc:  # noqa: BLE001 - every reader is closed; the first error is raised
                errors.append(exc)
        if errors:
            raise errors[0]

    def position(self) -> Any:
        return [r.position() for r in self.readers]

    def seek(self, position: Any) -> None:
        if not isinstance(position, list) or len(position) != len(self.readers):
            raise ConfigError(
                f"a source of {len(self.readers)} inputs cannot seek to {position!r:.120}: the checkpoint "
                "was taken by a job reading other sources (give this job another name, or clear its "
                "checkpoints)")
        for r, p in zip(self.readers, position):
            r.seek(p)

    def attach_metrics(self, metrics: Any) -> None:
        for r in self.readers:
            r.attach_metrics(metrics)

    def commit_offsets(self, position: Any) -> None:
        for r, p in zip(self.readers, position):
            r.commit_offsets(p)
