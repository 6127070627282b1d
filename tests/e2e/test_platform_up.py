"""`switchboard up --demo` end to end, one platform for the module, tests in order:

0. the demo: the carrier simulator sends a call mix in through the router, one call goes
   out over the Event Socket, and the summary shows the calls and priced CDRs;
1. calls flow through the router to both media nodes;
2. a real Prometheus scrapes it under SIPp load: every dashboard query and recording rule
   returns data, every alert rule evaluates without error;
3. the status page in headless Chromium shows real data, and a Drain click changes where
   the router sends calls; its 15-minute charts follow SIPp load (data checked against the
   router's history, screenshot taken);
4. a media node killed with SIGKILL is restarted and the router takes it back;
5. Ctrl-C stops everything: no process of the platform is left.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.error import HTTPError

import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchboard.observability.metrics import CATALOGUE
from tests.support.net import wait_until
from tests.support.platform_harness import (
    DASHBOARD,
    Chromium,
    Platform,
    Prometheus,
    alive,
    descendants,
    free_run,
    http_json,
    http_text,
    sipp_calls,
)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="Debian sip-tester missing"),
]

# Metrics of features off by default: no series until the feature is used.
OPTIONAL = {"switchboard_credit_authorisations_total": "[billing] credit_control = false"}

# Which process exports a catalogue group. Billing's writer runs inside the media nodes.
EXPORTED_BY = {
    "router": "router",
    "media": "media",
    "billing": "media",
    "common": "router",
    "dialer": "dialer",
}


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\bby \([^)]*\)", "", expr)
    return set(re.findall(r"[a-z_]+_[a-z_:]+", expr))


def needs(expr: str) -> set[str]:
    """The services whose metrics a query reads (catalogue service of each name)."""
    out = set()
    for name in metric_names(expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        spec = CATALOGUE.get(name) or CATALOGUE.get(base)
        if spec is not None:
            out.add(EXPORTED_BY.get(spec.service, spec.service))
    return out


def counter(url: str, name: str, **labels: str) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(http_text(url + "/metrics")):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def answers(url: str) -> bool:
    try:
        http_text(url)
    except OSError:
        return False
    return True


def attempts(p: Platform) -> list[float]:
    return [counter(u, "switchboard_media_call_attempts_total") for u in p.media_admin_urls()]


def destinations(p: Platform) -> dict[str, str]:
    return {d["uri"]: d["state"] for d in http_json(p.admin_url + "/destinations")}


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    # a chart point every second (default 5 s), so a short load shows as a curve
    # and a carrier trunk with limits on 127.0.0.2, so the dashboard's trunk panels (limits,
    # rejections) have something to show: on defaults there is only the unlimited acl trunk
    p = Platform(
        media_nodes=2,
        extra_config="[status]\nhistory_interval = 1\n"
        '[trunks.e2e-carrier]\nsources = ["127.0.0.2"]\ncps = 1\nmax_calls = 20\n',
    )
    # --demo: the carrier simulator on the gateway address stays up for the transit tests
    p.start("--demo")
    wait_until(lambda: "The platform keeps running" in p.text(), 90, "the demo's summary")
    wait_until(lambda: set(destinations(p).values()) == {"active"}, 30, "both media nodes active")
    yield p
    p.cleanup()


def test_demo_places_the_call_mix_and_prints_the_summary(platform: Platform) -> None:
    out = " ".join(platform.text().split())  # the tables wrap: compare whitespace-free runs
    flat = out.replace("│", " ").replace("┃", " ")
    flat = " ".join(flat.split())
    # the calls the carrier sent in through the router, and the ESL originate
    for expected in ("transit, answered 442079460001", "200 answered", "486 busy", "404 not found"):
        assert expected in flat, expected
    assert "ESL originate 4930901820" in flat and "+OK" in flat
    # CDRs with prices from the demo deck (4420 → 0.0090 per minute, billed per minute)
    assert re.search(r"442079460001 inbound 1 100 % [\d.]+ s – 0\.0090", flat), flat[-3000:]
    assert re.search(r"conf-demo inbound 2 100 %", flat)
    assert "11 calls" in flat


def test_calls_flow_through_the_router_to_both_media_nodes(platform: Platform) -> None:
    before = attempts(platform)
    r = sipp_calls(f"127.0.0.1:{platform.router_sip}", "echo", calls=20, rate=10)
    assert r.returncode == 0, r.stdout[-3000:]
    after = attempts(platform)
    grew = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(grew) >= 20
    assert all(g >= 5 for g in grew), f"round-robin should use both nodes: {grew}"
    answered = sum(
        counter(u, "voip_calls_total", disposition="answered") for u in platform.media_admin_urls()
    )
    assert answered >= 20


def start_campaign(p: Platform, metrics_port: int) -> subprocess.Popen[str]:
    """A dialer campaign against media-1's Event Socket, serving /metrics while it runs."""
    contacts = p.state / "contacts.csv"
    # answered numbers, and one busy: 30 contacts at 2/s keep it running through the checks
    contacts.write_text(
        "number\n"
        + "".join(f"44207946{n:04d}\n" if n % 10 else f"491511234{n:03d}9\n" for n in range(1, 31))
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["SWITCHBOARD_DATABASE__URL"] = (p.state / "state" / "postgres.uri").read_text().strip()
    return subprocess.Popen(
        [
            sys.executable, "-m", "switchboard.cli", "campaign", "run", str(contacts),
            "--config", str(p.state / "sb.toml"), "--name", "e2e", "--cps", "2",
            "--esl", f"127.0.0.1:{p.esl}", "--metrics", f"127.0.0.1:{metrics_port}",
            "--play", "prompt", "--no-live",
        ],
        cwd=p.state, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_prometheus_sees_every_dashboard_query_and_rule(platform: Platform) -> None:
    dialer_port = free_run(1)
    prom = Prometheus(
        {
            "switchboard-router": [f"127.0.0.1:{platform.router_admin}"],
            "switchboard-media": [
                f"127.0.0.1:{platform.media_admin + i}" for i in range(platform.media_nodes)
            ],
            "switchboard-dialer": [f"127.0.0.1:{dialer_port}"],
        }
    )
    prom.start()
    campaign = start_campaign(platform, dialer_port)
    try:
        r = sipp_calls(f"127.0.0.1:{platform.router_sip}", "echo", calls=20, rate=10)
        assert r.returncode == 0, r.stdout[-3000:]
        # transit: router → media node → gateway → the carrier simulator (PDD, gateway legs)
        r = sipp_calls(f"127.0.0.1:{platform.router_sip}", "4420794601", calls=10, rate=5)
        assert r.returncode == 0, r.stdout[-3000:]
        # the trunk's carrier over its cps limit: some calls admitted, the rest refused 503
        r = sipp_calls(
            f"127.0.0.1:{platform.router_sip}", "echo", calls=6, rate=6, source="127.0.0.2"
        )
        assert r.returncode != 0, "cps = 1 let 6 calls in one second through"
        assert campaign.poll() is None, campaign.communicate()[0][-3000:]
        dialer_names = {
            fam.name + ("_total" if fam.type == "counter" else "")
            for fam in text_string_to_metric_families(
                http_text(f"http://127.0.0.1:{dialer_port}/metrics")
            )
        }
        # (prometheus_client's `_created` companions are not metrics of their own)
        undocumented = {
            n for n in dialer_names if n.startswith("switchboard_") and not n.endswith("_created")
        } - set(CATALOGUE)
        assert not undocumented, f"dialer metrics not in docs/metrics.md: {undocumented}"
        assert "switchboard_event_loop_lag_seconds" in dialer_names

        def scraped_enough() -> bool:
            got = prom.query("count_over_time(switchboard_router_requests_total[1m])")
            return bool(got) and min(float(s["value"][1]) for s in got) >= 5

        wait_until(scraped_enough, 30, "five scrapes")
        wait_until(lambda: prom.query("switchboard:cps:rate1m"), 15, "a rule evaluation")

        running = {"router", "media", "dialer"}
        checked, empty = [], []
        for panel in json.loads(DASHBOARD.read_text())["panels"]:
            for t in panel.get("targets", []):
                expr = t.get("expr")
                if not expr or "offset" in expr:
                    continue  # "a day ago" has no data on a new server by definition
                if any(m in expr for m in OPTIONAL):
                    continue  # a feature that is off by default
                assert needs(expr) <= running, expr
                checked.append(expr)
                if not prom.query(expr):
                    empty.append(f"{panel['title']}: {expr}")
        assert len(checked) >= 30
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

        rules = prom.rules()
        assert len(rules) >= 20
        broken = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] != "ok"]
        assert not broken, broken
        no_data = [
            r["name"] for r in rules if r["type"] == "recording" and not prom.query(r["name"])
        ]
        assert not no_data, f"recording rules without data: {no_data}"
        up = {s["metric"]["instance"]: s["value"][1] for s in prom.query("up")}
        assert set(up.values()) == {"1"}, up
    finally:
        campaign.send_signal(signal.SIGINT)  # the dialer stops cleanly and can resume
        try:
            campaign.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            campaign.kill()
            campaign.communicate()
        prom.stop()


def test_every_exported_metric_is_documented(platform: Platform) -> None:
    """docs/metrics.md (the catalogue) lists every metric the running processes export."""
    exported: dict[str, str] = {}
    for url in [platform.admin_url, *platform.media_admin_urls()]:
        names = set()
        for fam in text_string_to_metric_families(http_text(url + "/metrics")):
            name = fam.name + ("_total" if fam.type == "counter" else "")
            names.add(name)
            if name.startswith(("switchboard_", "voip_")):
                exported[name] = url
        # every process shows its event-loop stalls and collector pauses
        for common in ("switchboard_event_loop_lag_seconds", "switchboard_gc_pause_seconds"):
            assert common in names, f"{url}: no {common}"
    assert len(exported) > 30
    undocumented = {n: u for n, u in exported.items() if n not in CATALOGUE}
    assert not undocumented, f"exported but not in docs/metrics.md: {undocumented}"


def test_status_page_shows_the_platform_and_drain_changes_routing(platform: Platform) -> None:
    if shutil.which("chromium") is None:
        pytest.skip("Debian chromium missing")
    try:
        http_text(platform.admin_url + "/status")
    except HTTPError as exc:
        if exc.code == 404:
            pytest.skip("the router's admin app does not mount the status page yet")
        raise
    first = f"sip:127.0.0.1:{platform.media_sip}"
    browser = Chromium()
    try:
        browser.open(platform.admin_url + "/status")
        # real data: both media nodes listed active, every process up, calls counted
        browser.wait_js(
            f"document.querySelector('#destinations tr[data-uri=\"{first}\"]')"
            " && document.querySelectorAll('#destinations tbody tr[data-state=\"active\"]').length === 2"
        )
        browser.wait_js(
            "[...document.querySelectorAll('#nodes tbody tr')].length === 4"
            " && ![...document.querySelectorAll('#nodes tbody tr')].some(r => r.textContent.includes('down'))"
        )
        # the router's own row: its service name, CPU seconds and memory (were "?", 0, 0)
        router_row = browser.js(
            "[...document.querySelectorAll('#nodes tbody tr')].map(r => [...r.cells].map("
            "c => c.textContent)).find(c => c[0] === 'router')"
        )
        assert router_row, "no router row"
        assert float(router_row[4]) > 0 and int(router_row[5].split()[0]) > 10, router_row
        services = browser.js(
            "[...document.querySelectorAll('#nodes tbody tr')].map(r => r.cells[0].textContent)"
        )
        assert sorted(services) == ["media", "media", "router", "up"]  # `up` is the supervisor
        calls = browser.wait_js(
            "Number(document.getElementById('kpi-calls').textContent) >= 20 && document.getElementById('kpi-calls').textContent"
        )
        assert int(calls) >= 20
        # recent CDRs from PostgreSQL, and the dialer campaign of the Prometheus test
        browser.wait_js("document.querySelectorAll('#cdrs tbody tr').length === 20")
        browser.wait_js(
            "[...document.querySelectorAll('#campaigns tbody tr')].some("
            "r => r.cells[0].textContent === 'e2e' && Number(r.cells[4].textContent) > 0)"
        )

        browser.click(f'#destinations tr[data-uri="{first}"] button')
        wait_until(lambda: destinations(platform)[first] == "disabled", 10, "drain")
        browser.wait_js(
            f"document.querySelector('#destinations tr[data-uri=\"{first}\"]').dataset.state === 'disabled'"
        )

        before = attempts(platform)
        r = sipp_calls(f"127.0.0.1:{platform.router_sip}", "echo", calls=10, rate=10)
        assert r.returncode == 0, r.stdout[-3000:]
        after = attempts(platform)
        assert after[0] == before[0], "a drained node got new calls"
        assert after[1] - before[1] >= 10

        browser.click(f'#destinations tr[data-uri="{first}"] button')  # now "Enable"
        wait_until(lambda: destinations(platform)[first] == "active", 10, "enable")
    finally:
        browser.close()


CHART_DATA = (
    "Object.fromEntries(['active_calls', 'cps', 'asr', 'pdd_p95'].map(k => [k, {"
    " values: JSON.parse(document.getElementById('chart-' + k).dataset.values || '[]'),"
    " times: JSON.parse(document.getElementById('chart-' + k).dataset.times || '[]')}]))"
)


def test_status_page_charts_follow_sipp_load(platform: Platform, tmp_path: Path) -> None:
    """Under SIPp load the charts rise (active calls, calls/s), ASR and PDD p95 are drawn,
    and every drawn value is the router's own history point for that instant."""
    if shutil.which("chromium") is None:
        pytest.skip("Debian chromium missing")
    wait_until(lambda: set(destinations(platform).values()) == {"active"}, 30, "nodes active")
    browser = Chromium()
    try:
        browser.open(platform.admin_url + "/status")
        browser.wait_js("Number(document.body.dataset.historyPoints) >= 2")
        start = browser.js(
            "JSON.parse(document.getElementById('chart-active_calls').dataset.times).at(-1)"
        )
        results: list[subprocess.CompletedProcess[str]] = []
        # 60 echo calls of 3 s at 15/s (about 45 at once), then 10 transit calls to the
        # carrier simulator (PDD is measured on gateway legs)
        load = threading.Thread(
            target=lambda: results.append(
                sipp_calls(
                    f"127.0.0.1:{platform.router_sip}", "echo", calls=60, rate=15, duration_ms=3000
                )
            )
        )
        load.start()
        try:
            # the page shows the load while it runs
            browser.wait_js(
                "JSON.parse(document.getElementById('chart-active_calls').dataset.values)"
                ".at(-1) >= 10",
                timeout=30,
            )
        finally:
            load.join(60)
        assert results and results[0].returncode == 0, results[0].stdout[-3000:]
        r = sipp_calls(f"127.0.0.1:{platform.router_sip}", "4420794601", calls=10, rate=5)
        assert r.returncode == 0, r.stdout[-3000:]
        browser.wait_js(
            "JSON.parse(document.getElementById('chart-active_calls').dataset.values).at(-1) === 0"
            " && JSON.parse(document.getElementById('chart-pdd_p95').dataset.values).at(-1) > 0",
            timeout=30,
        )
        chart = browser.js(CHART_DATA)
        png = browser.screenshot(
            Path(os.environ.get("STATUS_SCREENSHOT_DIR") or tmp_path) / "status-under-load.png"
        )
        history = json.loads(browser.js("fetch('/status/api/history').then(r => r.text())"))
    finally:
        browser.close()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    times = chart["active_calls"]["times"]
    during = [i for i, t in enumerate(times) if t > start]
    active = [chart["active_calls"]["values"][i] for i in during]
    cps = [chart["cps"]["values"][i] or 0 for i in during]
    assert max(active) >= 10 and active[-1] == 0, active
    assert max(cps) >= 5, cps  # SIPp offered 15/s
    asr = [v for v in chart["asr"]["values"] if v is not None]
    assert asr and all(0 <= v <= 100 for v in asr) and asr[-1] > 0
    assert chart["pdd_p95"]["values"][-1] > 0  # ms
    # point for point what the router keeps: one a second, in order, the last 15 minutes
    assert all(0.9 <= b - a < 5 for a, b in itertools.pairwise(times)), times
    by_time = {p["t"]: p for p in history["points"]}
    scale = {"active_calls": 1, "cps": 1, "asr": 100, "pdd_p95": 1000}
    for key, k in scale.items():
        for t, v in zip(chart[key]["times"], chart[key]["values"], strict=True):
            want = by_time[t][key]
            assert (v is None) if want is None else v == pytest.approx(want * k), (key, t)


def test_killed_media_node_comes_back(platform: Platform) -> None:
    first = f"sip:127.0.0.1:{platform.media_sip}"
    victim = platform.pids()["media-1"]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: platform.pids()["media-1"] != victim, 30, "media-1 restarted")
    assert "media-1 exited with code -9" in platform.text()
    # the router notices through probing, then takes it back
    wait_until(lambda: destinations(platform)[first] == "active", 30, "media-1 active again")
    wait_until(lambda: answers(platform.media_admin_urls()[0] + "/metrics"), 30, "media-1 /metrics")
    before = attempts(platform)
    r = sipp_calls(f"127.0.0.1:{platform.router_sip}", "echo", calls=10, rate=10)
    assert r.returncode == 0, r.stdout[-3000:]
    assert attempts(platform)[0] > before[0]


def test_sighup_reloads_the_services_without_restarting_them(platform: Platform) -> None:
    assert platform.proc is not None
    before = platform.pids()
    platform.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reloaded: 2 destination(s)" in platform.text(), 15, "router reload")
    wait_until(lambda: platform.text().count("dialplan reloaded") >= 2, 15, "media reloads")
    assert platform.pids() == before
    assert set(destinations(platform).values()) == {"active"}


def test_ctrl_c_leaves_nothing_running(platform: Platform) -> None:
    assert platform.proc is not None
    tree = descendants(platform.proc.pid)
    pg_pid_file = platform.state / "state" / "pgdata" / "postmaster.pid"
    if pg_pid_file.exists():
        tree.add(int(pg_pid_file.read_text().split()[0]))
    assert len(tree) >= 4  # router, two media nodes, database (and postgres)
    assert platform.stop() == 0, platform.text()[-3000:]
    wait_until(lambda: not any(alive(p) for p in tree), 15, "every platform process gone")
