"""Logging: call-id carried by context (also into tasks), one summary line per call."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from switchboard.observability.log import (
    CallSummary,
    call_context,
    current_call_id,
    log_call_summary,
    setup_logging,
)


@pytest.fixture
def stream() -> io.StringIO:
    buf = io.StringIO()
    handler = setup_logging("media-1", "DEBUG", stream=buf)
    yield buf
    logging.getLogger().removeHandler(handler)


def test_call_id_appears_only_inside_the_call(stream: io.StringIO) -> None:
    log = logging.getLogger("switchboard.media.test")
    log.info("before")
    with call_context("a84b4c76e66710@pc33"):
        log.info("bridging to %s", "carrier")
    log.info("after")
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("switchboard.media.test: before")
    assert lines[1].endswith("bridging to carrier call_id=a84b4c76e66710@pc33")
    assert " media-1 " in lines[1]
    assert "call_id" not in lines[2]
    assert current_call_id() is None


async def test_tasks_created_in_a_call_keep_its_id(stream: io.StringIO) -> None:
    log = logging.getLogger("switchboard.media.test")

    async def leg(n: int) -> None:
        await asyncio.sleep(0)
        log.info("leg %d", n)

    with call_context("call-one"):
        t1 = asyncio.create_task(leg(1))
    with call_context("call-two"):
        t2 = asyncio.create_task(leg(2))
    await asyncio.gather(t1, t2)
    text = stream.getvalue()
    assert "leg 1 call_id=call-one" in text
    assert "leg 2 call_id=call-two" in text


def test_one_summary_line_per_call(stream: io.StringIO) -> None:
    log_call_summary(
        CallSummary(
            call_id="c1",
            direction="inbound",
            caller="+4930123",
            destination="4420799",
            disposition="answered",
            sip_code=200,
            hangup_cause="NORMAL_CLEARING",
            pdd_ms=412.4,
            duration=65.2,
            billsec=61,
            node="media-1",
            gateway="carrier",
        )
    )
    (line,) = stream.getvalue().splitlines()
    assert line.endswith(
        "switchboard.calls: CALL answered +4930123 -> 4420799 dir=inbound sip=200 "
        "cause=NORMAL_CLEARING pdd_ms=412 duration=65.2s billsec=61 gateway=carrier "
        "node=media-1 call_id=c1"
    )


def test_json_format_carries_call_fields() -> None:
    buf = io.StringIO()
    handler = setup_logging("router", "INFO", fmt="json", stream=buf)
    try:
        with call_context("zz@host"):
            logging.getLogger("switchboard.router.x").warning("RATE LIMIT: %s", "127.0.0.3")
        log_call_summary(CallSummary("c2", "outbound", "1000", "conf-1", "failed", sip_code=503))
    finally:
        logging.getLogger().removeHandler(handler)
    first, second = (json.loads(x) for x in buf.getvalue().splitlines())
    assert first["msg"] == "RATE LIMIT: 127.0.0.3"
    assert first["call_id"] == "zz@host"
    assert first["service"] == "router"
    assert first["level"] == "WARNING"
    assert second["call"]["sip_code"] == 503
    assert second["call_id"] == "c2"


def test_setup_logging_twice_does_not_duplicate_lines() -> None:
    buf = io.StringIO()
    setup_logging("x", stream=io.StringIO())
    handler = setup_logging("x", stream=buf)
    try:
        logging.getLogger("switchboard.t").info("once")
    finally:
        logging.getLogger().removeHandler(handler)
    assert buf.getvalue().count("once") == 1
