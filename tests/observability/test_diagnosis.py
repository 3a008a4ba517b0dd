"""diagnose(): backpressure, the bottleneck operator, busy/blocked/idle fractions, stragglers.

Slow operators are made slow with sleeps (they release the GIL, like the compiled kernels), so
the timeline is:   source --(full channel: blocked)--> [slow task: busy] --> downstream: idle
"""
from __future__ import annotations

import time
from datetime import timedelta

import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb import col
from heliosdb.diagnosis import TaskInfo, diagnose, samples_from_text
from heliosdb.metrics import MetricsCollector, Sample

S = 1_000_000_000


def _slow(seconds: float):
    def fn(batch):
        time.sleep(seconds)
        return batch
    return fn


def _run_and_diagnose(build, name: str, parallelism: int = 1, warm_s: float = 0.2,
                      interval_s: float = 0.3):
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=1000, parallelism=parallelism))
    build(env)
    handle = env.execute_async(name=name)
    try:
        time.sleep(warm_s)
        return handle.diagnose(interval_s=interval_s)
    finally:
        handle.stop()
        handle.wait()


def _slow_middle(env):
    (env.generate().filter(col("value") > 0.2).name("keep")
        .map_batches(_slow(0.005)).name("slow-step")
        .key_by("key").window(hdb.TumblingWindow.of(timedelta(seconds=1)), time="ts")
        .aggregate(n=hdb.count()).name("per-key")
        .sink(hdb.sinks.callback(lambda b: None)))


def test_diagnose_names_the_slow_operator_in_10_of_10_runs():
    named = [_run_and_diagnose(_slow_middle, f"slow-middle-{i}").bottleneck for i in range(10)]
    assert named == ["slow-step"] * 10


def test_diagnose_reports_fractions_and_remedies_for_the_bottleneck():
    d = _run_and_diagnose(_slow_middle, "slow-report")
    assert d.backpressured
    tasks = {t.name: t for t in d.tasks}
    source, slow = tasks["generate-1"], tasks[d.bottleneck_task]
    assert "slow-step" in slow.operators
    assert source.blocked > 0.5 and slow.busy > 0.5
    for t in d.tasks:
        assert abs(t.busy + t.blocked + t.idle - 1) < 0.05, t
    assert d.operators["slow-step"] > d.operators["keep"]
    kinds = {f.kind for f in d.findings}
    assert "bottleneck" in kinds
    text = str(d)
    assert "slow-step" in text and "remedy: raise the bottleneck's parallelism" in text
    assert "<table>" in d._repr_html_()


def test_a_slow_sink_in_the_same_task_as_a_fast_kernel_is_named():
    def build(env):
        (env.generate().filter(col("value") > 0.2).name("keep")
            .sink(hdb.sinks.callback(_slow(0.005))))
    d = _run_and_diagnose(build, "slow-sink")
    assert d.bottleneck == "sink-callback-3"
    assert any("sink is the bottleneck" in r for f in d.findings for r in f.remedies)


def test_a_slow_step_after_parallel_windows_is_found_past_the_blocked_subtasks():
    # source -> keep (exchange) -> per-key#0, #1 -> [merge: slow-after -> sink]
    def build(env):
        (env.generate().filter(col("value") > 0.2).name("keep")
            .key_by("key").window(hdb.TumblingWindow.of(timedelta(milliseconds=10)), time="ts")
            .aggregate(n=hdb.count()).name("per-key")
            .map_batches(_slow(0.004)).name("slow-after")
            .sink(hdb.sinks.callback(lambda b: None)))
    d = _run_and_diagnose(build, "slow-after", parallelism=2, warm_s=0.3, interval_s=0.6)
    assert d.backpressured
    assert d.bottleneck == "slow-after"


def test_a_paced_source_is_not_backpressured_and_has_no_bottleneck():
    def build(env):
        env.generate(rate=5_000).filter(col("value") > 0.2).sink(hdb.sinks.callback(lambda b: None))
    d = _run_and_diagnose(build, "paced")
    assert not d.backpressured and d.bottleneck is None
    assert any("no backpressure" in f.message for f in d.findings)
    assert next(t for t in d.tasks if t.name == "generate-1").blocked < 0.1


def test_a_finished_job_is_diagnosed_over_its_whole_run():
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=500))
    (env.generate(count=40_000).map_batches(_slow(0.003)).name("slow-step")
        .sink(hdb.sinks.callback(lambda b: None)))
    handle = env.execute_async(name="finished")
    handle.wait()
    d = handle.diagnose()
    assert d.bottleneck == "slow-step"
    assert d.interval_s > 0.1


# -- the rules on synthetic samples --------------------------------------------------------------
def _sample(t_ns: int, tasks: dict, ops: dict) -> Sample:
    return Sample(t_ns, 0, tasks, ops)


def test_straggler_is_a_subtask_under_half_its_siblings_median_throughput():
    # Three subtasks got the same events; #2 needed 4x the busy time for them.
    topo = {"src": TaskInfo([], ["w#0", "w#1", "w#2"]),
            "w#0": TaskInfo(["w#0"], [], "w"), "w#1": TaskInfo(["w#1"], [], "w"),
            "w#2": TaskInfo(["w#2"], [], "w")}
    zero = _sample(0, {n: (0, 0, 0, 0, 0) for n in topo}, {})
    now = _sample(S, {"src": (S, S // 10, 9 * S // 10, 0, 30_000),
                      "w#0": (S, S // 5, 0, 4 * S // 5, 10_000),
                      "w#1": (S, S // 5, 0, 4 * S // 5, 10_000),
                      "w#2": (S, 4 * S // 5, 0, S // 5, 10_000)},
                  {"w#0": (S // 5, 10_000), "w#1": (S // 5, 10_000), "w#2": (4 * S // 5, 10_000)})
    d = diagnose("synthetic", zero, now, topo)
    assert d.stragglers == ["w#2"]
    assert d.bottleneck == "w#2"          # the only busy task downstream of the blocked source
    assert not [f for f in d.findings if f.kind == "skew"]


def test_uneven_events_per_subtask_is_reported_as_skew_not_as_straggling():
    topo = {"w#0": TaskInfo(["w#0"], [], "w"), "w#1": TaskInfo(["w#1"], [], "w"),
            "w#2": TaskInfo(["w#2"], [], "w")}
    zero = _sample(0, {n: (0, 0, 0, 0, 0) for n in topo}, {})
    now = _sample(S, {"w#0": (S, S // 10, 0, 9 * S // 10, 1_000),
                      "w#1": (S, S // 10, 0, 9 * S // 10, 1_000),
                      "w#2": (S, 8 * S // 10, 0, 2 * S // 10, 8_000)}, {})
    d = diagnose("synthetic", zero, now, topo)
    assert d.stragglers == []
    assert [f.kind for f in d.findings if f.kind == "skew"] == ["skew"]


def test_high_latency_and_late_events_are_findings_with_remedies():
    topo = {"src": TaskInfo([], [])}
    zero = _sample(0, {"src": (0, 0, 0, 0, 0)}, {})
    now = _sample(S, {"src": (S, 0, 0, S, 0)}, {})
    d = diagnose("synthetic", zero, now, topo, latency_p99_ms=900.0, late_events=12)
    kinds = {f.kind: f for f in d.findings}
    assert "batch_timeout" in " ".join(kinds["latency"].remedies)
    assert "max_out_of_orderness" in " ".join(kinds["late"].remedies)


def test_diagnosis_from_two_scrapes_of_metrics_text_matches_the_in_process_one():
    from prometheus_client import CollectorRegistry, generate_latest

    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=1000))
    _slow_middle(env)
    handle = env.execute_async(name="from-text")
    registry = CollectorRegistry(auto_describe=False)
    MetricsCollector(registry).add(handle._job.metrics)
    try:
        time.sleep(0.2)
        first = samples_from_text(generate_latest(registry).decode(), time.perf_counter_ns())
        time.sleep(0.4)
        second = samples_from_text(generate_latest(registry).decode(), time.perf_counter_ns())
    finally:
        handle.stop()
        handle.wait()
    then, topo, _ = first["from-text"]
    now, _, _ = second["from-text"]
    assert topo["generate-1"].downstream == ["keep"]
    assert diagnose("from-text", then, now, topo).bottleneck == "slow-step"


@pytest.mark.parametrize("interval", [0.0, 0.2])
def test_diagnose_never_raises_on_a_job_that_just_started(interval):
    env = hdb.StreamEnvironment()
    env.generate(rate=1000).sink(hdb.sinks.callback(lambda b: None))
    handle = env.execute_async(name="just-started")
    try:
        d = handle.diagnose(interval_s=interval)
        assert d.job == "just-started"
    finally:
        handle.stop()
        handle.wait()


# -- late events and the watermark ----------------------------------------------------------------
def _idle_topology():
    topo = {"src": TaskInfo([], [])}
    return topo, _sample(0, {"src": (0, 0, 0, 0, 0)}, {}), _sample(S, {"src": (S, 0, 0, S, 0)}, {})


def test_late_events_are_a_finding_per_operator_naming_it_and_its_count():
    topo, zero, now = _idle_topology()
    d = diagnose("synthetic", zero, now, topo, late_events={"tumble": 1_234, "slide": 0, "kept": 5},
                 late_kept=["kept"])
    late = [f for f in d.findings if f.kind == "late"]
    assert [f.message for f in late] == [
        "1,234 late events dropped by 'tumble' (nothing reads its late_output())",
        "5 late events at 'kept', sent to its late_output()"]
    assert "'tumble' found 1,234 late events" in late[0].remedies[0]
    for remedy in ("late_output()", "max_out_of_orderness=", "allowed_lateness="):
        assert remedy in late[0].remedies[0]


def test_the_split_holding_the_watermark_back_is_a_finding():
    topo, zero, now = _idle_topology()
    d = diagnose("synthetic", zero, now, topo, holding_splits={"event-time": "orders[3]"})
    (f,) = [f for f in d.findings if f.kind == "watermark"]
    assert "'event-time'" in f.message and "'orders[3]'" in f.message
    assert "idle_timeout=" in " ".join(f.remedies)


def _late_job(env: hdb.StreamEnvironment) -> None:
    # window 10 s, bound 0, one event per batch: a@1s, b@15s (wm 15 s: [0,10s) gone), then
    # a@3s and b@2s are late, and nothing reads the late output: 2 dropped by 'tumble'.
    t = pa.table({"k": ["a", "b", "a", "b"], "ts": [1_000, 15_000, 3_000, 2_000], "v": [1, 2, 3, 4]})
    (env.from_arrow(t).with_batch_size(1).with_watermark("ts").name("event-time").key_by("k")
        .window(hdb.TumblingWindow.of(timedelta(seconds=10))).aggregate(n=hdb.count())
        .name("tumble").sink(hdb.sinks.memory()))


def test_diagnose_of_a_job_names_the_window_that_dropped_late_events():
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
    _late_job(env)
    handle = env.execute_async(name="late-diagnosed")
    handle.wait()
    d = handle.diagnose(interval_s=0)
    (late,) = [f for f in d.findings if f.kind == "late"]
    assert late.message == "2 late events dropped by 'tumble' (nothing reads its late_output())"
    assert "'tumble' found 2 late events" in late.remedies[0]
    assert not [f for f in d.findings if f.kind == "watermark"]      # no split is known today


def test_diagnose_of_a_job_names_the_split_its_assigner_reports(monkeypatch):
    # The watermark assigner's holding_split() is the hook per-split watermarks fill in.
    from heliosdb.operators.watermark import WatermarkAssigner

    monkeypatch.setattr(WatermarkAssigner, "holding_split", lambda self: "orders[3]")
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1))
    _late_job(env)
    handle = env.execute_async(name="held-back")
    handle.wait()
    (f,) = [f for f in handle.diagnose(interval_s=0).findings if f.kind == "watermark"]
    assert f.message == "the watermark of 'event-time' is held back by split 'orders[3]'"


def test_the_split_holding_the_watermark_back_follows_the_slowest_partition():
    # Per-split watermarks, bound 0, partitions 0 and 1 declared:
    #   p0@5s          p1 has sent nothing: it holds the watermark back
    #   p1@2s          p1 at 2 s < p0 at 5 s: still p1
    #   p1@8s          p0 at 5 s is now the lowest
    #   p0@8s          both at 8 s: no split holds the other back
    from heliosdb.connectors.splits import Splits
    from heliosdb.diagnosis import diagnose_job
    from heliosdb.metrics import JobMetrics
    from heliosdb.operators.watermark import WatermarkAssigner

    schema = pa.schema([("p", pa.int32()), ("ts", pa.int64())])
    splits = Splits(["p"])
    splits.declare([(0,), (1,)])
    assigner = WatermarkAssigner("event-time", schema, "ts", 0, splits=splits)
    held = []
    for p, ts in ((0, 5_000), (1, 2_000), (1, 8_000), (0, 8_000)):
        assigner.process_batch(pa.record_batch({"p": pa.array([p], pa.int32()), "ts": [ts]}))
        held.append(assigner.holding_split())
    assert held == ["p=1", "p=1", "p=0", None]
    jm = JobMetrics("held-back", plan_ops=[assigner])
    assert not [f for f in diagnose_job(jm, *jm.since_start()).findings if f.kind == "watermark"]
    assigner.process_batch(pa.record_batch({"p": pa.array([1], pa.int32()), "ts": [9_000]}))
    (f,) = [f for f in diagnose_job(jm, *jm.since_start()).findings if f.kind == "watermark"]
    assert f.message == "the watermark of 'event-time' is held back by split 'p=0'"
