"""W3's realistic stream (benchmarks/w3data.py) from an 8-partition Kafka topic: the partitions,
each with its own disorder, late events and (partition 7) a replayed stretch, are merged by
``kafka_source(event_time="ts")``; the result must equal the DuckDB oracle replayed over the
merge order, whatever the number of readers and window subtasks."""
from __future__ import annotations

from datetime import timedelta

import pytest

import heliosdb as hdb
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
    return topic, w3data.split_reference(data.partitions)


@pytest.mark.parametrize("readers,parallelism", [(1, 1), (3, 2)])
def test_w3_from_eight_partitions_matches_the_oracle(kafka, w3_topic, readers, parallelism):
    topic, ref = w3_topic
    out = heliosdb_w3(None, parallelism, kafka={"bootstrap": kafka.bootstrap, "topic": topic,
                                                "readers": readers})
    w3data.validate(out, ref)


def test_w3_without_the_event_time_merge_loses_nothing_and_lates_only_what_its_partition_does(kafka, w3_topic):
    """Each partition a split with its own watermark: partitions read in whatever order the
    readers fetch them.  Every event is counted or in the late output, and an event is late
    only if it is late within its own partition (``split_reference``'s late rows): the
    watermark, the smallest over the partitions, is never above a row's own partition's.
    (Which of those rows are late depends on the read pace, as in Flink.)"""
    topic, ref = w3_topic
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=2))
    src = (env.kafka_source(topic, kafka.bootstrap, bounded=True).deserialize_arrow(w3data.SCHEMA)
           .set_parallelism(3)
           .with_watermark(time="ts", max_out_of_orderness=timedelta(milliseconds=w3data.BOUND_MS)))
    out = w3data.run_w3(env, src)
    final = w3data.final_rows(out["tumbling"])
    assert sum(final["count"].to_pylist()) + out["tumbling_late"].num_rows == N
    late = {tuple(r.values()) for r in out["tumbling_late"].select(["ts", "user", "value"]).to_pylist()}
    own = {tuple(r.values()) for r in ref["tumbling_late"].to_pylist()}
    assert late <= own
