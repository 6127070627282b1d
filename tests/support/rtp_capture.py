"""RTP arrival times on the loopback interface, as a packet capture sees them.

A raw ``AF_PACKET`` socket on ``lo`` (needs root or CAP_NET_RAW) records every UDP/IPv4
datagram whose destination port is in a watched range: arrival time, source and
destination port, RTP SSRC and sequence number. Tests use it to measure the audio gap
both far ends of a call hear while a media node restarts, without touching the endpoints
(SIPp streams and receives the RTP itself).
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

ETH_P_ALL = 0x0003
PACKET_HOST = 0  # received by this host (loopback shows each packet outgoing and incoming)


@dataclass(frozen=True, slots=True)
class Arrival:
    t: float
    src_port: int
    dst_port: int
    ssrc: int
    seq: int


def can_capture() -> bool:
    return os.geteuid() == 0


class LoopbackCapture:
    """Capture RTP to ``ports`` (a range of destination ports) until :meth:`stop`."""

    def __init__(self, ports: range) -> None:
        self.ports = ports
        self.arrivals: list[Arrival] = []
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp-capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        lo, hi = self.ports.start, self.ports.stop
        while not self._stop.is_set():
            try:
                frame, addr = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] != PACKET_HOST or len(frame) < 14 + 20 + 8 + 12:
                continue
            if frame[12:14] != b"\x08\x00" or frame[23] != 17:  # IPv4, UDP
                continue
            ihl = (frame[14] & 0x0F) * 4
            udp = 14 + ihl
            src, dst = struct.unpack_from("!HH", frame, udp)
            if not lo <= dst < hi:
                continue
            rtp = udp + 8
            if frame[rtp] >> 6 != 2:  # not RTP version 2 (RTCP shares nothing with us)
                continue
            seq, _ts, ssrc = struct.unpack_from("!HII", frame, rtp + 2)
            self.arrivals.append(Arrival(time.monotonic(), src, dst, ssrc, seq))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()

    def flows(self) -> dict[tuple[int, int], list[Arrival]]:
        """Arrivals by (source port, destination port), in arrival order."""
        out: dict[tuple[int, int], list[Arrival]] = defaultdict(list)
        for a in self.arrivals:
            out[(a.src_port, a.dst_port)].append(a)
        return dict(out)

    @staticmethod
    def max_gap(arrivals: list[Arrival], start: float, end: float) -> float:
        """The longest silence between consecutive packets in [start, end] (seconds)."""
        times = [a.t for a in arrivals if start <= a.t <= end]
        if len(times) < 2:
            return end - start
        return max(b - a for a, b in itertools.pairwise(times))
