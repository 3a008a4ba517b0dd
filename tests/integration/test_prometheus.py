"""A real Prometheus server (127.0.0.1, free port) scrapes a running job: the rate of
``streaming_events_processed_total`` and a latency quantile come back through Prometheus's HTTP
API, every dashboard and alert query evaluates, and the alert rules load."""
from __future__ import annotations

import uuid
from datetime import timedelta
from urllib.parse import urlparse

import heliosdb as hdb
from heliosdb import col
from tests.observability.opsfiles import alert_exprs, alert_names, dashboard_exprs, instantiate

RATE = 20_000


def test_prometheus_scrapes_a_running_job_and_answers_rate_and_latency_queries(prometheus):
    job = f"prom-{uuid.uuid4().hex[:8]}"
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_timeout=timedelta(milliseconds=20),
                                                    metrics=hdb.MetricsConfig(port=0)))
    (env.generate(rate=RATE, keys=100).filter(col("value") > 0.2)
        .key_by("key").window(hdb.TumblingWindow.of(timedelta(milliseconds=200)), time="ts")
        .aggregate(n=hdb.count(), total=hdb.sum("value")).name("per-key")
        .sink(hdb.sinks.callback(lambda batch: None)))
    handle = env.execute_async(name=job)
    undo = prometheus.scrape(urlparse(env.metrics_url).netloc)
    try:
        # The generator is paced at RATE events/s: Prometheus must see that rate.
        prometheus.wait_for(f'sum(rate(streaming_events_processed_total{{job="{job}"}}[3s]))',
                            accept=lambda v: 0.8 * RATE < v < 1.2 * RATE)
        p99 = prometheus.wait_for(
            f'histogram_quantile(0.99, sum by (le) (rate(streaming_latency_ms_bucket{{job="{job}"}}[3s])))')
        assert 0 < float(p99[0]["value"][1]) < 10_000
        # Every dashboard panel and alert rule is valid PromQL over the job's real series.
        for expr in dashboard_exprs():
            prometheus.query(instantiate(expr, job))
        for expr in alert_exprs():
            prometheus.query(expr)
        busy = prometheus.wait_for(f'sum by (task) (rate(streaming_task_busy_seconds_total{{job="{job}"}}[3s]))')
        assert {r["metric"]["task"] for r in busy} >= {"per-key"}
    finally:
        undo()
        handle.stop()
        handle.wait()
        env.close()
    groups = prometheus.api("rules")["data"]["groups"]
    loaded = {r["name"] for g in groups for r in g["rules"]}
    assert set(alert_names()) <= loaded
