"""Dial strings, the one grammar of FreeSWITCH's ``originate`` and ``bridge``.

Parsed once, here, for every caller: the Event Socket's ``originate`` command
(:mod:`switchboard.esl.originate`) and the switch's ``bridge``/``originate``
(:meth:`switchboard.media.core.Switch.place_call`) read the same structure, so a dial
string means the same thing on both paths. Pure: text in, frozen dataclasses out.

Grammar (``switch_ivr_originate.c``; what FreeSWITCH accepts, plus the extensions noted)::

    dial string := ["<" vars ">"]* group ( ":_:" group )*
    group       := ["<" vars ">"]* ["{" vars "}"]* step ( "|" step )*
    step        := leg ( "," leg )*
    leg         := ( "[" vars "]" | "{" vars "}" )* endpoint
    vars        := ["^^" c] name=value ( c name=value )*      (c is "," unless "^^c" says)

* ``<vars>`` — enterprise variables, for every leg of every group.
* ``:_:`` — enterprise groups: all are dialled at once, each running its own steps, and
  the first to answer wins; early media does not count (``ignore_early_media=true``
  unless the dial string says otherwise), as ``switch_ivr_enterprise_originate`` does.
* ``{vars}`` — variables for every leg of the group.
* ``|`` — steps tried in sequence (failover); ``,`` — legs of one step rung at once.
* ``[vars]`` — variables of one leg. A leg's own ``{vars}`` is read the same way
  (Switchboard's ``bridge`` accepted it first; FreeSWITCH only takes ``[]`` there).
* Precedence, lowest first: enterprise, group, leg.
* Inside a block, ``\\,`` (or ``\\`` before the block's separator) is a literal comma;
  ``^^X`` at the start of a block makes ``X`` the separator; a value may be quoted
  (``name='John Doe'``, quotes removed; a quote only groups when its closing quote
  follows, ``separate_string_char_delim`` in ``switch_utils.c``); an item without ``=`` is
  ignored (``switch_event_create_brackets``). Other backslashes are kept as written.
* Splitting on ``:_:``, ``|`` and ``,`` skips bracketed blocks and backslash-escaped
  characters.

Endpoints (the leg's text after its variables): ``user/<id>[@domain]``,
``sofia/gateway/<gw>/<number>``, ``sofia/<profile>/<uri>``, ``sip:``/``sips:`` URIs (a
Switchboard extension), ``loopback/<exten>[/<context>[/<dialplan>]]``, ``error/<cause>``.
Another technology is ``CHAN_NOT_IMPLEMENTED`` (``switch_core_session_outgoing_channel``
finds no endpoint module); text with no technology at all is ``INVALID_URL``. A malformed
endpoint is not a parse error: it becomes an :class:`ErrorEndpoint` leg that fails with
its cause when dialled, as FreeSWITCH fails that one leg.

:class:`DialStringError` is for a string that has no structure at all (empty, an empty
leg, an unterminated block); callers answer it with ``INVALID_URL``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

ENTERPRISE_SEPARATOR = ":_:"  # SWITCH_ENT_ORIGINATE_DELIM, switch_types.h
_OPEN = {"{": "}", "[": "]", "<": ">"}


class DialStringError(ValueError):
    """The dial string has no usable structure; the call fails with ``INVALID_URL``."""


# --- endpoints -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserEndpoint:
    """``user/<id>[@domain]``: the user's registered contacts."""

    user: str
    domain: str | None


@dataclass(frozen=True, slots=True)
class GatewayEndpoint:
    """``sofia/gateway/<gw>/<number>``: an INVITE through a configured gateway."""

    gateway: str
    number: str


@dataclass(frozen=True, slots=True)
class SofiaEndpoint:
    """``sofia/<profile>/<uri>``: an INVITE straight to a URI."""

    profile: str
    uri: str


@dataclass(frozen=True, slots=True)
class SipUriEndpoint:
    """``sip:…`` / ``sips:…``: an INVITE straight to that URI (Switchboard extension)."""

    uri: str


@dataclass(frozen=True, slots=True)
class LoopbackEndpoint:
    """``loopback/<exten>[/<context>[/<dialplan>]]`` (mod_loopback)."""

    exten: str
    context: str = "default"
    dialplan: str = "XML"


@dataclass(frozen=True, slots=True)
class ErrorEndpoint:
    """Fails at once with ``cause``: ``error/<cause>``, or a malformed endpoint."""

    cause: str


Endpoint = (
    UserEndpoint | GatewayEndpoint | SofiaEndpoint | SipUriEndpoint | LoopbackEndpoint
    | ErrorEndpoint
)  # fmt: skip

# What the switch looks endpoints up by (``Switch.endpoints``).
_KIND = {
    UserEndpoint: "user",
    GatewayEndpoint: "gateway",
    SofiaEndpoint: "sofia",
    SipUriEndpoint: "sip",
    LoopbackEndpoint: "loopback",
    ErrorEndpoint: "error",
}


def parse_endpoint(text: str) -> Endpoint:
    """One leg's endpoint text (after its variables) → what it names."""
    low = text.lower()
    if low.startswith("user/"):
        user, _, domain = text[5:].partition("@")
        return UserEndpoint(user, domain or None) if user else ErrorEndpoint("INVALID_URL")
    if low.startswith("sofia/gateway/"):
        gateway, _, number = text[len("sofia/gateway/") :].partition("/")
        if not gateway or not number:
            return ErrorEndpoint("INVALID_URL")
        return GatewayEndpoint(gateway, number)
    if low.startswith("sofia/"):
        profile, _, uri = text[6:].partition("/")
        if not profile or not uri:
            return ErrorEndpoint("INVALID_URL")
        return SofiaEndpoint(profile, uri)
    if low.startswith(("sip:", "sips:")):
        return SipUriEndpoint(text)
    if low.startswith("loopback/"):
        parts = text[9:].split("/")
        if not parts[0]:
            return ErrorEndpoint("INVALID_URL")
        context = parts[1] if len(parts) > 1 and parts[1] else "default"
        dialplan = parts[2] if len(parts) > 2 and parts[2] else "XML"
        return LoopbackEndpoint(parts[0], context, dialplan)
    if low.startswith("error/"):
        return ErrorEndpoint(text[6:].strip().upper())  # "" → the switch's default cause
    return ErrorEndpoint("CHAN_NOT_IMPLEMENTED" if "/" in text else "INVALID_URL")


# --- the parsed structure ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DialLeg:
    """One leg to dial: its endpoint text, its variables (enterprise < group < leg) and
    ``target``, the endpoint it names (parsed from the text when the leg is made)."""

    endpoint: str
    variables: Mapping[str, str] = field(default_factory=dict)
    target: Endpoint = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", parse_endpoint(self.endpoint))

    @property
    def kind(self) -> str:
        """``user``, ``gateway``, ``sofia``, ``sip``, ``loopback`` or ``error``."""
        return _KIND[type(self.target)]


Step = tuple[DialLeg, ...]  # legs rung at once


@dataclass(frozen=True, slots=True)
class DialGroup:
    """One enterprise group: ``steps`` are tried in order, the legs of a step at once."""

    variables: Mapping[str, str]  # enterprise + this group's {vars}
    steps: tuple[Step, ...]

    @property
    def legs(self) -> tuple[DialLeg, ...]:
        return tuple(leg for step in self.steps for leg in step)


@dataclass(frozen=True, slots=True)
class DialString:
    """A whole dial string. More than one group is an enterprise originate (``:_:``)."""

    text: str
    variables: Mapping[str, str]  # the enterprise <vars>
    groups: tuple[DialGroup, ...]

    @property
    def enterprise(self) -> bool:
        return len(self.groups) > 1

    @property
    def legs(self) -> tuple[DialLeg, ...]:
        return tuple(leg for group in self.groups for leg in group.legs)


# --- tokenising ----------------------------------------------------------------------


def split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside ``{}``/``[]``/``<>`` blocks; ``\\x`` is kept and never splits."""
    parts: list[str] = []
    cur: list[str] = []
    closers: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if c in _OPEN:
            closers.append(_OPEN[c])
        elif closers and c == closers[-1]:
            closers.pop()
        elif not closers and text.startswith(sep, i):
            parts.append("".join(cur))
            cur = []
            i += len(sep)
            continue
        cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def take_block(text: str, open_c: str) -> tuple[str, str]:
    """``text`` starts with ``open_c``: the inside of that block and the rest after it.

    Nesting-aware; a backslash-escaped character never closes it. Unterminated →
    :class:`DialStringError` (FreeSWITCH: "Parse Error!")."""
    close_c = _OPEN[open_c]
    depth = 0
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return text[1:i], text[i + 1 :]
        i += 1
    raise DialStringError(f"unterminated {open_c!r} in dial string")


def _split_items(block: str, sep: str) -> list[str]:
    """Split a block on ``sep``: ``\\sep`` is a literal ``sep``; a quote groups up to its
    closing quote (only when one follows, as FreeSWITCH's tokenizer does)."""
    items: list[str] = []
    cur: list[str] = []
    quoted = False
    i = 0
    while i < len(block):
        c = block[i]
        if c == "\\" and i + 1 < len(block) and block[i + 1] == sep:
            cur.append(sep)
            i += 2
            continue
        if c == "'" and (quoted or "'" in block[i + 1 :]) and (quoted or _starts_value(cur)):
            quoted = not quoted
        elif c == sep and not quoted:
            items.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    items.append("".join(cur))
    return items


def _starts_value(cur: list[str]) -> bool:
    """A quote opens a group only at the start of a value (``name='…'``): an apostrophe
    inside a word (``O'Brien``) is a character."""
    return bool(cur) and cur[-1] == "="


def parse_variables(block: str) -> dict[str, str]:
    """The inside of ``{…}``/``[…]``/``<…>``: ``name=value`` items, in order."""
    sep = ","
    if block.startswith("^^") and len(block) > 2:
        sep, block = block[2], block[3:]
    out: dict[str, str] = {}
    for item in _split_items(block, sep):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or not name:
            continue  # switch_event_create_brackets keeps only name=value items
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        out[name] = value
    return out


def _take_blocks(text: str, opens: str, into: dict[str, str]) -> str:
    """Leading blocks opened by any of ``opens`` → ``into`` (later wins); the rest."""
    text = text.lstrip()
    while text[:1] and text[0] in opens:
        block, text = take_block(text, text[0])
        into.update(parse_variables(block))
        text = text.lstrip()
    return text


def parse_dial_string(text: str) -> DialString:
    """A whole dial string → :class:`DialString`; :class:`DialStringError` when it has no
    structure (empty, an empty leg or step, an unterminated block)."""
    if not text.strip():
        raise DialStringError("empty dial string")
    enterprise: dict[str, str] = {}
    rest = _take_blocks(text, "<", enterprise)
    groups: list[DialGroup] = []
    for group_text in split_top(rest, ENTERPRISE_SEPARATOR):
        group_vars = dict(enterprise)
        group_text = _take_blocks(group_text, "<{", group_vars)
        steps: list[Step] = []
        for step_text in split_top(group_text, "|"):
            legs: list[DialLeg] = []
            for leg_text in split_top(step_text, ","):
                leg_vars = dict(group_vars)
                endpoint = _take_blocks(leg_text, "[{", leg_vars).strip()
                if not endpoint:
                    raise DialStringError(f"empty leg in {text!r}")
                legs.append(DialLeg(endpoint, leg_vars))
            steps.append(tuple(legs))
        groups.append(DialGroup(group_vars, tuple(steps)))
    return DialString(text, enterprise, tuple(groups))
