"""Logging: structured fields (job, operator, epoch), slow batches warned with their duration,
checkpoint and restore events at INFO, nothing per event or per batch at INFO."""
from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from datetime import timedelta

import pytest

import heliosdb as hdb
from heliosdb import col
from heliosdb.log import StructuredFormatter
from heliosdb.metrics import CheckpointStats


def test_a_slow_step_is_warned_once_with_its_duration_and_fields_then_counted(caplog):
    def slow(batch):
        time.sleep(0.03)
        return batch

    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=100,
                                                    slow_batch_warning=timedelta(milliseconds=10)))
    env.generate(count=300).map_batches(slow).name("sleepy").sink(hdb.sinks.memory())
    with caplog.at_level(logging.WARNING, logger="heliosdb"):
        env.execute(name="slow-log")
    slow_records = [r for r in caplog.records if "slow batch" in r.getMessage()]
    assert len(slow_records) == 2, [r.getMessage() for r in slow_records]    # the first, the count
    r, total = slow_records
    assert r.levelno == logging.WARNING
    assert (r.job, r.operator, r.epoch, r.rows) == ("slow-log", "sleepy", 0, 100)
    assert r.duration_s >= 0.03          # the step sleeps that long: a lower bound
    assert r.getMessage() == (f"job 'slow-log' step 'sleepy': slow batch of 100 rows took "
                              f"{r.duration_s:.3f} s (warning above 0.010 s; further slow batches "
                              "of this step are counted and reported when the job ends)")
    assert (total.job, total.operator) == ("slow-log", "sleepy")
    assert total.getMessage().startswith("job 'slow-log' step 'sleepy': 3 slow batches in all")


def test_without_logging_configured_nothing_reaches_stderr(tmp_path):
    # A fresh interpreter: no handler anywhere, so logging's last resort would print warnings.
    script = (
        "import time, heliosdb as hdb\n"
        "from datetime import timedelta\n"
        "env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=100, "
        "slow_batch_warning=timedelta(milliseconds=1)))\n"
        "env.generate(count=300).map_batches(lambda b: (time.sleep(0.01), b)[1]).sink(hdb.sinks.memory())\n"
        "env.execute(name='quiet-by-default')\n"
        "hdb.log.configure()\n"
        "env.execute(name='configured')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "quiet-by-default" not in out.stderr
    assert "job 'configured' step 'map_batches-2': slow batch" in out.stderr, out.stderr
    assert out.stderr.count("slow batch of") == 1, out.stderr


def test_what_must_be_seen_reaches_stderr_once_logging_is_configured():
    # A dropped late event is only logged: with logging set up the usual way, it is printed once.
    script = (
        "import logging, heliosdb as hdb\n"
        "from datetime import timedelta\n"
        "logging.basicConfig()\n"
        "env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=1, parallelism=1))\n"
        "rows = [{'ts': t, 'k': 1} for t in (5000, 1000, 6000, 1500)]\n"
        "(env.from_iterable(rows).with_batch_size(1)\n"
        " .with_watermark(time='ts', max_out_of_orderness=timedelta(0)).key_by('k')\n"
        " .window(hdb.TumblingWindow.of(timedelta(seconds=1))).aggregate(n=hdb.count())\n"
        " .sink(hdb.sinks.memory()))\n"
        "print(env.execute(name='late').late_events)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "2}" in out.stdout, out.stdout
    assert out.stderr.count("late event dropped so far") == 1, out.stderr


def test_a_failing_step_is_logged_once_naming_the_operator(caplog):
    env = hdb.StreamEnvironment()
    src = env.from_iterable([{"x": i} for i in range(6)]).map(lambda e: {"y": 1 / (e.x - 3)})
    with caplog.at_level(logging.WARNING, logger="heliosdb"), pytest.raises(hdb.RecordError) as err:
        src.collect()
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]
    assert failures[0].operator == err.value.step == "map-2"
    assert "stage-" not in caplog.text


def test_configure_twice_prints_each_record_once():
    stream = io.StringIO()
    hdb.log.configure(stream=stream)
    handler = hdb.log.configure(stream=stream)
    try:
        logging.getLogger("heliosdb.test").warning("once")
    finally:
        logging.getLogger("heliosdb").removeHandler(handler)
        logging.getLogger("heliosdb").setLevel(logging.NOTSET)
    assert stream.getvalue().count("once") == 1


def test_at_info_a_job_logs_start_and_end_only_not_per_batch(caplog):
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=100))
    env.generate(count=50_000).filter(col("value") > 0.5).sink(hdb.sinks.memory())
    with caplog.at_level(logging.INFO, logger="heliosdb"):
        env.execute(name="quiet")          # 500 batches
    mine = [r for r in caplog.records if getattr(r, "job", None) == "quiet"]
    assert [r.levelno for r in mine] == [logging.INFO, logging.INFO]
    assert "started" in mine[0].getMessage() and "finished: 50000 events" in mine[1].getMessage()


def test_checkpoint_and_restore_events_are_logged_at_info_with_the_epoch(caplog):
    cp = CheckpointStats("ckpt-log")
    with caplog.at_level(logging.INFO, logger="heliosdb"):
        cp.completed(epoch=7, duration_s=1.5, size_bytes=2048)
        cp.restored(epoch=7, source="file:///tmp/c")
        cp.failed(epoch=8, error=OSError("no space"))
    levels = [(r.levelno, r.epoch, r.job) for r in caplog.records]
    assert levels == [(logging.INFO, 7, "ckpt-log"), (logging.INFO, 7, "ckpt-log"),
                      (logging.WARNING, 8, "ckpt-log")]
    assert "1.500 s" in caplog.records[0].getMessage()


def test_structured_formatter_prints_fields_as_pairs_or_json():
    record = logging.LogRecord("heliosdb.runtime", logging.WARNING, __file__, 1, "slow batch", None, None)
    record.job, record.operator, record.epoch, record.duration_s = "j", "op", 2, 1.23456
    assert StructuredFormatter().format(record) == \
        "WARNING heliosdb.runtime: slow batch job=j operator=op epoch=2 duration_s=1.235"
    out = json.loads(StructuredFormatter(json_lines=True).format(record))
    assert out["job"] == "j" and out["epoch"] == 2 and out["message"] == "slow batch"


def test_configure_attaches_a_formatter_to_the_engines_logger():
    from heliosdb.log import configure

    stream = io.StringIO()
    handler = configure(level=logging.INFO, stream=stream)
    try:
        env = hdb.StreamEnvironment()
        env.generate(count=10).sink(hdb.sinks.memory())
        env.execute(name="configured")
    finally:
        logging.getLogger("heliosdb").removeHandler(handler)
        logging.getLogger("heliosdb").setLevel(logging.NOTSET)
    assert "job=configured" in stream.getvalue()
