"""Header list, names, compact forms, Via and CSeq (RFC 3261 §7.3, §20)."""

from __future__ import annotations

import pytest

from switchboard.sip.errors import SipParseError
from switchboard.sip.headers import CSeq, Headers, Via, canonical_name, header_key, parse_vias


@pytest.mark.parametrize(
    ("compact", "full"),
    [
        ("i", "Call-ID"),
        ("m", "Contact"),
        ("e", "Content-Encoding"),
        ("l", "Content-Length"),
        ("c", "Content-Type"),
        ("f", "From"),
        ("s", "Subject"),
        ("k", "Supported"),
        ("t", "To"),
        ("v", "Via"),
        ("o", "Event"),
        ("u", "Allow-Events"),
        ("r", "Refer-To"),
        ("b", "Referred-By"),
        ("x", "Session-Expires"),
        ("y", "Identity"),
    ],
)
def test_compact_forms(compact: str, full: str) -> None:
    assert header_key(compact) == full.lower() == header_key(compact.upper())
    assert canonical_name(compact) == full
    h = Headers([(compact.upper(), "x")])
    assert h.get(full) == "x" and full in h and full.upper() in h


def test_lookup_is_case_insensitive_and_order_preserved() -> None:
    h = Headers(
        [("VIA", "SIP/2.0/UDP a"), ("x-Custom", "1"), ("v", "SIP/2.0/UDP b"), ("X-CUSTOM", "2")]
    )
    assert h.get_all("via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b"]
    assert h.get_all("X-Custom") == ["1", "2"]
    assert list(h) == [
        ("VIA", "SIP/2.0/UDP a"),
        ("x-Custom", "1"),
        ("v", "SIP/2.0/UDP b"),
        ("X-CUSTOM", "2"),
    ]
    assert h.get("missing") is None and "missing" not in h
    assert canonical_name("x-custom") == "x-custom"


def test_get_all_splits_only_list_headers() -> None:
    h = Headers(
        [
            ("Route", "<sip:a;lr>, <sip:b;lr>"),
            ("Route", "<sip:c;lr>"),
            ("Contact", '"Doe, J" <sip:j@x>, <sip:k@y>'),
            ("WWW-Authenticate", 'Digest realm="a", nonce="b"'),
            ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
            ("X-Unknown", "a, b"),
            ("Allow", "INVITE, ACK,BYE"),
        ]
    )
    assert h.get_all("route") == ["<sip:a;lr>", "<sip:b;lr>", "<sip:c;lr>"]
    assert h.get("route") == "<sip:a;lr>"
    assert h.get_all("m") == ['"Doe, J" <sip:j@x>', "<sip:k@y>"]
    assert h.get_all("WWW-Authenticate") == ['Digest realm="a", nonce="b"']
    assert h.get("Date") == "Sat, 13 Nov 2010 23:29:00 GMT"
    assert h.get_all("x-unknown") == ["a, b"]
    assert h.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    assert h.get_lines("route") == ["<sip:a;lr>, <sip:b;lr>", "<sip:c;lr>"]


def test_mutations() -> None:
    h = Headers(
        [
            ("From", "a"),
            ("Via", "v1"),
            ("Route", "<sip:r1;lr>, <sip:r2;lr>"),
            ("Max-Forwards", "70"),
        ]
    )
    h.insert("Via", "v0")
    h.insert("Record-Route", "<sip:me;lr>")
    assert [n for n, _ in h] == ["Record-Route", "From", "Via", "Via", "Route", "Max-Forwards"]
    assert h.get_all("via") == ["v0", "v1"]
    assert h.remove_first("Route") == "<sip:r1;lr>"
    assert h.get_all("Route") == ["<sip:r2;lr>"]
    assert h.remove_first("Route") == "<sip:r2;lr>"
    assert "Route" not in h and h.remove_first("Route") is None
    h.set("max-forwards", "69")
    assert h.get("Max-Forwards") == "69" and h.count("max-forwards") == 1
    assert [n for n, _ in h][-1] == "Max-Forwards"  # name kept as spelled there
    h.add("X-A", "1")
    h.add("x-a", "2")
    h.set("X-A", "3")
    assert h.get_all("x-a") == ["3"]
    assert h.remove("x-a") == 1 and h.remove("x-a") == 0
    with pytest.raises(ValueError):
        h.add("Bad Name", "x")
    with pytest.raises(ValueError):
        h.add("X-Inject", "a\r\nVia: evil")


def test_mutation_clears_cache_and_copy_is_independent() -> None:
    h = Headers([("Via", "v1")])
    h.cache["x"] = 1
    c = h.copy()
    h.add("Via", "v2")
    assert h.cache == {}
    assert c.get_all("via") == ["v1"]


class TestVia:
    def test_full(self) -> None:
        v = Via.parse(
            "SIP/2.0/udp host.example.com:5060;branch=z9hG4bK776;received=1.2.3.4;rport=5061;maddr=224.2.0.1;ttl=16"
        )
        assert (v.transport, v.host, v.port) == ("UDP", "host.example.com", 5060)
        assert v.branch == "z9hG4bK776" and v.received == "1.2.3.4" and v.rport == "5061"
        assert v.maddr == "224.2.0.1" and v.ttl == 16 and v.is_rfc3261_branch

    def test_rport_states(self) -> None:
        assert Via.parse("SIP/2.0/UDP h;branch=z9hG4bKa").rport is None
        assert Via.parse("SIP/2.0/UDP h;rport;branch=z9hG4bKa").rport == ""
        assert Via.parse("SIP/2.0/UDP h;rport=1;branch=z9hG4bKa").rport == "1"

    def test_lws_everywhere_and_ipv6(self) -> None:
        v = Via.parse("SIP  /   2.0 /UDP    192.0.2.2;rport;branch=390skdjuw")
        assert (v.transport, v.host, v.branch, v.rport) == ("UDP", "192.0.2.2", "390skdjuw", "")
        v6 = Via.parse("SIP/2.0/TCP [2001:db8::9:255]:5070 ; branch = z9hG4bKas3")
        assert v6.host == "[2001:db8::9:255]" and v6.port == 5070 and v6.branch == "z9hG4bKas3"
        assert not Via.parse("SIP/2.0/UDP h;branch=390skdjuw").is_rfc3261_branch

    def test_str_round_trip(self) -> None:
        v = Via("TCP", "10.0.0.1", 5070, {"branch": "z9hG4bKx", "rport": None})
        assert str(v) == "SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bKx;rport"
        assert Via.parse(str(v)) == v

    def test_comma_joined(self) -> None:
        vs = parse_vias("SIP/2.0/UDP a;branch=z9hG4bK1 , SIP/2.0/TCP b:5070;branch=z9hG4bK2")
        assert [(v.host, v.branch) for v in vs] == [("a", "z9hG4bK1"), ("b", "z9hG4bK2")]

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "SIP/2.0 host",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP host;ttl=300",
            "SIP/2.0/UDP host;branch=a b",
            "SIP/2.0/UDP host;;branch=x",
            "SIP/2.0/UDP host junk",
        ],
    )
    def test_bad(self, text: str) -> None:
        with pytest.raises(SipParseError):
            Via.parse(text)


class TestCSeq:
    def test_parse_and_str(self) -> None:
        assert CSeq.parse("0009\r\n  INVITE".replace("\r\n", "")) == CSeq(9, "INVITE")
        assert str(CSeq(4711, "BYE")) == "4711 BYE"
        assert CSeq.parse("  2147483647 OPTIONS ") == CSeq(2**31 - 1, "OPTIONS")

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "1",
            "INVITE",
            "-1 INVITE",
            "2147483648 INVITE",
            "36893488147419103232 REGISTER",
            "1 INV ITE",
            "1 INV@",
        ],
    )
    def test_bad(self, text: str) -> None:
        with pytest.raises(SipParseError):
            CSeq.parse(text)


class TestIds:
    """Branch/tag/Call-ID generation (ids.py) is pure: entropy comes from the caller."""

    def test_branch_has_magic_cookie_and_parses_in_a_via(self) -> None:
        from switchboard.sip.ids import new_branch

        b = new_branch(bytes(range(16)))
        assert b.startswith("z9hG4bK") and len(b) > 7 + 16
        assert b == new_branch(bytes(range(16)))  # deterministic for the same bytes
        assert b != new_branch(bytes(range(1, 17)))
        v = Via.parse(f"SIP/2.0/UDP 10.0.0.1:5060;branch={b}")
        assert v.branch == b and v.is_rfc3261_branch

    def test_tag_and_call_id_are_tokens(self) -> None:
        from switchboard.sip.ids import new_call_id, new_tag
        from switchboard.sip.uri import is_token

        tag = new_tag(b"\xff" * 8)
        assert is_token(tag)
        cid = new_call_id(b"\x00" * 12, "switchboard.example.net")
        assert cid.endswith("@switchboard.example.net") and is_token(cid.split("@")[0])
        assert "@" not in new_call_id(b"\x01" * 12)

    def test_too_little_entropy_is_refused(self) -> None:
        from switchboard.sip.ids import new_tag

        with pytest.raises(ValueError):
            new_tag(b"1234")
