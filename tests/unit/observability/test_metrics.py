"""Metrics catalogue, registries and the two ways a process serves /metrics."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from switchboard.observability.loop_lag import LoopLagMonitor
from switchboard.observability.metrics import (
    CATALOGUE,
    BillingMetrics,
    DialerMetrics,
    MediaMetrics,
    PlatformMetrics,
    RouterMetrics,
    mount_metrics,
    new_registry,
    render,
)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_original_call_metrics_keep_their_names_labels_and_buckets() -> None:
    reg = new_registry("media")
    m = MediaMetrics.create(reg)
    m.call_ended("inbound", "answered", billsec=45)
    m.call_ended("outbound", "busy", billsec=0)
    s = samples(render(reg).decode())
    assert (
        s[("voip_calls_total", frozenset({("direction", "inbound"), ("disposition", "answered")}))]
        == 1
    )
    assert (
        s[("voip_calls_total", frozenset({("direction", "outbound"), ("disposition", "busy")}))]
        == 1
    )
    # pre-created so ASR is 0 rather than "no data" before the first failure
    assert (
        s[("voip_calls_total", frozenset({("direction", "inbound"), ("disposition", "failed")}))]
        == 0
    )
    bounds = sorted(
        float(dict(k[1])["le"]) for k in s if k[0] == "voip_call_duration_seconds_bucket"
    )
    assert bounds == [10, 30, 60, 120, 300, 600, float("inf")]
    # billsec 45 falls in le=60, not le=30
    assert s[("voip_call_duration_seconds_bucket", frozenset({("le", "30.0")}))] == 0
    assert s[("voip_call_duration_seconds_bucket", frozenset({("le", "60.0")}))] == 1
    assert s[("voip_call_duration_seconds_sum", frozenset())] == 45


def test_call_ended_rejects_unknown_values() -> None:
    m = MediaMetrics.create(new_registry("media"))
    with pytest.raises(ValueError, match="disposition"):
        m.call_ended("inbound", "ANSWERED", 1)
    with pytest.raises(ValueError, match="direction"):
        m.call_ended("sideways", "answered", 1)


def test_every_service_set_fits_one_registry_and_matches_the_catalogue() -> None:
    reg = new_registry("all")
    RouterMetrics.create(reg)
    MediaMetrics.create(reg)
    BillingMetrics.create(reg)
    DialerMetrics.create(reg)
    LoopLagMonitor(reg)
    PlatformMetrics.create(reg, ["database"])
    exported = {fam.name for fam in reg.collect()}
    # prometheus_client names counter families without "_total"
    for name, spec in CATALOGUE.items():
        family = name.removesuffix("_total") if spec.kind == "counter" else name
        assert family in exported, name
    text = render(reg).decode()
    assert 'switchboard_build_info{service="all",version=' in text
    assert "process_cpu_seconds_total" in text


def test_destination_state_is_one_hot() -> None:
    reg = new_registry("router")
    m = RouterMetrics.create(reg)
    m.set_destination_state(1, "sip:127.0.0.1:5081", "active")
    m.set_destination_state(1, "sip:127.0.0.1:5081", "disabled")
    s = samples(render(reg).decode())
    d = ("uri", "sip:127.0.0.1:5081")
    state = {
        st: s[("switchboard_router_destination_state", frozenset({("set", "1"), d, ("state", st)}))]
        for st in RouterMetrics.DESTINATION_STATES
    }
    assert state == {"active": 0, "inactive": 0, "trying": 0, "disabled": 1}
    assert s[("switchboard_router_destination_up", frozenset({("set", "1"), d}))] == 0
    with pytest.raises(ValueError):
        m.set_destination_state(1, "x", "drained")


def test_mount_metrics_on_fastapi_admin_app() -> None:
    reg = new_registry("router")
    m = RouterMetrics.create(reg)
    m.requests.labels(method="INVITE").inc(3)
    app = FastAPI()
    mount_metrics(app, reg)
    r = TestClient(app).get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'switchboard_router_requests_total{method="INVITE"} 3.0' in r.text


def test_module_level_metrics_of_embedded_libraries_are_served() -> None:
    from prometheus_client import REGISTRY, Counter

    spooled = Counter("switchboard_test_embedded_written", "a library's module-level counter")
    try:
        spooled.inc(5)
        text = render(new_registry("media")).decode()
        isolated = render(new_registry("media", include_module_level=False)).decode()
    finally:
        REGISTRY.unregister(spooled)
    assert "switchboard_test_embedded_written_total 5.0" in text
    assert "switchboard_test_embedded_written_total" not in isolated
    # the global registry's process collector is not served twice
    assert text.count("# TYPE process_cpu_seconds_total counter") == 1


def test_no_created_series() -> None:
    reg = new_registry("media")
    MediaMetrics.create(reg).call_ended("inbound", "answered", 12)
    text = render(reg).decode()
    assert "voip_calls_total{" in text
    assert "_created" not in text  # they double the series for nothing
