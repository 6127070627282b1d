"""Property tests (hypothesis): round-trips preserve every header, and no mutation or
truncation of a valid message raises anything but the typed parse error."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchboard.sip.errors import FramingError, SipError, SipParseError
from switchboard.sip.framer import StreamFramer
from switchboard.sip.message import Request, Response, parse_message
from switchboard.sip.uri import NameAddr, SipUri
from tests.support.sipgen import (
    SEEDS,
    bodies,
    build,
    headers,
    methods,
    mutated,
    names,
    values,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(methods, headers, bodies)
def test_request_round_trip_preserves_every_header(
    method: str, hdrs: list[tuple[str, str]], body: bytes
) -> None:
    data = build(f"{method} sip:user@example.com SIP/2.0", hdrs, body)
    m = parse_message(data)
    assert isinstance(m, Request) and m.method == method
    assert list(m.headers)[:-1] == hdrs
    assert m.body == body
    assert m.to_bytes() == data  # untouched lines are written back as received
    again = parse_message(m.to_bytes())
    assert list(again.headers) == list(m.headers) and again.body == body


@SETTINGS
@given(st.integers(100, 699), values, headers, bodies)
def test_response_round_trip(
    status: int, reason: str, hdrs: list[tuple[str, str]], body: bytes
) -> None:
    data = build(f"SIP/2.0 {status} {reason}", hdrs, body)
    m = parse_message(data)
    assert isinstance(m, Response) and (m.status, m.reason) == (status, reason)
    assert list(m.headers)[:-1] == hdrs
    assert parse_message(m.to_bytes()) == m


@SETTINGS
@given(headers, st.lists(st.tuples(names, values), max_size=4))
def test_edits_keep_other_headers(
    hdrs: list[tuple[str, str]], extra: list[tuple[str, str]]
) -> None:
    m = parse_message(build("OPTIONS sip:a@b SIP/2.0", hdrs, b""))
    for n, v in extra:
        m.headers.insert(n, v)
    again = parse_message(m.to_bytes())
    assert sorted(again.headers.items()) == sorted(m.headers.items())


hosts = st.one_of(
    st.from_regex(r"[a-z][a-z0-9\-]{0,10}(\.[a-z][a-z0-9]{0,6}){0,3}", fullmatch=True).filter(
        lambda h: not h.endswith("-")
    ),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
users = st.from_regex(r"([A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-F]{2}){1,12}", fullmatch=True)
pnames = st.from_regex(r"[a-z0-9\-_.!~*'()]{1,8}", fullmatch=True)
pvals = st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$]{1,8}", fullmatch=True))


@SETTINGS
@given(
    st.sampled_from(["sip", "sips"]),
    st.one_of(st.none(), users),
    st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9&=+$,]{1,8}", fullmatch=True)),
    hosts,
    st.one_of(st.none(), st.integers(0, 65535)),
    st.dictionaries(pnames, pvals, max_size=4),
    st.one_of(st.none(), values.filter(lambda s: s != "")),
)
def test_uri_and_name_addr_round_trip(
    scheme: str,
    user: str | None,
    password: str | None,
    host: str,
    port: int | None,
    params: dict[str, str | None],
    display: str | None,
) -> None:
    uri = SipUri(scheme, user, password if user else None, host, port, params)
    assert SipUri.parse(str(uri)) == uri
    na = NameAddr(display, uri, {"tag": "abc"})
    assert NameAddr.parse(str(na)) == na


def _touch_everything(data: bytes) -> None:
    m = parse_message(data)
    m.parse_all()
    if isinstance(m, Request):
        _ = m.ruri
    _ = m.top_via.branch, m.to_tag, m.from_tag, m.date, m.is_star_contact
    m.to_bytes()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutations_raise_only_the_typed_parse_error(data: bytes) -> None:
    with contextlib.suppress(SipParseError):
        _touch_everything(data)


@SETTINGS
@given(st.sampled_from(SEEDS), st.data())
def test_truncation_raises_only_the_typed_parse_error(seed: bytes, d: st.DataObject) -> None:
    cut = d.draw(st.integers(0, len(seed)))
    with contextlib.suppress(SipParseError):
        _touch_everything(seed[:cut])


@SETTINGS
@given(st.lists(mutated(), min_size=1, max_size=3), st.lists(st.integers(1, 200), max_size=5))
def test_framer_raises_only_framing_errors(msgs: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(msgs)
    f = StreamFramer(max_size=4096)
    pos = 0
    try:
        for c in [*cuts, len(stream)]:
            for frame in f.feed(stream[pos : pos + c]):
                with contextlib.suppress(SipParseError):
                    parse_message(frame)
            pos += c
    except FramingError as exc:
        assert isinstance(exc, SipError) and exc.status in (400, 513)
