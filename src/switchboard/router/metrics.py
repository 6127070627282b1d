"""Prometheus metrics of the router, read from the proxy's plain counters at scrape time.

Nothing here runs per message except :meth:`LatencyHistogram.observe` (a bisect and two
additions): the counters live as ints in :class:`~switchboard.router.proxy.Stats` and a
custom collector turns them into metric families when Prometheus scrapes. Semantics
follow the Kamailio Prometheus exporters: requests by method, replies by code,
current transactions, per-destination state as 0/1 gauges, drops of ACL and pike. Per
trunk (docs/router.md "Trunks"): calls by disposition, admitted calls, calls in progress and
in the last second, rejections by reason, post-dial delay — read from each
:class:`~switchboard.router.trunks.TrunkState` at scrape time, so the call path only
bumps plain ints.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from switchboard.router.trunks import PDD_BUCKETS, REJECTIONS

if TYPE_CHECKING:
    from switchboard.router.proxy import Proxy
    from switchboard.router.trunks import TrunkTable

PREFIX = "switchboard_router_"
# Forwarding latency: the time the router spends on one message, receive to send.
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class LatencyHistogram:
    """A lock-free histogram for the single-threaded event loop."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        cumulative = []
        total = 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            total += n
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=self.sum)


class RouterCollector:
    """Turns the proxy's counters and the dispatcher's state into metric families."""

    def __init__(
        self,
        proxy: Proxy,
        latency: LatencyHistogram,
        tls: Callable[[], int] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.proxy = proxy
        self.latency = latency
        self.tls = tls  # failed TLS handshakes so far (the TLS transport counts them)
        self.clock = clock  # the proxy's clock (calls in the last second); None: no gauge

    def collect(self) -> Iterator[Metric]:
        p = self.proxy
        s = p.stats
        c = CounterMetricFamily(
            PREFIX + "requests", "SIP requests received, by method", labels=["method"]
        )
        for method, n in sorted(s.requests.items()):
            c.add_metric([method], n)
        yield c
        c = CounterMetricFamily(
            PREFIX + "replies", "SIP replies sent upstream, by code", labels=["code"]
        )
        for code, n in sorted(s.replies.items()):
            c.add_metric([str(code)], n)
        yield c
        yield GaugeMetricFamily(
            PREFIX + "transactions_current",
            "Current server transactions",
            value=p.transaction_count,
        )
        yield GaugeMetricFamily(
            PREFIX + "pending_transactions",
            "Server transactions without a final response yet",
            value=p.pending_transactions(),
        )
        yield GaugeMetricFamily(
            PREFIX + "dialogs", "Current dialogs (answered calls)", value=p.dialog_count
        )
        for name, doc, value in (
            ("transactions", "Server transactions created", s.transactions_total),
            ("failovers", "Calls moved to the next destination (408/5xx/timeout)", s.failovers),
            ("acl_rejects", "Requests answered 403 by the ACL", s.acl_rejects),
            ("pike_blocks", "Sources blocked by flood detection", s.pike_blocks),
            (
                "pike_rejects",
                "Requests answered 503 because their source is blocked",
                s.pike_rejects,
            ),
            ("pike_drops", "Requests dropped silently from blocked sources", s.pike_drops),
            ("bad_messages", "Malformed messages received", s.bad_messages),
            ("retransmissions", "Retransmitted requests absorbed", s.retransmissions),
            ("branch_timeouts", "Forwarded requests that got no answer in time", s.branch_timeouts),
            ("scanner_drops", "Requests with a scanner's User-Agent dropped", s.scanner_drops),
            ("auth_failures", "Requests with credentials answered 401/403/407", s.auth_failures),
            ("auth_bans", "Sources banned for authentication failures", s.auth_bans),
            ("auth_ban_drops", "Requests dropped silently from banned sources", s.auth_ban_drops),
            ("acl_drops", "Requests from outside the ACL dropped silently", s.acl_drops),
            (
                "overload_rejects",
                "Calls answered 503 + Retry-After because every media node shed them",
                s.overload_rejects,
            ),
            (
                "late_answers_ended",
                "Late 2xx of a node the router had given up: ACKed and ended with BYE",
                s.late_answers_ended,
            ),
            (
                "overload_edge_rejects",
                "Of overload_rejects, calls refused at the edge for the shedding nodes",
                s.edge_sheds,
            ),
            (
                "overload_retries",
                "Calls every media node shed, sent to the nodes again after their Retry-After",
                s.shed_retries,
            ),
            (
                "lost_node_calls_ended",
                "Call legs of a lost media node ended by the router (BYE to the far end)",
                s.lost_node_calls_ended,
            ),
            (
                "lost_node_cdrs",
                "CDRs the router wrote for the legs it ended of a lost media node",
                s.lost_node_cdrs,
            ),
            (
                "lost_node_legs_unbilled",
                "Legs of a lost media node the router ended without a CDR (tag names no channel)",
                s.lost_node_legs_unbilled,
            ),
        ):
            yield CounterMetricFamily(PREFIX + name, doc, value=value)
        yield CounterMetricFamily(
            PREFIX + "tls_handshake_failures",
            "TLS handshakes that failed (either direction)",
            value=self.tls() if self.tls is not None else 0,
        )
        up = GaugeMetricFamily(
            PREFIX + "destination_up", "1 when selectable (active or trying)", labels=["set", "uri"]
        )
        state = GaugeMetricFamily(
            PREFIX + "destination_state",
            "1 for the destination's current state",
            labels=["set", "uri", "state"],
        )
        calls = GaugeMetricFamily(
            PREFIX + "destination_active_calls", "Calls on the destination", labels=["set", "uri"]
        )
        lat = GaugeMetricFamily(
            PREFIX + "destination_probe_latency_seconds",
            "EWMA of OPTIONS round trip",
            labels=["set", "uri"],
        )
        timeouts = CounterMetricFamily(
            PREFIX + "destination_timeouts",
            "Probes or calls left unanswered",
            labels=["set", "uri"],
        )
        for d in p.dispatcher.destinations():
            labels = [str(d.spec.setid), d.uri]
            up.add_metric(labels, 1 if d.up else 0)
            for st in ("active", "trying", "inactive", "disabled"):
                state.add_metric([*labels, st], 1 if d.state.value == st else 0)
            calls.add_metric(labels, d.active_calls)
            if d.latency_ms is not None:
                lat.add_metric(labels, d.latency_ms / 1000.0)
            timeouts.add_metric(labels, d.timeouts)
        yield from (up, state, calls, lat, timeouts)
        yield self.latency.family(
            PREFIX + "forwarding_latency_seconds", "Time to process one SIP message"
        )
        emergency = CounterMetricFamily(
            PREFIX + "emergency_calls", "Emergency calls admitted at the edge, by country",
            labels=["country"],
        )  # fmt: skip
        for country, n in sorted(p.stats.emergency.items()):
            emergency.add_metric([country], n)
        yield emergency
        if p.trunks is not None:
            yield from trunk_families(p.trunks, self.clock() if self.clock else None)


def trunk_families(table: TrunkTable, now: float | None) -> Iterator[Metric]:
    """``switchboard_router_trunk_*``: one series per trunk (names come from configuration,
    a bounded set); the ``acl`` trunk is the ``[acl] allow`` addresses no trunk claims."""
    calls = CounterMetricFamily(
        PREFIX + "trunk_calls",
        "Calls admitted on the trunk that got their final response, by disposition",
        labels=["trunk", "disposition"],
    )
    admitted = CounterMetricFamily(
        PREFIX + "trunk_admitted", "New calls admitted on the trunk", labels=["trunk"]
    )
    rejections = CounterMetricFamily(
        PREFIX + "trunk_rejections", "New calls refused on the trunk, by reason",
        labels=["trunk", "reason"],
    )  # fmt: skip
    active = GaugeMetricFamily(
        PREFIX + "trunk_active_calls", "Calls in progress on the trunk", labels=["trunk"]
    )
    cps = GaugeMetricFamily(
        PREFIX + "trunk_calls_per_second",
        "Calls admitted on the trunk in the last second",
        labels=["trunk"],
    )
    limit = GaugeMetricFamily(
        PREFIX + "trunk_limit", "The trunk's limits (0 = none)", labels=["trunk", "limit"]
    )
    pdd = HistogramMetricFamily(
        PREFIX + "trunk_pdd_seconds", "Post-dial delay of the trunk's calls", labels=["trunk"]
    )
    bounds = [repr(b) for b in PDD_BUCKETS] + ["+Inf"]
    for t in table.trunks.values():
        name = [t.name]
        s = t.stats
        for disp, n in sorted(s.calls.items()):
            calls.add_metric([t.name, disp], n)
        admitted.add_metric(name, s.admitted)
        for reason in REJECTIONS:  # every reason, 0 included: rate() works from the start
            rejections.add_metric([t.name, reason], s.rejected.get(reason, 0))
        active.add_metric(name, t.active)
        if now is not None:
            cps.add_metric(name, t.cps_now(now))
        limit.add_metric([t.name, "cps"], t.cps)
        limit.add_metric([t.name, "max_calls"], t.max_calls)
        total = 0
        cumulative = []
        for bound, n in zip(bounds, s.pdd_buckets, strict=True):
            total += n
            cumulative.append((bound, total))
        pdd.add_metric(name, cumulative, s.pdd_sum)
    yield from (calls, admitted, rejections, active, cps, limit, pdd)


def make_registry(
    proxy: Proxy,
    latency: LatencyHistogram,
    tls: Callable[[], int] | None = None,
    clock: Callable[[], float] | None = None,
) -> CollectorRegistry:
    """The router's registry: its own collector plus what every process exports (CPU and
    memory, Python info, ``switchboard_build_info{service="router"}``) — without them the
    status page showed the router as service "?" with 0 CPU seconds and 0 MiB."""
    from switchboard.observability.metrics import new_registry

    registry = new_registry("router", include_module_level=False)
    registry.register(RouterCollector(proxy, latency, tls, clock))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
