"""An emergency caller's location by value (RFC 6442: ``Geolocation: <cid:…>`` naming a
PIDF-LO part of a ``multipart/mixed`` body, RFC 5621) reaches the emergency service
unchanged through a media node: the node answers the SDP part and sends the PIDF-LO part
on next to its own offer in the B-leg's INVITE. An ordinary call's location stays with
the node (docs/compliance.md "Emergency calls")."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.sdp.session import parse_sdp
from switchboard.sip import multipart
from switchboard.sip.message import Request, Response, make_response
from tests.support.media import start_node
from tests.support.sip_peer import SDP, Peer, request

pytestmark = [pytest.mark.timeout(60)]

PIDF = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:+447700900123@caller.example">\n'
    '<tuple id="t1"><status><geopriv><location-info><Point srsName="urn:ogc:def:crs:EPSG::4326">'
    "<pos>51.5007 -0.1246</pos></Point></location-info></geopriv></status></tuple>\n"
    "</presence>\n"
)


def body(offer: str) -> str:
    return (
        "--geo\nContent-Type: application/sdp\n\n" + offer + "\n"
        "--geo\nContent-Type: application/pidf+xml\nContent-ID: <loc1@caller.example>\n\n"
        + PIDF + "\n--geo--\n"
    )  # fmt: skip


async def test_location_by_value_goes_on_with_an_emergency_call(tmp_path: Path) -> None:
    carrier = await Peer.udp()
    node, _ = await start_node(
        tmp_path, {"gateways": {"carrier": {"proxy": f"127.0.0.1:{carrier.port}"}}}
    )
    caller = await Peer.udp()
    seen: set[str] = set()
    try:
        for n, number in enumerate(("112", "+442071234567")):
            offer = SDP.format(ver=1, port=40000 + 2 * n, fmt="0", dir="sendrecv")
            req = request(
                caller, "INVITE", node.sip_port, call_id=f"g{n}", cseq=1, branch=f"g{n}",
                body=body(offer), ctype="multipart/mixed;boundary=geo",
                extra="Geolocation: <cid:loc1@caller.example>\nGeolocation-Routing: no\n",
            )  # fmt: skip
            caller.send(req.replace("sip:echo@", f"sip:{number}@", 2), node.sip_port)
            out = await carrier.expect(
                lambda m: isinstance(m, Request) and m.method == "INVITE" and m.call_id not in seen
            )
            assert isinstance(out, Request)
            seen.add(out.call_id)
            # busy: the node's leg ends at once (no CANCEL to wait out at the end)
            assert carrier.transport is not None
            carrier.transport.sendto(make_response(out, 486, "Busy Here", to_tag="c").to_bytes(),
                                     ("127.0.0.1", out.top_via.port or 5060))  # fmt: skip
            ctype = out.headers.get("Content-Type") or ""
            if number == "112":
                assert ctype.startswith("multipart/mixed;boundary=")
                parts = multipart.split(ctype, out.body)
                assert parts is not None
                assert [p.content_type for p in parts] == [
                    "application/sdp",
                    "application/pidf+xml",
                ]
                parse_sdp(parts[0].body)  # our own offer
                assert parts[1].body.decode() == PIDF.replace("\n", "\r\n")
                assert parts[1].headers == (("Content-ID", "<loc1@caller.example>"),)
                assert out.headers.get("Geolocation") == "<cid:loc1@caller.example>"
                assert out.headers.get("Geolocation-Routing") == "no"
            else:  # an ordinary call: answered from the SDP part, its location not passed on
                assert ctype == "application/sdp"
                assert out.headers.get("Geolocation") is None
        # a multipart body that is not one is refused
        bad = request(caller, "INVITE", node.sip_port, call_id="bad", cseq=1, branch="bad",
                      body="no boundary in here\n",
                      ctype="multipart/mixed;boundary=x")  # fmt: skip
        caller.send(bad, node.sip_port)
        resp = await caller.expect(
            lambda m: isinstance(m, Response) and m.status >= 400 and m.call_id == "bad"
        )
        assert isinstance(resp, Response) and resp.status == 415
    finally:
        caller.close()
        carrier.close()
        await node.stop()
