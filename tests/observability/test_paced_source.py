"""A source that sleeps to keep its rate is paced, not busy: ``diagnose()`` says it does not
bound throughput, and no fraction is negative or over 100%.

Verdicts are checked, not timings: a real ``generate(rate=)`` job spends nearly all of its
source's time asleep, whatever the machine's load; a scripted one pins the fractions exactly.
"""
from __future__ import annotations

import heliosdb as hdb
from heliosdb.diagnosis import PACED_THRESHOLD, diagnose_job

from .timeline import ScriptedJob

S = 1_000_000_000
TOPOLOGY = {"generate-1": ([], ["sink-memory-2"]), "sink-memory-2": (["sink-memory-2"], [])}


def _fractions_are_sane(d) -> None:
    for t in d.tasks:
        for v in (t.busy, t.blocked, t.idle, t.paced):
            assert 0.0 <= v <= 1.0 and str(v) != "-0.0"
        assert t.paced <= t.idle + 1e-9
        assert t.busy + t.blocked + t.idle <= 1.0 + 1e-9
    assert "-0%" not in str(d) and "-0%" not in d._repr_html_()


def test_a_generator_paced_at_its_rate_is_not_said_to_bound_throughput():
    env = hdb.StreamEnvironment()
    env.generate(rate=20_000).sink(hdb.sinks.memory())
    handle = env.execute_async(name="paced")
    try:
        d = handle.diagnose(interval_s=0.5)
    finally:
        handle.stop()
        handle.wait()
    kinds = [f.kind for f in d.findings]
    assert "paced" in kinds and "source" not in kinds, str(d)
    (f,) = [f for f in d.findings if f.kind == "paced"]
    assert "'generate-1' is paced at its rate" in f.message and "does not bound throughput" in f.message
    source = next(t for t in d.tasks if t.name == "generate-1")
    assert source.paced >= PACED_THRESHOLD
    _fractions_are_sane(d)
    assert "paced" in str(d).splitlines()[f"{d}".splitlines().index("") + 1]   # a paced column


def test_a_whole_run_of_a_paced_generator_is_paced_too():
    env = hdb.StreamEnvironment()
    env.generate(rate=50_000, count=10_000).sink(hdb.sinks.memory())
    handle = env.execute_async(name="paced-run")
    handle.wait()
    d = handle.diagnose(interval_s=0)
    assert "paced" in [f.kind for f in d.findings], str(d)
    _fractions_are_sane(d)


def test_a_source_that_never_waits_still_bounds_throughput():
    # Scripted: the source busy 90% of the second and never paced, the sink keeping up.
    job = ScriptedJob(TOPOLOGY)
    then = job.metrics.sample()
    job.run(1.0, busy={"generate-1": 0.9, "sink-memory-2": 0.1}, rows={"sink-memory-2": 1_000},
            events=1_000)
    d = diagnose_job(job.metrics, then, job.metrics.sample())
    assert [f.kind for f in d.findings] == ["source"]
    assert "busy 90%: it bounds throughput" in d.findings[0].message
    assert "paced" not in str(d)                       # no paced column without pacing


def test_pacing_is_counted_as_a_part_of_idle():
    # Scripted: busy 10%, idle 90% of which 80 points were spent keeping the rate.
    job = ScriptedJob(TOPOLOGY)
    then = job.metrics.sample()
    job.run(1.0, busy={"generate-1": 0.1}, rows={"sink-memory-2": 1_000}, events=1_000)
    job.task("generate-1").paced_ns += 8 * S // 10
    d = diagnose_job(job.metrics, then, job.metrics.sample())
    source = next(t for t in d.tasks if t.name == "generate-1")
    assert (source.busy, source.idle, source.paced) == (0.1, 0.9, 0.8)
    assert d.findings[0].kind == "paced"
    assert d.findings[0].message == (
        "no backpressure; the source 'generate-1' is paced at its rate (1,000 events/s, waiting 80% "
        "of the time to keep it): it does not bound throughput (busiest task: 'sink-memory-2' at 0%)")
    _fractions_are_sane(d)


def test_counters_that_overlap_never_give_fractions_over_one():
    # A wait in progress read while its channel also added it up: blocked and idle overlap.
    job = ScriptedJob(TOPOLOGY)
    then = job.metrics.sample()
    job.run(1.0, busy={"generate-1": 0.5}, events=1_000)
    ts = job.task("generate-1")
    ts.idle_ns += 2 * S                                  # more than the task was alive
    d = diagnose_job(job.metrics, then, job.metrics.sample())
    _fractions_are_sane(d)
