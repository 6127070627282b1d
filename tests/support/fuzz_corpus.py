"""The SIP fuzz corpus: mutated messages, generated deterministically, committed.

``tests/data/sip-fuzz/corpus.bin.gz`` holds :data:`SIZE` messages made by
:func:`generate` from a fixed seed: the RFC 4475 messages and a few carrier-style
messages (INVITE with SDP, a 200 with Record-Route, ACK, BYE, CANCEL, REGISTER), each
mutated by grammar-preserving changes (30 %: compact or odd-case names, LWS, folding)
or by byte-level operations (flip to a SIP delimiter, insert, delete, truncate,
duplicate a run) and header-level ones (duplicate or drop a line, compact or odd-case
names, LWS around separators, a folded line, a value swapped for a tricky one).  The
differential test runs every entry through the SIP core and the router's fast path.

Regenerate after changing the generator (the test checks the file is what it makes)::

    .venv/bin/python tests/support/fuzz_corpus.py
"""

from __future__ import annotations

import gzip
import random
import struct
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
CORPUS = DATA / "sip-fuzz" / "corpus.bin.gz"
SEED = 4475
SIZE = 600

_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _msg(start: str, headers: list[str], body: bytes = b"") -> bytes:
    lines = [start, *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


CARRIER = [
    _msg(
        "INVITE sip:+15551230001@192.0.2.10:5060;user=phone SIP/2.0",
        [
            "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-77a1;rport",
            "Max-Forwards: 70",
            'From: "Carrier" <sip:+15550001@198.51.100.7>;tag=f-91',
            "To: <sip:+15551230001@192.0.2.10>",
            "Call-ID: 1-2-3@198.51.100.7",
            "CSeq: 1 INVITE",
            "Contact: <sip:+15550001@198.51.100.7:5060>",
            "Route: <sip:192.0.2.10;lr>, <sip:10.0.0.5:5080;transport=tcp;lr>",
            "Content-Type: application/sdp",
        ],
        _SDP,
    ),
    _msg(
        "SIP/2.0 200 OK",
        [
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKsbX.1,"
            " SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-77a1;rport=5060;received=198.51.100.7",
            "Record-Route: <sip:192.0.2.10;lr;r2=on>",
            'From: "Carrier" <sip:+15550001@198.51.100.7>;tag=f-91',
            "To: <sip:+15551230001@192.0.2.10>;tag=t-22",
            "Call-ID: 1-2-3@198.51.100.7",
            "CSeq: 1 INVITE",
            "Contact: <sip:uas@10.0.0.5:5080;transport=tcp>",
            "Content-Type: application/sdp",
        ],
        _SDP,
    ),
    _msg(
        "ACK sip:uas@10.0.0.5:5080;transport=tcp SIP/2.0",
        [
            "v: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-77a2",
            "Route: <sip:192.0.2.10;lr;r2=on>",
            "f: <sip:+15550001@198.51.100.7>;tag=f-91",
            "t: <sip:+15551230001@192.0.2.10>;tag=t-22",
            "i: 1-2-3@198.51.100.7",
            "CSeq: 1 ACK",
            "Max-Forwards: 70",
        ],
    ),
    _msg(
        "BYE sip:uas@10.0.0.5:5080 SIP/2.0",
        [
            "Via: SIP/2.0/TCP [2001:db8::7]:5060;branch=z9hG4bK-77a3",
            "From: <sip:+15550001@198.51.100.7>;tag=f-91",
            "To: <sip:+15551230001@192.0.2.10>;tag=t-22",
            "Call-ID: 1-2-3@198.51.100.7",
            "CSeq: 2 BYE",
            "Max-Forwards: 69",
        ],
    ),
    _msg(
        "REGISTER sip:example.com SIP/2.0",
        [
            "Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bK-r1",
            "From: <sip:u@example.com>;tag=r",
            "To: <sip:u@example.com>",
            "Call-ID: reg-1",
            "CSeq: 5 REGISTER",
            "Contact: <sip:u@192.0.2.4>;expires=3600, <sip:u@192.0.2.5>;q=0.5",
            "Expires: 3600",
        ],
    ),
]

_DELIMS = b'\x00\r\n :;,<>"\\@%=/ \t\xff'
_TRICKY = [
    b"",
    b" ",
    b"*",
    b"<sip:a@b",
    b'"unterminated <sip:a@b>',
    b"sip:a@b?x=y",
    b"SIP/2.0/UDP",
    b"SIP / 2.0 / UDP h ; branch = z9hG4bKx",
    b"4294967296 INVITE",
    b"2147483647 INVITE",
    b"1\tINVITE",
    b"300",
    b"0",
    b"-1",
    b"00070",
    b"<sip:h;lr>,,<sip:i;lr>",
    b"<sip:user;par=u%40example.net@example.com>;tag=x",
    b"tel:+1555",
    b"a b",
    b"\xc3\xa9t\xc3\xa9",
]
_NAMES = [b"Via", b"v", b"VIA", b"From", b"f", b"To", b"t", b"Call-ID", b"i", b"CSeq"]
_NAMES += [b"Contact", b"m", b"Route", b"Record-Route", b"Max-Forwards", b"Content-Length"]
_NAMES += [b"l", b"Content-Type", b"c", b"Expires", b"Proxy-Require", b"X-Odd"]


def _header_mutation(rng: random.Random, data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data
    lines = data[:end].split(b"\r\n")
    body = data[end:]
    if len(lines) < 2:
        return data
    i = rng.randrange(1, len(lines))
    line = lines[i]
    name, colon, value = line.partition(b":")
    op = rng.randrange(7)
    if op == 0:
        lines.insert(i, line)  # duplicate the line
    elif op == 1:
        del lines[i]
    elif op == 2 and colon:
        lines[i] = rng.choice(_NAMES) + b":" + value  # another (or compact) name
    elif op == 3 and colon:
        lines[i] = name + b" \t: " + value.replace(b";", b" ; ", 1).replace(b"/", b" / ", 1)
    elif op == 4 and colon and b" " in value.strip():
        head, _, tail = value.strip().partition(b" ")
        lines[i] = name + b": " + head + b"\r\n  " + tail  # fold the line (§7.3.1)
    elif op == 5 and colon:
        lines[i] = name + b": " + rng.choice(_TRICKY)
    else:
        lines.insert(i, rng.choice(_NAMES) + b": " + rng.choice(_TRICKY))
    return b"\r\n".join(lines) + body


_RESPELL = {
    b"via": b"v",
    b"from": b"f",
    b"to": b"t",
    b"call-id": b"i",
    b"contact": b"m",
    b"content-type": b"c",
    b"content-length": b"l",
    b"cseq": b"CSEQ",
    b"route": b"rOuTe",
    b"record-route": b"RECORD-route",
}


def _gentle_mutation(rng: random.Random, data: bytes) -> bytes:
    """A change the grammar allows: compact or odd-case name, LWS, a folded line."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data
    lines = data[:end].split(b"\r\n")
    if len(lines) < 2:
        return data
    i = rng.randrange(1, len(lines))
    name, colon, value = lines[i].partition(b":")
    if not colon:
        return data
    op = rng.randrange(3)
    if op == 0:
        name = _RESPELL.get(name.strip().lower(), name.upper())
        lines[i] = name + b":" + value
    elif op == 1:
        lines[i] = name + b" \t:  " + value.strip() + b" "
    elif b" " in value.strip():
        head, _, tail = value.strip().partition(b" ")
        lines[i] = name + b": " + head + b"\r\n\t" + tail
    return b"\r\n".join(lines) + data[end:]


def _byte_mutation(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    pos = rng.randrange(max(len(buf), 1))
    op = rng.randrange(5)
    if op == 0 and buf:
        buf[pos] = rng.choice(_DELIMS)
    elif op == 1:
        buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif op == 2:
        del buf[pos : pos + rng.randint(1, 10)]
    elif op == 3:
        del buf[pos:]
    else:
        buf[pos:pos] = buf[pos : pos + rng.randint(1, 30)]
    return bytes(buf)


def seeds() -> list[bytes]:
    rfc = sorted((DATA / "rfc4475").glob("*.dat"))
    return [p.read_bytes() for p in rfc] + CARRIER


def generate() -> list[bytes]:
    """:data:`SIZE` mutated messages, the same on every machine and Python 3 version
    (``random.Random`` with a fixed seed, integer draws only)."""
    rng = random.Random(SEED)
    base = seeds()
    out: list[bytes] = []
    while len(out) < SIZE:
        data = base[rng.randrange(len(base))]
        gentle = rng.random() < 0.3
        for _ in range(rng.randint(1, 4)):
            if gentle:
                data = _gentle_mutation(rng, data)
            elif rng.random() < 0.6:
                data = _header_mutation(rng, data)
            else:
                data = _byte_mutation(rng, data)
        out.append(data)
    return out


def dump(messages: list[bytes]) -> bytes:
    raw = b"".join(struct.pack(">I", len(m)) + m for m in messages)
    return gzip.compress(raw, mtime=0)


def load() -> list[bytes]:
    raw = gzip.decompress(CORPUS.read_bytes())
    out: list[bytes] = []
    pos = 0
    while pos < len(raw):
        (n,) = struct.unpack_from(">I", raw, pos)
        out.append(raw[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


if __name__ == "__main__":
    CORPUS.parent.mkdir(parents=True, exist_ok=True)
    CORPUS.write_bytes(dump(generate()))
    print(f"{CORPUS}: {SIZE} messages")
