"""Lawful recording through a media node with a real PostgreSQL and SIPp peers.

A SIPp caller calls a target number through the node to a SIPp carrier; the caller's RTP
socket sends 1 kHz, the carrier's 500 Hz. ``file`` target: a stereo WAV in the protected
directory with 1 kHz on the left (caller) and 500 Hz on the right (called party), its
metadata, an intact hash chain, audit rows; a non-target's call leaves nothing. ``siprec``
target: a SIPp recording server receives an RFC 7866 INVITE whose RFC 7865 metadata names
the call and both parties, and one RTP stream per leg with that leg's tone. In every case
the parties see one INVITE each, the SDP they would have seen anyway, and both tones."""

from __future__ import annotations

import asyncio
import json
import re
import wave
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from switchboard import config
from switchboard.media.intercept import verify_chain
from switchboard.media.node import MediaNode
from tests.support.media import RtpPeer, dominant_frequency, free_even_range
from tests.support.net import async_wait_until, free_port, udp_port_taken
from tests.support.sipp import HAVE_SIPP, SCENARIOS, finish_sipp, run_sipp

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not HAVE_SIPP, reason="Debian sip-tester missing"),
]

TARGET = "+4930123456"
NS = {"r": "urn:ietf:params:xml:ns:recording:1"}


@pytest.fixture
async def node(db_url: str, tmp_path: Path) -> AsyncIterator[MediaNode]:
    start, end = free_even_range()
    cfg = config.load(
        environ={},
        overrides={
            "media": {
                "listen": [f"udp:127.0.0.1:{free_port()}"],
                "rtp_port_start": start,
                "rtp_port_end": end,
            },
            "gateways": {"carrier": {"proxy": f"127.0.0.1:{free_port()}"}},
            "database": {"url": db_url},
            "billing": {"flush_interval": 0.05},
            "intercept": {
                "enabled": True,
                "dir": str(tmp_path / "intercept"),
                "refresh": 0.2,
                "siprec_server": f"127.0.0.1:{free_port()}",
            },
            "platform": {"state_dir": str(tmp_path / "state")},
        },
    )
    n = MediaNode(cfg, "media-1", state_dir=tmp_path / "state", admin=False, esl=False)
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


async def sipp_uas(scenario: str, port: int, workdir: Path, keys: dict[str, int]) -> Any:
    argv = ["sipp", "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port),
            "-m", "1", "-nostdin", "-timeout", "40s", "-trace_msg"]  # fmt: skip
    for k, v in keys.items():
        argv += ["-key", k, str(v)]
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    await async_wait_until(lambda: udp_port_taken(port), timeout=10, what=f"SIPp {scenario}")
    return proc


def messages(workdir: Path, scenario: str) -> str:
    return "".join(
        p.read_text(errors="replace") for p in workdir.glob(f"{scenario}_*_messages.log")
    )


async def call_with_tones(node: MediaNode, workdir: Path, number: str) -> tuple[RtpPeer, RtpPeer]:
    """One call SIPp caller → node → SIPp carrier; 1 kHz from the caller, 500 Hz from the
    carrier for 1.6 s while bridged. Returns the two RTP peers (what each heard)."""
    caller, carrier = await RtpPeer.open(), await RtpPeer.open()
    port = int(node.cfg.gateways["carrier"].proxy.rpartition(":")[2])
    uas = await sipp_uas("media_carrier_uas.xml", port, workdir,
                         {"rtp_port": carrier.port, "codecs": 0})  # fmt: skip
    sipp = await run_sipp("media_call_hangup.xml", node.sip_port, workdir, service=number,
                          keys={"rtp_port": caller.port}, pause_ms=2500,
                          background=True)  # fmt: skip
    assert node.switch is not None
    sw = node.switch
    await async_wait_until(lambda: any(s.bridged_to for s in sw.sessions), what="bridged")
    a = next(s for s in sw.sessions if s.channel.direction == "inbound")
    b = a.bridged_to
    assert a.media is not None and b is not None and b.media is not None
    caller.send_tone(a.media.local_address, 1000, 1.6)
    carrier.send_tone(b.media.local_address, 500, 1.6)
    result = await finish_sipp(sipp, 20)
    assert result.returncode == 0, result.output[-2000:]
    assert (await finish_sipp(uas, 20)).returncode == 0
    return caller, carrier


def stereo(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        data = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    return data.reshape(-1, 2)


def received_invite(log: str) -> str:
    """The INVITE in a SIPp -trace_msg log (up to the next separator line)."""
    start = log.index("INVITE sip:")
    end = log.find("\n----------", start)
    return log[start : end if end > 0 else len(log)]


def the_parties_noticed_nothing(workdir: Path, caller: RtpPeer, carrier: RtpPeer) -> None:
    carrier_log = messages(workdir, "media_carrier_uas")
    assert len(re.findall(r"^INVITE sip:", carrier_log, re.M)) == 1  # no re-INVITE
    offer = received_invite(carrier_log)  # the node's usual offer: one stream, no labels
    assert offer.count("m=audio") == 1 and "a=label" not in offer and "sendonly" not in offer
    # each heard the other's tone, relayed as ever
    assert round(dominant_frequency(caller.audio(0)[-8000:])) in range(490, 511)
    assert round(dominant_frequency(carrier.audio(0)[-8000:])) in range(990, 1011)


async def test_target_recorded_to_a_stereo_wav_with_a_hash_chain_non_target_not(
    node: MediaNode, db_url: str, tmp_path: Path
) -> None:
    directory = tmp_path / "intercept"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO intercept_target (number, warrant) VALUES ('4930123456', 'LI-2026-7')"
        )
    assert node.intercept is not None
    await async_wait_until(lambda: "4930123456" in node.intercept.targets.targets,
                           what="target list refreshed")  # fmt: skip
    caller, carrier = await call_with_tones(node, tmp_path, TARGET)
    the_parties_noticed_nothing(tmp_path, caller, carrier)
    await async_wait_until(lambda: node.intercept.recorded == 1, what="recording finished")
    (wav,) = directory.glob("*.wav")
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    assert oct(wav.stat().st_mode & 0o777) == "0o600"
    pcm = stereo(wav)
    assert len(pcm) > 8000  # more than a second of both legs
    left, right = pcm[:, 0], pcm[:, 1]
    # the caller's 1 kHz on the left channel only, the called party's 500 Hz on the right
    assert round(dominant_frequency(left[-12000:])) in range(990, 1011)
    assert round(dominant_frequency(right[-12000:])) in range(490, 511)
    meta = json.loads(wav.with_suffix(".json").read_text())
    assert meta["callee"] == TARGET and meta["caller"] == "1001" and meta["node"] == "media-1"
    assert meta["warrant"] == "LI-2026-7" and meta["sip_call_id"]
    assert meta["start"] and meta["answer"] and meta["end"]
    entries, problems = verify_chain(directory)
    assert problems == [] and [e["wav"] for e in entries] == [wav.name]

    # a call of nobody on the list: not recorded
    await call_with_tones(node, tmp_path, "+4940999999")
    await asyncio.sleep(0.5)  # the hangup hooks of that call ran long ago; nothing may appear
    assert len(list(directory.glob("*.wav"))) == 1 and node.intercept.recorded == 1

    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT object, action, actor FROM audit_log"
            " WHERE object IN ('recording', 'intercept_target') ORDER BY id"
        ).fetchall()
    assert ("intercept_target", "insert") in [r[:2] for r in rows]
    assert ("intercept_target", "read", "node:media-1") in rows
    assert [r[1] for r in rows if r[0] == "recording"] == ["start", "finish"]

    # tampering with the recording breaks the chain
    data = bytearray(wav.read_bytes())
    data[-1] ^= 0xFF
    wav.write_bytes(bytes(data))
    assert any("altered" in p for p in verify_chain(directory)[1])


async def test_siprec_session_reaches_the_recording_server(
    node: MediaNode, db_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO intercept_target (number, warrant, mode)"
            " VALUES ('4930123456', 'LI-2026-8', 'siprec')"
        )
    assert node.intercept is not None
    await async_wait_until(lambda: "4930123456" in node.intercept.targets.targets,
                           what="target list refreshed")  # fmt: skip
    srs_a, srs_b = await RtpPeer.open(), await RtpPeer.open()
    srs_port = int(node.cfg.intercept.siprec_server.rpartition(":")[2])
    srs = await sipp_uas("siprec_srs.xml", srs_port, tmp_path,
                         {"srs_rtp_a": srs_a.port, "srs_rtp_b": srs_b.port})  # fmt: skip
    try:
        caller, carrier = await call_with_tones(node, tmp_path, TARGET)
        result = await finish_sipp(srs, 20)
        assert result.returncode == 0, result.output[-2000:]  # INVITE, ACK, BYE: all seen
    finally:
        srs_a.close()
        srs_b.close()
    the_parties_noticed_nothing(tmp_path, caller, carrier)
    log = messages(tmp_path, "siprec_srs")
    invite = received_invite(log)
    head = invite.split("\n\n", 1)[0]
    assert re.search(r"^Require: siprec", head, re.M)
    assert re.search(r"^Contact: <sip:src@[^>]+>;\+sip\.src", head, re.M)
    boundary = re.search(r"boundary=(\S+)", head)
    assert boundary is not None
    parts = {}
    for part in invite.split("--" + boundary[1])[1:-1]:
        headers, _, body = part.strip("\r\n").partition("\n\n")
        ctype = re.search(r"Content-Type: (\S+)", headers)
        assert ctype is not None
        parts[ctype[1]] = (headers, body)
    sdp = parts["application/sdp"][1]
    assert sdp.count("m=audio") == 2 and sdp.count("a=sendonly") == 2
    assert "a=label:1" in sdp and "a=label:2" in sdp
    headers, xml = parts["application/rs-metadata+xml"]
    assert "Content-Disposition: recording-session" in headers
    root = ET.fromstring(xml.strip())
    assert root.tag == "{urn:ietf:params:xml:ns:recording:1}recording"
    session = root.find("r:session", NS)
    assert session is not None
    sip_call_id = session.findtext("r:sipSessionID", namespaces=NS)
    with psycopg.connect(db_url, autocommit=True) as conn:
        await async_wait_until(
            lambda: conn.execute("SELECT count(*) FROM cdr").fetchone() == (2,), what="CDRs"
        )
        row = conn.execute("SELECT sip_call_id FROM cdr WHERE originating_leg IS NULL").fetchone()
    assert row is not None and sip_call_id == row[0]  # the caller's SIP Call-ID
    aors = [p.find("r:nameID", NS).get("aor") for p in root.findall("r:participant", NS)]  # type: ignore[union-attr]
    assert aors[0].startswith("sip:1001@") and aors[1].startswith(f"sip:{TARGET}@")
    streams = {s.findtext("r:label", namespaces=NS): s.get("stream_id")
               for s in root.findall("r:stream", NS)}  # fmt: skip
    assert set(streams) == {"1", "2"}
    sends = [
        a.findtext("r:send", namespaces=NS) for a in root.findall("r:participantstreamassoc", NS)
    ]
    assert sends == [streams["1"], streams["2"]]  # the caller sends stream 1, the callee 2
    # each leg's audio reached the recording server on its own stream
    assert round(dominant_frequency(srs_a.audio(0)[-8000:])) in range(990, 1011)
    assert round(dominant_frequency(srs_b.audio(0)[-8000:])) in range(490, 511)
    assert not list((tmp_path / "intercept").glob("*.wav"))  # forked, not stored here


async def test_a_refusing_recording_server_leaves_the_call_alone(
    node: MediaNode, db_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO intercept_target (number, warrant, mode)"
            " VALUES ('4930123456', 'LI-2026-9', 'siprec')"
        )
    assert node.intercept is not None
    await async_wait_until(lambda: "4930123456" in node.intercept.targets.targets,
                           what="target list refreshed")  # fmt: skip
    srs_port = int(node.cfg.intercept.siprec_server.rpartition(":")[2])
    srs = await sipp_uas("siprec_srs_refuse.xml", srs_port, tmp_path, {})
    caller, carrier = await call_with_tones(node, tmp_path, TARGET)
    assert (await finish_sipp(srs, 20)).returncode == 0  # it got the INVITE and our ACK
    the_parties_noticed_nothing(tmp_path, caller, carrier)
    with psycopg.connect(db_url, autocommit=True) as conn:
        await async_wait_until(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM audit_log WHERE object = 'recording' AND action = 'finish'"
                ).fetchone()
                == (1,)
            ),
            what="the recording's end in the audit trail",
        )
        failed = conn.execute(
            "SELECT new->>'error' FROM audit_log WHERE object = 'recording' AND action = 'failed'"
        ).fetchall()
    assert len(failed) == 1 and "503" in failed[0][0]
    assert node.intercept.recorded == 0
