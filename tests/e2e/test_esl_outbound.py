"""Outbound Event Socket end to end: a SIPp caller dials a real media node whose dialplan
hands the call to an IVR written with a third-party ESL library's outbound server —
genesis (asyncio), greenswitch (gevent), modesl (node) — exactly as such programs are
deployed: ``answer``, then ``socket 127.0.0.1:<port> async full``.

The IVR asks for a digit; SIPp sends RFC 4733 digit 2; the IVR stores it and hangs up;
SIPp receives the node's BYE. Checked: the connect data, every event of the call in order
(Event-Sequence ascending), CHANNEL_HANGUP_COMPLETE received thanks to ``linger`` (with
the variable the IVR set), the CDR. A second test kills the program mid-call: the prompt
it started still plays to the end, then the node ends the call NORMAL_CLEARING.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from switchboard import config
from switchboard.media.cdr import MemoryCdrSink
from switchboard.media.node import MediaNode
from tests.support.esl.thirdparty import NODE_DIR, client_python, ensure_modesl
from tests.support.media import free_even_range
from tests.support.net import async_wait_until, free_port
from tests.support.sipp import HAVE_SIPP, finish_sipp, run_sipp

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not HAVE_SIPP, reason="sipp (Debian sip-tester) not installed"),
]
PROBE = Path(__file__).resolve().parents[1] / "support" / "esl" / "outbound_probe.py"


async def start_node(tmp: Path, program_port: int) -> tuple[MediaNode, MemoryCdrSink]:
    start, end = free_even_range()
    cfg = config.load(
        environ={},
        overrides={
            "media": {
                "listen": [f"udp:127.0.0.1:{free_port('udp')}"],
                "rtp_port_start": start,
                "rtp_port_end": end,
            },
            "esl": {"listen": "127.0.0.1:0", "heartbeat": 0},
            "platform": {"state_dir": str(tmp / "state")},
            "dialplan": {
                "rules": [
                    {"name": "ivr-esl", "destination": "^ivr-esl$",
                     "actions": ["answer", f"socket 127.0.0.1:{program_port} async full"]},
                ]
            },
        },
    )  # fmt: skip
    sink = MemoryCdrSink()
    node = MediaNode(cfg, "media-1", state_dir=tmp / "state", cdr_sink=sink, admin=False)
    await node.start()
    return node, sink


async def start_program(client: str, port: int, mode: str) -> asyncio.subprocess.Process:
    if client == "modesl":
        if not ensure_modesl() or shutil.which("node") is None:
            pytest.skip("node/modesl not installed (make esl-node-deps)")
        argv = ["node", str(NODE_DIR / "outbound.js"), str(port), mode]
    else:
        argv = [client_python(), str(PROBE), client, str(port), mode]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line.strip() == b"READY", line + (await proc.stderr.read() if proc.stderr else b"")
    return proc


async def program_result(proc: asyncio.subprocess.Process, timeout: float = 60) -> dict[str, Any]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert lines, err.decode()[-3000:]
    return dict(json.loads(lines[-1]), returncode=proc.returncode, stderr=err.decode()[-2000:])


@pytest.mark.parametrize("client", ["genesis", "greenswitch", "modesl"])
async def test_ivr_program_drives_a_sipp_call(tmp_path: Path, client: str) -> None:
    port = free_port("tcp")  # SOCK_STREAM
    program = await start_program(client, port, "ivr")
    node, cdrs = await start_node(tmp_path, port)
    try:
        sipp = await run_sipp("media_call_dtmf.xml", node.sip_port, tmp_path,
                              service="ivr-esl", background=True)  # fmt: skip
        result = await program_result(program)
        sip = await finish_sipp(sipp)
        assert sip.returncode == 0, sip.output[-2000:] + sip.errors[-2000:]
        assert result["returncode"] == 0, result
        connect = result["connect"]
        assert connect["Event-Name"] == "CHANNEL_DATA"
        assert connect["Caller-Destination-Number"] == "ivr-esl"
        assert (connect["Socket-Mode"], connect["Control"]) == ("async", "full")
        assert result["digit"] == "2", result
        events = result["events"]
        names = [name for name, _, _ in events]
        sequence = [seq for _, _, seq in events if seq]
        assert sequence == sorted(sequence), events  # in order, none reordered
        assert len(sequence) == len(set(sequence)), events  # none twice
        # (the digit came from play_and_get_digits' CHANNEL_EXECUTE_COMPLETE; genesis hands
        # that one to the waiting sendmsg instead of the "*" handler)
        executed = [app for name, app, _ in events if name == "CHANNEL_EXECUTE_COMPLETE"]
        assert [a for a in executed if a != "play_and_get_digits"][:2] == ["set", "hangup"]
        # linger: after CHANNEL_HANGUP the socket stays open for the rest of the call's
        # events (genesis keeps the linger notice to itself; the others show it first)
        after = names[names.index("CHANNEL_HANGUP") + 1 :]
        assert "CHANNEL_HANGUP_COMPLETE" in after, events
        if client != "genesis":
            assert after.index("disconnect-notice") < after.index("CHANNEL_HANGUP_COMPLETE")
        assert result["hangup_cause"] == "NORMAL_CLEARING"
        assert result["choice"] == "2"
        await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
        cdr = cdrs.records[0]
        assert (cdr.destination, cdr.disposition, cdr.hangup_cause) == (
            "ivr-esl",
            "ANSWERED",
            "NORMAL_CLEARING",
        )
    finally:
        if program.returncode is None:
            program.kill()
            await program.wait()
        await node.stop()


@pytest.mark.parametrize("client", ["genesis", "modesl"])
async def test_program_that_dies_mid_call(tmp_path: Path, client: str) -> None:
    port = free_port("tcp")
    program = await start_program(client, port, "die")
    node, cdrs = await start_node(tmp_path, port)
    try:
        sipp = await run_sipp("media_call_dtmf.xml", node.sip_port, tmp_path,
                              service="ivr-esl", background=True)  # fmt: skip
        result = await program_result(program)
        assert result["returncode"] == 3, result  # it killed itself mid-call
        sip = await finish_sipp(sipp)
        assert sip.returncode == 0, sip.output[-2000:] + sip.errors[-2000:]  # BYE came
        await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
        cdr = cdrs.records[0]
        assert cdr.hangup_cause == "NORMAL_CLEARING"
        assert cdr.billsec >= 2  # the bundled prompt it had started played to its end
    finally:
        if program.returncode is None:
            program.kill()
            await program.wait()
        await node.stop()
