"""RFC 3264 offer/answer for telephony audio (PCMU, PCMA, telephone-event, + engine codecs).

Rules applied (RFC 3264 §5-§8):

* The answer has as many ``m=`` lines as the offer, in the same order; streams we do not
  take (video, a second audio, unknown protocol) are rejected with port 0 and keep the
  offer's format list (an ``m=`` line never has an empty format list).
* One audio codec is chosen: the first in the *offerer's* order that we support
  (FreeSWITCH's "generous" inbound negotiation); the offerer's payload-type numbers
  are kept (dynamic ones included). telephone-event at the codec's clock rate is added
  when offered, with the offer's PT.
* Directions are complementary (§6.1): sendonly ↔ recvonly, inactive ↔ inactive.
  A remote ``sendonly``/``inactive`` or a ``c=0.0.0.0`` (RFC 2543 hold, §8.4) puts the
  stream on hold: :attr:`Negotiated.remote_hold`.
* Re-offers (hold/unhold, codec change, address change, §8) are answered the same way;
  the caller bumps ``o=`` version on each new SDP it sends (§8 last paragraph).
* No codec in common → :class:`NegotiationError` (488 Not Acceptable Here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from switchboard.sdp.crypto import SAVP_PROTOS, SUITES, Crypto, offered_cryptos
from switchboard.sdp.errors import NegotiationError
from switchboard.sdp.session import (
    Connection,
    Media,
    Origin,
    RtpMap,
    SessionDescription,
)

TELEPHONE_EVENT = "telephone-event"
DEFAULT_EVENT_PT = 101
DEFAULT_PTIME = 20
AUDIO_PROTOS = ("RTP/AVP", "RTP/AVPF", *SAVP_PROTOS)
COMPLEMENT = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


@dataclass(frozen=True)
class CodecSpec:
    """A codec we can handle: rtpmap name, clock rate and the PT we use when offering."""

    name: str
    clock_rate: int
    payload_type: int
    channels: int = 1
    fmtp: str | None = None

    def matches(self, rm: RtpMap) -> bool:
        return (
            rm.encoding.upper() == self.name.upper()
            and rm.clock_rate == self.clock_rate
            and rm.channels == self.channels
        )


PCMU = CodecSpec("PCMU", 8000, 0)
PCMA = CodecSpec("PCMA", 8000, 8)
DEFAULT_CODECS: tuple[CodecSpec, ...] = (PCMU, PCMA)


@dataclass(frozen=True)
class Negotiated:
    """The outcome for the audio stream: what to send and where."""

    codec: str
    payload_type: int
    clock_rate: int
    event_pt: int | None
    remote_address: str
    remote_port: int
    remote_rtcp_port: int | None
    local_direction: str  # our direction in the answer (or the offer we sent)
    remote_hold: bool  # the peer does not want to receive (sendonly/inactive/0.0.0.0)
    ptime: int = DEFAULT_PTIME
    # SRTP with SDES (RFC 4568): the suite both use, the peer's key (it protects what it
    # sends with it) and ours (what we protect with). None: plain RTP.
    srtp_suite: str | None = None
    srtp_remote_key: bytes | None = None
    srtp_local_key: bytes | None = None

    @property
    def we_send(self) -> bool:
        return self.local_direction in ("sendrecv", "sendonly") and not self.remote_hold


def _remote_rtcp(m: Media) -> int | None:
    v = m.attr("rtcp")
    if v:
        head = v.split()[0]
        if head.isdigit():
            return int(head)
    return None


def _event_pt(m: Media, clock_rate: int) -> int | None:
    for pt, rm in m.rtpmaps.items():
        if rm.encoding.lower() == TELEPHONE_EVENT and rm.clock_rate == clock_rate:
            return pt
    return None


def _origin(address: str, session_id: str, version: int) -> Origin:
    family = "IP6" if ":" in address else "IP4"
    # "-": no user name (RFC 4566 §5.2) — nor a product name for a scanner to read
    return Origin("-", session_id, version, "IN", family, address)


def _audio_attrs(
    codec_pt: int,
    codec_rm: RtpMap,
    fmtp: str | None,
    event_pt: int | None,
    direction: str,
    ptime: int,
) -> list[tuple[str, str | None]]:
    attrs: list[tuple[str, str | None]] = [("rtpmap", str(codec_rm))]
    if fmtp:
        attrs.append(("fmtp", f"{codec_pt} {fmtp}"))
    if event_pt is not None:
        attrs.append(("rtpmap", f"{event_pt} {TELEPHONE_EVENT}/{codec_rm.clock_rate}"))
        attrs.append(("fmtp", f"{event_pt} 0-16"))
    attrs.append(("ptime", str(ptime)))
    attrs.append((direction, None))
    return attrs


def answer_offer(
    offer: SessionDescription,
    *,
    codecs: Sequence[CodecSpec] = DEFAULT_CODECS,
    address: str,
    port: int,
    session_id: str,
    version: int,
    local_hold: bool = False,
    srtp: str = "optional",
    srtp_key: bytes = b"",
) -> tuple[SessionDescription, Negotiated]:
    """Answer ``offer`` (RFC 3264 §6). Raises :class:`NegotiationError` → 488.

    ``srtp`` is the policy (sdp.crypto): an RTP/SAVP stream is taken with the first
    crypto suite of the offer we support, answered with the same tag and ``srtp_key``
    (RFC 4568 §7.1.2); ``mandatory`` refuses plain RTP, ``off`` refuses SRTP. An RTP/AVP
    offer carrying crypto lines (best-effort SRTP) is answered with SRTP when the policy
    is not ``off``."""
    chosen: Negotiated | None = None
    answer_media: list[Media] = []
    family = "IP6" if ":" in address else "IP4"
    for m in offer.media:
        if chosen is not None or m.kind != "audio" or m.port == 0 or m.proto not in AUDIO_PROTOS:
            answer_media.append(Media(m.kind, 0, m.proto, list(m.formats)))
            continue
        crypto: Crypto | None = None
        if srtp != "off" and srtp_key:
            usable = offered_cryptos(m.attrs("crypto"))
            crypto = usable[0] if usable else None
        secure = m.proto in SAVP_PROTOS
        if (secure and crypto is None) or (srtp == "mandatory" and crypto is None):
            answer_media.append(Media(m.kind, 0, m.proto, list(m.formats)))
            continue
        maps = m.rtpmaps
        pick: tuple[int, RtpMap, CodecSpec] | None = None
        for f in m.formats:
            rm = maps.get(int(f))
            if rm is None:
                continue
            for spec in codecs:
                if spec.matches(rm):
                    pick = (int(f), rm, spec)
                    break
            if pick:
                break
        if pick is None:
            answer_media.append(Media(m.kind, 0, m.proto, list(m.formats)))
            continue
        pt, rm, spec = pick
        conn = offer.connection_for(m)
        assert conn is not None  # parse_sdp guarantees it for a non-zero port
        remote_dir = m.direction
        remote_hold = conn.is_hold or remote_dir in ("sendonly", "inactive")
        ours = COMPLEMENT[remote_dir]
        if conn.is_hold and remote_dir == "sendrecv":
            ours = "recvonly"
        if local_hold:
            ours = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(ours, ours)
        ev_pt = _event_pt(m, rm.clock_rate)
        ptime = m.ptime or DEFAULT_PTIME
        formats = [str(pt)] + ([str(ev_pt)] if ev_pt is not None else [])
        attrs = _audio_attrs(pt, rm, m.fmtps.get(pt) or spec.fmtp, ev_pt, ours, ptime)
        if crypto is not None:
            attrs.append(("crypto", Crypto(crypto.tag, crypto.suite, srtp_key).attribute()))
        answer_media.append(Media("audio", port, m.proto, formats, attributes=attrs))
        chosen = Negotiated(
            codec=spec.name,
            payload_type=pt,
            clock_rate=rm.clock_rate,
            event_pt=ev_pt,
            remote_address=conn.address,
            remote_port=m.port,
            remote_rtcp_port=_remote_rtcp(m),
            local_direction=ours,
            remote_hold=remote_hold,
            ptime=ptime,
            srtp_suite=crypto.suite if crypto else None,
            srtp_remote_key=crypto.key if crypto else None,
            srtp_local_key=srtp_key if crypto else None,
        )
    if chosen is None:
        raise NegotiationError("no common audio codec (and SRTP policy) in the offer")
    sd = SessionDescription(
        origin=_origin(address, session_id, version),
        name="-",
        connection=Connection("IN", family, address),
        media=answer_media,
    )
    return sd, chosen


def create_offer(
    *,
    codecs: Sequence[CodecSpec] = DEFAULT_CODECS,
    address: str,
    port: int,
    session_id: str,
    version: int,
    direction: str = "sendrecv",
    event_pt: int | None = DEFAULT_EVENT_PT,
    ptime: int = DEFAULT_PTIME,
    srtp: str = "off",
    srtp_key: bytes = b"",
) -> SessionDescription:
    """An offer with our codecs (in preference order) and telephone-event at 8 kHz.

    ``srtp``: ``mandatory`` offers RTP/SAVP, ``optional`` offers RTP/AVP with the crypto
    lines (best-effort SRTP: a peer that knows SDES answers with one, others ignore
    them), both with every suite we support keyed with ``srtp_key``."""
    if not codecs:
        raise ValueError("an offer needs at least one codec")
    formats = [str(c.payload_type) for c in codecs]
    attrs: list[tuple[str, str | None]] = []
    for c in codecs:
        attrs.append(("rtpmap", str(RtpMap(c.payload_type, c.name, c.clock_rate, c.channels))))
        if c.fmtp:
            attrs.append(("fmtp", f"{c.payload_type} {c.fmtp}"))
    if event_pt is not None:
        formats.append(str(event_pt))
        attrs.append(("rtpmap", f"{event_pt} {TELEPHONE_EVENT}/8000"))
        attrs.append(("fmtp", f"{event_pt} 0-16"))
    attrs.append(("ptime", str(ptime)))
    attrs.append((direction, None))
    if srtp != "off" and srtp_key:
        for tag, suite in enumerate(SUITES, 1):
            attrs.append(("crypto", Crypto(tag, suite, srtp_key).attribute()))
    proto = "RTP/SAVP" if srtp == "mandatory" and srtp_key else "RTP/AVP"
    family = "IP6" if ":" in address else "IP4"
    return SessionDescription(
        origin=_origin(address, session_id, version),
        name="-",
        connection=Connection("IN", family, address),
        media=[Media("audio", port, proto, formats, attributes=attrs)],
    )


def _answered_crypto(ours: Media, m: Media) -> tuple[Crypto, Crypto] | None:
    """(our offered line, the answer's line) when the answer accepted one of our suites
    with the same tag and suite (RFC 4568 §7.1.3)."""
    offered = {c.tag: c for c in offered_cryptos(ours.attrs("crypto"))}
    for c in offered_cryptos(m.attrs("crypto")):
        mine = offered.get(c.tag)
        if mine is not None and mine.suite == c.suite:
            return mine, c
    return None


def process_answer(
    offer: SessionDescription,
    answer: SessionDescription,
    *,
    codecs: Sequence[CodecSpec] = DEFAULT_CODECS,
) -> Negotiated:
    """Read the answer to our ``offer`` (RFC 3264 §7). Raises NegotiationError when
    the audio stream was rejected or the answer picked a codec we did not offer."""
    if len(answer.media) != len(offer.media):
        raise NegotiationError("answer has a different number of m= lines (RFC 3264 §6)")
    for ours, m in zip(offer.media, answer.media, strict=True):
        if ours.kind != "audio" or ours.port == 0:
            continue
        if m.port == 0:
            raise NegotiationError("the audio stream was rejected")
        maps = m.rtpmaps
        for f in m.formats:
            rm = maps.get(int(f)) if f.isdigit() else None
            if rm is None or rm.encoding.lower() == TELEPHONE_EVENT:
                continue
            spec = next((c for c in codecs if c.matches(rm)), None)
            if spec is None:
                continue
            conn = answer.connection_for(m)
            assert conn is not None
            remote_dir = m.direction
            crypto = _answered_crypto(ours, m)
            if ours.proto in SAVP_PROTOS and crypto is None:
                raise NegotiationError("SRTP offered as mandatory; the answer has no usable key")
            return Negotiated(
                codec=spec.name,
                payload_type=int(f),
                clock_rate=rm.clock_rate,
                event_pt=_event_pt(m, rm.clock_rate),
                remote_address=conn.address,
                remote_port=m.port,
                remote_rtcp_port=_remote_rtcp(m),
                local_direction=COMPLEMENT[remote_dir],
                remote_hold=conn.is_hold or remote_dir in ("sendonly", "inactive"),
                ptime=m.ptime or DEFAULT_PTIME,
                srtp_suite=crypto[0].suite if crypto else None,
                srtp_remote_key=crypto[1].key if crypto else None,
                srtp_local_key=crypto[0].key if crypto else None,
            )
        raise NegotiationError("the answer has no codec we offered")
    raise NegotiationError("no audio stream in the offer")
