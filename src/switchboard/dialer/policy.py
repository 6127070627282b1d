"""Campaign policy: outcome classes, retries, calling windows and the do-not-call list.

Everything here is a pure function of its arguments (no clock): the runner passes ``now``.
Outcome classes follow the usual dialer practice (docs/dialer.md, "Outcomes and retries"):

=========== ============== ====================================
class       SIP status     Q.850 cause (FreeSWITCH name)
=========== ============== ====================================
answered    200            NORMAL_CLEARING after answer
busy        486, 600       17 USER_BUSY
noanswer    480, 408, 487  19 NO_ANSWER, 18 NO_USER_RESPONSE
congestion  503            34 NORMAL_CIRCUIT_CONGESTION, 42, 41
failed      anything else  (unallocated number, rejected, ...)
=========== ============== ====================================

Calling windows are evaluated in each contact's own time zone (with DST), never the server's:
the flaw reported against Newfies-Dialer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class Outcome(StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"
    NOANSWER = "noanswer"
    CONGESTION = "congestion"
    FAILED = "failed"


_BUSY = {"USER_BUSY"}
_NOANSWER = {
    "NO_ANSWER",
    "NO_USER_RESPONSE",
    "ORIGINATOR_CANCEL",
    "ALLOTTED_TIMEOUT",
    "PROGRESS_TIMEOUT",
    "RECOVERY_ON_TIMER_EXPIRE",
}
_CONGESTION = {
    "NORMAL_CIRCUIT_CONGESTION",
    "SWITCH_CONGESTION",
    "NORMAL_TEMPORARY_FAILURE",
    "DESTINATION_OUT_OF_ORDER",
    "NETWORK_OUT_OF_ORDER",
    "GATEWAY_DOWN",
}


def classify(cause: str | None, *, answered: bool) -> Outcome:
    """Class of a finished attempt from its hangup cause and whether it was answered."""
    if answered:
        return Outcome.ANSWERED
    name = (cause or "").strip().upper()
    if name in _BUSY:
        return Outcome.BUSY
    if name in _NOANSWER:
        return Outcome.NOANSWER
    if name in _CONGESTION:
        return Outcome.CONGESTION
    return Outcome.FAILED


@dataclass(frozen=True)
class RetryRule:
    """Retry an outcome up to ``max_attempts`` attempts in all, ``delay`` seconds apart."""

    max_attempts: int
    delay: float


DEFAULT_RETRIES: dict[Outcome, RetryRule] = {
    Outcome.BUSY: RetryRule(max_attempts=3, delay=120.0),
    Outcome.NOANSWER: RetryRule(max_attempts=3, delay=300.0),
    Outcome.CONGESTION: RetryRule(max_attempts=3, delay=60.0),
    Outcome.FAILED: RetryRule(max_attempts=1, delay=0.0),
    Outcome.ANSWERED: RetryRule(max_attempts=1, delay=0.0),
}


def parse_retry_spec(spec: str) -> dict[Outcome, RetryRule]:
    """Parse ``"busy=3/120,noanswer=2/600"`` (attempts/delay seconds) over the defaults."""
    rules = dict(DEFAULT_RETRIES)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        attempts, slash, delay = value.partition("/")
        try:
            outcome = Outcome(name.strip().lower())
            rule = RetryRule(int(attempts), float(delay) if slash else 0.0)
        except ValueError:
            raise ValueError(
                f"bad retry rule {part!r}: expected OUTCOME=ATTEMPTS/DELAY_SECONDS with OUTCOME one of "
                + ", ".join(o.value for o in Outcome)
            ) from None
        if not sep or rule.max_attempts < 1 or rule.delay < 0:
            raise ValueError(f"bad retry rule {part!r}: attempts must be >= 1 and delay >= 0")
        rules[outcome] = rule
    return rules


def next_attempt_delay(
    outcome: Outcome, attempts_made: int, rules: dict[Outcome, RetryRule], max_attempts: int
) -> float | None:
    """Seconds until the next attempt, or None when the contact is finished."""
    rule = rules.get(outcome, DEFAULT_RETRIES[Outcome.FAILED])
    if attempts_made >= min(rule.max_attempts, max_attempts):
        return None
    return rule.delay


@dataclass(frozen=True)
class CallingWindow:
    """Local hours (``start`` ≤ t < ``end``) and ISO weekdays (1 = Monday) when calls may go out."""

    start: time = time(9, 0)
    end: time = time(21, 0)
    weekdays: frozenset[int] = field(default_factory=lambda: frozenset(range(1, 8)))

    @classmethod
    def parse(cls, text: str, weekdays: str = "") -> CallingWindow:
        """``"09:00-21:00"`` and optional ``"mon-fri"`` / ``"1,2,3,4,5"``."""
        m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
        if not m:
            raise ValueError(f"bad calling window {text!r}: expected HH:MM-HH:MM")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        try:
            start = time(h1, m1)
            end = time(0, 0) if (h2, m2) == (24, 0) else time(h2, m2)
        except ValueError:
            raise ValueError(f"bad calling window {text!r}: hours 0-24, minutes 0-59") from None
        if (h2, m2) != (24, 0) and end <= start:
            raise ValueError(f"bad calling window {text!r}: end must be after start")
        return cls(start, end if (h2, m2) != (24, 0) else time.max, _parse_weekdays(weekdays))

    def allows(self, local: datetime) -> bool:
        return local.isoweekday() in self.weekdays and self.start <= local.time() < self.end

    def next_open(self, now_utc: datetime, tz: ZoneInfo) -> datetime:
        """The first instant (UTC-aware) at or after ``now_utc`` when the window is open in ``tz``."""
        local = now_utc.astimezone(tz)
        if self.allows(local):
            return now_utc
        for day in range(8):
            d = (local + timedelta(days=day)).date()
            candidate = datetime.combine(d, self.start, tzinfo=tz)
            if candidate.isoweekday() in self.weekdays and candidate >= local:
                return candidate.astimezone(now_utc.tzinfo)
        raise ValueError("calling window has no weekday")


_DAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}


def _parse_weekdays(text: str) -> frozenset[int]:
    if not text.strip():
        return frozenset(range(1, 8))
    days: set[int] = set()
    for part in text.lower().replace(" ", "").split(","):
        lo, dash, hi = part.partition("-")
        a = _DAYS.get(lo) or (int(lo) if lo.isdigit() else 0)
        b = (_DAYS.get(hi) or (int(hi) if hi.isdigit() else 0)) if dash else a
        if not (1 <= a <= 7 and 1 <= b <= 7):
            raise ValueError(f"bad weekday {part!r}: use mon..sun or 1..7")
        days.update(range(a, b + 1) if a <= b else [*range(a, 8), *range(1, b + 1)])
    return frozenset(days)


def zone(name: str) -> ZoneInfo:
    """An IANA time zone, or ValueError naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (expected an IANA name like Europe/London)"
        ) from None


def normalise_number(number: str) -> str:
    """Digits only, keeping a leading ``+``; separators such as spaces, dashes, dots dropped."""
    s = number.strip()
    plus = s.startswith("+")
    digits = re.sub(r"[\s\-.()/]", "", s.lstrip("+"))
    return ("+" if plus else "") + digits


class DoNotCall:
    """Numbers never to dial: exact numbers and patterns with ``X`` for any digit (``201XXXXXXX``).

    A number matches with or without its leading ``+``.
    """

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self._exact: set[str] = set()
        self._patterns: list[re.Pattern[str]] = []
        for raw in entries:
            self.add(raw)

    def add(self, raw: str) -> None:
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            return
        n = normalise_number(entry).lstrip("+")
        if "X" in n.upper():
            if not re.fullmatch(r"[0-9Xx]+", n):
                raise ValueError(f"bad do-not-call pattern {raw!r}: digits and X only")
            self._patterns.append(re.compile(n.upper().replace("X", "[0-9]")))
        else:
            if not n.isdigit():
                raise ValueError(f"bad do-not-call number {raw!r}")
            self._exact.add(n)

    def __contains__(self, number: str) -> bool:
        n = normalise_number(number).lstrip("+")
        return n in self._exact or any(p.fullmatch(n) for p in self._patterns)

    def __len__(self) -> int:
        return len(self._exact) + len(self._patterns)
