"""SIP over TLS between real sockets on both event loops (stock asyncio and uvloop): a
client that starts its handshake the instant it connects — every TLS client does — is
served, from a Python ssl client and from another SipEndpoint (router to router).

Regression: on uvloop the accepted socket delivered the ClientHello to the plain
protocol before the server-side handshake began; it was eaten, and both sides waited
for each other until the 10 s handshake timeout (two routers chained over TLS never
connected)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from switchboard.net.endpoint import SipEndpoint
from switchboard.net.tls import TlsFiles, client_context, server_context
from switchboard.sip.ids import new_branch
from switchboard.sip.message import Request, make_response
from switchboard.sip.transaction import (
    Peer,
    RequestReceived,
    ResponseReceived,
    TransactionLayer,
)
from tests.support.tls_certs import Pki, make_pki

DEADLINE = 5.0  # well under the 10 s handshake timeout a deadlock would run into


class Answering:
    """A TU answering every request 200, keeping every event."""

    def __init__(self) -> None:
        self.layer = TransactionLayer()
        self.events: list[Any] = []
        self.endpoint: SipEndpoint | None = None
        self.changed = asyncio.Event()

    def on_event(self, event: Any) -> None:
        self.events.append(event)
        self.changed.set()
        if isinstance(event, RequestReceived) and self.endpoint is not None:
            txn, response = event.transaction, make_response(event.request, 200, to_tag="uas")
            self.endpoint.feed(lambda now: self.layer.send_response(txn, response, now))

    async def first(self, kind: type) -> Any:
        async with asyncio.timeout(DEADLINE):
            while True:
                for e in self.events:
                    if isinstance(e, kind):
                        return e
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
async def tls_uas(pki: Pki) -> AsyncIterator[tuple[Answering, int]]:
    tu = Answering()
    endpoint = SipEndpoint(tu.layer, on_event=tu.on_event)
    tu.endpoint = endpoint
    files = TlsFiles(str(pki.server.cert), str(pki.server.key), str(pki.ca))
    endpoint.enable_tls(server_context(files), client_context(files))
    _, port = await endpoint.listen_tls("127.0.0.1", 0)
    yield tu, port
    await endpoint.close()


def options(branch: str, sent_by: str) -> bytes:
    return (
        f"OPTIONS sip:uas@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {sent_by};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:uac@127.0.0.1>;tag=uac\r\n"
        "To: <sip:uas@127.0.0.1>\r\nCall-ID: tls-loop@test\r\nCSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def test_python_ssl_client_is_served(tls_uas: tuple[Answering, int], pki: Pki) -> None:
    import ssl

    _, port = tls_uas
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    async with asyncio.timeout(DEADLINE):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
        )
        writer.write(options(new_branch(b"\x01" * 8), "127.0.0.1:9"))
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"SIP/2.0 200 "), head
    writer.close()


async def test_endpoint_to_endpoint_over_tls(tls_uas: tuple[Answering, int], pki: Pki) -> None:
    _, port = tls_uas
    uac = Answering()
    client = SipEndpoint(uac.layer, on_event=uac.on_event)
    uac.endpoint = client
    try:
        files = TlsFiles(ca=str(pki.ca))
        client.enable_tls(None, client_context(files))
        branch = new_branch(b"\x02" * 8)
        request = Request.build(
            "OPTIONS", "sip:uas@127.0.0.1", via=f"SIP/2.0/TLS 127.0.0.1:9;branch={branch}",
            from_="<sip:uac@127.0.0.1>;tag=uac", to="<sip:uas@127.0.0.1>",
            call_id="tls-e2e@test", cseq=1,
        )  # fmt: skip
        peer = Peer("TLS", "127.0.0.1", port)
        client.feed(lambda now: uac.layer.send_request(request, peer, now)[1])
        got = await uac.first(ResponseReceived)
        assert got.response.status == 200
    finally:
        await client.close()
