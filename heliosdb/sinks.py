"""Sink constructors: ``hdb.sinks.memory()``, ``parquet(url)``, ``console()``, ``callback(fn)``,
``kafka(topic)``."""
from __future__ import annotations

from typing import Any, Callable, Optional, TextIO

import pyarrow as pa

from ._optional import require, require_storage
from .config import DEFAULT_KAFKA_COMMIT_INTERVAL, DEFAULT_KAFKA_TRANSACTION_TIMEOUT, Duration, kafka_bootstrap, to_nanos
from .connectors.sinks import CallbackSink, ConsoleSink, MemorySink, ParquetSink, SinkSpec


def memory() -> MemorySink:
    """Collect results in memory; ``.to_table()`` after the run.

    >>> memory().kind
    'memory'
    """
    return MemorySink()


def parquet(url: str, storage_options: Optional[dict] = None, rows_per_file: int = 1_000_000,
            compression: str = "zstd") -> ParquetSink:
    """Write zstd Parquet files under ``url`` (any fsspec URL: a path, ``memory://``, ``s3://``).

    >>> parquet("memory://results/").url
    'memory://results/'
    """
    require_storage(url, "sinks.parquet()")
    return ParquetSink(url, storage_options, rows_per_file, compression)


def console(max_rows: int = 20, file: Optional[TextIO] = None) -> ConsoleSink:
    """Print each batch as a text table.

    >>> console(max_rows=5).max_rows
    5
    """
    return ConsoleSink(max_rows, file)


def callback(fn: Callable[[pa.RecordBatch], None]) -> CallbackSink:
    """Call ``fn(batch)`` for every batch.

    >>> callback(print).kind
    'callback'
    """
    return CallbackSink(fn)


def kafka(topic: str, bootstrap_servers: Optional[str] = None, key: Optional[str] = None,
          format: Any = None, exactly_once: bool = False, *,
          commit_interval: Duration = DEFAULT_KAFKA_COMMIT_INTERVAL,
          transaction_timeout: Optional[Duration] = None, **options: Any):
    """Write to a Kafka topic: batched produce, optionally exactly once (transactions).

    ``format`` is ``"json"``, ``"msgpack"``, ``"avro"``, ``"arrow"`` (Arrow IPC, many rows per
    message), a :mod:`heliosdb.formats` format, or None (raw: the ``value`` column is the
    payload, ``key`` the key, other columns headers); ``.serialize_json()`` and friends say the
    same.  ``key`` names the column whose value (as text) keys each message.  With
    ``exactly_once=True`` output is written in transactions (``transactional_id=``, default
    derived from the topic and step), committed every ``commit_interval`` (until checkpoints
    drive them) and at the end; ``read_committed`` readers see each record once.  Other
    options: ``transaction_timeout=``, ``timestamp=`` (a column for the Kafka timestamp),
    ``conf=`` (librdkafka producer settings).  See :mod:`heliosdb.connectors.kafka_sink`.

    >>> spec = kafka("results", bootstrap_servers="127.0.0.1:9092", key="user").serialize_json()
    >>> spec.describe()
    "kafka 'results' at 127.0.0.1:9092 (json, at least once)"
    """
    require("confluent_kafka", "kafka", "sinks.kafka()")
    from .connectors.kafka_sink import KafkaSink

    given = None if transaction_timeout is None else to_nanos(transaction_timeout, "sinks.kafka(transaction_timeout=)")
    return KafkaSink(topic, kafka_bootstrap(bootstrap_servers), key, format, exactly_once,
                     commit_interval_s=to_nanos(commit_interval, "sinks.kafka(commit_interval=)") / 1e9,
                     transaction_timeout_s=None if given is None else given / 1e9,
                     min_transaction_timeout_s=to_nanos(DEFAULT_KAFKA_TRANSACTION_TIMEOUT, "timeout") / 1e9,
                     **options)


__all__ = ["memory", "parquet", "console", "callback", "kafka", "SinkSpec", "MemorySink", "ParquetSink",
           "ConsoleSink", "CallbackSink"]
