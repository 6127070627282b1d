"""The edge router process: sockets, one timer, admin API, signals (uvicorn's lifecycle).

``run(config, config_path)`` is what ``switchboard router --config FILE`` calls:

* binds the ``[router] listen`` sockets (UDP via :mod:`switchboard.net.udp`, TCP via
  :mod:`switchboard.net.tcp`) and the admin HTTP socket, or fails with exit code 3;
* feeds every datagram/stream message to the pure :class:`~switchboard.router.proxy.Proxy`
  with ``loop.time()`` and transmits what it returns; keeps ONE timer at
  ``proxy.get_timer()``;
* SIGTERM/SIGINT: new INVITEs get 503 while in-flight transactions finish (bounded by
  ``[router] drain_timeout``), then exit 0; a second signal exits at once (code 1);
* SIGHUP (and ``POST /reload``): re-read the configuration and the list file;
* ``[router] workers`` > 1: a supervisor runs that many worker processes sharing the UDP
  port with SO_REUSEPORT, each with its own downstream socket named in its Via.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from pydantic import ValidationError

from switchboard import _native
from switchboard import config as config_mod
from switchboard.lifecycle import ExitCode, Signals, die_with_parent, run_service
from switchboard.net.tcp import TcpTransport
from switchboard.net.tls import TlsConfigError, TlsFiles, client_context, server_context
from switchboard.net.udp import unbracket
from switchboard.observability.loop_lag import LoopLagMonitor
from switchboard.router.admin import create_app
from switchboard.router.dispatcher import (
    DestinationSpec,
    Dispatcher,
    DispatcherError,
    ProbingConfig,
    match_codes,
    match_ping_codes,
    parse_line,
    parse_list,
)
from switchboard.router.emergency import EmergencyNumbers
from switchboard.router.identity import (
    HELD,
    CertificateCache,
    IdentityGate,
    Signer,
    load_anchors,
)
from switchboard.router.metrics import LatencyHistogram, make_registry
from switchboard.router.overload import EdgeShedding
from switchboard.router.protection import Acl, AddressList, AuthBans, Pike, ScannerFilter
from switchboard.router.proxy import Interface, Proxy, ProxySettings, Send, default_resolve
from switchboard.router.trunks import TrunkConfigError, TrunkTable
from switchboard.sip import fastpath as wire
from switchboard.sip.transaction import Peer

if TYPE_CHECKING:
    from switchboard.observability.status import StatusBoard
    from switchboard.router.lost_node_billing import LostLegBilling

log = logging.getLogger(__name__)

UDP_BUFFER = 4 << 20
# A timer that fires this late means the loop stalled; see Router._on_timer.
LATE_TIMER = 0.05
# One UDP message in this many is timed for the forwarding-latency histogram.
LATENCY_SAMPLE = 8
# Garbage collection. CPython's automatic collector runs whenever ~700 container objects
# more were allocated than freed, anywhere on the hot path, and its generation-1/2 passes
# scan every live transaction: 10-30 ms stalls of the one event loop at 500 calls/s,
# which were the whole INVITE→200 p99 (bench/router). Transactions break their own
# reference cycles (proxy._fire _CLEANUP), so reference counting frees nearly all of the
# router's garbage; the router therefore turns automatic collection off after start-up
# and runs a full collection itself, from its own timer, every GC_INTERVAL seconds, or
# sooner once GC_ALLOCATIONS more container objects were allocated than freed (a safety
# net for cycles made elsewhere, e.g. by the admin API). A full collection still scans
# every live transaction (~40 ms at 500 calls/s, a few hundred ms at 4,000), hence rare.
GC_INTERVAL = 600.0
GC_CHECK = 1.0
GC_ALLOCATIONS = 1_000_000
# Load shedding. Above its capacity the router used to collapse (2,500 calls/s offered:
# 8-66 % failed calls): datagrams queue in the 4 MB socket buffer, answers come back late,
# SIPp retransmits (500 ms) and failover timers (2 s) fire on calls that were fine. The
# signal is the time a datagram waits in the receive queue: every QUEUE_PROBE seconds the
# router sends itself a tiny stamped datagram (from its own socket, starting with a NUL
# byte, which no SIP message does) and measures how late it comes out. Normally that wait
# is well under 5 ms. Above SHED_DELAY a fraction of the new INVITEs, growing linearly to
# all of them at SHED_ALL, gets a stateless 503 with Retry-After — one parse instead of a
# whole call — spread evenly (every n-th, not in bursts). Everything else (responses, ACK,
# BYE, CANCEL, in-dialog and retransmitted requests) is still processed: calls already
# accepted finish. The queue settles where the shed fraction matches the excess load.
# 250 ms: under the callers' INVITE retransmission (T1 = 500 ms), above the short queues
# the router absorbs by itself (at 100 ms it shed calls on bursts it would have cleared).
QUEUE_PROBE = 0.02
QUEUE_MAGIC = b"\x00sbq"
SHED_DELAY = 0.25
SHED_ALL = 0.5
SHED_LOG_EVERY = 10.0
SHED_REASON = b"Service Unavailable"


class StartError(Exception):
    """The router could not start (port in use, bad destination list)."""


def destination_specs(
    cfg: config_mod.DispatcherSection, base: Path | None = None
) -> list[DestinationSpec]:
    """Destinations from ``[dispatcher] list_file`` and ``destinations`` (docs/router.md).

    A ``destinations`` entry is either a whole list-file line (``"1 sip:… 0 0 attrs"``)
    or just a URI, which joins set ``[dispatcher] set``. Raises ValueError naming the
    file/line or the entry."""
    specs: list[DestinationSpec] = []
    if cfg.list_file:
        path = Path(cfg.list_file)
        if not path.is_absolute() and base is not None:
            path = base / path
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"dispatcher.list_file: cannot read {path}: {exc.strerror}") from None
        specs += parse_list(text, name=str(path))
    for n, entry in enumerate(cfg.destinations):
        line = entry if entry.strip()[:1].isdigit() else f"{cfg.set} {entry}"
        spec = parse_line(line, where=f"dispatcher.destinations[{n}]")
        if spec is not None:
            specs.append(spec)
    return specs


def _settings(cfg: config_mod.Config) -> ProxySettings:
    return ProxySettings(
        setid=cfg.dispatcher.set,
        failover_timeout=cfg.dispatcher.failover_timeout,
        failover_codes=match_codes(cfg.dispatcher.failover_codes),
        unavailable_reason=cfg.dispatcher.unavailable_reason,
        retry_after=cfg.dispatcher.retry_after,
        emergency_setid=cfg.emergency.route_set,
        edge_shedding=cfg.dispatcher.edge_shedding,
        lost_node_timeout=cfg.dispatcher.lost_node_timeout,
    )


def _tls_contexts(cfg: config_mod.RouterSection, *, trunk_mtls: bool = False) -> tuple[Any, Any]:
    """Server and client contexts from ``[router] tls_*`` (raises TlsConfigError);
    ``trunk_mtls``: some trunk requires a client certificate, so ask every caller for one."""
    files = TlsFiles(
        cfg.tls_cert,
        cfg.tls_key,
        cfg.tls_ca,
        verify_client=cfg.tls_verify_client,
        verify_server=cfg.tls_verify_server,
        where="router",
        request_client=trunk_mtls,
    )
    return server_context(files), client_context(files)


def _trunk_mtls(cfg: config_mod.Config) -> bool:
    return any(t.tls_client_names for t in cfg.trunks.values())


def _aliases(entries: list[str]) -> tuple[tuple[str, int], ...]:
    """``[router] aliases`` as (host, port) pairs, hosts as the proxy compares them."""
    out = []
    for item in entries:
        host, _, port = item.rpartition(":")
        out.append((host.lower(), int(port)))
    return tuple(out)


def _bans(cfg: config_mod.SecuritySection) -> AuthBans:
    return AuthBans(
        limit=cfg.auth_fail_limit,
        window=cfg.auth_fail_window,
        ban_seconds=cfg.auth_ban_seconds,
        allow=cfg.auth_ban_allow,
        ipv6_prefix=cfg.ipv6_prefix,
    )


def _probing(cfg: config_mod.DispatcherSection) -> ProbingConfig:
    try:
        codes = match_ping_codes(cfg.ping_reply_codes)
    except DispatcherError as exc:
        raise DispatcherError(f"dispatcher.ping_reply_codes: {exc}") from None
    return ProbingConfig(
        cfg.ping_interval, cfg.ping_timeout, cfg.probing_threshold, cfg.inactive_threshold, codes
    )


class _AdminServer(uvicorn.Server):
    """uvicorn inside the router's loop; the router owns the signals, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _Resolver:
    """Host names of destinations and Route/R-URI hosts → IP, cached (blocking lookups
    happen once per name, at first use)."""

    def __init__(self) -> None:
        self.cache: dict[str, str | None] = {}

    def __call__(self, host: str) -> str | None:
        hit = self.cache.get(host, "")
        if hit != "":
            return hit
        ip = default_resolve(host)
        if ip is None:
            try:
                ip = socket.gethostbyname(host)
            except OSError:
                ip = None
        if len(self.cache) > 10_000:
            self.cache.clear()
        self.cache[host] = ip
        return ip


class _UdpSocket(asyncio.DatagramProtocol):
    """One bound UDP socket; each datagram goes straight to the router (hot path: no
    per-datagram objects beyond the address tuple the loop already made)."""

    def __init__(self, router: Router) -> None:
        self.router = router
        # Skip one Python frame per datagram: the loop calls the router directly.
        self.datagram_received = router.on_datagram  # type: ignore[method-assign]
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.local = transport.get_extra_info("sockname")[:2]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Bursts of thousands of datagrams must queue in the kernel, not be dropped.
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, UDP_BUFFER)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.router.on_datagram(data, addr)  # replaced per instance in __init__

    def error_received(self, exc: Exception) -> None:
        # ICMP errors cannot be tied to a message; the failover timer decides (§16.8).
        log.debug("UDP socket error: %s", exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Router:
    """One router process (single worker)."""

    def __init__(
        self,
        cfg: config_mod.Config,
        config_path: Path | None = None,
        *,
        worker: int = 0,
        workers: int = 1,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.worker = worker
        self.workers = workers
        self.udp_private: _UdpSocket | None = None
        # The UDP socket a message leaves from, by address family of its destination
        # (True: IPv6): responses from the shared listening socket, requests from the
        # worker's private one when sharded.
        self._udp_reply: dict[bool, _UdpSocket] = {}
        self._udp_request: dict[bool, _UdpSocket] = {}
        self.loop = asyncio.get_running_loop()
        self.udp: list[_UdpSocket] = []
        self.tcp: TcpTransport | None = None
        self.tls: TcpTransport | None = None
        self.proxy: Proxy
        self.identity: IdentityGate | None = None  # [stir] verify
        self.signer: Signer | None = None  # [stir] sign_key
        self.latency = LatencyHistogram()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._deferred = False
        self._stopped = False
        self._seen = 0
        self._admin: _AdminServer | None = None
        self._status_board: StatusBoard | None = None
        self._admin_task: asyncio.Task[None] | None = None
        self._gc_timer: asyncio.TimerHandle | None = None
        self._gc_was_enabled = False
        self._gc_next = math.inf
        self.gc_collections = 0
        self.gc_seconds = 0.0
        self._qprobe: socket.socket | None = None
        self._qprobe_to: tuple[str, int] = ("", 0)
        self._qprobe_from: tuple[str, int] = ("", 0)
        self._qprobe_back = 0.0
        self._qprobe_timer: asyncio.TimerHandle | None = None
        self.queue_delay = 0.0
        self.shedding = False
        self.shed_total = 0
        self._shed_fraction = 0.0
        self._shed_credit = 0.0
        self._shed_logged = -math.inf
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self.admin_address: tuple[str, int] = ("", 0)
        # the CDRs of a lost media node's legs the router ends (with a database)
        self.lost_legs: LostLegBilling | None = None  # psycopg imported only then
        self._lost_legs_start: asyncio.Task[None] | None = None

    # -- start / stop -------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        base = self.config_path.parent if self.config_path else None
        try:
            specs = destination_specs(cfg.dispatcher, base)
            settings = _settings(cfg)
            probing = _probing(cfg.dispatcher)
            acl = Acl(cfg.acl.allow, key="acl.allow")
            trunks = TrunkTable(cfg.trunks, cfg.acl.allow)
            pike = Pike(
                sampling_time_unit=cfg.pike.sampling_time_unit,
                reqs_density_per_unit=cfg.pike.reqs_density_per_unit,
                ban_seconds=cfg.pike.ban_seconds,
                allow=cfg.pike.allow,
                ipv6_prefix=cfg.security.ipv6_prefix,
            )
            stir_cfg = cfg.stir
            anchors = load_anchors(stir_cfg.trust_anchors) if stir_cfg.verify else []
            self.signer = Signer(stir_cfg) if stir_cfg.sign_key else None
        except (ValueError, DispatcherError) as exc:
            raise StartError(str(exc)) from None
        interfaces: list[Interface] = []
        via_interfaces: list[Interface] = []
        sharded = self.workers > 1
        try:
            for item in cfg.router.listen:
                proto, _, addr = item.partition(":")
                host, _, port = addr.rpartition(":")
                if proto == "udp":
                    if sharded:
                        # SO_REUSEPORT: the kernel spreads sources over the workers by
                        # 4-tuple, so one source's retransmissions, ACK and CANCEL reach
                        # the worker holding its transaction.
                        _, u = await self.loop.create_datagram_endpoint(
                            lambda: _UdpSocket(self),
                            sock=_reuseport_udp(unbracket(host), int(port)),
                        )
                    else:
                        _, u = await self.loop.create_datagram_endpoint(
                            lambda: _UdpSocket(self), local_addr=(unbracket(host), int(port))
                        )
                    self.udp.append(u)
                    iface = Interface("udp", advertised(host), u.local[1])
                    interfaces.append(iface)
                    v6 = iface.key == "udp6"
                    self._udp_reply.setdefault(v6, u)
                    if sharded and v6 not in self._udp_request:
                        # The worker's own downstream socket (one per address family):
                        # its Via names it, so the responses come back to this worker
                        # (not to whichever the kernel would pick on the shared port).
                        _, priv = await self.loop.create_datagram_endpoint(
                            lambda: _UdpSocket(self), local_addr=(unbracket(host), 0)
                        )
                        self._udp_request[v6] = priv
                        if self.udp_private is None:
                            self.udp_private = priv
                        via_interfaces.append(Interface("udp", advertised(host), priv.local[1]))
                elif proto == "tls":
                    if self.tls is None:
                        server, client = _tls_contexts(cfg.router, trunk_mtls=_trunk_mtls(cfg))
                        self.tls = TcpTransport(
                            self._on_tls,
                            self._on_send_failed,
                            tls=True,
                            ssl_server=server,
                            ssl_client=client,
                        )
                    if self.worker == 0:  # accepted by worker 0 only, like TCP
                        bound = await self.tls.listen(host, int(port))
                        interfaces.append(Interface("tls", advertised(host), bound[1]))
                    else:
                        interfaces.append(Interface("tls", advertised(host), int(port)))
                else:
                    if self.tcp is None:
                        self.tcp = TcpTransport(self._on_tcp, self._on_send_failed)
                    if self.worker == 0:
                        # TCP is accepted by worker 0 only (connections are long-lived
                        # and stay with the worker that accepted them).
                        bound = await self.tcp.listen(host, int(port))
                        interfaces.append(Interface("tcp", advertised(host), bound[1]))
                    else:
                        interfaces.append(Interface("tcp", advertised(host), int(port)))
            admin_host, _, admin_port = cfg.router.admin.rpartition(":")
            admin_sock = self._bind_admin(f"{admin_host}:{int(admin_port) + self.worker}")
        except TlsConfigError as exc:
            await self._close_sockets()
            raise StartError(str(exc)) from None
        except OSError as exc:
            await self._close_sockets()
            raise StartError(f"cannot bind: {exc.strerror or exc}") from None
        # The floating address in Record-Route (also this router's own address when a Route
        # or Request-URI names it) and in the Via of forwarded requests.
        interfaces = _with_floating(interfaces, "rr_host", cfg.router.record_route_host)
        interfaces = _with_floating(interfaces, "via_host", cfg.router.via_host)
        primary: dict[str, Interface] = {}
        for i in interfaces:
            primary.setdefault(i.key, i)  # the first of each transport and family
        dispatcher = Dispatcher(
            specs,
            algorithm=cfg.dispatcher.algorithm,
            probing=probing,
            now=self.loop.time(),
        )
        self.proxy = Proxy(
            list(primary.values()),
            dispatcher,
            acl=acl,
            pike=pike,
            settings=settings,
            secret=os.urandom(8),
            resolve=_Resolver(),
            aliases=tuple((i.host, i.port) for i in interfaces)
            + tuple((i.rr_host, i.port) for i in interfaces if i.rr_host)
            + tuple((i.via_host, i.port) for i in interfaces if i.via_host)
            + _aliases(cfg.router.aliases),
            via_interfaces=via_interfaces,
            bans=_bans(cfg.security),
            scanners=ScannerFilter(cfg.security.scanner_user_agents),
            server=cfg.security.server_header,
            acl_drop=cfg.security.outside_acl == "drop",
            hide_topology=cfg.security.topology_hiding,
            trunks=trunks,
            emergency=EmergencyNumbers(cfg.emergency.numbers),
            verify_identity=stir_cfg.verify,
            verstat_to_callee=stir_cfg.verstat_to_callee,
            signer=self.signer,
        )
        if self.tls is not None:
            self.proxy.tls_peer_names = self.tls.peer_names
        writer = self._lost_leg_billing(cfg)
        if writer is not None:
            await writer
        if stir_cfg.verify:
            cache = CertificateCache(
                anchors,
                https_ca=stir_cfg.https_ca,
                ttl=stir_cfg.cache_ttl,
                failure_ttl=stir_cfg.failure_ttl,
                timeout=stir_cfg.fetch_timeout,
                max_bytes=stir_cfg.max_certificate_bytes,
                size=stir_cfg.cache_size,
            )
            self.identity = IdentityGate(
                stir_cfg, cache, lambda: self.proxy, self._deliver, self._transmit_now
            )
        self.registry = make_registry(
            self.proxy,
            self.latency,
            lambda: self.tls.handshake_failures if self.tls is not None else 0,
            self.proxy_time,
        )
        # switchboard_event_loop_lag_seconds / _max_seconds, switchboard_gc_pause_seconds
        for extra in (self.identity, self.signer):
            if extra is not None:
                self.registry.register(extra)
        self.loop_lag = LoopLagMonitor(self.registry)  # sampling starts below, once up
        self.interfaces = interfaces
        app = create_app(self)
        self._status_board = getattr(app.state, "status_board", None)
        ucfg = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._admin = _AdminServer(ucfg)
        self._admin_task = self.loop.create_task(self._admin.serve(sockets=[admin_sock]))
        self._arm()
        # Long-lived startup objects out of the collector's way; transactions break their
        # own reference cycles and nothing pins them beyond their lifetime, so the live
        # set (what a full collection scans) stays small under load.
        gc.collect()
        gc.freeze()
        self._gc_start()
        self.loop_lag.start()
        # The receive-queue probe goes to the socket new calls arrive on (a worker's own
        # socket when sharded: the shared port may hash the probe to another worker).
        probed = (
            self.udp_private
            if self.udp_private is not None
            else (self.udp[0] if self.udp else None)
        )
        if probed is not None:
            self._queue_probe_start(probed)
        log.info(
            "router%s listening on %s, admin on http://%s:%d, %d destination(s), algorithm %d;"
            " hot path %s",
            f" worker {self.worker}/{self.workers}" if sharded else "",
            ", ".join(f"{i.transport}:{i.host}:{i.port}" for i in interfaces),
            *self.admin_address,
            len(specs),
            cfg.dispatcher.algorithm,
            _native.STATUS,
        )

    # -- garbage collection (see GC_INTERVAL) ---------------------------------------
    def _gc_start(self) -> None:
        self._gc_was_enabled = gc.isenabled()
        gc.disable()
        self._gc_next = self.loop.time() + GC_INTERVAL
        self._gc_timer = self.loop.call_later(GC_CHECK, self._gc_tick)

    def _gc_tick(self) -> None:
        self._gc_timer = None
        if self._stopped:
            return
        now = self.loop.time()
        if now >= self._gc_next or gc.get_count()[0] >= GC_ALLOCATIONS:
            t0 = time.perf_counter()
            found = gc.collect()
            took = time.perf_counter() - t0
            self.gc_collections += 1
            self.gc_seconds += took
            self._gc_next = now + GC_INTERVAL
            log.debug("gc: %d unreachable object(s) collected in %.1f ms", found, took * 1e3)
        self._gc_timer = self.loop.call_later(GC_CHECK, self._gc_tick)

    def _gc_stop(self) -> None:
        if self._gc_timer is not None:
            self._gc_timer.cancel()
            self._gc_timer = None
        if self._gc_was_enabled:
            gc.enable()

    def _bind_admin(self, address: str) -> socket.socket:
        host, _, port = address.rpartition(":")
        host = unbracket(host)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        sock.setblocking(False)
        self.admin_address = sock.getsockname()[:2]
        return sock

    async def _close_sockets(self) -> None:
        for u in self.udp:
            u.close()
        for priv in self._udp_request.values():
            priv.close()
        if self.tcp is not None:
            await self.tcp.close()
        if self.tls is not None:
            await self.tls.close()

    async def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._gc_stop()
        if getattr(self, "loop_lag", None) is not None:
            self.loop_lag.stop()
        if self._qprobe_timer is not None:
            self._qprobe_timer.cancel()
            self._qprobe_timer = None
        if self._qprobe is not None:
            self._qprobe.close()
            self._qprobe = None
        if self.identity is not None:
            self.identity.close()
            await self.identity.cache.close()
        if self._status_board is not None:
            await self._status_board.close()
        if self._admin is not None:
            self._admin.should_exit = True
            if self._admin_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._admin_task, 5.0)
        await self._close_sockets()
        if self.lost_legs is not None:
            await self.lost_legs.close()

    def _lost_leg_billing(self, cfg: config_mod.Config) -> asyncio.Task[None] | None:
        """docs/router.md "A media node lost with its box": with lost_node_timeout and a
        database, each leg the router ends gets its CDR (router/lost_node.py), stored like
        the nodes' own — set up at start, or by the reload that turns it on. Returns the
        writer's start (it replays a spool an earlier run left)."""
        if self.lost_legs is not None or not (
            cfg.dispatcher.lost_node_timeout and cfg.database.url
        ):
            return None
        from switchboard.router.lost_node_billing import LostLegBilling

        name = "router" if self.workers == 1 else f"router-{self.worker}"
        self.lost_legs = LostLegBilling(
            cfg, name=name, clock=self.loop.time, node_name=self._node_name,
            stats=self.proxy.stats,
        )  # fmt: skip
        self.proxy.on_lost_leg = self.lost_legs.leg_ended
        self._lost_legs_start = self.loop.create_task(self.lost_legs.start())
        return self._lost_legs_start

    def _node_name(self, uri: str) -> str:
        """A dispatcher destination's name for its CDRs: its ``duid`` attribute, or URI."""
        for d in self.proxy.dispatcher.destinations():
            if d.spec.uri == uri:
                return d.spec.duid
        return uri

    def request_stop(self) -> None:
        """First call: drain. Second call: force."""
        if self._stop.is_set():
            log.warning(
                "second signal: exiting now with %d transaction(s) pending",
                self.proxy.pending_transactions(),
            )
            self._force.set()
            return
        log.info(
            "draining: new INVITEs get 503, waiting for %d transaction(s)",
            self.proxy.pending_transactions(),
        )
        self.proxy.draining = True
        self._stop.set()

    async def serve(self) -> int:
        """Run until stopped; returns the process exit code."""
        await self._stop.wait()
        deadline = self.loop.time() + self.cfg.router.drain_timeout
        while (
            self.proxy.pending_transactions()
            and self.loop.time() < deadline
            and not self._force.is_set()
        ):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._force.wait(), 0.05)
        forced = self._force.is_set()
        await self.stop()
        log.info("router stopped (%s)", "forced" if forced else "drained")
        return ExitCode.FAILED if forced else ExitCode.OK

    def reload(self) -> int:
        """Re-read the configuration and list file, keeping transactions and the state of
        unchanged destinations. Raises ValueError (and changes nothing) on a bad file."""
        try:
            cfg = config_mod.load(self.config_path) if self.config_path else self.cfg
            base = self.config_path.parent if self.config_path else None
            specs = destination_specs(cfg.dispatcher, base)
            settings = _settings(cfg)
            probing = _probing(cfg.dispatcher)
            acl = Acl(cfg.acl.allow, key="acl.allow")
            trunks = TrunkTable(cfg.trunks, cfg.acl.allow, previous=self.proxy.trunks)
            pike_allow = AddressList(cfg.pike.allow, key="pike.allow")
            ban_allow = AddressList(cfg.security.auth_ban_allow, key="security.auth_ban_allow")
            tls = (
                _tls_contexts(cfg.router, trunk_mtls=_trunk_mtls(cfg))
                if self.tls is not None
                else None
            )
        except (config_mod.ConfigError, DispatcherError, TlsConfigError, TrunkConfigError) as exc:
            raise ValueError(str(exc)) from None
        if self.tls is not None and tls is not None:
            # New handshakes use the new certificate; connections already up keep theirs,
            # so a certificate rotation drops no call.
            self.tls.ssl_server, self.tls.ssl_client = tls
        p = self.proxy
        p.dispatcher.algorithm = cfg.dispatcher.algorithm
        p.dispatcher.probing = probing
        p.dispatcher.load(specs)
        p.settings = settings
        self._lost_leg_billing(cfg)  # turned on by this reload: its CDRs from now on
        if settings.edge_shedding != (p.edge is not None):
            p.edge = EdgeShedding() if settings.edge_shedding else None
        p.acl = acl
        # Calls in progress keep the trunk state they were admitted on; trunks that still
        # exist keep their counters and live calls (TrunkTable(previous=...)).
        p.trunks = trunks
        p.emergency = EmergencyNumbers(cfg.emergency.numbers) or None
        sec = cfg.security
        if p.bans is not None:  # keep the current bans and counts
            p.bans.limit = sec.auth_fail_limit
            p.bans.window = sec.auth_fail_window
            p.bans.ban_seconds = sec.auth_ban_seconds
            p.bans.allow = ban_allow
        p.scanners = ScannerFilter(sec.scanner_user_agents)
        p.server_line = b"Server: " + sec.server_header.encode() if sec.server_header else b""
        p.acl_drop = sec.outside_acl == "drop"
        p.hide_topology = sec.topology_hiding  # dialogs already hidden stay hidden
        if p.pike is not None:
            p.pike.unit = cfg.pike.sampling_time_unit
            p.pike.density = cfg.pike.reqs_density_per_unit
            p.pike.ban_seconds = cfg.pike.ban_seconds
            p.pike.allow = pike_allow
        if cfg.router.listen != self.cfg.router.listen:
            log.warning("[router] listen changed: takes effect at the next restart")
        self.cfg = cfg
        log.info(
            "reloaded: %d destination(s), %d transaction(s) kept", len(specs), p.transaction_count
        )
        self._arm()
        return len(specs)

    def set_trunks(self, trunks: dict[str, Any]) -> None:
        """``PUT /trunks``: replace the trunk definitions (validated as a whole like a
        file; ValueError naming the key and nothing changed when invalid)."""
        try:
            cfg = config_mod.Config.model_validate({**self.cfg.model_dump(), "trunks": trunks})
            table = TrunkTable(cfg.trunks, cfg.acl.allow, previous=self.proxy.trunks)
        except ValidationError as exc:
            raise ValueError(config_mod._describe(exc, None)) from None
        self.proxy.trunks = table
        self.cfg = cfg
        log.info("trunks replaced through the admin API: %s", ", ".join(cfg.trunks) or "none")

    def proxy_time(self) -> float:
        return self.loop.time()

    # -- I/O --------------------------------------------------------------------------
    def on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        # Hot path: one in LATENCY_SAMPLE messages is timed for the histogram, and only
        # the transaction heap can have gained an earlier deadline during receive().
        parsed: wire.Message | None = None
        if self.shedding and data[:7] == b"INVITE ":
            shed, parsed = self._shed(data, addr)
            if shed:
                return
        if data[:1] == b"\x00" and addr[:2] == self._qprobe_from:  # never SIP
            self._queue_probe_back(data)
            return
        if len(addr) != 2:
            # An IPv6 socket gives (host, port, flowinfo, scope_id); the proxy is typed —
            # and, compiled, checked at run time — for (host, port).
            addr = (addr[0], addr[1])
        self._seen += 1
        sample = not self._seen % LATENCY_SAMPLE
        t0 = time.perf_counter() if sample else 0.0
        try:
            if self.identity is not None and data[:7] == b"INVITE ":
                sends = self._verified(data, "udp", addr, None)
            elif parsed is not None:  # read by _shed already: not parsed twice
                sends = self.proxy.receive_request(
                    parsed, data, "udp", addr, None, self.loop.time()
                )
            else:
                sends = self.proxy.receive(data, "udp", addr, None, self.loop.time())
            if sends:
                self._transmit(sends)
        except Exception:  # the process never dies on a peer's bytes
            log.exception("datagram from %s:%s crashed the router; dropped", addr[0], addr[1])
        if sample:
            self.latency.observe(time.perf_counter() - t0)
        if self.proxy.heap_deadline() < self._timer_at:
            self._arm()

    # -- load shedding (see SHED_AFTER) ----------------------------------------------
    def _queue_probe_start(self, target: _UdpSocket) -> None:
        host, port = target.local[:2]
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host, 0))
        except OSError as exc:
            sock.close()
            log.warning("no receive-queue probe (no load shedding): %s", exc)
            return
        sock.setblocking(False)
        self._qprobe = sock
        self._qprobe_to = (host, port)
        self._qprobe_from = sock.getsockname()[:2]
        self._qprobe_back = time.monotonic()
        self._queue_probe_send()

    def _queue_probe_send(self) -> None:
        self._qprobe_timer = None
        if self._stopped or self._qprobe is None:
            return
        now = time.monotonic()
        if now - self._qprobe_back >= SHED_DELAY + QUEUE_PROBE:
            # Probes are not coming out (a very long queue, or a full one dropping them).
            self._queue_delay(now - self._qprobe_back - QUEUE_PROBE)
        with contextlib.suppress(OSError):
            self._qprobe.sendto(QUEUE_MAGIC + b"%.6f" % now, self._qprobe_to)
        self._qprobe_timer = self.loop.call_later(QUEUE_PROBE, self._queue_probe_send)

    def _queue_probe_back(self, data: bytes) -> None:
        if not data.startswith(QUEUE_MAGIC):
            return
        now = time.monotonic()
        try:
            delay = now - float(data[4:])
        except ValueError:
            return
        self._qprobe_back = now
        self._queue_delay(delay)

    def _queue_delay(self, delay: float) -> None:
        self.queue_delay = delay
        fraction = min(1.0, max(0.0, (delay - SHED_DELAY) / (SHED_ALL - SHED_DELAY)))
        if fraction > 0.0 and not self.shedding:
            self.shedding = True
            now = time.monotonic()
            if now - self._shed_logged >= SHED_LOG_EVERY:
                self._shed_logged = now
                log.warning(
                    "overload: datagrams wait %.0f ms in the receive queue; shedding new "
                    "INVITEs with 503 (%d so far)",
                    delay * 1e3,
                    self.shed_total,
                )
        elif fraction == 0.0:
            self.shedding = False
        self._shed_fraction = fraction

    def _shed(self, data: bytes, addr: tuple[str, int]) -> tuple[bool, wire.Message | None]:
        """Answer a new INVITE 503 statelessly: (True, the message) when shed. (False,
        the message or None): let the proxy have it — in-dialog, a retransmission of a
        call it accepted, an emergency call, unparsable (its job to answer), or not this
        one's turn. Only an INVITE whose turn it is to be shed is parsed here (every
        n-th INVITE datagram: the others cost nothing more), and a parsed one the proxy
        then takes as it is (Proxy.receive_request): no INVITE is parsed twice."""
        fraction = self._shed_fraction
        credit = self._shed_credit + fraction
        if credit < 1.0:
            self._shed_credit = credit
            return False, None
        try:
            m = wire.parse(data)
            wire.validate(m)
            via = wire.Via(m.top_via())
        except wire.BadMessage:
            return False, None
        if m.to_tag() or self.proxy.is_emergency(m, addr):
            return False, m  # in-dialog, or an emergency call: never shed (nor counted)
        # The proxy's server-transaction key (proxy._on_request): a retransmitted INVITE
        # of a call already forwarded must keep getting that call's answers.
        key = (via.branch or m.call_id + b"/" + m.cseq_num, via.sent_by, b"INVITE")
        if key in self.proxy.txns:
            return False, m
        self._shed_credit = credit - 1.0
        self.shed_total += 1
        # Counted like the proxy's own requests and local replies (admin /stats, /metrics).
        stats = self.proxy.stats
        stats.requests["INVITE"] = stats.requests.get("INVITE", 0) + 1
        stats.replies[503] = stats.replies.get(503, 0) + 1
        reply_addr = (addr[0], addr[1] if via.rport is not None else via.port)
        retry = self.proxy.settings.retry_after
        lines = [b"SIP/2.0 503 " + SHED_REASON]
        lines.extend(m.lines[i] for i in m.vias)
        lines.append(m.lines[m.from_])
        lines.append(m.lines[m.to] + b";tag=sb-shed")
        lines.append(b"Call-ID: " + m.call_id)
        lines.append(b"CSeq: " + m.cseq_num + b" INVITE")
        if retry:
            lines.append(b"Retry-After: %d" % retry)
        if self.proxy.server_line:
            lines.append(self.proxy.server_line)
        lines.append(b"Content-Length: 0")
        self._transmit([Send("udp", reply_addr, wire.build(lines, b""))])
        return True, m

    def _verified(self, data: bytes, transport: str, src: tuple[str, int], conn: Any) -> list[Send]:
        """A new INVITE through the STIR gate: verified at once (certificate cached),
        refused by policy, or held while its certificate is fetched (then []) ."""
        assert self.identity is not None
        verdict = self.identity.check(data, transport, src, conn)
        if verdict is HELD:
            return []
        if isinstance(verdict, list):
            return verdict
        return self.proxy.receive(data, transport, src, conn, self.loop.time(), verdict)

    def _deliver(self, data: bytes, transport: str, src: tuple[str, int], conn: Any,
                 verdict: Any) -> None:  # fmt: skip
        """A held INVITE goes on, with its verdict."""
        if self._stopped:
            return
        try:
            sends = self.proxy.receive(data, transport, src, conn, self.loop.time(), verdict)
            if sends:
                self._transmit(sends)
        except Exception:
            log.exception("held INVITE from %s:%s crashed the router; dropped", *src[:2])
        self._arm()

    def _transmit_now(self, sends: list[Send]) -> None:
        self._transmit(sends)

    def _on_tcp(self, data: bytes, peer: Peer) -> None:
        t0 = time.perf_counter()
        src = (peer.host, peer.port)
        if self.identity is not None and data[:7] == b"INVITE ":
            sends = self._verified(data, "tcp", src, peer)
        else:
            sends = self.proxy.receive(data, "tcp", src, peer, self.loop.time())
        if sends:
            self._transmit(sends)
        self.latency.observe(time.perf_counter() - t0)
        if self.proxy.get_timer() < self._timer_at:
            self._arm()

    def _on_tls(self, data: bytes, peer: Peer) -> None:
        src = (peer.host, peer.port)
        if self.identity is not None and data[:7] == b"INVITE ":
            sends = self._verified(data, "tls", src, peer)
        else:
            sends = self.proxy.receive(data, "tls", src, peer, self.loop.time())
        if sends:
            self._transmit(sends)
        if self.proxy.get_timer() < self._timer_at:
            self._arm()

    def _transmit(self, sends: list[Send]) -> None:
        if self._stopped:
            return
        private = self._udp_request
        for s in sends:
            if s.transport == "udp":
                host = s.addr[0]
                v6 = ":" in host
                sock = self._udp_reply.get(v6)
                if private and not s.data.startswith(b"SIP/2.0 "):
                    sock = private.get(v6)  # requests leave from the worker's own socket
                if sock is None or sock.transport is None:
                    # No socket of that family ([router] listen has none): a send error.
                    if s.branch:
                        self._on_send_failed(s.branch)
                    continue
                try:
                    # the proxy's (host, port) as it is for IPv4 (no call, no new tuple)
                    addr = (unbracket(host), s.addr[1]) if v6 else s.addr
                    sock.transport.sendto(s.data, addr)
                except (OSError, ValueError) as exc:
                    log.debug("UDP send to %s:%d failed: %s", *s.addr, exc)
                    if s.branch:
                        self._on_send_failed(s.branch)
            elif s.transport == "tcp" and self.tcp is not None:
                peer = s.conn if isinstance(s.conn, Peer) else Peer("TCP", s.addr[0], s.addr[1])
                self.tcp.send(s.data, peer, s.branch or None)
            elif s.transport == "tls" and self.tls is not None:
                peer = s.conn if isinstance(s.conn, Peer) else Peer("TLS", s.addr[0], s.addr[1])
                self.tls.send(s.data, peer, s.branch or None)
            elif s.branch:
                self._on_send_failed(s.branch)

    def _on_send_failed(self, token: object) -> None:
        if isinstance(token, bytes) and token:
            sends = self.proxy.transport_error(token, self.loop.time())
            if sends:
                self.loop.call_soon(self._transmit, sends)
            self._arm()

    def _arm(self) -> None:
        if self._stopped:
            return
        when = self.proxy.get_timer()
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        if math.isinf(when):
            self._timer = None
            self._timer_at = math.inf
            return
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        late = self.loop.time() - self._timer_at
        self._timer = None
        self._timer_at = math.inf
        if late > LATE_TIMER and not self._deferred:
            # The loop was stalled (CPU starvation, a long GC): libuv runs timers before
            # polling sockets, so answers that arrived meanwhile are still unread. Let one
            # poll happen first, or every pending branch would "time out" at once.
            self._deferred = True
            self._timer_at = self.loop.time() + 0.001
            self._timer = self.loop.call_at(self._timer_at, self._on_timer)
            return
        self._deferred = False
        try:
            sends = self.proxy.handle_timer(self.loop.time())
            if sends:
                self._transmit(sends)
        except Exception:  # a timer bug must not stop the router's clock
            log.exception("router timer failed")
        self._arm()


def advertised(host: str) -> str:
    """The address to put in Via and Record-Route for a listen host: a wildcard bind
    (0.0.0.0, ::) is advertised as the address of the default route's interface."""
    if host not in ("0.0.0.0", "::", "[::]"):
        return host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))  # UDP connect sends nothing; it only picks a route
            ip = s.getsockname()[0]
    except OSError:
        ip = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    return f"[{ip}]" if family == socket.AF_INET6 else ip


def _reuseport_udp(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def _with_floating(interfaces: list[Interface], field: str, host: str) -> list[Interface]:
    """``interfaces`` with ``field`` (``rr_host`` or ``via_host``) set to the floating
    address ``host`` on those of its address family (IPv6 bracketed); unchanged when
    ``host`` is empty."""
    if not host:
        return interfaces
    v6 = ":" in host
    if v6 and not host.startswith("["):
        host = f"[{host}]"
    out = []
    for i in interfaces:
        if i.host.startswith("[") == v6:
            i = replace(i, via_host=host) if field == "via_host" else replace(i, rr_host=host)
        out.append(i)
    return out


WORKER_ENV = "SWITCHBOARD_ROUTER_WORKER"


async def supervise(cfg: config_mod.Config, config_path: Path) -> int:
    """``[router] workers`` > 1: run that many worker processes sharing the listening
    ports (SO_REUSEPORT), forward SIGTERM/SIGINT/SIGHUP to them, exit when all exited."""
    loop = asyncio.get_running_loop()
    procs = []
    for i in range(cfg.router.workers):
        env = dict(os.environ, **{WORKER_ENV: str(i)})
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "switchboard.cli",
                "router",
                "--config",
                str(config_path),
                env=env,
                # Own session: a terminal's Ctrl-C reaches the supervisor only, which
                # forwards it once (a second copy would force the workers' exit).
                start_new_session=True,
                # A supervisor killed outright (SIGKILL, OOM) takes its workers with it:
                # they drain and exit instead of holding the port without a parent.
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
        )

    def forward(sig: signal.Signals) -> None:
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, forward, sig)
    codes = await asyncio.gather(*(p.wait() for p in procs))
    log.info("router workers exited: %s", codes)
    return max((c for c in codes if c is not None), default=0)


async def serve(cfg: config_mod.Config, config_path: Path | None = None) -> int:
    """Start the router and run it until a signal; returns the exit code."""
    workers = cfg.router.workers
    worker = os.environ.get(WORKER_ENV)
    if workers > 1 and worker is None:
        if config_path is None:
            log.error("[router] workers > 1 needs --config FILE (each worker reads it)")
            return ExitCode.START_FAILED
        return await supervise(cfg, config_path)
    router = Router(cfg, config_path, worker=int(worker or 0), workers=workers)
    try:
        await router.start()
    except StartError as exc:
        log.error("router failed to start: %s", exc)
        return ExitCode.START_FAILED

    def on_hup() -> None:
        try:
            router.reload()
        except ValueError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)

    # the router counts signals itself: the second one forces the drain to end
    signals = Signals(stop=router.request_stop, force=router.request_stop, reload=on_hup)
    signals.install()
    try:
        return await router.serve()
    finally:
        signals.remove()


def run(cfg: config_mod.Config, config_path: Path | None = None) -> int:
    """Blocking entry point for the CLI: logging, event loop, signals (lifecycle)."""
    worker = os.environ.get(WORKER_ENV)
    return run_service("router" if worker is None else f"router-{worker}", serve(cfg, config_path))
