"""One media node process: switch core + SIP UA + Event Socket + /metrics + CDRs.

``switchboard media --config FILE --name media-1`` runs :func:`run`. Defaults follow
from the node number N of ``media-N``: SIP udp+tcp 127.0.0.1:508N, ESL
127.0.0.1:802N, RTP 16384+(N-1)·8192 … +8191, admin + /metrics 127.0.0.1:808N.
SIGHUP reloads the dialplan; the first SIGTERM/SIGINT hangs up every call
(SYSTEM_SHUTDOWN) and stops, a second one exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from switchboard.config import Config
from switchboard.lifecycle import ExitCode, Signals, notify_ready, run_service
from switchboard.media import cdr as cdr_mod
from switchboard.media.applications import new_switch
from switchboard.media.applications.media import AppConfig, IvrMenu
from switchboard.media.collector import CollectorPolicy
from switchboard.media.core import Switch
from switchboard.media.dialplan import Dialplan, DialplanError
from switchboard.media.limits import SessionLimiter
from switchboard.media.overload import OverloadGuard, ShedReason, idle_percent, parse_proc_stat
from switchboard.media.ports import PortAllocator
from switchboard.media.settings import RTP_BASE, RTP_SPAN, IvrMenuSection, node_number
from switchboard.media.ua import UserAgent
from switchboard.net import descriptors
from switchboard.net.address import own_address
from switchboard.net.tls import TlsConfigError, TlsFiles
from switchboard.router.protection import AuthBans

log = logging.getLogger(__name__)


class NodeStartError(RuntimeError):
    """The node could not start (port in use, bad dialplan); exit code 3."""


def load_dialplan(cfg: Config) -> tuple[Dialplan, dict[str, IvrMenuSection]]:
    """The configured dialplan (the ``file`` wins over inline rules; none → defaults)."""
    section = cfg.dialplan
    rules: list[dict[str, Any]] = list(section.rules)
    menus = dict(section.ivr)
    if section.file:
        try:
            data = tomllib.loads(Path(section.file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise DialplanError(f"dialplan file {section.file}: {exc}") from None
        rules = list(data.get("rules", []))
        for name, menu in data.get("ivr", {}).items():
            try:
                menus[name] = IvrMenuSection.model_validate(menu)
            except ValidationError as exc:
                raise DialplanError(f"dialplan file {section.file}: ivr.{name}: {exc}") from None
    dp = Dialplan.from_config(rules) if rules else Dialplan.default()
    return dp, menus


def _menus(sections: dict[str, IvrMenuSection]) -> dict[str, IvrMenu]:
    return {k: IvrMenu(**v.model_dump()) for k, v in sections.items()}


class MediaNode:
    """Build and run one node. Tests use ``MediaNode(cfg, name)`` with port-0 listeners."""

    def __init__(
        self,
        cfg: Config,
        name: str = "media-1",
        *,
        state_dir: Path | None = None,
        cdr_sink: cdr_mod.CdrSink | None = None,
        esl: bool = True,
        admin: bool = True,
        reap: bool = False,
        go: Any = None,
    ) -> None:
        self.cfg = cfg
        # a reaper: end the journaled calls of this node, which did not come back, and
        # take no call (docs/media.md "Crash recovery")
        self.reap = reap
        # > 0: this node was down that many seconds, past recovery_timeout: it ends the
        # journal's calls (BYE, CDR NETWORK_OUT_OF_ORDER) instead of resuming them
        self.lost_for = 0.0
        # a reaper's cue (awaited before it touches the journal); False: dismissed
        self.go: Callable[[], Awaitable[bool]] | None = go
        self._journal_lock = -1
        self.name = name
        self.n = node_number(name)
        self.state_dir = state_dir or Path(cfg.platform.state_dir)
        self.cdr_sink = cdr_sink
        self.want_esl = esl
        self.want_admin = admin
        self.switch: Switch | None = None
        self.ua: UserAgent | None = None
        self.esl: Any = None
        self.admin_server: asyncio.Server | None = None
        self.metrics: Any = None
        self.registry: Any = None
        self.loop_lag: Any = None  # LoopLagMonitor once started
        self._own_sink: Any = None
        self.journal: Any = None  # media.journal.Journal when [media] recovery is on
        self.recovered: tuple[int, int] = (0, 0)  # legs resumed, legs ended at start
        self.billing: Any = None  # BillingService when [database] url is set
        self.call_credit: Any = None  # CallCredit when [billing] credit_control is on
        self.intercept: Any = None  # CallIntercept when [intercept] enabled
        self._channels = 0
        self._calls = 0
        self._call_uuids: set[str] = set()  # channels counted in _calls
        self._idle_cpu: float | None = None  # the machine's idle CPU %, last second
        self._cpu_reading: tuple[int, int] | None = None
        self._cpu_timer: asyncio.TimerHandle | None = None
        self._queue_probe: Any = None  # net.queue_probe.ReceiveQueueProbe when shedding
        self.overload_guard: OverloadGuard | None = None  # media/overload.py, when on

    # ------------------------------------------------------------------ addresses
    @property
    def sip_listen(self) -> list[str]:
        return self.cfg.media.listen or [
            f"udp:127.0.0.1:{5080 + self.n}",
            f"tcp:127.0.0.1:{5080 + self.n}",
        ]

    @property
    def admin_address(self) -> tuple[str, int]:
        a = self.cfg.media.admin or f"127.0.0.1:{8080 + self.n}"
        h, _, p = a.rpartition(":")
        return h, int(p)

    @property
    def rtp_range(self) -> tuple[int, int]:
        m = self.cfg.media
        start = m.rtp_port_start or RTP_BASE + (self.n - 1) * RTP_SPAN
        end = m.rtp_port_end or start + RTP_SPAN - 1
        return start, end

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        from switchboard.observability.loop_lag import LoopLagMonitor
        from switchboard.observability.metrics import MediaMetrics, new_registry

        m = self.cfg.media
        # what a restart's audio gap is made of (logged once the calls resumed)
        stamps: list[tuple[str, float]] = [("start", time.monotonic())]
        try:
            dialplan, menus = load_dialplan(self.cfg)
        except DialplanError as exc:
            raise NodeStartError(str(exc)) from None
        limits = SessionLimiter(  # a reaper admits nothing: a new INVITE gets 503
            max_sessions=0 if self.reap else self.cfg.limits.max_sessions,
            sessions_per_second=self.cfg.limits.sessions_per_second,
            emergency_reserve=0 if self.reap else self.cfg.emergency.reserve_sessions,
        )
        sw = new_switch(name=self.name, limits=limits, dialplan=dialplan, ipv4=m.rtp_ip)
        sw.emergency_numbers = frozenset(
            n for numbers in self.cfg.emergency.numbers.values() for n in numbers
        )
        self.switch = sw

        def reload_dialplan() -> Dialplan:
            dp, new_menus = load_dialplan(self.cfg)
            sw.app_config.ivr_menus = _menus(new_menus)  # type: ignore[attr-defined]
            return dp

        sw.dialplan_loader = reload_dialplan
        sw.app_config = AppConfig(  # type: ignore[attr-defined]
            sounds_dir=Path(m.sounds_dir) if m.sounds_dir else None,
            recordings_dir=Path(m.recordings_dir)
            if m.recordings_dir
            else self.state_dir / "recordings",
            ivr_menus=_menus(menus),
            energy_level=m.conference_energy_level,
            originate_timeout=m.originate_timeout,
        )
        self.registry = new_registry("media")
        self.metrics = MediaMetrics.create(self.registry)
        # event-loop stalls and collector pauses on /metrics (observability/loop_lag.py);
        # sampled once the node is up (end of start)
        self.loop_lag = LoopLagMonitor(self.registry)
        self.metrics.sessions_max.set(limits.max_sessions)
        self.metrics.sessions_per_second_max.set(limits.sessions_per_second)
        sw.events.subscribe(self._on_event, headers=False)  # name and uuid only
        stamps.append(("setup", time.monotonic()))
        sink = self.cdr_sink or await self._default_sink()
        stamps.append(("database", time.monotonic()))
        journal_state = None
        if m.recovery or self.reap:
            from switchboard.media import journal as journal_mod
            from switchboard.media import recovery

            jdir = Path(m.journal_dir) if m.journal_dir else self.state_dir / "journal"
            path = jdir / f"{self.name}.jnl"
            if self.go is not None and not await self.go():
                raise ReaperDismissed(self.name)
            # one process at a time: a node started while a reaper ends its calls waits,
            # then reads their end records; a reaper gives way to a node that is up
            self._journal_lock = await asyncio.to_thread(journal_mod.lock, path, wait=not self.reap)
            stamps.append(("lock", time.monotonic()))
            journal_state = journal_mod.read(path)
            stamps.append(("journal read", time.monotonic()))
            # gone longer than recovery_timeout (restarts crashed or hung, the machine was
            # off): its calls are ended here as a reaper would, not resumed — whoever
            # restarted it (systemd, a container runtime, an operator: no supervisor's
            # reaper there)
            down = journal_mod.down_for(path)
            if not self.reap and journal_state.live() and down is not None:
                # the heartbeat is up to one interval older than the node's death
                late = down > m.recovery_timeout + journal_mod.FSYNC_INTERVAL
                self.lost_for = down if late else 0.0
            self.journal = journal_mod.Journal(path)
            self.journal.open(journal_state)
            recovery.install(self.journal, sw, self.metrics)
            cdr_mod.install(sw, recovery.JournalingSink(sink, self.journal, self.metrics),
                            self.name, self.metrics)  # fmt: skip
        else:
            cdr_mod.install(sw, sink, self.name, self.metrics)
        if self.billing is not None and self.billing.portability is not None and not self.reap:
            from switchboard.media.portability import CallPortability

            # before credit control: the call is authorised at its routing number's price
            CallPortability(sw, self.billing.portability).install()
        if self.billing is not None and self.billing.credit is not None:
            from switchboard.media.credit import CallCredit

            b = self.cfg.billing
            self.call_credit = CallCredit(
                sw,
                self.billing.credit,
                unknown_account=b.unknown_account,
                extend_before=b.extend_before,
                settle_retry_for=float(b.reservation_grace),
                authorise_retry_for=b.authorise_retry_for,
            )
            self.call_credit.install()
        sw.hangup_hooks.append(self._rtp_metrics)
        start, end = self.rtp_range
        sec = self.cfg.security
        ua = UserAgent(
            sw,
            rtp_ip=m.rtp_ip,
            sdp_ip=m.sdp_ip or own_address(m.rtp_ip),
            rtp_ip6=m.rtp_ip6,
            sdp_ip6=m.sdp_ip6,
            ports=PortAllocator(start, end),
            codecs=m.codecs,
            gateways=self.cfg.gateways,
            users=self.cfg.users,
            realm=m.realm,
            digest_algorithms=m.digest_algorithms,
            retry_after=self.cfg.limits.retry_after,
            user_agent=m.user_agent,
            metrics=self.metrics,
            sip_socket_buffer=m.sip_socket_buffer,
            rtp_timeout=m.rtp_timeout,
            srtp=m.srtp,
            trunk_srtp={name: t.srtp for name, t in self.cfg.trunks.items()},
            trusted=[*m.trusted, *router_addresses(self.cfg)] if m.trusted else [],
            trunk_sources=[*m.routers, *router_addresses(self.cfg)],
            bans=AuthBans(
                limit=sec.auth_fail_limit,
                window=sec.auth_fail_window,
                ban_seconds=sec.auth_ban_seconds,
                allow=sec.auth_ban_allow,
                ipv6_prefix=sec.ipv6_prefix,
            ),
        )
        self.ua = ua
        if self.journal is not None and not self.reap:
            from switchboard.media import recovery

            recovery.install_setups(self.journal, ua, self.metrics)
        if self.cfg.intercept.enabled and not self.reap:
            await self._start_intercept(sw, ua)
        restored: list[Any] = []
        if journal_state is not None:
            from switchboard.media import recovery

            # rebuilt before the SIP socket listens: a BYE retransmitted by a far end
            # while the node was down must find its dialog, not a 481
            stamps.append(("user agent", time.monotonic()))
            restored = await recovery.restore(ua, journal_state, sink, any_port=self.reap)
            recovery.install_strays(ua, sink, self.name)
            stamps.append(("rebuild", time.monotonic()))
        try:
            if self.reap:
                await self._listen_to_reap(ua)
            else:
                await ua.start(self.sip_listen, self._tls_files())
            if journal_state is not None:
                from switchboard.media import recovery

                setups = list(journal_state.pending_setup_items())
                recovery.hand_back_setups(ua, journal_state, self.journal)
                if self.call_credit is not None:
                    # a setup cut short may hold a reservation its authorisation made
                    # before the crash: the router dials the call again elsewhere (a new
                    # leg, a reservation of its own), so this one is released here
                    for uuid in setups:
                        self.call_credit.release(uuid)
                    # a call that hung up just before the crash: its settlement may have
                    # died with the process
                    self.call_credit.settle_ended(_ended_billsecs(journal_state))
            if self.call_credit is not None:  # prepaid calls: policed again, or settled
                for sessions, whole, _app in restored:  # when they end here and now
                    for s in sessions:
                        self.call_credit.resume(
                            s, police=whole and not (self.reap or self.lost_for)
                        )
            if self.reap:
                self.recovered = (0, recovery.end_all(ua, restored))
            elif self.lost_for and restored:
                self.recovered = (0, recovery.end_all(ua, restored))
                self.metrics.recovered_legs.labels(outcome="ended").inc(self.recovered[1])
                log.warning(
                    "%s was down %.1f s, longer than recovery_timeout (%.1f s): its %d "
                    "journaled call leg(s) ended, not resumed",
                    self.name, self.lost_for, m.recovery_timeout, self.recovered[1],
                )  # fmt: skip
            elif restored:
                self.recovered = recovery.start_resumed(ua, restored)
                self.metrics.recovered_legs.labels(outcome="resumed").inc(self.recovered[0])
                self.metrics.recovered_legs.labels(outcome="ended").inc(self.recovered[1])
                stamps.append(("listen+resume", time.monotonic()))
                log.warning("recovery timing: %s", _timing(stamps, len(restored)))
            if self.want_esl and not self.reap:
                from switchboard.media.event_socket import EslSettings, EventSocketServer

                self.esl = EventSocketServer(sw, EslSettings.from_config(self.cfg.esl, self.n))
                await self.esl.start()
            if self.want_admin and not self.reap:
                from switchboard.observability.metrics import serve_metrics

                host, port = self.admin_address
                self.admin_server = await serve_metrics(host, port, self.registry)
        except TlsConfigError as exc:
            await self.stop()
            raise NodeStartError(f"{self.name}: {exc}") from None
        except OSError as exc:
            await self.stop()
            raise NodeStartError(f"{self.name}: cannot bind: {exc}") from None
        self.loop_lag.start()
        if self.journal is not None and not self.reap:
            self.journal.alive = True  # the heartbeat: a restart knows how long it was gone
            self.journal.heartbeat()
        self._install_overload_guard(ua)
        log.info(
            "%s up: SIP %s, RTP %d-%d, admin %s:%d",
            self.name, self.sip_listen, start, end, *self.admin_address,
        )  # fmt: skip

    async def _listen_to_reap(self, ua: UserAgent) -> None:
        """A reaper's SIP socket: UDP on the node's own address, so that a far end's BYE
        retransmitted meanwhile is answered 200 (its call ends then, not later) — or on
        any port of that host when something else holds it (our BYEs' answers come
        back to the Via). Journaled legs are UDP only."""
        udp = [x for x in self.sip_listen if x.startswith("udp:")] or ["udp:127.0.0.1:0"]
        try:
            await ua.start(udp[:1], self._tls_files())
        except OSError as exc:
            host = udp[0].partition(":")[2].rpartition(":")[0]
            log.warning("%s reaper: %s taken (%s); sending from another port", self.name,
                        udp[0], exc)  # fmt: skip
            await ua.start([f"udp:{host}:0"], self._tls_files())

    async def _start_intercept(self, sw: Switch, ua: UserAgent) -> None:
        """Lawful recording (media/intercept.py): the target list read before the SIP
        socket listens, so the first call is already checked."""
        from switchboard.media.intercept import CallIntercept, TargetList

        ic = self.cfg.intercept
        if self.billing is None or self.billing.pool is None:
            raise NodeStartError(
                f"{self.name}: intercept.enabled needs the billing database ([database] url)"
            )
        targets = TargetList(self.billing.pool, self.name, ic.refresh)
        try:
            await asyncio.wait_for(targets.load(), 10)
        except Exception as exc:
            log.error("%s: intercept target list not read yet: %s", self.name, exc)
        targets.start()
        directory = Path(ic.dir) if ic.dir else self.state_dir / "intercept"
        self.intercept = CallIntercept(
            sw, ua, targets, directory, node=self.name, siprec_server=ic.siprec_server
        )
        self.intercept.install()

    async def _default_sink(self) -> cdr_mod.CdrSink:
        url = self.cfg.database.url
        if url:  # [billing] settings: spool, batching, credit control
            from switchboard.billing.service import BillingService

            billing = BillingService.from_config(
                self.cfg,
                url,
                node=self.name,
                state_dir=self.state_dir,
                on_low_balance=self._on_low_balance,
            )
            await billing.start()
            self.billing = billing
            writer: cdr_mod.CdrSink = billing.writer
            return writer
        path = (
            Path(self.cfg.media.cdr_file)
            if self.cfg.media.cdr_file
            else self.state_dir / "cdr" / f"{self.name}.jsonl"
        )
        sink = cdr_mod.JsonLinesCdrSink(path)
        self._own_sink = sink
        return sink

    def _on_low_balance(self, low: Any) -> None:
        """A settlement took an account below its mark: tell Event Socket clients."""
        if self.switch is not None:
            from switchboard.media.credit import low_balance_event

            self.switch.fire(low_balance_event(self.switch, low))

    def _on_event(self, ev: Any) -> None:
        # O(1) per event: a call is an inbound leg or an originated leg with no A-leg.
        name = ev.name
        if name == "CHANNEL_CREATE":
            delta = 1
        elif name == "CHANNEL_DESTROY":
            delta = -1
        else:
            return
        self._channels += delta
        self.metrics.active_channels.set(self._channels)
        uuid = ev.channel_uuid
        if delta < 0:
            # a call counted at its creation is uncounted at its end, whatever the leg has
            # become meanwhile (a leg resumed after a crash is created unbridged — a call
            # by the rule below — and bridged before it ends)
            if uuid in self._call_uuids:
                self._call_uuids.discard(uuid)
                self._calls -= 1
                self.metrics.active_calls.set(self._calls)
            return
        ch = self.switch.channel(uuid) if self.switch is not None else None
        if ch is not None and (ch.direction == "inbound" or ch.other_leg is None):
            self._call_uuids.add(uuid)
            self._calls += 1
            self.metrics.active_calls.set(self._calls)

    def _rtp_metrics(self, s: Any) -> None:
        ep = s.media
        if ep is None:
            return
        self.metrics.rtp_packets.labels(direction="rx").inc(getattr(ep, "packets_received", 0))
        self.metrics.rtp_packets.labels(direction="tx").inc(ep.writer.packets_sent)
        stats = getattr(ep, "stats", None)
        lost = getattr(stats, "cumulative_lost", None) if stats is not None else None
        if isinstance(lost, int) and lost > 0:
            self.metrics.rtp_lost_packets.inc(lost)
        failures = getattr(ep, "srtp_failures", 0)
        if failures:
            self.metrics.srtp_failures.inc(failures)

    @property
    def sip_port(self) -> int:
        assert self.ua is not None
        return self.ua.udp_port

    def _tls_files(self) -> TlsFiles:
        m = self.cfg.media
        return TlsFiles(
            m.tls_cert, m.tls_key, m.tls_ca, verify_client=m.tls_verify_client, where="media"
        )

    def reload(self) -> None:
        if self.ua is not None and self.ua.endpoint is not None:
            try:  # new handshakes get the new certificate; connections up keep theirs
                self.ua.configure_tls(self._tls_files())
            except TlsConfigError as exc:
                log.error("%s: TLS reload failed, keeping the old certificate: %s", self.name, exc)
        if self.switch is not None:
            try:
                self.switch.reload()
                log.info("%s: dialplan reloaded", self.name)
            except DialplanError as exc:
                log.error("%s: dialplan reload failed, keeping the old one: %s", self.name, exc)

    def _install_overload_guard(self, ua: UserAgent) -> None:
        """[limits] overload guards: new calls shed while the node is behind
        (media/overload.py). A reaper admits nothing anyway."""
        from switchboard.net.queue_probe import ReceiveQueueProbe

        lim = self.cfg.limits
        guard = OverloadGuard(
            max_delay=lim.overload_delay,
            min_idle_cpu=lim.min_idle_cpu,
            retry_after=lim.overload_retry_after,
        )
        if self.reap or not guard.enabled:
            return
        monitor = self.loop_lag
        probe = None
        if guard.max_delay > 0 and ua.endpoint is not None and ua.endpoint.udp:
            probe = ReceiveQueueProbe(ua.endpoint.udp[0])
            if probe.start():
                self._queue_probe = probe
            else:
                probe = None

        # how far behind now (not the loop's peak of the last second, which kept a stall
        # that was over in view), confirmed by readings in a row: a stall leaves one
        if probe is not None:
            probe.on_reading = guard.reading
        monitor.on_tick = lambda late: guard.reading(late, 1)

        def overload() -> ShedReason | None:
            behind = monitor.current()
            if probe is not None:
                behind = max(behind, probe.delay())
            return guard.check(delay=behind, idle_cpu=self._idle_cpu)

        ua.overload = overload
        ua.overload_retry_after = guard.retry_after
        self.overload_guard = guard
        if guard.min_idle_cpu > 0:
            self._sample_cpu()

    def _sample_cpu(self) -> None:
        """The machine's idle CPU over the last second, from /proc/stat (a procfs read:
        microseconds, never blocks); unknown where /proc/stat is missing."""
        try:
            with open("/proc/stat") as f:
                reading = parse_proc_stat(f.read(4096))
        except OSError:
            reading = None
        if reading is not None and self._cpu_reading is not None:
            self._idle_cpu = idle_percent(self._cpu_reading, reading)
        self._cpu_reading = reading
        self._cpu_timer = asyncio.get_running_loop().call_later(1.0, self._sample_cpu)

    async def stop(self) -> None:
        if self._cpu_timer is not None:
            self._cpu_timer.cancel()
            self._cpu_timer = None
        if self._queue_probe is not None:
            self._queue_probe.stop()
        if self.loop_lag is not None:
            self.loop_lag.stop()
        if self.switch is not None:
            await self.switch.stop()
        if self.intercept is not None:  # recordings of the calls just hung up: finished
            await self.intercept.close()
            await self.intercept.targets.close()
        if self.journal is not None:
            self.journal.close()
        if self._journal_lock >= 0:  # after the last record: a node waiting may read now
            os.close(self._journal_lock)
            self._journal_lock = -1
        if self.esl is not None:
            await self.esl.close()
        if self.ua is not None:
            await self.ua.close()
        if self.admin_server is not None:
            self.admin_server.close()
            with contextlib.suppress(Exception):
                await self.admin_server.wait_closed()
        if self._own_sink is not None:
            await self._own_sink.close()
        if self.call_credit is not None:
            await self.call_credit.close()  # settlements of the calls just hung up
        if self.billing is not None:
            await self.billing.close()


# descriptors besides the RTP range's sockets: SIP, ESL and admin listeners and their
# clients, database connections, log and journal files
OTHER_DESCRIPTORS = 512


async def _serve(cfg: Config, name: str) -> int:
    node = MediaNode(cfg, name)
    # One socket per RTP port at most: the limit and the descriptor table sized for it
    # now, not grown under the first calls (net/descriptors.py).
    start, end = node.rtp_range
    descriptors.reserve(end - start + 1 + OTHER_DESCRIPTORS)
    # Long-lived startup objects leave the collector's generations, and full collections
    # run only while the node is idle (or hourly): no multi-100 ms gen-2 pauses stalling
    # call setup and the media tick under load (media/collector.py). The start-up heap's
    # garbage is collected before the node listens (scanning it took 100-500 ms on a busy
    # machine: after start() that was a stall of a node already taking calls); freezing
    # afterwards is O(1), and what start() built lives as long as the node.
    gc.collect()
    try:
        await node.start()
    except NodeStartError as exc:
        log.error("%s", exc)
        return ExitCode.START_FAILED
    gc.freeze()
    notify_ready()  # systemd's Type=notify: started (TimeoutStartSec= bounds a hung start)
    switch = node.switch
    ua = node.ua
    policy = CollectorPolicy(
        lambda: switch.active_calls if switch is not None else 0,
        before_idle=[
            *([ua.ended.expire] if ua is not None else []),
            # the journal's end records kept for a rewrite: the load's last 120 s of CDR lines
            *([node.journal.forget_ends] if node.journal is not None else []),
        ],
        transactions=(lambda: len(ua.layer)) if ua is not None else (lambda: 0),
    )
    policy.start()
    stop = asyncio.Event()
    # first SIGTERM/SIGINT: hang up every call and stop; a second one exits at once
    Signals(stop=stop.set, reload=node.reload).install()
    await stop.wait()
    policy.stop()
    await node.stop()
    return ExitCode.OK


class ReaperDismissed(Exception):
    """The node came back before its reaper was told to go: nothing to do."""


REAP_WAIT = 10.0  # seconds a reaper waits for the answers to its BYEs (retransmitted meanwhile)


async def _reap(cfg: Config, name: str, *, standby: bool = False) -> int:
    """End the journaled calls of node ``name``, which did not come back: BYE to every far
    end, one CDR per leg, end records in its journal (docs/media.md "Crash recovery").
    Exit 0 also when the node turns out to be running (its journal is locked): its calls
    are its own then."""
    from switchboard.media.journal import JournalBusy
    from switchboard.sip.transaction import State

    async def go() -> bool:
        """``standby``: everything before the journal is ready (configuration, database
        pool), so the far ends get their BYE within a second of the cue — one line on
        stdin; end of input dismisses the reaper."""
        print("reaper ready", flush=True)
        return bool(await asyncio.to_thread(sys.stdin.readline))

    node = MediaNode(cfg, name, reap=True, go=go if standby else None)
    try:
        await node.start()
    except ReaperDismissed:
        await node.stop()
        return ExitCode.OK
    except JournalBusy:
        await node.stop()
        log.warning("%s is running (its journal is locked): nothing to reap", name)
        return ExitCode.OK
    except NodeStartError as exc:
        log.error("%s reaper: %s", name, exc)
        return ExitCode.START_FAILED
    ua, sw = node.ua, node.switch
    assert ua is not None and sw is not None

    def waiting() -> int:  # BYEs not answered yet (Timer E retransmits them meanwhile)
        return sum(
            1
            for key, t in list(ua.layer.clients.items())
            if key[1] == "BYE" and t.state in (State.TRYING, State.PROCEEDING)
        )

    deadline = time.monotonic() + REAP_WAIT
    while (sw.active_calls or waiting()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # another process's answers: nothing of ours to await
    unanswered = waiting()
    await node.stop()
    log.warning("%s reaped: %d call leg(s) ended, %d BYE(s) unanswered", name,
                node.recovered[1], unanswered)  # fmt: skip
    return ExitCode.OK


def reap(cfg: Config, name: str, *, standby: bool = False) -> int:
    """``switchboard media --reap``: :func:`_reap` in its own event loop."""
    return run_service(f"{name}-reaper", _reap(cfg, name, standby=standby))


def _timing(stamps: list[tuple[str, float]], bridges: int) -> str:
    """``go→start 12 ms, setup 30 ms, ...`` — each step of a restart and what it took;
    ``go`` is when a warm spare was told to take over (``SWITCHBOARD_GO_AT``, wall clock)."""
    parts = []
    go_at = os.environ.get("SWITCHBOARD_GO_AT", "")
    if go_at:
        with contextlib.suppress(ValueError):
            # the wall clock for the one step across processes; monotonic after that
            ahead = time.monotonic() - stamps[0][1]
            parts.append(f"go→start {(time.time() - ahead - float(go_at)) * 1000:.0f} ms")
    for (_, before), (name, at) in itertools.pairwise(stamps):
        parts.append(f"{name} {(at - before) * 1000:.0f} ms")
    parts.append(f"total {(stamps[-1][1] - stamps[0][1]) * 1000:.0f} ms ({bridges} call(s))")
    if go_at:
        parts.append(f"go at {float(go_at):.3f}")
    return ", ".join(parts)


def preload() -> None:
    """Import what :func:`run` imports on the way (a warm spare does this while it waits:
    a restart then costs the node's own start, not Python's — seconds under load)."""
    import importlib

    for module in (
        "uvloop",
        "switchboard.billing.service",
        "switchboard.media.credit",
        "switchboard.media.event_socket",
        "switchboard.media.intercept",
        "switchboard.media.journal",
        "switchboard.media.portability",
        "switchboard.media.recovery",
        "switchboard.net.queue_probe",
        "switchboard.observability.loop_lag",
        "switchboard.observability.metrics",
        # the configuration's validation imports these (trunks, STIR certificates:
        # cryptography): 180 ms of a cold first load, 0.4 ms warm — paid by every
        # restart's "go" until they were preloaded (bench/chaos: go→start 142-401 ms)
        "switchboard.router.stir",
        "switchboard.router.trunks",
    ):
        with contextlib.suppress(ImportError):  # uvloop is optional
            importlib.import_module(module)
    # the imports' heap, collected and frozen now: the node's own collection at start
    # (_serve) then scans only what was made since — less time between "go" and serving
    gc.collect()
    gc.freeze()


def run(cfg: Config, name: str) -> int:
    """Run a media node until SIGTERM; returns the exit code (0, or 3 on failed start)."""
    return run_service(name, _serve(cfg, name))


def router_addresses(cfg: Config) -> list[str]:
    """The IP addresses of the platform's router (``[router] listen``, wildcards left out):
    a node always trusts its router, whatever ``[media] trusted`` lists (docs/security.md,
    "Media nodes accept SIP only from trusted networks")."""
    import ipaddress

    out = []
    for entry in cfg.router.listen:
        host = entry.partition(":")[2].rpartition(":")[0].strip("[]")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            continue  # a host name: its addresses belong in [media] trusted
        if not ip.is_unspecified:
            out.append(str(ip))
    return out


def _ended_billsecs(state: Any) -> dict[str, int]:
    """Call id → billsec of the credit-controlled (inbound, with an account) legs whose end
    the journal holds, from their journaled CDRs."""
    from switchboard.billing.cdr import Cdr

    out: dict[str, int] = {}
    for _uuid, (_t, cdr_json) in state.ends.items():
        try:
            cdr = Cdr.from_json(cdr_json)
        except ValueError:  # restore() already said so
            continue
        if cdr.direction == "inbound" and cdr.account:
            out[cdr.call_id] = cdr.billsec
    return out
