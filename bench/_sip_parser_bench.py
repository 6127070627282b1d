"""SIP parser throughput, ours vs. sippy's (the B2BUA's parser), in one process.

All four figures use the same 1.2 kB carrier INVITE with SDP (18 headers), both
parsers side by side, best of several rounds, counted in CPU time of this process
(messages per CPU-second, i.e. per core), so other load on a shared machine
distorts the ratios as little as possible:

* full parse — every header object built (``parse_message(..., strict=True)`` and
  the Request-URI), i.e. what a UAS does;
* proxy headers — parse and touch only what a proxy needs (request line, top Via
  branch, Call-ID, CSeq, To tag, Max-Forwards, Route);
* serialise — ``to_bytes()`` of a message after the proxy's edits;
* INVITE with SDP — the whole forward step on that INVITE: parse, proxy headers,
  push Via, decrement Max-Forwards, pop Route, add Record-Route, serialise.

sippy is run through its public classes (``SipRequest``, ``getHFBody``, ``str()``).
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable

from switchboard.sip.message import Request, parse_message

SDP = (
    "v=0\r\n"
    "o=CarrierGW 1701 1701 IN IP4 198.51.100.20\r\n"
    "s=SIP Call\r\n"
    "c=IN IP4 198.51.100.20\r\n"
    "t=0 0\r\n"
    "m=audio 31006 RTP/AVP 0 8 18 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:18 G729/8000\r\n"
    "a=fmtp:18 annexb=no\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)
INVITE = (
    "INVITE sip:+441632960123@switchboard.example.net:5060;user=phone SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK1a2b3c4d5e6f7a8b;rport\r\n"
    "Via: SIP/2.0/UDP 10.20.30.40:5060;branch=z9hG4bKcarrierinternal77;received=10.20.30.40\r\n"
    "Max-Forwards: 69\r\n"
    "Route: <sip:switchboard.example.net;lr>\r\n"
    'From: "+12025550143" <sip:+12025550143@carrier.example.com;user=phone>;tag=4f7c2a91-13c4\r\n'
    "To: <sip:+441632960123@switchboard.example.net;user=phone>\r\n"
    "Call-ID: 8d3e2f1a-77c5-4b1e-9f0e-6a2b9c8d7e6f@198.51.100.20\r\n"
    "CSeq: 102 INVITE\r\n"
    "Contact: <sip:+12025550143@198.51.100.20:5060;transport=udp>\r\n"
    "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, INFO\r\n"
    "Supported: 100rel, timer, replaces\r\n"
    "Session-Expires: 1800;refresher=uac\r\n"
    "Min-SE: 90\r\n"
    "P-Asserted-Identity: <sip:+12025550143@carrier.example.com;user=phone>\r\n"
    "User-Agent: CarrierGW/4.2\r\n"
    "Content-Type: application/sdp\r\n"
    f"Content-Length: {len(SDP)}\r\n"
    "\r\n" + SDP
)
DATA = INVITE.encode()


# --- ours -------------------------------------------------------------------------
def ours_full(data: bytes) -> object:
    m = parse_message(data, strict=True)
    assert isinstance(m, Request)
    return m.ruri


def ours_proxy(data: bytes) -> object:
    m = parse_message(data)
    assert isinstance(m, Request)
    return (
        m.method,
        m.uri,
        m.top_via.branch,
        m.call_id,
        m.cseq,
        m.to_tag,
        m.max_forwards,
        m.routes,
    )


def _edit(m: Request) -> None:
    h = m.headers
    h.insert("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy0001")
    mf = m.max_forwards
    h.set("Max-Forwards", str((mf if mf is not None else 70) - 1))
    h.remove_first("Route")
    h.insert("Record-Route", "<sip:192.0.2.1;lr>")


_edited = parse_message(DATA)
assert isinstance(_edited, Request)
_edit(_edited)


def ours_serialise(_: bytes) -> object:
    return _edited.to_bytes()


def ours_forward(data: bytes) -> object:
    m = parse_message(data)
    assert isinstance(m, Request)
    _ = (m.top_via.branch, m.call_id, m.cseq, m.to_tag, m.routes)
    _edit(m)
    return m.to_bytes()


# --- sippy ------------------------------------------------------------------------
def load_sippy() -> dict[str, Callable[[bytes], object]] | None:
    try:
        from sippy.SipHeader import SipHeader  # type: ignore[import-not-found]
        from sippy.SipRecordRoute import SipRecordRoute  # type: ignore[import-not-found]
        from sippy.SipRequest import SipRequest  # type: ignore[import-not-found]
        from sippy.SipVia import SipVia  # type: ignore[import-not-found]
    except ImportError:
        return None
    text = INVITE

    def full(_: bytes) -> object:
        m = SipRequest(text)
        m.init_body()
        for h in m.headers:
            h.getBody()
        return m.getRURI()

    def proxy(_: bytes) -> object:
        m = SipRequest(text)
        return (
            m.getMethod(),
            m.getRURI(),
            m.getHFBody("via").getBranch(),
            str(m.getHFBody("call-id")),
            m.getHFBody("cseq").getCSeq(),
            m.getHFBody("to").getTag(),
            m.getHFBody("max-forwards").getNum(),
            m.getHFBodys("route"),
        )

    def edit(m: object) -> None:
        via = SipVia()
        via.setParam("branch", "z9hG4bKproxy0001")
        m.insertHeaderBefore(m.getHFs("via")[0], SipHeader(name="via", body=via))  # type: ignore[attr-defined]
        m.getHFBody("max-forwards").incNum(-1)  # type: ignore[attr-defined]
        m.removeHeader(m.getHFs("route")[0])  # type: ignore[attr-defined]
        rr = SipRecordRoute(body="<sip:192.0.2.1;lr>")
        m.insertHeaderBefore(m.getHFs("via")[0], SipHeader(name="record-route", body=rr))  # type: ignore[attr-defined]

    edited = SipRequest(text)
    edited.init_body()
    edit(edited)

    def serialise(_: bytes) -> object:
        return str(edited).encode()

    def forward(_: bytes) -> object:
        m = SipRequest(text)
        m.init_body()
        _ = (
            m.getHFBody("via").getBranch(),
            m.getHFBody("to").getTag(),
            m.getHFBody("cseq").getCSeq(),
        )
        edit(m)
        return str(m).encode()

    return {"full": full, "proxy": proxy, "serialise": serialise, "forward": forward}


# CPU time of this process, not wall time: the figure is "messages per second on
# one core", and other processes sharing the machine do not distort it as much.
clock = time.process_time


def rate(fn: Callable[[bytes], object], seconds: float = 0.4, rounds: int = 5) -> float:
    """Best-of-``rounds`` calls per CPU-second, each round about ``seconds`` long."""
    n = 64
    while True:  # calibrate the batch size
        t0 = clock()
        for _ in range(n):
            fn(DATA)
        dt = clock() - t0
        if dt > seconds / 4:
            break
        n *= 2
    batch = max(1, int(n * seconds / dt))
    best = 0.0
    for _ in range(rounds):
        gc.collect()
        t0 = clock()
        for _ in range(batch):
            fn(DATA)
        best = max(best, batch / (clock() - t0))
    return best


def main() -> int:
    ours = {
        "full": ours_full,
        "proxy": ours_proxy,
        "serialise": ours_serialise,
        "forward": ours_forward,
    }
    ref = load_sippy()
    # Sanity: both sides produce a forwardable message.
    out = parse_message(ours_forward(DATA))  # type: ignore[arg-type]
    assert out.top_via.branch == "z9hG4bKproxy0001" and out.max_forwards == 68
    results: dict[str, float] = {}
    for key in ("full", "proxy", "serialise", "forward"):
        results[key] = rate(ours[key])
        results["ref_" + key] = rate(ref[key]) if ref else 0.0
        print(
            f"{key:10s} switchboard {results[key]:>10,.0f} msg/s   "
            + (
                f"sippy {results['ref_' + key]:>10,.0f} msg/s   ratio {results[key] / results['ref_' + key]:.1f}x"
                if ref
                else "sippy unavailable"
            ),
            flush=True,
        )
    print(
        f"message: {len(DATA)} bytes INVITE with {len(SDP)} bytes SDP; python {sys.version.split()[0]}"
    )
    print(
        "RESULT"
        f" parse_per_s={results['full']:.0f}"
        f" parse_proxy_headers_per_s={results['proxy']:.0f}"
        f" serialise_per_s={results['serialise']:.0f}"
        f" invite_sdp_forward_per_s={results['forward']:.0f}"
        f" reference_parse_per_s={results['ref_full']:.0f}"
        f" reference_parse_proxy_headers_per_s={results['ref_proxy']:.0f}"
        f" reference_serialise_per_s={results['ref_serialise']:.0f}"
        f" reference_invite_sdp_forward_per_s={results['ref_forward']:.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
