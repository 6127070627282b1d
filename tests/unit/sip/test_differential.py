"""One grammar: the router's fast path (:mod:`switchboard.sip.fastpath`) and the SIP
core's full parse (``parse_message(data, strict=True)``) must agree on every message.

Agreement means the same verdict (valid, or invalid with the same response status) and,
for a valid message, the same value for everything both read: method, Request-URI (and
the host/port/transport a proxy sends to), every Via's transport/host/port/branch/
received/rport, Call-ID, CSeq, From and To tags, Max-Forwards, Route and Record-Route,
Content-Length and the body.  Inputs: the 49 RFC 4475 messages, the property generators
of ``tests/support/sipgen.py`` (shared with ``test_properties.py``), a generator of
valid-but-unusual requests, and the committed fuzz corpus (``tests/support/fuzz_corpus.py``).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchboard.sip import fastpath
from switchboard.sip.errors import SipParseError
from switchboard.sip.message import Request, parse_message
from tests.support import fuzz_corpus
from tests.support.sipgen import DATA, build, headers, methods, mutated, values

_DEFAULT_PORT = {"udp": 5060, "tcp": 5060, "tls": 5061, "sctp": 5060, "ws": 80, "wss": 443}


def _s(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _target(uri: Any) -> tuple[str, str, int]:
    """What the core's parsed SIP URI says a proxy sends to (§19.1.1, §18.1.1)."""
    transport = (uri.params.get("transport") or ("tls" if uri.scheme == "sips" else "")).lower()
    maddr = uri.params.get("maddr")
    host = (maddr or uri.host).lower()
    return transport, host, uri.port or _DEFAULT_PORT.get(transport or "udp", 5060)


def core_view(data: bytes) -> tuple[str, Any]:
    try:
        m = parse_message(data, strict=True)
    except SipParseError as exc:
        return "invalid", exc.status
    view: dict[str, Any] = {}
    if isinstance(m, Request):
        view["method"] = m.method
        view["uri"] = m.uri
        if m.ruri.scheme in ("sip", "sips"):
            view["target"] = _target(m.ruri)
    else:
        view["status"] = m.status
    view["vias"] = [
        (
            v.transport.lower(),
            v.host.lower(),
            v.port or _DEFAULT_PORT.get(v.transport.lower(), 5060),
            v.branch or "",
            v.received or "",
            v.rport,
        )
        for v in m.vias
    ]
    view["top_branch"] = m.top_via.branch or ""
    view["call_id"] = m.call_id
    view["cseq"] = (m.cseq.seq, m.cseq.method)
    view["tags"] = (m.from_tag or "", m.to_tag or "")
    view["max_forwards"] = m.max_forwards
    view["routes"] = m.headers.get_all("route")
    view["record_routes"] = m.headers.get_all("record-route")
    if m.routes and m.routes[0].uri.scheme in ("sip", "sips"):
        view["route_target"] = _target(m.routes[0].uri)
    view["content_length"] = m.content_length
    view["body"] = m.body
    return "valid", view


def _values(m: fastpath.Message, lines: list[int]) -> list[str]:
    out: list[str] = []
    for i in lines:
        rest = m.value(i)
        while rest:
            first, rest = fastpath.first_value(rest)
            if first:
                out.append(_s(first))
    return out


def fast_view(data: bytes) -> tuple[str, Any]:
    try:
        m = fastpath.parse(data)
        fastpath.validate(m)
    except fastpath.BadMessage as exc:
        return "invalid", exc.status
    view: dict[str, Any] = {}
    if m.method:
        view["method"] = _s(m.method)
        view["uri"] = _s(m.ruri)
        if m.ruri[:4].lower() in (b"sip:", b"sips"):
            transport, host, port, _ = fastpath.uri_target(m.ruri)
            view["target"] = (transport, host, port)
    else:
        view["status"] = m.status
    vias = []
    for raw in _values(m, m.vias):
        v = fastpath.Via(raw.encode("utf-8", "surrogateescape"))
        rport = None if v.rport is None else _s(v.rport)
        vias.append((v.transport, v.host, v.port, _s(v.branch), _s(v.received), rport))
    view["vias"] = vias
    view["top_branch"] = _s(fastpath.branch_of(m.top_via()))
    view["call_id"] = _s(m.call_id)
    view["cseq"] = (int(m.cseq_num), _s(m.cseq_method))
    view["tags"] = (_s(m.from_tag()), _s(m.to_tag()))
    view["max_forwards"] = int(m.value(m.maxfwd)) if m.maxfwd >= 0 else None
    view["routes"] = _values(m, m.routes)
    view["record_routes"] = _values(m, m.rrs)
    if view["routes"]:
        try:
            transport, host, port, _ = fastpath.uri_target(view["routes"][0].encode())
            view["route_target"] = (transport, host, port)
        except fastpath.BadMessage as exc:
            assert exc.status == 416  # not a sip/sips URI: the proxy answers 416
    view["content_length"] = int(m.value(m.cl)) if m.cl >= 0 else None
    view["body"] = m.body
    return "valid", view


def assert_agree(data: bytes) -> str:
    core = core_view(data)
    fast = fast_view(data)
    assert fast == core, data
    return core[0]


RFC4475 = sorted(p.stem for p in DATA.glob("*.dat"))


@pytest.mark.parametrize("name", RFC4475)
def test_rfc4475_messages_agree(name: str) -> None:
    assert_agree((DATA / f"{name}.dat").read_bytes())


def test_fuzz_corpus_is_what_the_generator_makes() -> None:
    assert fuzz_corpus.load() == fuzz_corpus.generate()


def test_fuzz_corpus_agrees() -> None:
    verdicts = [assert_agree(data) for data in fuzz_corpus.load()]
    # the corpus exercises both sides of the verdict, not only rejections
    assert verdicts.count("valid") >= 50 and verdicts.count("invalid") >= 50


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(methods, headers, st.binary(max_size=50))
def test_generated_requests_agree(method: str, hdrs: list[tuple[str, str]], body: bytes) -> None:
    assert_agree(build(f"{method} sip:user@example.com SIP/2.0", hdrs, body))


@SETTINGS
@given(st.integers(100, 699), values, headers)
def test_generated_responses_agree(status: int, reason: str, hdrs: list[tuple[str, str]]) -> None:
    assert_agree(build(f"SIP/2.0 {status} {reason}", hdrs, b""))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_messages_agree(data: bytes) -> None:
    assert_agree(data)


# Valid messages with the variations a proxy meets: odd spacing, compact and odd-case
# names, folded lines, comma-joined Vias and Routes, IPv6, parameters with and without
# values, quoted display names — so the value comparison is exercised, not only verdicts.
_ws = st.sampled_from(["", " ", "\t", "  "])
_hosts = st.sampled_from(["192.0.2.1", "Example.COM", "[2001:db8::1]", "h-1.example.net"])
_ports = st.one_of(st.none(), st.integers(1, 65535))
_tokens = st.text(alphabet="abcXYZ019-.!%*_+`'~", min_size=1, max_size=8)


@st.composite
def _via(draw: st.DrawFn) -> str:
    transport = draw(st.sampled_from(["UDP", "tcp", "TLS", "SCTP", "WS"]))
    w = draw(_ws)
    host = draw(_hosts)
    port = draw(_ports)
    params = [f"branch={draw(st.sampled_from(['z9hG4bK', 'z9hG4bK-', 'x']))}{draw(_tokens)}"]
    if draw(st.booleans()):
        params.append("rport" + (f"={draw(st.integers(1, 65535))}" if draw(st.booleans()) else ""))
    if draw(st.booleans()):
        params.append(f"received={draw(st.sampled_from(['192.0.2.9', '2001:db8::9']))}")
    if draw(st.booleans()):
        params.append(f"{draw(_tokens)}={draw(_tokens)}")
    draw(st.randoms()).shuffle(params)
    sep = draw(st.sampled_from([";", " ;", "; "]))
    hp = host if port is None else f"{host}:{port}"
    return f"SIP{w}/{w}2.0{w}/{w}{transport} {hp}{sep}{sep.join(params)}"


@st.composite
def _addr(draw: st.DrawFn, tag: bool) -> str:
    user = draw(st.sampled_from(["alice", "+15551234", "user;par=u%40example.net", "a%20b"]))
    host = draw(_hosts)
    uri = f"sip:{user}@{host}"
    if draw(st.booleans()):
        uri += ";transport=" + draw(st.sampled_from(["udp", "TCP", "tls"]))
    display = draw(st.sampled_from(["", '"Alice" ', "Bob ", '"A, \\"B\\"" ']))
    text = f"{display}<{uri}>"
    if tag:
        text += f"{draw(st.sampled_from([';', ' ;', ';TAG=']))}"
        text += f"tag={draw(_tokens)}" if not text.endswith("=") else draw(_tokens)
    return text


@st.composite
def valid_requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["INVITE", "BYE", "OPTIONS", "MESSAGE", "NOTIFY"]))
    names = {k: draw(st.sampled_from(v)) for k, v in _SPELLINGS.items()}
    w = draw(_ws)
    vias = draw(st.lists(_via(), min_size=1, max_size=3))
    hdrs: list[str] = []
    if draw(st.booleans()):
        hdrs.append(f"{names['via']}{w}:{w}{', '.join(vias)}")
    else:
        hdrs.extend(f"{names['via']}: {v}" for v in vias)
    routes = draw(st.lists(st.sampled_from(_ROUTES), max_size=3))
    if routes:
        hdrs.append(f"Route: {', '.join(routes)}")
    hdrs.append(f"{names['from']}: {draw(_addr(True))}")
    hdrs.append(f"{names['to']}:{w}{draw(_addr(draw(st.booleans())))}")
    hdrs.append(f"{names['call-id']}: {draw(_tokens)}@{draw(_hosts)}")
    hdrs.append(
        f"CSeq:{w}{draw(st.integers(0, 2**31 - 1))}{draw(st.sampled_from([' ', chr(9)]))}{method}"
    )
    if draw(st.booleans()):
        hdrs.append(f"Max-Forwards: {draw(st.integers(0, 255))}")
    if draw(st.booleans()):
        hdrs.append(f"Record-Route: {draw(st.sampled_from(_ROUTES))}")
    if draw(st.booleans()):
        hdrs.append("Subject: folded\r\n  across lines")
    draw(st.randoms()).shuffle(hdrs)
    ruri = draw(st.sampled_from(_RURIS))
    return build(f"{method} {ruri} SIP/2.0", [tuple(h.split(":", 1)) for h in hdrs], b"")  # type: ignore[misc]


_SPELLINGS = {
    "via": ["Via", "v", "VIA", "via "],
    "from": ["From", "f", "FROM"],
    "to": ["To", "t"],
    "call-id": ["Call-ID", "i", "call-id"],
}
_ROUTES = [
    "<sip:192.0.2.10;lr>",
    "<sip:10.0.0.5:5080;transport=tcp;lr>",
    '"proxy" <sip:p.example.com;lr;maddr=192.0.2.77>',
    "<sips:[2001:db8::5];lr>",
]
_RURIS = [
    "sip:+15551234@192.0.2.10:5060;user=phone",
    "sip:user;par=u%40example.net@example.com",
    "sips:alice@Example.COM",
    "sip:192.0.2.10;transport=TCP",
    "sip:[2001:db8::10]:5070",
    "sip:bob@example.com;maddr=192.0.2.99",
]


@SETTINGS
@given(valid_requests())
def test_generated_valid_requests_agree(data: bytes) -> None:
    assert assert_agree(data) == "valid", data


@pytest.mark.parametrize(
    ("ruri", "status"),
    [
        ("sip:sbth-1a2b3c@192.0.2.1;transport=udp", 0),
        ("mailto:bob@example.com", 416),  # unknown scheme (RFC 4475 §3.1.2.10 "unksm")
        ("sip:bob@example.com?Subject=hi", 400),  # headers in a Request-URI ("escruri")
    ],
)
def test_new_request_uri_of_a_known_shape_is_checked(ruri: str, status: int) -> None:
    """validate() remembers shapes and lines that passed; an in-dialog request whose only
    new part is its Request-URI (a per-call remote target) must still get the core's
    verdict on that URI. The first request teaches the memo the shape and every line."""
    lines = (
        "Via: SIP/2.0/UDP 192.0.2.5:5070;branch=z9hG4bK-known-shape\r\n"
        "From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\n"
        "Call-ID: known-shape@192.0.2.5\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    assert assert_agree(f"BYE sip:b@192.0.2.9:5080 SIP/2.0\r\n{lines}".encode()) == "valid"
    data = f"BYE {ruri} SIP/2.0\r\n{lines}".encode()
    verdict = assert_agree(data)
    assert verdict == ("valid" if not status else "invalid")
    if status:
        with pytest.raises(fastpath.BadMessage) as exc:
            fastpath.validate(fastpath.parse(data))
        assert exc.value.status == status


_ID_LINES = (
    "Via: SIP/2.0/UDP 192.0.2.5:5070;branch=z9hG4bK{b};rport\r\n"
    'From: "A" <sip:a@example.com;x=1>;tag={t}\r\nTo: <sip:b@example.com>;tag={t}\r\n'
    "Call-ID: id-memo@192.0.2.5\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)


@pytest.mark.parametrize(
    "value",
    ["-other.1", "x", "A!*_+'~z", 'x"y', "x<y", "x`y", "x%4", "x%41y", "x;y", "x,y", "x y", "x=y"],
)
def test_lines_differing_only_in_branch_or_tag_share_a_verdict(value: str) -> None:
    """validate() remembers Via/From/To lines by their text with a branch or tag value
    made of alphanumerics and -.!*_+'~ replaced (a new one per transaction/dialog): a
    value with any other character must still get the core's own verdict."""
    head = "BYE sip:b@192.0.2.9:5080 SIP/2.0\r\n"
    assert assert_agree((head + _ID_LINES.format(b="-memo", t="1")).encode()) == "valid"
    assert assert_agree((head + _ID_LINES.format(b=value, t=value)).encode())
    assert assert_agree((head + _ID_LINES.format(b="-memo", t=value)).encode())
    assert assert_agree((head + _ID_LINES.format(b=value, t="1")).encode())


@SETTINGS
@given(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8))
def test_generated_branch_and_tag_values_agree(value: str) -> None:
    head = "BYE sip:b@192.0.2.9:5080 SIP/2.0\r\n"
    assert_agree((head + _ID_LINES.format(b="-memo", t="1")).encode())
    assert_agree((head + _ID_LINES.format(b=value, t=value)).encode())


_TWO_VIAS = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{a};rport=5060, "
    "SIP/2.0/UDP 192.0.2.5:5070;branch=z9hG4bK{b}\r\n"
    "From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\n"
    "Call-ID: two-vias@192.0.2.5\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
)


@SETTINGS
@given(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8))
def test_comma_joined_vias_with_new_branches_agree(value: str) -> None:
    """A response's Via line often joins two Vias (ours first): the memo key replaces
    every branch value, so whatever either one is, the verdict and the top Via read
    are the core's."""
    assert assert_agree(_TWO_VIAS.format(a="-memo", b="-memo").encode()) == "valid"
    assert_agree(_TWO_VIAS.format(a=value, b="-memo").encode())
    assert_agree(_TWO_VIAS.format(a="-memo", b=value).encode())
    assert_agree(_TWO_VIAS.format(a=value, b=value).encode())


@SETTINGS
@given(st.text(st.sampled_from([*' \t,;"<>\\=abz:@.', "\x7f", "\x1f", "\xe9"]), max_size=24))
def test_first_value_is_the_cores_split(value: str) -> None:
    """first_value() splits a plain list in bytes and hands anything else to the core's
    split_commas: both give the core's first element and rest (or both refuse)."""
    from switchboard.sip.uri import split_commas

    raw = value.encode("utf-8", "surrogateescape")
    try:
        fast: Any = fastpath.first_value(raw)
    except fastpath.BadMessage:
        fast = "invalid"
    if raw.find(b",") < 0:
        return  # no list: the value is only stripped of SP/HTAB (not the core's rule)
    try:
        parts = split_commas(raw.decode("utf-8", "surrogateescape"))
        core: Any = (
            (parts[0].encode("utf-8", "surrogateescape"), ", ".join(parts[1:]).encode(
                "utf-8", "surrogateescape"))
            if parts else (b"", b"")
        )  # fmt: skip
    except SipParseError:
        core = "invalid"
    assert fast == core, raw


def _core_via(value: bytes) -> tuple[Any, ...] | None:
    """The fast path's Via fields as read by the core's Via parser (None: unparsable)."""
    from switchboard.sip.headers import Via as CoreVia

    try:
        core = CoreVia.parse(value.decode("latin-1"))
    except SipParseError:
        return None
    p = core.params
    port = core.port if core.port is not None else 5060
    sent_by = core.host if core.port is None else f"{core.host}:{core.port}"
    return (
        core.transport.lower(),
        core.host.lower(),
        port,
        sent_by.encode("latin-1"),
        (p.get("branch") or "").encode("latin-1"),
        None if "rport" not in p else (p["rport"] or "").encode("latin-1"),
        (p.get("received") or "").encode("latin-1"),
    )


def _fast_via(value: bytes) -> tuple[Any, ...] | None:
    try:
        v = fastpath.Via(value)
    except fastpath.BadMessage:
        return None
    return (v.transport, v.host, v.port, v.sent_by, v.branch, v.rport, v.received)


@SETTINGS
@given(
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8),
    st.sampled_from(["", ";rport", ";received=192.0.2.7;rport=5071", ";x=y", "`", "%41"]),
)
def test_via_read_with_a_new_branch_is_the_cores_reading(value: str, tail: str) -> None:
    """Via() reuses the reading of a Via that differed only in its branch value (one
    per request): whatever the new value, the fields are the core's own."""
    known = b"SIP/2.0/UDP 192.0.2.5:5070;branch=z9hG4bK-known" + tail.encode()
    assert _fast_via(known) == _core_via(known)
    data = f"SIP/2.0/UDP 192.0.2.5:5070;branch={value}{tail}".encode()
    assert _fast_via(data) == _core_via(data), data
