"""The shipped Grafana dashboard and Prometheus alert rules: promtool accepts and unit-tests the
rules, and every metric the dashboard and the rules query exists in a running engine's /metrics."""
from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from urllib.request import urlopen

import pyarrow as pa

import heliosdb as hdb
from heliosdb import col
from heliosdb.metrics import METRICS
from heliosdb.testing import wait_until
from tests.integration.services import require_tool

from .opsfiles import (ALERTS, ALERTS_TEST, DASHBOARD, PROMETHEUS_CONFIG, alert_exprs, alert_names,
                       dashboard_exprs, metric_names)


def _promtool(*args: str) -> str:
    tool = require_tool("promtool")
    res = subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"promtool {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_promtool_check_rules_passes():
    assert "SUCCESS" in _promtool("check", "rules", str(ALERTS))


def test_alert_rules_fire_as_their_unit_tests_expect():
    assert "SUCCESS" in _promtool("test", "rules", str(ALERTS_TEST))


def test_sample_prometheus_config_is_valid():
    assert "SUCCESS" in _promtool("check", "config", str(PROMETHEUS_CONFIG))


def test_the_user_guides_alerts_are_there():
    assert {"HighLatency", "Backpressure", "CheckpointFailure"} <= set(alert_names())


def test_dashboard_has_the_user_guides_panels_and_unique_ids():
    dash = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for panel in ("throughput", "p50 / p95 / p99", "state size", "checkpoint duration",
                  "backpressure", "operator latency", "channel fill"):
        assert panel in titles, f"dashboard lacks a {panel!r} panel"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "job"}


def _metrics_text() -> str:
    """/metrics of a running windowed job (every kind of metric has a series)."""
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=1000, metrics=hdb.MetricsConfig(port=0)))
    keys = hdb.table(pa.table({"key": list(range(100)), "tier": ["gold"] * 100}))   # a lookup join's
    (env.generate(rate=50_000).filter(col("value") > 0.2).join(keys, on="key", how="left")
        .key_by("key").window(hdb.TumblingWindow.of(timedelta(milliseconds=100)), time="ts")
        .aggregate(n=hdb.count()).sink(hdb.sinks.callback(lambda b: None)))
    handle = env.execute_async(name="ops-files")
    try:
        assert wait_until(lambda: handle.metrics()["events_out"] > 0, 60), \
            "no window closed and reached the sink"
        with urlopen(env.metrics_url) as resp:
            return resp.read().decode()
    finally:
        handle.stop()
        handle.wait()
        env.close()


def test_every_metric_the_dashboard_and_rules_query_exists_in_a_running_engine():
    text = _metrics_text()
    exposed = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
    wanted = set()
    for expr in dashboard_exprs() + alert_exprs():
        wanted |= metric_names(expr)
    assert wanted, "no streaming_* metric found in the dashboard and rules"
    missing = sorted(wanted - exposed)
    assert not missing, f"queried but not exposed by the engine: {missing}"
    # ... and every metric the engine defines is exposed (a windowed job has them all).
    for name, (typ, _, _) in METRICS.items():
        assert (name + "_bucket" if typ == "histogram" else name) in exposed, f"{name} not exposed"
