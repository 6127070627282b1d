"""SDES (RFC 4568) in offer/answer: a=crypto parsing, SRTP policies off/optional/mandatory."""

from __future__ import annotations

import base64

import pytest

from switchboard.sdp import NegotiationError, answer_offer, create_offer, parse_sdp, process_answer
from switchboard.sdp.crypto import Crypto, parse_crypto

KEY_A = bytes(range(30))
KEY_B = bytes(range(100, 130))
B64 = base64.b64encode(KEY_A).decode()


def offer(
    proto: str = "RTP/SAVP", crypto: str = f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}"
) -> bytes:
    lines = [
        "v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
        f"m=audio 4000 {proto} 0 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000",
    ]  # fmt: skip
    if crypto:
        lines.append(f"a=crypto:{crypto}")
    return ("\r\n".join(lines) + "\r\n").encode()


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}", True),
        (f"2 AES_CM_128_HMAC_SHA1_32 inline:{B64}|2^31", True),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^20|1:4", False),  # MKI
        (f"1 AES_256_CM_HMAC_SHA1_80 inline:{B64}", False),  # suite we do not take
        ("1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=", False),  # 5 bytes of key
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64} UNENCRYPTED_SRTP", False),
        ("x AES_CM_128_HMAC_SHA1_80 inline:!!!", False),
    ],
)
def test_parse_crypto(value: str, ok: bool) -> None:
    c = parse_crypto(value)
    assert (c is not None) == ok
    if c is not None:
        assert c.key == KEY_A and parse_crypto(c.attribute()) == c


def test_savp_offer_answered_with_our_key_same_tag_and_suite() -> None:
    sd, neg = answer_offer(parse_sdp(offer()), address="198.51.100.1", port=5000,
                           session_id="1", version=1, srtp="optional", srtp_key=KEY_B)  # fmt: skip
    [m] = sd.media
    assert m.proto == "RTP/SAVP"
    assert m.attrs("crypto") == [Crypto(1, "AES_CM_128_HMAC_SHA1_80", KEY_B).attribute()]
    assert (neg.srtp_suite, neg.srtp_remote_key, neg.srtp_local_key) == (
        "AES_CM_128_HMAC_SHA1_80", KEY_A, KEY_B,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "body", "outcome"),
    [
        ("off", offer(), "488"),  # SRTP only, we do not do it
        ("optional", offer("RTP/AVP", ""), "plain"),
        ("mandatory", offer("RTP/AVP", ""), "488"),
        ("mandatory", offer("RTP/AVP"), "srtp"),  # best-effort SRTP offer taken
        ("off", offer("RTP/AVP"), "plain"),  # keys ignored
        ("optional", offer("RTP/SAVP", ""), "488"),  # SAVP without a usable key
    ],
)
def test_policies(policy: str, body: bytes, outcome: str) -> None:
    kw = {"address": "198.51.100.1", "port": 5000, "session_id": "1", "version": 1}
    if outcome == "488":
        with pytest.raises(NegotiationError):
            answer_offer(parse_sdp(body), srtp=policy, srtp_key=KEY_B, **kw)  # type: ignore[arg-type]
        return
    sd, neg = answer_offer(parse_sdp(body), srtp=policy, srtp_key=KEY_B, **kw)  # type: ignore[arg-type]
    assert (neg.srtp_suite is not None) == (outcome == "srtp")
    assert bool(sd.media[0].attrs("crypto")) == (outcome == "srtp")


def test_our_offers_and_their_answers() -> None:
    kw = {"address": "198.51.100.1", "port": 5000, "session_id": "1", "version": 1}
    mand = create_offer(srtp="mandatory", srtp_key=KEY_B, **kw)  # type: ignore[arg-type]
    assert mand.media[0].proto == "RTP/SAVP" and len(mand.media[0].attrs("crypto")) == 2
    opt = create_offer(srtp="optional", srtp_key=KEY_B, **kw)  # type: ignore[arg-type]
    assert opt.media[0].proto == "RTP/AVP" and len(opt.media[0].attrs("crypto")) == 2
    assert create_offer(**kw).media[0].attrs("crypto") == []  # type: ignore[arg-type]
    # the peer takes tag 2 (the 32-bit tag) with its own key
    answer = offer("RTP/SAVP", f"2 AES_CM_128_HMAC_SHA1_32 inline:{B64}")
    neg = process_answer(mand, parse_sdp(answer))
    assert (neg.srtp_suite, neg.srtp_remote_key, neg.srtp_local_key) == (
        "AES_CM_128_HMAC_SHA1_32", KEY_A, KEY_B,
    )  # fmt: skip
    # a mandatory offer answered without a key is no call; an optional one is plain RTP
    with pytest.raises(NegotiationError):
        process_answer(mand, parse_sdp(offer("RTP/SAVP", "")))
    assert process_answer(opt, parse_sdp(offer("RTP/AVP", ""))).srtp_suite is None
