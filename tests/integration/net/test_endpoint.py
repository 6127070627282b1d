"""The asyncio adapter on loopback with free ports: UDP and TCP, real timers, bad bytes."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        self.sources: list[tuple[str, int]] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.sources.append((addr[0], addr[1]))
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


async def test_udp_answer_leaves_from_the_socket_the_request_reached() -> None:
    tu = Answering()
    endpoint = SipEndpoint(tu.layer, on_event=tu.on_event)
    tu.endpoint = endpoint
    try:
        first = await endpoint.listen_udp("127.0.0.1")
        second = await endpoint.listen_udp("127.0.0.2")
        transport, client = await udp_client()
        try:
            for i, target in enumerate([second, first, second]):
                transport.sendto(options(f"z9hG4bKsock{i}"), target)
                reply = parse_message(await client.recv())
                assert isinstance(reply, Response) and reply.status == 200
                assert client.sources[-1] == target
        finally:
            transport.close()
    finally:
        await endpoint.close()


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
        # Sent at 0, then E at 0.05, 0.15, 0.35; F at 0.5.  A loaded machine may wake
        # late and push one E past F (exact counts are the fake-clock tests' job).
        assert 3 <= copies <= 4, copies
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


async def test_tcp_response_falls_back_to_sent_by_when_connection_closed() -> None:
    # §18.2.2: the client hung up before the answer; the response goes to the port in
    # its Via sent-by on a new connection.
    layer = TransactionLayer()
    received: list[RequestReceived] = []
    arrived = asyncio.Event()

    def on_event(event: Any) -> None:
        if isinstance(event, RequestReceived):
            received.append(event)
            arrived.set()

    endpoint = SipEndpoint(layer, on_event=on_event)
    responses: asyncio.Queue[bytes] = asyncio.Queue()

    async def sent_by(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        responses.put_nowait(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    listener = await asyncio.start_server(sent_by, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        address = await endpoint.listen_tcp()
        _, writer = await asyncio.open_connection(*address)
        writer.write(options("z9hG4bKgone", "TCP", sent_by=f"127.0.0.1:{port}"))
        async with asyncio.timeout(DEADLINE):
            await arrived.wait()
        writer.close()
        async with asyncio.timeout(DEADLINE):
            while endpoint.tcp.connections:
                await asyncio.sleep(0.01)
        event = received[0]
        ok = make_response(event.request, 200, to_tag="late")
        endpoint.feed(lambda now: layer.send_response(event.transaction, ok, now))
        async with asyncio.timeout(DEADLINE):
            data = await responses.get()
        reply = parse_message(data)
        assert isinstance(reply, Response) and reply.status == 200
        assert reply.top_via.branch == "z9hG4bKgone"
    finally:
        await endpoint.close()
        listener.close()
        await listener.wait_closed()


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


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=400)
    | st.builds(
        lambda cut, b: options("z9hG4bKf")[:cut] + b, st.integers(0, 300), st.binary(max_size=40)
    )
)
def test_stateless_reject_never_raises(data: bytes) -> None:
    reply = stateless_reject(data, 400, "Bad Request")
    if reply is not None:
        parsed = parse_message(reply)
        assert isinstance(parsed, Response) and parsed.status == 400


async def test_endpoint_survives_mutated_datagrams() -> None:
    """Thousands of truncated, bit-flipped and spliced messages: nothing escapes, the
    endpoint keeps answering afterwards (the process never dies on a peer's bytes)."""
    tu = Answering()
    endpoint = SipEndpoint(tu.layer, on_event=tu.on_event)
    tu.endpoint = endpoint
    await endpoint.listen_udp()
    seeds = [
        options("z9hG4bKm1"),
        options("z9hG4bKm2", cseq=7)
        .replace(b"OPTIONS sip", b"INVITE sip")
        .replace(b"7 OPTIONS", b"7 INVITE"),
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\nCSeq: 1 OPTIONS\r\n"
        b"Call-ID: a\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nContent-Length: 0\r\n\r\n",
    ]
    rng = random.Random(2604)
    sent: list[bytes] = []
    endpoint.transmit = lambda output: sent.append(output.data)  # type: ignore[method-assign]
    peer = Peer("UDP", "127.0.0.1", 9)
    try:
        for _ in range(3000):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                op = rng.randrange(3)
                pos = rng.randrange(len(data) + 1)
                if op == 0:
                    del data[pos:]
                elif op == 1 and pos < len(data):
                    data[pos] = rng.randrange(256)
                else:
                    data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            endpoint._on_message(bytes(data), peer)
        del endpoint.transmit  # back to the real sockets
        statuses = []
        for data in sent:  # everything we answered is a well-formed, routable response
            reply = parse_message(data)
            assert isinstance(reply, Response) and reply.top_via.host
            statuses.append(reply.status)
        assert 400 in statuses  # mangled-but-readable requests were answered, not ignored
        transport, client = await udp_client()
        try:
            transport.sendto(options("z9hG4bKalive"), endpoint.udp_address)
            alive = parse_message(await client.recv())
            assert isinstance(alive, Response) and alive.status == 200
        finally:
            transport.close()
    finally:
        await endpoint.close()
