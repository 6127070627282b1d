"""SIPREC pieces of lawful recording: RFC 7865 metadata (well-formed, hostile numbers
escaped, ids and associations consistent), the SRC's SDP offer and the SRS's answer."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

from switchboard.media.intercept import answered_streams, recording_metadata, siprec_offer
from switchboard.rtp.codec import codec_by_name

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
