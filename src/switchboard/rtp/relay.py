"""Packet mapping for a bridge between two legs (B2BUA media relay, no jitter buffer).

A bridged call relays each packet as it arrives so the endpoints keep the original
timing (reference §8.5). :class:`RelayPath` decides, for one direction, what a packet
received on the A leg becomes on the B leg:

* audio in A's codec → the same payload (same codec) or transcoded through linear PCM
  (:func:`~switchboard.rtp.codec.transcode`; PCMU↔PCMA by direct table);
* telephone-event (RFC 4733) → passed as telephone-event with B's negotiated payload
  type, untouched (DTMF is never decoded and re-generated on a relay);
* comfort noise (PT 13, RFC 3389) → passed when B negotiated CN, else dropped;
* anything else → dropped and counted (a peer sending a PT it did not offer).

Timestamps are re-based onto B's own stream: ``out_ts = in_ts·(B clock / A clock) + offset``,
with the offset fixed by the first packet (and re-fixed when A's SSRC changes), so gaps and
DTMF event timestamps survive the relay.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.rtp.codec import PT_CN, Codec, CodecError, transcode


@dataclass(frozen=True, slots=True)
class Relayed:
    """What to send on the B leg."""

    payload_type: int
    payload: bytes
    timestamp: int
    marker: bool


class RelayPath:
    """One direction of a bridge: leg A's packets → leg B's packets."""

    def __init__(
        self,
        src: Codec,
        dst: Codec,
        src_event_pt: int | None = 101,
        dst_event_pt: int | None = 101,
        dst_cn: bool = False,
    ) -> None:
        if src.sample_rate != dst.sample_rate:
            raise CodecError(
                f"relay {src.name}/{src.sample_rate} → {dst.name}/{dst.sample_rate} needs resampling; not supported"
            )
        self.src, self.dst = src, dst
        self.src_event_pt, self.dst_event_pt = src_event_pt, dst_event_pt
        self.dst_cn = dst_cn
        self._same = src.name == dst.name and src.payload_type == dst.payload_type
        self._ratio_num, self._ratio_den = dst.clock_rate, src.clock_rate
        self._offset: int | None = None
        self._ssrc: int | None = None
        self.relayed = 0
        self.transcoded = 0
        self.dropped = 0

    def reset(self) -> None:
        """Forget the timestamp mapping (e.g. after a re-INVITE); the next packet re-anchors it."""
        self._offset = None

    def map(
        self,
        ssrc: int,
        payload_type: int,
        marker: bool,
        timestamp: int,
        payload: bytes,
        out_now: int,
    ) -> Relayed | None:
        """Map one packet; ``out_now`` is B's current RTP timestamp (used to anchor the mapping)."""
        scaled = timestamp * self._ratio_num // self._ratio_den
        if self._offset is None or ssrc != self._ssrc:
            self._offset = (out_now - scaled) & 0xFFFFFFFF
            self._ssrc = ssrc
            marker = True  # a new mapping is a discontinuity for the far end
        out_ts = (scaled + self._offset) & 0xFFFFFFFF
        if payload_type == self.src.payload_type:
            if self._same:
                out = payload
            else:
                try:
                    out = transcode(payload, self.src, self.dst)
                except CodecError:
                    self.dropped += 1
                    return None
                self.transcoded += 1
            self.relayed += 1
            return Relayed(self.dst.payload_type, out, out_ts, marker)
        if self.src_event_pt is not None and payload_type == self.src_event_pt:
            if self.dst_event_pt is None:
                self.dropped += 1
                return None
            self.relayed += 1
            return Relayed(self.dst_event_pt, payload, out_ts, marker)
        if payload_type == PT_CN and self.dst_cn:
            self.relayed += 1
            return Relayed(PT_CN, payload, out_ts, marker)
        self.dropped += 1
        return None
