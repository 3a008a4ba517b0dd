"""A Kafka source's dead letters: what happens to messages that do not decode.

A message that does not decode (see :data:`heliosdb.formats.REASONS`) is handled by the
source's ``on_error``: ``"fail"`` stops the job with an error naming the topic, partition,
offset and field; ``"skip"`` drops it; ``"dead_letter"`` writes it (topic, partition, offset,
timestamp, key, raw value, reason, field, error: :data:`DEAD_LETTER_SCHEMA`) to the
``dead_letter`` sink (``sinks.kafka(topic)`` or ``sinks.parquet(url)``).  Both count it in
``streaming_dead_letters_total{reason=...}``.  The good records of the same batch go on:
good + dead = input.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Optional

import numpy as np
import pyarrow as pa

from ..errors import ConfigError, DataError
from ..formats import DecodeFailure
from ..operators.base import Operator
from .sinks import SinkSpec

log = logging.getLogger("heliosdb.kafka")

#: What ``kafka_source(on_error=)`` accepts.
ON_ERROR = ("fail", "dead_letter", "skip")
#: What a dead-letter sink receives.
DEAD_LETTER_SCHEMA = pa.schema([
    ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
    ("timestamp", pa.timestamp("ms", "UTC")), ("key", pa.binary()), ("value", pa.binary()),
    ("reason", pa.string()), ("field", pa.string()), ("error", pa.string()),
])
#: The name of the dead-letter sink's step.
STEP = "kafka-dead-letters"


def check_policy(on_error: str, dead_letter: Any) -> None:
    """Raise a ConfigError unless ``on_error`` and ``dead_letter`` make a policy.

    >>> check_policy("dead_letter", None)
    Traceback (most recent call last):
    ...
    heliosdb.errors.ConfigError: kafka_source(on_error='dead_letter') needs dead_letter=, e.g. hdb.sinks.kafka('events-dlq') or hdb.sinks.parquet('s3://bucket/dlq/')
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"kafka_source(on_error=) must be one of {ON_ERROR}, got {on_error!r}")
    if on_error == "dead_letter" and dead_letter is None:
        raise ConfigError(
            "kafka_source(on_error='dead_letter') needs dead_letter=, e.g. "
            "hdb.sinks.kafka('events-dlq') or hdb.sinks.parquet('s3://bucket/dlq/')"
        )
    if dead_letter is not None and not isinstance(dead_letter, SinkSpec):
        raise ConfigError(f"kafka_source(dead_letter=) takes a sink such as hdb.sinks.kafka(topic), got {dead_letter!r}")


class DeadLetters:
    """One run's ``on_error`` policy: :meth:`handle` on the reader threads (raise, or count
    and return the dead letters), :meth:`write` on the source thread (to the dead-letter sink,
    bound at :meth:`open`), :meth:`close` at the end (``abort`` if the run failed).

    ``counts`` is reason -> records; with :meth:`attach_metrics`, the job's counts too.

    >>> dl = DeadLetters("skip", None)
    >>> dl.handle("t", 0, [], [b"x"], np.array([7]), [DecodeFailure(0, "malformed", None, "bad")]) is None
    True
    >>> dl.counts
    {'malformed': 1}
    """

    def __init__(self, on_error: str, sink: Optional[SinkSpec]):
        self.on_error = on_error
        self.sink = sink
        self.counts: Dict[str, int] = {}
        self._metrics: Optional[Dict[str, int]] = None
        self._lock = threading.Lock()           # readers count from their own threads
        self._op: Optional[Operator] = None

    def attach_metrics(self, counts: Dict[str, int]) -> None:
        """Count dead letters in ``counts`` too (the job's ``streaming_dead_letters_total``)."""
        self._metrics = counts

    def open(self) -> None:
        if self.sink is not None and self.on_error == "dead_letter":
            self._op = self.sink.bind(DEAD_LETTER_SCHEMA, STEP)

    def handle(self, topic: str, partition: int, msgs: list, values: list, offsets: np.ndarray,
               failures: List[DecodeFailure]) -> Optional[pa.RecordBatch]:
        """Apply ``on_error`` to the messages of one partition that did not decode
        (``failures`` index ``msgs``, ``values`` and ``offsets``): raise, or count them (and
        return them as dead letters to write)."""
        first = failures[0]
        if self.on_error == "fail":
            raise DataError(
                f"kafka_source: topic {topic!r} partition {partition} offset {int(offsets[first.index])}: "
                f"cannot decode the message: {first.describe()}. Use on_error='dead_letter' (with "
                "dead_letter=) or 'skip' to go on past such records"
            )
        self._count(failures)
        if self.on_error == "skip":
            log.debug("kafka source: topic %r partition %d: skipped %d undecodable messages",
                      topic, partition, len(failures))
            return None
        idx = [f.index for f in failures]
        ts = [msgs[i].timestamp()[1] for i in idx]
        return pa.RecordBatch.from_arrays([
            pa.array([topic] * len(idx), pa.string()),
            pa.array([partition] * len(idx), pa.int32()),
            pa.array([int(offsets[i]) for i in idx], pa.int64()),
            pa.array([t if t >= 0 else None for t in ts], pa.int64()).cast(pa.timestamp("ms", "UTC")),
            pa.array([msgs[i].key() for i in idx], pa.binary()),
            pa.array([values[i] for i in idx], pa.binary()),
            pa.array([f.reason for f in failures], pa.string()),
            pa.array([f.field for f in failures], pa.string()),
            pa.array([f.describe() for f in failures], pa.string()),
        ], schema=DEAD_LETTER_SCHEMA)

    def _count(self, failures: List[DecodeFailure]) -> None:
        targets = [self.counts] + ([self._metrics] if self._metrics is not None else [])
        with self._lock:
            for counts in targets:
                for f in failures:
                    counts[f.reason] = counts.get(f.reason, 0) + 1

    def write(self, batches: List[pa.RecordBatch]) -> None:
        """Write dead letters to the sink (none without one)."""
        if self._op is None:
            return
        for b in batches:
            self._op.process_batch(b)

    def close(self, failed: bool) -> None:
        """Flush the sink, or abort it if the run ``failed``."""
        op, self._op = self._op, None
        if op is None:
            return
        if failed:
            op.abort()
        else:
            op.close()
