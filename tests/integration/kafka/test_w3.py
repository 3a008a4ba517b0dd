"""W3's realistic stream (benchmarks/w3data.py) from an 8-partition Kafka topic: the partitions,
each with its own disorder, late events and (partition 7) a replayed stretch, are merged by
``kafka_source(event_time="ts")``; the result must equal the DuckDB oracle replayed over the
merge order, whatever the number of readers and window subtasks."""
from __future__ import annotations

import pytest

from benchmarks import w3data
from benchmarks.w3 import arrow_messages, heliosdb_w3

from .broker import new_topic, produce

N = 50_000


@pytest.fixture(scope="module")
def w3_topic(kafka):
    data = w3data.make_data(N)
    topic = new_topic(kafka, partitions=w3data.PARTITIONS, prefix="w3")
    values, parts = arrow_messages(data.partitions, rows=1_000)
    produce(kafka, topic, values, partitions=parts)
    return topic, w3data.duckdb_w3(w3data.merge_order(data.partitions))


@pytest.mark.parametrize("readers,parallelism", [(1, 1), (3, 2)])
def test_w3_from_eight_partitions_matches_the_oracle(kafka, w3_topic, readers, parallelism):
    topic, ref = w3_topic
    out = heliosdb_w3(None, parallelism, kafka={"bootstrap": kafka.bootstrap, "topic": topic,
                                                "readers": readers})
    w3data.validate(out, ref)
