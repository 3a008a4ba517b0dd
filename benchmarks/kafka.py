"""Kafka benchmarks on one local broker: W1 from Kafka to Kafka (Arrow IPC and JSON), the
serialization formats table on W1's records, and the Kafka source's latency.

    python -m benchmarks.kafka            # records its section of benchmarks/RESULTS.md
    python -m benchmarks.kafka --quick    # smaller runs, prints only

The broker is ``$HELIOSDB_KAFKA_BOOTSTRAP`` if set (``make test``'s services), else one started
here with ``ci/kafka.sh`` (Java 17+, mvn) and stopped at the end.

- **End to end**: W1's first N events are produced to a 4-partition topic (not timed); then
  ``kafka_source(bounded=True, event_time="ts")`` -> W1 (filter, project, 1 s tumbling window
  per key) -> ``sinks.kafka(exactly_once=True)`` runs, timed from ``execute()`` to its return
  (the last transaction committed); events/s = N / seconds, median of the runs.  The output is
  read back with ``read_committed`` and validated against the numpy reference.
- **Serialization**: encode and decode of W1's records by each format (the engine's own
  encoders and decoders, a batch at a time), in MB/s of encoded bytes and events/s, and the
  encoded bytes per event.
- **Latency**: a separate process produces JSON events paced at 100K events/s (``linger.ms=1``);
  the engine reads them with ``batch_timeout`` 10 ms into a sink that records, per event, its
  arrival minus the Kafka timestamp the producer stamped when it produced it (ms resolution);
  events of the first 2 s (connections, first fetches) are not counted.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from heliosdb.testing import kafka_new_topic, kafka_produce, kafka_read

from .results import heading, write_section
from .w1data import make_table, reference, validate, w1_pipeline

ROOT = Path(__file__).resolve().parents[1]
W1_SCHEMA = pa.schema([("ts", pa.int64()), ("key", pa.int64()), ("value", pa.float64()), ("category", pa.string())])
OUT_SCHEMA = pa.schema([("window_start", pa.timestamp("ns", "UTC")), ("window_end", pa.timestamp("ns", "UTC")),
                        ("key", pa.int64()), ("count", pa.int64()), ("sum", pa.float64()),
                        ("min", pa.float64()), ("max", pa.float64()), ("mean", pa.float64())])
ARROW_ROWS_PER_MESSAGE = 10_000
WARMUP_MS = 2_000


# -- the broker --------------------------------------------------------------------------------------
class Broker:
    def __init__(self) -> None:
        self.folder: Optional[str] = None
        self.bootstrap = os.environ.get("HELIOSDB_KAFKA_BOOTSTRAP")
        if self.bootstrap:
            return
        self.folder = tempfile.mkdtemp(prefix="heliosdb-bench-kafka-")
        sh = str(ROOT / "ci" / "kafka.sh")
        subprocess.run(["bash", sh, "install"], check=True)
        subprocess.run(["bash", sh, "start", self.folder], check=True)
        env = dict(line.split("=", 1) for line in Path(self.folder, "env").read_text().splitlines())
        self.bootstrap = env["HELIOSDB_KAFKA_BOOTSTRAP"]

    def close(self) -> None:
        if self.folder:
            subprocess.run(["bash", str(ROOT / "ci" / "kafka.sh"), "stop", self.folder])
            shutil.rmtree(self.folder, ignore_errors=True)

    def topic(self, partitions: int, prefix: str) -> str:
        return kafka_new_topic(self.bootstrap, partitions, f"bench-{prefix}")

    def produce(self, topic: str, values: List[bytes], keys: Optional[List[bytes]] = None,
                partitions: Optional[List[int]] = None) -> None:
        kafka_produce(self.bootstrap, topic, values, keys, partitions, timeout=600,
                      conf={"linger.ms": 20, "batch.size": 1_000_000, "enable.idempotence": False,
                            "queue.buffering.max.kbytes": 2_000_000, "compression.type": "none",
                            "message.max.bytes": 2_000_000})

    def read(self, topic: str) -> List[bytes]:
        return [m.value() for m in kafka_read(self.bootstrap, topic, timeout=600)]


# -- end to end ---------------------------------------------------------------------------------------
def _arrow_messages(table: pa.Table, partitions: int) -> Tuple[List[bytes], List[int]]:
    """W1 in messages of 10K rows, chunk i to partition i % partitions (each partition stays in
    event-time order)."""
    from heliosdb.formats.arrow_ipc import ArrowIpcFormat

    fmt = ArrowIpcFormat(W1_SCHEMA, max_message_bytes=2_000_000)
    batch = table.combine_chunks().to_batches()[0] if table.num_rows else None
    values, parts = [], []
    for i, start in enumerate(range(0, table.num_rows, ARROW_ROWS_PER_MESSAGE)):
        values += fmt.encode(batch.slice(start, ARROW_ROWS_PER_MESSAGE))
        parts.append(i % partitions)
    return values, parts


def run_e2e(broker: Broker, fmt: str, n: int, runs: int) -> Dict[str, object]:
    import heliosdb as hdb
    from heliosdb.formats.arrow_ipc import ArrowIpcFormat
    from heliosdb.formats.json import JsonFormat

    table = make_table(n)
    topic = broker.topic(4, f"w1-{fmt}")
    t0 = time.perf_counter()
    if fmt == "arrow":
        values, parts = _arrow_messages(table, 4)
        broker.produce(topic, values, partitions=parts)
    else:
        batch = table.combine_chunks().to_batches()[0]
        values = JsonFormat(W1_SCHEMA).encode(batch)
        broker.produce(topic, values, keys=[b"%d" % k for k in table["key"].to_pylist()])
        del values
    produced_s = time.perf_counter() - t0
    ref = reference(table)
    times = []
    for r in range(runs):
        out_topic = broker.topic(2, f"w1-{fmt}-out")
        env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=65_536))
        src = env.kafka_source(topic, broker.bootstrap, bounded=True, event_time="ts")
        src = src.deserialize_arrow(W1_SCHEMA) if fmt == "arrow" else src.deserialize_json(W1_SCHEMA)
        sink = hdb.sinks.kafka(out_topic, broker.bootstrap, key=None if fmt == "arrow" else "key",
                               exactly_once=True, transactional_id=f"bench-{out_topic}")
        sink = sink.serialize_arrow() if fmt == "arrow" else sink.serialize_json()
        w1_pipeline(src).sink(sink)
        t0 = time.perf_counter()
        result = env.execute(name=f"w1-kafka-{fmt}")
        dt = time.perf_counter() - t0
        assert result.metrics["streaming_events_processed_total"] == n
        times.append(dt)
        print(f"  {fmt} run {r + 1}: {n / dt / 1e6:.3f} M events/s ({dt:.2f} s)", flush=True)
        if r == 0:
            got = broker.read(out_topic)
            dec = (ArrowIpcFormat(OUT_SCHEMA) if fmt == "arrow" else JsonFormat(OUT_SCHEMA)).decode(got)
            assert not dec.failures, dec.failures[:3]
            validate(pa.Table.from_batches([dec.batch]), ref)
    med = statistics.median(times)
    return {"n": n, "median_s": med, "events_per_s": n / med, "runs": [n / t for t in times],
            "produce_s": produced_s, "output_rows": len(ref["key"])}


# -- serialization table ---------------------------------------------------------------------------------
def _w1_protobuf_class():
    from heliosdb.formats.protobuf import message_class

    return message_class(W1_SCHEMA, "W1Event", "heliosbench")


def run_serialization(n: int, runs: int) -> List[Tuple[str, float, float, float, float, float]]:
    from heliosdb.formats.arrow_ipc import ArrowIpcFormat
    from heliosdb.formats.avro import AvroFormat, arrow_to_avro
    from heliosdb.formats.json import JsonFormat
    from heliosdb.formats.msgpack import MsgpackFormat
    from heliosdb.formats.protobuf import ProtobufFormat

    batch = make_table(n).combine_chunks().to_batches()[0]
    formats = [("JSON", JsonFormat(W1_SCHEMA)), ("MessagePack", MsgpackFormat(W1_SCHEMA)),
               ("Protobuf", ProtobufFormat(_w1_protobuf_class())),
               ("Avro", AvroFormat(arrow_to_avro(W1_SCHEMA, "W1Event"))),
               ("Arrow IPC", ArrowIpcFormat(W1_SCHEMA, max_message_bytes=2_000_000))]
    rows = []
    for name, fmt in formats:
        b = batch
        if name == "Protobuf":          # proto3 scalars are not nullable: the same values
            b = batch.cast(fmt.schema)
        if name == "Arrow IPC":
            encode = lambda: [p for i in range(0, n, ARROW_ROWS_PER_MESSAGE)  # noqa: E731
                              for p in fmt.encode(b.slice(i, ARROW_ROWS_PER_MESSAGE))]
        else:
            encode = lambda: fmt.encode(b)  # noqa: E731
        enc_t, dec_t = [], []
        payloads = encode()
        for _ in range(runs):
            t0 = time.perf_counter()
            payloads = encode()
            enc_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            decoded = fmt.decode(payloads)
            dec_t.append(time.perf_counter() - t0)
        assert not decoded.failures and decoded.batch.num_rows == n
        size = sum(len(p) for p in payloads)
        enc, dec = min(enc_t), min(dec_t)
        rows.append((name, size / n, size / enc / 1e6, n / enc, size / dec / 1e6, n / dec))
        print(f"  {name}: {size / n:.1f} B/event, encode {size / enc / 1e6:.0f} MB/s, decode {size / dec / 1e6:.0f} MB/s",
              flush=True)
    return rows


# -- latency ------------------------------------------------------------------------------------------------
_PRODUCER = textwrap.dedent("""
    import sys, time, orjson
    from confluent_kafka import Producer
    bootstrap, topic, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "queue.buffering.max.messages": 2000000})
    t0 = time.perf_counter(); sent = 0; total = int(rate * seconds)
    while sent < total:
        due = min(int((time.perf_counter() - t0) * rate), total)
        while sent < due:
            p.produce(topic, orjson.dumps({"ts": int(time.time() * 1000), "key": sent % 10000, "value": 0.5,
                                           "category": "alpha"}))
            sent += 1
        p.poll(0)
        time.sleep(0.0005)
    p.flush(30)
""")


def run_latency_raw(broker: Broker, rate: float, seconds: float) -> Dict[str, float]:
    """The reference: a bare confluent-kafka consumer loop (consume what is queued, else wait
    for the next message) fed by the same producer: Kafka's own produce -> consume latency on
    this machine, the floor under the engine's figure."""
    import uuid

    from confluent_kafka import Consumer, TopicPartition

    topic = broker.topic(1, "latency-raw")
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"raw-{uuid.uuid4().hex[:6]}",
                  "fetch.wait.max.ms": 20, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    c.poll(1.0)                                      # connected, partition assigned
    prod = subprocess.Popen([sys.executable, "-c", _PRODUCER, broker.bootstrap, topic, str(rate), str(seconds)])
    lat, stamps = [], []
    total = int(rate * seconds)
    deadline = time.monotonic() + seconds + 30
    got = 0
    while got < total and time.monotonic() < deadline:
        msgs = c.consume(10_000, 0)
        if not msgs:
            first = c.poll(0.05)
            msgs = [first] if first is not None else []
        now = time.time_ns() // 1_000_000
        ts = np.array([m.timestamp()[1] for m in msgs if m.error() is None], dtype=np.int64)
        got += len(ts)
        lat.append(now - ts)
        stamps.append(ts)
    prod.wait(timeout=60)
    c.close()
    allv, sent = np.concatenate(lat), np.concatenate(stamps)
    v = allv[sent >= sent.min() + WARMUP_MS]
    return {"events": int(len(allv)), "p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))}


def run_latency(broker: Broker, rate: float, seconds: float) -> Dict[str, float]:
    import heliosdb as hdb

    topic = broker.topic(1, "latency")
    lat: List[np.ndarray] = []
    stamps: List[np.ndarray] = []

    def record(batch: pa.RecordBatch) -> None:
        now = time.time_ns() // 1_000_000
        ts = batch.column(batch.schema.get_field_index("kafka_timestamp")).cast(pa.int64()).to_numpy()
        lat.append(now - ts)
        stamps.append(ts)

    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
    (env.kafka_source(topic, broker.bootstrap).with_batch_timeout(0.010).deserialize_json(W1_SCHEMA)
     .filter(hdb.col("value") > 0.2).sink(hdb.sinks.callback(record)))
    pauses: List[float] = []
    began: Dict[str, float] = {}

    def gc_watch(phase: str, info: dict) -> None:      # full collections stop every thread
        if info.get("generation") != 2 or not measuring:
            return
        if phase == "start":
            began["t"] = time.perf_counter()
        elif "t" in began:
            pauses.append(time.perf_counter() - began.pop("t"))

    import gc

    measuring = False
    gc.callbacks.append(gc_watch)
    handle = env.execute_async(name="kafka-latency")
    time.sleep(2.0)                                  # the source has assigned its partitions
    measuring = True
    prod = subprocess.Popen([sys.executable, "-c", _PRODUCER, broker.bootstrap, topic, str(rate), str(seconds)])
    prod.wait(timeout=seconds + 120)
    deadline = time.monotonic() + 20
    total = int(rate * seconds)
    while time.monotonic() < deadline and sum(len(x) for x in lat) < total:
        time.sleep(0.1)
    inside = handle.metrics()                        # ingest (reader's fetch) -> sink, whole run
    handle.stop()
    handle.wait(30)
    gc.callbacks.remove(gc_watch)
    allv = np.concatenate(lat) if lat else np.array([0])
    sent = np.concatenate(stamps) if stamps else np.array([0])
    v = allv[sent >= sent.min() + WARMUP_MS]          # the first 2 s: connections, first fetches
    return {"events": int(len(allv)), "p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
            "max": float(v.max()), "rate": rate, "gc_full": len(pauses),
            "gc_max_ms": 1000 * max(pauses) if pauses else 0.0,
            "engine_p50": float(inside["latency_p50_ms"]), "engine_p99": float(inside["latency_p99_ms"])}


# -- main ---------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events-arrow", type=int, default=10_000_000)
    ap.add_argument("--events-json", type=int, default=3_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--serialization-events", type=int, default=200_000)
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="small runs; print, do not record")
    ap.add_argument("--only", choices=["e2e", "serialization", "latency"], action="append")
    args = ap.parse_args(argv)
    if args.quick:
        args.events_arrow, args.events_json, args.runs = 1_000_000, 300_000, 1
        args.serialization_events, args.latency_seconds = 50_000, 4.0
    only = set(args.only or ["e2e", "serialization", "latency"])
    res_load = [os.getloadavg()[0]]
    broker = Broker() if only & {"e2e", "latency"} else None
    res: Dict[str, object] = {}
    try:
        if "serialization" in only:
            print("serialization", flush=True)
            res["ser"] = run_serialization(args.serialization_events, max(args.runs, 3))
        if "e2e" in only:
            print("Kafka -> W1 -> Kafka, Arrow IPC", flush=True)
            res["arrow"] = run_e2e(broker, "arrow", args.events_arrow, args.runs)
            print("Kafka -> W1 -> Kafka, JSON", flush=True)
            res["json"] = run_e2e(broker, "json", args.events_json, args.runs)
        if "latency" in only:
            print("latency", flush=True)
            res["lat"], res["raw"] = [], []
            for _ in range(max(1, min(args.runs, 3))):      # engine and bare client alternate
                res["lat"].append(run_latency(broker, 100_000, args.latency_seconds))
                res["raw"].append(run_latency_raw(broker, 100_000, args.latency_seconds))
            for r in res["raw"]:
                print(f"  bare consumer: p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms", flush=True)
            for r in res["lat"]:
                print(f"  p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms over {r['events']:,} events "
                      f"(engine p50 {r['engine_p50']:.1f}, p99 {r['engine_p99']:.1f} ms)", flush=True)
    finally:
        if broker is not None:
            broker.close()
    res_load.append(os.getloadavg()[0])
    res["load"] = res_load
    text = _section(res, args)
    print(text)
    if not args.quick and only == {"e2e", "serialization", "latency"}:
        write_section("kafka", text)
    return 0


def _section(res: Dict[str, object], args) -> str:
    import confluent_kafka

    lines = heading("Kafka (issue #5)", "python -m benchmarks.kafka")
    lines[-1] += (" One local Apache Kafka 4.1.1 broker (KRaft, ci/kafka.sh) "
                  f"on the same cores; confluent-kafka {confluent_kafka.__version__} (librdkafka "
                  f"{confluent_kafka.libversion()[0]}). The machine is shared: 1-minute load average "
                  f"{res['load'][0]:.1f} at the start and {res['load'][1]:.1f} at the end, so "
                  "these figures are below what an idle machine gives.")
    lines.append("")
    if "arrow" in res:
        lines += ["**Kafka -> W1 -> Kafka, end to end** (4 input partitions merged on `ts`, exactly-once "
                  "sink; from `execute()` to the last transaction committed; output validated against the "
                  f"numpy reference; median of {args.runs}):", "",
                  "| format | events | events/s | runs (M events/s) | target |", "|---|---:|---:|---|---:|"]
        for key, label, target in (("arrow", "Arrow IPC (10K rows/message)", "1 M"), ("json", "JSON (1 event/message)", "300 K")):
            r = res[key]
            runs = ", ".join(f"{x / 1e6:.2f}" for x in r["runs"])
            lines.append(f"| {label} | {r['n']:,} | {r['events_per_s'] / 1e6:.2f} M | {runs} | {target} |")
        lines.append("")
    if "ser" in res:
        lines += [f"**Serialization of W1's records** ({args.serialization_events:,} events of ts, key, value, "
                  "category; the engine's batched encoders/decoders; best of "
                  f"{max(args.runs, 3)}; MB/s of encoded bytes):", "",
                  "| format | bytes/event | encode MB/s | encode events/s | decode MB/s | decode events/s |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, size, emb, eev, dmb, dev in res["ser"]:
            lines.append(f"| {name} | {size:.1f} | {emb:,.0f} | {eev / 1e6:.2f} M | {dmb:,.0f} | {dev / 1e6:.2f} M |")
        lines.append("")
    if "lat" in res:
        ps = [r["p99"] for r in res["lat"]]
        gc_runs = ", ".join(str(r["gc_full"]) for r in res["lat"])
        gc_ms = ", ".join(f"{r['gc_max_ms']:.0f}" for r in res["lat"])
        p50 = [r["p50"] for r in res["lat"]]
        lines += [f"**Source latency** (JSON events produced at 100K events/s by another process, "
                  f"`linger.ms=1`, one partition; `with_batch_timeout(10 ms)`; per event: arrival at a sink "
                  f"after a filter minus the Kafka timestamp stamped at produce, ms resolution; "
                  f"{args.latency_seconds:g} s per run, events of the first 2 s not counted): p50 {statistics.median(p50):.1f} ms, "
                  f"p99 {statistics.median(ps):.1f} ms (median of {len(ps)} runs; p99 per run "
                  f"{', '.join(f'{p:.1f}' for p in ps)} ms). Target: p99 < 20 ms. Of that, inside the "
                  "engine (a reader's fetch from the client to the sink, incl. the 10 ms batch timeout; "
                  "the engine's latency histogram, whole run): p50 "
                  f"{', '.join(format(r['engine_p50'], '.1f') for r in res['lat'])} ms, p99 "
                  f"{', '.join(format(r['engine_p99'], '.1f') for r in res['lat'])} ms per run. Python's full "
                  "(generation 2) garbage collections during the measured part (they stop every "
                  f"thread): {gc_runs} per run, the longest {gc_ms} ms."]
        raw = res.get("raw") or []
        if raw:
            lines[-1] += (" Reference, alternating with those runs: a bare confluent-kafka consumer loop fed "
                          "by the same producer (Kafka's own produce -> consume latency here, no batching): "
                          f"p50 {statistics.median([r['p50'] for r in raw]):.1f} ms, p99 "
                          f"{statistics.median([r['p99'] for r in raw]):.1f} ms (p99 per run "
                          f"{', '.join(format(r['p99'], '.1f') for r in raw)} ms).")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
