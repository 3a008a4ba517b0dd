"""The Kafka source's moving parts: per-partition queues (``_Partition``, ``_Chunk``) and the
reader threads that fetch messages, decode them a partition's batch at a time with the source's
format, and route the records that do not decode (dead letters).  ``connectors/kafka.py`` is
the source itself: partitions, start positions, release order, positions.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Deque, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from ..errors import ConfigError, DataError, ExecutionError
from ..formats import NULL_EVENT_TIME, OVERSIZED, DecodeFailure

if TYPE_CHECKING:  # pragma: no cover
    from .kafka import KafkaSource

log = logging.getLogger("heliosdb.kafka")

_KEY_MIN = -(2**63)
_KEY_MAX = 2**63 - 1
_CONSUME_BATCH = 10_000
#: Without a format, the payload is one binary column.
RAW_SCHEMA = pa.schema([("value", pa.binary())])
#: What a dead-letter sink receives.
DEAD_LETTER_SCHEMA = pa.schema([
    ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
    ("timestamp", pa.timestamp("ms", "UTC")), ("key", pa.binary()), ("value", pa.binary()),
    ("reason", pa.string()), ("field", pa.string()), ("error", pa.string()),
])


def _kafka():
    try:
        import confluent_kafka
    except ImportError as exc:  # pragma: no cover - a dependency of the kafka extra
        raise ConfigError("Kafka needs confluent-kafka: pip install 'heliosdb-streaming[kafka]'") from exc
    return confluent_kafka


# -- per-partition state -------------------------------------------------------------------------
@dataclass
class _Chunk:
    """Decoded rows of one partition, in offset order, some of them possibly released."""

    batch: pa.RecordBatch           # projected columns
    offsets: np.ndarray             # the message offset of each row
    first_row: np.ndarray           # for each row, its index within its message
    keys: Optional[np.ndarray]      # merge keys (running max of event time), when merging
    next_offset: int                # the offset after the last message of the chunk
    ingest_ns: int
    dead: Optional[pa.RecordBatch] = None     # dead letters of these messages (not yet written)
    start: int = 0                  # rows already released

    @property
    def rows(self) -> int:
        return self.batch.num_rows - self.start


@dataclass(eq=False)
class _Partition:
    topic: str
    partition: int
    index: int                       # position in (topic, partition) order
    offset: int = 0                  # the next offset to release (the position)
    skip: int = 0                    # rows of message ``offset`` already released
    stop: Optional[int] = None       # bounded: the end offset
    high: int = 0                    # the end offset when the job opened (caught up past it)
    chunks: Deque[_Chunk] = field(default_factory=deque)
    rows: int = 0                    # rows queued
    max_key: int = _KEY_MIN          # largest merge key seen
    eof_at: int = -1                 # the offset of the last end-of-partition event
    fetched: int = -1                # the offset after the last message read
    paused: bool = False
    released: int = 0                # rows released since the source opened
    announced: bool = False          # its end told to the watermark (Splits.finish)
    # Written by the partition's reader only (published fields above change under the lock).
    decode_max: int = _KEY_MIN       # running max of event time over decoded rows
    seek_skip: int = 0               # rows of message ``seek_offset`` to drop (restore)
    seek_offset: int = -1

    @property
    def label(self) -> str:
        return f"topic {self.topic!r} partition {self.partition}"

    def finished(self) -> bool:
        """Bounded and everything up to the end offset released."""
        return self.stop is not None and not self.chunks and self.offset >= self.stop

    def complete(self) -> bool:
        """No rows are on the way: bounded and read up to the end offset, or caught up with
        the end (past the backlog the job started with).  A complete partition holds no other
        partition back in the merge; its queued rows still merge by key."""
        if self.stop is not None and self.fetched >= self.stop:
            return True
        return self.eof_at >= max(self.high, 0) and self.eof_at >= self.fetched


class _Reader:
    """One consumer and the partitions it reads; decodes on its own thread."""

    def __init__(self, source: KafkaSource, parts: List[_Partition], index: int):
        self.source = source
        self.parts = parts
        self.by_tp = {(p.topic, p.partition): p for p in parts}
        self.index = index
        self._resume: List[_Partition] = []
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"kafka-reader-{index}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.thread.join()

    def resume(self, p: _Partition) -> None:
        with self._lock:
            self._resume.append(p)

    def _run(self) -> None:
        src = self.source
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - reported from poll()
            src._fail(exc)

    def _loop(self) -> None:
        ck = _kafka()
        src = self.source
        consumer = ck.Consumer(src._consumer_conf())
        try:
            consumer.assign([ck.TopicPartition(p.topic, p.partition, p.offset) for p in self.parts])
            # consume() of more than ~10K messages costs more CPU per message, not less.
            batch = min(max(src.batch_size, 1000), _CONSUME_BATCH)
            one_topic = len({p.topic for p in self.parts}) == 1
            topic0 = self.parts[0].topic
            last_warn = 0.0
            active = {(p.topic, p.partition) for p in self.parts}
            while not src._stopping and active:
                with self._lock:
                    resume, self._resume = self._resume, []
                if resume:
                    consumer.resume([ck.TopicPartition(p.topic, p.partition) for p in resume])
                # What is queued now; if nothing, block for the first message only (consume()
                # would wait for a whole batch or its timeout: latency on a live topic).
                msgs = consumer.consume(batch, 0)
                if not msgs:
                    first = consumer.poll(0.05)
                    if first is None:
                        continue
                    msgs = [first]
                    msgs += consumer.consume(batch - 1, 0)
                groups: Dict[Tuple[str, int], list] = {}
                eofs: Dict[_Partition, int] = {}
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        key = (m.topic() or topic0, m.partition())
                        if err.code() == ck.KafkaError._PARTITION_EOF:
                            p = self.by_tp.get(key)
                            if p is not None:
                                eofs[p] = max(eofs.get(p, -1), m.offset())
                                if p.stop is not None and m.offset() >= p.stop:
                                    active.discard(key)
                            continue
                        if err.fatal():
                            raise ExecutionError(f"kafka source: fatal consumer error: {err}")
                        now = time.monotonic()
                        if now - last_warn > 5:
                            log.warning("kafka source: %s (retrying)", err)
                            last_warn = now
                        continue
                    key = (topic0, m.partition()) if one_topic else (m.topic(), m.partition())
                    g = groups.get(key)
                    if g is None:
                        groups[key] = [m]
                    else:
                        g.append(m)
                ingest = time.time_ns()
                decoded = []
                for key, ms in groups.items():
                    p = self.by_tp[key]
                    chunk, fetched = _decode(src, p, ms, ingest)
                    decoded.append((p, chunk, fetched, p.decode_max))
                    if p.stop is not None and fetched >= p.stop:
                        active.discard(key)
                        consumer.pause([ck.TopicPartition(p.topic, p.partition)])
                for p in src._push(decoded, eofs):
                    consumer.pause([ck.TopicPartition(p.topic, p.partition)])
        finally:
            consumer.close()


def _null_times(column: str, payload: pa.RecordBatch, msg_index: Optional[np.ndarray],
                failures: List[DecodeFailure]):
    """Rows without a value in the event-time ``column`` are bad records (reason
    ``null_event_time``): out of the payload, into ``failures`` (by message)."""
    col = payload.column(column)
    if not col.null_count:
        return payload, msg_index, failures
    null = col.is_null().to_numpy(zero_copy_only=False)
    rows = np.arange(payload.num_rows, dtype=np.int64) if msg_index is None else msg_index
    bad = sorted(set(rows[null].tolist()))
    failures = sorted(failures + [DecodeFailure(i, NULL_EVENT_TIME, column, f"no value in {column!r}, the "
                                                "event time of the watermark after the source")
                                  for i in bad], key=lambda f: f.index)
    keep = ~null
    return payload.filter(pa.array(keep)), rows[keep], failures


def _decode(src: KafkaSource, p: _Partition, msgs: list, ingest_ns: int) -> Tuple[Optional[_Chunk], int]:
    """Messages of one partition -> a chunk of rows (projected), its dead letters, merge keys."""
    if p.stop is not None and msgs[-1].offset() >= p.stop:
        msgs = [m for m in msgs if m.offset() < p.stop]
        if not msgs:
            return None, p.stop
    n = len(msgs)
    offsets = np.array([m.offset() for m in msgs], dtype=np.int64)
    fetched = int(offsets[-1]) + 1
    values = [m.value() for m in msgs]
    failures: List[DecodeFailure] = []
    fmt = src.format
    pre: Dict[int, DecodeFailure] = {}
    limit = src.max_record_bytes
    if limit is not None:
        for i, v in enumerate(values):
            if v is not None and len(v) > limit:
                pre[i] = DecodeFailure(i, OVERSIZED, None, f"{len(v):,} bytes, more than max_record_bytes={limit:,}")
    todo = values if not pre else [v for i, v in enumerate(values) if i not in pre]
    todo_index = None if not pre else np.asarray([i for i in range(n) if i not in pre], dtype=np.int64)
    if fmt is None:
        payload = pa.RecordBatch.from_arrays([pa.array(todo, type=pa.binary())], schema=RAW_SCHEMA)
        msg_index = None
    else:
        decoded = fmt.decode(todo)
        payload = decoded.batch
        msg_index = decoded.message_index
        failures = decoded.failures
    if src.null_time is not None and payload.num_rows:
        payload, msg_index, failures = _null_times(src.null_time, payload, msg_index, failures)
    if todo_index is not None:
        failures = [DecodeFailure(int(todo_index[f.index]), f.reason, f.field, f.detail) for f in failures]
        msg_index = todo_index if msg_index is None else todo_index[msg_index]
    if pre:
        failures = sorted(failures + list(pre.values()), key=lambda f: f.index)
    rows = payload.num_rows
    if msg_index is None:
        msg_index = np.arange(rows, dtype=np.int64)    # also cheap when unused: one arange
        identity = True
    else:
        identity = False
    row_offsets = offsets if identity and rows == n else offsets[msg_index]
    # Rows within their message (only multi-row formats have more than one).
    if fmt is not None and fmt.rows_per_message == 0 and rows:
        starts = np.flatnonzero(np.r_[True, msg_index[1:] != msg_index[:-1]])
        first_row = np.arange(rows, dtype=np.int64) - np.repeat(starts, np.diff(np.r_[starts, rows]))
    else:
        first_row = np.zeros(rows, dtype=np.int64)
    # Restoring inside a multi-row message: drop the rows already released.
    if p.seek_skip and n and rows:
        drop = int(np.count_nonzero((row_offsets == p.seek_offset) & (first_row < p.seek_skip)))
        p.seek_skip = 0
        if drop:
            payload, msg_index = payload.slice(drop), msg_index[drop:]
            row_offsets, first_row = row_offsets[drop:], first_row[drop:]
            rows -= drop
    dead = _dead_letter_policy(src, p, msgs, values, offsets, failures) if failures else None
    cols = {}
    full_cols = src._columns
    need = set(full_cols)
    if src.event_time is not None:
        need.add(src.event_time)
    timestamps = None
    if "kafka_timestamp" in need:
        ts = np.fromiter((m.timestamp()[1] for m in msgs), dtype=np.int64, count=n)
        timestamps = ts if identity and rows == n else ts[msg_index]
        cols["kafka_timestamp"] = pa.array(timestamps, type=pa.int64(), mask=timestamps < 0).cast(
            pa.timestamp("ms", "UTC"))
    if "kafka_offset" in need:
        cols["kafka_offset"] = pa.array(row_offsets, type=pa.int64())
    if "kafka_partition" in need:
        cols["kafka_partition"] = pa.array(np.full(rows, p.partition, dtype=np.int32))
    if "kafka_topic" in need:
        cols["kafka_topic"] = pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(rows, dtype=np.int32)), pa.array([p.topic])).cast(pa.string())
    if "kafka_key" in need:
        keys = [m.key() for m in msgs]
        if not (identity and rows == n):
            keys = [keys[i] for i in msg_index]
        cols["kafka_key"] = pa.array(keys, type=pa.binary())
    keys_arr = None
    if src.event_time is not None:
        if src.event_time in cols:
            et = cols[src.event_time]
        else:
            et = payload.column(payload.schema.get_field_index(src.event_time))
        if pa.types.is_timestamp(et.type):
            et = et.view(pa.int64())
        if et.null_count:
            et = et.fill_null(_KEY_MIN)
        et = et.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        keys_arr = np.maximum.accumulate(np.maximum(et, p.decode_max)) if rows else et
        if rows:
            p.decode_max = int(keys_arr[-1])
    arrays = []
    for name in full_cols:
        if name in cols:
            arrays.append(cols[name])
        else:
            arrays.append(payload.column(payload.schema.get_field_index(name)))
    schema = src.schema
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    # A chunk without rows still moves the position past its messages when released.
    return _Chunk(batch, row_offsets, first_row, keys_arr, fetched, ingest_ns, dead=dead), fetched


def _dead_letter_policy(src: KafkaSource, p: _Partition, msgs: list, values: list, offsets: np.ndarray,
                        failures: List[DecodeFailure]) -> Optional[pa.RecordBatch]:
    """Apply ``on_error`` to the messages that did not decode: raise, or count them (and
    return them as dead letters to write)."""
    first = failures[0]
    if src.on_error == "fail":
        raise DataError(
            f"kafka_source: {p.label} offset {int(offsets[first.index])}: cannot decode the message: "
            f"{first.describe()}. Use on_error='dead_letter' (with dead_letter=) or 'skip' to go on "
            "past such records"
        )
    src._count_dead(failures)
    if src.on_error == "skip":
        log.debug("kafka source: %s: skipped %d undecodable messages", p.label, len(failures))
        return None
    idx = [f.index for f in failures]
    ts = [msgs[i].timestamp()[1] for i in idx]
    return pa.RecordBatch.from_arrays([
        pa.array([p.topic] * len(idx), pa.string()),
        pa.array([p.partition] * len(idx), pa.int32()),
        pa.array([int(offsets[i]) for i in idx], pa.int64()),
        pa.array([t if t >= 0 else None for t in ts], pa.int64()).cast(pa.timestamp("ms", "UTC")),
        pa.array([msgs[i].key() for i in idx], pa.binary()),
        pa.array([values[i] for i in idx], pa.binary()),
        pa.array([f.reason for f in failures], pa.string()),
        pa.array([f.field for f in failures], pa.string()),
        pa.array([f.describe() for f in failures], pa.string()),
    ], schema=DEAD_LETTER_SCHEMA)
