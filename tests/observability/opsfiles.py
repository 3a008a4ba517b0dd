"""The shipped dashboard and alert rules, read for tests: their PromQL and the metrics it uses."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List, Set

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "heliosdb-dashboard.json"
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "ops" / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = ROOT / "ops" / "prometheus" / "prometheus.yml"


def dashboard_exprs() -> List[str]:
    """Every panel target's PromQL, as written (with Grafana variables)."""
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def alert_exprs() -> List[str]:
    """Every rule's ``expr:`` (one line each in alerts.yml)."""
    return re.findall(r"^\s*expr:\s*(.+?)\s*$", ALERTS.read_text(), re.M)


def alert_names() -> List[str]:
    return re.findall(r"^\s*- alert:\s*(\S+)\s*$", ALERTS.read_text(), re.M)


def instantiate(expr: str, job_regex: str = ".*", interval: str = "5s") -> str:
    """A dashboard expression with its Grafana variables filled in."""
    return expr.replace("$__rate_interval", interval).replace("$job", job_regex)


def metric_names(expr: str) -> Set[str]:
    """The engine's series an expression reads (``streaming_*`` names, as exposed)."""
    return set(re.findall(r"\bstreaming_[a-z_]+\b", expr))
