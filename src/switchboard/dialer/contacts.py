"""Contacts from CSV.

A header row is required. ``number`` is required; ``caller_id``, ``name`` and ``timezone`` are
optional (the campaign's defaults apply when absent or empty). Every other column becomes a
channel variable on that contact's originate, so a column ``account_code`` sets
``{account_code=...}``.

A file with any bad row is rejected whole, with every error and its line number: a campaign
half loaded is worse than one not loaded.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

from switchboard.dialer.policy import normalise_number, zone

KNOWN = ("number", "caller_id", "name", "timezone")
_NUMBER = re.compile(r"\+?[0-9]{3,20}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Characters that would end or split a {var=value,...} block of a dial string.
_FORBIDDEN_IN_VALUE = re.compile(r"[{}\[\]\r\n'\"]")
MAX_ERRORS_SHOWN = 20


@dataclass(frozen=True)
class Contact:
    line: int
    number: str
    caller_id: str = ""
    name: str = ""
    timezone: str = ""
    variables: dict[str, str] = field(default_factory=dict)


class ContactsError(ValueError):
    """The file cannot be loaded; ``errors`` lists ``(line, message)``."""

    def __init__(self, source: str, errors: list[tuple[int, str]]) -> None:
        self.errors = errors
        shown = "\n".join(f"  line {n}: {msg}" for n, msg in errors[:MAX_ERRORS_SHOWN])
        more = len(errors) - MAX_ERRORS_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{source}: {len(errors)} bad row(s), nothing loaded:\n{shown}{tail}")


def parse_contacts(text: str, source: str = "contacts") -> list[Contact]:
    """Parse a contacts CSV, or raise ContactsError listing every bad row."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ContactsError(
            source, [(1, "empty file: a header row with 'number' is required")]
        ) from None
    errors: list[tuple[int, str]] = []
    if "number" not in header:
        raise ContactsError(source, [(1, f"no 'number' column in header {header}")])
    dupes = {h for h in header if header.count(h) > 1}
    if dupes:
        raise ContactsError(source, [(1, f"duplicate column(s): {', '.join(sorted(dupes))}")])
    for h in header:
        if h not in KNOWN and not _VAR_NAME.fullmatch(h):
            errors.append((1, f"column {h!r} is not a valid channel variable name"))
    contacts: list[Contact] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            errors.append((line, f"{len(row)} fields, header has {len(header)}"))
            continue
        values = {h: cell.strip() for h, cell in zip(header, row, strict=True)}
        number = normalise_number(values["number"])
        if not _NUMBER.fullmatch(number):
            errors.append(
                (line, f"bad number {values['number']!r}: 3-20 digits, optional leading +")
            )
            continue
        if number in seen:
            errors.append((line, f"number {number} already on line {seen[number]}"))
            continue
        caller_id = values.get("caller_id", "")
        if caller_id and not _NUMBER.fullmatch(normalise_number(caller_id)):
            errors.append((line, f"bad caller_id {caller_id!r}"))
            continue
        tz = values.get("timezone", "")
        if tz:
            try:
                zone(tz)
            except ValueError as exc:
                errors.append((line, str(exc)))
                continue
        variables = {h: v for h, v in values.items() if h not in KNOWN and v}
        bad = [h for h, v in variables.items() if _FORBIDDEN_IN_VALUE.search(v)]
        if bad or _FORBIDDEN_IN_VALUE.search(values.get("name", "")):
            errors.append(
                (line, f"value of {(bad or ['name'])[0]!r} contains one of {{}}[]'\" or a newline")
            )
            continue
        seen[number] = line
        contacts.append(
            Contact(
                line,
                number,
                normalise_number(caller_id) if caller_id else "",
                values.get("name", ""),
                tz,
                variables,
            )
        )
    if errors:
        raise ContactsError(source, errors)
    return contacts


def escape_var(value: str) -> str:
    """Escape a channel-variable value for a ``{a=b,c=d}`` block (FreeSWITCH: ``\\,``)."""
    return value.replace("\\", "\\\\").replace(",", "\\,")
