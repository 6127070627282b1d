"""``switchboard up``: the whole platform on one machine, each service its own OS process.

A router, N media nodes and an embedded PostgreSQL, every one a separate process with its
own event loop (docs/architecture.md, "Processes"). This module is their supervisor, in
the manner of systemd/runit on one box and of uvicorn's lifecycle:

* **plan** — from the one typed config, decide which processes to run and the addresses
  each will bind (pure: ``plan()``);
* **preflight** — every address is checked before anything starts: a port already in use
  is a clear message and exit 3, not a half-started platform;
* **start** — database first, then media nodes, then the router (so its first probes find
  the nodes up); each child in its own process group, told by the kernel to exit if the
  supervisor dies (``PR_SET_PDEATHSIG``); ready when its admin address accepts;
* **supervise** — a child that exits unexpectedly is restarted with exponential backoff
  (1 s → 30 s; the embedded PostgreSQL at once, then 1 s → 30 s; a media node at once
  whenever it had been ready for 2 s — its calls wait in its journal), its death and restart
  logged and counted (``switchboard_platform_restarts_total`` on the supervisor's own
  ``/metrics`` at ``[platform] admin``); the router sees a restarted media node come back
  through OPTIONS probing. A media node with ``[media] recovery`` has a **warm spare**: a
  second process started with ``--standby`` that has imported everything and waits on
  its stdin; when the node dies the spare is told to go (one line: the environment read
  from ``env_files`` now) and binds the dead node's addresses — a restart then costs the
  journal's replay, not Python's start-up (under load, seconds) — and a new spare is
  started once it is ready. A media node not ready again ``[media] recovery_timeout``
  after it died is *reaped*: what is trying to start is killed, its reaper
  (``switchboard media --reap``, started halfway there and waiting) ends the calls of its
  journal with BYEs and CDRs, then the node is started again. The database child
  watches the postmaster itself (:mod:`switchboard.billing.embedded`) and exits when it
  dies, so a ``kill -9`` of PostgreSQL is a child death like any other;
* **reload** — SIGHUP is passed to the router and media nodes (config, dispatcher list,
  dialplan), so ``kill -HUP`` works on the platform as on each service;
* **stop** — the first SIGINT/SIGTERM stops children in reverse order: SIGTERM to each
  process group, SIGKILL to what is left after ``stop_timeout``; a second signal kills at
  once. Nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchboard.config import Config
from switchboard.lifecycle import ExitCode, Signals, die_with_parent, run_service
from switchboard.observability.metrics import PlatformMetrics

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0  # SIGTERM → SIGKILL bound per process group, seconds
READY_TIMEOUT = 30.0  # a service that does not accept on its admin address by then failed
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0  # a child up this long resets its backoff
# A media node that had become ready and ran this long is restarted at once however often
# it is killed (its calls wait in its journal); one that dies before it is ready (a crash
# at start) backs off as usual.
NODE_STABLE_AFTER = 2.0
REAP_TIMEOUT = 60.0  # a reaper still running after this is killed (it waits 10 s for answers)
OUTPUT_TAIL = 40  # lines of a child's output kept for the failure message


class StartError(Exception):
    """The platform could not start; the message says which service and why (exit 3)."""


@dataclass(frozen=True, slots=True)
class Listen:
    """An address a service binds; checked free before start."""

    proto: str  # "udp" or "tcp"
    host: str
    port: int
    role: str  # "SIP", "admin", "ESL", ...

    def __str__(self) -> str:
        return f"{self.proto}:{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One process of the platform."""

    name: str
    argv: tuple[str, ...]
    listens: tuple[Listen, ...] = ()
    ready: tuple[str, int] | None = None  # TCP address that accepts once the service is up
    ready_file: Path | None = None  # or: a file the service writes once it is up
    env: Mapping[str, str] = field(default_factory=dict)
    env_files: Mapping[str, Path] = field(default_factory=dict)  # env var ← file content at spawn
    summary: tuple[tuple[str, str], ...] = ()  # (what, where) lines for the address table
    stage: int = 0  # start order: every service of a stage starts at once, stages in turn
    reloads: bool = False  # handles SIGHUP as "reload" (forwarded by the supervisor)
    first_backoff: float = BACKOFF_FIRST  # delay before restarting it after a stable run
    stable_after: float = STABLE_AFTER  # a run this long, once ready, resets the backoff
    spare: bool = False  # keep a warm spare (argv + --standby) to replace it at once
    # > 0: a media node not ready again this many seconds after it died is reaped — what
    # is trying to start is killed and ``argv + --reap`` ends the calls of its journal
    reap_after: float = 0.0


def split_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _cli(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "switchboard.cli", *args)


def _sip_listens(items: Sequence[str]) -> tuple[Listen, ...]:
    out = []
    for item in items:
        proto, _, addr = item.partition(":")
        host, port = split_address(addr)
        out.append(Listen(proto, host, port, "SIP"))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class MediaNodeAddresses:
    """Where media node ``index`` (1-based) listens.

    By default SIP 508N, ESL 802N, admin 808N, RTP 16384 +
    (N−1)·8192). When the config sets node 1's addresses (``[media] listen``/``admin``/
    ``rtp_port_start``, ``[esl] listen``), node N takes each of them plus N−1 (RTP: plus
    (N−1) ranges), so one platform config places every node.
    """

    name: str
    sip: str
    esl: str
    admin: str
    rtp: tuple[int, int]

    @classmethod
    def default(cls, index: int, host: str = "127.0.0.1") -> MediaNodeAddresses:
        return cls.for_node(index, sip=f"{host}:5081", esl=f"{host}:8021", admin=f"{host}:8081")

    @classmethod
    def for_node(
        cls, index: int, *, sip: str, esl: str, admin: str, rtp: tuple[int, int] = (16384, 24575)
    ) -> MediaNodeAddresses:
        def shift(address: str) -> str:
            host, port = split_address(address)
            return f"{host}:{port + index - 1}"

        span = rtp[1] - rtp[0] + 1
        first = rtp[0] + (index - 1) * span
        return cls(
            name=f"media-{index}",
            sip=shift(sip),
            esl=shift(esl),
            admin=shift(admin),
            rtp=(first, first + span - 1),
        )

    @classmethod
    def from_config(cls, cfg: Config, index: int) -> MediaNodeAddresses:
        media = getattr(cfg, "media", None)
        esl = getattr(cfg, "esl", None)
        sip = "127.0.0.1:5081"
        if media is not None and media.listen:
            sip = media.listen[0].partition(":")[2]
        rtp = (16384, 24575)
        if media is not None and media.rtp_port_start:
            end = media.rtp_port_end or media.rtp_port_start + 8191
            rtp = (media.rtp_port_start, end)
        return cls.for_node(
            index,
            sip=sip,
            esl=(esl.listen if esl is not None and esl.listen else "127.0.0.1:8021"),
            admin=(media.admin if media is not None and media.admin else "127.0.0.1:8081"),
            rtp=rtp,
        )

    def env(self) -> dict[str, str]:
        """Per-process overrides that put this node on its addresses (config.py env rules)."""
        return {
            "SWITCHBOARD_MEDIA__LISTEN": _json([f"udp:{self.sip}", f"tcp:{self.sip}"]),
            "SWITCHBOARD_MEDIA__ADMIN": _json(self.admin),
            "SWITCHBOARD_MEDIA__RTP_PORT_START": str(self.rtp[0]),
            "SWITCHBOARD_MEDIA__RTP_PORT_END": str(self.rtp[1]),
            "SWITCHBOARD_ESL__LISTEN": _json(self.esl),
        }


def plan(
    cfg: Config,
    *,
    config_path: Path | None,
    media_nodes: int,
    state_dir: Path,
    demo: bool = False,
) -> list[ServiceSpec]:
    """The processes ``switchboard up`` runs for this config, in start order (pure)."""
    base = ("--config", str(config_path)) if config_path else ()
    env: dict[str, str] = {"SWITCHBOARD_PLATFORM__STATE_DIR": _json(str(state_dir))}
    env_files: dict[str, Path] = {}
    specs: list[ServiceSpec] = []

    if not cfg.database.url:
        uri_file = state_dir / "postgres.uri"
        env_files["SWITCHBOARD_DATABASE__URL"] = uri_file
        specs.append(
            ServiceSpec(
                name="database",
                argv=(sys.executable, "-m", "switchboard.billing.embedded", str(state_dir)),
                ready_file=uri_file,
                env=env,
                stage=0,
                # calls keep flowing without it, but CDRs spool and credit control refuses
                # new prepaid calls: no backoff before the first restart
                first_backoff=0.0,
                summary=(("PostgreSQL", f"embedded, data in {state_dir / 'pgdata'}"),),
            )
        )

    nodes = [MediaNodeAddresses.from_config(cfg, i) for i in range(1, media_nodes + 1)]
    for node in nodes:
        host, port = split_address(node.sip)
        ehost, eport = split_address(node.esl)
        ahost, aport = split_address(node.admin)
        specs.append(
            ServiceSpec(
                name=node.name,
                argv=_cli("media", *base, "--name", node.name),
                listens=(
                    Listen("udp", host, port, "SIP"),
                    Listen("tcp", host, port, "SIP"),
                    Listen("tcp", ehost, eport, "ESL"),
                    Listen("tcp", ahost, aport, "admin"),
                ),
                ready=(ahost, aport),
                stage=1,
                reloads=True,
                # its calls resume from its journal on restart: every second counts
                first_backoff=0.0,
                stable_after=NODE_STABLE_AFTER,
                spare=cfg.media.recovery,
                reap_after=cfg.media.recovery_timeout if cfg.media.recovery else 0.0,
                env={**env, **node.env()},
                env_files=env_files,
                summary=(
                    ("SIP", f"udp+tcp {node.sip}"),
                    ("Event Socket", f"{node.esl} (password ClueCon)"),
                    ("admin + /metrics", f"http://{node.admin}/metrics"),
                    ("RTP", f"{node.rtp[0]}-{node.rtp[1]}"),
                ),
            )
        )

    router_env = dict(env)
    if not cfg.dispatcher.destinations and not cfg.dispatcher.list_file:
        uris = [f"sip:{n.sip}" for n in nodes]
        router_env["SWITCHBOARD_DISPATCHER__DESTINATIONS"] = _json(uris)
    if demo and "127.0.0.1" not in cfg.pike.allow:
        # the demo's calls all come from loopback, like one trusted carrier
        router_env["SWITCHBOARD_PIKE__ALLOW"] = _json([*cfg.pike.allow, "127.0.0.1"])
    if not cfg.status.metrics_urls:
        # the media nodes, and this supervisor itself (its row on the status page)
        own = [f"http://{cfg.platform.admin}/metrics"] if cfg.platform.admin else []
        router_env["SWITCHBOARD_STATUS__METRICS_URLS"] = _json(
            [*(f"http://{n.admin}/metrics" for n in nodes), *own]
        )
    ahost, aport = split_address(cfg.router.admin)
    sip = ", ".join(cfg.router.listen)
    specs.append(
        ServiceSpec(
            name="router",
            argv=_cli("router", *base),
            listens=(*_sip_listens(cfg.router.listen), Listen("tcp", ahost, aport, "admin")),
            ready=(ahost, aport),
            stage=2,
            reloads=True,
            env=router_env,
            env_files=env_files,
            summary=(
                ("SIP (carriers send here)", sip),
                ("status page", f"http://{cfg.router.admin}/status"),
                ("admin API + /metrics", f"http://{cfg.router.admin}/docs"),
            ),
        )
    )
    return specs


def _json(value: object) -> str:
    """An environment override value (config.py parses SWITCHBOARD_* values as JSON)."""
    return json.dumps(value)


def check_addresses(specs: Sequence[ServiceSpec]) -> None:
    """Raise StartError naming every planned address that is already taken.

    Each address is bound with the socket options its service will use: TCP listeners
    (asyncio's ``start_server``, the router's admin socket) set ``SO_REUSEADDR``, which
    lets a port be bound while connections of a previous run sit in TIME-WAIT (60 s on
    Linux after the server closed them) but still fails on a live listener. Without it a
    restart right after a stop was refused although every service would have bound.
    UDP sockets are bound plainly, as the services bind them: there ``SO_REUSEADDR``
    would let two sockets share a port and hide a real conflict.
    """
    problems = []
    seen: dict[tuple[str, str, int], str] = {}
    for spec in specs:
        for listen in spec.listens:
            key = (listen.proto, listen.host, listen.port)
            if key in seen:
                problems.append(f"{spec.name} {listen.role} {listen} is also used by {seen[key]}")
                continue
            seen[key] = spec.name
            kind = socket.SOCK_DGRAM if listen.proto == "udp" else socket.SOCK_STREAM
            family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
            with socket.socket(family, kind) as s:
                if kind == socket.SOCK_STREAM:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((listen.host, listen.port))
                except OSError as exc:
                    why = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                    problems.append(f"{spec.name} {listen.role} address {listen}: {why}")
    if problems:
        raise StartError("cannot start:\n  " + "\n  ".join(problems))


@dataclass
class _Child:
    spec: ServiceSpec
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = -1.0  # < 0: the spec's first_backoff (set in __post_init__)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_TAIL))
    pump: asyncio.Task[None] | None = None
    stopped: asyncio.subprocess.Process | None = None  # the process already stopped and logged
    was_ready: bool = False  # the current process became ready
    spare: asyncio.subprocess.Process | None = None  # warm spare waiting on its stdin
    spare_pump: asyncio.Task[None] | None = None
    reaping: asyncio.Task[None] | None = None  # armed at the death of a ready node
    may_spawn: asyncio.Event = field(default_factory=asyncio.Event)  # cleared while reaping

    def __post_init__(self) -> None:
        self.may_spawn.set()
        if self.backoff < 0:
            self.backoff = self.spec.first_backoff


async def accepts(host: str, port: int, local: tuple[str, int] | None = None) -> bool:
    """Something listens on ``host``:``port``. A connection to itself does not count: with
    nothing listening on a port of the ephemeral range, the kernel can pick that very port
    as the probe's source and complete a TCP simultaneous open with itself (RFC 9293
    §3.5) — the service would be called ready before it had even bound its port."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=local), 1.0
        )
    except (OSError, TimeoutError):
        return False
    itself = writer.get_extra_info("sockname") == writer.get_extra_info("peername")
    if itself:
        # closed with a reset, not a FIN: a FIN would leave the port in TIME-WAIT for a
        # minute, and the service could not bind it
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return not itself


class Supervisor:
    """Starts, watches, restarts and stops the platform's processes."""

    def __init__(
        self,
        specs: Sequence[ServiceSpec],
        *,
        stop_timeout: float = STOP_TIMEOUT,
        ready_timeout: float = READY_TIMEOUT,
        output: Callable[[str, str], None] | None = None,
        metrics: PlatformMetrics | None = None,
    ) -> None:
        self.children = [_Child(s) for s in specs]
        self.metrics = metrics
        self.stop_timeout = stop_timeout
        self.ready_timeout = ready_timeout
        self.output = output or (lambda name, line: print(f"[{name}] {line}", file=sys.stderr))
        self._stopping = asyncio.Event()  # set when stopping for any reason
        self.signalled = asyncio.Event()  # set by request_stop (Ctrl-C, SIGTERM)
        self._force = False
        self.ready = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the children stage by stage — those of one stage at once (media nodes do
        not wait for each other) — and wait until each is ready; StartError otherwise."""
        stages = sorted({c.spec.stage for c in self.children})
        for stage in stages:
            group = [c for c in self.children if c.spec.stage == stage]
            for child in group:
                await self._spawn(child)
            results = await asyncio.gather(
                *(self._wait_ready(c) for c in group), return_exceptions=True
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                await self.stop()
                if all(isinstance(e, StartError) for e in errors):
                    raise StartError("\n".join(str(e) for e in errors))
                raise next(e for e in errors if not isinstance(e, StartError))
        self.ready.set()
        for child in self.children:  # after the start: spares do not slow it down
            if child.spec.spare:
                await self._spawn_spare(child)

    async def run(self) -> int:
        """Supervise until ``request_stop()``; stop everything; return the exit code (0)."""
        watchers = [asyncio.create_task(self._watch(c)) for c in self.children]
        await self._stopping.wait()
        for w in watchers:
            w.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await self.stop()
        return 0

    def reload(self) -> None:
        """SIGHUP to every running child: the router reloads its config and dispatcher
        list, media nodes their dialplan (each service's own SIGHUP handling)."""
        for child in self.children:
            if child.spec.reloads:
                self._signal(child, signal.SIGHUP)
        log.info(
            "SIGHUP passed to %s", ", ".join(c.spec.name for c in self.children if c.spec.reloads)
        )

    def request_stop(self) -> None:
        """First call: graceful stop. Second call: kill what is left now."""
        if self.signalled.is_set():
            self._force = True
            for child in self.children:
                self._signal(child, signal.SIGKILL)
        self.signalled.set()
        self._stopping.set()

    async def stop(self) -> None:
        """Stop children in reverse start order: SIGTERM, then SIGKILL after the bound."""
        self._stopping.set()
        for child in self.children:  # a reaper cut short: the next start ends those calls
            if child.reaping is not None:
                child.reaping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await child.reaping
        for child in reversed(self.children):
            await self._stop_child(child)

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _env_files(spec: ServiceSpec) -> dict[str, str]:
        out = {}
        for var, path in spec.env_files.items():
            with contextlib.suppress(FileNotFoundError):
                out[var] = path.read_text().strip()
        return out

    async def _exec(self, spec: ServiceSpec, argv: Sequence[str], *, standby: bool) -> Any:
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1", **self._env_files(spec)}
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if standby else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,  # own process group: signals reach its whole tree
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )

    async def _spawn(self, child: _Child) -> None:
        spec = child.spec
        if spec.ready_file is not None:
            with contextlib.suppress(FileNotFoundError):
                spec.ready_file.unlink()
        child.was_ready = False
        if await self._promote_spare(child):
            return
        child.proc = await self._exec(spec, spec.argv, standby=False)
        child.started_at = time.monotonic()
        child.pump = asyncio.create_task(self._pump(child, child.proc))
        log.info("started %s (pid %d)", spec.name, child.proc.pid)

    async def _spawn_spare(self, child: _Child) -> None:
        """Start ``child``'s warm spare: imported, waiting for its go on stdin."""
        if self._stopping.is_set() or (child.spare and child.spare.returncode is None):
            return
        child.spare = await self._exec(child.spec, (*child.spec.argv, "--standby"), standby=True)
        child.spare_pump = asyncio.create_task(self._pump(child, child.spare))
        log.info("warm spare for %s waiting (pid %d)", child.spec.name, child.spare.pid)

    async def _promote_spare(self, child: _Child) -> bool:
        """Let the warm spare take over (False: there is none, or it died)."""
        spare, child.spare = child.spare, None
        if spare is None or spare.returncode is not None or spare.stdin is None:
            return False
        # the environment files are read now: the database URL may have changed since
        go = json.dumps(self._env_files(child.spec)) + "\n"
        try:
            spare.stdin.write(go.encode())
            await spare.stdin.drain()
            spare.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            return False
        child.proc, child.pump = spare, child.spare_pump
        child.started_at = time.monotonic()
        log.info("started %s (pid %d)", child.spec.name, spare.pid)
        log.info("%s: its warm spare took over", child.spec.name)
        return True

    async def _pump(self, child: _Child, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            text = line.decode("utf-8", "replace").rstrip()
            child.tail.append(text)
            self.output(child.spec.name, text)

    async def _wait_ready(self, child: _Child) -> None:
        spec, proc = child.spec, child.proc
        assert proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                if child.pump:
                    await asyncio.wait([child.pump], timeout=2)
                tail = "\n    ".join(list(child.tail)[-15:]) or "(no output)"
                raise StartError(
                    f"{spec.name} exited with code {proc.returncode} while starting:\n    {tail}"
                )
            if await self._is_ready(spec):
                log.info("%s ready", spec.name)
                child.was_ready = True
                return
            await asyncio.sleep(0.1)  # polling an external process's port: no event to await
        raise StartError(f"{spec.name} did not become ready within {self.ready_timeout:.0f} s")

    async def _is_ready(self, spec: ServiceSpec) -> bool:
        if spec.ready_file is not None and not spec.ready_file.exists():
            return False
        return spec.ready is None or await accepts(*spec.ready)

    async def _watch(self, child: _Child) -> None:
        """Restart ``child`` whenever it exits while the platform is running."""
        while not self._stopping.is_set():
            assert child.proc is not None
            code = await child.proc.wait()
            died_at = time.monotonic()
            if self._stopping.is_set():
                return
            uptime = time.monotonic() - child.started_at
            if uptime > STABLE_AFTER or (child.was_ready and uptime >= child.spec.stable_after):
                child.backoff = child.spec.first_backoff
            if self.metrics is not None:
                self.metrics.up.labels(service=child.spec.name).set(0)
            if child.spec.reap_after > 0 and child.was_ready and child.reaping is None:
                child.reaping = asyncio.create_task(self._reap_unless_back(child, died_at))
            log.warning(
                "%s exited with code %s after %.1f s; restarting %s",
                child.spec.name,
                code,
                uptime,
                f"in {child.backoff:.0f} s" if child.backoff else "now",
            )
            if child.backoff:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), child.backoff)
            if self._stopping.is_set():
                return
            child.backoff = min(max(child.backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
            await child.may_spawn.wait()  # not while its reaper holds its journal
            if self._stopping.is_set():
                return
            child.restarts += 1
            if self.metrics is not None:
                self.metrics.restarts.labels(service=child.spec.name).inc()
            await self._spawn(child)
            try:
                await self._wait_ready(child)
            except StartError as exc:
                log.error("restart of %s failed: %s", child.spec.name, exc)
            else:
                log.warning(
                    "%s restarted (restart %d, %.1f s after it exited)",
                    child.spec.name,
                    child.restarts,
                    time.monotonic() - died_at,
                )
                if self.metrics is not None:
                    self.metrics.up.labels(service=child.spec.name).set(1)
                if child.spec.spare:
                    await self._spawn_spare(child)

    async def _reap_unless_back(self, child: _Child, died_at: float) -> None:
        """A media node died: unless it is ready again ``reap_after`` s later, kill what is
        trying to start (a hung or crash-looping restart), end the calls of its journal
        with its reaper (``--reap``: BYE to both far ends, CDRs), then let it restart. The
        reaper is started halfway to that deadline and waits on its stdin with its
        configuration loaded and its database connected, so that its start-up is paid
        before the deadline: the far ends get their BYE within about a second of it."""
        spec = child.spec
        reaper = None

        def back() -> bool:
            return child.was_ready and child.proc is not None and child.proc.returncode is None

        async def wait_until(deadline: float) -> bool:
            """False when the node is back (or we stop) before ``deadline``."""
            while time.monotonic() < deadline and not self._stopping.is_set():
                if back():
                    return False
                await asyncio.sleep(0.1)  # another process's readiness: polled, bounded
            return not back() and not self._stopping.is_set()

        try:
            # halfway: a node that restarts in its usual second never meets its reaper,
            # and no reaper competes with that restart for the CPU
            if not await wait_until(died_at + spec.reap_after / 2):
                return
            reaper = await self._exec(spec, (*spec.argv, "--reap", "--standby"), standby=True)
            pump = asyncio.create_task(self._pump(child, reaper))
            if not await wait_until(died_at + spec.reap_after) or reaper.stdin is None:
                return
            child.may_spawn.clear()
            proc = child.proc
            if proc is not None and proc.returncode is None:
                log.warning("%s not ready %.1f s after it died; killing pid %d",
                            spec.name, spec.reap_after, proc.pid)  # fmt: skip
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            log.warning("%s did not come back within recovery_timeout (%.1f s): its reaper "
                        "ends its calls (pid %d)", spec.name, spec.reap_after, reaper.pid)  # fmt: skip
            try:
                reaper.stdin.write((json.dumps(self._env_files(spec)) + "\n").encode())
                await reaper.stdin.drain()
                reaper.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                log.error("%s: its reaper died before it could start", spec.name)
                return
            try:
                code = await asyncio.wait_for(reaper.wait(), REAP_TIMEOUT)
            except TimeoutError:
                code = None
            log.warning("%s: reaper exited with code %s", spec.name, code)
            await asyncio.wait([pump], timeout=2)
        finally:
            if reaper is not None and reaper.returncode is None:
                # not needed (the node is back, or we stop), or over its time: it holds
                # nothing but, perhaps, the journal's lock — which dies with it
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(reaper.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await reaper.wait()
            child.may_spawn.set()
            child.reaping = None

    def _signal(self, child: _Child, sig: signal.Signals) -> None:
        if child.proc is None or child.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, sig)

    async def _stop_child(self, child: _Child) -> None:
        spare, child.spare = child.spare, None
        if spare is not None:  # waiting on its stdin, holding nothing: killed outright
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(spare.pid, signal.SIGKILL)
            await spare.wait()
            if child.spare_pump:
                await asyncio.wait([child.spare_pump], timeout=2)
        proc = child.proc
        if proc is None or child.stopped is proc:
            return
        if proc.returncode is None:
            self._signal(child, signal.SIGKILL if self._force else signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.stop_timeout)
            except TimeoutError:
                log.warning(
                    "%s ignored SIGTERM for %.0f s; killing it", child.spec.name, self.stop_timeout
                )
                self._signal(child, signal.SIGKILL)
                await proc.wait()
        # the process group may outlive its leader (helpers it forked): leave nothing behind
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if child.pump:
            await asyncio.wait([child.pump], timeout=2)
        child.stopped = proc
        log.info("%s stopped (exit code %s)", child.spec.name, proc.returncode)


def summary_rows(specs: Sequence[ServiceSpec]) -> list[tuple[str, str, str]]:
    """(service, what, address) rows of the printed address table."""
    return [(s.name, what, where) for s in specs for what, where in s.summary]


async def up(
    cfg: Config,
    *,
    config_path: Path | None,
    media_nodes: int,
    state_dir: Path,
    on_ready: Callable[[Supervisor, list[ServiceSpec]], None] | None = None,
    specs: list[ServiceSpec] | None = None,
    demo: bool = False,
) -> int:
    """Run the platform until SIGINT/SIGTERM; StartError if it cannot start."""
    state_dir.mkdir(parents=True, exist_ok=True)
    specs = (
        specs
        if specs is not None
        else plan(
            cfg,
            config_path=config_path,
            media_nodes=media_nodes,
            state_dir=state_dir.resolve(),
            demo=demo,
        )
    )
    admin = cfg.platform.admin
    own = (ServiceSpec("up", (), listens=(Listen("tcp", *split_address(admin), "admin"),)),)
    check_addresses([*specs, *(own if admin else ())])
    metrics = None
    server = None
    if admin:
        from switchboard.observability.metrics import new_registry, serve_metrics

        registry = new_registry("up")
        metrics = PlatformMetrics.create(registry, [s.name for s in specs])
        server = await serve_metrics(*split_address(admin), registry)
    sup = Supervisor(specs, metrics=metrics)
    signals = Signals(stop=sup.request_stop, force=sup.request_stop, reload=sup.reload)
    signals.install()
    try:
        start = asyncio.create_task(sup.start())
        stop_wait = asyncio.create_task(sup.signalled.wait())
        done, _ = await asyncio.wait({start, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if start not in done:  # Ctrl-C while starting
            start.cancel()
            with contextlib.suppress(asyncio.CancelledError, StartError):
                await start
            await sup.stop()
            return 130
        stop_wait.cancel()
        start.result()  # raises StartError
        if on_ready:
            on_ready(sup, specs)
        return await sup.run()
    finally:
        signals.remove()
        if server is not None:
            server.close()


def print_summary(specs: Sequence[ServiceSpec], state_dir: Path, admin: str = "") -> None:
    """The address table a newcomer reads first."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Switchboard is up", title_justify="left")
    table.add_column("service")
    table.add_column("what")
    table.add_column("address")
    last = ""
    for name, what, where in summary_rows(specs):
        table.add_row(name if name != last else "", what, where)
        last = name
    if admin:
        table.add_row("supervisor", "/metrics (restarts)", f"http://{admin}/metrics")
    console = Console()
    console.print(table)
    console.print(f"state directory: {state_dir}   ·   Ctrl-C stops everything")


def main(cfg: Config, *, config_path: Path | None, demo: bool = False) -> int:
    """``switchboard up``: exit 0 after a clean stop, 3 when the platform cannot start."""
    state_dir = Path(cfg.platform.state_dir).resolve()

    demo_task: list[asyncio.Task[Any]] = []

    def ready(sup: Supervisor, specs: list[ServiceSpec]) -> None:
        print_summary(specs, state_dir, cfg.platform.admin)
        if demo:
            if not any(s.name.startswith("media-") for s in specs) or not any(
                s.name == "router" for s in specs
            ):
                log.warning("--demo needs the router and media nodes, not in this build yet")
                return
            demo_task.append(asyncio.get_running_loop().create_task(_demo(cfg, state_dir)))

    try:
        return run_service(
            "up",
            up(
                cfg,
                config_path=config_path,
                media_nodes=cfg.platform.media_nodes,
                state_dir=state_dir,
                on_ready=ready,
                demo=demo,
            ),
        )
    except StartError as exc:
        print(f"switchboard up: {exc}", file=sys.stderr)
        return ExitCode.START_FAILED


async def _demo(cfg: Config, state_dir: Path) -> None:
    """Run the demo call mix against the running platform (errors are logged, not fatal)."""
    from switchboard.demo.calls import run_demo

    node = MediaNodeAddresses.from_config(cfg, 1)
    gateways = getattr(cfg, "gateways", {})
    gateway = gateways["carrier"].proxy if "carrier" in gateways else "127.0.0.1:5090"
    udp = [x.partition(":")[2] for x in cfg.router.listen if x.startswith("udp:")]
    router = (udp or [cfg.router.listen[0].partition(":")[2]])[0].replace("0.0.0.0", "127.0.0.1")
    uri_file = state_dir / "postgres.uri"
    database_url = cfg.database.url or (uri_file.read_text().strip() if uri_file.exists() else "")
    esl_password = getattr(getattr(cfg, "esl", None), "password", "ClueCon")
    media_urls = [
        f"http://{MediaNodeAddresses.from_config(cfg, i).admin}/metrics"
        for i in range(1, cfg.platform.media_nodes + 1)
    ]
    try:
        await run_demo(
            gateway=split_address(gateway),
            esl=split_address(node.esl),
            esl_password=esl_password,
            router=router,
            database_url=database_url,
            metrics_urls=media_urls,
        )
    except Exception:
        log.exception("the demo failed; the platform keeps running")
