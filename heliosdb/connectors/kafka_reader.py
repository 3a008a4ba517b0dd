"""The running Kafka source: what :meth:`KafkaSource.build` returns and the executor polls.

``open()`` resolves every partition of the topic(s) and its start offset
(:mod:`~heliosdb.connectors.kafka_start`) and assigns the partitions to reader threads
(:mod:`~heliosdb.connectors.kafka_fetch`), partition ``i`` (in topic, partition order) to
reader ``i % readers``.  Readers queue decoded rows per partition; ``poll()`` releases about
one micro-batch of them, merged by event time or round robin
(:mod:`~heliosdb.connectors.kafka_merge`), and writes the dead letters of the messages they
came from (:mod:`~heliosdb.connectors.kafka_dead_letters`).  Consumer-group rebalancing is
not used (partitions are assigned, as positions come from checkpoints); the group is only
where positions are committed for monitoring.

``position()`` is ``{topic: {partition: next_offset}}`` for every row ``poll()`` has returned
(a partition inside a multi-row Arrow message shows ``[offset, rows_already_returned]``);
``seek(position)`` starts the next ``open()`` there.  The checkpoint coordinator stores the
position in its manifest and seeks a restored job to it; ``commit_offsets()`` writes a
position to the consumer group, for monitoring.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from .base import Piece, SourceReader, SourceSpec
from .kafka_fetch import Decoder, Fetcher
from .kafka_merge import Fetched, Partition, PartitionMerge, Position
from .kafka_start import Connection, kafka, normalise_position

log = logging.getLogger("heliosdb.kafka")


class KafkaReader(SourceReader):
    """One run's read of a :class:`~heliosdb.connectors.kafka.KafkaSource` (see the module
    docstring), which builds it with its ``connection``, where to start, its ``decoder``
    (with the run's dead letters), whether partitions are ``merged`` on event time, the rows
    queued per partition before it pauses (``buffer_rows``), the number of ``readers`` (None:
    a default) and the split each partition is (``split_key``).  Building it contacts no
    broker; ``open()`` does."""

    replayable = True               # position() / seek(): checkpoints restore it

    def __init__(self, spec: SourceSpec, connection: Connection, start_offsets: Position, *,
                 decoder: Decoder, merged: bool, buffer_rows: int, readers: Optional[int],
                 split_key: Callable[[Partition], tuple]):
        super().__init__(spec)
        self.connection = connection
        self.start_offsets = dict(start_offsets)
        self.decoder = decoder
        self.dead_letters = decoder.dead
        self.merged = merged
        self.buffer_rows = buffer_rows
        self.readers = readers
        self.split_key = split_key
        #: The columns it yields (the plan's projection).
        self.columns = list(self.schema.names)
        self._cond = threading.Condition()
        self._error: Optional[BaseException] = None
        self._stopping = False
        self._opened = False
        self._control: Any = None          # the consumer that commits positions to the group
        self._fetchers: List[Fetcher] = []
        self._merge = PartitionMerge([], merged, buffer_rows)

    def attach_metrics(self, metrics: Any) -> None:
        """Count dead letters in the job's metrics (``streaming_dead_letters_total``)."""
        self.dead_letters.attach_metrics(metrics.dead_letters)

    # -- positions -------------------------------------------------------------------------------
    def seek(self, position: Any) -> None:
        """Start at ``position`` (as :meth:`position` returns it, possibly through JSON) when
        the source next opens; partitions it does not name start as usual."""
        self.start_offsets = normalise_position(position)

    def position(self) -> Position:
        """The next offset of every partition after the rows ``poll()`` has returned:
        ``{topic: {partition: offset}}``, or ``[offset, rows]`` inside a multi-row message."""
        with self._cond:
            return self._merge.position()

    def commit_offsets(self, position: Any = None) -> None:
        """Write ``position`` (default: the current one) to the consumer group, for monitoring
        (lag dashboards); positions are restored from checkpoints, not from the group."""
        ck = kafka()
        if self._control is None or self.connection.group_id is None:
            return
        pos = normalise_position(position) if position is not None else self.position()
        tps = [ck.TopicPartition(t, p, v if isinstance(v, int) else v[0])
               for t, parts in pos.items() for p, v in parts.items()]
        if tps:
            try:
                self._control.commit(offsets=tps, asynchronous=False)
            except ck.KafkaException as exc:
                log.warning("kafka source: committing offsets to group %r failed: %s",
                            self.connection.group_id, exc)

    # -- running ---------------------------------------------------------------------------------
    def open(self, batch_size: int) -> None:
        super().open(batch_size)
        conn = self.connection
        self._error = None
        self._stopping = False
        self._fetchers = []
        self._control = conn.consumer()
        try:
            parts = conn.resolve(self._control, self.start_offsets)
        except BaseException:
            self._control.close()          # the executor closes only sources that opened
            self._control = None
            raise
        self._opened = True
        splits = self.splits
        if splits is not None:
            splits.reset()
            splits.declare([self.split_key(p) for p in parts])
        self._merge = PartitionMerge(parts, self.merged, self.buffer_rows, splits, self.split_key)
        self.dead_letters.open()
        # Default: a reader per core (at least 2), at most one per partition.  Creating the
        # client's message objects holds the GIL, decoding does not: two readers overlap one's
        # consume with the other's decode (JSON W1 from 4 partitions on 2 cores: 0.26-0.29 M
        # events/s with 1 reader, 0.35-0.43 M with 2, no better with 4).
        n = self.readers or min(len(parts), max(2, os.cpu_count() or 2))
        n = min(n, len(parts))
        for i in range(n):
            mine = [p for p in parts if p.index % n == i and not p.finished()]
            if mine:
                self._fetchers.append(Fetcher(conn, mine, i, self.decoder, batch_size, self._push,
                                              self._fail, self._is_stopping))
        for f in self._fetchers:
            f.start()
        log.info("kafka source: %d partitions of %s, %d readers, from %s", len(parts),
                 list(conn.topics), len(self._fetchers), self.position())

    def poll(self, timeout_s: float) -> Optional[List[Piece]]:
        deadline = time.monotonic() + timeout_s
        merge = self._merge
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._error
                taken = merge.take(self.batch_size)
                for p in taken.resume:
                    self._resume(p)
                if taken.slices:
                    break
                if merge.finished():
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                t0 = time.perf_counter_ns()
                self._cond.wait(left)
                self.waited_ns += time.perf_counter_ns() - t0     # idle, though rows may follow
        pieces, dead = merge.build(taken)
        if dead:
            self.dead_letters.write(dead)
        return pieces

    def _resume(self, p: Partition) -> None:
        for f in self._fetchers:
            if p in f.parts:
                f.resume(p)

    def close(self) -> None:
        if not self._opened:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for f in self._fetchers:
            f.join()
        failed = self._error is not None
        self.dead_letters.close(failed)
        if self._control is not None:
            if not failed and self._merge.finished():
                self.commit_offsets()       # a bounded read that reached its end
            self._control.close()
            self._control = None

    # -- called by the reader threads ------------------------------------------------------------
    def _is_stopping(self) -> bool:
        return self._stopping

    def _push(self, fetched: List[Fetched], eofs: Dict[Partition, int]) -> List[Partition]:
        """Queue one fetch (atomically, see :meth:`PartitionMerge.push`); the partitions to
        pause."""
        with self._cond:
            pause = self._merge.push(fetched, eofs)
            self._cond.notify_all()
        return pause

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = exc
            self._cond.notify_all()
