"""Ported-number CSV decks, parsed and checked (pure: no IO).

A file has a header row with ``number`` and ``routing_number`` (and optionally
``description``); numbers are E.164 digits with an optional leading ``+`` (visual
separators ``-``, ``.``, spaces and parentheses allowed, RFC 3966 §5.1.1), stored as bare
digits. The rules are those of rate decks: every bad line is reported with its number and
nothing is imported (:class:`~switchboard.rating.deck.DeckError`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass

from switchboard.rating.deck import DeckError, read_header

REQUIRED = ("number", "routing_number")
OPTIONAL = ("description",)
_SEPARATORS = re.compile(r"[\s().-]")
_DIGITS = re.compile(r"\+?[0-9]{1,16}")


@dataclass(frozen=True, slots=True)
class PortedRow:
    line: int
    number: str  # digits
    routing_number: str  # digits
    description: str = ""


def canonical(text: str) -> str | None:
    """``+1 (212) 555-0100`` → ``12125550100``; None if it is not a number."""
    value = _SEPARATORS.sub("", text.strip())
    if not _DIGITS.fullmatch(value):
        return None
    return value.lstrip("+")


def parse_ported(lines: Iterable[str]) -> list[PortedRow]:
    """Parse a whole file or raise DeckError listing every bad line (header = line 1)."""
    reader = csv.reader(lines)
    header = read_header(reader, REQUIRED, OPTIONAL)
    rows: list[PortedRow] = []
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for values in reader:
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            problems.append((line, f"expected {len(header)} fields, got {len(values)}"))
            continue
        record = dict(zip(header, values, strict=True))
        number = canonical(record["number"])
        routing = canonical(record["routing_number"])
        if number is None:
            problems.append((line, f"number must be 1-16 digits, got {record['number']!r}"))
            continue
        if routing is None:
            problems.append(
                (line, f"routing_number must be 1-16 digits, got {record['routing_number']!r}")
            )
            continue
        if number in seen:
            problems.append((line, f"duplicate of line {seen[number]} (same number)"))
            continue
        seen[number] = line
        rows.append(PortedRow(line, number, routing, record.get("description", "").strip()))
    if problems:
        raise DeckError(problems)
    return rows
