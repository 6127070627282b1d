"""What `switchboard up` decides to run for a configuration (pure: no process started)."""

from __future__ import annotations

import json
from pathlib import Path

from switchboard import config
from switchboard.supervisor import plan, summary_rows

ALL = {"router", "media", "db"}


def test_full_platform_in_start_order_with_design_addresses(tmp_path: Path) -> None:
    cfg = config.load(environ={})
    specs = plan(cfg, config_path=None, media_nodes=2, state_dir=tmp_path)
    assert [s.name for s in specs] == ["database", "media-1", "media-2", "router"]
    # the database first, media nodes together, the router last (its probes find them up)
    assert [s.stage for s in specs] == [0, 1, 1, 2]
    media1, media2, router = specs[1], specs[2], specs[3]
    assert {str(x) for x in media1.listens} == {
        "udp:127.0.0.1:5081",
        "tcp:127.0.0.1:5081",
        "tcp:127.0.0.1:8021",
        "tcp:127.0.0.1:8081",
    }
    assert media2.ready == ("127.0.0.1", 8082)
    assert media1.argv[-2:] == ("--name", "media-1")
    assert router.ready == ("127.0.0.1", 8080)
    assert json.loads(router.env["SWITCHBOARD_DISPATCHER__DESTINATIONS"]) == [
        "sip:127.0.0.1:5081",
        "sip:127.0.0.1:5082",
    ]
    assert json.loads(router.env["SWITCHBOARD_STATUS__METRICS_URLS"]) == [
        "http://127.0.0.1:8081/metrics",
        "http://127.0.0.1:8082/metrics",
        "http://127.0.0.1:8079/metrics",  # the supervisor's own row on the status page
    ]
    # the embedded database's URI reaches every service when it is known
    assert router.env_files["SWITCHBOARD_DATABASE__URL"] == tmp_path / "postgres.uri"
    rows = summary_rows(specs)
    assert ("router", "status page", "http://127.0.0.1:8080/status") in rows
    assert ("media-2", "Event Socket", "127.0.0.1:8022 (password ClueCon)") in rows


def test_operator_settings_win(tmp_path: Path) -> None:
    f = tmp_path / "sb.toml"
    f.write_text(
        '[router]\nadmin = "127.0.0.1:9080"\nlisten = ["udp:127.0.0.1:6060"]\n'
        '[dispatcher]\nlist_file = "/etc/switchboard/dispatcher.list"\n'
        '[database]\nurl = "postgresql://db1,db2/sb?target_session_attrs=read-write"\n'
    )
    cfg = config.load(f, environ={})
    specs = plan(cfg, config_path=f, media_nodes=3, state_dir=tmp_path)
    # an external database: nothing embedded to start
    assert [s.name for s in specs] == ["media-1", "media-2", "media-3", "router"]
    router = specs[-1]
    assert "SWITCHBOARD_DISPATCHER__DESTINATIONS" not in router.env  # the list file decides
    assert "SWITCHBOARD_DATABASE__URL" not in router.env_files
    assert router.argv[-2:] == ("--config", str(f))
    assert {str(x) for x in router.listens} == {"udp:127.0.0.1:6060", "tcp:127.0.0.1:9080"}


def test_node_one_addresses_from_config_place_the_others(tmp_path: Path) -> None:
    f = tmp_path / "sb.toml"
    f.write_text('[esl]\nlisten = "127.0.0.1:9021"\n')
    cfg = config.load(f, environ={})
    specs = plan(cfg, config_path=f, media_nodes=3, state_dir=tmp_path)
    media = [s for s in specs if s.name.startswith("media-")]
    assert [json.loads(s.env["SWITCHBOARD_ESL__LISTEN"]) for s in media] == [
        "127.0.0.1:9021",
        "127.0.0.1:9022",
        "127.0.0.1:9023",
    ]
    # SIP/admin/RTP keep the default numbering (508N, 808N, 16384 + (N-1)·8192) when not configured
    assert json.loads(media[2].env["SWITCHBOARD_MEDIA__LISTEN"]) == [
        "udp:127.0.0.1:5083",
        "tcp:127.0.0.1:5083",
    ]
    assert media[2].env["SWITCHBOARD_MEDIA__RTP_PORT_START"] == str(16384 + 2 * 8192)
    assert json.loads(media[1].env["SWITCHBOARD_MEDIA__ADMIN"]) == "127.0.0.1:8082"
