"""What every source is: a spec the plan holds, and the reader it builds for a run.

A source has two sides, as a sink has (``connectors/sinks.py``: a spec whose ``bind()``
builds the sink operator):

- :class:`SourceSpec`: what ``env.from_arrow(...)``, ``env.kafka_source(...)`` and friends
  return and the logical plan holds.  It is configuration: its schema, a description for
  ``explain()``, and copies of itself that read fewer columns (``project``) or treat rows
  without an event time as bad records (``check_event_time``).  ``build()`` makes a reader.
- :class:`SourceReader`: one run's reading, what the executor and the checkpoint coordinator
  call.  The micro-batcher ``open(batch_size)``-s it, then ``poll(timeout_s)``-s it on the
  source thread: the pieces (record batches with their ingestion time) that are ready,
  waiting at most ``timeout_s`` for the first one, ``[]`` if none came, or ``None`` once the
  source is exhausted; then ``close()``.  A ``replayable`` reader reports its
  ``position()`` after the rows it returned and ``seek(position)``-s before it opens (a
  checkpoint restores it).

Both declare everything the engine asks of them, with defaults, so the engine never probes.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import pyarrow as pa

from ..errors import ConfigError
from .splits import Splits

#: A record batch and its ingestion time (ns since the epoch).
Piece = Tuple[pa.RecordBatch, int]


class SourceReader:
    """Base class of the running side of a source (see the module docstring).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from heliosdb.connectors.sources import ArrowSource
    >>> reader = ArrowSource(pa.table({"x": [1, 2, 3]})).build()
    >>> reader.open(batch_size=2)
    >>> [b.num_rows for b, _ in reader.poll(0)], reader.position()
    ([2], {'row': 2})
    >>> reader.close()
    """

    #: Whether the reader reports a position and seeks back to it (checkpoints need it).
    replayable = False
    #: Nanoseconds ``poll`` has spent waiting so far (for data, or to keep a rate), for a
    #: reader that measures it: the source's task counts that time as idle even in a poll
    #: that then returns rows (a reader that does not measure: such a poll counts as busy).
    waited_ns = 0
    #: The part of ``waited_ns`` spent on purpose, to keep a declared rate (``generate(rate=)``):
    #: such a source is paced, not short of work, and does not bound throughput.
    paced_ns = 0
    #: How many inputs it reads: 1, or more for the sources of a join read together
    #: (``connectors/composite.py``), whose pieces then carry their input's index.
    inputs = 1

    def __init__(self, spec: "SourceSpec"):
        self.kind = spec.kind
        self.schema = spec.schema
        #: The source's splits (shared with the watermark step after it), or None.
        self.splits: Optional[Splits] = spec.splits
        self.batch_size = 0

    def open(self, batch_size: int) -> None:
        """Start reading (at the position ``seek`` gave, if any); batches of about
        ``batch_size`` rows."""
        self.batch_size = batch_size

    def poll(self, timeout_s: float) -> Optional[List[Piece]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Stop reading and release what the reader holds (also after a failed ``open``)."""

    def position(self) -> Any:
        """JSON-able position after the last row ``poll`` returned (replayable readers)."""
        return None

    def seek(self, position: Any) -> None:
        """Start the next ``open()`` at ``position`` (from ``position()`` of an earlier run)."""
        raise ConfigError(f"the {self.kind} source cannot seek, so it cannot restore a checkpoint")

    def attach_metrics(self, metrics: Any) -> None:
        """The job's metrics (``heliosdb.metrics.JobMetrics``), for a reader with something
        to count there (a Kafka source's dead letters)."""

    def commit_offsets(self, position: Any) -> None:
        """A checkpoint that stored ``position`` is committed: tell the outside world (a
        Kafka consumer group, for lag dashboards).  Restores never read it back."""


class SourceSpec:
    """Base class of source specs: what the plan holds; ``build()`` makes a reader."""

    kind = "source"
    schema: pa.Schema
    #: The source's splits (``connectors.splits.Splits``) when it reads several, each in its
    #: own event-time order (Kafka partitions): the watermark after it is kept per split.
    splits: Optional[Splits] = None
    #: Whether the source reads message payloads that a format decodes (``deserialize_*``).
    decodes_bytes = False
    #: Whether ``set_parallelism(n)`` right after the source means ``n`` readers.
    parallel_readers = False
    #: Whether the source ends by itself (a table, files, a count): a regular join of two
    #: sources that do not needs a state TTL.
    bounded = False

    @property
    def declared_rate(self) -> Optional[float]:
        """Events per second the source is paced at, if it declares one (``explain()``'s
        state estimate uses it)."""
        return None

    def build(self) -> SourceReader:  # pragma: no cover - abstract
        """The reader of one run."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind

    def project(self, columns: List[str]) -> "SourceSpec":
        """A source that yields only ``columns`` (itself if it cannot prune)."""
        return self

    def check_event_time(self, column: str) -> "SourceSpec":
        """A source that treats a row whose ``column`` is null as a bad record (its
        ``on_error`` policy: fail, skip or dead letter, reason ``null_event_time``), for a
        watermark on ``column`` right after it; itself if it has no such policy."""
        return self

    def with_format(self, fmt: Any) -> "SourceSpec":
        """A source whose payloads ``fmt`` decodes (sources with ``decodes_bytes``)."""
        raise ConfigError(f"a {self.kind} source has no payloads to decode; formats apply to "
                          "sources of bytes such as kafka_source()")

    def with_readers(self, n: int) -> "SourceSpec":
        """A source read by ``n`` readers (sources with ``parallel_readers``)."""
        raise ConfigError(f"a {self.kind} source is read by one reader; set_parallelism() on it "
                          "applies to sources such as kafka_source()")
