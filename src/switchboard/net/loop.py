"""The event loop every Switchboard process runs: uvloop when installed, asyncio otherwise.

``run(main())`` is what a service's entry point calls; ``install()`` is for code that
creates loops itself (pytest plugins, embedding).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

try:  # uvloop is a declared dependency, but a process must still start without it.
    import uvloop as _uvloop
except ImportError:  # pragma: no cover - exercised only where uvloop is missing
    _uvloop = None  # type: ignore[assignment]


def uvloop_available() -> bool:
    """True when uvloop can be imported."""
    return _uvloop is not None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A fresh loop of the best available kind."""
    if _uvloop is not None:
        return _uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """Factory for :class:`asyncio.Runner` (``loop_factory=``)."""
    return new_event_loop


def install() -> bool:
    """Make uvloop the default loop policy; returns whether it was installed."""
    if _uvloop is None:
        log.info("uvloop not installed; using the stock asyncio event loop")
        return False
    asyncio.set_event_loop_policy(_uvloop.EventLoopPolicy())
    return True


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """Run ``main`` to completion on a new uvloop (or asyncio) loop, like ``asyncio.run``."""
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
