"""Kafka sink: batched produce with confluent-kafka; in exactly-once mode a transactional
producer whose transactions are the engine's epochs.

Each record batch is encoded at once by the sink's :mod:`~heliosdb.formats` format and handed
to librdkafka, which batches, compresses and retries (the producer is idempotent, so a retry
never duplicates).  Without a format the sink is *raw*: the ``value`` column is the payload,
a ``key`` column the key, and every other column a header (the layout of a dead-letter topic).

Exactly once
------------
With ``exactly_once=True`` the producer is transactional (``transactional.id``).  The producer
is created as the job starts (in a checkpointed job when the coordinator restores it, after
sizing its transaction timeout; otherwise at the first batch or idle tick) and calls
``init_transactions()``, which fences any earlier producer with the same id and aborts the
transaction it left open (a crashed run's uncommitted output never becomes visible).
Output is produced inside a transaction that the sink operator's epoch hooks control:

- :meth:`begin_epoch` opens a transaction (done lazily by the first batch of an epoch);
- :meth:`flush` waits until every record of the epoch is acknowledged (the *pre-commit*: a
  checkpoint flushes sinks before it writes its manifest);
- :meth:`commit_epoch` commits the transaction, and with an epoch number records that number
  atomically with it (an offset of the marker group ``{transactional_id}.epochs``), so a
  restarted job can tell with :meth:`committed_epoch` whether its last epoch's output is in;
- :meth:`abort_epoch` aborts it.

Until a checkpoint coordinator drives these hooks (``coordinated = True``), the sink commits by
itself every ``commit_interval`` and at the end of the input.  The transaction timeout is sized
against that interval (at least 3 intervals, and at least 60 s); in a checkpointed job against
the checkpoints instead (at least ``CheckpointConfig.timeout`` and 3 checkpoint intervals: see
:meth:`_KafkaSinkOp.configure_checkpoints`).  A warning is logged when an open transaction has used
80% of its timeout.  A ``read_committed`` consumer sees each committed record
once; records of aborted transactions never.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
from typing import Any, Dict, List, Optional

import pyarrow as pa

from ..errors import ConfigError, ExecutionError
from ..formats import Format
from ..operators.base import Item, Snapshot
from .kafka import client_conf
from .kafka_start import kafka as _kafka
from .sinks import SinkSpec, _SinkOperator

log = logging.getLogger("heliosdb.kafka")

#: An open transaction older than this fraction of the transaction timeout is warned about.
TRANSACTION_WARN_FRACTION = 0.8
_FORMATS = ("json", "msgpack", "avro", "arrow")


class KafkaSink(SinkSpec):
    """Writes record batches to a Kafka topic (see :func:`heliosdb.sinks.kafka`, which gives
    the defaults: times here are seconds).  The transaction timeout is
    ``transaction_timeout_s`` if given, else the larger of three commit intervals and
    ``min_transaction_timeout_s`` (sized again against the checkpoints in a checkpointed job).
    """

    kind = "kafka"

    def __init__(self, topic: str, bootstrap_servers: str, key: Optional[str] = None,
                 format: Any = None, exactly_once: bool = False, *,
                 transactional_id: Optional[str] = None, commit_interval_s: float,
                 transaction_timeout_s: Optional[float] = None, min_transaction_timeout_s: float,
                 timestamp: Optional[str] = None, conf: Optional[Dict[str, Any]] = None):
        if not isinstance(topic, str) or not topic:
            raise ConfigError(f"sinks.kafka() takes a topic name, got {topic!r}")
        if format is not None and not isinstance(format, Format) and format not in _FORMATS:
            raise ConfigError(
                f"sinks.kafka(format=) takes one of {_FORMATS}, a heliosdb.formats Format, or None "
                f"(raw: a 'value' column); got {format!r}. For protobuf use .serialize_protobuf(cls)"
            )
        self.topic = topic
        self.bootstrap_servers = bootstrap_servers
        self.key = key
        self.format = format
        self.exactly_once = bool(exactly_once)
        self.transactional_id = transactional_id
        self.commit_interval_s = commit_interval_s
        if commit_interval_s <= 0:
            raise ConfigError(f"sinks.kafka(commit_interval=) must be positive, got {commit_interval_s:g} s")
        self.min_transaction_timeout_s = min_transaction_timeout_s
        self.transaction_timeout_given = transaction_timeout_s is not None
        self.transaction_timeout_s = (max(min_transaction_timeout_s, 3 * commit_interval_s)
                                      if transaction_timeout_s is None else transaction_timeout_s)
        if self.exactly_once and self.transaction_timeout_s < 2 * self.commit_interval_s:
            raise ConfigError(
                f"sinks.kafka(): transaction_timeout {self.transaction_timeout_s:g}s is shorter than two "
                f"commit intervals ({self.commit_interval_s:g}s); the broker would abort transactions "
                "before they commit. Raise transaction_timeout or shorten the interval"
            )
        self.timestamp = timestamp
        self.conf = dict(conf or {})
        self.operators: List["_KafkaSinkOp"] = []

    # -- formats ---------------------------------------------------------------------------------
    def _with(self, fmt: Any) -> "KafkaSink":
        out = copy.copy(self)
        out.format = fmt
        out.operators = []
        return out

    def serialize_json(self) -> "KafkaSink":
        """Write each row as a JSON object.

        >>> KafkaSink("out", "127.0.0.1:9092", commit_interval_s=10, min_transaction_timeout_s=60
        ...           ).serialize_json().format
        'json'
        """
        return self._with("json")

    def serialize_msgpack(self) -> "KafkaSink":
        """Write each row as a MessagePack map."""
        return self._with("msgpack")

    def serialize_avro(self, schema: Any = None, wire_format: str = "plain",
                       schema_id: Optional[int] = None) -> "KafkaSink":
        """Write each row as Avro (the schema derived from the stream's if not given);
        ``wire_format="confluent"`` prefixes the magic byte and ``schema_id``."""
        if schema is None and wire_format == "plain" and schema_id is None:
            return self._with("avro")
        from ..formats.avro import AvroFormat

        if schema is None:
            return self._with(("avro", wire_format, schema_id))
        return self._with(AvroFormat(schema, wire_format=wire_format, schema_id=schema_id))

    def serialize_protobuf(self, message_class: Any) -> "KafkaSink":
        """Write each row as a message of ``message_class``."""
        from ..formats.protobuf import ProtobufFormat

        return self._with(ProtobufFormat(message_class))

    def serialize_arrow(self, max_message_bytes: Optional[int] = None,
                        compression: Optional[str] = None) -> "KafkaSink":
        """Write record batches as Arrow IPC messages (no per-row work; cut to Kafka's size)."""
        from ..formats.arrow_ipc import DEFAULT_MAX_MESSAGE_BYTES, ArrowIpcFormat

        return self._with(ArrowIpcFormat(None, max_message_bytes or DEFAULT_MAX_MESSAGE_BYTES, compression))

    def _format_for(self, schema: pa.Schema) -> Optional[Format]:
        fmt = self.format
        if fmt is None or isinstance(fmt, Format):
            if fmt is not None and fmt.schema is None:
                return fmt.with_schema(schema)
            return fmt
        from ..formats.arrow_ipc import ArrowIpcFormat
        from ..formats.avro import AvroFormat, arrow_to_avro
        from ..formats.json import JsonFormat
        from ..formats.msgpack import MsgpackFormat

        if isinstance(fmt, tuple):
            _, wire, sid = fmt
            return AvroFormat(arrow_to_avro(schema), wire_format=wire, schema_id=sid)
        return {"json": JsonFormat, "msgpack": MsgpackFormat, "arrow": ArrowIpcFormat,
                "avro": lambda s: AvroFormat(arrow_to_avro(s))}[fmt](schema)

    def describe(self) -> str:
        fmt = self.format if isinstance(self.format, str) else (
            "raw" if self.format is None else self.format.describe() if isinstance(self.format, Format)
            else "avro")
        mode = "exactly once" if self.exactly_once else "at least once"
        return f"kafka {self.topic!r} at {self.bootstrap_servers} ({fmt}, {mode})"

    def bind(self, schema: pa.Schema, name: str) -> "_KafkaSinkOp":
        fmt = self._format_for(schema)
        if fmt is None:
            i = schema.get_field_index("value")
            t = schema.field(i).type if i >= 0 else None
            if t is None or not (pa.types.is_binary(t) or pa.types.is_string(t)
                                 or pa.types.is_large_binary(t) or pa.types.is_large_string(t)):
                raise ConfigError(
                    f"step {name!r}: sinks.kafka({self.topic!r}) without a format writes the 'value' "
                    f"column (binary or string) as the payload, but the stream has "
                    f"{[f'{f.name}: {f.type}' for f in schema]}; pick a format, e.g. .serialize_json()"
                )
        for col in (self.key, self.timestamp):
            if col is not None and col not in schema.names:
                raise ConfigError(f"step {name!r}: sinks.kafka({self.topic!r}): no column {col!r} in {schema.names}")
        if self.key is not None and fmt is not None and fmt.rows_per_message != 1:
            raise ConfigError(f"step {name!r}: sinks.kafka(key=) needs one row per message; the "
                              f"{fmt.name} format writes many rows per message")
        op = _KafkaSinkOp(name, schema, self, fmt)
        self.operators.append(op)
        return op


class _KafkaSinkOp(_SinkOperator):
    kind = "kafka sink"
    #: Transactions commit when the checkpoint's epoch commits (exactly-once).
    commits = True

    def __init__(self, name: str, schema: pa.Schema, spec: KafkaSink, fmt: Optional[Format]):
        super().__init__(name, schema, spec)
        self.fmt = fmt
        self.coordinated = False        # a checkpoint coordinator drives the epoch hooks
        self.checkpointed = False       # ... through snapshot()/on_commit()/recover() (set by recover)
        self._pending: List[tuple] = []
        self._uncommitted: List[pa.Table] = []
        self.records = 0
        self.epoch: Optional[int] = None
        self.transaction_started = 0.0  # monotonic time the open transaction began (0: none)
        self._warned = False
        self._errors: List[str] = []
        self._lock = threading.Lock()
        self.transactional_id = spec.transactional_id or f"heliosdb.{spec.topic}.{name}"
        self.transaction_timeout_s = spec.transaction_timeout_s
        self._producer = None
        self._marker = None             # the consumer that reads the epoch marker back

    @property
    def producer(self):
        """The confluent-kafka producer, created on first use (so a checkpoint coordinator can
        size its transaction timeout first)."""
        if self._producer is None:
            self._open_producer()
        return self._producer

    def _open_producer(self) -> None:
        ck = _kafka()
        spec = self.spec
        conf = {
            "bootstrap.servers": spec.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "partitioner": "murmur2_random",          # the Java client's: same keys, same partitions
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            "logger": log,
        }
        if spec.exactly_once:
            conf["transactional.id"] = self.transactional_id
            conf["transaction.timeout.ms"] = int(self.transaction_timeout_s * 1000)
        conf.update(client_conf(spec.conf))
        self._producer = ck.Producer(conf)
        if spec.exactly_once:
            self._call("init_transactions", self._producer.init_transactions, self.transaction_timeout_s)

    def configure_checkpoints(self, interval_s: float, timeout_s: float) -> None:
        """A checkpoint coordinator will drive this sink: size the transaction timeout against
        its checkpoints.  A transaction opens at an epoch's barrier and commits once the
        epoch's manifest is written, so it can live as long as a checkpoint may take
        (``CheckpointConfig.timeout``); without an explicit ``transaction_timeout`` the sink
        uses at least that, at least 3 checkpoint intervals, and at least 60 s.  An explicit
        timeout shorter than the checkpoint timeout is kept, with a warning."""
        if not self.spec.exactly_once:
            return
        if self.spec.transaction_timeout_given:
            if self.transaction_timeout_s < timeout_s:
                log.warning(
                    "step %r: sinks.kafka(transaction_timeout=%gs) is shorter than the checkpoint "
                    "timeout (%gs): a checkpoint slower than %gs makes the broker abort the epoch's "
                    "transaction and the job fail. Raise transaction_timeout (the broker's "
                    "transaction.max.timeout.ms caps it, 15 min by default) or lower "
                    "CheckpointConfig(timeout=)", self.name, self.transaction_timeout_s, timeout_s,
                    self.transaction_timeout_s, extra={"operator": self.name})
            return
        want = max(self.spec.min_transaction_timeout_s, 3 * interval_s, timeout_s)
        if want != self.transaction_timeout_s:
            log.debug("step %r: Kafka transaction timeout %gs (checkpoints every %gs, timeout %gs)",
                      self.name, want, interval_s, timeout_s, extra={"operator": self.name})
            self.transaction_timeout_s = want
            if self._producer is not None:
                self._producer.flush(5)
                self._open_producer()         # its init_transactions() fences the first one

    # -- producing -------------------------------------------------------------------------------
    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            with self._lock:
                if len(self._errors) < 10:
                    self._errors.append(f"partition {msg.partition()}: {err}")

    def _check(self) -> None:
        if self._errors:
            raise ExecutionError(
                f"step {self.name!r}: delivering to Kafka topic {self.spec.topic!r} failed: "
                f"{'; '.join(self._errors)}"
            )

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        if not batch.num_rows:
            return []
        spec = self.spec
        if self.fmt is None:
            values = batch.column(batch.schema.get_field_index("value")).to_pylist()
        else:
            values = self.fmt.encode(batch)
        keys = None
        key_col = spec.key if spec.key is not None else ("key" if self.fmt is None and "key" in batch.schema.names else None)
        if key_col is not None:
            keys = _keys(batch.column(batch.schema.get_field_index(key_col)))
        stamps = None
        if spec.timestamp is not None:
            col = batch.column(batch.schema.get_field_index(spec.timestamp))
            if pa.types.is_timestamp(col.type):
                col = col.cast(pa.timestamp("ms", col.type.tz))
            stamps = col.cast(pa.int64()).to_pylist()
        headers = None
        if self.fmt is None:
            names = [n for n in batch.schema.names if n not in ("value", key_col)]
            if names:
                cols = [batch.column(batch.schema.get_field_index(n)).to_pylist() for n in names]
                headers = [[(n, None if v is None else str(v).encode()) for n, v in zip(names, row)]
                           for row in zip(*cols)]
        if self.checkpointed:
            # A checkpointed job: the epoch's records wait for its barrier (snapshot()).
            self._pending.append((values, keys, stamps, headers))
            self.records += len(values)
            return []
        if spec.exactly_once and not self.transaction_started:
            self.begin_epoch(self.epoch)
        self._produce(values, keys, stamps, headers)
        self.records += len(values)
        self._check()
        self._maybe_commit()
        return []

    def _produce(self, values: List[bytes], keys, stamps, headers) -> None:
        topic = self.spec.topic
        producer = self.producer
        produce = producer.produce
        if keys is None and stamps is None and headers is None:
            for v in values:
                while True:
                    try:
                        produce(topic, v)
                        break
                    except BufferError:
                        producer.poll(0.05)
        else:
            n = len(values)
            keys = keys or [None] * n
            for i, v in enumerate(values):
                kw = {}
                if stamps is not None and stamps[i] is not None:
                    kw["timestamp"] = stamps[i]
                if headers is not None:
                    kw["headers"] = [h for h in headers[i] if h[1] is not None]
                while True:
                    try:
                        produce(topic, v, keys[i], **kw)
                        break
                    except BufferError:
                        producer.poll(0.05)
        producer.poll(0)

    def on_tick(self, now: int) -> List[Item]:
        self.producer.poll(0)
        self._check()
        self._maybe_commit()
        return []

    # -- epochs ----------------------------------------------------------------------------------
    def _maybe_commit(self) -> None:
        if not self.spec.exactly_once or not self.transaction_started:
            return
        age = time.monotonic() - self.transaction_started
        if not self.coordinated and age >= self.spec.commit_interval_s:
            self.commit_epoch(self.epoch)
            return
        limit = self.transaction_timeout_s
        if age >= TRANSACTION_WARN_FRACTION * limit and not self._warned:
            self._warned = True
            log.warning(
                "step %r: the Kafka transaction on %r has been open %.1f s of its %.0f s timeout; "
                "if it is not committed in time the broker aborts it (is a checkpoint stuck? raise "
                "transaction_timeout or checkpoint more often)", self.name, self.spec.topic, age, limit,
                extra={"operator": self.name})

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every record produced so far is acknowledged (the pre-commit)."""
        if self._producer is None:
            return                           # nothing was ever produced
        timeout = self.transaction_timeout_s if timeout is None else timeout
        left = self._producer.flush(timeout)
        self._check()
        if left:
            raise ExecutionError(f"step {self.name!r}: {left} records to Kafka topic {self.spec.topic!r} "
                                 f"still unacknowledged after {timeout:g}s (is the broker reachable?)")

    def begin_epoch(self, epoch: Optional[int] = None) -> None:
        """Open the transaction of ``epoch`` (exactly-once only; idempotent while one is open)."""
        self.epoch = epoch
        if not self.spec.exactly_once or self.transaction_started:
            return
        self._call("begin_transaction", self.producer.begin_transaction)
        self.transaction_started = time.monotonic()
        self._warned = False

    def commit_epoch(self, epoch: Optional[int] = None) -> None:
        """Flush and commit the open transaction; with ``epoch``, record it atomically with the
        output (see :meth:`committed_epoch`).  Without exactly-once, a flush."""
        if not self.spec.exactly_once:
            self.flush()
            return
        if not self.transaction_started:
            if epoch is None:
                return
            self.begin_epoch(epoch)            # an empty epoch still records its number
        self.flush()
        if epoch is not None:
            ck = _kafka()
            meta = self._marker_consumer().consumer_group_metadata()
            self._call("send_offsets_to_transaction", self.producer.send_offsets_to_transaction,
                       [ck.TopicPartition(self.spec.topic, 0, int(epoch))], meta,
                       self.transaction_timeout_s)
        self._call("commit_transaction", self.producer.commit_transaction, self.transaction_timeout_s)
        self.transaction_started = 0.0
        log.debug("step %r: committed a Kafka transaction (epoch %s)", self.name, epoch)

    def abort_epoch(self) -> None:
        """Abort the open transaction: its records are never visible to read_committed readers."""
        if not self.spec.exactly_once or not self.transaction_started:
            return
        self.producer.purge(in_queue=True, in_flight=False)
        self._call("abort_transaction", self.producer.abort_transaction, self.transaction_timeout_s)
        self.transaction_started = 0.0
        with self._lock:
            self._errors.clear()

    def committed_epoch(self) -> Optional[int]:
        """The last epoch committed with :meth:`commit_epoch` by this transactional id (None if
        none), read back from the marker group."""
        ck = _kafka()
        tp = self._marker_consumer().committed([ck.TopicPartition(self.spec.topic, 0)], timeout=10)[0]
        return None if tp.offset < 0 else tp.offset

    def _marker_consumer(self):
        c = self._marker
        if c is None:
            ck = _kafka()
            c = self._marker = ck.Consumer({"bootstrap.servers": self.spec.bootstrap_servers,
                                            "group.id": f"{self.transactional_id}.epochs",
                                            "enable.auto.commit": False, "logger": log})
        return c

    def _call(self, what: str, fn, *args) -> Any:
        """A transactional call, retried while its error is retriable (until the timeout)."""
        ck = _kafka()
        deadline = time.monotonic() + self.transaction_timeout_s
        while True:
            try:
                return fn(*args)
            except ck.KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if err is not None and err.retriable() and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                hint = ""
                if err is not None and err.fatal():
                    hint = (" (fatal: another producer with transactional.id "
                            f"{self.transactional_id!r} has fenced this one?)")
                elif err is not None and err.txn_requires_abort():
                    hint = " (the transaction must be aborted; its records will not be visible)"
                raise ExecutionError(f"step {self.name!r}: Kafka {what} on topic {self.spec.topic!r} "
                                     f"failed: {exc}{hint}") from exc

    # -- checkpointed exactly-once -------------------------------------------------------------
    # In a checkpointed job the coordinator drives the transactions.  An epoch's records wait
    # in memory until its barrier; snapshot() then produces them in the open transaction and
    # flushes (the pre-commit), and hands them to the checkpoint as a table; once the epoch's
    # manifest is written, on_commit() commits the transaction together with the epoch's marker.
    # A crash between the manifest and that commit leaves the transaction aborted (a restarted
    # producer fences it), so recover() produces the restored epoch's records again from the
    # checkpoint and commits them, unless Kafka's marker says that epoch is already in.
    _RECORDS = pa.schema([("value", pa.binary()), ("key", pa.binary()), ("timestamp", pa.int64()),
                          ("headers", pa.list_(pa.struct([("name", pa.string()), ("value", pa.binary())])))])

    @property
    def stateful(self) -> bool:  # type: ignore[override]
        return self.checkpointed

    def recover(self, meta: dict, epoch: int, tables: Optional[dict] = None) -> None:
        """Join the checkpoint protocol (exactly-once only) and finish the restored epoch."""
        if not self.spec.exactly_once:
            return                           # at-least-once: replays may repeat records
        self.coordinated = self.checkpointed = True
        _ = self.producer                    # init_transactions(): abort what a crashed run left open
        t = (tables or {}).get("records")
        if epoch and t is not None and t.num_rows:
            done = self.committed_epoch()
            if done is None or done < epoch:
                log.info("step %r: re-producing %d records of epoch %d, whose Kafka commit a crash "
                         "interrupted", self.name, t.num_rows, epoch, extra={"operator": self.name, "epoch": epoch})
                self.begin_epoch(epoch)
                self._produce_table(t)
                self.commit_epoch(epoch)

    def _records_table(self) -> pa.Table:
        values, keys, stamps, headers = [], [], [], []
        for v, k, st, h in self._pending:
            n = len(v)
            values += v
            keys += k if k is not None else [None] * n
            stamps += st if st is not None else [None] * n
            headers += ([[{"name": a, "value": b} for a, b in row if b is not None] for row in h]
                        if h is not None else [None] * n)
        self._pending = []
        return pa.table([pa.array(values, pa.binary()), pa.array(keys, pa.binary()),
                         pa.array(stamps, pa.int64()), pa.array(headers, self._RECORDS.field("headers").type)],
                        schema=self._RECORDS)

    def _produce_table(self, t: pa.Table) -> None:
        headers = t.column("headers").to_pylist()
        self._produce(t.column("value").to_pylist(), t.column("key").to_pylist(),
                      t.column("timestamp").to_pylist(),
                      [[(h["name"], h["value"]) for h in (row or [])] for row in headers])

    def snapshot(self) -> Snapshot:
        """Barrier: produce the epoch's records in the transaction and flush them (pre-commit);
        the records of every not yet committed epoch go into the checkpoint."""
        epoch = self.snapshot_epoch
        t = self._records_table()
        self.begin_epoch(epoch)
        if t.num_rows:
            self._produce_table(t)
        self.flush()
        self._uncommitted.append(t)
        return Snapshot({"records": pa.concat_tables(self._uncommitted)}, {"epoch": epoch})

    def on_commit(self, meta: dict) -> None:
        """The epoch's manifest is written: commit its transaction (with the epoch marker)."""
        self.commit_epoch(meta.get("epoch"))
        self._uncommitted = []

    # -- end -------------------------------------------------------------------------------------
    def close(self) -> List[Item]:
        if self.checkpointed:
            # The final epoch commits on the checkpoint writer's thread after this; the
            # coordinator releases the producer (finish()) once it has.
            self.flush()
            return []
        try:
            if self.spec.exactly_once and not self.coordinated:
                self.commit_epoch(self.epoch)
            else:
                self.flush()
        finally:
            self._release()
        return []

    def finish(self) -> None:
        """The job and its checkpoints are done: release the producer."""
        self._release()

    def abort(self) -> None:
        try:
            if self.spec.exactly_once and self.transaction_started:
                self.abort_epoch()
            elif self._producer is not None:
                self._producer.flush(5)
        except Exception:  # noqa: BLE001 - aborting after a failure: the original error matters
            log.exception("step %r: aborting the Kafka transaction failed", self.name)
        finally:
            self._release()

    def _release(self) -> None:
        marker = self._marker
        if marker is not None:
            marker.close()
            self._marker = None


def _keys(col: pa.Array) -> List[Optional[bytes]]:
    """Message keys of a column: bytes as they are, text as UTF-8, integers as their decimal
    digits (by Arrow, in one pass), anything else as ``str(value)`` in UTF-8."""
    t = col.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return col.to_pylist()
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t):
        return col.cast(pa.string()).cast(pa.binary()).to_pylist()
    return [_key_bytes(k) for k in col.to_pylist()]


def _key_bytes(k: Any) -> Optional[bytes]:
    if k is None or isinstance(k, bytes):
        return k
    return str(k).encode()

