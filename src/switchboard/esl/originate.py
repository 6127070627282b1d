"""``originate`` arguments, as ``mod_commands.c`` reads them.

Syntax (mod_commands.c:5106, ``ORIGINATE_SYNTAX``)::

    originate <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>]
              [<cid_name>] [<cid_num>] [<timeout_sec>]

* Arguments split on spaces (``switch_separate_string``): single quotes group a word
  and are removed, a backslash escapes the next character. We additionally keep spaces
  inside ``{}``, ``[]``, ``<>`` and ``()`` — a dial string FreeSWITCH would reject is
  accepted, no valid one changes meaning. 2-7 arguments, otherwise ``-USAGE: …``. The
  literal ``undef`` means "unset". Defaults: dialplan ``XML``, context ``default``,
  timeout 60 s (mod_commands.c:5113-5152).
* The ``<call url>`` is a dial string, parsed here once by the one grammar,
  :mod:`switchboard.esl.dialstring` (the switch's ``bridge`` uses the same); the parsed
  :class:`~switchboard.esl.dialstring.DialString` is what the switch dials. A dial string
  with no structure is refused with ``-ERR INVALID_URL``.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.esl.dialstring import DialLeg, DialString, DialStringError, parse_dial_string

ORIGINATE_SYNTAX = (
    "originate <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] "
    "[<context>] [<cid_name>] [<cid_num>] [<timeout_sec>]"
)
USAGE = f"-USAGE: {ORIGINATE_SYNTAX}\n"
_PAIRS = {"{": "}", "[": "]", "<": ">", "(": ")"}  # kept whole by split_args


class OriginateRefused(Exception):
    """``originate`` cannot start; ``body`` is the api reply."""

    body = "-ERR INVALID_URL\n"


class OriginateUsageError(OriginateRefused):
    """Wrong number of arguments; the api body is :data:`USAGE`."""

    body = USAGE


class InvalidDialString(OriginateRefused):
    """The ``<call url>`` has no structure (:class:`DialStringError`): ``-ERR INVALID_URL``."""

    body = "-ERR INVALID_URL\n"


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
    dial: DialString  # the parsed <call url>, what the switch dials
    destination: Destination
    cid_name: str | None = None
    cid_num: str | None = None
    timeout: int | None = None  # argument 7, when given

    @property
    def legs(self) -> tuple[DialLeg, ...]:
        return self.dial.legs


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


def parse_destination(word: str, dialplan: str | None, context: str | None) -> Destination:
    if word.startswith("&"):
        app, paren, rest = word[1:].partition("(")
        args = rest.split(")", 1)[0] if paren else ""  # up to the FIRST ')', as FreeSWITCH reads it
        return AppDestination(app.strip(), args)
    return ExtensionDestination(word, dialplan or "XML", context or "default")


def parse_originate(args: str) -> OriginateRequest:
    """``api originate <args>`` → a request; :class:`OriginateUsageError` for a wrong
    argument count, :class:`InvalidDialString` for a dial string with no structure."""
    argv = [None if w == "undef" else w for w in split_args(args)]
    if not 2 <= len(argv) <= 7 or not argv[0] or not argv[1]:
        raise OriginateUsageError(args)
    argv += [None] * (7 - len(argv))
    url, dest, dialplan, context, cid_name, cid_num, timeout = argv
    assert url is not None and dest is not None
    try:
        dial = parse_dial_string(url)
    except DialStringError as exc:
        raise InvalidDialString(str(exc)) from None
    return OriginateRequest(
        text=args,
        url=url,
        dial=dial,
        destination=parse_destination(dest, dialplan, context),
        cid_name=cid_name,
        cid_num=cid_num,
        timeout=int(timeout) if timeout and timeout.isdigit() else None,
    )
