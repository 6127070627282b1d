"""The trunk the edge router names (X-Switchboard-Trunk, X-Switchboard-Account) is believed
only from a router's address: the inbound leg's ``trunk`` and ``accountcode`` (its CDR,
credit control and rating) come from the router, never from a phone or carrier that
reaches the node directly (docs/router.md "Trunks")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from switchboard.media.cdr import build_cdr
from switchboard.sip.ids import leg_of_tag
from switchboard.sip.message import Response
from tests.support.media import start_node
from tests.support.sip_peer import SDP, Peer, final, request

pytestmark = [pytest.mark.timeout(60)]

HEADERS = (
    "X-Switchboard-Trunk: premium\nX-Switchboard-Account: victim\n"
    "X-Switchboard-Verstat: TN-Validation-Passed\nX-Switchboard-Attestation: A\n"
)


async def call_with_trunk_headers(tmp: Path, overrides: dict[str, Any]) -> dict[str, str]:
    node, _ = await start_node(tmp, overrides)
    peer = await Peer.udp()
    port = node.sip_port
    try:
        offer = SDP.format(ver=1, port=40000, fmt="0", dir="sendrecv")
        peer.send(request(peer, "INVITE", port, call_id="t1", cseq=1, branch="t1",
                          body=offer, extra=HEADERS), port)  # fmt: skip
        ok = await peer.expect(final)
        assert isinstance(ok, Response) and ok.status == 200
        [s] = list(node.switch.sessions)
        cdr = build_cdr(s, "media-1")
        return {"trunk": cdr.trunk, "account": cdr.account, "verstat": cdr.verstat,
                "attestation": cdr.attestation}  # fmt: skip
    finally:
        peer.close()
        await node.stop()


async def test_trunk_headers_from_the_router_name_the_trunk_and_account(tmp_path: Path) -> None:
    # the router listens on 127.0.0.1 (the default): the peer's INVITE is the router's
    got = await call_with_trunk_headers(tmp_path, {})
    # and its STIR/SHAKEN verdict (docs/compliance.md "STIR/SHAKEN") on the CDR
    assert got == {"trunk": "premium", "account": "victim", "verstat": "TN-Validation-Passed",
                   "attestation": "A"}  # fmt: skip


async def test_trunk_headers_from_anyone_else_are_ignored(tmp_path: Path) -> None:
    # the router is elsewhere; 127.0.0.1 is merely trusted (a phone, a carrier)
    got = await call_with_trunk_headers(tmp_path, {"router": {"listen": ["udp:127.0.0.9:5060"]}})
    assert got == {"trunk": "", "account": "", "verstat": "", "attestation": ""}


async def test_media_routers_names_more_edge_routers(tmp_path: Path) -> None:
    got = await call_with_trunk_headers(
        tmp_path,
        {"router": {"listen": ["udp:127.0.0.9:5060"]}, "media": {"routers": ["127.0.0.0/30"]}},
    )
    assert got["trunk"] == "premium" and got["account"] == "victim"


async def test_verstat_reaches_the_callee_in_p_asserted_identity(tmp_path: Path) -> None:
    """[stir] verstat_to_callee: the router's P-Asserted-Identity with verstat goes on in
    the B-leg's INVITE to the carrier; without a verdict the B-leg has no PAI."""
    carrier = await Peer.udp()
    node, _ = await start_node(
        tmp_path, {"gateways": {"carrier": {"proxy": f"127.0.0.1:{carrier.port}"}}}
    )
    peer = await Peer.udp()
    pai = "<sip:+12155550121;verstat=TN-Validation-Passed@carrier.example>"
    try:
        for n, extra in enumerate((HEADERS + f"P-Asserted-Identity: {pai}\n", "")):
            offer = SDP.format(ver=1, port=40000, fmt="0", dir="sendrecv")
            req = request(peer, "INVITE", node.sip_port, call_id=f"v{n}", cseq=1,
                          branch=f"v{n}", body=offer, extra=extra)  # fmt: skip
            peer.send(req.replace("sip:echo@", "sip:+12155550131@", 2), node.sip_port)
            out = await carrier.expect(lambda m: getattr(m, "method", "") == "INVITE")
            got = out.headers.get("P-Asserted-Identity")  # type: ignore[attr-defined]
            assert got == (pai if n == 0 else None), got
            # the B-leg's From tag names its channel and its A-leg (the router bills the
            # legs of a node lost with its box under them: docs/router.md)
            ids = leg_of_tag(out.from_tag or "")  # type: ignore[attr-defined]
            assert ids is not None
            b_leg = node.switch.session(ids[0])
            assert b_leg is not None and b_leg.channel.direction == "outbound"
            assert b_leg.channel.variables.get("originating_leg_uuid") == ids[1]
            a_leg = node.switch.session(ids[1])
            assert a_leg is not None and a_leg.channel.direction == "inbound"
    finally:
        peer.close()
        carrier.close()
        await node.stop()
