"""Arbitrary bytes from a peer never raise anything but the typed 'peer's fault' errors."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.rtp.codec import L16, PCMA, PCMU, CodecError
from switchboard.rtp.dtmf import DtmfError, DtmfReceiver
from switchboard.rtp.packet import MalformedPacket, RtpPacket, peek_header
from switchboard.rtp.rtcp import RtcpSession, parse_compound, serialise_compound

RTCP_HEAD = st.sampled_from(
    [b"\x80\xc8", b"\x81\xc9", b"\x80\xc9", b"\xa1\xca", b"\x9f\xcb", b"\x80\xcc"]
)


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_rtp_parsers_only_raise_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedPacket):
        pkt = RtpPacket.parse(data)
        assert RtpPacket.parse(bytes(pkt)) == pkt
    with contextlib.suppress(MalformedPacket):
        peek_header(data)


@settings(max_examples=400)
@given(RTCP_HEAD, st.binary(max_size=200))
def test_rtcp_parser_only_raises_malformed_and_round_trips(head: bytes, rest: bytes) -> None:
    data = head + rest
    try:
        packets = parse_compound(data)
    except MalformedPacket:
        return
    assert parse_compound(serialise_compound(packets)) == packets
    session = RtcpSession(ssrc=1, cname=b"x")
    session.handle_packet(data, now=1.0, wallclock=1000.0)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.binary(max_size=8), st.integers(0, 2**32 - 1)), max_size=30))
def test_dtmf_receiver_only_raises_dtmf_error(packets: list[tuple[bytes, int]]) -> None:
    rx = DtmfReceiver()
    for i, (payload, ts) in enumerate(packets):
        with contextlib.suppress(DtmfError):
            rx.feed(payload, ts, now=i * 0.02)
    rx.handle_timer(now=1e6)
    assert rx.get_timer() is None


@given(st.binary(max_size=400))
def test_decoders_accept_any_payload(data: bytes) -> None:
    assert len(PCMU.decode(data)) == len(data) and len(PCMA.decode(data)) == len(data)
    with contextlib.suppress(CodecError):
        assert len(L16(96).decode(data)) == len(data) // 2
