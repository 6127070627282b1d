"""genesis, greenswitch and modesl against the server (scripted far end): connect, good and
bad password, api status, subscribe, filters, bgapi, an originated call's events."""

from __future__ import annotations

import itertools

import pytest

from switchboard.media.event_socket import EventSocketServer
from tests.support.esl.thirdparty import CLIENTS

_cids = itertools.count(7001)


@pytest.mark.parametrize("client", sorted(CLIENTS))
async def test_client_call_lifecycle(esl_server: EventSocketServer, client: str) -> None:
    cid = str(next(_cids))
    out = await CLIENTS[client](
        esl_server.port, cid, "sofia/gateway/carrier/15551230000", "&park()", True
    )
    assert out.get("returncode", 0) == 0, out
    assert out["status"].startswith("UP 0 years, 0 days"), out
    assert "accepted" not in str(out["bad_auth"]) and out["bad_auth"], out
    names = [e["name"] for e in out["events"]]
    assert names == ["CHANNEL_ANSWER", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"], out
    assert {e["cid"] for e in out["events"]} == {cid}
    assert len({e["uuid"] for e in out["events"]}) == 1
    complete = out["events"][-1]
    assert complete["cause"] == "NORMAL_CLEARING" and complete["billsec"] == "0", out
    if client == "greenswitch":
        assert out["originate"] == f"+OK {complete['uuid']}\n"
        assert out["bgapi_reply"] == f"+OK Job-UUID: {out['bgapi_job']}"
        assert out["jobs"] == [out["bgapi_job"]]
    else:
        assert out["bgapi"] == f"+OK {complete['uuid']}\n", out
    if client == "modesl":
        assert out["show_error"] is None and out["show_count"] == 0, out


@pytest.mark.parametrize("client", sorted(CLIENTS))
async def test_client_sees_originate_failure(esl_server: EventSocketServer, client: str) -> None:
    out = await CLIENTS[client](
        esl_server.port, str(next(_cids)), "sofia/gateway/carrier/busy", "&park", False
    )
    result = out.get("originate") or out.get("bgapi")
    assert result == "-ERR USER_BUSY\n", out
    # The failed leg existed: it may report its hangup, never an answer.
    assert all(e["name"] != "CHANNEL_ANSWER" for e in out["events"]), out
    assert all(e["cause"] == "USER_BUSY" for e in out["events"]), out
