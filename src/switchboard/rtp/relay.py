"""Packet mapping for a bridge between two legs (B2BUA media relay, no jitter buffer).

A bridged call relays each packet as it arrives so the endpoints keep the original
timing. :class:`RelayPath` decides, for one direction, what a packet
received on the A leg becomes on the B leg:

* audio in A's codec → the same payload (same codec) or transcoded through linear PCM
  (:func:`~switchboard.rtp.codec.transcode`; PCMU↔PCMA by direct table); between
  audio rates (wideband G.722/L16 ↔ G.711) through a streaming band-limited resampler;
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

import numpy as np

from switchboard.rtp.codec import PT_CN, Codec, CodecError, transcode
from switchboard.rtp.resample import StreamResampler


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
        self.src, self.dst = src, dst
        # Different audio rates (G.722 or L16 wideband ↔ G.711): decode, resample with
        # history across frames, re-frame to 20 ms, encode.
        self._resampler: StreamResampler | None = None
        self._pending = np.zeros(0, np.int16)
        self._frame_out = dst.sample_rate // 50
        if src.sample_rate != dst.sample_rate:
            self._resampler = StreamResampler(src.sample_rate, dst.sample_rate)
        self.src_event_pt, self.dst_event_pt = src_event_pt, dst_event_pt
        self.dst_cn = dst_cn
        self._same = src.name == dst.name and src.payload_type == dst.payload_type
        self._ratio_num, self._ratio_den = dst.clock_rate, src.clock_rate
        self._offset: int | None = None
        self._ssrc: int | None = None
        self.relayed = 0
        self.transcoded = 0
        self.dropped = 0

    @property
    def same_codec(self) -> bool:
        """Both legs use one codec and payload type: audio is relayed as it came."""
        return self._same and self._resampler is None

    @property
    def anchor(self) -> int | None:
        """The timestamp offset ``out_ts = in_ts + anchor`` (same clock rate), once fixed."""
        return self._offset

    @property
    def anchor_ssrc(self) -> int | None:
        """The source SSRC the offset was fixed on (a new SSRC re-anchors)."""
        return self._ssrc

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
            elif self._resampler is not None:
                resampled = self._resample(payload)
                if resampled is None:
                    return None
                out = resampled
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

    def _resample(self, payload: bytes) -> bytes | None:
        """Decode, resample, re-frame to 20 ms at the destination rate; None if not a whole frame yet."""
        assert self._resampler is not None
        try:
            pcm = self.src.decode(payload)
        except CodecError:
            self.dropped += 1
            return None
        self._pending = np.concatenate([self._pending, self._resampler.process(pcm)])
        n = self._frame_out
        if len(self._pending) < n:
            if self.transcoded:
                return None  # a short frame from the peer: wait for the rest
            # First packet: the filter's start-up delay leaves a few ms missing; pad the
            # front with silence so every later frame comes out whole, with no backlog.
            self._pending = np.concatenate(
                [np.zeros(n - len(self._pending), np.int16), self._pending]
            )
        frame, self._pending = self._pending[:n], self._pending[n:]
        self.transcoded += 1
        return self.dst.encode(frame)
