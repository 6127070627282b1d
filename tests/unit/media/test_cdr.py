"""CDR production (disposition mapping, fields) and the JSON-lines sink."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.billing.cdr import Cdr
from switchboard.media.applications import new_switch
from switchboard.media.causes import Cause
from switchboard.media.cdr import JsonLinesCdrSink, build_cdr, disposition
from switchboard.media.channel import CallerProfile, Channel
from switchboard.media.core import Session
from switchboard.media.settings import MediaSection, node_number


@pytest.mark.parametrize(
    ("answered", "cause", "expected"),
    [
        (True, Cause.NORMAL_CLEARING, "ANSWERED"),
        (False, Cause.ORIGINATOR_CANCEL, "CANCEL"),
        (False, Cause.USER_BUSY, "BUSY"),
        (False, Cause.NO_ANSWER, "NO ANSWER"),
        (False, Cause.NO_USER_RESPONSE, "NO ANSWER"),
        (False, Cause.NORMAL_CIRCUIT_CONGESTION, "CONGESTION"),
        (False, Cause.CALL_REJECTED, "FAILED"),
    ],
)
def test_disposition(answered: bool, cause: Cause, expected: str) -> None:
    assert disposition(answered, cause) == expected


async def test_build_cdr_from_a_bridged_gateway_leg() -> None:
    sw = new_switch(name="media-2")
    ch = Channel(
        uuid="u1", name="sofia/gateway/carrier/4930", direction="outbound", created_at=1000.0
    )
    ch.profile = CallerProfile(caller_id_number="1001", destination_number="4930")
    ch.variables.update({"sip_call_id": "abc@h", "sip_gateway_name": "carrier", "pdd_ms": "850",
                         "accountcode": "acme"})  # fmt: skip
    ch.progress_at, ch.answered_at, ch.hangup_at = 1000.85, 1002.0, 1065.5
    ch.hangup_cause, ch.sip_status, ch.read_codec = Cause.NORMAL_CLEARING, 200, "PCMA"
    cdr = build_cdr(Session(switch=sw, channel=ch), "media-2")
    # one CDR per leg: keyed by the channel uuid; the SIP Call-ID is kept alongside
    assert (cdr.call_id, cdr.sip_call_id) == ("u1", "abc@h")
    assert (cdr.caller_id, cdr.destination) == ("1001", "4930")
    assert (cdr.duration, cdr.billsec, cdr.disposition) == (65, 63, "ANSWERED")
    assert (cdr.pdd_ms, cdr.carrier, cdr.account, cdr.codec) == (850, "carrier", "acme", "PCMA")
    assert (cdr.sip_code, cdr.hangup_cause, cdr.node, cdr.direction) == (
        200,
        "NORMAL_CLEARING",
        "media-2",
        "outbound",
    )


async def test_json_lines_sink_appends_without_blocking(tmp_path: Path) -> None:
    sink = JsonLinesCdrSink(tmp_path / "cdr" / "m.jsonl")
    from datetime import UTC, datetime

    for i in range(3):
        sink.submit(Cdr(call_id=f"c{i}", start_time=datetime(2026, 1, 1, tzinfo=UTC)))
    await sink.close()
    lines = (tmp_path / "cdr" / "m.jsonl").read_text().splitlines()
    assert [Cdr.from_json(line).call_id for line in lines] == ["c0", "c1", "c2"]


def test_node_numbering_and_media_section_validation() -> None:
    assert node_number("media-2") == 2 and node_number("edge") == 1
    with pytest.raises(ValueError):
        MediaSection(codecs=["G729"])
    with pytest.raises(ValueError):
        MediaSection(listen=["sctp:127.0.0.1:5081"])
    with pytest.raises(ValueError):
        MediaSection(digest_algorithms=["SHA-512"])
    assert MediaSection(codecs=["pcma"]).codecs == ["PCMA"]
