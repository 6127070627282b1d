"""``userauth <user>@<domain>:<password>`` on the inbound Event Socket: per-user
credentials from ``[esl.users]`` with what each may see and do (FreeSWITCH's directory
esl-password / esl-allowed-events / esl-allowed-api / esl-allowed-log)."""

from __future__ import annotations

import contextlib

import pytest

from switchboard import config
from switchboard.media.event_socket import EslSettings, EslUser, EventSocketServer
from tests.support.esl.client import EslClient

USERS = {
    "admin@switchboard": EslUser("adm1n"),
    "wallboard@switchboard": EslUser(
        "w4ll", frozenset({"CHANNEL_ANSWER"}), frozenset({"status"}), allowed_log=False
    ),
}


@pytest.fixture
def esl_settings() -> EslSettings:
    return EslSettings(port=0, heartbeat=0, users=USERS)


async def userauth(port: int, credentials: str) -> tuple[EslClient, dict[str, str]]:
    client = await EslClient.connect(port, password=None)
    reply = await client.command(f"userauth {credentials}")
    return client, reply.headers


async def test_userauth_with_everything_allowed(esl_server: EventSocketServer) -> None:
    client, reply = await userauth(esl_server.port, "admin@switchboard:adm1n")
    assert reply == {
        "Content-Type": "command/reply",
        "Reply-Text": "+OK accepted",
        "Allowed-Events": "all",
        "Allowed-API": "all",
        "Allowed-LOG": "true",
    }
    assert (await client.api("status")).startswith("UP ")
    assert (await client.command("log 7")).headers["Reply-Text"] == "+OK log level 7 [7]"
    await client.close()


async def test_userauth_restrictions(esl_server: EventSocketServer) -> None:
    client, reply = await userauth(esl_server.port, "wallboard@switchboard:w4ll")
    assert (reply["Allowed-Events"], reply["Allowed-API"], reply["Allowed-LOG"]) == (
        "CHANNEL_ANSWER", "status", "false",
    )  # fmt: skip
    assert (await client.api("status")).startswith("UP ")
    client.send("api show channels")  # refused as a command/reply, not an api/response
    refused = await client.reply_frame(("command/reply", "api/response"), 5)
    assert refused.headers == {
        "Content-Type": "command/reply",
        "Reply-Text": "-ERR permission denied",
    }
    denied = await client.command("bgapi originate sofia/gateway/carrier/answer &park")
    assert denied.headers["Reply-Text"] == "-ERR permission denied"
    assert (await client.command("log 7")).headers["Reply-Text"] == "-ERR permission denied"
    await client.command("event plain ALL")
    # a call placed by another (full) connection: the wallboard sees only its answer
    admin = await EslClient.connect(esl_server.port)
    assert (await admin.api("originate sofia/gateway/carrier/answer &park")).startswith("+OK")
    uuid = await admin.api("show channels as json")
    answer = await client.event(timeout=5)
    assert answer["Event-Name"] == "CHANNEL_ANSWER" and answer["Unique-ID"] in uuid
    await admin.api("hupall")
    # nothing else of that call arrives (CHANNEL_HANGUP, HANGUP_COMPLETE, DESTROY, STATE …)
    reply = await client.command("getvar x")  # a round trip flushes queued events
    assert reply.headers["Reply-Text"] == "-ERR command not found"
    assert not [f for f in client.pending if f.content_type.startswith("text/event")]
    await admin.close()
    await client.close()


@pytest.mark.parametrize(
    "credentials",
    ["admin@switchboard:wrong", "nobody@switchboard:adm1n", "admin@switchboard", "adm1n"],
)
async def test_userauth_refused(esl_server: EventSocketServer, credentials: str) -> None:
    client, reply = await userauth(esl_server.port, credentials)
    assert reply["Reply-Text"] == "-ERR invalid"
    notice = await client.read()
    assert notice.content_type == "text/disconnect-notice"
    with contextlib.suppress(Exception):
        await client.close()


def test_users_config_is_checked() -> None:
    cfg = config.load(environ={}, overrides={"esl": {"users": {
        "ops@example": {"password": "x", "allowed_events": ["CHANNEL_ANSWER", "all"]}}}})  # fmt: skip
    settings = EslSettings.from_config(cfg.esl)
    assert settings.users["ops@example"].allowed_events is None  # "all" wins
    with pytest.raises(config.ConfigError, match="NO_SUCH_EVENT"):
        config.load(environ={}, overrides={"esl": {"users": {
            "ops@example": {"password": "x", "allowed_events": ["NO_SUCH_EVENT"]}}}})  # fmt: skip
    with pytest.raises(config.ConfigError, match="user@domain"):
        config.load(environ={}, overrides={"esl": {"users": {"ops": {"password": "x"}}}})
