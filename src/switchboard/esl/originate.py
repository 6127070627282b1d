"""``originate`` argument and dial-string parsing (reference esl-and-media.md §4).

Syntax (mod_commands.c:5106, ``ORIGINATE_SYNTAX``)::

    originate <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>]
              [<cid_name>] [<cid_num>] [<timeout_sec>]

* Arguments split on spaces (``switch_separate_string``): single quotes group a word
  and are removed, a backslash escapes the next character. We additionally keep spaces
  inside ``{}``, ``[]``, ``<>`` and ``()`` — a dial string FreeSWITCH would reject is
  accepted, no valid one changes meaning. 2-7 arguments, otherwise ``-USAGE: …``. The
  literal ``undef`` means "unset". Defaults: dialplan ``XML``, context ``default``,
  timeout 60 s (mod_commands.c:5113-5152).
* Dial string (switch_ivr_originate.c): ``<enterprise vars>`` and ``:_:`` groups,
  ``{vars for every leg}``, ``[per-leg vars]``, ``|`` tries legs in sequence, ``,``
  rings them at once; ``\\,`` is a literal comma in a value, ``^^X`` at the start of a
  ``{}``/``[]`` block makes ``X`` the separator.
* Endpoints (§4.4): ``user/<id>[@domain]``, ``sofia/gateway/<gw>/<number>``,
  ``sofia/<profile>/<uri>``, ``loopback/<exten>[/<context>[/<dialplan>]]``,
  ``error/<cause>``; anything else fails with ``CHAN_NOT_IMPLEMENTED``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

ORIGINATE_SYNTAX = (
    "originate <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] "
    "[<context>] [<cid_name>] [<cid_num>] [<timeout_sec>]"
)
USAGE = f"-USAGE: {ORIGINATE_SYNTAX}\n"
DEFAULT_TIMEOUT = 60  # seconds, mod_commands.c:5114
_PAIRS = {"{": "}", "[": "]", "<": ">", "(": ")"}


class OriginateUsageError(Exception):
    """Wrong number of arguments; the api body is :data:`USAGE`."""

    body = USAGE


# --- endpoints -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserEndpoint:
    user: str
    domain: str | None


@dataclass(frozen=True, slots=True)
class GatewayEndpoint:
    gateway: str
    number: str


@dataclass(frozen=True, slots=True)
class SofiaEndpoint:
    profile: str
    uri: str


@dataclass(frozen=True, slots=True)
class LoopbackEndpoint:
    exten: str
    context: str = "default"
    dialplan: str = "XML"


@dataclass(frozen=True, slots=True)
class ErrorEndpoint:
    """Fails at once with ``cause`` (``error/<cause>`` or a malformed URL)."""

    cause: str


Endpoint = UserEndpoint | GatewayEndpoint | SofiaEndpoint | LoopbackEndpoint | ErrorEndpoint


@dataclass(frozen=True, slots=True)
class Leg:
    """One dialled leg: its endpoint, its text, and its variables (per-leg over global)."""

    text: str
    endpoint: Endpoint
    variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DialString:
    """``sequence[i]`` are legs rung at once; sequence entries are tried in order."""

    variables: Mapping[str, str]
    sequence: tuple[tuple[Leg, ...], ...]

    @property
    def legs(self) -> tuple[Leg, ...]:
        return tuple(leg for group in self.sequence for leg in group)


# --- destinations --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppDestination:
    """``&app(args)``: a one-application extension; the leg hangs up when it returns."""

    app: str
    args: str


@dataclass(frozen=True, slots=True)
class ExtensionDestination:
    """``<exten> [dialplan] [context]``: the leg runs the dialplan."""

    exten: str
    dialplan: str = "XML"
    context: str = "default"


Destination = AppDestination | ExtensionDestination


@dataclass(frozen=True, slots=True)
class OriginateRequest:
    text: str  # the whole argument string (``Job-Command-Arg``)
    url: str  # the first argument, quotes removed: the dial string as the core reads it
    dial: tuple[DialString, ...]  # one per enterprise group (``:_:``)
    destination: Destination
    cid_name: str | None = None
    cid_num: str | None = None
    timeout: int | None = None  # argument 7, when given

    @property
    def legs(self) -> tuple[Leg, ...]:
        return tuple(leg for ds in self.dial for leg in ds.legs)

    def timeout_for(self, leg: Leg) -> int:
        """``originate_timeout`` (or ``leg_timeout``) beats the argument; default 60 s."""
        for name in ("leg_timeout", "originate_timeout", "call_timeout"):
            value = leg.variables.get(name, "")
            if value.strip().isdigit() and int(value) > 0:
                return int(value)
        return self.timeout if self.timeout and self.timeout > 0 else DEFAULT_TIMEOUT

    def caller_id_for(self, leg: Leg) -> tuple[str | None, str | None]:
        """(name, number): ``origination_caller_id_*`` variables beat arguments 5 and 6."""
        name = leg.variables.get("origination_caller_id_name") or self.cid_name
        number = leg.variables.get("origination_caller_id_number") or self.cid_num
        return name, number


# --- tokenising ----------------------------------------------------------------------


def split_args(text: str) -> list[str]:
    """Split on spaces with quotes, escapes and bracket groups (see module doc)."""
    words: list[str] = []
    cur: list[str] = []
    depth: list[str] = []
    quote = False
    i = 0
    have = False
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in " '":
                cur.append(nxt)
            else:
                cur.append(c + nxt)  # kept: ``\,`` is meaningful to the dial-string parser
            have = True
            i += 2
            continue
        if c == "'" and not depth:
            quote = not quote
            have = True
        elif c == " " and not quote and not depth:
            if have:
                words.append("".join(cur))
                cur, have = [], False
        else:
            if c in _PAIRS and not quote:
                depth.append(_PAIRS[c])
            elif depth and c == depth[-1]:
                depth.pop()
            cur.append(c)
            have = True
        i += 1
    if have:
        words.append("".join(cur))
    return words


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside brackets and quotes; ``\\sep`` stays literal (with its \\)."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    quote = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if c == "'":
            quote = not quote
        elif c in "{[<" and not quote:
            depth += 1
        elif c in "}]>" and not quote and depth:
            depth -= 1
        if not quote and depth == 0 and text.startswith(sep, i):
            parts.append("".join(cur))
            cur = []
            i += len(sep)
            continue
        cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def parse_variables(block: str) -> dict[str, str]:
    """The inside of ``{…}``/``[…]``/``<…>``: ``k=v`` pairs; ``\\,`` and ``^^X`` honoured."""
    sep = ","
    if block.startswith("^^") and len(block) > 2:
        sep, block = block[2], block[3:]
    out: dict[str, str] = {}
    items: list[str] = []
    cur: list[str] = []
    quote = False
    i = 0
    while i < len(block):
        c = block[i]
        if c == "\\" and i + 1 < len(block):
            cur.append(block[i + 1])  # an escaped character is literal, backslash dropped
            i += 2
            continue
        if c == "'":
            quote = not quote
        elif c == sep and not quote:
            items.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    items.append("".join(cur))
    for item in items:
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        out[name] = value
    return out


def _take_block(text: str, open_c: str, close_c: str) -> tuple[str | None, str]:
    """A leading ``open…close`` block (nesting-aware) and the rest, or (None, text)."""
    stripped = text.lstrip()
    if not stripped.startswith(open_c):
        return None, text
    depth = 0
    i = 0
    while i < len(stripped):
        c = stripped[i]
        if c == "\\":
            i += 2
            continue
        if c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return stripped[1:i], stripped[i + 1 :]
        i += 1
    return stripped[1:], ""  # unterminated: FS treats the rest as variables too


def parse_endpoint(text: str) -> Endpoint:
    """One leg's URL (after its ``[vars]``) → an endpoint (§4.4)."""
    low = text.lower()
    if low.startswith("user/"):
        user, _, domain = text[5:].partition("@")
        return UserEndpoint(user, domain or None)
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
    if low.startswith("loopback/"):
        parts = text[9:].split("/")
        if not parts[0]:
            return ErrorEndpoint("INVALID_URL")
        context = parts[1] if len(parts) > 1 and parts[1] else "default"
        dialplan = parts[2] if len(parts) > 2 and parts[2] else "XML"
        return LoopbackEndpoint(parts[0], context, dialplan)
    if low.startswith("error/"):
        return ErrorEndpoint(text[6:].strip().upper() or "NORMAL_CLEARING")
    # An unknown technology is CHAN_NOT_IMPLEMENTED (switch_core_session_outgoing_channel);
    # no technology at all is not a URL.
    return ErrorEndpoint("CHAN_NOT_IMPLEMENTED" if "/" in text else "INVALID_URL")


def parse_dial_string(text: str) -> tuple[DialString, ...]:
    """A whole ``<call url>`` → one :class:`DialString` per enterprise group."""
    enterprise: dict[str, str] = {}
    block, rest = _take_block(text, "<", ">")
    if block is not None:
        enterprise = parse_variables(block)
        text = rest
    groups = []
    for group_text in _split_top(text, ":_:"):
        variables = dict(enterprise)
        block, rest = _take_block(group_text, "{", "}")
        if block is not None:
            variables.update(parse_variables(block))
            group_text = rest
        sequence: list[tuple[Leg, ...]] = []
        for seq_text in _split_top(group_text, "|"):
            legs: list[Leg] = []
            for leg_text in _split_top(seq_text, ","):
                leg_text = leg_text.strip()
                if not leg_text:
                    continue
                leg_vars = dict(variables)
                block, rest = _take_block(leg_text, "[", "]")
                if block is not None:
                    leg_vars.update(parse_variables(block))
                    leg_text = rest.strip()
                legs.append(Leg(leg_text, parse_endpoint(leg_text), leg_vars))
            if legs:
                sequence.append(tuple(legs))
        if not sequence:
            sequence.append((Leg("", ErrorEndpoint("INVALID_URL"), variables),))
        groups.append(DialString(variables, tuple(sequence)))
    return tuple(groups)


def parse_destination(word: str, dialplan: str | None, context: str | None) -> Destination:
    if word.startswith("&"):
        app, paren, rest = word[1:].partition("(")
        args = rest.split(")", 1)[0] if paren else ""  # up to the FIRST ')' (§4.2)
        return AppDestination(app.strip(), args)
    return ExtensionDestination(word, dialplan or "XML", context or "default")


def parse_originate(args: str) -> OriginateRequest:
    """``api originate <args>`` → a request, or :class:`OriginateUsageError`."""
    argv = [None if w == "undef" else w for w in split_args(args)]
    if not 2 <= len(argv) <= 7 or not argv[0] or not argv[1]:
        raise OriginateUsageError(args)
    argv += [None] * (7 - len(argv))
    url, dest, dialplan, context, cid_name, cid_num, timeout = argv
    assert url is not None and dest is not None
    return OriginateRequest(
        text=args,
        url=url,
        dial=parse_dial_string(url),
        destination=parse_destination(dest, dialplan, context),
        cid_name=cid_name,
        cid_num=cid_num,
        timeout=int(timeout) if timeout and timeout.isdigit() else None,
    )
