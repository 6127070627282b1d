"""The demo's carrier simulator against SIPp's UAC (a real SIP peer)."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from switchboard.demo.carrier import CarrierSimulator
from tests.support.platform_harness import free_run

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="Debian sip-tester missing")


async def sipp(port: int, number: str, calls: int = 1) -> int:
    proc = await asyncio.create_subprocess_exec(
        "sipp", f"127.0.0.1:{port}", "-sn", "uac", "-s", number, "-m", str(calls), "-r", "10",
        "-d", "200", "-i", "127.0.0.1", "-p", str(free_run(1)), "-timeout", "20s",
        "-timeout_error", "-nostdin",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return await asyncio.wait_for(proc.wait(), 30)


async def test_answers_busy_and_unroutable_by_number() -> None:
    port = free_run(1)
    sim = await CarrierSimulator.start("127.0.0.1", port, pdd=(0.05, 0.1), no_answer_after=0.5)
    try:
        # transport a little garbage first: the simulator keeps working
        w, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("127.0.0.1", port)
        )
        w.sendto(b"\x00\xffINVITE garbage\r\n\r\n")
        w.close()
        answered, busy, unroutable = await asyncio.gather(
            sipp(port, "4420794601", calls=3), sipp(port, "4915112345679"), sipp(port, "3312347")
        )
    finally:
        sim.close()
    assert answered == 0  # SIPp: every call answered, ACKed and hung up with BYE/200
    assert busy != 0 and unroutable != 0  # SIPp's uac expects 200: these calls failed
    s = sim.stats
    assert (s.answered, s.busy, s.not_found, s.byes) == (3, 1, 1, 3)
    assert sorted(s.calls.values()) == ["answered"] * 3 + ["busy", "not_found"]


async def test_places_calls_and_follows_the_dialog() -> None:
    a_port, b_port = free_run(1), free_run(1)
    a = await CarrierSimulator.start("127.0.0.1", a_port)
    b = await CarrierSimulator.start("127.0.0.1", b_port, pdd=(0.05, 0.1), no_answer_after=0.3)
    try:
        answered, busy = await asyncio.gather(
            a.call(("127.0.0.1", b_port), "4420794601", hold=0.2),
            a.call(("127.0.0.1", b_port), "4915112345679", hold=0.2),
        )
    finally:
        a.close()
        b.close()
    assert answered.status == 200 and busy.status == 486
    assert answered.pdd is not None and 0.04 < answered.pdd < 1.0
    # the far end saw the whole dialog: answered, ACKed, and our BYE
    assert b.stats.answered == 1 and b.stats.busy == 1 and b.stats.byes == 1
    assert b.stats.calls[answered.call_id] == "answered"
    assert not b.calls or answered.call_id not in b.calls
