"""Where deploy/ keeps what the deploy tests read, and readers for the dashboard and rules."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "switchboard.json"


def dashboard_targets() -> list[tuple[str, dict]]:
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target))
    return out


def prom_exprs() -> list[tuple[str, str]]:
    return [(title, t["expr"]) for title, t in dashboard_targets() if "expr" in t]


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
