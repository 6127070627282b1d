"""RFC 4475 torture tests, run against the bytes in ``tests/data/rfc4475``.

Every message of RFC 4475 §3.1.1 (valid), §3.1.2 (invalid), §3.2 (transaction
layer), §3.3 (application layer) and §3.4 (RFC 2543 compatibility) is listed below
with what this parser does and why.  "Strict" means
``parse_message(data, strict=True)``, i.e. the full parse a UAS applies; a proxy
uses the lazy ``parse_message(data)`` and touches only the headers it needs, which
is what the RFC allows it to do for several of the §3.1.2 cases.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.sip.errors import (
    BadExtension,
    SipParseError,
    TooManyHops,
    UnsupportedUriScheme,
    VersionNotSupported,
    bad_extension,
    too_many_hops,
)
from switchboard.sip.headers import Via
from switchboard.sip.message import Message, Request, Response, make_response, parse_message
from switchboard.sip.uri import NameAddr

DATA = Path(__file__).resolve().parents[2] / "data" / "rfc4475"


def load(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


# §3.1.1: valid messages.  Every one parses strictly and round-trips.
VALID = [
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
]
# §3.3 / §3.4 messages that are syntactically valid; the application decides.
SEMANTIC_VALID = [
    "badbranch",
    "unksm2",
    "bext01",
    "invut",
    "regaut01",
    "bcast",
    "zeromf",
    "cparam01",
    "cparam02",
    "regescrt",
    "sdp01",
    "inv2543",
]
# §3.1.2 cases rejected already by the lazy parse a proxy does (start line, framing).
REJECT_ON_PARSE = {
    "clerr": 400,  # body shorter than Content-Length on UDP
    "ncl": 400,  # negative Content-Length
    "ltgtruri": 400,  # Request-URI in <>
    "lwsruri": 400,  # LWS inside the Request-URI
    "lwsstart": 400,  # several SP between start-line elements
    "trws": 400,  # trailing SP after SIP-Version
    "badvers": 505,  # SIP/7.0
    "bigcode": 400,  # status code of 10 digits
    "mcl01": 400,  # two different Content-Length values (§3.3.9)
}
# Cases the lazy parse accepts (a proxy may forward them) but the full parse rejects.
REJECT_ON_FULL_PARSE = {
    "badinv01": 400,  # ;;,;,, in Via and ;;;; in Contact
    "scalar02": 400,  # CSeq > 2**31, Max-Forwards 300, huge Expires
    "scalarlg": 400,  # response CSeq too large: the element discards it
    "quotbal": 400,  # unterminated quoted display name
    "escruri": 400,  # headers in the Request-URI
    "regbadct": 400,  # addr-spec Contact with '?' must use <>
    "badaspec": 400,  # spaces inside <...>
    "baddn": 400,  # unquoted display name with ','
    "mismatch01": 400,  # CSeq method differs from the request method
    "mismatch02": 501,  # unknown method + mismatch: 501 preferred by the RFC
    "insuf": 400,  # To/From/Call-ID missing (§3.3.1)
    "multi01": 400,  # several Call-ID/CSeq/To/From (§3.3.8)
    "unkscm": 416,  # unknown Request-URI scheme (§3.3.2)
    "novelsc": 416,  # soap.beep: Request-URI (§3.3.3)
}


def test_every_rfc4475_message_is_transcribed_and_classified() -> None:
    files = {p.stem for p in DATA.glob("*.dat")}
    classified = (
        set(VALID)
        | set(SEMANTIC_VALID)
        | set(REJECT_ON_PARSE)
        | set(REJECT_ON_FULL_PARSE)
        | {"baddate"}
    )
    assert len(files) == 49
    assert files == classified


def _headers_without_length(m: Message) -> list[tuple[str, str]]:
    return [(n, v) for n, v in m.headers if n.lower() not in ("content-length", "l")]


def _assert_round_trip(m: Message) -> None:
    again = parse_message(m.to_bytes(), strict=True)
    assert type(again) is type(m)
    assert again.start_line() == m.start_line()
    assert _headers_without_length(again) == _headers_without_length(m)
    assert again.body == m.body and again.content_length == len(m.body)
    # Structured headers re-serialise to something that parses back equal.
    for via in m.vias:
        assert Via.parse(str(via)) == via
    for na in [m.from_, m.to, *m.routes, *m.record_routes, *m.contacts]:
        assert NameAddr.parse(str(na)) == na


@pytest.mark.parametrize("name", VALID + SEMANTIC_VALID)
def test_valid_messages_parse_and_round_trip(name: str) -> None:
    m = parse_message(load(name), strict=True)
    _assert_round_trip(m)


@pytest.mark.parametrize("name", sorted(REJECT_ON_PARSE))
def test_invalid_framing_and_start_lines_rejected_on_parse(name: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(load(name))
    assert info.value.status == REJECT_ON_PARSE[name] and info.value.blame == "peer"
    if name == "badvers":
        assert isinstance(info.value, VersionNotSupported)


@pytest.mark.parametrize("name", sorted(REJECT_ON_FULL_PARSE))
def test_invalid_messages_rejected_by_full_parse(name: str) -> None:
    lazy = parse_message(load(name))  # a proxy's parse does not choke...
    assert lazy.headers  # ...and keeps every header for inspection
    with pytest.raises(SipParseError) as info:
        lazy.parse_all()
    assert info.value.status == REJECT_ON_FULL_PARSE[name]
    if info.value.status == 416:
        assert isinstance(info.value, UnsupportedUriScheme)


def test_wsinv_details() -> None:
    m = parse_message(load("wsinv"), strict=True)
    assert isinstance(m, Request)
    assert m.ruri.params == {"unknownparam": None}
    assert m.to_tag == "1918181833n" and m.from_tag == "98asjd8"
    assert m.from_.display == 'J Rosenberg \\"'
    assert m.max_forwards == 68 and m.cseq.seq == 9 and m.cseq.method == "INVITE"
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert m.routes[0].uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    (contact,) = m.contacts
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert contact.q == 0.33
    assert len(m.body) == 150


def test_intmeth_details() -> None:
    m = parse_message(load("intmeth"), strict=True)
    assert isinstance(m, Request)
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.ruri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.ruri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert m.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert m.from_tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_escapes() -> None:
    esc01 = parse_message(load("esc01"), strict=True)
    assert isinstance(esc01, Request)
    assert esc01.ruri.user_unescaped == "sips:user@example.com"
    assert esc01.to.uri.user_unescaped == "user"
    assert esc01.from_.uri.user_unescaped == "I have spaces"
    (c,) = esc01.contacts
    assert c.uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    escnull = parse_message(load("escnull"), strict=True)
    assert [x.uri.user_unescaped for x in escnull.contacts] == ["\x00", "\x00\x00"]
    assert escnull.to.uri.user_unescaped == "null-\x00-null"
    esc02 = parse_message(load("esc02"), strict=True)
    assert isinstance(esc02, Request) and esc02.method == "RE%47IST%45R"
    assert esc02.to.display == "%Z%45"
    assert [str(x.uri) for x in esc02.contacts] == [
        "sip:alias1@host1.example.com",
        "sip:alias3@host3.example.com",
    ]
    assert esc02.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    semi = parse_message(load("semiuri"), strict=True)
    assert isinstance(semi, Request)
    assert semi.ruri.user == "user;par=u%40example.net" and semi.ruri.host == "example.com"
    assert semi.headers.get_all("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_long_request() -> None:
    m = parse_message(load("longreq"), strict=True)
    assert len(m.vias) == 34 and m.vias[0].host == "sip33.example.com"
    assert m.vias[-1].received == "192.0.2.5" and m.vias[-1].branch is not None
    assert m.to.uri.port == 6000 and m.from_tag == "12" + "982" * 50 + "424"


def test_dblreq_discards_the_trailing_invite() -> None:
    m = parse_message(load("dblreq"), strict=True)
    assert isinstance(m, Request) and m.method == "REGISTER" and m.body == b""
    assert b"INVITE" not in m.to_bytes()


def test_transports_and_responses() -> None:
    t = parse_message(load("transports"), strict=True)
    assert [v.transport for v in t.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    u = parse_message(load("unreason"), strict=True)
    assert isinstance(u, Response) and u.status == 200
    assert u.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    n = parse_message(load("noreason"), strict=True)
    assert isinstance(n, Response) and (n.status, n.reason) == (100, "")
    mp = parse_message(load("mpart01"), strict=True)
    assert (
        len(mp.body) == 553 and b"\x00" in mp.body and mp.body.endswith(b"--7a9cbec02ceef655--\r\n")
    )
    assert mp.date is not None and mp.date.year == 2005


def test_baddate_is_accepted_unless_the_date_is_used() -> None:
    # §3.1.2.11: rejecting is allowed only if the Date matters to the element.
    m = parse_message(load("baddate"), strict=True)
    assert m.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"
    with pytest.raises(SipParseError):
        _ = m.date


def test_badbranch_falls_back_to_rfc2543_matching() -> None:
    m = parse_message(load("badbranch"), strict=True)
    assert m.top_via.branch == "z9hG4bK" and not m.top_via.is_rfc3261_branch


def test_unknown_schemes_outside_the_request_uri() -> None:
    m = parse_message(load("unksm2"), strict=True)
    assert (m.to.uri.scheme, m.to.uri.opaque) == ("isbn", "2983792873")
    assert m.from_.uri.scheme == "http" and m.contacts[0].uri.scheme == "name"


def test_bext01_gets_420_with_unsupported() -> None:
    m = parse_message(load("bext01"), strict=True)
    assert isinstance(m, Request)
    assert m.headers.get_all("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    with pytest.raises(BadExtension) as info:
        bad_extension(m.headers.get_all("Require"))
    r = make_response(
        m, info.value.status, info.value.reason, to_tag="x", headers=info.value.headers
    )
    out = parse_message(r.to_bytes())
    assert isinstance(out, Response) and out.status == 420
    assert out.headers.get_all("Unsupported") == [
        "nothingSupportsThis",
        "nothingSupportsThisEither",
    ]


def test_application_layer_cases() -> None:
    invut = parse_message(load("invut"), strict=True)
    assert invut.media_type == "application/unknownformat" and len(invut.body) == 40
    regaut = parse_message(load("regaut01"), strict=True)
    assert regaut.headers.get_all("Authorization") == ["NoOneKnowsThisScheme opaque-data=here"]
    bcast = parse_message(load("bcast"), strict=True)
    assert [v.host for v in bcast.vias] == ["192.0.2.198", "255.255.255.255"]
    zeromf = parse_message(load("zeromf"), strict=True)
    assert zeromf.max_forwards == 0
    with pytest.raises(TooManyHops) as info:
        too_many_hops()  # what a proxy does before forwarding it (§16.3 step 3)
    assert info.value.status == 483
    c1 = parse_message(load("cparam01"), strict=True).contacts[0]
    assert c1.params == {"unknownparam": None} and c1.uri.params == {}
    c2 = parse_message(load("cparam02"), strict=True).contacts[0]
    assert c2.params == {} and c2.uri.params == {"unknownparam": None}
    rc = parse_message(load("regescrt"), strict=True).contacts[0]
    assert rc.uri.headers == {"Route": "%3Csip:sip.example.com%3E"}
    sdp01 = parse_message(load("sdp01"), strict=True)
    assert sdp01.headers.get("Accept") == "text/nobodyKnowsThis"


def test_inv2543_accepted() -> None:
    m = parse_message(load("inv2543"), strict=True)
    assert m.max_forwards is None and m.content_length is None
    assert m.top_via.branch is None and m.from_tag is None
    assert m.to.params == {"user": "phone"}  # addr-spec form: a header parameter
    assert m.body.startswith(b"v=0\r\n") and m.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")
