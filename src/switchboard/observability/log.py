"""Logging for every Switchboard process: call-id in context, one summary line per call.

Modules log with ``logging.getLogger(__name__)``; the call being handled is
carried in a context variable, so a line logged anywhere while handling a call — in the
dialplan, a gateway leg, the CDR writer — carries ``call_id=...`` without threading it
through every function. Nothing is logged per RTP packet unless debug is on.

Use::

    setup_logging("media-1", level="INFO")
    with call_context(call_id):
        log.info("bridging to %s", target)          # ... call_id=abc@host
    log_call_summary(CallSummary(call_id=..., disposition="answered", ...))
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Literal, TextIO

_call_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "switchboard_call_id", default=None
)

CALL_LOGGER = "switchboard.calls"
"""Logger name of the one-line-per-call summaries (route it to its own file if wanted)."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(service)s %(name)s: %(message)s%(call_suffix)s"


def current_call_id() -> str | None:
    """The Call-ID of the call being handled in this task, if any."""
    return _call_id.get()


@contextlib.contextmanager
def call_context(call_id: str | None) -> Iterator[None]:
    """Tag every log record emitted inside the block (and tasks it creates) with ``call_id``.

    asyncio copies the context into tasks created inside the block, so a call's tasks keep
    its id after the block ends.
    """
    token = _call_id.set(call_id)
    try:
        yield
    finally:
        _call_id.reset(token)


def set_call_id(call_id: str | None) -> contextvars.Token[str | None]:
    """Set the call-id for the rest of the current task (``reset_call_id(token)`` undoes it)."""
    return _call_id.set(call_id)


def reset_call_id(token: contextvars.Token[str | None]) -> None:
    _call_id.reset(token)


class CallIdFilter(logging.Filter):
    """Adds ``record.call_id`` (or ``None``), ``record.call_suffix`` and ``record.service``."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        call_id = getattr(record, "call_id", None) or _call_id.get()
        # LogRecord takes extra attributes; setattr keeps the type checker honest about it
        setattr(record, "call_id", call_id)  # noqa: B010
        setattr(record, "call_suffix", f" call_id={call_id}" if call_id else "")  # noqa: B010
        if not getattr(record, "service", None):
            setattr(record, "service", self.service)  # noqa: B010
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (Loki, Elasticsearch)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": getattr(record, "service", ""),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if getattr(record, "call_id", None):
            out["call_id"] = getattr(record, "call_id", None)
        summary = getattr(record, "call_summary", None)
        if isinstance(summary, dict):
            out["call"] = summary
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


class _UtcFormatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]


def setup_logging(
    service: str,
    level: str | int = "INFO",
    fmt: Literal["text", "json"] = "text",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Configure the root logger of a service process; returns the installed handler.

    Replaces handlers installed by an earlier call (idempotent). Timestamps are UTC.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(CallIdFilter(service))
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = _UtcFormatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_switchboard", False)]:
        root.removeHandler(old)
    handler._switchboard = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    return handler


@dataclass(frozen=True, slots=True)
class CallSummary:
    """What the one summary line of a finished call says (a CDR's operator-facing digest)."""

    call_id: str
    direction: str
    caller: str
    destination: str
    disposition: str
    sip_code: int | None = None
    hangup_cause: str = ""
    pdd_ms: float | None = None
    duration: float = 0.0
    billsec: float = 0.0
    node: str = ""
    gateway: str = ""


def format_call_summary(s: CallSummary) -> str:
    """``CALL <disposition> <caller> -> <destination> key=value ...`` with empty fields left out."""
    parts = [
        f"CALL {s.disposition} {s.caller or '-'} -> {s.destination or '-'}",
        f"dir={s.direction}",
    ]
    if s.sip_code is not None:
        parts.append(f"sip={s.sip_code}")
    if s.hangup_cause:
        parts.append(f"cause={s.hangup_cause}")
    if s.pdd_ms is not None:
        parts.append(f"pdd_ms={s.pdd_ms:.0f}")
    parts.append(f"duration={s.duration:.1f}s billsec={s.billsec:.0f}")
    if s.gateway:
        parts.append(f"gateway={s.gateway}")
    if s.node:
        parts.append(f"node={s.node}")
    return " ".join(parts)


def log_call_summary(summary: CallSummary, logger: logging.Logger | None = None) -> None:
    """Emit the call's one INFO summary line on ``switchboard.calls`` (call_id attached)."""
    (logger or logging.getLogger(CALL_LOGGER)).info(
        format_call_summary(summary),
        extra={"call_id": summary.call_id, "call_summary": asdict(summary)},
    )
