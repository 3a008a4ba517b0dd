"""Kafka source: the spec that ``env.kafka_source(...)`` returns and the plan holds.

:class:`KafkaSource` is a frozen, validated config: the topics, the brokers, the format, where
to start, whether to merge partitions by event time, what to do with records that do not
decode.  Building it contacts no broker (except ``deserialize_arrow()`` without a schema,
which reads the schema from the first message at plan time).  ``build()`` makes the running
source, a :class:`~heliosdb.connectors.kafka_reader.KafkaReader`, for one run.

How a read runs
---------------
Partitions are read in parallel by reader threads, with a consumer each, in batches; each
partition's messages are decoded as one batch with the source's :mod:`~heliosdb.formats`
format (:mod:`~heliosdb.connectors.kafka_fetch`).  A poll releases about one micro-batch of
the queued rows (:mod:`~heliosdb.connectors.kafka_merge`):

- without ``event_time``, what is queued, partition by partition, starting each poll with the
  next partition (lowest latency; the interleaving of partitions depends on timing);
- with ``event_time=column`` the partitions are *merged*: each row's merge key is the running
  maximum of that column in its partition, a row is released once every partition that is
  still active has seen a larger key, and released rows are ordered by (key, partition,
  offset).  A backlog is therefore read in one order whatever the number of readers, the
  fetch timing or a restart: windows over a topic with many partitions give the same result
  as over one, and no event is late merely because its partition was fetched later.

Where a read starts and how positions are checkpointed: :mod:`~heliosdb.connectors.kafka_start`
and :mod:`~heliosdb.connectors.kafka_reader`.  Records that do not decode:
:mod:`~heliosdb.connectors.kafka_dead_letters`.
"""
from __future__ import annotations

import logging
from dataclasses import KW_ONLY, dataclass, field, replace
from functools import cached_property
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import pyarrow as pa

from ..errors import ConfigError
from ..formats import Format
from .base import SourceSpec
from .kafka_dead_letters import ON_ERROR, DeadLetters, check_policy
from .kafka_fetch import METADATA, RAW_SCHEMA, Decoder
from .kafka_merge import Partition, Position
from .kafka_reader import KafkaReader
from .kafka_start import Connection, normalise_position
from .splits import Splits

log = logging.getLogger("heliosdb.kafka")

__all__ = ["KafkaSource", "METADATA", "ON_ERROR", "Position", "client_conf"]


def client_conf(conf: Dict[str, Any]) -> Dict[str, Any]:
    """librdkafka settings from keyword arguments: ``auto_offset_reset="earliest"`` is
    ``auto.offset.reset``; names with dots pass through.

    >>> client_conf({"auto_offset_reset": "latest", "fetch.min.bytes": 1})
    {'auto.offset.reset': 'latest', 'fetch.min.bytes': 1}
    """
    return {k.replace("_", ".") if "." not in k else k: v for k, v in conf.items()}


@dataclass(frozen=True, eq=False)
class KafkaSource(SourceSpec):
    """Kafka topic(s) as a stream of record batches (see the module docstring).

    Built by :meth:`StreamEnvironment.kafka_source`, which gives the defaults
    (``bootstrap_servers``, ``startup_timeout_s``, ``buffer_rows``: the rows queued per
    partition before it is paused); a format is set with the stream's ``deserialize_*``
    methods.  The planner sets ``columns`` (the columns some step reads) and ``null_time``
    (a column whose nulls are bad records, for a watermark right after).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from heliosdb.formats.json import JsonFormat
    >>> spec = KafkaSource("events", "127.0.0.1:9092", format=JsonFormat(pa.schema([("n", pa.int64())])),
    ...                    startup_timeout_s=30, buffer_rows=100_000)
    >>> spec.schema.names[:3], spec.describe()
    (['n', 'kafka_topic', 'kafka_partition'], "kafka 'events' at 127.0.0.1:9092 (json (1 fields), on_error=fail)")
    >>> spec.project(["n"]).schema.names
    ['n']
    """

    topics: Union[str, Sequence[str]]          # a tuple once made
    bootstrap_servers: str
    group_id: Optional[str] = None
    _: KW_ONLY
    format: Optional[Format] = None
    start_offsets: Optional[Position] = None
    bounded: bool = False
    event_time: Optional[str] = None
    readers: Optional[int] = None
    on_error: str = "fail"
    dead_letter: Any = None
    max_record_bytes: Optional[int] = None
    startup_timeout_s: float
    buffer_rows: int
    conf: Optional[Dict[str, Any]] = None
    columns: Optional[Tuple[str, ...]] = None
    null_time: Optional[str] = None
    splits: Optional[Splits] = field(default=None, repr=False)

    kind = "kafka"
    decodes_bytes = True
    parallel_readers = True

    def __post_init__(self) -> None:
        topics = (self.topics,) if isinstance(self.topics, str) else tuple(self.topics)
        if not topics or not all(isinstance(t, str) and t for t in topics):
            raise ConfigError(f"kafka_source() takes a topic name or a list of them, got {list(topics)!r}")
        check_policy(self.on_error, self.dead_letter)
        readers, limit, rows = self.readers, self.max_record_bytes, self.buffer_rows
        if readers is not None and (isinstance(readers, bool) or not isinstance(readers, int) or readers <= 0):
            raise ConfigError(f"kafka_source: readers must be a positive integer, got {readers!r}")
        if limit is not None and (not isinstance(limit, int) or limit <= 0):
            raise ConfigError(f"kafka_source(max_record_bytes=) must be a positive int, got {limit!r}")
        if not isinstance(rows, int) or rows <= 0:
            raise ConfigError(f"kafka_source(buffer_rows=) must be a positive int, got {rows!r}")
        if isinstance(self.startup_timeout_s, bool) or not isinstance(self.startup_timeout_s, (int, float)):
            raise ConfigError(f"kafka_source: startup_timeout_s must be a number of seconds, got "
                              f"{self.startup_timeout_s!r}")
        set_ = object.__setattr__
        set_(self, "topics", topics)
        set_(self, "start_offsets", normalise_position(self.start_offsets) if self.start_offsets else {})
        set_(self, "bounded", bool(self.bounded))
        set_(self, "conf", dict(self.conf or {}))
        if self.columns is not None:
            set_(self, "columns", tuple(self.columns))
        if self.splits is None and self.event_time is None:
            # Partitions are the splits: a watermark right after keeps one per partition
            # (merged by event time, they are one ordered stream: one watermark).
            set_(self, "splits", Splits(["kafka_partition"] if len(topics) == 1
                                        else ["kafka_topic", "kafka_partition"]))

    # -- derived ---------------------------------------------------------------------------------
    @cached_property
    def connection(self) -> Connection:
        """What the source connects with (librdkafka settings: these defaults, then ``conf``)."""
        conf = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id or "heliosdb",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 20,
            # Large fetches: half the CPU per message of the defaults on a backlog.
            "max.partition.fetch.bytes": 8 * 2**20,
            "fetch.max.bytes": 64 * 2**20,
            "queued.min.messages": 200_000,
            "queued.max.messages.kbytes": 131_072,
            "logger": log,
        }
        conf.update(self.conf)
        return Connection(self.topics, self.bootstrap_servers, self.group_id, conf,
                          self.startup_timeout_s, self.bounded)

    @cached_property
    def payload_format(self) -> Optional[Format]:
        """The format, with its schema read from the topic if it has none (Arrow IPC)."""
        if self.format is None or self.format.schema is not None:
            return self.format
        return self.format.with_schema(self.connection.peek_schema(self.start_offsets))

    @property
    def payload_schema(self) -> pa.Schema:
        fmt = self.payload_format
        return RAW_SCHEMA if fmt is None else fmt.schema

    @cached_property
    def full_schema(self) -> pa.Schema:
        """The payload's columns, then the Kafka metadata columns (before any projection)."""
        payload = self.payload_schema
        clash = [n for n in METADATA.names if n in payload.names]
        if clash:
            raise ConfigError(f"kafka_source: the format's fields {clash} clash with the Kafka metadata columns")
        full = pa.schema(list(payload) + list(METADATA))
        if self.event_time is not None and self.event_time not in full.names:
            raise ConfigError(
                f"kafka_source(event_time={self.event_time!r}): no such column; the source has "
                f"{full.names}"
            )
        if self.event_time is not None:
            t = full.field(self.event_time).type
            if not (pa.types.is_integer(t) or pa.types.is_timestamp(t)):
                raise ConfigError(f"kafka_source(event_time={self.event_time!r}) must be an integer or "
                                  f"timestamp column, it is {t}")
        return full

    @cached_property
    def schema(self) -> pa.Schema:  # type: ignore[override]
        full = self.full_schema
        return full if self.columns is None else pa.schema([full.field(c) for c in self.columns])

    def split_key(self, p: Partition) -> tuple:
        """The split a partition is (see :attr:`splits`)."""
        return (p.partition,) if len(self.splits.columns) == 1 else (p.topic, p.partition)

    # -- plan-time -------------------------------------------------------------------------------
    def _derive(self, **changes: Any) -> "KafkaSource":
        """A copy with ``changes``, keeping a schema already read from the topic."""
        if "format" not in changes and "payload_format" in self.__dict__:
            changes["format"] = self.payload_format
        return replace(self, **changes)

    def with_format(self, fmt: Format) -> "KafkaSource":
        return replace(self, format=fmt)

    def with_readers(self, n: int) -> "KafkaSource":
        return self._derive(readers=n)

    def check_event_time(self, column: str) -> "KafkaSource":
        return self._derive(null_time=column)

    def project(self, columns: List[str]) -> "KafkaSource":
        full = self.full_schema
        for c in columns:
            full.field(c)                  # KeyError for a column the source does not have
        return self._derive(columns=tuple(columns))

    def describe(self) -> str:
        fmt = "raw bytes" if self.format is None else self.format.describe()
        topics = ", ".join(repr(t) for t in self.topics)
        merge = f", partitions merged on {self.event_time!r}" if self.event_time else ""
        readers = f", {self.readers} readers" if self.readers else ""
        mode = ", bounded" if self.bounded else ""
        return f"kafka {topics} at {self.bootstrap_servers} ({fmt}{merge}{readers}{mode}, on_error={self.on_error})"

    def build(self) -> KafkaReader:
        """The running source for one run (contacts no broker until it opens)."""
        dead = DeadLetters(self.on_error, self.dead_letter)
        decoder = Decoder(self.payload_format, self.schema, self.event_time, self.null_time,
                          self.max_record_bytes, dead)
        return KafkaReader(self, self.connection, self.start_offsets, decoder=decoder,
                           merged=self.event_time is not None, buffer_rows=self.buffer_rows,
                           readers=self.readers, split_key=self.split_key)
