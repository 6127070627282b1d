"""Run every net test on both loops a deployment may use: stock asyncio and uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from switchboard.net import loop as sbloop


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], Any]]:
    """pytest-asyncio ≥ 1.4 parametrises the tests in this directory over these loops."""
    factories: dict[str, Callable[[], Any]] = {"asyncio": asyncio.new_event_loop}
    if sbloop.uvloop_available():
        factories["uvloop"] = sbloop.new_event_loop
    return factories
