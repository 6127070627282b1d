"""Pure RTP/RTCP (RFC 3550), codecs, RFC 4733 DTMF, jitter buffer and mixing."""
