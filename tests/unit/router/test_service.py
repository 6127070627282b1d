"""Service helpers: destinations from the configuration, advertised addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard import config
from switchboard.router.service import destination_specs


def test_destinations_from_list_file_and_config(tmp_path: Path) -> None:
    (tmp_path / "d.list").write_text("# media\n2 sip:10.0.0.1:5080 0 5 duid=a\n")
    cfg = config.load(
        overrides={
            "dispatcher": {
                "list_file": "d.list",
                "set": 2,
                "destinations": ["sip:10.0.0.2:5080;transport=tcp", "3 sip:10.0.0.3 0 0 weight=10"],
            }
        },
        environ={},
    )
    specs = destination_specs(cfg.dispatcher, tmp_path)
    assert [(s.setid, s.host, s.port, s.transport) for s in specs] == [
        (2, "10.0.0.1", 5080, "udp"),
        (2, "10.0.0.2", 5080, "tcp"),
        (3, "10.0.0.3", 5060, "udp"),
    ]


def test_bad_destination_entry_and_missing_file_are_named(tmp_path: Path) -> None:
    cfg = config.load(overrides={"dispatcher": {"destinations": ["http://x"]}}, environ={})
    with pytest.raises(ValueError, match=r"dispatcher.destinations\[0\]"):
        destination_specs(cfg.dispatcher, tmp_path)
    cfg = config.load(overrides={"dispatcher": {"list_file": "nope.list"}}, environ={})
    with pytest.raises(ValueError, match=r"dispatcher\.list_file: cannot read"):
        destination_specs(cfg.dispatcher, tmp_path)
