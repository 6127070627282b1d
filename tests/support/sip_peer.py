"""A scripted SIP peer for the media node tests: sends what the test writes, over UDP or
TCP, and keeps every message it receives (no SIP stack of its own: the test decides)."""

from __future__ import annotations

import asyncio

from switchboard.sip.framer import StreamFramer
from switchboard.sip.message import Request, Response, parse_message

SDP = (
    "v=0\r\no=peer 1 {ver} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP {fmt} 101\r\na=rtpmap:101 telephone-event/8000\r\na={dir}\r\n"
)


class Peer(asyncio.DatagramProtocol):
    """A scripted SIP peer on UDP (or TCP with :meth:`tcp`)."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[object] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.port = 0
        self.proto = "UDP"

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.inbox.put_nowait(parse_message(data))

    @classmethod
    async def udp(cls) -> Peer:
        p = cls()
        loop = asyncio.get_running_loop()
        t, _ = await loop.create_datagram_endpoint(lambda: p, local_addr=("127.0.0.1", 0))
        p.transport = t  # type: ignore[assignment]
        p.port = t.get_extra_info("sockname")[1]
        return p

    @classmethod
    async def tcp(cls, port: int) -> Peer:
        p = cls()
        p.proto = "TCP"
        reader, p.writer = await asyncio.open_connection("127.0.0.1", port)
        p.port = p.writer.get_extra_info("sockname")[1]
        framer = StreamFramer()

        async def pump() -> None:
            while data := await reader.read(65536):
                for m in framer.feed(data):
                    p.inbox.put_nowait(parse_message(m))

        p._pump = asyncio.ensure_future(pump())  # type: ignore[attr-defined]
        return p

    def send(self, text: str, node_port: int) -> None:
        data = text.replace("\n", "\r\n").encode()
        if self.writer is not None:
            self.writer.write(data)
        else:
            assert self.transport is not None
            self.transport.sendto(data, ("127.0.0.1", node_port))

    async def expect(self, pred: object = None, timeout: float = 5.0) -> object:
        while True:
            msg = await asyncio.wait_for(self.inbox.get(), timeout)
            if pred is None or pred(msg):  # type: ignore[operator]
                return msg

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.writer is not None:
            self.writer.close()


class ProbedNode(Peer):
    """A fake media node behind a router: answers the router's OPTIONS probes itself
    (while ``alive``) and keeps every other message for the test."""

    router_port = 0
    alive = True

    def datagram_received(self, data: bytes, addr: object) -> None:
        msg = parse_message(data)
        if isinstance(msg, Request) and msg.method == "OPTIONS":
            if self.alive:
                self.send(ok_to(msg), self.router_port)
            return
        self.inbox.put_nowait(msg)


def request(peer: Peer, method: str, node_port: int, *, call_id: str, cseq: int, branch: str,
            to_tag: str = "", body: str = "", ctype: str = "application/sdp", extra: str = "") -> str:  # fmt: skip
    tt = f";tag={to_tag}" if to_tag else ""
    return (
        f"{method} sip:echo@127.0.0.1:{node_port} SIP/2.0\n"
        f"Via: SIP/2.0/{peer.proto} 127.0.0.1:{peer.port};branch=z9hG4bK{branch};rport\n"
        f"From: <sip:alice@127.0.0.1:{peer.port}>;tag=alice1\n"
        f"To: <sip:echo@127.0.0.1:{node_port}>{tt}\n"
        f"Call-ID: {call_id}\nCSeq: {cseq} {method}\n"
        f"Contact: <sip:alice@127.0.0.1:{peer.port}{';transport=tcp' if peer.proto == 'TCP' else ''}>\n"
        f"Max-Forwards: 70\n{extra}"
        + (f"Content-Type: {ctype}\n" if body else "")
        + f"Content-Length: {len(body.replace(chr(10), chr(13) + chr(10)))}\n\n{body}"
    )


def ok_to(req: Request, *, tag: str = "", sdp: str = "", contact: str = "") -> str:
    """The far end's 200 OK to ``req`` (a To tag for an INVITE, an SDP answer with its
    Contact); ``Peer.send`` turns its newlines into CRLF."""
    to = req.headers.get("To") or ""
    return (
        f"SIP/2.0 200 OK\nVia: {req.headers.get('Via')}\nFrom: {req.headers.get('From')}\n"
        f"To: {to}{';tag=' + tag if tag else ''}\nCall-ID: {req.call_id}\n"
        f"CSeq: {req.cseq.seq} {req.method}\n"
        + (f"Contact: <{contact}>\nContent-Type: application/sdp\n" if sdp else "")
        + f"Content-Length: {len(sdp.replace(chr(10), chr(13) + chr(10)))}\n\n{sdp}"
    )


def final(msg: object) -> bool:
    return isinstance(msg, Response) and msg.status >= 200
