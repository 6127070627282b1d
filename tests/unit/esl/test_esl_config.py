"""[esl] configuration section → server settings."""

from __future__ import annotations

import pytest

from switchboard.config import ConfigError, load
from switchboard.media.event_socket import EslSettings


def test_defaults_are_freeswitch_vanilla_but_loopback() -> None:
    s = EslSettings.from_config(load(environ={}).esl)
    assert (s.host, s.port, s.password) == ("127.0.0.1", 8021, "ClueCon")
    assert s.allow == ("127.0.0.0/8", "::1/128") and s.ssl is None
    assert s.heartbeat == 20.0 and s.auth_timeout == 25.0
    assert EslSettings.from_config(load(environ={}).esl, node_number=2).port == 8022


def test_toml_and_env(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "sb.toml"
    f.write_text('[esl]\nlisten = "127.0.0.2:9021"\npassword = "s3cret"\nallow = []\n')
    s = EslSettings.from_config(load(f, environ={"SWITCHBOARD_ESL__MAX_QUEUE": "500"}).esl)
    assert (s.host, s.port, s.password, s.allow, s.max_queue) == (
        "127.0.0.2", 9021, "s3cret", (), 500,
    )  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    ['listen = "nowhere"', 'allow = ["10.0.0.0/33"]', "heartbeat = -1", "pasword = 'x'"],
)
def test_bad_values_name_the_key(tmp_path, bad: str) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "sb.toml"
    f.write_text(f"[esl]\n{bad}\n")
    with pytest.raises(ConfigError, match="esl"):
        load(f, environ={})
