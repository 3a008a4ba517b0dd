"""Kafka source: batched consumption on confluent-kafka, partitions read in parallel, a
deterministic merge of partitions by event time, positions to checkpoint, dead letters.

How it runs
-----------
``open()`` resolves every partition of the topic(s) and its start offset (``start_offsets``,
else the consumer group's committed offset, else ``auto.offset.reset``; a lookup that fails is
retried with backoff until ``startup_timeout``, then the job fails: an error is never taken for
"no committed offset") and assigns the partitions to *readers*: threads with a consumer each,
partition ``i`` (in topic, partition order) to reader ``i % readers``.  The partitions are the parallel subtasks of the source: a
reader consumes in batches (``consume(num_messages, timeout)``), decodes each partition's
messages as one batch with the source's :mod:`~heliosdb.formats` format (the decoders run
mostly outside the GIL), and queues the rows per partition.  Consumer-group rebalancing is not
used (partitions are assigned, as positions come from checkpoints); the group is only where
positions are committed for monitoring.

The source thread's ``poll()`` releases queued rows to the micro-batcher:

- without ``event_time``, what is queued, partition by partition, starting each poll with the
  next partition (lowest latency; the interleaving of partitions depends on timing);
- with ``event_time=column`` the partitions are *merged*: each row's merge key is the running
  maximum of that column in its partition, a row is released once every partition that is
  still active has seen a larger key (a partition that has caught up with its end, or is
  finished, does not hold the others back), and released rows are ordered by (key, partition,
  offset).  A backlog is therefore read in one order whatever the number of readers, the fetch
  timing or a restart: windows over a topic with many partitions give the same result as over
  one, and no event is late merely because its partition was fetched later.

A poll releases about one micro-batch (``batch_size`` rows; a merge cuts by key), however much
is queued, so a checkpoint barrier can follow any micro-batch: with a backlog, checkpoints
still come every ``interval``.

Positions
---------
``position()`` is ``{topic: {partition: next_offset}}`` for every row ``poll()`` has returned
(a partition inside a multi-row Arrow message shows ``[offset, rows_already_returned]``);
``seek(position)`` (or ``start_offsets=``) starts there.  The checkpoint coordinator stores the
position in its manifest and seeks a restored job to it; ``commit_offsets()`` writes a position
to the consumer group, for monitoring.

Dead letters
------------
A message that does not decode (see :data:`heliosdb.formats.REASONS`) is handled by
``on_error``: ``"fail"`` stops the job with an error naming the topic, partition, offset and
field; ``"skip"`` drops it; ``"dead_letter"`` writes it (topic, partition, offset, timestamp,
key, raw value, reason, field, error) to the ``dead_letter`` sink (``sinks.kafka(topic)`` or
``sinks.parquet(url)``).  Both count it in ``streaming_dead_letters_total{reason=...}``.  The
good records of the same batch go on: good + dead = input.
"""
from __future__ import annotations

import copy
import logging
import os
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa

from ..config import (DEFAULT_KAFKA_BOOTSTRAP, DEFAULT_KAFKA_PARTITION_BUFFER_ROWS,
                      DEFAULT_KAFKA_STARTUP_TIMEOUT, ENV_KAFKA_BOOTSTRAP, Duration, to_nanos)
from ..errors import ConfigError, ExecutionError
from ..formats import DecodeFailure, Format
from .kafka_reader import (_KEY_MAX, DEAD_LETTER_SCHEMA, RAW_SCHEMA, _Chunk, _kafka, _Partition,
                           _Reader)
from .sources import Piece, Source
from .splits import Splits

log = logging.getLogger("heliosdb.kafka")

#: Columns every Kafka source offers next to the decoded fields (unused ones are never built).
METADATA = pa.schema([
    ("kafka_topic", pa.string()),
    ("kafka_partition", pa.int32()),
    ("kafka_offset", pa.int64()),
    ("kafka_timestamp", pa.timestamp("ms", "UTC")),
    ("kafka_key", pa.binary()),
])
ON_ERROR = ("fail", "dead_letter", "skip")

Position = Dict[str, Dict[int, Union[int, List[int]]]]
#: Start-position lookups that fail are retried after 0.1 s, 0.2 s, ... at most 2 s apart,
#: each try waiting 1-5 s for its answer, until the source's startup_timeout.
_RETRY_FIRST_S, _RETRY_MAX_S = 0.1, 2.0
_ATTEMPT_MIN_S, _ATTEMPT_MAX_S = 1.0, 5.0


def bootstrap(servers: Optional[str]) -> str:
    """``servers``, else ``$HELIOSDB_KAFKA_BOOTSTRAP``, else ``127.0.0.1:9092``.

    >>> bootstrap("broker:9092")
    'broker:9092'
    """
    return servers or os.environ.get(ENV_KAFKA_BOOTSTRAP) or DEFAULT_KAFKA_BOOTSTRAP


def client_conf(conf: Dict[str, Any]) -> Dict[str, Any]:
    """librdkafka settings from keyword arguments: ``auto_offset_reset="earliest"`` is
    ``auto.offset.reset``; names with dots pass through.

    >>> client_conf({"auto_offset_reset": "latest", "fetch.min.bytes": 1})
    {'auto.offset.reset': 'latest', 'fetch.min.bytes': 1}
    """
    return {k.replace("_", ".") if "." not in k else k: v for k, v in conf.items()}


# -- the source ----------------------------------------------------------------------------------
class KafkaSource(Source):
    """Kafka topic(s) as a stream of record batches (see the module docstring).

    Built by :meth:`StreamEnvironment.kafka_source`; a format is set with the stream's
    ``deserialize_*`` methods.
    """

    kind = "kafka"
    replayable = True               # position() / seek(): checkpoints restore it

    def __init__(self, topics: Union[str, Sequence[str]], bootstrap_servers: Optional[str] = None,
                 group_id: Optional[str] = None, *, format: Optional[Format] = None,
                 start_offsets: Optional[Position] = None, bounded: bool = False,
                 event_time: Optional[str] = None, readers: Optional[int] = None,
                 on_error: str = "fail", dead_letter: Any = None,
                 max_record_bytes: Optional[int] = None,
                 startup_timeout: Duration = DEFAULT_KAFKA_STARTUP_TIMEOUT,
                 buffer_rows: int = DEFAULT_KAFKA_PARTITION_BUFFER_ROWS,
                 conf: Optional[Dict[str, Any]] = None):
        topics = [topics] if isinstance(topics, str) else list(topics)
        if not topics or not all(isinstance(t, str) and t for t in topics):
            raise ConfigError(f"kafka_source() takes a topic name or a list of them, got {topics!r}")
        if on_error not in ON_ERROR:
            raise ConfigError(f"kafka_source(on_error=) must be one of {ON_ERROR}, got {on_error!r}")
        if on_error == "dead_letter" and dead_letter is None:
            raise ConfigError(
                "kafka_source(on_error='dead_letter') needs dead_letter=, e.g. "
                "hdb.sinks.kafka('events-dlq') or hdb.sinks.parquet('s3://bucket/dlq/')"
            )
        if dead_letter is not None:
            from .sinks import SinkSpec

            if not isinstance(dead_letter, SinkSpec):
                raise ConfigError(f"kafka_source(dead_letter=) takes a sink such as hdb.sinks.kafka(topic), got {dead_letter!r}")
        if readers is not None and (isinstance(readers, bool) or not isinstance(readers, int) or readers <= 0):
            raise ConfigError(f"kafka_source: readers must be a positive integer, got {readers!r}")
        if max_record_bytes is not None and (not isinstance(max_record_bytes, int) or max_record_bytes <= 0):
            raise ConfigError(f"kafka_source(max_record_bytes=) must be a positive int, got {max_record_bytes!r}")
        if not isinstance(buffer_rows, int) or buffer_rows <= 0:
            raise ConfigError(f"kafka_source(buffer_rows=) must be a positive int, got {buffer_rows!r}")
        self.topics = topics
        self.bootstrap_servers = bootstrap(bootstrap_servers)
        self.group_id = group_id
        self.format = format
        self.start_offsets = _normalise_position(start_offsets) if start_offsets else {}
        self.bounded = bool(bounded)
        self.event_time = event_time
        self.readers = readers
        self.on_error = on_error
        self.dead_letter = dead_letter
        self.max_record_bytes = max_record_bytes
        self.startup_timeout_s = to_nanos(startup_timeout, "kafka_source(startup_timeout=)") / 1e9
        self.buffer_rows = buffer_rows
        self.conf = dict(conf or {})
        self.columns: Optional[List[str]] = None
        # Partitions are the splits: a watermark right after keeps one per partition (merged
        # by event time, they are one ordered stream: one watermark).
        self.splits = None if event_time is not None else Splits(
            ["kafka_partition"] if len(topics) == 1 else ["kafka_topic", "kafka_partition"])
        self.null_time: Optional[str] = None       # rows with no value here are bad records
        self.dead_letters: Dict[str, int] = {}
        self._metrics = None
        self._count_lock = threading.Lock()
        self._schema: Optional[pa.Schema] = None

    # -- plan-time -------------------------------------------------------------------------------
    def with_format(self, fmt: Format) -> "KafkaSource":
        out = copy.copy(self)
        out.format = fmt
        out._schema = None
        return out

    def check_event_time(self, column: str) -> "KafkaSource":
        out = copy.copy(self)
        out.null_time = column
        return out

    def _split_key(self, p: "_Partition") -> tuple:
        return (p.partition,) if len(self.splits.columns) == 1 else (p.topic, p.partition)

    def with_readers(self, n: int) -> "KafkaSource":
        out = copy.copy(self)
        out.readers = n
        return out

    @property
    def payload_schema(self) -> pa.Schema:
        if self.format is None:
            return RAW_SCHEMA
        if self.format.schema is None:          # Arrow IPC without a schema: read one message
            self.format = self.format.with_schema(self._peek_schema())  # type: ignore[attr-defined]
        return self.format.schema

    @property
    def schema(self) -> pa.Schema:  # type: ignore[override]
        if self._schema is None:
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
            self._schema = full if self.columns is None else pa.schema([full.field(c) for c in self.columns])
        return self._schema

    def project(self, columns: List[str]) -> "KafkaSource":
        full = self.schema if self.columns is None else None
        out = copy.copy(self)
        out.columns = list(columns)
        out._schema = pa.schema([(full or self.schema).field(c) for c in columns])
        return out

    def describe(self) -> str:
        fmt = "raw bytes" if self.format is None else self.format.describe()
        topics = ", ".join(repr(t) for t in self.topics)
        merge = f", partitions merged on {self.event_time!r}" if self.event_time else ""
        readers = f", {self.readers} readers" if self.readers else ""
        mode = ", bounded" if self.bounded else ""
        return f"kafka {topics} at {self.bootstrap_servers} ({fmt}{merge}{readers}{mode}, on_error={self.on_error})"

    def attach_metrics(self, metrics: Any) -> None:
        """Count dead letters in the job's metrics (``streaming_dead_letters_total``)."""
        self._metrics = metrics

    # -- positions -------------------------------------------------------------------------------
    def seek(self, position: Position) -> None:
        """Start at ``position`` (as :meth:`position` returns it, possibly through JSON) when
        the source next opens; partitions it does not name start as usual."""
        self.start_offsets = _normalise_position(position)

    def position(self) -> Position:
        """The next offset of every partition after the rows ``poll()`` has returned:
        ``{topic: {partition: offset}}``, or ``[offset, rows]`` inside a multi-row message."""
        with self._cond:
            out: Position = {}
            for p in self._parts:
                out.setdefault(p.topic, {})[p.partition] = [p.offset, p.skip] if p.skip else p.offset
            return out

    def commit_offsets(self, position: Optional[Position] = None) -> None:
        """Write ``position`` (default: the current one) to the consumer group, for monitoring
        (lag dashboards); positions are restored from checkpoints, not from the group."""
        ck = _kafka()
        if self._control is None or self.group_id is None:
            return
        pos = _normalise_position(position) if position is not None else self.position()
        tps = [ck.TopicPartition(t, p, v if isinstance(v, int) else v[0])
               for t, parts in pos.items() for p, v in parts.items()]
        if tps:
            try:
                self._control.commit(offsets=tps, asynchronous=False)
            except ck.KafkaException as exc:
                log.warning("kafka source: committing offsets to group %r failed: %s", self.group_id, exc)

    # -- consumer configuration ------------------------------------------------------------------
    def _consumer_conf(self) -> Dict[str, Any]:
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
        return conf

    def _peek_schema(self) -> pa.Schema:
        """The schema of the first Arrow IPC message the source would read (plan time)."""
        ck = _kafka()
        consumer = ck.Consumer(self._consumer_conf())
        try:
            parts = self._resolve(consumer)
            todo = [p for p in parts if (p.stop if p.stop is not None else p.high) > p.offset]
            if not todo:
                raise ConfigError(
                    f"kafka_source({self.topics!r}).deserialize_arrow(): the topic has no message to "
                    "read the schema from; pass deserialize_arrow(schema=...)"
                )
            consumer.assign([ck.TopicPartition(p.topic, p.partition, p.offset) for p in todo])
            deadline = time.monotonic() + self.startup_timeout_s
            while time.monotonic() < deadline:
                for m in consumer.consume(1, 0.5):
                    if m.error() is None and m.value():
                        return pa.ipc.open_stream(pa.py_buffer(m.value())).schema
            raise ConfigError(f"kafka_source({self.topics!r}).deserialize_arrow(): no message arrived "
                              f"within {self.startup_timeout_s:g}s to read the schema from; pass schema=")
        finally:
            consumer.close()

    def _resolve(self, consumer) -> List[_Partition]:
        """Every partition of the topics with its start (and, bounded, end) offset."""
        ck = _kafka()
        deadline = time.monotonic() + self.startup_timeout_s
        parts: List[_Partition] = []
        for topic in self.topics:
            while True:
                try:
                    md = consumer.list_topics(topic, timeout=min(5.0, max(self.startup_timeout_s, 0.1)))
                    tm = md.topics.get(topic)
                    if tm is not None and tm.error is None and tm.partitions:
                        break
                    err = tm.error if tm is not None else "no metadata"
                except ck.KafkaException as exc:
                    err = exc
                if time.monotonic() >= deadline:
                    raise ExecutionError(
                        f"kafka_source: topic {topic!r} is not available at {self.bootstrap_servers} "
                        f"after {self.startup_timeout_s:g}s ({err}); create the topic, or check "
                        "bootstrap_servers"
                    )
                time.sleep(0.2)
            for pid in sorted(tm.partitions):
                parts.append(_Partition(topic, pid, len(parts)))
        committed = {}
        unset = [p for p in parts if self.start_offsets.get(p.topic, {}).get(p.partition) is None]
        if self.group_id is not None and unset:
            tps = [ck.TopicPartition(p.topic, p.partition) for p in unset]
            # Never guess: a group whose offsets cannot be read (a coordinator still starting,
            # NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, a timeout) would otherwise start
            # at auto.offset.reset and read the topic again, or skip data.
            what = f"the committed offsets of group {self.group_id!r}"
            for tp in self._startup_call(deadline, what, unset,
                                         lambda t: _raise_partition_error(_committed(consumer, tps, t))):
                if tp.offset >= 0:
                    committed[(tp.topic, tp.partition)] = tp.offset
        reset = str(self._consumer_conf().get("auto.offset.reset", "earliest"))
        # End offsets from a read_uncommitted client: a read_committed one answers the last
        # stable offset, which lags a just-committed transaction until its markers are
        # written, and a bounded read would stop short of it.  (Records of a transaction that
        # ends aborted are skipped on the way, as the reader's end-of-partition events show.)
        ends = consumer
        if self.bounded:
            ends = ck.Consumer({**self._consumer_conf(), "isolation.level": "read_uncommitted"})
        try:
            self._offsets(parts, ends, committed, reset, deadline)
        finally:
            if ends is not consumer:
                ends.close()
        return parts

    def _offsets(self, parts: List["_Partition"], consumer, committed: Dict, reset: str,
                 deadline: float) -> None:
        """Each partition's start offset (and end, bounded), as ``_resolve`` describes."""
        ck = _kafka()
        for p in parts:
            tp = ck.TopicPartition(p.topic, p.partition)
            low, high = self._startup_call(deadline, "the log start and end offsets", [p],
                                           lambda t, tp=tp: _watermarks(consumer, tp, t))
            p.high = high
            start = self.start_offsets.get(p.topic, {}).get(p.partition)
            if start is not None:
                p.offset, p.skip = (start, 0) if isinstance(start, int) else (int(start[0]), int(start[1]))
                p.seek_offset, p.seek_skip = p.offset, p.skip
            elif (p.topic, p.partition) in committed:
                p.offset = committed[(p.topic, p.partition)]
            else:
                p.offset = high if reset in ("latest", "largest", "end") else low
            if p.offset < low:
                log.warning("kafka source: %s: offset %d is no longer available (the log starts at %d); "
                            "starting at %d", p.label, p.offset, low, low)
                p.offset, p.skip = low, 0
            p.fetched = p.offset
            if self.bounded:
                p.stop = high

    def _startup_call(self, deadline: float, what: str, parts: List[_Partition], call: Any) -> Any:
        """``call(timeout_s)`` until it succeeds, retried with backoff (``_RETRY_FIRST_S``
        doubling up to ``_RETRY_MAX_S``) until ``deadline``; then an ExecutionError naming
        ``what``, the topics and partitions, the last error and what to do."""
        ck = _kafka()
        delay = _RETRY_FIRST_S
        tries = 0
        while True:
            tries += 1
            left = deadline - time.monotonic()
            try:
                return call(min(max(left, _ATTEMPT_MIN_S), _ATTEMPT_MAX_S))
            except ck.KafkaException as exc:
                err: Any = exc.args[0] if exc.args else exc
            left = deadline - time.monotonic()
            if left <= 0:
                where = ", ".join(f"topic {t!r} partitions {ps}" for t, ps in _by_topic(parts).items())
                raise ExecutionError(
                    f"kafka_source: could not read {what} for {where} at {self.bootstrap_servers} within "
                    f"startup_timeout={self.startup_timeout_s:g}s ({tries} tries; last error: {err}). The "
                    "source does not start rather than guess where to start (auto_offset_reset would read "
                    "the topic again or skip data). Check that the brokers and the group coordinator are "
                    "up, raise kafka_source(startup_timeout=), or pass start_offsets= to choose the start"
                )
            log.warning("kafka source: reading %s failed (%s); retrying in %.2f s", what, err,
                        min(delay, left), extra={"operator": "kafka"})
            time.sleep(min(delay, left))
            delay = min(delay * 2, _RETRY_MAX_S)

    # -- running ---------------------------------------------------------------------------------
    def open(self, batch_size: int) -> None:
        super().open(batch_size)
        ck = _kafka()
        self._cond = threading.Condition()
        self._error: Optional[BaseException] = None
        self._stopping = False
        self._dlq = None
        self._readers: List[_Reader] = []
        self._parts: List[_Partition] = []
        self._control = ck.Consumer(self._consumer_conf())
        try:
            self._parts = self._resolve(self._control)
        except BaseException:
            self._control.close()          # the executor closes only sources that opened
            self._control = None
            raise
        if self.splits is not None:
            self.splits.reset()
            self.splits.declare([self._split_key(p) for p in self._parts])
        payload = self.payload_schema
        self._full = pa.schema(list(payload) + list(METADATA))
        self._columns = self.columns or self._full.names
        if self.dead_letter is not None and self.on_error == "dead_letter":
            self._dlq = self.dead_letter.bind(DEAD_LETTER_SCHEMA, "kafka-dead-letters")
        # Default: a reader per core (at least 2), at most one per partition.  Creating the
        # client's message objects holds the GIL, decoding does not: two readers overlap one's
        # consume with the other's decode (JSON W1 from 4 partitions on 2 cores: 0.26-0.29 M
        # events/s with 1 reader, 0.35-0.43 M with 2, no better with 4).
        n = self.readers or min(len(self._parts), max(2, os.cpu_count() or 2))
        n = min(n, len(self._parts))
        for i in range(n):
            mine = [p for p in self._parts if p.index % n == i and not p.finished()]
            if mine:
                self._readers.append(_Reader(self, mine, i))
        for r in self._readers:
            r.start()
        log.info("kafka source: %d partitions of %s, %d readers, from %s", len(self._parts),
                 self.topics, len(self._readers), self.position())

    def poll(self, timeout_s: float) -> Optional[List[Piece]]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._error
                taken = self._take()
                if taken:
                    break
                if all(p.finished() for p in self._parts):
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
        return self._build(taken)

    def _take(self) -> List[Tuple[_Partition, _Chunk, int, int]]:
        """Decide what to release now (under the lock) and advance the positions:
        (partition, chunk, start row, stop row) slices in release order."""
        parts = self._parts
        frontier = _KEY_MAX
        holders: List[_Partition] = []
        if self.event_time is not None:
            active = [p for p in parts if not p.complete()]
            # One partition still reading and nothing queued elsewhere: nothing to merge with.
            alone = len(active) == 1 and not any(p.chunks for p in parts if p is not active[0])
            if active and not alone:
                frontier = min(p.max_key for p in active)
                holders = [p for p in active if p.max_key == frontier]
        budget = max(int(getattr(self, "batch_size", 0) or 0), 1)
        if self.event_time is not None:
            frontier = self._cut(frontier, budget)
        else:
            # Round-robin over the partitions, so a busy one does not starve the others.
            self._rr = (getattr(self, "_rr", -1) + 1) % max(len(parts), 1)
            parts = parts[self._rr:] + parts[:self._rr]
        # Watermark alignment: partitions far ahead of the slowest wait (their queue fills and
        # their reader pauses), unless the merge already orders partitions by event time.
        ahead = self.splits.ahead() if self.splits is not None else ()
        out = []
        for p in parts:
            if ahead and self._split_key(p) in ahead:
                continue
            while p.chunks:
                c = p.chunks[0]
                stop = c.batch.num_rows
                if frontier != _KEY_MAX and c.keys is not None and stop:
                    stop = int(np.searchsorted(c.keys, frontier, side="left"))
                    if stop <= c.start:
                        if c.start == 0 and c.dead is not None:
                            out.append((p, c, 0, 0))       # write its dead letters now
                        break
                elif self.event_time is None:
                    if budget <= 0:
                        break
                    stop = min(stop, c.start + budget)
                    budget -= stop - c.start
                out.append((p, c, c.start, stop))
                p.rows -= stop - c.start
                p.released += stop - c.start
                c.start = stop
                if stop < c.batch.num_rows:
                    p.offset, p.skip = int(c.offsets[stop]), int(c.first_row[stop])
                    break
                p.chunks.popleft()
                p.offset, p.skip = c.next_offset, 0
            if not p.chunks and p.eof_at > p.offset and p.eof_at >= p.fetched:
                p.offset, p.skip = p.eof_at, 0     # past transaction markers, aborted records
            # A paused partition reads again once half its queue has gone, and always while
            # it holds the merge back: only its next rows can move the frontier.
            if p.paused and (p.rows < self.buffer_rows // 2 or p in holders):
                p.paused = False
                self._resume(p)
            if self.splits is not None and not p.announced and p.finished():
                p.announced = True
                self.splits.finish(self._split_key(p), p.released)
        return [t for t in out if t[3] > t[2] or (t[1].dead is not None)]

    def _cut(self, frontier: int, budget: int) -> int:
        """The merge frontier lowered so that about ``budget`` rows (a micro-batch) are
        released: a poll never hands the micro-batcher more than a batch, so a checkpoint
        barrier can follow any batch however much is queued.  The cut is by merge key, so the
        released order stays (key, partition, offset) whatever the budget."""
        keys = []
        total = 0
        for p in self._parts:
            for c in p.chunks:
                if c.keys is None or c.start >= c.batch.num_rows:
                    continue
                stop = (c.batch.num_rows if frontier == _KEY_MAX
                         else int(np.searchsorted(c.keys, frontier, side="left")))
                if stop > c.start:
                    keys.append(c.keys[c.start:min(stop, c.start + budget)])
                    total += stop - c.start
                if stop < c.batch.num_rows:
                    break
        if total <= budget:
            return frontier
        cand = np.concatenate(keys)
        k = int(np.partition(cand, budget - 1)[budget - 1])
        # Rows with key < k (fewer than budget); if a run of equal keys fills the budget,
        # release that run whole (it cannot be split without breaking the order).
        return k if (cand < k).any() else k + 1

    def _resume(self, p: _Partition) -> None:
        for r in self._readers:
            if p in r.parts:
                r.resume(p)

    def _build(self, taken: List[Tuple[_Partition, _Chunk, int, int]]) -> List[Piece]:
        """The released slices as one record batch (merged by key when merging)."""
        dead = [c.dead for _, c, _, _ in taken if c.dead is not None]
        for _, c, _, _ in taken:
            c.dead = None
        if dead:
            self._write_dead(dead)
        slices = [(c, a, b) for _, c, a, b in taken if b > a]
        if not slices:
            return []
        ingest = min(c.ingest_ns for c, _, _ in slices)
        batches = [c.batch.slice(a, b - a) for c, a, b in slices]
        if len(batches) == 1:
            return [(batches[0], ingest)]
        table = pa.Table.from_batches(batches)
        if self.event_time is not None and len({id(c) for c, _, _ in slices}) > 1:
            keys = np.concatenate([c.keys[a:b] for c, a, b in slices])
            order = np.argsort(keys, kind="stable")
            if not np.array_equal(order, np.arange(len(order))):
                table = table.take(pa.array(order))
        return [(b, ingest) for b in table.combine_chunks().to_batches()]

    def _write_dead(self, batches: List[pa.RecordBatch]) -> None:
        if self._dlq is None:
            return
        for b in batches:
            self._dlq.process_batch(b)

    def close(self) -> None:
        cond = getattr(self, "_cond", None)
        if cond is None:
            return
        with cond:
            self._stopping = True
            cond.notify_all()
        for r in getattr(self, "_readers", []):
            r.join()
        failed = self._error is not None
        if self._dlq is not None:
            try:
                if failed:
                    self._dlq.abort()
                else:
                    self._dlq.close()
            finally:
                self._dlq = None
        if self._control is not None:
            if not failed and all(p.finished() for p in self._parts):
                self.commit_offsets()       # a bounded read that reached its end
            self._control.close()
            self._control = None

    # -- called by readers -----------------------------------------------------------------------
    def _count_dead(self, failures: List[DecodeFailure]) -> None:
        m = self._metrics
        targets = [self.dead_letters] + ([m.dead_letters] if m is not None and hasattr(m, "dead_letters") else [])
        with self._count_lock:              # readers count from their own threads
            for counts in targets:
                for f in failures:
                    counts[f.reason] = counts.get(f.reason, 0) + 1

    def _push(self, chunks: List[Tuple[_Partition, Optional[_Chunk], int, int]],
              eofs: Dict[_Partition, int]) -> List[_Partition]:
        """Queue the decoded chunks of one fetch and its end-of-partition events, atomically
        (a partition must never look caught up while its last rows are still on the way).
        Each chunk comes with the offset after it and the partition's new largest merge key.
        Returns the partitions to pause (too many rows queued)."""
        pause = []
        with self._cond:
            for p, chunk, fetched, max_key in chunks:
                if chunk is not None:
                    p.chunks.append(chunk)
                    p.rows += chunk.rows
                p.fetched = max(p.fetched, fetched)
                p.max_key = max(p.max_key, max_key)
                if p.rows >= self.buffer_rows and not p.paused:
                    p.paused = True
                    pause.append(p)
            for p, offset in eofs.items():
                p.eof_at = max(p.eof_at, offset)
            self._cond.notify_all()
        return pause

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = exc
            self._cond.notify_all()


def _committed(consumer: Any, partitions: list, timeout_s: float) -> list:
    """The group's committed offsets (``consumer.committed``): the seam tests replace to make
    the coordinator fail."""
    return consumer.committed(partitions, timeout=timeout_s)


def _raise_partition_error(partitions: list) -> list:
    """``partitions`` as they are, or the KafkaException of the first that carries an error
    (``committed()`` reports some errors per partition, not by raising)."""
    for tp in partitions:
        if tp.error is not None:
            raise _kafka().KafkaException(tp.error)
    return partitions


def _watermarks(consumer: Any, partition: Any, timeout_s: float) -> Tuple[int, int]:
    """A partition's log start and end offsets (``consumer.get_watermark_offsets``)."""
    return consumer.get_watermark_offsets(partition, timeout=timeout_s)


def _by_topic(parts: List[_Partition]) -> Dict[str, List[int]]:
    out: Dict[str, List[int]] = {}
    for p in parts:
        out.setdefault(p.topic, []).append(p.partition)
    return out


def _normalise_position(position: Any) -> Position:
    """A position from :meth:`KafkaSource.position`, possibly through JSON (string keys)."""
    if not isinstance(position, dict):
        raise ConfigError(f"a Kafka position is {{topic: {{partition: offset}}}}, got {position!r}")
    out: Position = {}
    for topic, parts in position.items():
        if not isinstance(parts, dict):
            raise ConfigError(f"a Kafka position is {{topic: {{partition: offset}}}}; topic {topic!r} has {parts!r}")
        for p, v in parts.items():
            try:
                pid = int(p)
                if isinstance(v, (list, tuple)):
                    off: Union[int, List[int]] = [int(v[0]), int(v[1])]
                    if off[1] == 0:
                        off = off[0]
                else:
                    off = int(v)
            except (TypeError, ValueError, IndexError) as exc:
                raise ConfigError(f"Kafka position: topic {topic!r} partition {p!r}: bad offset {v!r}") from exc
            out.setdefault(str(topic), {})[pid] = off
    return out
