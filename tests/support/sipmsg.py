"""Small builders of SIP messages for the router's unit tests."""

from __future__ import annotations

from switchboard.sip import fastpath as wire

ROUTER = "127.0.0.1:5060"


def invite(
    *,
    call_id: str = "call-1@carrier",
    branch: str = "z9hG4bK-uac-1",
    via: str = "127.0.0.1:5070",
    ruri: str = f"sip:echo@{ROUTER}",
    extra: str = "",
    max_forwards: str | None = "70",
    method: str = "INVITE",
    cseq: int = 1,
    to_tag: str = "",
    route: str = "",
    body: str = "v=0\r\n",
) -> bytes:
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {via};branch={branch}",
        "From: <sip:alice@carrier>;tag=from1",
        f"To: <sip:echo@{ROUTER}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:alice@" + via + ">",
    ]
    if route:
        lines.append(f"Route: {route}")
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    if extra:
        lines.extend(extra.split("\n"))
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def response_to(
    request: bytes,
    status: int,
    reason: str = "OK",
    *,
    to_tag: str = "uas1",
    rr: bool = True,
    contact: str = "127.0.0.1:5081",
) -> bytes:
    """What a UAS answers: copies Via, From, To (+tag), Call-ID, CSeq, Record-Route."""
    m = wire.parse(request)
    lines = [f"SIP/2.0 {status} {reason}".encode()]
    lines += [m.lines[i] for i in m.vias]
    if rr:
        lines += [m.lines[i] for i in m.rrs]
    lines.append(m.lines[m.from_])
    to = m.lines[m.to]
    if status > 100 and b";tag=" not in to:
        to += b";tag=" + to_tag.encode()
    lines.append(to)
    lines.append(b"Call-ID: " + m.call_id)
    lines.append(b"CSeq: " + m.cseq_num + b" " + m.cseq_method)
    if status < 300 and m.method == b"INVITE":
        lines.append(f"Contact: <sip:uas@{contact}>".encode())
    lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def header(data: bytes, name: str) -> list[str]:
    out = []
    for line in data.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name.lower().encode():
            out.append(v.strip().decode())
    return out


def start_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode()
