from __future__ import annotations

from pathlib import Path

import pytest

from switchboard import config


def test_defaults_match_design() -> None:
    cfg = config.load(environ={})
    assert cfg.router.listen == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    assert cfg.router.admin == "127.0.0.1:8080"
    assert cfg.dispatcher.algorithm == 4
    assert cfg.dispatcher.ping_interval == 5.0
    assert cfg.dispatcher.failover_codes == "408|5xx"
    assert cfg.acl.allow == ["127.0.0.0/8"]
    assert cfg.pike.reqs_density_per_unit == 30
    assert cfg.pike.ban_seconds == 300


def test_toml_then_env_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "sb.toml"
    f.write_text(
        '[pike]\nban_seconds = 60\nreqs_density_per_unit = 10\n[router]\nadmin = "127.0.0.1:9000"\n'
    )
    env = {"SWITCHBOARD_PIKE__BAN_SECONDS": "30"}
    cfg = config.load(f, environ=env, overrides={"router": {"admin": "127.0.0.1:9001"}})
    assert cfg.pike.ban_seconds == 30
    assert cfg.pike.reqs_density_per_unit == 10
    assert cfg.router.admin == "127.0.0.1:9001"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pike]\nban_secs = 5\n", "unknown key 'pike.ban_secs'"),
        ("[pikes]\n", "unknown key 'pikes'"),
        ('[router]\nadmin = "localhost"\n', "router.admin"),
        ('[router]\nlisten = ["sctp:127.0.0.1:5060"]\n', "router.listen"),
        ("[dispatcher]\nalgorithm = 7\n", "dispatcher.algorithm"),
        ("[pike\n", "not valid TOML"),
        ('[router]\naliases = ["nohost"]\n', "router.aliases"),
        ('[router]\nlisten = ["tls:127.0.0.1:5061"]\n', "tls_cert and tls_key"),
        ('[security]\noutside_acl = "ignore"\n', "security.outside_acl"),
        ('[security]\nauth_ban_allow = ["10.0.0.0/33"]\n', "security.auth_ban_allow"),
        ('[media]\ntrusted = ["nonsense"]\n', "media.trusted"),
        ('[router]\nrecord_route_host = "vip.example"\n', "router.record_route_host"),
        ('[media]\nsrtp = "sometimes"\n', "media.srtp"),
        ('[gateways.x]\ntransport = "sctp"\n', "gateways.x.transport"),
        ('[gateways.x]\nportability = "lrn"\n', "gateways.x.portability"),
        ("[billing]\nretention_months = 1\n", "billing.retention_months"),
        ("[billing]\nportability_timeout = 0\n", "billing.portability_timeout"),
        ('[intercept]\nsiprec_server = "srs.example"\n', "intercept.siprec_server"),
        ("[intercept]\nrefresh = 0\n", "intercept.refresh"),
    ],
)
def test_bad_config_is_named(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(config.ConfigError) as exc:
        config.load(f, environ={})
    assert message in str(exc.value)


def test_missing_file() -> None:
    with pytest.raises(config.ConfigError, match="no such configuration file"):
        config.load("/nonexistent/sb.toml", environ={})
