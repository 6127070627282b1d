"""Dual-stack forwarding in the proxy core: the interface of the next hop's family."""

from __future__ import annotations

from switchboard.router.dispatcher import Dispatcher, ProbingConfig, parse_list
from switchboard.router.proxy import Interface, Proxy
from tests.support.sipmsg import header, invite, response_to

UAC6 = ("::1", 5070)
M4 = ("127.0.0.1", 5081)
M6 = ("::1", 5082)


def dual_proxy(listing: str, *, v6: bool = True) -> Proxy:
    d = Dispatcher(
        parse_list(listing),
        algorithm=4,
        probing=ProbingConfig(
            ping_interval=5, ping_timeout=1, probing_threshold=2, inactive_threshold=1
        ),
        now=1e9,
    )
    ifaces = [Interface("udp", "127.0.0.1", 5060)]
    if v6:
        ifaces.append(Interface("udp", "[::1]", 5060))
    return Proxy(ifaces, d, secret=b"test")


def test_ipv6_caller_to_ipv4_node_doubles_record_route_and_comes_back() -> None:
    p = dual_proxy("1 sip:127.0.0.1:5081\n")
    inv = invite(via="[::1]:5070", ruri="sip:echo@[::1]:5060")
    out = p.receive(inv, "udp", UAC6, None, 0.0)
    fwd = next(s for s in out if s.addr == M4)
    assert header(fwd.data, "Via")[0].startswith("SIP/2.0/UDP 127.0.0.1:5060;branch=")
    # The node's side first (it is the one reading the top entry), then the caller's.
    assert header(fwd.data, "Record-Route") == [
        "<sip:127.0.0.1:5060;transport=udp;lr>",
        "<sip:[::1]:5060;transport=udp;lr>",
    ]
    ok = p.receive(response_to(fwd.data, 200), "udp", M4, None, 0.1)
    assert [s.addr for s in ok] == [UAC6]
    # The caller's in-dialog request names the IPv6 entry first; it goes to the node.
    bye = invite(
        method="BYE",
        via="[::1]:5070",
        branch="z9hG4bK-bye",
        to_tag="uas1",
        cseq=2,
        ruri="sip:uas@127.0.0.1:5081",
        route="<sip:[::1]:5060;transport=udp;lr>, <sip:127.0.0.1:5060;transport=udp;lr>",
    )
    out = p.receive(bye, "udp", UAC6, None, 0.2)
    sent = [s for s in out if s.addr == M4]
    assert len(sent) == 1 and "Route" not in sent[0].data.decode()
    assert header(sent[0].data, "Via")[0].startswith("SIP/2.0/UDP 127.0.0.1:5060;")


def test_received_parameter_has_no_brackets() -> None:
    p = dual_proxy("1 sip:127.0.0.1:5081\n")
    inv = invite(via="[::2]:5070", ruri="sip:echo@[::1]:5060")
    out = p.receive(inv, "tcp", ("[::1]", 40000), None, 0.0)
    # no tcp interface here: the branch fails, but the 100 Trying shows the Via as kept
    trying = out[0].data.decode()
    assert "received=::1" in trying and "received=[" not in trying


def test_ipv6_node_without_an_ipv6_interface_fails_over_not_crashes() -> None:
    p = dual_proxy("1 sip:[::1]:5082\n1 sip:127.0.0.1:5081\n", v6=False)
    out = p.receive(invite(), "udp", ("127.0.0.1", 5070), None, 0.0)
    assert not any(s.addr == M6 for s in out)
    assert any(s.addr == M4 and s.data.startswith(b"INVITE ") for s in out)
