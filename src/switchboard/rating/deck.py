"""Rate decks: longest-prefix match with effective dates, and the CSV deck format.

Longest-prefix match probes every prefix of the dialled number, longest first, in a dict:
far faster in process than an SQL probe per call (``bench/billing`` measures the two side by
side: ``rating_lookups_per_s``). The database trigger does the same probe with
``prefix = ANY(<all prefixes>)`` on a btree index.

CSV decks (``switchboard rates import``): a header row naming the columns, ``prefix`` and
``rate`` required; ``connect_fee``, ``increment`` (``60/60``, ``30/6`` or ``1``),
``min_duration``, ``effective_from``, ``effective_to``, ``description``, ``carrier`` and
``account`` optional. Every bad row is reported with its line number; a file with any bad
row is rejected whole.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from switchboard.rating.rate import Increment, Rate, RatingError

MAX_PREFIX_LENGTH = 16  # E.164 numbers have at most 15 digits (ITU-T E.164 §6)

REQUIRED_COLUMNS = ("prefix", "rate")
OPTIONAL_COLUMNS = (
    "connect_fee",
    "increment",
    "min_duration",
    "effective_from",
    "effective_to",
    "description",
    "carrier",
    "account",
)


def normalise_number(destination: str) -> str:
    """The digits a rate deck is matched against: ``+``/``00`` international forms are kept
    as dialled minus the ``+``; anything that is not a number (``echo``, ``conf-1``) gives ''."""
    number = destination.strip()
    if number.startswith("+"):
        number = number[1:]
    return number if number.isdigit() else ""


def prefixes_of(destination: str) -> list[str]:
    """Every prefix of the number, longest first (CGRateS ``SplitPrefix``)."""
    number = normalise_number(destination)[:MAX_PREFIX_LENGTH]
    return [number[:n] for n in range(len(number), 0, -1)]


class RateDeck:
    """An in-memory rate deck for real-time rating; immutable once built."""

    def __init__(self, rates: Iterable[Rate] = ()) -> None:
        by_prefix: dict[str, list[Rate]] = {}
        for rate in rates:
            by_prefix.setdefault(rate.prefix, []).append(rate)
        epoch = datetime.min.replace(tzinfo=UTC)
        for versions in by_prefix.values():
            # Newest version first so the first active one found is the current price.
            versions.sort(key=lambda r: r.effective_from or epoch, reverse=True)
        self._by_prefix = by_prefix

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_prefix.values())

    def lookup(self, destination: str, when: datetime) -> Rate | None:
        """The rate for ``destination`` at ``when``: longest matching prefix, then the most
        recent version effective at that time; None when nothing matches."""
        for prefix in prefixes_of(destination):
            versions = self._by_prefix.get(prefix)
            if versions:
                for rate in versions:
                    if rate.active_at(when):
                        return rate
        return None


class DeckError(ValueError):
    """A CSV deck is invalid; ``problems`` lists ``(line, message)`` for every bad row."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        shown = "\n".join(f"line {line}: {msg}" for line, msg in problems[:20])
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} bad row(s), nothing imported:\n{shown}{more}")


@dataclass(frozen=True, slots=True)
class DeckRow:
    """One parsed CSV row with its line number and optional carrier/account owner."""

    line: int
    rate: Rate
    carrier: str = ""
    account: str = ""


def _parse_time(text: str, column: str) -> datetime:
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RatingError(f"{column} must be an ISO date or time, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _money(text: str, column: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise RatingError(f"{column} must be a decimal number, got {text!r}") from None
    if not value.is_finite():
        raise RatingError(f"{column} must be a finite number, got {text!r}")
    return value


def parse_row(fields: dict[str, str]) -> tuple[Rate, str, str]:
    """Build a Rate from one CSV record (column name → text)."""
    prefix = (fields.get("prefix") or "").strip().lstrip("+")
    if not prefix:
        raise RatingError("prefix is empty")
    if not prefix.isdigit() or len(prefix) > MAX_PREFIX_LENGTH:
        raise RatingError(f"prefix must be 1-{MAX_PREFIX_LENGTH} digits, got {prefix!r}")
    rate_text = (fields.get("rate") or "").strip()
    if not rate_text:
        raise RatingError("rate is empty")
    get = lambda name: (fields.get(name) or "").strip()  # noqa: E731
    min_text = get("min_duration")
    try:
        min_duration = int(min_text) if min_text else 0
    except ValueError:
        raise RatingError(f"min_duration must be whole seconds, got {min_text!r}") from None
    rate = Rate(
        prefix=prefix,
        rate=_money(rate_text, "rate"),
        connect_fee=_money(get("connect_fee"), "connect_fee") if get("connect_fee") else Decimal(0),
        increment=Increment.parse(get("increment")) if get("increment") else Increment(),
        min_duration=min_duration,
        effective_from=_parse_time(get("effective_from"), "effective_from")
        if get("effective_from")
        else None,
        effective_to=_parse_time(get("effective_to"), "effective_to")
        if get("effective_to")
        else None,
        description=get("description"),
    )
    if rate.effective_from and rate.effective_to and rate.effective_to <= rate.effective_from:
        raise RatingError("effective_to must be after effective_from")
    return rate, get("carrier"), get("account")


def read_header(reader: Any, required: Sequence[str], optional: Sequence[str]) -> list[str]:
    """The lower-cased header row of a CSV import, or DeckError (line 1) naming missing and
    unknown columns; shared by every bulk import (rate decks, ported numbers)."""
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        expected = ",".join(required)
        raise DeckError([(1, f"empty file: expected a header row with {expected}")]) from None
    missing = [c for c in required if c not in header]
    unknown = [c for c in header if c not in (*required, *optional)]
    if missing or unknown:
        msg = []
        if missing:
            msg.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            msg.append(f"unknown column(s) {', '.join(unknown)}")
        raise DeckError([(1, "; ".join(msg) + f" (header is {','.join(header)})")])
    return header


def parse_deck(lines: Iterable[str]) -> list[DeckRow]:
    """Parse a whole CSV deck or raise DeckError listing every bad line (1-based, header = 1)."""
    reader = csv.reader(lines)
    header = read_header(reader, REQUIRED_COLUMNS, OPTIONAL_COLUMNS)
    rows: list[DeckRow] = []
    problems: list[tuple[int, str]] = []
    seen: dict[tuple[str, str, str, datetime | None], int] = {}
    for record in _records(reader):
        line, values = record
        if not any(v.strip() for v in values):
            continue  # blank line
        if len(values) != len(header):
            problems.append((line, f"expected {len(header)} fields, got {len(values)}"))
            continue
        try:
            rate, carrier, account = parse_row(dict(zip(header, values, strict=True)))
        except RatingError as exc:
            problems.append((line, str(exc)))
            continue
        key = (carrier, account, rate.prefix, rate.effective_from)
        if key in seen:
            problems.append(
                (line, f"duplicate of line {seen[key]} (same prefix and effective_from)")
            )
            continue
        seen[key] = line
        rows.append(DeckRow(line, rate, carrier, account))
    if problems:
        raise DeckError(problems)
    return rows


def _records(reader: Any) -> Iterator[tuple[int, list[str]]]:
    # csv.reader counts physical lines, so quoted fields spanning lines still report right.
    for values in reader:
        yield reader.line_num, values
