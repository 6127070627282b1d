"""End to end: a real RTP sender (SIPp's ``rtp_stream``) → our endpoint → WAV recorder.

SIPp plays a sox-generated 1 kHz µ-law WAV as RTP after a real INVITE/200/ACK exchange
between a SIPp UAC (whose SDP points at our endpoint) and a SIPp UAS (which streams to
the address in that SDP). The recording must contain the tone: its dominant frequency
is checked with an FFT, its length against the file's.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from switchboard.media.rtp_endpoint import RtpEndpoint
from switchboard.rtp.source import WavRecorder
from switchboard.rtp.wav import decode_wav
from tests.support.net import free_port

pytestmark = [pytest.mark.timeout(60)]

UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="UAS that streams a WAV with rtp_stream after ACK">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]uas[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [rtpstream_audio_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv request="ACK" crlf="true">
    <action><exec rtp_stream="tone.wav,1,0"/></action>
  </recv>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"""

UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="UAC whose SDP offers the recorder's RTP port">
  <send retrans="500"><![CDATA[
INVITE sip:stream@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:rec@[local_ip]:[local_port]>;tag=[pid]uac[call_number]
To: <sip:stream@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:rec@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=rec 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio RECPORT RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="200"/>
  <send><![CDATA[
ACK sip:stream@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:rec@[local_ip]:[local_port]>;tag=[pid]uac[call_number]
To: <sip:stream@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
  <pause milliseconds="1600"/>
  <send retrans="500"><![CDATA[
BYE sip:stream@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:rec@[local_ip]:[local_port]>;tag=[pid]uac[call_number]
To: <sip:stream@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"""


async def run_sipp(args: list[str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "sipp",
        *args,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_sipp_rtp_stream_is_recorded_to_wav(tmp_path: Path) -> None:
    if shutil.which("sipp") is None or shutil.which("sox") is None:
        pytest.skip("sipp/sox not installed (Makefile APT_PACKAGES installs them)")
    subprocess.run(
        [
            "sox",
            "-n",
            "-r",
            "8000",
            "-c",
            "1",
            "-e",
            "u-law",
            str(tmp_path / "tone.wav"),
            "synth",
            "1.0",
            "sine",
            "1000",
        ],
        check=True,
    )
    ep = await RtpEndpoint.open("127.0.0.1")
    out_path = tmp_path / "recording.wav"
    out_file = out_path.open("wb")
    recorder = WavRecorder(out_file)
    ep.record(recorder)
    (tmp_path / "uas.xml").write_text(UAS)
    (tmp_path / "uac.xml").write_text(UAC.replace("RECPORT", str(ep.port)))
    uas_port, uac_port = free_port("udp"), free_port("udp")
    common = ["-i", "127.0.0.1", "-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error"]
    uas_args = [
        "-sf",
        "uas.xml",
        "-p",
        str(uas_port),
        "-mi",
        "127.0.0.1",
        "-mp",
        str(free_port("udp", even=True)),
    ]
    uas = await run_sipp([*uas_args, "-cp", str(free_port("udp")), *common], tmp_path)
    uac = None
    try:
        await asyncio.sleep(0.3)  # let the UAS bind before the INVITE (it retransmits anyway)
        uac_args = [
            "-sf",
            "uac.xml",
            "-p",
            str(uac_port),
            f"127.0.0.1:{uas_port}",
            "-cp",
            str(free_port("udp")),
        ]
        uac = await run_sipp([*uac_args, *common], tmp_path)
        _, uac_err = await asyncio.wait_for(uac.communicate(), 30)
        _, uas_err = await asyncio.wait_for(uas.communicate(), 30)
        assert uac.returncode == 0, uac_err.decode(errors="replace")
        assert uas.returncode == 0, uas_err.decode(errors="replace")
    finally:
        for proc in (uac, uas):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
        ep.record(None)
        recorder.close()
        out_file.close()
        ep.close()

    pcm, rate = decode_wav(out_path.read_bytes())
    assert rate == 8000
    voiced = np.flatnonzero(np.abs(pcm) > 2000)
    assert len(voiced) > 0, "nothing but silence was recorded"
    tone = pcm[voiced[0] : voiced[-1] + 1].astype(np.float64)
    # 1.0 s of tone was sent: 50 packets of 20 ms.
    assert 0.9 <= len(tone) / rate <= 1.1
    spectrum = np.abs(np.fft.rfft(tone * np.hanning(len(tone))))
    peak_hz = np.argmax(spectrum) * rate / len(tone)
    assert abs(peak_hz - 1000) < 3, peak_hz
    # The stream came from SIPp's RTP socket, which we latched to, with no loss.
    assert ep.stats is not None and ep.stats.lost == 0 and ep.packets_received >= 49
    assert ep.remote is not None and ep.remote[0] == "127.0.0.1"
