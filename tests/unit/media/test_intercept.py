"""SIPREC pieces of lawful recording: RFC 7865 metadata (well-formed, hostile numbers
escaped, ids and associations consistent), the SRC's SDP offer and the SRS's answer."""

from __future__ import annotations

import base64
import wave
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from switchboard.media.intercept import (
    CallIntercept,
    FileRecording,
    HashChain,
    Target,
    answered_streams,
    recording_metadata,
    siprec_offer,
    verify_chain,
)
from switchboard.rtp.codec import codec_by_name, g722_available

NS = {"r": "urn:ietf:params:xml:ns:recording:1"}


def test_metadata_is_well_formed_and_consistent() -> None:
    meta = {"sip_call_id": "abc@h<1>", "caller": '"><x a="1', "callee": "+4930123",
            "answer": "2026-12-07T11:00:00+00:00"}  # fmt: skip
    root = ET.fromstring(recording_metadata(meta, "node.example", ("1", "2")))
    assert root.findtext("r:datamode", namespaces=NS) == "complete"
    session = root.find("r:session", NS)
    assert session is not None
    assert session.findtext("r:sipSessionID", namespaces=NS) == "abc@h<1>"
    sid = session.get("session_id")
    assert sid is not None and len(base64.b64decode(sid)) == 16  # a 128-bit id, base64
    aors = [p.find("r:nameID", NS).get("aor") for p in root.findall("r:participant", NS)]  # type: ignore[union-attr]
    assert aors == ['sip:"><x a="1@node.example', "sip:+4930123@node.example"]
    streams = root.findall("r:stream", NS)
    assert [s.findtext("r:label", namespaces=NS) for s in streams] == ["1", "2"]
    assert {s.get("session_id") for s in streams} == {sid}
    assoc = root.findall("r:participantstreamassoc", NS)
    ids = [s.get("stream_id") for s in streams]
    assert [(a.findtext("r:send", namespaces=NS), a.findtext("r:recv", namespaces=NS))
            for a in assoc] == [(ids[0], ids[1]), (ids[1], ids[0])]  # fmt: skip


def test_offer_and_answer() -> None:
    pcmu, pcma = codec_by_name("PCMU"), codec_by_name("PCMA")
    offer = siprec_offer("127.0.0.1", (40000, 40002), (pcmu, pcma))
    assert "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:1\r\na=sendonly" in offer
    assert "m=audio 40002 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=label:2\r\na=sendonly" in offer
    answer = (
        b"v=0\r\no=srs 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
        b"m=audio 5000 RTP/AVP 0\r\na=label:2\r\na=recvonly\r\n"
        b"m=audio 0 RTP/AVP 8\r\na=label:1\r\n"
    )
    assert answered_streams(answer) == {"2": ("192.0.2.9", 5000)}  # label 1 refused (port 0)


def _tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(np.sin(2 * np.pi * freq * t) * 0.3 * 32767).astype(np.int16)


def _dominant(pcm: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    spectrum[:3] = 0
    return float(np.argmax(spectrum) * rate / len(pcm))


@pytest.mark.skipif(not g722_available(), reason="G722 package missing")
def test_file_recording_of_a_transcoded_call_with_its_chain(tmp_path: Path) -> None:
    """Caller on PCMU (8 kHz), called party on G.722 (16 kHz): the WAV is 8 kHz stereo,
    the G.722 leg resampled; the tap decodes with its own G.722 state, so the relay's
    decoding of the same packets (here: the endpoint's codec, used in between) does not
    garble either."""
    pcmu, g722 = codec_by_name("PCMU"), codec_by_name("G722")
    a, b = SimpleNamespace(codec=pcmu, tap=None), SimpleNamespace(codec=g722, tap=None)
    rec = FileRecording(tmp_path, {"a_leg": "call-1"}, a, b)  # type: ignore[arg-type]
    caller, called = _tone(1000, 1.0, 8000), _tone(500, 1.0, 16000)
    encoder = codec_by_name("G722")
    for i in range(50):
        payload_b = encoder.encode(called[i * 320 : (i + 1) * 320])
        a.tap(a, 0, False, i, i * 160, 1, pcmu.encode(caller[i * 160 : (i + 1) * 160]))
        g722.decode(payload_b)  # the relay's own use of the endpoint's codec
        b.tap(b, 9, False, i, i * 160, 2, payload_b)
        b.tap(b, 101, False, i, i * 160, 2, b"\x01\x00\x00\xa0")  # an RFC 4733 event: skipped
    rec.stop_taps()
    entry = rec.finish(HashChain(tmp_path), 0.0)
    with wave.open(str(rec.wav)) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 8000)
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, 2)
    assert 7800 <= len(pcm) <= 8000
    assert round(_dominant(pcm[2000:, 0])) in range(990, 1011)
    assert round(_dominant(pcm[2000:, 1])) in range(490, 511)
    entries, problems = verify_chain(tmp_path)
    assert problems == [] and entries == [entry] and entry["prev"] == "0" * 64
    assert oct(rec.wav.stat().st_mode & 0o777) == "0o600"


def _leg(uuid: str, number: str = "") -> SimpleNamespace:
    profile = SimpleNamespace(caller_id_number="1001", destination_number=number)
    channel = SimpleNamespace(variables={"sip_call_id": f"{uuid}@h"}, profile=profile,
                              created_at=0.0, answered_at=1.0)  # fmt: skip
    media = SimpleNamespace(codec=codec_by_name("PCMU"), tap=None)
    return SimpleNamespace(uuid=uuid, data={}, channel=channel, media=media)


async def test_either_leg_ending_ends_the_recording_and_a_rebridge_records_again(
    tmp_path: Path,
) -> None:
    target = Target("4930123456", "LI-1", "file")
    targets = SimpleNamespace(match=lambda *n: target, pool=None)  # audit rows: no database
    ic = CallIntercept(SimpleNamespace(), SimpleNamespace(), targets, tmp_path / "li",  # type: ignore[arg-type]
                       node="media-1")  # fmt: skip
    a, b1, b2 = _leg("a", "+4930123456"), _leg("b1"), _leg("b2")
    a.data["intercept_target"] = target
    ic.on_bridge(a, b1)  # type: ignore[arg-type]
    assert b1.media.tap is not None and a.media.tap is not None
    ic.on_hangup(b1)  # type: ignore[arg-type]  # the called party hung up first
    assert b1.media.tap is None and a.media.tap is None and not ic.active
    ic.on_bridge(a, b2)  # type: ignore[arg-type]  # the caller goes on to another bridge
    assert b2.media.tap is not None
    ic.on_hangup(a)  # type: ignore[arg-type]
    ic.on_hangup(b2)  # type: ignore[arg-type]  # nothing left to end
    await ic.close()
    entries, problems = verify_chain(tmp_path / "li")
    assert problems == [] and len(entries) == 2 and ic.recorded == 2
