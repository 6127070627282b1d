"""The platform's Prometheus metrics: one catalogue, one registry per process, one `/metrics`.

Every metric a Switchboard process exports is declared once, in ``CATALOGUE`` below, with
its type, labels and buckets; ``docs/metrics.md`` describes the same list for operators and
the Grafana dashboard and alert rules in ``deploy/`` use exactly these names (a test keeps
the three in step). The original system's names are kept verbatim —
``voip_calls_total{direction,disposition}`` and ``voip_call_duration_seconds`` with buckets
10, 30, 60, 120, 300, 600 — everything else is ``switchboard_<service>_…``.

Practice (Prometheus's naming guidelines, prometheus.io/docs/practices/naming): base
units in names (``_seconds``,
``_bytes``, ``_total``); bounded label values only (never a call-id, number or IP address);
ratios such as ASR are computed by recording rules, not exported; histogram buckets put a
boundary on every SLO threshold (PDD 3 s and 7 s).

Use from a service::

    registry = new_registry("media")          # process/platform collectors + build info
    m = MediaMetrics.create(registry)
    mount_metrics(admin_app, registry)        # GET /metrics on the FastAPI admin app
    m.active_calls.inc(); m.call_ended("inbound", "answered", billsec=42)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from switchboard import __version__

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

# Text format 0.0.4: what every Prometheus 2.x server parses (the Debian one included).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Kind = Literal["counter", "gauge", "histogram"]

# Bucket sets (seconds). The original system's call-duration buckets are kept exactly.
CALL_DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# PDD: the usual carrier-monitoring bounds plus sub-second ones (loopback and good
# carriers answer fast);
# 3 s (perceived delay) and 7 s (carrier threshold) are boundaries so compliance is exact.
PDD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0)
SETUP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FORWARDING_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
# Event-loop lag and collector pauses: 50 ms (the stall budget) is a boundary.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CDR_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# up to 5 s: an authorisation during a database failover waits for the pool's connect
# timeout (3 s) before it fails over to the next host
RATING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric: its name as scraped (counters end in ``_total``)."""

    name: str
    kind: Kind
    service: str
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()


def _spec(
    name: str,
    kind: Kind,
    service: str,
    labels: tuple[str, ...],
    help: str,
    buckets: tuple[float, ...] = (),
) -> MetricSpec:
    return MetricSpec(name, kind, service, labels, help, buckets)


# fmt: off
_SPECS: tuple[MetricSpec, ...] = (
    # -- every process ---------------------------------------------------------------------
    _spec("switchboard_build_info", "gauge", "common", ("service", "version"), "Always 1; the process's service name and Switchboard version."),
    _spec("switchboard_event_loop_lag_seconds", "histogram", "common", (), "How late a timer asked to run every 20 ms actually ran: a stall of the process's event loop shows as a sample of its length.", LAG_BUCKETS),
    _spec("switchboard_event_loop_lag_max_seconds", "gauge", "common", (), "Largest event-loop lag seen in the last 10 to 20 seconds."),
    _spec("switchboard_event_loop_stall_max_seconds", "gauge", "common", (), "Largest event-loop lag of the last 10 to 20 seconds less the time the loop's thread waited for a CPU (Linux schedstat): what the process itself blocked for (a long callback, a blocking call, a collection), not a busy machine."),
    _spec("switchboard_gc_pause_seconds", "histogram", "common", ("generation",), "Duration of each garbage collection the interpreter ran, by generation (2 = full); the event loop waits for it.", LAG_BUCKETS),
    # -- calls: the original system's names (media node, one sample per call leg) --------
    _spec("voip_calls_total", "counter", "media", ("direction", "disposition"), "Finished call legs by direction (inbound, outbound) and disposition (answered, busy, no_answer, failed, cancelled)."),
    _spec("voip_call_duration_seconds", "histogram", "media", (), "Billable seconds of answered calls (ACD = _sum / _count).", CALL_DURATION_BUCKETS),
    # -- router (Kamailio role) --------------------------------------------------------------
    _spec("switchboard_router_requests_total", "counter", "router", ("method",), "SIP requests received (after retransmission absorption), by method."),
    _spec("switchboard_router_replies_total", "counter", "router", ("code",), "SIP responses sent or relayed upstream, by status code."),
    _spec("switchboard_router_transactions_current", "gauge", "router", (), "Server transactions currently held by the proxy (Kamailio tm.stats current)."),
    _spec("switchboard_router_transactions_total", "counter", "router", (), "Server transactions created."),
    _spec("switchboard_router_pending_transactions", "gauge", "router", (), "Server transactions without a final response yet."),
    _spec("switchboard_router_dialogs", "gauge", "router", (), "Dialogs (answered calls) currently established through the router."),
    _spec("switchboard_router_destination_up", "gauge", "router", ("set", "uri"), "1 when the dispatcher destination takes new calls (active or trying), else 0."),
    _spec("switchboard_router_destination_state", "gauge", "router", ("set", "uri", "state"), "1 for the destination's current state (active, trying, inactive, disabled), 0 for the others."),
    _spec("switchboard_router_destination_active_calls", "gauge", "router", ("set", "uri"), "Calls in progress on the destination (call-load algorithm input)."),
    _spec("switchboard_router_destination_probe_latency_seconds", "gauge", "router", ("set", "uri"), "Smoothed round-trip time of answered OPTIONS probes."),
    _spec("switchboard_router_destination_timeouts_total", "counter", "router", ("set", "uri"), "Probes or calls the destination left unanswered."),
    _spec("switchboard_router_failovers_total", "counter", "router", (), "Calls moved to the next destination (408/5xx or no answer in failover_timeout)."),
    _spec("switchboard_router_overload_rejects_total", "counter", "router", (), "Calls answered 503 + Retry-After (the smallest the nodes gave) because the media nodes are shedding: every node tried shed the call, or the router refused it itself for them (edge shedding): the platform is overloaded."),
    _spec("switchboard_router_overload_edge_rejects_total", "counter", "router", (), "Of switchboard_router_overload_rejects_total, the calls the router refused at its edge, without asking a node, because its nodes were shedding that share of new calls ([dispatcher] edge_shedding)."),
    _spec("switchboard_router_overload_retries_total", "counter", "router", (), "Calls every media node shed (503 + Retry-After) that the router sent to the nodes once more after that Retry-After instead of answering the caller 503: a node's shedding may be a moment's stall."),
    _spec("switchboard_router_late_answers_ended_total", "counter", "router", (), "Calls a media node answered after the router had given it up and sent the call elsewhere: the router ACKed that 2xx and ended it with BYE."),
    _spec("switchboard_router_lost_node_calls_ended_total", "counter", "router", (), "Call legs of a media node inactive for lost_node_timeout (its box lost) that the router ended itself: BYE to the far end."),
    _spec("switchboard_router_lost_node_cdrs_total", "counter", "router", (), "CDRs the router wrote (queued to its CDR writer) for the call legs it ended of a lost media node, under the node's channel uuid."),
    _spec("switchboard_router_lost_node_legs_unbilled_total", "counter", "router", (), "Call legs of a lost media node the router ended without writing a CDR: the node's tag named no channel (an older node, a client's own origination_uuid). Alert on any increase."),
    _spec("switchboard_router_branch_timeouts_total", "counter", "router", (), "Forwarded requests that got no answer in time."),
    _spec("switchboard_router_acl_rejects_total", "counter", "router", (), "Dialog-creating requests from sources outside [acl].allow, answered 403."),
    _spec("switchboard_router_pike_blocks_total", "counter", "router", (), "Source IPs that crossed the pike density and were blocked."),
    _spec("switchboard_router_pike_rejects_total", "counter", "router", (), "Requests from blocked sources answered 503 Too Many Requests."),
    _spec("switchboard_router_pike_drops_total", "counter", "router", (), "Requests from blocked sources dropped silently (above ten times the density)."),
    _spec("switchboard_router_bad_messages_total", "counter", "router", (), "Malformed messages received (answered 400 or dropped)."),
    _spec("switchboard_router_retransmissions_total", "counter", "router", (), "Retransmitted requests absorbed by the transaction layer."),
    _spec("switchboard_router_scanner_drops_total", "counter", "router", (), "Requests whose User-Agent names a known SIP scanner, dropped silently ([security] scanner_user_agents)."),
    _spec("switchboard_router_auth_failures_total", "counter", "router", (), "Requests that carried credentials and were answered 401/403/407 downstream, counted per source for bans."),
    _spec("switchboard_router_auth_bans_total", "counter", "router", (), "Sources banned for more than [security] auth_fail_limit authentication failures in auth_fail_window seconds."),
    _spec("switchboard_router_auth_ban_drops_total", "counter", "router", (), "Requests from banned sources dropped silently."),
    _spec("switchboard_router_acl_drops_total", "counter", "router", (), "Requests from sources outside [acl].allow dropped silently ([security] outside_acl = \"drop\")."),
    _spec("switchboard_router_tls_handshake_failures_total", "counter", "router", (), "TLS handshakes that failed, accepted or dialled (wrong CA, no client certificate, plain SIP on the TLS port)."),
    _spec("switchboard_router_forwarding_latency_seconds", "histogram", "router", (), "Time the router spends on one SIP message, receive to send.", FORWARDING_BUCKETS),
    _spec("switchboard_router_trunk_calls_total", "counter", "router", ("trunk", "disposition"), "Calls admitted on the trunk that got their final response, by disposition (answered, busy, no_answer, cancelled, failed)."),
    _spec("switchboard_router_trunk_admitted_total", "counter", "router", ("trunk",), "New calls admitted on the trunk; rate() is the trunk's calls per second."),
    _spec("switchboard_router_trunk_rejections_total", "counter", "router", ("trunk", "reason"), "New calls the trunk refused, by reason: cps, max_calls (503 + Retry-After), direction, tech_prefix, forbidden_destination, tls_client (403), invalid_number (404), incomplete_number (484), anonymous (433)."),
    _spec("switchboard_router_trunk_active_calls", "gauge", "router", ("trunk",), "Calls in progress on the trunk (admitted, not yet failed or hung up): what max_calls limits."),
    _spec("switchboard_router_trunk_calls_per_second", "gauge", "router", ("trunk",), "Calls admitted on the trunk in the last second (the sliding window the cps limit counts)."),
    _spec("switchboard_router_trunk_limit", "gauge", "router", ("trunk", "limit"), "The trunk's configured limits, limit = cps or max_calls; 0 = no limit."),
    _spec("switchboard_router_trunk_pdd_seconds", "histogram", "router", ("trunk",), "Post-dial delay of the trunk's calls: INVITE admitted to the first ringing or progress, else to the final response.", PDD_BUCKETS),
    _spec("switchboard_router_emergency_calls_total", "counter", "router", ("country",), "Emergency calls admitted at the edge (spared pike, shedding, draining and trunk limits), by the trunk's country (any = none set)."),
    _spec("switchboard_router_stir_verifications_total", "counter", "router", ("verstat", "code"), "New INVITEs verified at the edge (STIR/SHAKEN), by verstat and outcome code (ok, none, stale, bad_signature, dest_mismatch, orig_mismatch, untrusted, no_identity, certificate_pending, ...)."),
    _spec("switchboard_router_stir_refused_total", "counter", "router", (), "Calls refused by the [stir] policy."),
    _spec("switchboard_router_stir_certificates_total", "counter", "router", ("result",), "x5u certificate lookups: hit (cache), fetched, failed (unreachable), untrusted (chain not valid)."),
    _spec("switchboard_router_stir_cached_certificates", "gauge", "router", (), "x5u certificates in the router's cache."),
    _spec("switchboard_router_stir_signed_total", "counter", "router", ("attest",), "Calls the router signed on trunks with stir_sign, by attestation (A, B, C)."),
    # -- media node (FreeSWITCH role) and its Event Socket ---------------------------------
    _spec("switchboard_media_active_calls", "gauge", "media", (), "Calls in progress on the node (a bridged call counts once)."),
    _spec("switchboard_media_active_channels", "gauge", "media", (), "Channels (call legs) in progress on the node."),
    _spec("switchboard_media_call_attempts_total", "counter", "media", ("direction",), "New call legs (INVITEs accepted for processing or originated), by direction; rate() is CPS."),
    _spec("switchboard_media_sessions_max", "gauge", "media", (), "Configured max_sessions (FreeSWITCH switch.conf max-sessions)."),
    _spec("switchboard_media_sessions_per_second_max", "gauge", "media", (), "Configured sessions_per_second limit."),
    _spec("switchboard_media_sessions_rejected_total", "counter", "media", ("reason",), "Calls refused with 503 by a limit, by reason (max_sessions, sessions_per_second, gateway_limit, credit)."),
    _spec("switchboard_media_overload_shed_total", "counter", "media", ("reason",), "New calls the node shed with 503 + Retry-After because it was behind, before any media work: delay (its SIP receive queue or event loop over [limits] overload_delay), idle_cpu (the machine's idle CPU under min_idle_cpu)."),
    _spec("switchboard_media_emergency_calls_total", "counter", "media", (), "Emergency calls the node took (admitted from the session reserve, never credit-controlled)."),
    _spec("switchboard_media_auth_failures_total", "counter", "media", (), "REGISTERs refused 403 by the registrar (wrong password or unknown user), counted per source for bans."),
    _spec("switchboard_media_auth_bans_total", "counter", "media", (), "Sources banned for more than [security] auth_fail_limit authentication failures in auth_fail_window seconds."),
    _spec("switchboard_media_untrusted_drops_total", "counter", "media", (), "SIP messages dropped silently: from outside [media] trusted, or from a banned source."),
    _spec("switchboard_media_tls_handshake_failures_total", "counter", "media", (), "TLS handshakes that failed, accepted or dialled."),
    _spec("switchboard_media_journal_records_total", "counter", "media", (), "Records written to the node's channel journal (a bridge, a journaled leg's end)."),
    _spec("switchboard_media_journal_seconds_total", "counter", "media", (), "CPU time the event loop spent snapshotting and writing journal records."),
    _spec("switchboard_media_recovered_legs_total", "counter", "media", ("outcome",), "Call legs found live in the journal at start: resumed, or ended (partner gone, not rebuildable)."),
    _spec("switchboard_media_pdd_seconds", "histogram", "media", ("gateway",), "Post-dial delay of outbound gateway legs: INVITE sent to first 180/183 or negative final response.", PDD_BUCKETS),
    _spec("switchboard_media_setup_latency_seconds", "histogram", "media", (), "INVITE received to 200 OK sent for calls the node answers itself.", SETUP_BUCKETS),
    _spec("switchboard_media_hangups_total", "counter", "media", ("cause",), "Channel hangups by Q.850 cause name (NORMAL_CLEARING, USER_BUSY, ...)."),
    _spec("switchboard_media_gateway_calls", "gauge", "media", ("gateway",), "Calls in progress through each gateway."),
    _spec("switchboard_media_rtp_packets_total", "counter", "media", ("direction",), "RTP packets by direction (rx, tx)."),
    _spec("switchboard_media_rtp_lost_packets_total", "counter", "media", (), "RTP packets detected lost from sequence gaps on receive."),
    _spec("switchboard_media_srtp_failures_total", "counter", "media", (), "SRTP/SRTCP packets dropped because they failed authentication or the replay check (forged, replayed, plain RTP on an SRTP stream); counted when the leg ends."),
    _spec("switchboard_esl_connections", "gauge", "media", (), "Authenticated Event Socket connections."),
    _spec("switchboard_esl_commands_total", "counter", "media", ("command",), "Event Socket commands received, by command word (api, bgapi, event, ...)."),
    _spec("switchboard_esl_events_total", "counter", "media", ("event",), "Events delivered to Event Socket subscribers, by event name."),
    # -- billing (PostgreSQL): exported by the process running the CDR writer ---------------
    _spec("switchboard_cdr_written_total", "counter", "billing", (), "CDRs stored in the database (duplicates by call_id not counted)."),
    _spec("switchboard_cdr_duplicates_total", "counter", "billing", (), "CDRs dropped because their call_id was already stored (idempotent ingest)."),
    _spec("switchboard_cdr_rejected_total", "counter", "billing", (), "CDRs the database refused (bad values); kept in the reject file."),
    _spec("switchboard_cdr_write_lag_seconds", "gauge", "billing", (), "Age of the oldest CDR submitted but not yet stored in the database."),
    _spec("switchboard_cdr_spool_records", "gauge", "billing", (), "CDRs waiting in the local spool for the database."),
    _spec("switchboard_cdr_spool_bytes", "gauge", "billing", (), "Bytes of CDRs waiting in the local spool for the database."),
    _spec("switchboard_cdr_database_up", "gauge", "billing", (), "1 when the CDR writer can reach the database."),
    _spec("switchboard_credit_authorisations_total", "counter", "billing", ("result",), "Credit authorisations at call setup, by result."),
    _spec("switchboard_credit_authorisation_seconds", "histogram", "billing", (), "Credit authorisation latency (reserve funds, compute the maximum duration).", RATING_BUCKETS),
    _spec("switchboard_low_balance_events_total", "counter", "billing", (), "Accounts whose balance fell below their low-balance mark."),
    _spec("switchboard_credit_reservations_swept_total", "counter", "billing", ("outcome",), "Reservations nobody settled, swept past their expiry: `settled` from the call's CDR, or `expired` (released, nothing debited). Any means a settlement was lost."),
    # -- the `switchboard up` supervisor (its own /metrics at [platform] admin) -----------------
    _spec("switchboard_platform_restarts_total", "counter", "platform", ("service",), "Times the supervisor restarted a child process that died (database, media-N, router)."),
    _spec("switchboard_platform_service_up", "gauge", "platform", ("service",), "1 while the child process runs and was ready, 0 from its death until it is ready again."),
    # -- campaign dialer --------------------------------------------------------------------
    _spec("switchboard_dialer_originates_total", "counter", "dialer", ("campaign",), "Originates sent over the Event Socket."),
    _spec("switchboard_dialer_outcomes_total", "counter", "dialer", ("campaign", "outcome"), "Finished attempts by outcome (answered, busy, noanswer, congestion, failed, unknown)."),
    _spec("switchboard_dialer_calls_in_progress", "gauge", "dialer", ("campaign",), "Attempts originated and not yet finished."),
    _spec("switchboard_dialer_contacts_remaining", "gauge", "dialer", ("campaign",), "Contacts still to dial (including scheduled retries)."),
    _spec("switchboard_dialer_target_cps", "gauge", "dialer", ("campaign",), "Configured calls-per-second pace."),
    _spec("switchboard_dialer_blocked_total", "counter", "dialer", ("campaign", "reason"), "Contacts not dialled, by reason (dnc, window)."),
)
# fmt: on

CATALOGUE: Mapping[str, MetricSpec] = {s.name: s for s in _SPECS}
"""Every metric name the platform exports, as scraped."""

STANDARD_METRICS = frozenset(
    {
        # prometheus_client's process and platform collectors (system resources panel)
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "python_info",
        # Prometheus itself: one per scrape target
        "up",
        "scrape_duration_seconds",
        # Patroni's REST API /metrics (deploy/: the database pair's roles)
        "patroni_primary",
        "patroni_replica",
    }
)


class _ProcessCollector:
    """prometheus_client's ``process_*`` series (same names and meaning) at a fraction of
    its cost: it counts open descriptors by listing ``/proc/self/fd``, and a media node
    under load holds ~2,000 of them (two sockets per call leg) — 2-10 ms of the event
    loop's time per scrape for the listing alone. Linux 6.2 and later give the count as
    the directory's size; older kernels (size 0) are listed as before."""

    def __init__(self) -> None:
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._pagesize = resource.getpagesize()
        self._btime = 0.0
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/stat").read_bytes().splitlines():
                if line.startswith(b"btime "):
                    self._btime = float(line.split()[1])

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        if not self._btime:  # no /proc (not Linux): nothing, as prometheus_client does
            return
        with contextlib.suppress(OSError, IndexError, ValueError):
            parts = Path("/proc/self/stat").read_bytes().rsplit(b")", 1)[-1].split()
            yield GaugeMetricFamily(
                "process_virtual_memory_bytes", "Virtual memory size in bytes.", float(parts[20])
            )
            yield GaugeMetricFamily(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                float(parts[21]) * self._pagesize,
            )
            yield GaugeMetricFamily(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                float(parts[19]) / self._ticks + self._btime,
            )
            yield CounterMetricFamily(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                (float(parts[11]) + float(parts[12])) / self._ticks,
            )
        with contextlib.suppress(OSError):
            fds = os.stat("/proc/self/fd").st_size or len(os.listdir("/proc/self/fd"))
            yield GaugeMetricFamily(
                "process_open_fds", "Number of open file descriptors.", float(fds)
            )
            yield GaugeMetricFamily(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                float(resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
            )


class _ModuleLevelMetrics:
    """Bridges metrics declared at module level (prometheus_client's global ``REGISTRY``) —
    e.g. the billing writer's, embedded in a media node — into a service's registry.

    The global registry's own process/platform/gc collectors are left out: the service
    registry has them already. They are unregistered from it (:meth:`bridge`), not
    filtered out of its output — filtered, they still ran at every scrape, the process
    collector's listing of ``/proc/self/fd`` included. ``describe()`` is empty so
    registration takes no names.
    """

    @classmethod
    def bridge(cls, registry: CollectorRegistry) -> None:
        for default in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            with contextlib.suppress(KeyError):  # unregistered by an earlier registry
                REGISTRY.unregister(default)
        registry.register(cls())

    _SKIP = ("process_", "python_")

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            if not family.name.startswith(self._SKIP):
                yield family


def new_registry(service: str, *, include_module_level: bool = True) -> CollectorRegistry:
    """A registry for one process: CPU/memory/fds, Python info and ``switchboard_build_info``,
    plus (``include_module_level``) metrics that libraries declared on the global registry.

    One registry per service process (not prometheus_client's global ``REGISTRY``) so a
    test can build a service twice in one interpreter without "Duplicated timeseries".
    """
    # One `_created` series per counter and histogram doubles the series count for nothing
    # a dashboard uses; process-wide, and services are one process each.
    disable_created_metrics()
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_ProcessCollector())
    PlatformCollector(registry=registry)
    if include_module_level:
        _ModuleLevelMetrics.bridge(registry)
    info = build(registry, "switchboard_build_info")
    assert isinstance(info, Gauge)
    info.labels(service=service, version=__version__).set(1)
    return registry


def build(registry: CollectorRegistry, name: str) -> Counter | Gauge | Histogram:
    """Create the catalogue metric ``name`` in ``registry`` (KeyError for an unknown name)."""
    spec = CATALOGUE[name]
    match spec.kind:
        case "counter":
            return Counter(spec.name, spec.help, spec.labels, registry=registry)
        case "gauge":
            return Gauge(spec.name, spec.help, spec.labels, registry=registry)
        case "histogram":
            return Histogram(
                spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets
            )


def _c(registry: CollectorRegistry, name: str) -> Counter:
    m = build(registry, name)
    assert isinstance(m, Counter)
    return m


def _g(registry: CollectorRegistry, name: str) -> Gauge:
    m = build(registry, name)
    assert isinstance(m, Gauge)
    return m


def _h(registry: CollectorRegistry, name: str) -> Histogram:
    m = build(registry, name)
    assert isinstance(m, Histogram)
    return m


@dataclass(frozen=True, slots=True)
class RouterMetrics:
    """The edge router's metrics (``switchboard_router_*``) as prometheus_client objects.

    The router itself exports the same names from its own collector at scrape time
    (``switchboard.router.metrics``); this class serves processes that count as they go.
    """

    requests: Counter
    replies: Counter
    transactions: Gauge
    transactions_total: Counter
    dialogs: Gauge
    destination_up: Gauge
    destination_state: Gauge
    destination_active_calls: Gauge
    destination_probe_latency: Gauge
    failovers: Counter
    acl_rejects: Counter
    pike_blocks: Counter
    pike_rejects: Counter
    pike_drops: Counter
    forwarding_latency: Histogram
    pending_transactions: Gauge
    destination_timeouts: Counter
    branch_timeouts: Counter
    bad_messages: Counter
    retransmissions: Counter
    scanner_drops: Counter
    auth_failures: Counter
    auth_bans: Counter
    auth_ban_drops: Counter
    acl_drops: Counter
    overload_rejects: Counter
    overload_edge_rejects: Counter
    overload_retries: Counter
    late_answers_ended: Counter
    lost_node_calls_ended: Counter
    lost_node_cdrs: Counter
    lost_node_legs_unbilled: Counter
    tls_handshake_failures: Counter
    trunk_calls: Counter
    trunk_admitted: Counter
    trunk_rejections: Counter
    trunk_active_calls: Gauge
    trunk_calls_per_second: Gauge
    trunk_limit: Gauge
    trunk_pdd: Histogram
    emergency_calls: Counter
    stir_verifications: Counter
    stir_refused: Counter
    stir_certificates: Counter
    stir_cached_certificates: Gauge
    stir_signed: Counter

    DESTINATION_STATES = ("active", "trying", "inactive", "disabled")

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RouterMetrics:
        p = "switchboard_router_"
        return cls(
            requests=_c(registry, p + "requests_total"),
            replies=_c(registry, p + "replies_total"),
            transactions=_g(registry, p + "transactions_current"),
            transactions_total=_c(registry, p + "transactions_total"),
            dialogs=_g(registry, p + "dialogs"),
            destination_up=_g(registry, p + "destination_up"),
            destination_state=_g(registry, p + "destination_state"),
            destination_active_calls=_g(registry, p + "destination_active_calls"),
            destination_probe_latency=_g(registry, p + "destination_probe_latency_seconds"),
            failovers=_c(registry, p + "failovers_total"),
            acl_rejects=_c(registry, p + "acl_rejects_total"),
            pike_blocks=_c(registry, p + "pike_blocks_total"),
            pike_rejects=_c(registry, p + "pike_rejects_total"),
            pike_drops=_c(registry, p + "pike_drops_total"),
            forwarding_latency=_h(registry, p + "forwarding_latency_seconds"),
            pending_transactions=_g(registry, p + "pending_transactions"),
            destination_timeouts=_c(registry, p + "destination_timeouts_total"),
            branch_timeouts=_c(registry, p + "branch_timeouts_total"),
            bad_messages=_c(registry, p + "bad_messages_total"),
            retransmissions=_c(registry, p + "retransmissions_total"),
            scanner_drops=_c(registry, p + "scanner_drops_total"),
            auth_failures=_c(registry, p + "auth_failures_total"),
            auth_bans=_c(registry, p + "auth_bans_total"),
            auth_ban_drops=_c(registry, p + "auth_ban_drops_total"),
            acl_drops=_c(registry, p + "acl_drops_total"),
            overload_rejects=_c(registry, p + "overload_rejects_total"),
            overload_edge_rejects=_c(registry, p + "overload_edge_rejects_total"),
            overload_retries=_c(registry, p + "overload_retries_total"),
            late_answers_ended=_c(registry, p + "late_answers_ended_total"),
            lost_node_calls_ended=_c(registry, p + "lost_node_calls_ended_total"),
            lost_node_cdrs=_c(registry, p + "lost_node_cdrs_total"),
            lost_node_legs_unbilled=_c(registry, p + "lost_node_legs_unbilled_total"),
            tls_handshake_failures=_c(registry, p + "tls_handshake_failures_total"),
            trunk_calls=_c(registry, p + "trunk_calls_total"),
            trunk_admitted=_c(registry, p + "trunk_admitted_total"),
            trunk_rejections=_c(registry, p + "trunk_rejections_total"),
            trunk_active_calls=_g(registry, p + "trunk_active_calls"),
            trunk_calls_per_second=_g(registry, p + "trunk_calls_per_second"),
            trunk_limit=_g(registry, p + "trunk_limit"),
            trunk_pdd=_h(registry, p + "trunk_pdd_seconds"),
            emergency_calls=_c(registry, p + "emergency_calls_total"),
            stir_verifications=_c(registry, p + "stir_verifications_total"),
            stir_refused=_c(registry, p + "stir_refused_total"),
            stir_certificates=_c(registry, p + "stir_certificates_total"),
            stir_cached_certificates=_g(registry, p + "stir_cached_certificates"),
            stir_signed=_c(registry, p + "stir_signed_total"),
        )

    def set_destination_state(self, setid: int | str, uri: str, state: str) -> None:
        """Publish a destination's state as the one-hot ``destination_state`` and ``destination_up``."""
        if state not in self.DESTINATION_STATES:
            raise ValueError(f"unknown destination state {state!r}")
        sid = str(setid)
        for s in self.DESTINATION_STATES:
            self.destination_state.labels(set=sid, uri=uri, state=s).set(1 if s == state else 0)
        self.destination_up.labels(set=sid, uri=uri).set(1 if state in ("active", "trying") else 0)


DISPOSITIONS = ("answered", "busy", "no_answer", "failed", "cancelled")
SESSION_REJECT_REASONS = ("max_sessions", "sessions_per_second", "gateway_limit", "credit")
SHED_REASONS = ("delay", "idle_cpu")
DIRECTIONS = ("inbound", "outbound")


@dataclass(frozen=True, slots=True)
class MediaMetrics:
    """A media node's metrics: the original ``voip_*`` call metrics plus ``switchboard_media_*``
    and ``switchboard_esl_*``."""

    calls: Counter
    call_duration: Histogram
    active_calls: Gauge
    active_channels: Gauge
    call_attempts: Counter
    sessions_max: Gauge
    sessions_per_second_max: Gauge
    sessions_rejected: Counter
    overload_shed: Counter
    emergency_calls: Counter
    pdd: Histogram
    setup_latency: Histogram
    hangups: Counter
    gateway_calls: Gauge
    rtp_packets: Counter
    rtp_lost_packets: Counter
    srtp_failures: Counter
    esl_connections: Gauge
    esl_commands: Counter
    esl_events: Counter
    auth_failures: Counter
    auth_bans: Counter
    untrusted_drops: Counter
    tls_handshake_failures: Counter
    journal_records: Counter
    journal_seconds: Counter
    recovered_legs: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> MediaMetrics:
        p = "switchboard_media_"
        m = cls(
            calls=_c(registry, "voip_calls_total"),
            call_duration=_h(registry, "voip_call_duration_seconds"),
            active_calls=_g(registry, p + "active_calls"),
            active_channels=_g(registry, p + "active_channels"),
            call_attempts=_c(registry, p + "call_attempts_total"),
            sessions_max=_g(registry, p + "sessions_max"),
            sessions_per_second_max=_g(registry, p + "sessions_per_second_max"),
            sessions_rejected=_c(registry, p + "sessions_rejected_total"),
            overload_shed=_c(registry, p + "overload_shed_total"),
            emergency_calls=_c(registry, p + "emergency_calls_total"),
            pdd=_h(registry, p + "pdd_seconds"),
            setup_latency=_h(registry, p + "setup_latency_seconds"),
            hangups=_c(registry, p + "hangups_total"),
            gateway_calls=_g(registry, p + "gateway_calls"),
            rtp_packets=_c(registry, p + "rtp_packets_total"),
            rtp_lost_packets=_c(registry, p + "rtp_lost_packets_total"),
            srtp_failures=_c(registry, p + "srtp_failures_total"),
            esl_connections=_g(registry, "switchboard_esl_connections"),
            esl_commands=_c(registry, "switchboard_esl_commands_total"),
            esl_events=_c(registry, "switchboard_esl_events_total"),
            auth_failures=_c(registry, "switchboard_media_auth_failures_total"),
            auth_bans=_c(registry, "switchboard_media_auth_bans_total"),
            untrusted_drops=_c(registry, "switchboard_media_untrusted_drops_total"),
            tls_handshake_failures=_c(registry, "switchboard_media_tls_handshake_failures_total"),
            journal_records=_c(registry, "switchboard_media_journal_records_total"),
            journal_seconds=_c(registry, "switchboard_media_journal_seconds_total"),
            recovered_legs=_c(registry, "switchboard_media_recovered_legs_total"),
        )
        # Pre-create the label sets dashboards divide by, so a ratio is 0, not "no data".
        for d in DIRECTIONS:
            m.call_attempts.labels(direction=d)
            for disp in DISPOSITIONS:
                m.calls.labels(direction=d, disposition=disp)
        for d in ("rx", "tx"):
            m.rtp_packets.labels(direction=d)
        for reason in SESSION_REJECT_REASONS:
            m.sessions_rejected.labels(reason=reason)
        for reason in SHED_REASONS:
            m.overload_shed.labels(reason=reason)
        return m

    def call_ended(self, direction: str, disposition: str, billsec: float) -> None:
        """Count a finished leg in ``voip_calls_total`` and, if answered, its billsec."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if disposition not in DISPOSITIONS:
            raise ValueError(f"disposition must be one of {DISPOSITIONS}, got {disposition!r}")
        self.calls.labels(direction=direction, disposition=disposition).inc()
        if disposition == "answered":
            self.call_duration.observe(billsec)


@dataclass(frozen=True, slots=True)
class BillingMetrics:
    """The CDR writer's and credit control's metrics (names as ``switchboard.billing.metrics``)."""

    cdrs_written: Counter
    cdr_duplicates: Counter
    cdr_rejected: Counter
    cdr_write_lag: Gauge
    spool_records: Gauge
    spool_bytes: Gauge
    database_up: Gauge
    authorisations: Counter
    authorisation_latency: Histogram
    low_balance: Counter
    reservations_swept: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> BillingMetrics:
        return cls(
            cdrs_written=_c(registry, "switchboard_cdr_written_total"),
            cdr_duplicates=_c(registry, "switchboard_cdr_duplicates_total"),
            cdr_rejected=_c(registry, "switchboard_cdr_rejected_total"),
            cdr_write_lag=_g(registry, "switchboard_cdr_write_lag_seconds"),
            spool_records=_g(registry, "switchboard_cdr_spool_records"),
            spool_bytes=_g(registry, "switchboard_cdr_spool_bytes"),
            database_up=_g(registry, "switchboard_cdr_database_up"),
            authorisations=_c(registry, "switchboard_credit_authorisations_total"),
            authorisation_latency=_h(registry, "switchboard_credit_authorisation_seconds"),
            low_balance=_c(registry, "switchboard_low_balance_events_total"),
            reservations_swept=_c(registry, "switchboard_credit_reservations_swept_total"),
        )


@dataclass(frozen=True, slots=True)
class DialerMetrics:
    """The campaign dialer's metrics (``switchboard_dialer_*``)."""

    originates: Counter
    outcomes: Counter
    in_progress: Gauge
    contacts_remaining: Gauge
    target_cps: Gauge
    blocked: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> DialerMetrics:
        p = "switchboard_dialer_"
        return cls(
            originates=_c(registry, p + "originates_total"),
            outcomes=_c(registry, p + "outcomes_total"),
            in_progress=_g(registry, p + "calls_in_progress"),
            contacts_remaining=_g(registry, p + "contacts_remaining"),
            target_cps=_g(registry, p + "target_cps"),
            blocked=_c(registry, p + "blocked_total"),
        )


@dataclass(frozen=True, slots=True)
class PlatformMetrics:
    """The ``switchboard up`` supervisor's metrics (``switchboard_platform_*``)."""

    restarts: Counter
    up: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry, services: Iterable[str]) -> PlatformMetrics:
        m = cls(
            restarts=_c(registry, "switchboard_platform_restarts_total"),
            up=_g(registry, "switchboard_platform_service_up"),
        )
        for name in services:  # a restart count of 0 is a series, not "no data"
            m.restarts.labels(service=name)
            m.up.labels(service=name).set(1)
        return m


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus text exposition format 0.0.4."""
    return generate_latest(registry)


def mount_metrics(app: FastAPI, registry: CollectorRegistry, path: str = "/metrics") -> None:
    """Add ``GET path`` serving ``registry`` to a FastAPI app (the service's admin app)."""
    from fastapi import Response

    async def metrics() -> Response:
        return Response(content=render(registry), media_type=CONTENT_TYPE)

    app.add_api_route(path, metrics, methods=["GET"], include_in_schema=False)


_MAX_REQUEST_HEAD = 8192


async def serve_metrics(host: str, port: int, registry: CollectorRegistry) -> asyncio.Server:
    """Serve ``GET /metrics`` on host:port from the running loop (for processes without an
    admin app, e.g. the dialer). HTTP/1.0-style: one request per connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5.0)
            request_line = head.split(b"\r\n", 1)[0].split()
            if len(request_line) >= 2 and request_line[0] in (b"GET", b"HEAD"):
                target = request_line[1].split(b"?", 1)[0]
                if target == b"/metrics":
                    body = render(registry)
                    status, ctype = b"200 OK", CONTENT_TYPE.encode()
                else:
                    body, status, ctype = b"not found\n", b"404 Not Found", b"text/plain"
            else:
                body, status, ctype = b"bad request\n", b"400 Bad Request", b"text/plain"
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: "
                + ctype
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + (body if request_line[:1] != [b"HEAD"] else b"")
            )
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass  # a scraper's broken request must not disturb the service
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, limit=_MAX_REQUEST_HEAD)


_DOC_GROUPS: tuple[tuple[str, str, str], ...] = (
    (
        "Every process",
        "common",
        "Plus prometheus_client's process collectors: `process_cpu_seconds_total`, "
        "`process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`, "
        "`process_max_fds`, `process_start_time_seconds`, `python_info` (the dashboard's "
        "*system resources* row), and Prometheus's own `up{job,instance}` per target (the "
        "*node down* alert). In the HA layout (deploy/), Prometheus also scrapes Patroni's "
        "REST API (`pg1:8008`, `pg2:8008`, job `switchboard-patroni`): `patroni_primary` and "
        "`patroni_replica` (1 when that host is the leader / a streaming replica) drive "
        "SwitchboardDatabaseFailover and SwitchboardDatabaseNoReplica.",
    ),
    (
        "Calls — the original system's names (media node)",
        "voip",
        "Kept exactly as the original Go exporter declared them. One sample per call leg at "
        "hangup. `disposition`: `answered` (200 OK), `busy` (486/600, USER_BUSY), `no_answer` "
        "(480/408 or ring timeout, NO_ANSWER), `failed` (any other failure), `cancelled` "
        "(caller hung up before answer).",
    ),
    (
        "Router (`switchboard_router_*`)",
        "router",
        "`uri` is the dispatcher destination as configured (e.g. `sip:127.0.0.1:5081`), `set` "
        "the dispatcher set number: both bounded by configuration. `code` is the exact status "
        'code (`200`, `503`, ...); use `code=~"5.."` for a class. `trunk` is a trunk name '
        "from `[trunks.NAME]`, or `acl` for the `[acl] allow` addresses no trunk claims "
        '(docs/router.md "Trunks").',
    ),
    (
        "Media node and Event Socket (`switchboard_media_*`, `switchboard_esl_*`)",
        "media",
        "`gateway` is the gateway name from configuration (`carrier`), never the dialled number.",
    ),
    (
        "Billing (`switchboard_cdr_*`, `switchboard_credit_*`)",
        "billing",
        "Exported by whichever process runs the CDR writer and credit control (the media "
        "node embeds them). Money is not a metric: revenue and cost come from the `cdr` "
        "table (NUMERIC), as the dashboard's *revenue and cost* panel does.",
    ),
    (
        "The `switchboard up` supervisor (`switchboard_platform_*`)",
        "platform",
        "Served by `switchboard up` itself at `[platform] admin` (default `127.0.0.1:8079`, "
        '`""` = not served). `service` is the child\'s name: `database`, `media-1` … '
        "`media-N`, `router`.",
    ),
    (
        "Campaign dialer (`switchboard_dialer_*`)",
        "dialer",
        "`campaign` is the campaign name (bounded by the operator).",
    ),
)


def markdown_tables() -> str:
    """The "Metrics by service" part of docs/metrics.md, generated from ``CATALOGUE``."""
    out = []
    for title, group, note in _DOC_GROUPS:
        out.append(
            f"### {title}\n\n{note}\n\n| metric | type | labels | meaning |\n|---|---|---|---|"
        )
        for s in _SPECS:
            in_group = (
                s.name.startswith("voip_")
                if group == "voip"
                else s.service == group and not s.name.startswith("voip_")
            )
            if in_group:
                labels = ", ".join(f"`{label}`" for label in s.labels) or "—"
                extra = f" Buckets: {', '.join(f'{b:g}' for b in s.buckets)}." if s.buckets else ""
                out.append(f"| `{s.name}` | {s.kind} | {labels} | {s.help}{extra} |")
        out.append("")
    return "\n".join(out)
