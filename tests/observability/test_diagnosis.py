"""diagnose(): backpressure, the bottleneck operator, busy/blocked/idle fractions, stragglers.

Time is never measured by sleeping here.  A scripted job (tests/observability/timeline.py)
writes the engine's counters on a clock the test moves, so every fraction is exact; a real job
is diagnosed while a step holds a batch, when each task is in one known state:
    source --(full channel: blocked)--> [held task: busy] --> downstream: idle
"""
from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest

import heliosdb as hdb
from heliosdb import col
from heliosdb.diagnosis import TaskInfo, diagnose, diagnose_job, samples_from_text
from heliosdb.metrics import MetricsCollector, Sample
from heliosdb.testing import wait_until

from .timeline import Hold, ScriptedJob, standing_still

S = 1_000_000_000

# generate-1 -> [keep, slow-step, per-key.watermark] -> [per-key, sink]: the plan of
# generate().filter().name("keep").map_batches().name("slow-step").key_by().window().aggregate()
SLOW_MIDDLE = {"generate-1": ([], ["keep"]),
               "keep": (["keep", "slow-step", "per-key.watermark"], ["per-key"]),
               "per-key": (["per-key", "sink-callback-5"], [])}
SLOW_MIDDLE_KINDS = {"keep": "fused", "slow-step": "map_batches", "per-key.watermark": "watermark",
                     "per-key": "window", "sink-callback-5": "callback sink"}


def _slow_middle_second(job: ScriptedJob) -> None:
    """One second: the source is blocked 90% of it on the channel into 'keep', whose task is
    busy 95%, 90% in 'slow-step'; the window task after it is busy 20%."""
    job.run(1.0, busy={"generate-1": 0.1, "keep": 0.95, "per-key": 0.2},
            blocked={"generate-1": 0.9},
            op_busy={"keep": 0.02, "slow-step": 0.9, "per-key.watermark": 0.03,
                     "per-key": 0.15, "sink-callback-5": 0.05},
            rows={"keep": 200_000, "slow-step": 160_000, "per-key.watermark": 160_000,
                  "per-key": 160_000, "sink-callback-5": 2_000},
            events=200_000, batches=200)


def _diagnosed_second(job: ScriptedJob, second=_slow_middle_second):
    then = job.metrics.sample()
    second(job)
    return diagnose_job(job.metrics, then, job.metrics.sample())


def test_the_operator_working_most_in_the_task_the_source_waits_on_is_the_bottleneck():
    job = ScriptedJob(SLOW_MIDDLE, SLOW_MIDDLE_KINDS)
    _slow_middle_second(job)                            # what came before does not count
    d = _diagnosed_second(job)
    assert d.backpressured
    assert (d.bottleneck, d.bottleneck_task) == ("slow-step", "keep")


def test_diagnose_reports_fractions_and_remedies_for_the_bottleneck():
    d = _diagnosed_second(ScriptedJob(SLOW_MIDDLE, SLOW_MIDDLE_KINDS))
    tasks = {t.name: (t.busy, t.blocked, t.idle, t.events, t.events_per_s) for t in d.tasks}
    assert tasks == {"generate-1": pytest.approx((0.1, 0.9, 0.0, 200_000, 200_000)),
                     "keep": pytest.approx((0.95, 0.0, 0.05, 200_000, 200_000)),
                     "per-key": pytest.approx((0.2, 0.0, 0.8, 160_000, 160_000))}
    assert d.interval_s == 1.0
    assert d.operators == pytest.approx({"keep": 0.02, "slow-step": 0.9, "per-key.watermark": 0.03,
                                         "per-key": 0.15, "sink-callback-5": 0.05})
    (f,) = [f for f in d.findings if f.kind == "bottleneck"]
    assert f.message == ("backpressured: generate-1 blocked on full channels; the bottleneck is operator "
                         "'slow-step' (task 'keep' busy 95%, 90% of the time in 'slow-step')")
    text = str(d)
    assert "slow-step" in text and "remedy: raise the bottleneck's parallelism" in text
    assert "<table>" in d._repr_html_()


def test_a_wait_still_in_progress_counts_up_to_the_sample():
    # The source has been blocked for 1.5 s and still is: no channel has added it up yet.
    job = ScriptedJob(SLOW_MIDDLE, SLOW_MIDDLE_KINDS)
    then = job.metrics.sample()
    job.run(0.5, busy={"generate-1": 0.5, "keep": 0.5})
    job.wait_from_now("generate-1", "blocked")
    job.run(1.5, busy={"keep": 1.5})
    mid = diagnose_job(job.metrics, then, job.metrics.sample())
    job.end_wait("generate-1")
    ended = diagnose_job(job.metrics, then, job.metrics.sample())
    for d in (mid, ended):
        source = next(t for t in d.tasks if t.name == "generate-1")
        assert (source.busy, source.blocked) == (0.25, 0.75)
        assert d.bottleneck_task == "keep"


def test_a_slow_sink_in_the_same_task_as_a_fast_kernel_is_named():
    job = ScriptedJob({"generate-1": ([], ["keep"]), "keep": (["keep", "sink-callback-3"], [])},
                      {"sink-callback-3": "callback sink"})
    d = _diagnosed_second(job, lambda j: j.run(1.0, busy={"generate-1": 0.05, "keep": 0.99},
                                               blocked={"generate-1": 0.95},
                                               op_busy={"keep": 0.04, "sink-callback-3": 0.95}))
    assert d.bottleneck == "sink-callback-3"
    (f,) = [f for f in d.findings if f.kind == "bottleneck"]
    assert f.remedies[0].startswith("the sink is the bottleneck")


def test_a_slow_step_after_parallel_windows_is_found_past_the_blocked_subtasks():
    # generate-1 -> keep#0, keep#1 (exchange by key, pre-aggregating) -> [merge: slow-after -> sink]
    merge = ["per-key.watermark", "per-key", "slow-after", "sink-callback-5"]
    job = ScriptedJob({"generate-1": ([], ["keep#0", "keep#1"]),
                       "keep#0": (["keep#0", "per-key.pre#0"], ["per-key.watermark"]),
                       "keep#1": (["keep#1", "per-key.pre#1"], ["per-key.watermark"]),
                       "per-key.watermark": (merge, [])},
                      groups={"keep#0": "keep", "keep#1": "keep"})
    d = _diagnosed_second(job, lambda j: j.run(
        1.0, busy={"generate-1": 0.1, "keep#0": 0.2, "keep#1": 0.2, "per-key.watermark": 0.97},
        blocked={"generate-1": 0.9, "keep#0": 0.8, "keep#1": 0.8},
        op_busy={"per-key.watermark": 0.02, "per-key": 0.05, "slow-after": 0.9},
        rows={"keep#0": 1_000, "keep#1": 1_000}))
    assert d.backpressured
    assert (d.bottleneck, d.bottleneck_task) == ("slow-after", "per-key.watermark")
    assert d.stragglers == []


def test_a_source_that_every_task_keeps_up_with_is_not_backpressured():
    d = _diagnosed_second(ScriptedJob(SLOW_MIDDLE, SLOW_MIDDLE_KINDS),
                          lambda j: j.run(1.0, busy={"generate-1": 0.05, "keep": 0.1, "per-key": 0.02}))
    assert not d.backpressured and d.bottleneck is None
    assert [f.message for f in d.findings] == [
        "no backpressure: every task keeps up (busiest: 'keep' at 10%)"]


def test_a_finished_job_is_diagnosed_over_its_whole_run():
    # 0.3 s of run, then the job ends; the clock goes on for 5 s and changes nothing.
    job = ScriptedJob({"generate-1": ([], ["slow-step"]), "slow-step": (["slow-step", "sink"], [])})
    job.run(0.3, busy={"generate-1": 0.03, "slow-step": 0.3}, blocked={"generate-1": 0.27},
            rows={"slow-step": 40_000}, events=40_000)
    job.finish()
    job.run(5.0)
    d = diagnose_job(job.metrics, *job.metrics.since_start())
    assert d.interval_s == pytest.approx(0.3)
    assert (d.bottleneck, d.bottleneck_task) == ("slow-step", "slow-step")
    assert {t.name: (t.blocked, t.events) for t in d.tasks} == {
        "generate-1": (pytest.approx(0.9), 40_000), "slow-step": (0.0, 40_000)}


def test_diagnosis_from_two_scrapes_of_metrics_text_matches_the_in_process_one():
    from prometheus_client import CollectorRegistry, generate_latest

    job = ScriptedJob(SLOW_MIDDLE, SLOW_MIDDLE_KINDS, job="from-text")
    registry = CollectorRegistry(auto_describe=False)
    MetricsCollector(registry).add(job.metrics)
    _slow_middle_second(job)
    then = job.metrics.sample()
    first = samples_from_text(generate_latest(registry).decode(), job.clock())
    _slow_middle_second(job)
    now = job.metrics.sample()
    second = samples_from_text(generate_latest(registry).decode(), job.clock())
    text_then, topo, _ = first["from-text"]
    text_now, _, _ = second["from-text"]
    assert {n: (t.operators, t.downstream) for n, t in topo.items()} == {
        n: (list(ops), list(down)) for n, (ops, down) in SLOW_MIDDLE.items()}
    from_text = diagnose("from-text", text_then, text_now, topo)
    in_process = diagnose_job(job.metrics, then, now)
    assert (from_text.bottleneck, from_text.bottleneck_task) == ("slow-step", "keep")
    assert (from_text.bottleneck, from_text.bottleneck_task) == (in_process.bottleneck, in_process.bottleneck_task)
    assert [(t.name, t.busy, t.blocked, t.idle, t.events) for t in from_text.tasks] == [
        (t.name, pytest.approx(t.busy), pytest.approx(t.blocked), pytest.approx(t.idle), t.events)
        for t in in_process.tasks]


# -- a real job, held in one step ------------------------------------------------------------------
def _held_job(env: hdb.StreamEnvironment, hold: Hold) -> None:
    (env.generate().filter(col("value") > 0.2).name("keep")
        .map_batches(hold).name("slow-step")
        .key_by("key").window(hdb.TumblingWindow.of(timedelta(seconds=1)), time="ts")
        .aggregate(n=hdb.count()).name("per-key")
        .sink(hdb.sinks.callback(lambda b: None)))


def test_a_job_held_in_one_step_is_diagnosed_with_that_steps_task_as_the_bottleneck():
    hold = Hold(free=1)
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=1000, parallelism=1))
    _held_job(env, hold)
    handle = env.execute_async(name="held")
    tasks = handle._job.metrics.tasks
    try:
        assert wait_until(lambda: standing_still(hold, tasks["keep"], 1000)
                          and tasks["generate-1"].blocked_since > 0
                          and tasks["per-key"].idle_since > 0, 60), "the job never stood still"
        d = handle.diagnose(interval_s=0.05)
    finally:
        hold.release()
        handle.stop()
        handle.wait()
    assert {t.name: (t.busy, t.blocked, t.idle) for t in d.tasks} == {
        "generate-1": (0.0, 1.0, 0.0), "keep": (1.0, 0.0, 0.0), "per-key": (0.0, 0.0, 1.0)}
    assert d.backpressured and d.bottleneck_task == "keep"
    assert "slow-step" in tasks["keep"].operators


def test_a_finished_job_is_diagnosed_over_its_whole_run_with_its_counts():
    # 80 batches of 500 events through a step that takes at least 3 ms a batch.
    hold = Hold(free=80, each_s=0.003)
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=500))
    env.generate(count=40_000).map_batches(hold).name("slow-step").sink(hdb.sinks.callback(lambda b: None))
    handle = env.execute_async(name="finished")
    handle.wait()
    d = handle.diagnose()
    jm = handle._job.metrics
    alive_s = {n: (t.finished_ns - t.started_ns) / 1e9 for n, t in jm.tasks.items()}
    assert d.interval_s == max(alive_s.values())
    assert {t.name: t.events for t in d.tasks} == {"generate-1": 40_000, "slow-step": 40_000}
    for t in d.tasks:
        assert t.busy + t.blocked + t.idle == pytest.approx(1.0), t
    assert d.operators["slow-step"] * alive_s["slow-step"] >= 80 * 0.003
    assert jm.operators["slow-step"].batches == 80


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
