"""Sink constructors: ``hdb.sinks.memory()``, ``parquet(url)``, ``console()``, ``callback(fn)``."""
from __future__ import annotations

from typing import Callable, Optional, TextIO

import pyarrow as pa

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


__all__ = ["memory", "parquet", "console", "callback", "SinkSpec", "MemorySink", "ParquetSink",
           "ConsoleSink", "CallbackSink"]
