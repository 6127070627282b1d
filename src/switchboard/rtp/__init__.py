"""Pure RTP/RTCP (RFC 3550), codecs, RFC 4733 DTMF, jitter buffer and mixing.

No sockets, no clock, no randomness: times, arrival instants and random factors are
passed in (the layering rule, docs/architecture.md). The asyncio side is
:mod:`switchboard.media.rtp_endpoint`.

Modules:

* :mod:`.packet` — ``RtpPacket.parse``/``bytes()``, ``peek_header`` (receive fast path),
  ``RtpHeaderWriter`` (preallocated send buffer), seq/timestamp wrap-around helpers.
* :mod:`.rtcp` — SR, RR, SDES, BYE, compound parsing; ``rtcp_interval`` (§6.3, A.7);
  ``RtcpSession`` (timers as data).
* :mod:`.stats` — ``ReceiverStats``: A.1 sequence validation, A.3 loss, A.8 jitter.
* :mod:`.codec` — PCMU/PCMA numpy tables, L16, G.722; ``transcode``; lookup by name/PT.
* :mod:`.resample` — polyphase windowed-sinc ``resample`` and ``StreamResampler``.
* :mod:`.wav` — WAV decode (any rate/layout → mono at the call rate), streaming writer.
* :mod:`.source` — ``Prompt`` (frames pre-encoded per codec), ``Player``, tones,
  silence, ``Echo``, ``WavRecorder`` (mono mix or one channel per leg).
* :mod:`.dtmf` — RFC 4733 ``DtmfReceiver``/``DtmfSender``, Goertzel ``InbandDtmfDetector``.
* :mod:`.jitter` — adaptive ``JitterBuffer`` for terminating legs.
* :mod:`.mixer` — ``ConferenceMixer`` (N−1, energy gate, mute, deaf, clipping).
* :mod:`.relay` — ``RelayPath``: one direction of a bridge (transcode, DTMF, timestamps).
"""
