"""The edge router under test: its configuration on free loopback ports, running in the
test's event loop, and the SIPp peers around it (a UAC through it, a pair of UAS behind it)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from switchboard import config as config_mod
from switchboard.router.dispatcher import DestinationState
from switchboard.router.service import Router
from tests.support.net import free_port
from tests.support.sipp import SCENARIOS, SippPeer


def uac_args(
    router_port: int, calls: int, rate: int = 20, *, transport: str = "u1", hold_ms: int = 0
) -> list[str]:
    return [
        f"127.0.0.1:{router_port}",
        "-s",
        "echo",
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-d",
        str(hold_ms),
        "-t",
        transport,
        "-timeout",
        "25s",
    ]


def expect_scenario(tmp: Path, code: int) -> Path:
    path = tmp / f"router_uac_expect_{code}.xml"
    path.write_text(
        (SCENARIOS / "router_uac_expect.xml").read_text().replace("@EXPECT@", str(code))
    )
    return path


def toml_value(v: Any) -> str:
    return json.dumps(v)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def router_sections(
    port: int, destinations: list[str], **over: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {
        "router": {
            "listen": [f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"],
            "admin": f"127.0.0.1:{free_port()}",
            "drain_timeout": 5.0,
        },
        "dispatcher": {
            "destinations": destinations,
            "ping_interval": 0.5,
            "ping_timeout": 1.0,
            "probing_threshold": 2,
            "inactive_threshold": 1,
            "failover_timeout": 1.0,
        },
        "acl": {"allow": ["127.0.0.1"]},
        "pike": {"sampling_time_unit": 1, "reqs_density_per_unit": 200, "ban_seconds": 60},
    }
    for name, keys in over.items():
        sections.setdefault(name, {}).update(keys)
    return sections


@contextlib.asynccontextmanager
async def running_router(tmp: Path, sections: dict[str, dict[str, Any]]) -> AsyncIterator[Router]:
    path = write_config(tmp / "router.toml", sections)
    router = Router(config_mod.load(path, environ={}), path)
    await router.start()
    try:
        yield router
    finally:
        await router.stop()


def admin_url(router: Router) -> str:
    host, port = router.admin_address
    return f"http://{host}:{port}"


async def uas_pair(
    tmp: Path,
    scenario_a: str,
    scenario_b: str,
    *args_a: str,
    transport: str = "u1",
    args_b: tuple[str, ...] = (),
) -> tuple[SippPeer, SippPeer, int, int]:
    pa, pb = free_port(), free_port()
    a = await SippPeer.start(
        tmp, scenario_a, "-aa", "-trace_msg", "-t", transport, *args_a, port=pa
    )
    b = await SippPeer.start(
        tmp, scenario_b, "-aa", "-trace_msg", "-t", transport, *args_b, port=pb
    )
    return a, b, pa, pb


def both_active(router: Router) -> bool:
    return all(
        d.state is DestinationState.ACTIVE and d.latency_ms is not None
        for d in router.proxy.dispatcher.destinations()
    )
