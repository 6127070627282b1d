"""Per-source receive statistics: RFC 3550 Appendix A.1 (sequence validation), A.3 (loss)
and A.8 / §6.4.1 (interarrival jitter). Arrival times are passed in (seconds, any epoch).
"""

from __future__ import annotations

from dataclasses import dataclass

SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000  # RFC 3550 A.1
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2


@dataclass(frozen=True, slots=True)
class LossReport:
    """What an RTCP report block carries about one source (RFC 3550 §6.4.1)."""

    fraction_lost: int  # 8-bit fixed point, lost/expected since the last report ×256
    cumulative_lost: int  # 24-bit signed
    extended_highest_seq: int
    jitter: int  # timestamp units


class ReceiverStats:
    """Sequence tracking, loss and jitter for one SSRC (RFC 3550 A.1, A.3, A.8)."""

    __slots__ = (
        "bad_seq",
        "base_seq",
        "clock_rate",
        "cycles",
        "duplicates",
        "expected_prior",
        "jitter",
        "max_seq",
        "probation",
        "received",
        "received_prior",
        "ssrc",
        "transit",
    )

    def __init__(self, ssrc: int, seq: int, clock_rate: int = 8000) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self._init_seq(seq)
        self.max_seq = (seq - 1) & 0xFFFF
        self.probation = MIN_SEQUENTIAL
        self.jitter = 0.0
        self.transit: float | None = None
        self.duplicates = 0

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def update(self, seq: int, timestamp: int, arrival: float) -> bool:
        """Account one packet; False when it is not (yet) valid (probation, jump, duplicate)."""
        # Fast path: the next packet in order from a validated source (the common case).
        if seq == ((self.max_seq + 1) & 0xFFFF) and not self.probation:
            if seq == 0:
                self.cycles += SEQ_MOD
            self.max_seq = seq
            self.received += 1
            ok = True
        else:
            ok = self._update_seq(seq)
        if ok:
            # A.8: transit in timestamp units; jitter is a 1/16 running mean of |ΔD|.
            transit = arrival * self.clock_rate - timestamp
            last = self.transit
            self.transit = transit
            if last is not None:
                d = transit - last
                if d < 0:
                    d = -d
                # Large |d| from a 32-bit timestamp wrap is folded back.
                if d > 2147483648:
                    d = abs(d - 4294967296)
                self.jitter += (d - self.jitter) / 16.0
        return ok

    def _update_seq(self, seq: int) -> bool:
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == ((self.max_seq + 1) & 0xFFFF):
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta == 0:
            self.duplicates += 1
            return False
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += SEQ_MOD  # wrapped
            self.max_seq = seq
        elif udelta <= SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:
                # Two sequential packets after a big jump: the source restarted.
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: duplicate or reordered packet within MAX_MISORDER — counted as received.
        self.received += 1
        return True

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (expected − received; negative with duplicates), A.3."""
        return self.expected - self.received

    def report(self) -> LossReport:
        """Loss figures for an RTCP report block; resets the 'since last report' interval."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min((lost_interval << 8) // expected_interval, 255)
        lost = max(min(self.lost, 0x7FFFFF), -0x800000)
        return LossReport(fraction, lost, self.extended_max & 0xFFFFFFFF, int(self.jitter))
