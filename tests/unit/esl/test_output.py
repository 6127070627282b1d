"""API output bodies (mod_commands.c: status, show channels/calls)."""

from __future__ import annotations

import json

from switchboard.esl import output


def test_uptime_units_singular_and_plural() -> None:
    us = ((1 * 3600 + 2 * 60 + 3) * 1_000_000) + 456_789
    assert output.format_uptime(us) == (
        "0 years, 0 days, 1 hour, 2 minutes, 3 seconds, 456 milliseconds, 789 microseconds"
    )
    assert output.format_uptime(366 * 86400 * 1_000_000 + 1001) == (
        "1 year, 1 day, 0 hours, 0 minutes, 0 seconds, 1 millisecond, 1 microsecond"
    )


def test_status_eight_lines_with_trailing_spaces() -> None:
    text = output.format_status(
        output.StatusFigures(
            uptime_us=0, version="1.10.12-release 64bit", ready=True,
            sessions_since_startup=12, sessions=0, peak=2, peak_5min=0, sps_last=0,
            sps_max=30, sps_peak=2, sps_peak_5min=0, max_sessions=1000,
        )
    )  # fmt: skip
    lines = text.split("\n")
    assert len(lines) == 9 and lines[-1] == ""
    assert lines[1] == "FreeSWITCH (Version 1.10.12-release 64bit) is ready"
    assert lines[2] == "12 session(s) since startup"
    assert lines[3] == "0 session(s) - peak 2, last 5min 0 "
    assert lines[4] == "0 session(s) per Sec out of max 30, peak 2, last 5min 0 "
    assert lines[5] == "1000 session(s) max"


def test_show_formats() -> None:
    cols = ["uuid", "name"]
    rows = [{"uuid": "a", "name": "x"}, {"uuid": "b", "name": None}]
    assert output.format_rows(cols, []) == "\n0 total.\n"
    assert output.format_rows(cols, rows) == "uuid,name\na,x\nb,\n\n2 total.\n"
    assert output.format_rows(cols, rows, delim="|") == "uuid|name\na|x\nb|\n\n2 total.\n"
    assert output.format_rows(cols, [], "json") == '{"row_count": 0}\n'
    obj = json.loads(output.format_rows(cols, rows, "json"))
    assert obj == {"row_count": 2, "rows": [{"uuid": "a", "name": "x"}, {"uuid": "b", "name": ""}]}
    assert output.format_rows(cols, [], "xml") == '<result row_count="0"/>\n'
    assert '<row row_id="2">' in output.format_rows(cols, rows, "xml")
    assert len(output.CHANNEL_COLUMNS) == 38 and len(output.CALL_COLUMNS) == 41
