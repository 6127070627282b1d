from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.sdp import (
    PCMA,
    PCMU,
    CodecSpec,
    NegotiationError,
    SdpError,
    answer_offer,
    create_offer,
    parse_sdp,
    process_answer,
)

SIPP_OFFER = (
    "v=0\r\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 6000 RTP/AVP 8 0 101\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "m=video 6002 RTP/AVP 96\r\n"
    "a=rtpmap:96 H264/90000\r\n"
)


def test_parse_and_roundtrip() -> None:
    sd = parse_sdp(SIPP_OFFER.encode())
    assert sd.origin.session_id == "53655765" and sd.origin.version == 2353687637
    audio = sd.audio()
    assert audio is not None and audio.port == 6000 and audio.formats == ["8", "0", "101"]
    assert audio.rtpmaps[0].encoding == "PCMU"  # static PT without rtpmap (RFC 3551 §6)
    assert audio.rtpmaps[101].encoding == "telephone-event"
    assert audio.fmtps[101] == "0-15"
    again = parse_sdp(sd.to_bytes())
    assert again == sd
    assert sd.to_bytes().decode() == SIPP_OFFER


def test_lf_only_and_media_level_connection() -> None:
    text = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 0\nc=IN IP4 10.0.0.2\n"
    sd = parse_sdp(text)
    assert sd.connection_for(sd.media[0]).address == "10.0.0.2"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "v=1\r\n",
        "v=0\r\no=x\r\ns=-\r\nt=0 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 4000 RTP/AVP 0\r\n",  # no t=, no c=
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",  # no c=
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio x RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 4000 RTP/AVP\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 4000 RTP/AVP 999\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=XX\r\nt=0 0\r\n",
        "v=0\r\nthis is not sdp\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n",
    ],
)
def test_malformed_sdp_is_rejected_with_400(bad: str) -> None:
    with pytest.raises(SdpError) as err:
        parse_sdp(bad)
    assert err.value.status == 400


@given(st.binary(max_size=300))
def test_parser_never_crashes_on_garbage(data: bytes) -> None:
    with contextlib.suppress(SdpError):
        parse_sdp(b"v=0\r\n" + data)


def test_answer_keeps_order_rejects_video_and_picks_offerers_first_codec() -> None:
    offer = parse_sdp(SIPP_OFFER)
    ans, neg = answer_offer(offer, address="127.0.0.1", port=20000, session_id="7", version=1)
    assert [m.kind for m in ans.media] == ["audio", "video"]
    assert ans.media[1].port == 0 and ans.media[1].formats == ["96"]
    assert ans.media[0].formats == ["8", "101"]  # PCMA first in the offer
    assert neg.codec == "PCMA" and neg.payload_type == 8 and neg.event_pt == 101
    assert (neg.remote_address, neg.remote_port) == ("127.0.0.1", 6000)
    assert neg.local_direction == "sendrecv" and not neg.remote_hold
    assert ans.media[0].direction == "sendrecv"
    # with PCMU preferred only, PT 0 is chosen even though it is second in the offer
    _, neg2 = answer_offer(
        offer, codecs=[PCMU], address="127.0.0.1", port=1, session_id="7", version=1
    )
    assert neg2.codec == "PCMU" and neg2.payload_type == 0


def test_no_common_codec_is_488() -> None:
    offer = parse_sdp(
        SIPP_OFFER.replace("8 0 101", "18 101").replace("a=rtpmap:8 PCMA/8000\r\n", "")
    )
    with pytest.raises(NegotiationError) as err:
        answer_offer(offer, address="127.0.0.1", port=1, session_id="1", version=1)
    assert err.value.status == 488


@pytest.mark.parametrize(
    ("direction", "conn", "ours", "hold"),
    [
        ("sendonly", "127.0.0.1", "recvonly", True),
        ("inactive", "127.0.0.1", "inactive", True),
        ("recvonly", "127.0.0.1", "sendonly", False),
        ("sendrecv", "0.0.0.0", "recvonly", True),  # RFC 2543 hold (RFC 3264 §8.4)
    ],
)
def test_hold_directions(direction: str, conn: str, ours: str, hold: bool) -> None:
    text = SIPP_OFFER.replace("c=IN IP4 127.0.0.1", f"c=IN IP4 {conn}").replace(
        "a=fmtp:101 0-15\r\n", f"a=fmtp:101 0-15\r\na={direction}\r\n"
    )
    ans, neg = answer_offer(parse_sdp(text), address="127.0.0.1", port=2, session_id="1", version=2)
    assert ans.media[0].direction == ours
    assert neg.remote_hold is hold
    assert neg.we_send is (ours in ("sendrecv", "sendonly") and not hold)


def test_reoffer_with_codec_and_address_change() -> None:
    first = parse_sdp(SIPP_OFFER)
    _, n1 = answer_offer(first, address="127.0.0.1", port=2, session_id="1", version=1)
    second = parse_sdp(
        SIPP_OFFER.replace("8 0 101", "0 101")
        .replace("6000", "7000")
        .replace("c=IN IP4 127.0.0.1", "c=IN IP4 127.0.0.2")
    )
    _, n2 = answer_offer(second, address="127.0.0.1", port=2, session_id="1", version=2)
    assert (n1.codec, n2.codec) == ("PCMA", "PCMU")
    assert (n2.remote_address, n2.remote_port) == ("127.0.0.2", 7000)


def test_offer_and_answer_processing() -> None:
    offer = create_offer(
        codecs=[PCMU, PCMA], address="127.0.0.1", port=30000, session_id="5", version=1
    )
    text = offer.to_bytes().decode()
    assert "m=audio 30000 RTP/AVP 0 8 101" in text and "a=rtpmap:101 telephone-event/8000" in text
    peer_answer, _ = answer_offer(
        parse_sdp(text), codecs=[PCMA], address="127.0.0.2", port=40000, session_id="9", version=1
    )
    neg = process_answer(offer, parse_sdp(peer_answer.to_bytes()))
    assert neg.codec == "PCMA" and neg.remote_port == 40000 and neg.event_pt == 101
    rejected = parse_sdp(peer_answer.to_bytes().replace(b"m=audio 40000", b"m=audio 0"))
    with pytest.raises(NegotiationError):
        process_answer(offer, rejected)


def test_dynamic_codec_from_engine_keeps_offer_pt() -> None:
    l16 = CodecSpec("L16", 8000, 118)
    text = SIPP_OFFER.replace("8 0 101", "97 101").replace(
        "a=rtpmap:8 PCMA/8000", "a=rtpmap:97 L16/8000"
    )
    _, neg = answer_offer(
        parse_sdp(text),
        codecs=[PCMU, PCMA, l16],
        address="127.0.0.1",
        port=2,
        session_id="1",
        version=1,
    )
    assert neg.codec == "L16" and neg.payload_type == 97
