"""The asyncio adapter on loopback with free ports: UDP and TCP, real timers, bad bytes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from switchboard.net import loop as sbloop
from switchboard.net.endpoint import SipEndpoint, stateless_reject
from switchboard.sip.ids import new_branch
from switchboard.sip.message import Request, Response, make_response, parse_message
from switchboard.sip.timers import TimerValues
from switchboard.sip.transaction import (
    Peer,
    RequestReceived,
    ResponseReceived,
    TimedOut,
    TransactionLayer,
    TransportFailed,
)

DEADLINE = 5.0


def options(
    branch: str, transport: str = "UDP", sent_by: str = "127.0.0.1:9", cseq: int = 1
) -> bytes:
    return (
        f"OPTIONS sip:uas@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {sent_by};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:probe@127.0.0.1>;tag=abc\r\n"
        "To: <sip:uas@127.0.0.1>\r\n"
        f"Call-ID: {branch}@test\r\n"
        f"CSeq: {cseq} OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Answering:
    """A TU answering every request with 200 and recording every event."""

    def __init__(self, **layer_args: Any) -> None:
        self.layer = TransactionLayer(**layer_args)
        self.events: list[Any] = []
        self.endpoint: SipEndpoint | None = None
        self.answered = 0
        self.changed = asyncio.Event()

    def on_event(self, event: Any) -> None:
        self.events.append(event)
        self.changed.set()
        if isinstance(event, RequestReceived) and self.endpoint is not None:
            txn = event.transaction
            response = make_response(event.request, 200, to_tag="uas")
            self.answered += 1
            self.endpoint.feed(lambda now: self.layer.send_response(txn, response, now))

    async def wait_for(self, kind: type, count: int = 1) -> list[Any]:
        async with asyncio.timeout(DEADLINE):
            while True:
                found = [e for e in self.events if isinstance(e, kind)]
                if len(found) >= count:
                    return found
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def uas() -> AsyncIterator[tuple[Answering, SipEndpoint]]:
    tu = Answering()
    endpoint = SipEndpoint(tu.layer, on_event=tu.on_event, tcp_idle_timeout=30.0)
    tu.endpoint = endpoint
    await endpoint.listen_udp("127.0.0.1", 0)
    await endpoint.listen_tcp("127.0.0.1", 0)
    yield tu, endpoint
    await endpoint.close()


class DatagramClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    async def recv(self, timeout: float = DEADLINE) -> bytes:
        async with asyncio.timeout(timeout):
            return await self.queue.get()


async def udp_client() -> tuple[asyncio.DatagramTransport, DatagramClient]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        DatagramClient, local_addr=("127.0.0.1", 0)
    )
    return transport, proto


# --------------------------------------------------------------------------- UDP


async def test_udp_request_answered_and_retransmission_absorbed(uas: Any) -> None:
    tu, endpoint = uas
    transport, client = await udp_client()
    try:
        transport.sendto(options("z9hG4bKudp1"), endpoint.udp_address)
        first = parse_message(await client.recv())
        assert isinstance(first, Response) and first.status == 200
        # rport: the response came back to our source port although sent-by said :9.
        assert first.top_via.rport == str(transport.get_extra_info("sockname")[1])
        transport.sendto(options("z9hG4bKudp1"), endpoint.udp_address)
        again = await client.recv()
        assert again == first.to_bytes()  # the transaction resent its response
        assert tu.answered == 1  # and did not bother the TU again
    finally:
        transport.close()


async def test_udp_garbage_is_dropped_and_bad_request_gets_400(uas: Any) -> None:
    tu, endpoint = uas
    transport, client = await udp_client()
    try:
        for junk in (b"\x00\xff" * 50, b"INVITE\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n", b"\r\n\r\n"):
            transport.sendto(junk, endpoint.udp_address)
        bad = options("z9hG4bKbad").replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS")
        transport.sendto(bad, endpoint.udp_address)
        reply = parse_message(await client.recv())
        assert isinstance(reply, Response) and reply.status == 400
        assert reply.top_via.branch == "z9hG4bKbad"
        # Still alive and serving.
        transport.sendto(options("z9hG4bKafter"), endpoint.udp_address)
        ok = parse_message(await client.recv())
        assert isinstance(ok, Response) and ok.status == 200 and ok.top_via.branch == "z9hG4bKafter"
        assert tu.answered == 1
    finally:
        transport.close()


async def test_udp_client_transaction_retransmits_on_the_real_clock() -> None:
    # A silent peer: the endpoint's single timer drives Timer E, then Timer F.
    tu = Answering(timers=TimerValues(t1=0.05, timer_f=0.5))
    endpoint = SipEndpoint(tu.layer, on_event=tu.on_event)
    silent, sink = await udp_client()
    try:
        local = await endpoint.listen_udp()
        host, port = silent.get_extra_info("sockname")[:2]
        req = parse_message(options(new_branch(os.urandom(10)), sent_by=f"{local[0]}:{local[1]}"))
        assert isinstance(req, Request)
        endpoint.feed(lambda now: tu.layer.send_request(req, Peer("UDP", host, port), now)[1])
        (timeout,) = await tu.wait_for(TimedOut)
        assert timeout.timer == "F"
        copies = sink.queue.qsize()
        assert copies == 4  # sent at 0, then E at 0.05, 0.15, 0.35; F at 0.5
        assert len(tu.layer) == 0
    finally:
        silent.close()
        await endpoint.close()


# --------------------------------------------------------------------------- TCP


async def read_message(reader: asyncio.StreamReader) -> Response:
    async with asyncio.timeout(DEADLINE):
        head = await reader.readuntil(b"\r\n\r\n")
    msg = parse_message(head)
    assert isinstance(msg, Response)
    return msg


async def test_tcp_framing_coalesced_split_and_same_connection(uas: Any) -> None:
    _, endpoint = uas
    reader, writer = await asyncio.open_connection(*endpoint.tcp_address)
    try:
        a = options("z9hG4bKtcpA", "TCP")
        b = options("z9hG4bKtcpB", "TCP")
        c = options("z9hG4bKtcpC", "TCP")
        writer.write(a + b + c[:17])  # two whole messages and a piece of a third
        await writer.drain()
        got = [await read_message(reader), await read_message(reader)]
        writer.write(c[17:])
        got.append(await read_message(reader))
        assert [m.top_via.branch for m in got] == ["z9hG4bKtcpA", "z9hG4bKtcpB", "z9hG4bKtcpC"]
        assert all(m.status == 200 for m in got)
        assert len(endpoint.tcp.connections) == 1  # responses reused the inbound connection
    finally:
        writer.close()


async def test_tcp_keepalive_ping_gets_pong(uas: Any) -> None:
    _, endpoint = uas
    reader, writer = await asyncio.open_connection(*endpoint.tcp_address)
    try:
        writer.write(b"\r\n\r\n")
        async with asyncio.timeout(DEADLINE):
            assert await reader.readexactly(2) == b"\r\n"
    finally:
        writer.close()


async def test_tcp_oversized_message_closes_only_that_connection(uas: Any) -> None:
    _, endpoint = uas
    reader, writer = await asyncio.open_connection(*endpoint.tcp_address)
    writer.write(b"OPTIONS sip:x@y SIP/2.0\r\nX-Big: " + b"a" * 70000)
    async with asyncio.timeout(DEADLINE):
        assert await reader.read() == b""  # closed by the endpoint
    writer.close()
    reader, writer = await asyncio.open_connection(*endpoint.tcp_address)
    try:
        writer.write(options("z9hG4bKok", "TCP"))
        assert (await read_message(reader)).status == 200
    finally:
        writer.close()


async def test_tcp_idle_connection_is_closed() -> None:
    tu = Answering()
    endpoint = SipEndpoint(tu.layer, on_event=tu.on_event, tcp_idle_timeout=0.2)
    try:
        address = await endpoint.listen_tcp()
        reader, writer = await asyncio.open_connection(*address)
        async with asyncio.timeout(DEADLINE):
            assert await reader.read() == b""
        assert endpoint.tcp.connections == {}
        writer.close()
    finally:
        await endpoint.close()


async def test_tcp_outbound_connection_reused_and_response_matched() -> None:
    tu = Answering()
    endpoint = SipEndpoint(tu.layer, on_event=tu.on_event)
    accepted: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append((reader, writer))
        while data := await reader.readuntil(b"\r\n\r\n"):
            req = parse_message(data)
            assert isinstance(req, Request)
            writer.write(make_response(req, 200, to_tag="far").to_bytes())

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    try:
        for i in range(2):
            req = parse_message(options(f"z9hG4bKout{i}", "TCP", cseq=i + 1))
            assert isinstance(req, Request)
            endpoint.feed(
                lambda now, r=req: tu.layer.send_request(r, Peer("TCP", host, port), now)[1]
            )
        responses = await tu.wait_for(ResponseReceived, 2)
        assert sorted(r.response.top_via.branch for r in responses) == [
            "z9hG4bKout0",
            "z9hG4bKout1",
        ]
        assert all(r.transaction is not None for r in responses)
        assert len(accepted) == 1  # one connection carried both requests
    finally:
        await endpoint.close()
        server.close()
        await server.wait_closed()


async def test_tcp_connect_failure_is_a_transport_error() -> None:
    tu = Answering()
    endpoint = SipEndpoint(tu.layer, on_event=tu.on_event)
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()  # nothing listens on this port now
    try:
        req = parse_message(options("z9hG4bKnobody", "TCP"))
        assert isinstance(req, Request)
        endpoint.feed(
            lambda now: tu.layer.send_request(req, Peer("TCP", "127.0.0.1", port), now)[1]
        )
        (failed,) = await tu.wait_for(TransportFailed)
        assert failed.transaction.request is req
        assert len(tu.layer) == 0
    finally:
        await endpoint.close()


# --------------------------------------------------------------------------- helpers


def test_stateless_reject_copies_the_transaction_headers() -> None:
    raw = options("z9hG4bKrej").replace(b"Max-Forwards: 70", b"Max-Forwards: lots")
    reply = parse_message(stateless_reject(raw, 400, "Bad Request") or b"")
    assert isinstance(reply, Response) and reply.status == 400
    assert reply.top_via.branch == "z9hG4bKrej" and reply.cseq.method == "OPTIONS"
    assert reply.headers.get("Max-Forwards") is None
    assert stateless_reject(b"ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n", 400, "x") is None
    assert stateless_reject(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n", 400, "x") is None
    assert stateless_reject(b"OPTIONS sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n\r\n", 400, "x") is None
    assert stateless_reject(b"\xff\xfe garbage", 400, "x") is None


def test_run_uses_uvloop_when_installed() -> None:
    async def kind() -> str:
        return type(asyncio.get_running_loop()).__module__

    module = sbloop.run(kind())
    assert module.startswith("uvloop") == sbloop.uvloop_available()
