"""A Kafka source's reader threads: each has a consumer for its share of the partitions,
fetches messages in batches, and decodes a partition's messages at a time into a
:class:`~heliosdb.connectors.kafka_merge.Chunk` of rows (the format's columns and the Kafka
metadata columns the plan reads), routing the messages that do not decode to the source's
dead letters.  The decoders run mostly outside the GIL, so readers overlap.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from ..errors import ExecutionError
from ..formats import NULL_EVENT_TIME, OVERSIZED, DecodeFailure, Format
from .kafka_dead_letters import DeadLetters
from .kafka_merge import KEY_MIN, Chunk, Fetched, Partition
from .kafka_start import Connection, kafka

log = logging.getLogger("heliosdb.kafka")

_CONSUME_BATCH = 10_000
#: Without a format, the payload is one binary column.
RAW_SCHEMA = pa.schema([("value", pa.binary())])
#: Columns every Kafka source offers next to the decoded fields (unused ones are never built).
METADATA = pa.schema([
    ("kafka_topic", pa.string()),
    ("kafka_partition", pa.int32()),
    ("kafka_offset", pa.int64()),
    ("kafka_timestamp", pa.timestamp("ms", "UTC")),
    ("kafka_key", pa.binary()),
])


class Decoder:
    """Messages of one partition -> a chunk of rows: the source's ``format``, its projected
    ``schema`` (payload and metadata columns), the merge keys when merging on ``event_time``,
    ``null_time`` (a column whose nulls are bad records), ``max_record_bytes``, and where
    bad records go (``dead``)."""

    def __init__(self, fmt: Optional[Format], schema: pa.Schema, event_time: Optional[str],
                 null_time: Optional[str], max_record_bytes: Optional[int], dead: DeadLetters):
        self.format = fmt
        self.schema = schema
        self.event_time = event_time
        self.null_time = null_time
        self.max_record_bytes = max_record_bytes
        self.dead = dead
        self.need = set(schema.names) | ({event_time} if event_time is not None else set())

    def decode(self, p: Partition, msgs: list, ingest_ns: int) -> Tuple[Optional[Chunk], int]:
        """A chunk of ``msgs`` (None if all of them are past a bounded end) and the offset
        after them."""
        if p.stop is not None and msgs[-1].offset() >= p.stop:
            msgs = [m for m in msgs if m.offset() < p.stop]
            if not msgs:
                return None, p.stop
        n = len(msgs)
        offsets = np.array([m.offset() for m in msgs], dtype=np.int64)
        fetched = int(offsets[-1]) + 1
        values = [m.value() for m in msgs]
        payload, msg_index, failures = self._payload(values)
        rows = payload.num_rows
        identity = msg_index is None
        if identity:
            msg_index = np.arange(rows, dtype=np.int64)    # also cheap when unused: one arange
        row_offsets = offsets if identity and rows == n else offsets[msg_index]
        # Rows within their message (only multi-row formats have more than one).
        fmt = self.format
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
        dead = self.dead.handle(p.topic, p.partition, msgs, values, offsets, failures) if failures else None
        cols = self._metadata(p, msgs, msg_index, row_offsets, identity and rows == n)
        keys = self._merge_keys(p, payload, cols) if self.event_time is not None else None
        arrays = [cols[name] if name in cols else payload.column(payload.schema.get_field_index(name))
                  for name in self.schema.names]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        # A chunk without rows still moves the position past its messages when released.
        return Chunk(batch, row_offsets, first_row, keys, fetched, ingest_ns, dead=dead), fetched

    def _payload(self, values: List[Optional[bytes]]
                 ) -> Tuple[pa.RecordBatch, Optional[np.ndarray], List[DecodeFailure]]:
        """The decoded rows, the message of each row (None: row i is message i), and the
        messages that did not decode (too large, not decodable, no event time)."""
        n = len(values)
        failures: List[DecodeFailure] = []
        pre: Dict[int, DecodeFailure] = {}
        limit = self.max_record_bytes
        if limit is not None:
            for i, v in enumerate(values):
                if v is not None and len(v) > limit:
                    pre[i] = DecodeFailure(i, OVERSIZED, None, f"{len(v):,} bytes, more than max_record_bytes={limit:,}")
        todo = values if not pre else [v for i, v in enumerate(values) if i not in pre]
        todo_index = None if not pre else np.asarray([i for i in range(n) if i not in pre], dtype=np.int64)
        if self.format is None:
            payload = pa.RecordBatch.from_arrays([pa.array(todo, type=pa.binary())], schema=RAW_SCHEMA)
            msg_index = None
        else:
            decoded = self.format.decode(todo)
            payload, msg_index, failures = decoded.batch, decoded.message_index, decoded.failures
        if self.null_time is not None and payload.num_rows:
            payload, msg_index, failures = _null_times(self.null_time, payload, msg_index, failures)
        if todo_index is not None:
            failures = [DecodeFailure(int(todo_index[f.index]), f.reason, f.field, f.detail) for f in failures]
            msg_index = todo_index if msg_index is None else todo_index[msg_index]
        if pre:
            failures = sorted(failures + list(pre.values()), key=lambda f: f.index)
        return payload, msg_index, failures

    def _metadata(self, p: Partition, msgs: list, msg_index: np.ndarray, row_offsets: np.ndarray,
                  identity: bool) -> Dict[str, pa.Array]:
        """The Kafka metadata columns some step reads (or the merge needs)."""
        need = self.need
        rows = len(row_offsets)
        cols: Dict[str, pa.Array] = {}
        if "kafka_timestamp" in need:
            ts = np.fromiter((m.timestamp()[1] for m in msgs), dtype=np.int64, count=len(msgs))
            stamps = ts if identity else ts[msg_index]
            cols["kafka_timestamp"] = pa.array(stamps, type=pa.int64(), mask=stamps < 0).cast(
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
            if not identity:
                keys = [keys[i] for i in msg_index]
            cols["kafka_key"] = pa.array(keys, type=pa.binary())
        return cols

    def _merge_keys(self, p: Partition, payload: pa.RecordBatch, cols: Dict[str, pa.Array]) -> np.ndarray:
        """The running maximum of the event time over the partition's rows."""
        name = self.event_time
        et = cols[name] if name in cols else payload.column(payload.schema.get_field_index(name))
        if pa.types.is_timestamp(et.type):
            et = et.view(pa.int64())
        if et.null_count:
            et = et.fill_null(KEY_MIN)
        et = et.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        if not len(et):
            return et
        keys = np.maximum.accumulate(np.maximum(et, p.decode_max))
        p.decode_max = int(keys[-1])
        return keys


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


class Fetcher:
    """One consumer and the partitions it reads; fetches and decodes on its own thread.

    It hands each fetch to ``push`` (the decoded chunks and end-of-partition events; returns
    the partitions to pause), reports an error to ``fail``, and ends when ``stopping()``."""

    def __init__(self, connection: Connection, parts: List[Partition], index: int, decoder: Decoder,
                 batch_size: int, push: Callable[[List[Fetched], Dict[Partition, int]], List[Partition]],
                 fail: Callable[[BaseException], None], stopping: Callable[[], bool]):
        self.connection = connection
        self.parts = parts
        self.by_tp = {(p.topic, p.partition): p for p in parts}
        self.index = index
        self.decoder = decoder
        self.batch_size = batch_size
        self.push, self.fail, self.stopping = push, fail, stopping
        self._resume: List[Partition] = []
        self._lock = threading.Lock()
        self._last_warn = 0.0            # when a retriable consumer error was last logged
        self.thread = threading.Thread(target=self._run, name=f"kafka-reader-{index}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.thread.join()

    def resume(self, p: Partition) -> None:
        """Fetch ``p`` again (it was paused); called from the source thread."""
        with self._lock:
            self._resume.append(p)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - reported from poll()
            self.fail(exc)

    def _tps(self, parts: Sequence[Partition]) -> list:
        ck = kafka()
        return [ck.TopicPartition(p.topic, p.partition) for p in parts]

    def _loop(self) -> None:
        ck = kafka()
        consumer = self.connection.consumer()
        try:
            consumer.assign([ck.TopicPartition(p.topic, p.partition, p.offset) for p in self.parts])
            # consume() of more than ~10K messages costs more CPU per message, not less.
            batch = min(max(self.batch_size, 1000), _CONSUME_BATCH)
            active = {(p.topic, p.partition) for p in self.parts}
            while not self.stopping() and active:
                with self._lock:
                    resume, self._resume = self._resume, []
                if resume:
                    consumer.resume(self._tps(resume))
                # What is queued now; if nothing, block for the first message only (consume()
                # would wait for a whole batch or its timeout: latency on a live topic).
                msgs = consumer.consume(batch, 0)
                if not msgs:
                    first = consumer.poll(0.05)
                    if first is None:
                        continue
                    msgs = [first]
                    msgs += consumer.consume(batch - 1, 0)
                groups, eofs = self._group(msgs, active)
                ingest = time.time_ns()
                decoded: List[Fetched] = []
                for key, ms in groups.items():
                    p = self.by_tp[key]
                    chunk, fetched = self.decoder.decode(p, ms, ingest)
                    decoded.append((p, chunk, fetched, p.decode_max))
                    if p.stop is not None and fetched >= p.stop:
                        active.discard(key)
                        consumer.pause(self._tps([p]))
                pause = self.push(decoded, eofs)
                if pause:
                    consumer.pause(self._tps(pause))
        finally:
            consumer.close()

    def _group(self, msgs: list, active: set) -> Tuple[Dict[Tuple[str, int], list], Dict[Partition, int]]:
        """The messages of one fetch by partition, and its end-of-partition events (a
        bounded partition whose end is reached leaves ``active``); errors are raised
        (fatal) or logged at most every 5 s."""
        ck = kafka()
        one_topic = len({p.topic for p in self.parts}) == 1
        topic0 = self.parts[0].topic
        groups: Dict[Tuple[str, int], list] = {}
        eofs: Dict[Partition, int] = {}
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
                if now - self._last_warn > 5:
                    log.warning("kafka source: %s (retrying)", err)
                    self._last_warn = now
                continue
            key = (topic0, m.partition()) if one_topic else (m.topic(), m.partition())
            g = groups.get(key)
            if g is None:
                groups[key] = [m]
            else:
                g.append(m)
        return groups, eofs
