"""Where a Kafka read starts: the client, the topics' partitions and each one's start offset,
and positions as checkpoints store them.

A start offset is, in this order: the position the source was seeked to (``start_offsets=``
or a restored checkpoint), the consumer group's committed offset, else ``auto.offset.reset``.
A lookup that fails (a coordinator still starting, a timeout) is retried with backoff until
the source's ``startup_timeout``; then the job fails naming what could not be read and what
to do.  An error is never taken for "no committed offset": that would read the topic again,
or skip data.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple, Union

import pyarrow as pa

from ..errors import ConfigError, ExecutionError
from .kafka_merge import Partition, Position

log = logging.getLogger("heliosdb.kafka")

#: Start-position lookups that fail are retried after 0.1 s, 0.2 s, ... at most 2 s apart,
#: each try waiting 1-5 s for its answer, until the source's startup_timeout.
_RETRY_FIRST_S, _RETRY_MAX_S = 0.1, 2.0
_ATTEMPT_MIN_S, _ATTEMPT_MAX_S = 1.0, 5.0


def kafka() -> Any:
    """The ``confluent_kafka`` module (a ConfigError saying how to install it if absent)."""
    try:
        import confluent_kafka
    except ImportError as exc:  # pragma: no cover - a dependency of the kafka extra
        raise ConfigError("Kafka needs confluent-kafka: pip install 'heliosdb-streaming[kafka]'") from exc
    return confluent_kafka


def normalise_position(position: Any) -> Position:
    """A position as :meth:`KafkaReader.position` reports it, possibly through JSON (string
    keys); a multi-row message's ``[offset, 0]`` is the plain offset.

    >>> normalise_position({"orders": {"0": 42, "3": [7, 120], "4": [9, 0]}})
    {'orders': {0: 42, 3: [7, 120], 4: 9}}
    """
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


def _committed(consumer: Any, partitions: list, timeout_s: float) -> list:
    """The group's committed offsets (``consumer.committed``): the seam tests replace to make
    the coordinator fail."""
    return consumer.committed(partitions, timeout=timeout_s)


def _raise_partition_error(partitions: list) -> list:
    """``partitions`` as they are, or the KafkaException of the first that carries an error
    (``committed()`` reports some errors per partition, not by raising)."""
    for tp in partitions:
        if tp.error is not None:
            raise kafka().KafkaException(tp.error)
    return partitions


def _watermarks(consumer: Any, partition: Any, timeout_s: float) -> Tuple[int, int]:
    """A partition's log start and end offsets (``consumer.get_watermark_offsets``)."""
    return consumer.get_watermark_offsets(partition, timeout=timeout_s)


def _by_topic(parts: List[Partition]) -> Dict[str, List[int]]:
    out: Dict[str, List[int]] = {}
    for p in parts:
        out.setdefault(p.topic, []).append(p.partition)
    return out


@dataclass(frozen=True)
class Connection:
    """What a Kafka source connects with: the topics, the brokers, the consumer settings
    (librdkafka's, the source's defaults with the user's on top), the group, how long
    start-up may take, and whether the read is bounded.

    >>> c = Connection(("t",), "127.0.0.1:9092", None, {"auto.offset.reset": "latest"}, 30.0, False)
    >>> c.reset
    'latest'
    """

    topics: Tuple[str, ...]
    bootstrap_servers: str
    group_id: Any
    conf: Dict[str, Any]
    startup_timeout_s: float
    bounded: bool

    @property
    def reset(self) -> str:
        return str(self.conf.get("auto.offset.reset", "earliest"))

    def consumer(self, **overrides: Any) -> Any:
        """A new consumer with these settings (and ``overrides``)."""
        return kafka().Consumer({**self.conf, **overrides})

    def resolve(self, consumer: Any, start_offsets: Position) -> List[Partition]:
        """Every partition of the topics with its start (and, bounded, end) offset."""
        ck = kafka()
        deadline = time.monotonic() + self.startup_timeout_s
        parts: List[Partition] = []
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
                parts.append(Partition(topic, pid, len(parts)))
        committed = {}
        unset = [p for p in parts if start_offsets.get(p.topic, {}).get(p.partition) is None]
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
        # End offsets from a read_uncommitted client: a read_committed one answers the last
        # stable offset, which lags a just-committed transaction until its markers are
        # written, and a bounded read would stop short of it.  (Records of a transaction that
        # ends aborted are skipped on the way, as the reader's end-of-partition events show.)
        ends = self.consumer(**{"isolation.level": "read_uncommitted"}) if self.bounded else consumer
        try:
            self._offsets(parts, ends, start_offsets, committed, deadline)
        finally:
            if ends is not consumer:
                ends.close()
        return parts

    def _offsets(self, parts: List[Partition], consumer: Any, start_offsets: Position,
                 committed: Dict, deadline: float) -> None:
        """Each partition's start offset (and end, bounded), as :meth:`resolve` describes."""
        ck = kafka()
        reset = self.reset
        for p in parts:
            tp = ck.TopicPartition(p.topic, p.partition)
            low, high = self._startup_call(deadline, "the log start and end offsets", [p],
                                           lambda t, tp=tp: _watermarks(consumer, tp, t))
            p.high = high
            start = start_offsets.get(p.topic, {}).get(p.partition)
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

    def _startup_call(self, deadline: float, what: str, parts: List[Partition],
                      call: Callable[[float], Any]) -> Any:
        """``call(timeout_s)`` until it succeeds, retried with backoff (``_RETRY_FIRST_S``
        doubling up to ``_RETRY_MAX_S``) until ``deadline``; then an ExecutionError naming
        ``what``, the topics and partitions, the last error and what to do."""
        ck = kafka()
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

    def peek_schema(self, start_offsets: Position) -> pa.Schema:
        """The schema of the first Arrow IPC message the source would read (at plan time,
        for ``deserialize_arrow()`` without a schema)."""
        ck = kafka()
        consumer = self.consumer()
        try:
            parts = self.resolve(consumer, start_offsets)
            todo = [p for p in parts if (p.stop if p.stop is not None else p.high) > p.offset]
            if not todo:
                raise ConfigError(
                    f"kafka_source({list(self.topics)!r}).deserialize_arrow(): the topic has no message "
                    "to read the schema from; pass deserialize_arrow(schema=...)"
                )
            consumer.assign([ck.TopicPartition(p.topic, p.partition, p.offset) for p in todo])
            deadline = time.monotonic() + self.startup_timeout_s
            while time.monotonic() < deadline:
                for m in consumer.consume(1, 0.5):
                    if m.error() is None and m.value():
                        return pa.ipc.open_stream(pa.py_buffer(m.value())).schema
            raise ConfigError(f"kafka_source({list(self.topics)!r}).deserialize_arrow(): no message "
                              f"arrived within {self.startup_timeout_s:g}s to read the schema from; "
                              "pass schema=")
        finally:
            consumer.close()
