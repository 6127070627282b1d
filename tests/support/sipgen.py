"""Hypothesis strategies for SIP messages, shared by the property tests and the
differential test (tests/unit/sip): header lists with known, compact and random names,
values of any text, bodies, methods, a message builder, and mutations of the RFC 4475
valid messages."""

from __future__ import annotations

from pathlib import Path

from hypothesis import strategies as st

DATA = Path(__file__).resolve().parents[1] / "data" / "rfc4475"
VALID = [
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
    "inv2543",
    "regescrt",
]
SEEDS = [(DATA / f"{n}.dat").read_bytes() for n in VALID]

TOKEN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(alphabet=TOKEN, min_size=1, max_size=12)
# Header names: well-known ones in odd spellings, compact forms, and random tokens;
# Content-Length is left to the serialiser.
known_names = st.sampled_from(
    [
        "Via",
        "v",
        "VIA",
        "From",
        "f",
        "To",
        "t",
        "Call-ID",
        "i",
        "CSeq",
        "Contact",
        "m",
        "Route",
        "Record-Route",
        "Max-Forwards",
        "Subject",
        "s",
        "Allow",
        "Supported",
        "k",
        "WWW-Authenticate",
        "Date",
        "User-Agent",
        "X-Custom",
    ]
)
names = st.one_of(known_names, tokens.filter(lambda n: n.lower() not in ("l", "content-length")))
# Values: any text without CR/LF and without surrounding whitespace (which LWS rules
# make insignificant), including non-ASCII.
values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=40,
).map(lambda s: s.strip(" \t"))
headers = st.lists(st.tuples(names, values), max_size=15)
bodies = st.binary(max_size=200)
methods = st.one_of(st.sampled_from(["INVITE", "ACK", "BYE", "OPTIONS", "REGISTER"]), tokens)


def build(start: str, hdrs: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [start, *(f"{n}: {v}" if v else f"{n}:" for n, v in hdrs)]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.sampled_from(b'\x00\r\n :;,<>"\\@%=/ \t\xff'))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 10))]
        elif op == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 30))]
    return bytes(data)
