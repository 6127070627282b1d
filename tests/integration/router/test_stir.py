"""STIR/SHAKEN through a real router process (``switchboard router``): calls signed by the
router on a signing trunk, then verified by the same router at its edge with the
certificate fetched over HTTPS from a local server (a test STI-CA made at test time);
tampered, expired, wrong-dest and unknown-CA PASSporTs; a slow certificate server; the
operator's refusal policy. The carrier, the node and the media side are scripted UDP
peers on 127.0.0.x, so every header the router adds can be read."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from switchboard.router import stir
from tests.support.net import async_wait_until, free_port
from tests.support.router import write_config
from tests.support.stir_pki import CertServer, StiPki, cert_server, make_sti_pki

pytestmark = pytest.mark.timeout(90)

CALLER = "+12155550121"
CALLEE = "+12155550131"


class Udp(asyncio.DatagramProtocol):
    """A scripted SIP peer: keeps what it receives, answers OPTIONS (probes) with 200,
    and INVITEs with ``answer`` (the node and the carrier)."""

    def __init__(self, answer: int = 0) -> None:
        self.answer = answer
        self.invites: list[bytes] = []
        self.finals: dict[str, bytes] = {}
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        if data.startswith(b"OPTIONS "):
            self.transport.sendto(_response(data, 200, b"OK"), addr)
        elif data.startswith(b"INVITE ") and self.answer:
            self.invites.append(data)
            self.transport.sendto(_response(data, self.answer, b"Busy Here"), addr)
        elif not data.startswith(b"ACK "):
            self.inbox.put_nowait(data)

    @classmethod
    async def bind(cls, host: str, answer: int = 0) -> tuple[Udp, int]:
        loop = asyncio.get_running_loop()
        t, p = await loop.create_datagram_endpoint(lambda: cls(answer), local_addr=(host, 0))
        return p, t.get_extra_info("sockname")[1]

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", port))

    async def final(self, call_id: str, timeout: float = 10.0) -> bytes:
        """The final response of ``call_id`` (others that arrive meanwhile are kept)."""
        deadline = time.monotonic() + timeout
        while call_id not in self.finals:
            data = await asyncio.wait_for(self.inbox.get(), deadline - time.monotonic())
            if data.startswith(b"SIP/2.0 ") and not data.startswith(b"SIP/2.0 1"):
                self.finals.setdefault(header(data, "Call-ID") or "", data)
        return self.finals[call_id]


def header(data: bytes, name: str) -> str | None:
    m = re.search(rb"\r\n" + re.escape(name.encode()) + rb"\s*:\s*([^\r\n]*)", data, re.I)
    return m.group(1).decode() if m else None


def _response(req: bytes, status: int, reason: bytes) -> bytes:
    head = req.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    keep = [ln for ln in head if re.match(rb"(?i)(via|from|to|call-id|cseq)\s*:", ln)]
    keep = [ln + b";tag=uas" if ln.lower().startswith(b"to:") else ln for ln in keep]
    return b"\r\n".join([b"SIP/2.0 %d %s" % (status, reason), *keep, b"Content-Length: 0"]) + (
        b"\r\n\r\n"
    )


def invite(
    ruri: str,
    host: str,
    port: int,
    call_id: str,
    *,
    frm: str = CALLER,
    to: str = CALLEE,
    extra: str = "",
) -> bytes:
    return (
        f"INVITE {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{call_id};rport\r\n"
        f"From: <sip:{frm}@{host}>;tag=c-{call_id}\r\nTo: <sip:{to}@{host}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{frm}@{host}:{port}>\r\n"
        f"Max-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


@dataclass
class Stage:
    pki: StiPki
    certs: CertServer
    anchors: Path
    https_ca: Path
    key: Path
    tmp: Path


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    tmp = tmp_path_factory.mktemp("stir")
    pki = make_sti_pki()
    files = {
        "/sp.pem": pki.chain_pem,
        "/rogue.pem": pki.rogue_chain_pem,
        "/slow.pem": pki.chain_pem,
    }
    with cert_server(tmp / "tls", files) as (srv, tls):
        anchors = tmp / "sti-roots.pem"
        anchors.write_bytes(pki.root_pem)
        key = tmp / "sp.key"
        key.write_bytes(pki.key_pem)
        key.chmod(0o600)
        yield Stage(pki, srv, anchors, tls.ca, key, tmp)


@asynccontextmanager
async def router_process(tmp: Path, sections: dict[str, dict[str, Any]]) -> AsyncIterator[int]:
    """``switchboard router`` in its own process; yields its SIP port once it answers."""
    port = free_port()
    sections["router"] = {
        "listen": [f"udp:127.0.0.1:{port}"],
        "admin": f"127.0.0.1:{free_port()}",
        "drain_timeout": 1.0,
    }
    cfg = write_config(tmp / f"router-{port}.toml", sections)
    log = tmp / f"router-{port}.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "switchboard.cli", "router", "--config", str(cfg)],
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    probe, _ = await Udp.bind("127.0.0.1")
    try:
        n = 0

        async def answers() -> bool:
            nonlocal n
            assert proc.poll() is None, log.read_text()
            n += 1
            cid = f"ready-{n}"
            assert probe.transport is not None
            lport = probe.transport.get_extra_info("sockname")[1]
            probe.send(
                (
                    f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lport};"
                    f"branch=z9hG4bK{cid}\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:r@127.0.0.1>"
                    f"\r\nCall-ID: {cid}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                ).encode(),
                port,
            )
            try:
                await probe.final(cid, 0.2)
                return True
            except TimeoutError:
                return False

        deadline = time.monotonic() + 30
        while not await answers():
            assert time.monotonic() < deadline, "the router never answered"
        yield port
    finally:
        assert probe.transport is not None
        probe.transport.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sections(stage: Stage, node_port: int, carrier_port: int, **stir_over: Any) -> dict[str, Any]:
    return {
        "dispatcher": {"destinations": [f"sip:127.0.0.1:{node_port}"], "ping_interval": 60.0},
        "acl": {"allow": ["127.0.0.1"]},
        "trunks.carrier-in": {"sources": ["127.0.0.2"], "direction": "inbound"},
        "trunks.carrier-out": {
            "sources": [f"127.0.0.5:{carrier_port}"],
            "direction": "outbound",
            "stir_sign": True,
            "stir_attestation": ["A:+1215", "B"],
        },
        "stir": {
            "verify": True,
            "trust_anchors": str(stage.anchors),
            "https_ca": str(stage.https_ca),
            "sign_key": str(stage.key),
            "sign_x5u": stage.certs.url("/sp.pem"),
            "origid": "5f3c7b2e-0d1a-4c55-9a43-3e1e5a6b7c8d",
            "fetch_wait": 2.0,
            "verstat_to_callee": True,
            **stir_over,
        },
    }


def _tamper(identity: str, **claims: Any) -> str:
    token, _, params = identity.partition(";")
    h, p, s = token.split(".")
    c = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    c.update(claims)
    raw = json.dumps(c, sort_keys=True, separators=(",", ":")).encode()
    return f"{h}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}.{s};{params}"


async def test_signed_by_the_router_then_verified_at_its_edge(stage: Stage) -> None:
    node, node_port = await Udp.bind("127.0.0.1", answer=486)
    carrier_out, carrier_port = await Udp.bind("127.0.0.5", answer=486)
    carrier_in, cin_port = await Udp.bind("127.0.0.2")
    media, media_port = await Udp.bind("127.0.0.1")  # a media node sending a call out
    try:
        async with router_process(stage.tmp, sections(stage, node_port, carrier_port)) as rport:
            # 1. A call out: the router signs it for the carrier trunk (attestation A by rule).
            media.send(
                invite(f"sip:{CALLEE}@127.0.0.5:{carrier_port}", "127.0.0.1", media_port, "out-1"),
                rport,
            )
            assert b" 486 " in (await media.final("out-1"))[:20]
            identity = header(carrier_out.invites[-1], "Identity")
            assert identity is not None and identity.endswith(";alg=ES256;ppt=shaken")
            pres = stir.present(identity)
            assert pres.passport.x5u == stage.certs.url("/sp.pem")
            assert pres.passport.claims["attest"] == "A"
            assert pres.passport.claims["orig"] == {"tn": CALLER[1:]}
            anchors = x509.load_pem_x509_certificates(stage.pki.root_pem)
            cred = stir.validate_chain(stage.pki.chain_pem, anchors, time.time())
            assert stir.verify(pres, cred, CALLER, CALLEE, time.time()).verstat == stir.PASSED

            # 2. The carrier brings calls in with it (and variations): the edge verifies.
            fetches = len(stage.certs.requests)
            now = int(time.time())
            rogue = stir.sign(
                stage.pki.rogue_key, stage.certs.url("/rogue.pem"), "A", CALLER, CALLEE, "o", now
            )
            cases = {
                "good": (identity, stir.PASSED, "A"),
                "good-again": (identity, stir.PASSED, "A"),
                "tampered": (_tamper(identity, orig={"tn": "12155550000"}), stir.FAILED, "A"),
                "expired": (
                    stir.sign(
                        stage.pki.key,
                        stage.certs.url("/sp.pem"),
                        "B",
                        CALLER,
                        CALLEE,
                        "o",
                        now - 120,
                    ),
                    stir.FAILED,
                    "B",
                ),
                "wrong-dest": (
                    stir.sign(
                        stage.pki.key,
                        stage.certs.url("/sp.pem"),
                        "A",
                        CALLER,
                        "+12155559999",
                        "o",
                        now,
                    ),
                    stir.FAILED,
                    "A",
                ),
                "unknown-ca": (rogue, stir.FAILED, "A"),
                "none": ("", stir.NO_VALIDATION, ""),
            }
            for name, (ident, _verstat, _attest) in cases.items():
                extra = f"Identity: {ident}\r\n" if ident else ""
                # hostile input: a carrier claiming the verdict itself
                extra += "X-Switchboard-Verstat: TN-Validation-Passed\r\nX-Switchboard-Attestation: A\r\n"
                extra += f"P-Asserted-Identity: <sip:{CALLER};verstat=TN-Validation-Passed@127.0.0.2>\r\n"
                carrier_in.send(
                    invite(
                        f"sip:{CALLEE}@127.0.0.1:{rport}",
                        "127.0.0.2",
                        cin_port,
                        f"in-{name}",
                        extra=extra,
                    ),
                    rport,
                )
                assert b" 486 " in (await carrier_in.final(f"in-{name}"))[:20]
            got = {header(d, "Call-ID"): d for d in node.invites}
            for name, (_, verstat, attest) in cases.items():
                d = got[f"in-{name}"]
                assert re.findall(rb"X-Switchboard-Verstat: ([^\r\n]*)", d) == [verstat.encode()], (
                    name
                )
                assert re.findall(rb"X-Switchboard-Attestation: ([^\r\n]*)", d) == (
                    [attest.encode()] if attest else []
                ), name
                assert header(d, "X-Switchboard-Trunk") == "carrier-in"
                assert header(d, "P-Asserted-Identity") == (
                    f"<sip:{CALLER};verstat={verstat}@127.0.0.2>"
                ), name
            # One fetch per URL: /sp.pem once (cached for every later call), /rogue.pem once.
            assert sorted(stage.certs.requests[fetches:]) == ["/rogue.pem", "/sp.pem"]
    finally:
        for p in (node, carrier_out, carrier_in, media):
            assert p.transport is not None
            p.transport.close()


async def test_slow_certificate_bounded_wait_and_reject_policy(stage: Stage) -> None:
    """A certificate server that does not answer: the call waits ``fetch_wait`` (0.3 s)
    and goes on as No-TN-Validation; with ``policy = "reject_failed"`` a failed PASSporT
    is refused with RFC 8224's code while a good one goes through."""
    node, node_port = await Udp.bind("127.0.0.1", answer=486)
    carrier_in, cin_port = await Udp.bind("127.0.0.2")
    stage.certs.delay = 5.0
    over = {"fetch_wait": 0.3, "policy": "reject_failed", "verstat_to_callee": False}
    try:
        async with router_process(stage.tmp, sections(stage, node_port, 9, **over)) as rport:
            now = int(time.time())
            slow = stir.sign(
                stage.pki.key, stage.certs.url("/slow.pem"), "A", CALLER, CALLEE, "o", now
            )
            t0 = time.monotonic()
            carrier_in.send(
                invite(
                    f"sip:{CALLEE}@127.0.0.1:{rport}",
                    "127.0.0.2",
                    cin_port,
                    "slow",
                    extra=f"Identity: {slow}\r\n",
                ),
                rport,
            )
            assert b" 486 " in (await carrier_in.final("slow"))[:20]
            waited = time.monotonic() - t0
            assert 0.25 <= waited < 2.0, waited
            assert header(node.invites[-1], "X-Switchboard-Verstat") == stir.NO_VALIDATION
            stage.certs.delay = 0.0
            stage.certs.release()
            good = stir.sign(
                stage.pki.key, stage.certs.url("/sp.pem"), "A", CALLER, CALLEE, "o", now
            )
            stale = stir.sign(
                stage.pki.key, stage.certs.url("/sp.pem"), "A", CALLER, CALLEE, "o", now - 300
            )
            for cid, ident in (("good", good), ("stale", stale)):
                carrier_in.send(
                    invite(
                        f"sip:{CALLEE}@127.0.0.1:{rport}",
                        "127.0.0.2",
                        cin_port,
                        cid,
                        extra=f"Identity: {ident}\r\n",
                    ),
                    rport,
                )
            assert b" 486 " in (await carrier_in.final("good"))[:20]
            refused = await carrier_in.final("stale")
            assert refused.startswith(b"SIP/2.0 403 Stale Date"), refused[:40]
            await async_wait_until(lambda: len(node.invites) == 2, 5, "the good call at the node")
            assert [header(d, "Call-ID") for d in node.invites] == ["slow", "good"]
    finally:
        stage.certs.delay = 0.0
        stage.certs.release()
        for p in (node, carrier_in):
            assert p.transport is not None
            p.transport.close()
