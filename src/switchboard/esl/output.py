"""Text bodies of the API commands whose exact shape clients parse (mod_commands.c).

Pure formatting: the server gathers the numbers and rows, these functions produce the
``api/response`` / BACKGROUND_JOB body byte-for-byte as ``mod_commands.c`` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Column lists of the core DB views (switch_core_sqldb.c:2853-2893, :3079-3129).
CHANNEL_COLUMNS = [
    "uuid",
    "direction",
    "created",
    "created_epoch",
    "name",
    "state",
    "cid_name",
    "cid_num",
    "ip_addr",
    "dest",
    "application",
    "application_data",
    "dialplan",
    "context",
    "read_codec",
    "read_rate",
    "read_bit_rate",
    "write_codec",
    "write_rate",
    "write_bit_rate",
    "secure",
    "hostname",
    "presence_id",
    "presence_data",
    "accountcode",
    "callstate",
    "callee_name",
    "callee_num",
    "callee_direction",
    "call_uuid",
    "sent_callee_name",
    "sent_callee_num",
    "initial_cid_name",
    "initial_cid_num",
    "initial_ip_addr",
    "initial_dest",
    "initial_dialplan",
    "initial_context",
]
CALL_COLUMNS = [
    "uuid",
    "direction",
    "created",
    "created_epoch",
    "name",
    "state",
    "cid_name",
    "cid_num",
    "ip_addr",
    "dest",
    "presence_id",
    "presence_data",
    "accountcode",
    "callstate",
    "callee_name",
    "callee_num",
    "callee_direction",
    "call_uuid",
    "hostname",
    "sent_callee_name",
    "sent_callee_num",
    "b_uuid",
    "b_direction",
    "b_created",
    "b_created_epoch",
    "b_name",
    "b_state",
    "b_cid_name",
    "b_cid_num",
    "b_ip_addr",
    "b_dest",
    "b_presence_id",
    "b_presence_data",
    "b_accountcode",
    "b_callstate",
    "b_callee_name",
    "b_callee_num",
    "b_callee_direction",
    "b_sent_callee_name",
    "b_sent_callee_num",
    "call_created_epoch",
]


def _unit(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def format_uptime(micros: int) -> str:
    """``0 years, 0 days, 1 hour, 2 minutes, 3 seconds, 456 milliseconds, 789 microseconds``."""
    us = micros % 1000
    ms = (micros // 1000) % 1000
    secs = micros // 1_000_000
    years, rem = divmod(secs, 365 * 86400)
    days, rem = divmod(rem, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    return ", ".join(
        [
            _unit(years, "year"),
            _unit(days, "day"),
            _unit(hours, "hour"),
            _unit(minutes, "minute"),
            _unit(seconds, "second"),
            _unit(ms, "millisecond"),
            _unit(us, "microsecond"),
        ]
    )


@dataclass(frozen=True, slots=True)
class StatusFigures:
    uptime_us: int
    version: str
    ready: bool
    sessions_since_startup: int
    sessions: int
    peak: int
    peak_5min: int
    sps_last: int
    sps_max: int
    sps_peak: int
    sps_peak_5min: int
    max_sessions: int
    min_idle_cpu: float = 0.0
    idle_cpu: float = 99.0


def format_status(f: StatusFigures) -> str:
    """``status`` (mod_commands.c:2321-2384): eight lines; lines 4 and 5 end with a space."""
    return (
        f"UP {format_uptime(f.uptime_us)}\n"
        f"FreeSWITCH (Version {f.version}) is {'ready' if f.ready else 'not ready'}\n"
        f"{f.sessions_since_startup} session(s) since startup\n"
        f"{f.sessions} session(s) - peak {f.peak}, last 5min {f.peak_5min} \n"
        f"{f.sps_last} session(s) per Sec out of max {f.sps_max}, peak {f.sps_peak}, "
        f"last 5min {f.sps_peak_5min} \n"
        f"{f.max_sessions} session(s) max\n"
        f"min idle cpu {f.min_idle_cpu:.2f}/{f.idle_cpu:.2f}\n"
        "Current Stack Size/Max 240K/8192K\n"
    )


def format_rows(
    columns: Sequence[str], rows: Sequence[Mapping[str, str]], fmt: str = "delim", delim: str = ","
) -> str:
    """``show …`` bodies: ``delim`` (default ``,``), ``json`` or ``xml``."""
    if fmt == "json":
        if not rows:
            return '{"row_count": 0}\n'
        return json.dumps(
            {
                "row_count": len(rows),
                "rows": [{c: str(r.get(c, "") or "") for c in columns} for r in rows],
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
    if fmt == "xml":
        if not rows:
            return '<result row_count="0"/>\n'
        parts = [f'<result row_count="{len(rows)}">\n']
        for i, r in enumerate(rows, 1):
            parts.append(f'  <row row_id="{i}">\n')
            for c in columns:
                v = str(r.get(c, "") or "")
                v = v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                parts.append(f"    <{c}>{v}</{c}>\n")
            parts.append("  </row>\n")
        parts.append("</result>\n")
        return "".join(parts)
    if not rows:
        return "\n0 total.\n"
    lines = [delim.join(columns)]
    lines += [delim.join(str(r.get(c, "") or "") for c in columns) for r in rows]
    return "\n".join(lines) + f"\n\n{len(rows)} total.\n"


def format_count(n: int) -> str:
    return f"\n{n} total.\n"
