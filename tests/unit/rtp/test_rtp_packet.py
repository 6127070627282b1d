"""RTP packet parse/serialise (RFC 3550 §5.1), wrap-around helpers, malformed input."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.rtp.packet import (
    MalformedPacket,
    RtpHeaderWriter,
    RtpPacket,
    is_rtcp,
    peek_header,
    seq_add,
    seq_diff,
    seq_gt,
    ts_add,
    ts_diff,
    ts_gt,
)


def test_minimal_packet_bytes_match_rfc_layout() -> None:
    pkt = RtpPacket(
        payload_type=0,
        sequence_number=0x1234,
        timestamp=0xDEADBEEF,
        ssrc=0x01020304,
        payload=b"\xff" * 4,
        marker=True,
    )
    raw = bytes(pkt)
    assert raw[:12] == bytes.fromhex("80 80 1234 deadbeef 01020304")
    assert raw[12:] == b"\xff" * 4
    assert RtpPacket.parse(raw) == pkt


def test_round_trip_with_csrc_extension_padding_marker() -> None:
    pkt = RtpPacket(
        payload_type=101,
        sequence_number=65535,
        timestamp=4294967295,
        ssrc=7,
        payload=b"abc",
        marker=True,
        csrc=(1, 2, 3),
        extension=(0xBEDE, b"\x10\xaa\x00\x00"),
        padding=4,
    )
    raw = bytes(pkt)
    assert raw[0] == 0x80 | 0x20 | 0x10 | 3
    assert raw[-1] == 4 and len(raw) == 12 + 12 + 4 + 4 + 3 + 4
    assert RtpPacket.parse(raw) == pkt
    pt, marker, seq, ts, ssrc, off = peek_header(raw)
    assert (pt, marker, seq, ts, ssrc) == (101, True, 65535, 4294967295, 7)
    assert raw[off : off + 3] == b"abc"


@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 65535),
    ts=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
    ext=st.none()
    | st.tuples(st.integers(0, 65535), st.binary(max_size=16).map(lambda b: b[: len(b) // 4 * 4])),
    padding=st.integers(0, 32),
)
def test_round_trip_property(pt, seq, ts, ssrc, payload, marker, csrc, ext, padding) -> None:  # type: ignore[no-untyped-def]
    pkt = RtpPacket(pt, seq, ts, ssrc, payload, marker, csrc, ext, padding)
    assert RtpPacket.parse(bytes(pkt)) == pkt


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", "too short"),
        (b"\x80\x00\x00", "too short"),
        (bytes.fromhex("40 00 0001 00000000 00000000"), "version"),  # V=1
        (
            bytes.fromhex("83 00 0001 00000000 00000000") + b"\x00" * 8,
            "CSRC",
        ),  # CC=3, only 2 present
        (bytes.fromhex("90 00 0001 00000000 00000000 bede 0004") + b"\x00" * 4, "extension"),
        (bytes.fromhex("a0 00 0001 00000000 00000000 00"), "padding"),  # padding count 0
        (bytes.fromhex("a0 00 0001 00000000 00000000 0102 30"), "padding"),  # 48 > length
    ],
)
def test_malformed_packets_raise_typed_error(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedPacket, match=reason):
        RtpPacket.parse(raw)


def test_every_truncation_is_rejected_or_parsed_never_crashes() -> None:
    raw = bytes(RtpPacket(8, 1, 2, 3, b"x" * 20, True, (9, 10), (1, b"\x00" * 8), 3))
    for cut in range(len(raw)):
        with contextlib.suppress(MalformedPacket):
            RtpPacket.parse(raw[:cut])
        with contextlib.suppress(MalformedPacket):
            peek_header(raw[:cut])


def test_constructor_rejects_out_of_range_fields() -> None:
    with pytest.raises(ValueError):
        RtpPacket(128, 0, 0, 0)
    with pytest.raises(ValueError):
        RtpPacket(0, 65536, 0, 0)
    with pytest.raises(ValueError):
        RtpPacket(0, 0, 0, 0, csrc=tuple(range(16)))
    with pytest.raises(ValueError):
        RtpPacket(0, 0, 0, 0, extension=(1, b"abc"))


def test_sequence_wrap_helpers() -> None:
    assert seq_add(65535, 1) == 0
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_gt(2, 65530) and not seq_gt(65530, 2)
    assert seq_diff(32767, 0) == 32767 and seq_diff(32768, 0) == -32768


def test_timestamp_wrap_helpers() -> None:
    assert ts_add(2**32 - 80, 160) == 80
    assert ts_diff(80, 2**32 - 80) == 160
    assert ts_gt(80, 2**32 - 80)
    assert ts_diff(2**32 - 80, 80) == -160


def test_header_writer_advances_and_wraps() -> None:
    w = RtpHeaderWriter(
        ssrc=0xCAFEBABE, payload_type=0, sequence_number=65535, timestamp=2**32 - 160
    )
    first = RtpPacket.parse(bytes(w.packet(b"\x01" * 160, 160, marker=True)))
    second = RtpPacket.parse(bytes(w.packet(b"\x02" * 160, 160)))
    assert (first.sequence_number, first.timestamp, first.marker) == (65535, 2**32 - 160, True)
    assert (second.sequence_number, second.timestamp, second.marker) == (0, 0, False)
    assert second.payload == b"\x02" * 160 and second.ssrc == 0xCAFEBABE
    w.skip(320)
    third = RtpPacket.parse(bytes(w.packet(b"", 160, pt=101)))
    assert third.timestamp == 480 and third.payload_type == 101 and third.sequence_number == 1
    assert w.packets_sent == 3 and w.octets_sent == 320


def test_header_writer_grows_for_large_payloads() -> None:
    w = RtpHeaderWriter(ssrc=1, payload_type=11, sequence_number=0, timestamp=0)
    big = bytes(range(256)) * 8
    assert RtpPacket.parse(bytes(w.packet(big, 1024))).payload == big


def test_rtcp_demultiplexing_rule() -> None:
    assert is_rtcp(struct.pack("!BBH", 0x80, 200, 6))  # SR
    assert not is_rtcp(bytes(RtpPacket(0, 1, 2, 3)))
    assert not is_rtcp(bytes(RtpPacket(0, 1, 2, 3, marker=True)))
