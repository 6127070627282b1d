"""deploy/: rules and dashboard queries parse with promtool; files reference real metrics,
real config keys and each other; the compose file mirrors the original production layout."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from switchboard import config
from switchboard.observability.metrics import CATALOGUE, STANDARD_METRICS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "switchboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool (Debian prometheus, in Makefile APT_PACKAGES) missing"
)

# PromQL words that look like metric names but are not
PROMQL_WORDS = {
    "sum",
    "by",
    "rate",
    "increase",
    "histogram_quantile",
    "clamp_min",
    "max",
    "min",
    "offset",
    "and",
    "or",
    "unless",
    "deriv",
    "le",
    "count",
    "avg",
    "without",
    "on",
    "ignoring",
    "humanize",
    "humanizePercentage",
    "humanizeDuration",
    "value",
    "labels",
    "time",
    "abs",
    "bool",
    "topk",
    "absent",
    "group_left",
    "group_right",
    "vector",
}


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


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\bby \([^)]*\)", "", expr)
    expr = re.sub(r"\boffset \w+", "", expr)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"\d+\w*|e", n)}


def known(name: str, recorded: set[str]) -> bool:
    if name in CATALOGUE or name in STANDARD_METRICS or name in recorded:
        return True
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return base in CATALOGUE and CATALOGUE[base].kind == "histogram"


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


def test_queries_and_rules_use_only_documented_metrics() -> None:
    recorded = {r["record"] for r in rules() if "record" in r}
    unknown = {}
    for title, expr in prom_exprs():
        for name in metric_names(expr):
            if not known(name, recorded):
                unknown.setdefault(name, title)
    for r in rules():
        for name in metric_names(r["expr"]):
            if not known(name, recorded):
                unknown.setdefault(name, r.get("alert") or r.get("record"))
    assert not unknown, f"not in docs/metrics.md: {unknown}"


def test_alerts_cover_what_the_issue_asks() -> None:
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    for name in (
        "SwitchboardASRDrop",
        "SwitchboardPDDHigh",
        "SwitchboardNoActiveDestination",
        "SwitchboardSessionsNearLimit",
        "SwitchboardCDRSpoolGrowing",
        "SwitchboardNodeDown",
    ):
        assert name in alerts, name
        assert alerts[name]["labels"]["severity"] in ("page", "ticket")
    assert "offset 1d" in alerts["SwitchboardASRDrop"]["expr"]
    # PDD buckets carry the 7 s threshold as a boundary; the alert uses it
    assert "> 7" in alerts["SwitchboardPDDHigh"]["expr"]


def test_dashboard_has_the_original_panels_and_the_new_ones() -> None:
    titles = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    original = {
        "Active calls",
        "Calls per second",
        "Average call duration (ACD)",
        "Answer-seizure ratio (ASR)",
        "Post-dial delay (PDD)",
    }
    added = {
        "Destination states",
        "Failovers",
        "Rate-limit blocks",
        "CDR write lag",
        "CDR spool",
        "Revenue and cost",
    }
    assert original | added <= titles
    assert {"CPU", "Memory"} <= titles  # system resources
    # money comes from the database, with Grafana's time macros
    sql = [t["rawSql"] for _, t in dashboard_targets() if "rawSql" in t]
    assert sql and all("$__timeFilter(start_time)" in q and "FROM cdr" in q for q in sql)
    # panel ids unique, every target bound to a provisioned datasource uid
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "switchboard.yml").read_text()
    )
    uids = {d["uid"] for d in provisioned["datasources"]}
    assert {t["datasource"]["uid"] for _, t in dashboard_targets()} <= uids


def test_compose_mirrors_the_original_production_layout() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    routers = [s for s in services if s.startswith("router")]
    media = [s for s in services if s.startswith("media")]
    assert len(routers) == 2 and len(media) == 4
    assert {"pg1", "pg2", "etcd", "prometheus", "grafana", "keepalived1", "keepalived2"} <= set(
        services
    )
    for i, r in enumerate(routers, 1):
        assert services[f"keepalived{i}"]["network_mode"] == f"service:{r}"
        assert services[r]["command"][0] == "router"
    assert [services[m]["command"][-1] for m in media] == [
        "media-1",
        "media-2",
        "media-3",
        "media-4",
    ]
    # every bind-mounted file exists, relative to deploy/
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name}: {src} missing"
    # the VIPs are distinct and each router is MASTER for exactly one of them
    for i in (1, 2):
        conf = (DEPLOY / "keepalived" / f"keepalived-router{i}.conf").read_text()
        states = re.findall(r"state (MASTER|BACKUP)", conf)
        assert sorted(states) == ["BACKUP", "MASTER"]
        assert "172.28.0.100/24" in conf and "172.28.0.101/24" in conf
    # Patroni timing constraint from the reference: loop_wait + 2 * retry_timeout <= ttl
    for n in (1, 2):
        dcs = yaml.safe_load((DEPLOY / "patroni" / f"patroni-pg{n}.yml").read_text())["bootstrap"][
            "dcs"
        ]
        assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
        assert dcs["synchronous_mode"] is True


def test_production_config_is_valid_for_this_build() -> None:
    cfg = config.load(DEPLOY / "config" / "switchboard.toml", environ={})
    assert "target_session_attrs=read-write" in cfg.database.url
    assert cfg.dispatcher.list_file == "/etc/switchboard/dispatcher.list"
    lines = [
        ln
        for ln in (DEPLOY / "config" / "dispatcher.list").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert len(lines) == 4
    try:
        from switchboard.router.dispatcher import parse_list
    except ImportError:  # router not in this build
        return
    specs = parse_list((DEPLOY / "config" / "dispatcher.list").read_text())
    assert [s.port for s in specs] == [5081] * 4


def test_sysctl_keeps_the_original_kernel_parameters() -> None:
    text = (DEPLOY / "sysctl" / "99-switchboard.conf").read_text()
    values = dict(
        (k.strip(), " ".join(v.split()))
        for k, _, v in (ln.partition("=") for ln in text.splitlines())
        if v and not k.lstrip().startswith("#")
    )
    assert values["net.ipv4.ip_local_port_range"] == "10000 65535"
    assert values["net.core.rmem_max"] == "134217728"
    assert values["net.core.wmem_max"] == "134217728"
    assert values["net.ipv4.tcp_rmem"] == "4096 87380 67108864"
    assert values["net.ipv4.tcp_wmem"] == "4096 65536 67108864"
    # RTP ports are kept out of the ephemeral range
    assert "16384-32767" in values["net.ipv4.ip_local_reserved_ports"]
    limits = (DEPLOY / "sysctl" / "limits-99-switchboard.conf").read_text()
    assert re.search(r"switchboard\s+hard\s+nofile\s+1048576", limits)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_units_parse() -> None:
    units = sorted((DEPLOY / "systemd").iterdir())
    assert {u.name for u in units} >= {
        "switchboard-router.service",
        "switchboard-media@.service",
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


def test_each_media_container_listens_where_the_routers_send() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    from switchboard.router.dispatcher import parse_list

    targets = {
        (s.host, s.port) for s in parse_list((DEPLOY / "config" / "dispatcher.list").read_text())
    }
    toml = DEPLOY / "config" / "switchboard.toml"
    scraped = set(config.load(toml, environ={}).status.metrics_urls)
    for n in range(1, 5):
        svc = compose["services"][f"media{n}"]
        ip = svc["networks"]["voip"]["ipv4_address"]
        cfg = config.load(toml, environ={k: str(v) for k, v in svc["environment"].items()})
        port = int(cfg.media.listen[0].rpartition(":")[2])
        assert (ip, port) in targets, f"media{n}: {ip}:{port} not in dispatcher.list"
        assert cfg.media.sdp_ip == ip
        assert f"http://{ip}:{cfg.media.admin.rpartition(':')[2]}/metrics" in scraped
        assert "172.28.0.0/24" in cfg.esl.allow
