"""TCP stream framing (RFC 3261 §18.3, RFC 5626 §4.4.1 keep-alives)."""

from __future__ import annotations

import pytest

from switchboard.sip.errors import FramingError
from switchboard.sip.framer import StreamFramer
from switchboard.sip.message import parse_message

A = (
    b"INVITE sip:bob@b.example.com SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\n"
    b"Content-Type: application/sdp\r\nContent-Length: 13\r\n\r\nv=0\r\ns=-\r\nt=0"
)
B = b"SIP/2.0 200 OK\r\nv: SIP/2.0/TCP a;branch=z9hG4bK1\r\nl: 0\r\n\r\n"
C = b"BYE sip:x@y SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK2\r\ncontent-length :  4\r\n\r\nabcd"
STREAM = A + B + b"\r\n\r\n" + C + b"\r\n"


def test_coalesced_messages_in_one_read() -> None:
    f = StreamFramer()
    assert f.feed(STREAM) == [A, B, C]
    assert f.take_pings() == 1 and f.keepalives == 2 and f.buffered == 0  # ping + pong
    assert parse_message(f.feed(A)[0]).body == b"v=0\r\ns=-\r\nt=0"


def test_split_at_every_offset() -> None:
    for cut in range(len(STREAM) + 1):
        f = StreamFramer()
        got = f.feed(STREAM[:cut]) + f.feed(STREAM[cut:])
        assert got == [A, B, C], cut
        assert f.pings == 1 and f.buffered == 0


def test_byte_by_byte() -> None:
    f = StreamFramer()
    got: list[bytes] = []
    for i in range(len(STREAM)):
        got += f.feed(STREAM[i : i + 1])
    assert got == [A, B, C] and f.pings == 1


def test_split_at_every_pair_of_offsets_small() -> None:
    data = B + b"\r\n\r\n" + B
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            f = StreamFramer()
            got = f.feed(data[:i]) + f.feed(data[i:j]) + f.feed(data[j:])
            assert got == [B, B], (i, j)


def test_pong_crlf_alone_is_not_a_ping() -> None:
    f = StreamFramer()
    assert f.feed(b"\r\n") == [] and f.pings == 0 and f.keepalives == 1


def test_oversized_message_is_513_and_framer_stays_failed() -> None:
    f = StreamFramer(max_size=len(A) - 1)
    with pytest.raises(FramingError) as info:
        f.feed(A)
    assert info.value.status == 513 and info.value.reason == "Message Too Large"
    with pytest.raises(FramingError):
        f.feed(B)


def test_header_block_that_never_ends_is_capped() -> None:
    f = StreamFramer(max_size=1000)
    f.feed(b"INVITE sip:a@b SIP/2.0\r\n")
    with pytest.raises(FramingError):
        for _ in range(100):
            f.feed(b"X-Filler: " + b"a" * 50 + b"\r\n")
    assert f.buffered == 0


def test_declared_body_too_large_fails_before_it_arrives() -> None:
    f = StreamFramer(max_size=2000)
    with pytest.raises(FramingError) as info:
        f.feed(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n")
    assert info.value.status == 513


@pytest.mark.parametrize(
    "head",
    [
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP a\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -3\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999999999999\r\n\r\n",
    ],
)
def test_missing_or_bad_content_length_is_400(head: bytes) -> None:
    with pytest.raises(FramingError) as info:
        StreamFramer().feed(head)
    assert info.value.status == 400


def test_content_length_not_fooled_by_similar_header_names() -> None:
    msg = b"OPTIONS sip:a@b SIP/2.0\r\nX-Content-Length: 50\r\nContent-Length: 0\r\n\r\n"
    assert StreamFramer().feed(msg) == [msg]
