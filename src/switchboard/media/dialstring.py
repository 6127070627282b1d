"""Dial strings, as FreeSWITCH's originate and bridge read them (reference §4.3).

Grammar handled::

    [{global vars}] leg [ "," leg ]* [ "|" group ]*
    leg   := [ "[" per-leg vars "]" ] endpoint
    vars  := name=value ( "," name=value )*      (``\\,`` is a literal comma in a value;
                                                   a leading ``^^<c>`` changes the separator)
    endpoint := sofia/gateway/<gw>/<number> | user/<id>[@domain] | sofia/<profile>/<uri>
              | sip:<uri> | loopback/<exten> | error/<CAUSE>

``|`` separates groups tried in sequence (failover); ``,`` separates legs of one group rung
simultaneously (first answer wins).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class DialStringError(ValueError):
    """The dial string cannot be parsed (maps to cause INVALID_URL)."""


@dataclass(frozen=True)
class DialLeg:
    """One leg to place: ``endpoint`` text and its merged variables (global then per-leg)."""

    endpoint: str
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """ "gateway", "user", "sofia", "sip", "loopback", "error" or "unknown"."""
        e = self.endpoint
        if e.startswith("sofia/gateway/"):
            return "gateway"
        if e.startswith("user/"):
            return "user"
        if e.startswith("sofia/"):
            return "sofia"
        if e.startswith(("sip:", "sips:")):
            return "sip"
        if e.startswith("loopback/"):
            return "loopback"
        if e.startswith("error/"):
            return "error"
        return "unknown"


def _split_escaped(text: str, sep: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] == sep:
            cur.append(sep)
            i += 2
            continue
        if c == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def parse_vars(block: str) -> dict[str, str]:
    """``a=1,b=2`` (or ``^^:a=1,2:b=3``) → ordered dict."""
    sep = ","
    if block.startswith("^^") and len(block) >= 3:
        sep, block = block[2], block[3:]
    out: dict[str, str] = {}
    for item in _split_escaped(block, sep):
        if not item.strip():
            continue
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise DialStringError(f"variable without '=': {item!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        out[name.strip()] = value
    return out


def _take_block(text: str, open_: str, close: str) -> tuple[str, str]:
    depth = 0
    for i, c in enumerate(text):
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return text[1:i], text[i + 1 :]
    raise DialStringError(f"unterminated {open_!r} in dial string")


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside ``{}``/``[]`` blocks."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for c in text:
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
        if c == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    out.append("".join(cur))
    return out


def parse_dial_string(text: str) -> list[list[DialLeg]]:
    """Groups (tried in order) of legs (rung together). Raises DialStringError."""
    s = text.strip()
    if not s:
        raise DialStringError("empty dial string")
    global_vars: dict[str, str] = {}
    if s.startswith("{"):
        block, s = _take_block(s, "{", "}")
        global_vars = parse_vars(block)
    groups: list[list[DialLeg]] = []
    for group_text in _split_top(s, "|"):
        legs: list[DialLeg] = []
        for leg_text in _split_top(group_text, ","):
            leg_text = leg_text.strip()
            leg_vars = dict(global_vars)
            if leg_text.startswith("{"):
                block, leg_text = _take_block(leg_text, "{", "}")
                leg_vars.update(parse_vars(block))
                leg_text = leg_text.strip()
            if leg_text.startswith("["):
                block, leg_text = _take_block(leg_text, "[", "]")
                leg_vars.update(parse_vars(block))
                leg_text = leg_text.strip()
            if not leg_text:
                raise DialStringError(f"empty leg in {text!r}")
            legs.append(DialLeg(leg_text, leg_vars))
        groups.append(legs)
    return groups
