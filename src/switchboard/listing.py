"""Listings of the operator commands: one renderer for ``cdr list``, ``report``,
``accounts list``, ``rates list``, ``campaign status|report``.

Four forms of the same rows:

* the **default view** — the columns an operator reads first, chosen so that a listing
  fits an 80-column terminal; long ids shortened to their first 8 characters and ``…``
  (enough to tell calls apart and to grep the full id in ``--wide`` or ``--json``);
* ``--wide`` — every column, full ids and times, as wide as it needs (pipe it to
  ``less -S``);
* ``--json`` — every column, full values (Decimal as a string, times in ISO 8601 UTC);
* ``--csv`` — the same columns as ``--json`` with a header row (RFC 4180, CRLF ends).

The console is created per call so that ``COLUMNS`` and the output stream are read when
the command runs, not when the module was imported.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Literal

import typer
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

ID_SHOWN = 8  # characters of a shortened id: unique enough within one screen
_GAP = 2  # blank cells between two columns
_MIN_FLEX = 6  # a flexible column keeps at least this much of its text


class Form(Enum):
    """How a listing is printed."""

    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    CSV = "csv"


WideOpt = Annotated[
    bool, typer.Option("--wide", "-w", help="Every column, full ids (wider than 80 columns).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON output (every column, full values).")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="CSV output with a header row.")]


class FormError(ValueError):
    """More than one of --wide, --json, --csv."""


def form(wide: bool = False, as_json: bool = False, as_csv: bool = False) -> Form:
    """The form asked for by the three flags; at most one may be given."""
    chosen = [f for f, on in ((Form.WIDE, wide), (Form.JSON, as_json), (Form.CSV, as_csv)) if on]
    if len(chosen) > 1:
        raise FormError("--wide, --json and --csv are exclusive: give one")
    return chosen[0] if chosen else Form.TABLE


@dataclass(frozen=True, slots=True)
class Column:
    """One column: ``key`` in the row dicts (and the JSON/CSV field name), ``header`` in
    the tables. ``default`` columns make the 80-column view; ``id`` columns are shortened
    there; a ``flex`` column (a name, a description) gives up its width first when the
    terminal is too narrow, the others keep theirs; ``text`` overrides how a value is
    written in the tables."""

    key: str
    header: str = ""
    default: bool = True
    justify: Literal["left", "right"] = "left"
    id: bool = False
    flex: bool = False
    text: Callable[[Any], str] | None = None

    @property
    def title(self) -> str:
        return self.header or self.key


def plain(value: Any) -> Any:
    """A value as JSON/CSV carry it: Decimal exact as a string, times in ISO 8601 UTC."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def short_id(value: str) -> str:
    return value if len(value) <= ID_SHOWN + 1 else value[:ID_SHOWN] + "…"


def _cell(column: Column, value: Any, narrow: bool) -> str:
    if value is None:
        return "-" if column.justify == "right" else ""
    if column.text is not None:
        return column.text(value)
    if isinstance(value, datetime):
        value = value.astimezone(UTC)
        return f"{value:%m-%d %H:%M:%S}" if narrow else f"{value:%Y-%m-%d %H:%M:%S}"
    text = str(value)
    return short_id(text) if narrow and column.id else text


def table(
    rows: Iterable[dict[str, Any]],
    columns: Sequence[Column],
    *,
    narrow: bool = True,
    width: int | None = None,
) -> Table:
    """The rich table of a listing: a rule under the headings, two spaces between columns.

    With ``width``, flexible columns are capped so that the table fits it (rich would
    otherwise shave every column alike, cutting numbers)."""
    shown = [c for c in columns if c.default or not narrow]
    cells = [[_cell(c, row.get(c.key), narrow) for c in shown] for row in rows]
    natural = [
        max([cell_len(c.title), *(cell_len(r[i]) for r in cells)]) for i, c in enumerate(shown)
    ]
    caps: dict[int, int] = {}
    flexible = [i for i, c in enumerate(shown) if c.flex]
    if width is not None and flexible:
        gaps = _GAP * (len(shown) - 1)
        room = width - gaps - sum(w for i, w in enumerate(natural) if i not in flexible)
        # the narrowest flexible columns keep their width, the rest share what is left
        for n, i in enumerate(sorted(flexible, key=lambda i: natural[i])):
            share = max(room // (len(flexible) - n), _MIN_FLEX)
            caps[i] = min(natural[i], share)
            room -= caps[i]
    t = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, _GAP - 1, 0, 0),  # + the box's blank vertical: _GAP between columns
        header_style="bold",
    )
    for i, c in enumerate(shown):
        t.add_column(
            c.title, justify=c.justify, no_wrap=True, overflow="ellipsis", max_width=caps.get(i)
        )
    for r in cells:
        t.add_row(*r)
    return t


def render(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[Column],
    chosen: Form,
    *,
    title: str | None = None,
    json_lines: bool = False,
    json_value: Any = None,
) -> None:
    """Print ``rows`` in the chosen form on stdout.

    ``json_lines``: one JSON object per line (streams into ``jq -c``) instead of one array;
    ``json_value``: what ``--json`` prints when a command's JSON has a richer shape than
    its rows (kept for scripts written against it)."""
    if chosen is Form.JSON:
        if json_value is not None:
            sys.stdout.write(json.dumps(json_value, indent=2, default=plain) + "\n")
        elif json_lines:
            for row in rows:
                sys.stdout.write(json.dumps({c.key: plain(row.get(c.key)) for c in columns}) + "\n")
        else:
            data = [{c.key: plain(row.get(c.key)) for c in columns} for row in rows]
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    if chosen is Form.CSV:
        writer = csv.writer(sys.stdout, lineterminator="\r\n")
        writer.writerow([c.key for c in columns])
        for row in rows:
            writer.writerow(["" if (v := plain(row.get(c.key))) is None else v for c in columns])
        return
    narrow = chosen is Form.TABLE
    console = Console(file=sys.stdout, highlight=False)
    t = table(rows, columns, narrow=narrow, width=console.width if narrow else None)
    if not narrow:
        # as wide as the table needs: --wide never cuts a value
        need = Measurement.get(console, console.options.update_width(1 << 16), t).maximum
        console = Console(file=sys.stdout, highlight=False, width=max(console.width, need))
    if title:
        console.print(title, style="bold", overflow="fold")
    console.print(t)
