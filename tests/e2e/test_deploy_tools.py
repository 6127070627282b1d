"""deploy/ checked by the tools that will read it: promtool parses the rules, the
Prometheus config and every dashboard query, and runs the alert rules' unit tests;
systemd-analyze verifies the units."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.deploy import ALERTS, DEPLOY, prom_exprs

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool (Debian prometheus, in Makefile APT_PACKAGES) missing"
)


@needs_promtool
def test_promtool_checks_alert_and_recording_rules() -> None:
    r = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@needs_promtool
def test_promtool_checks_the_prometheus_config() -> None:
    r = subprocess.run(
        [PROMTOOL, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    # promtool has no "check expression"; each query becomes a recording rule it parses
    exprs = prom_exprs()
    assert len(exprs) >= 30
    doc = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:panel_{i}:query", "expr": e}
                    for i, (_, e) in enumerate(exprs)
                ],
            }
        ]
    }
    f = tmp_path / "dashboard-rules.yml"
    f.write_text(yaml.safe_dump(doc))
    r = subprocess.run([PROMTOOL, "check", "rules", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # and promtool does fail on a broken query (the check is not vacuous)
    doc["groups"][0]["rules"].append({"record": "broken:q", "expr": "sum(rate(x[5m])"})
    f.write_text(yaml.safe_dump(doc))
    assert subprocess.run([PROMTOOL, "check", "rules", str(f)], capture_output=True).returncode != 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_units_parse() -> None:
    units = sorted((DEPLOY / "systemd").iterdir())
    assert {u.name for u in units} >= {
        "switchboard-router.service",
        "switchboard-media@.service",
        "switchboard-media-reaper@.service",
        "switchboard.target",
        "switchboard-backup.timer",
    }
    for unit in units:
        r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        # a build host lacks /opt/switchboard and the user: only syntax errors count here
        syntax = [
            ln
            for ln in r.stderr.splitlines()
            if "Unknown key" in ln
            or "Invalid" in ln
            or "Missing '='" in ln
            or "Unknown section" in ln
        ]
        assert not syntax, f"{unit.name}: {syntax}"


@needs_promtool
def test_alerts_fire_on_the_failures_they_are_for() -> None:
    """promtool's rule unit tests: synthetic series for each failure, exact alerts expected."""
    tests = DEPLOY / "prometheus" / "alerts_test.yml"
    covered = {
        t["alertname"]
        for case in yaml.safe_load(tests.read_text())["tests"]
        for t in case["alert_rule_test"]
        if t.get("exp_alerts")
    }
    assert {
        "SwitchboardASRDrop",
        "SwitchboardPDDHigh",
        "SwitchboardNoActiveDestination",
        "SwitchboardSessionsNearLimit",
        "SwitchboardCDRSpoolGrowing",
        "SwitchboardNodeDown",
    } <= covered
    r = subprocess.run(
        [PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, cwd=tests.parent
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout
