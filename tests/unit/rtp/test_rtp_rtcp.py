"""RTCP packets (RFC 3550 §6), interval (§6.3, A.7), loss/jitter statistics (A.1, A.3, A.8)."""

from __future__ import annotations

import pytest

from switchboard.rtp.packet import MalformedPacket
from switchboard.rtp.rtcp import (
    COMPENSATION,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpSession,
    RtcpUnknown,
    SdesChunk,
    SdesItem,
    SenderReport,
    SenderState,
    SourceDescription,
    ntp_from_unix,
    parse_compound,
    rtcp_interval,
    serialise,
    serialise_compound,
)
from switchboard.rtp.stats import ReceiverStats


def test_sender_report_wire_layout() -> None:
    sr = SenderReport(
        0x11223344, 0xAABBCCDD_00000001, 160, 5, 800, (ReportBlock(7, 64, -2, 70000, 12, 3, 4),)
    )
    raw = serialise(sr)
    assert raw[:4] == bytes.fromhex("81 c8 000c")  # V=2 RC=1, PT=200, length 12 words (52 octets)
    assert len(raw) == 52
    assert raw[32:36] == bytes.fromhex("40 fffffe")[:4]  # fraction 64, cumulative −2 (24-bit)
    assert parse_compound(raw) == [sr]


def test_compound_round_trip() -> None:
    packets = [
        ReceiverReport(1, (ReportBlock(2, 0, 5, 65536 + 10, 80),)),
        SourceDescription(
            (
                SdesChunk(
                    1, ((SdesItem.CNAME, b"leg-a@127.0.0.1"), (SdesItem.TOOL, b"switchboard"))
                ),
                SdesChunk(9, ()),
            )
        ),
        Bye((1, 2), b"hangup"),
        RtcpUnknown(204, 3, b"name" + b"\x00" * 4),
    ]
    raw = serialise_compound(packets)
    assert len(raw) % 4 == 0
    assert parse_compound(raw) == packets


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"\x80\xc9", "too short"),
        (bytes.fromhex("41 c9 0001 00000001"), "version"),
        (bytes.fromhex("80 ca 0001 00000001"), "start with SR or RR"),
        (bytes.fromhex("80 c9 0005 00000001"), "length"),
        (bytes.fromhex("81 c9 0001 00000001"), "report count"),
        (bytes.fromhex("80 c9 0001 00000001 81 ca 0002 00000001 0105 6162"), "SDES item"),
        (bytes.fromhex("a0 c9 0001 00000001 80 cb 0000"), "padding"),
        (bytes.fromhex("80 c9 0001 00000001 00"), "trailing"),
    ],
)
def test_malformed_rtcp(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedPacket, match=reason):
        parse_compound(raw)


def test_rtcp_interval_follows_appendix_a7() -> None:
    # Two members, both senders (> 25 %): n = 2, bw = 500 B/s, avg 100 B → 0.4 s < 5 s minimum.
    assert rtcp_interval(2, 2, 500.0, True, 100.0, False, 0.5) == pytest.approx(5.0 / COMPENSATION)
    assert rtcp_interval(2, 2, 500.0, True, 100.0, True, 0.0) == pytest.approx(
        2.5 * 0.5 / COMPENSATION
    )
    # Large session, few senders, we are a receiver: receivers share 75 % of the bandwidth.
    t = rtcp_interval(1000, 10, 500.0, False, 100.0, False, 0.5, min_time=1.0)
    assert t == pytest.approx(100.0 * 990 / (500.0 * 0.75) / COMPENSATION)
    t = rtcp_interval(1000, 10, 500.0, True, 100.0, False, 0.999, min_time=1.0)
    assert t == pytest.approx(max(100.0 * 10 / (500.0 * 0.25), 1.0) * 1.499 / COMPENSATION)
    with pytest.raises(ValueError):
        rtcp_interval(2, 2, 500.0, True, 100.0, False, 1.0)


def test_loss_and_fraction_from_sequence_numbers() -> None:
    stats = ReceiverStats(ssrc=5, seq=65530)
    seqs = [65530, 65531, 65532, 65534, 65535, 0, 1, 3, 4, 2]  # wraps, 65533 lost, 2 late
    for i, s in enumerate(seqs):
        stats.update(s, 160 * i, 0.02 * i)
    assert stats.extended_max == 65536 + 4
    # A.1 probation: the first packet validates the source, counting starts at the second.
    assert stats.expected == 10 and stats.received == 9 and stats.lost == 1
    rep = stats.report()
    assert rep.cumulative_lost == 1 and rep.fraction_lost == 256 * 1 // 10
    assert rep.extended_highest_seq == 65540
    for i, s in enumerate(range(5, 15)):
        stats.update(s, 160 * (10 + i), 0.02 * (10 + i))
    assert stats.report().fraction_lost == 0  # interval since the last report had no loss


def test_duplicates_and_source_restart() -> None:
    stats = ReceiverStats(ssrc=5, seq=100)
    for s in (100, 101, 102, 102):
        stats.update(s, 0, 0.0)
    assert stats.duplicates == 1
    assert not stats.update(40000, 0, 0.0)  # a big jump is not trusted at once…
    assert stats.update(40001, 160, 0.02)  # …but two in a row mean the source restarted
    assert stats.base_seq == 40001 and stats.lost == 0


def test_interarrival_jitter_rfc3550_a8() -> None:
    steady = ReceiverStats(ssrc=1, seq=0)
    for i in range(200):
        steady.update(i, 160 * i, 10.0 + 0.02 * i)
    assert steady.jitter == pytest.approx(0.0, abs=1e-6)
    jittery = ReceiverStats(ssrc=1, seq=0)
    for i in range(400):
        jittery.update(i, 160 * i, 10.0 + 0.02 * i + (0.010 if i % 2 else 0.0))
    assert jittery.jitter == pytest.approx(80.0, rel=0.01)  # |D| = 10 ms = 80 samples every packet
    assert jittery.report().jitter == 79 or jittery.report().jitter == 80


def test_session_sends_sr_then_rr_and_measures_round_trip() -> None:
    a = RtcpSession(ssrc=0xA, cname=b"a@host", min_time=1.0)
    b = RtcpSession(ssrc=0xB, cname=b"b@host", min_time=1.0)
    a.start(now=0.0, rand=0.5)
    first = a.get_timer()
    assert first == pytest.approx(0.5 / COMPENSATION)  # initial: half the minimum
    assert a.handle_timer(first - 0.01, 1000.0, 0.5, None, None) is None
    b_stats = ReceiverStats(ssrc=0xA, seq=0)
    for i in range(50):
        b_stats.update(i, 160 * i, 0.02 * i)
    a.note_sent()
    sr_bytes = a.handle_timer(first, 1000.0, 0.5, SenderState(50, 8000, 8000), None)
    assert sr_bytes is not None
    sr, sdes = parse_compound(sr_bytes)
    assert isinstance(sr, SenderReport) and sr.packet_count == 50 and sr.octet_count == 8000
    assert isinstance(sdes, SourceDescription) and sdes.chunks[0].items == (
        (SdesItem.CNAME, b"a@host"),
    )
    assert a.get_timer() == pytest.approx(first + 1.0 / COMPENSATION)
    # The SR reaches B 30 ms later (one-way); B reports 100 ms after that.
    b.handle_packet(sr_bytes, now=5.0, wallclock=1000.03)
    rr_bytes = b.build_report(5.1, 1000.13, None, b_stats)
    rr = parse_compound(rr_bytes)[0]
    assert isinstance(rr, ReceiverReport) and rr.reports[0].ssrc == 0xA
    assert rr.reports[0].lsr == (ntp_from_unix(1000.0) >> 16) & 0xFFFFFFFF
    assert rr.reports[0].dlsr == pytest.approx(0.1 * 65536, abs=2)
    a.handle_packet(rr_bytes, now=0.2, wallclock=1000.16)
    assert a.rtt == pytest.approx(0.06, abs=0.001)
    # Nothing sent since: the next report is an RR.
    nxt = a.get_timer()
    assert nxt is not None
    rr2 = a.handle_timer(nxt, 1001.0, 0.5, SenderState(50, 8000, 8000), None)
    assert rr2 is not None and isinstance(parse_compound(rr2)[0], ReceiverReport)
    assert parse_compound(a.bye(b"bye"))[1] == Bye((0xA,), b"bye")
