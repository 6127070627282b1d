"""Shared e2e fixtures.  The helpers live in ``sipp_runner.py`` (import them with
``from sipp_runner import Sipp, SippResult, free_port, SCENARIOS``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sipp_runner import Sipp


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    """A :class:`~sipp_runner.Sipp` runner writing its stats and logs under ``tmp_path``;
    background SIPp processes it started are stopped afterwards."""
    runner = Sipp(tmp_path)
    yield runner
    runner.close()
