"""STIR/SHAKEN at the router's edge: certificates fetched from ``x5u`` over HTTPS and
cached, new INVITEs held (at most ``[stir] fetch_wait``) while their certificate arrives,
the operator's policy, and the signer of calls leaving on trunks with ``stir_sign``
(docs/compliance.md "STIR/SHAKEN"). The checks themselves are pure
(:mod:`switchboard.router.stir`); this module does the IO around them and never blocks
the event loop: a fetch is a task, a held INVITE a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from cryptography import x509
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from switchboard.router import stir
from switchboard.router.stir import Credential, StirError, Verdict
from switchboard.sip import fastpath as wire

if TYPE_CHECKING:
    from switchboard.config import StirSection
    from switchboard.router.proxy import Proxy, Send
    from switchboard.router.trunks import TrunkState

log = logging.getLogger(__name__)

MAX_HELD = 10_000  # INVITEs waiting for certificates at once; beyond: not verified
HELD = object()  # check(): the INVITE is held, the gate delivers it later
_USE_IDENTITY = StirError("no_identity", 428, "Use Identity Header")
_UNAVAILABLE = StirError("certificate_unavailable", 436, "Bad Identity Info")
_PENDING = StirError("certificate_pending", 436, "Bad Identity Info")


class StirConfigError(ValueError):
    """A [stir] file cannot be used; the message names the key."""


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise StirConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None


def load_anchors(path: str) -> list[x509.Certificate]:
    certs = stir.load_certificates(_read(path, "stir.trust_anchors"))
    if not certs:
        raise StirConfigError(f"stir.trust_anchors: {path} holds no PEM certificate")
    return certs


class CertificateCache:
    """x5u → validated :class:`~switchboard.router.stir.Credential`, fetched once.

    A fetch is one HTTPS GET (TLS checked against ``https_ca`` or the system store, no
    redirects, at most ``max_bytes``, bounded by ``timeout``); concurrent calls naming the
    same URL share it. A certificate that validated (or did not: an unknown CA) is kept
    ``ttl`` seconds; an URL that could not be fetched ``failure_ttl`` seconds (as None),
    so a dead STI-CR costs each call nothing."""

    def __init__(
        self,
        anchors: list[x509.Certificate],
        *,
        https_ca: str = "",
        ttl: float = 3600,
        failure_ttl: float = 60,
        timeout: float = 5.0,
        max_bytes: int = 65536,
        size: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.anchors = anchors
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self.max_bytes = max_bytes
        self.size = size
        self.clock = clock
        self._entries: dict[str, tuple[float, Credential | None]] = {}
        self._fetching: dict[str, asyncio.Future[Credential | None]] = {}
        ctx = ssl.create_default_context(cafile=https_ca or None)
        self._client = httpx.AsyncClient(
            verify=ctx, timeout=timeout, follow_redirects=False, trust_env=False
        )
        self.stats: dict[str, int] = {"hit": 0, "fetched": 0, "failed": 0, "untrusted": 0}

    def lookup(self, x5u: str, now: float) -> tuple[bool, Credential | None]:
        """(cached?, credential) — a cached None means: could not be fetched lately."""
        entry = self._entries.get(x5u)
        if entry is None or entry[0] < now:
            return False, None
        self.stats["hit"] += 1
        return True, entry[1]

    def fetch(self, x5u: str) -> asyncio.Future[Credential | None]:
        fut = self._fetching.get(x5u)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._fetching[x5u] = fut
            asyncio.get_running_loop().create_task(self._fetch(x5u, fut))
        return fut

    async def _get(self, x5u: str) -> bytes:
        async with self._client.stream("GET", x5u) as r:
            if r.status_code != 200:
                raise OSError(f"HTTP {r.status_code}")
            body = bytearray()
            async for chunk in r.aiter_bytes():
                body += chunk
                if len(body) > self.max_bytes:
                    raise OSError(f"more than {self.max_bytes} bytes")
            return bytes(body)

    async def _fetch(self, x5u: str, fut: asyncio.Future[Credential | None]) -> None:
        cred: Credential | None
        try:
            body = await self._get(x5u)
        except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
            log.warning("STIR: certificate %s not fetched: %s", x5u, exc or type(exc).__name__)
            self.stats["failed"] += 1
            cred, expires = None, self.clock() + self.failure_ttl
        else:
            now = self.clock()
            cred = stir.validate_chain(body, self.anchors, now)
            if cred.error is not None:
                self.stats["untrusted"] += 1
                log.warning("STIR: certificate %s not trusted: %s", x5u, cred.error)
            else:
                self.stats["fetched"] += 1
            expires = now + self.ttl
        if len(self._entries) >= self.size:
            # Drop the entry closest to expiry (the cache stays bounded under x5u spray).
            del self._entries[min(self._entries, key=lambda k: self._entries[k][0])]
        self._entries[x5u] = (expires, cred)
        self._fetching.pop(x5u, None)
        if not fut.done():
            fut.set_result(cred)

    def __len__(self) -> int:
        return len(self._entries)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.aclose()


@dataclass
class _Held:
    data: bytes
    transport: str
    src: tuple[str, int]
    conn: Any
    pres: stir.Presented
    orig: str
    dest: str
    timer: asyncio.TimerHandle | None = None
    done: bool = False
    keys: list[tuple[bytes, bytes]] = field(default_factory=list)


def _header(m: wire.Message, names: tuple[bytes, ...]) -> bytes | None:
    for line in m.lines[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in names:
            return value.strip()
    return None


def _uri_user(value: bytes) -> str:
    for scheme in (b"sip:", b"sips:", b"tel:"):
        start = value.find(scheme)
        if start >= 0:
            rest = value[start + len(scheme) :]
            end = len(rest)
            for stop in (b"@", b">", b";" if scheme == b"tel:" else b"@"):
                i = rest.find(stop)
                if 0 <= i < end:
                    end = i
            return rest[:end].split(b";", 1)[0].decode("utf-8", "replace")
    return ""


class IdentityGate:
    """Verification of new INVITEs addressed to the router (calls coming in).

    ``check`` returns None (not ours: the proxy handles it unverified), a
    :class:`Verdict` (pass it with the message to the proxy), a list of Sends (the
    policy refused the call), or :data:`HELD` (the certificate is being fetched; the
    INVITE is delivered through ``deliver`` once it is there or ``fetch_wait`` passed).
    """

    def __init__(
        self,
        cfg: StirSection,
        cache: CertificateCache,
        proxy: Callable[[], Proxy],
        deliver: Callable[[bytes, str, tuple[str, int], Any, Verdict], None],
        send: Callable[[list[Send]], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.cache = cache
        self._proxy = proxy
        self.deliver = deliver
        self.send = send
        self.clock = clock
        self._held: dict[tuple[bytes, bytes], _Held] = {}
        self.verdicts: dict[tuple[str, str], int] = {}
        self.refused = 0

    # -- the decision -------------------------------------------------------------
    def check(self, data: bytes, transport: str, src: tuple[str, int], conn: Any) -> Any:
        try:
            m = wire.parse(data, stream=transport != "udp")
        except wire.BadMessage:
            return None  # the proxy answers it
        if m.method != b"INVITE" or m.to_tag() or m.routes:
            return None
        proxy = self._proxy()
        _, host, port, _ = wire.uri_target(m.ruri)
        if not proxy.is_local(host, port):
            return None  # passing through (calls we send out are signed, not verified)
        key = (m.call_id, m.cseq_num)
        if key in self._held:
            return HELD  # a retransmission of an INVITE already waiting: the first goes on
        value = _header(m, (b"identity", b"y"))
        if value is None:
            return self._decide(NOT_PRESENT, m, transport, src, conn)
        try:
            pres = stir.present(value.decode("utf-8", "replace"))
        except StirError as exc:
            return self._decide(Verdict(stir.FAILED, error=exc), m, transport, src, conn)
        if not pres.x5u.startswith("https://"):
            err = StirError("bad_x5u", 436, "Bad Identity Info", "x5u must be https")
            return self._decide(Verdict(stir.FAILED, error=err), m, transport, src, conn)
        pai = _header(m, (b"p-asserted-identity",))
        orig = _uri_user(pai) if pai else ""
        if not orig and m.from_ >= 0:
            orig = _uri_user(m.value(m.from_))
        dest = _uri_user(m.value(m.to)) if m.to >= 0 else ""
        now = self.clock()
        cached, cred = self.cache.lookup(pres.x5u, now)
        if cached:
            return self._decide(self._verify(pres, cred, orig, dest, now), m, transport, src, conn)
        if len(self._held) >= MAX_HELD or self.cfg.fetch_wait <= 0:
            self.cache.fetch(pres.x5u)  # for the next calls
            v = Verdict(stir.NO_VALIDATION, pres.passport.attest, pres.passport.origid, _PENDING)
            return self._decide(v, m, transport, src, conn)
        held = _Held(data, transport, src, conn, pres, orig, dest, keys=[key])
        self._held[key] = held
        loop = asyncio.get_running_loop()
        held.timer = loop.call_later(self.cfg.fetch_wait, self._release, held, True)
        self.cache.fetch(pres.x5u).add_done_callback(lambda _f: self._release(held, False))
        return HELD

    def _verify(
        self, pres: stir.Presented, cred: Credential | None, orig: str, dest: str, now: float
    ) -> Verdict:
        if cred is None:
            p = pres.passport
            return Verdict(stir.NO_VALIDATION, p.attest, p.origid, _UNAVAILABLE)
        return stir.verify(pres, cred, orig, dest, now, self.cfg.max_age)

    def _release(self, held: _Held, timed_out: bool) -> None:
        if held.done:
            return
        held.done = True
        if held.timer is not None:
            held.timer.cancel()
        for k in held.keys:
            self._held.pop(k, None)
        now = self.clock()
        if timed_out:
            p = held.pres.passport
            verdict = Verdict(stir.NO_VALIDATION, p.attest, p.origid, _PENDING)
        else:
            _, cred = self.cache.lookup(held.pres.x5u, now)
            verdict = self._verify(held.pres, cred, held.orig, held.dest, now)
        try:
            m = wire.parse(held.data, stream=held.transport != "udp")
        except wire.BadMessage:
            return
        out = self._decide(verdict, m, held.transport, held.src, held.conn)
        if isinstance(out, list):
            self.send(out)
        else:
            self.deliver(held.data, held.transport, held.src, held.conn, out)

    def _decide(
        self, v: Verdict, m: wire.Message, transport: str, src: tuple[str, int], conn: Any
    ) -> Any:
        k = (v.verstat, v.code)
        self.verdicts[k] = self.verdicts.get(k, 0) + 1
        if v.verstat == stir.FAILED and v.error is not None:
            log.info("STIR: call %s failed verification: %s", m.call_id.decode(errors="replace"),
                     v.error)  # fmt: skip
        policy = self.cfg.policy
        refuse = (policy != "pass" and v.verstat == stir.FAILED) or (
            policy == "reject_unverified" and v.verstat == stir.NO_VALIDATION
        )
        if not refuse:
            return v
        err = v.error or _USE_IDENTITY
        self.refused += 1
        return self._proxy().answer(m, err.status, err.reason.encode(), transport, src, conn)

    def close(self) -> None:
        for held in list(self._held.values()):
            if held.timer is not None:
                held.timer.cancel()
        self._held.clear()

    def collect(self) -> Iterator[Metric]:
        c = CounterMetricFamily(
            "switchboard_router_stir_verifications",
            "New INVITEs verified at the edge, by verstat and outcome code",
            labels=["verstat", "code"],
        )
        for (verstat, code), n in sorted(self.verdicts.items()):
            c.add_metric([verstat, code], n)
        yield c
        yield CounterMetricFamily(
            "switchboard_router_stir_refused", "Calls refused by [stir] policy", value=self.refused
        )
        f = CounterMetricFamily(
            "switchboard_router_stir_certificates",
            "x5u certificate lookups: hit (cache), fetched, failed (unreachable), untrusted",
            labels=["result"],
        )
        for result, n in sorted(self.cache.stats.items()):
            f.add_metric([result], n)
        yield f
        yield GaugeMetricFamily(
            "switchboard_router_stir_cached_certificates",
            "x5u entries cached",
            value=len(self.cache),
        )


NOT_PRESENT = Verdict(stir.NO_VALIDATION, error=_USE_IDENTITY)


class Signer:
    """Signs calls leaving on trunks with ``stir_sign`` (the proxy calls it with the
    trunk and the call's numbers; wall-clock ``iat``)."""

    def __init__(self, cfg: StirSection, clock: Callable[[], float] = time.time) -> None:
        self.key = self._load(cfg.sign_key)
        self.x5u = cfg.sign_x5u
        self.origid = cfg.origid or str(uuid.uuid5(uuid.NAMESPACE_DNS, socket.getfqdn()))
        self.clock = clock
        self.signed: dict[str, int] = {}

    @staticmethod
    def _load(path: str) -> Any:
        try:
            return stir.load_signing_key(_read(path, "stir.sign_key"))
        except ValueError as exc:
            raise StirConfigError(f"stir.sign_key: {path}: {exc}") from None

    def __call__(self, trunk: TrunkState, calling: str, called: str) -> bytes | None:
        rules = trunk.attest
        if rules is None:
            return None
        orig = stir.canonical_tn(calling)
        dest = stir.canonical_tn(called)
        if not orig.isdigit() or not dest.isdigit():
            return None  # PASSporT tn claims are telephone numbers (RFC 8225 §5.2.1)
        attest = rules.attestation(orig)
        value = stir.sign(self.key, self.x5u, attest, orig, dest, self.origid, int(self.clock()))
        self.signed[attest] = self.signed.get(attest, 0) + 1
        return value.encode("ascii")

    def collect(self) -> Iterator[Metric]:
        c = CounterMetricFamily(
            "switchboard_router_stir_signed",
            "Calls signed on trunks, by attestation",
            labels=["attest"],
        )
        for attest, n in sorted(self.signed.items()):
            c.add_metric([attest], n)
        yield c
