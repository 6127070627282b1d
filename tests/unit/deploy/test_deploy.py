"""deploy/: files reference real metrics, real config keys and each other; the compose
file mirrors the original production layout (the tools' own checks: tests/e2e/test_deploy_tools.py)."""

from __future__ import annotations

import json
import re

import yaml

from switchboard import config
from switchboard.observability.metrics import CATALOGUE, STANDARD_METRICS
from tests.support.deploy import (
    DASHBOARD,
    DEPLOY,
    dashboard_targets,
    prom_exprs,
    rules,
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
    "changes",
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
    # Patroni's documented timing constraint: loop_wait + 2 * retry_timeout <= ttl
    for n in (1, 2):
        dcs = yaml.safe_load((DEPLOY / "patroni" / f"patroni-pg{n}.yml").read_text())["bootstrap"][
            "dcs"
        ]
        assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
        assert dcs["synchronous_mode"] is True


def test_production_config_is_valid_for_this_build() -> None:
    cfg = config.load(DEPLOY / "config" / "switchboard.toml", environ={})
    assert "target_session_attrs=read-write" in cfg.database.url
    # next to the configuration file: /etc/switchboard on a host, deploy/config in the lab
    assert cfg.dispatcher.list_file == "dispatcher.list"
    # two routers behind one floating address: Record-Route names it, no per-router hiding
    assert cfg.router.record_route_host == "172.28.0.100"
    assert cfg.security.topology_hiding is False
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


def test_each_router_s_via_names_the_floating_address_its_keepalived_holds() -> None:
    """routerN.env ([router] via_host, the router's own settings beside the shared
    switchboard.toml) names the address keepalived makes that router MASTER of, and the
    compose service and the systemd unit read it."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    unit = (DEPLOY / "systemd" / "switchboard-router.service").read_text()
    assert "EnvironmentFile=-/etc/switchboard/router.env" in unit
    for n in (1, 2):
        env_file = DEPLOY / "config" / f"router{n}.env"
        environ = dict(
            ln.split("=", 1)
            for ln in env_file.read_text().splitlines()
            if ln.strip() and not ln.startswith("#")
        )
        cfg = config.load(DEPLOY / "config" / "switchboard.toml", environ=environ)
        keepalived = (DEPLOY / "keepalived" / f"keepalived-router{n}.conf").read_text()
        master = re.search(r"state MASTER.*?virtual_ipaddress \{\s*([0-9.]+)/", keepalived, re.S)
        assert master is not None
        assert cfg.router.via_host == master.group(1)
        # and its packets to the media nodes leave from that address while it holds it (a
        # node answers at the source address): routes in that instance, none in the other
        instances = re.split(r"\nvrrp_instance ", keepalived)[1:]
        mine = next(i for i in instances if "state MASTER" in i)
        other = next(i for i in instances if "state BACKUP" in i)
        for host in (1, 2, 3, 4):
            assert f"src {cfg.router.via_host} to 172.28.0.2{host}/32 dev eth0" in mine
        assert "virtual_routes" not in other
        # the nodes believe a router's X-Switchboard-Account from that address too (or a
        # prepaid carrier's calls go uncharged: unknown account, allowed)
        assert cfg.router.via_host in cfg.media.routers
        assert f"{cfg.router.via_host}:5060" in cfg.router.aliases  # its own address too
        assert compose["services"][f"router{n}"]["env_file"] == [f"./config/router{n}.env"]


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
