"""Client packet framing (mod_event_socket.c read_packet): terminators, headers, bodies, caps."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.esl.framing import (
    MAX_CONTENT_LENGTH,
    BadContentLength,
    HeaderBlockTooLarge,
    Packet,
    PacketReader,
)

SENDMSG = (
    b"sendmsg 0c1e2f3a\ncall-command: execute\nexecute-app-name: playback\n"
    b"content-type: text/plain\ncontent-length: 11\n\n/tmp/a.wav\n"
    b"api status\n\n"
)


@pytest.mark.parametrize("term", [b"\n\n", b"\r\n\r\n", b"\n\r\n", b"\n\r\r\n"])
def test_every_fs_terminator_ends_a_packet(term: bytes) -> None:
    assert PacketReader().feed(b"auth ClueCon" + term) == [Packet("auth ClueCon")]


def test_leading_crlf_discarded_and_command_cut_at_cr() -> None:
    out = PacketReader().feed(b"\r\n\n\r\napi status\r\n\r\nexit\n\n")
    assert [p.command for p in out] == ["api status", "exit"]


def test_headers_and_body() -> None:
    p1, p2 = PacketReader().feed(SENDMSG)
    assert p1.command == "sendmsg 0c1e2f3a"
    assert p1.header("Call-Command") == "execute"
    assert p1.header("EXECUTE-APP-NAME") == "playback"
    assert p1.body == b"/tmp/a.wav\n"
    assert p2 == Packet("api status")


def test_header_value_spaces_after_colon_skipped_and_colonless_lines_ignored() -> None:
    (p,) = PacketReader().feed(b"bgapi status\nJob-UUID:    abc:def\nnonsense\n\n")
    assert p.headers == (("Job-UUID", "abc:def"),)


@given(st.data())
def test_split_at_every_offset_gives_the_same_packets(data: st.DataObject) -> None:
    whole = PacketReader().feed(SENDMSG)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(SENDMSG)), max_size=6)))
    reader = PacketReader()
    out: list[Packet] = []
    prev = 0
    for cut in [*cuts, len(SENDMSG)]:
        out += reader.feed(SENDMSG[prev:cut])
        prev = cut
    assert out == whole


def test_byte_by_byte_with_crlf_terminator() -> None:
    reader = PacketReader()
    out: list[Packet] = []
    for b in b"event plain ALL\r\n\r\nexit\n\r\n":
        out += reader.feed(bytes([b]))
    assert [p.command for p in out] == ["event plain ALL", "exit"]


@pytest.mark.parametrize("value", [b"-1", b"abc", str(MAX_CONTENT_LENGTH + 1).encode()])
def test_bad_content_length_is_a_typed_error(value: bytes) -> None:
    with pytest.raises(BadContentLength):
        PacketReader().feed(b"sendmsg x\ncontent-length: " + value + b"\n\n")


def test_oversized_header_block_is_a_typed_error() -> None:
    reader = PacketReader(max_header_bytes=1024)
    reader.feed(b"a" * 1000)
    with pytest.raises(HeaderBlockTooLarge):
        reader.feed(b"b" * 100)


def test_body_cap_is_configurable() -> None:
    with pytest.raises(BadContentLength):
        PacketReader(max_body_bytes=10).feed(b"sendmsg x\ncontent-length: 11\n\n")


@given(st.binary(max_size=300))
def test_garbage_never_raises_anything_but_framing_errors(data: bytes) -> None:
    from switchboard.esl.framing import FramingError

    with contextlib.suppress(FramingError):
        PacketReader(max_header_bytes=128).feed(data)


def test_packets_before_a_framing_error_are_kept() -> None:
    with pytest.raises(BadContentLength) as info:
        PacketReader().feed(b"api status\n\nsendmsg x\ncontent-length: -1\n\n")
    assert info.value.packets == [Packet("api status")]
