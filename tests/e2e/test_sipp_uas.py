"""SIPp (a real, independent SIP implementation) against the minimal UAS built on the core:
full INVITE/ACK/BYE dialogs and OPTIONS, over UDP and over TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.net import free_port
from tests.support.sipp import SCENARIOS, Sipp
from tests.support.uas import Uas, start_uas

pytestmark = [pytest.mark.timeout(90)]

CALLS = 20
TRANSPORTS = {"UDP": "u1", "TCP": "t1"}


@pytest.fixture
async def uas() -> AsyncIterator[tuple[Uas, str]]:
    core, endpoint = await start_uas("127.0.0.1", 0)
    host, port = endpoint.udp_address or ("", 0)
    try:
        yield core, f"{host}:{port}"
    finally:
        await endpoint.close()


@pytest.mark.parametrize("transport", list(TRANSPORTS))
async def test_sipp_uac_calls_complete_invite_ack_bye(
    uas: tuple[Uas, str], sipp: Sipp, transport: str
) -> None:
    core, target = uas
    result = await sipp.arun(
        target, scenario="uac", transport=TRANSPORTS[transport], calls=CALLS, rate=50
    )
    assert result.returncode == 0, result
    assert (result.successful, result.failed, result.created) == (CALLS, 0, CALLS), result
    # Our side saw every call through: INVITE, ACK for the 2xx, BYE.
    assert (core.stats.invites, len(core.stats.acked), core.stats.byes) == (CALLS, CALLS, CALLS)
    assert core.stats.rejected == 0 and core.stats.ack_timeouts == 0
    assert core.stats.transports == {transport}
    assert core.dialogs == {}  # every dialog ended by its BYE


@pytest.mark.parametrize("transport", list(TRANSPORTS))
async def test_sipp_options_answered_with_allow(
    uas: tuple[Uas, str], sipp: Sipp, transport: str
) -> None:
    core, target = uas
    result = await sipp.arun(
        target,
        scenario=SCENARIOS / "options.xml",
        transport=TRANSPORTS[transport],
        calls=CALLS,
        rate=100,
    )
    assert result.returncode == 0, result
    assert (result.successful, result.failed) == (CALLS, 0), result
    assert core.stats.options == CALLS
    assert core.stats.transports == {transport}


async def test_uas_retransmits_2xx_until_the_late_ack_over_udp(
    uas: tuple[Uas, str], sipp: Sipp
) -> None:
    # SIPp holds its ACK for 1.2 s; the UAS's 200 retransmissions (§13.3.1.4) are
    # driven by the endpoint's single timer on the real clock.  SIPp's message log
    # shows what arrived.
    core, target = uas
    calls = 4
    log = sipp.workdir / "late_ack_messages.log"
    result = await sipp.arun(
        target,
        scenario=SCENARIOS / "uac_late_ack.xml",
        transport="u1",
        calls=calls,
        rate=20,
        extra=["-trace_msg", "-message_file", str(log)],
    )
    assert result.returncode == 0, result
    assert (result.successful, result.failed) == (calls, 0), result
    assert (core.stats.invites, len(core.stats.acked), core.stats.byes) == (calls, calls, calls)
    received = log.read_text().split("message received")[1:]
    ok_to_invite = [b for b in received if "SIP/2.0 200" in b and "CSeq: 1 INVITE" in b]
    # Per call: the 200 at 0 s, again at 0.5 s and 1.5 s... the ACK at 1.2 s stops it.
    assert len(ok_to_invite) >= 2 * calls, len(ok_to_invite)
    assert len(ok_to_invite) <= 3 * calls, len(ok_to_invite)


@pytest.mark.parametrize("transport", list(TRANSPORTS))
async def test_sipp_cancels_a_ringing_call(
    uas: tuple[Uas, str], sipp: Sipp, transport: str
) -> None:
    # CANCEL finds its INVITE (§9.2): 200 to the CANCEL, 487 to the INVITE, whose ACK
    # the INVITE server transaction absorbs (Completed -> Confirmed, §17.2.1).
    core, target = uas
    calls = 5
    result = await sipp.arun(
        target,
        scenario=SCENARIOS / "uac_cancel.xml",
        transport=TRANSPORTS[transport],
        calls=calls,
        rate=20,
        service="ring",
    )
    assert result.returncode == 0, result
    assert (result.successful, result.failed) == (calls, 0), result
    assert (core.stats.invites, core.stats.cancels, core.stats.acks) == (calls, calls, 0)
    # No INVITE transaction still waits for its ACK (Completed) or for an answer.
    states = [t.state.value for t in core.layer.servers.values() if t.method == "INVITE"]
    if transport == "UDP":  # Timer I (T4) keeps the ACKed ones in Confirmed a while
        assert set(states) <= {"Confirmed"}, states
    else:  # Timer I is zero on TCP
        assert states == []


async def test_sipp_reports_failure_when_nobody_answers(sipp: Sipp) -> None:
    # The runner must not report success for a dead target: one INVITE, nobody there.
    result = await sipp.arun(f"127.0.0.1:{free_port()}", scenario="uac", calls=1, timeout=2)
    assert result.returncode != 0
    assert result.successful == 0


async def test_runner_background_sipp_uas_serves_a_sipp_uac(sipp: Sipp) -> None:
    # The shared runner as other e2e tests use it: SIPp as a stand-in UAS in the
    # background, a second SIPp calling it, both results read back.
    port = free_port()
    server = sipp.start(None, scenario="uas", local_port=port, calls=3, timeout=20)
    client = await sipp.arun(f"127.0.0.1:{port}", scenario="uac", calls=3, rate=30, timeout=15)
    assert client.returncode == 0 and client.successful == 3, client
    served = server.stop(timeout=10)  # its calls sit in the closing timewait: stop now
    assert served.count("IncomingCall(C)") == 3 and served.failed == 0, served
