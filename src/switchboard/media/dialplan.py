"""The dialplan: ordered rules → application lists (FreeSWITCH's XML dialplan, in TOML).

A rule matches when *all* its given regexes match (Python ``re.search``):
``destination`` against the called number (the Request-URI user), ``caller`` against the
caller-id number (From user), ``source`` against the signalling source IP, and ``context``
equals the channel's context. The first matching rule wins (FreeSWITCH without
``continue="true"``). Its ``actions`` are ``"app"`` or ``"app argument"`` strings;
``$1``…``$9`` (and ``$0``) are the destination regex's captures, ``${var}`` channel
variables (expanded when the application runs).

Configuration (``[dialplan]`` in the node's TOML, or a separate ``file`` re-read on
``reloadxml``/SIGHUP)::

    [[dialplan.rules]]
    name = "echo"
    destination = "^echo$"
    actions = ["answer", "echo"]

With no rules configured the default dialplan is used (echo, playback, ivr, conf-<room>,
3+ digits → the ``carrier`` gateway; docs/media.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

DEFAULT_PROMPT = "prompt"  # resolved by playback to the bundled prompt (media/sounds/)


class DialplanError(ValueError):
    """A rule is invalid (bad regex, empty action list); names the rule."""


@dataclass(frozen=True)
class Rule:
    name: str
    destination: re.Pattern[str]
    actions: tuple[tuple[str, str], ...]
    caller: re.Pattern[str] | None = None
    source: re.Pattern[str] | None = None
    context: str | None = None


@dataclass(frozen=True)
class Match:
    rule: str
    apps: tuple[tuple[str, str], ...]


def _compile(rule: str, key: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise DialplanError(f"dialplan rule {rule!r}: {key} {pattern!r}: {exc}") from None


def parse_action(text: str) -> tuple[str, str]:
    """``"playback /x.wav"`` → ("playback", "/x.wav"); ``"bridge(x)"`` style is accepted too."""
    t = text.strip()
    m = re.fullmatch(r"([A-Za-z_][\w]*)\((.*)\)", t, re.S)
    if m:
        return m[1], m[2]
    app, _, arg = t.partition(" ")
    return app, arg.strip()


def _substitute(arg: str, groups: Sequence[str | None]) -> str:
    def repl(m: re.Match[str]) -> str:
        i = int(m[1])
        return (groups[i] or "") if i < len(groups) else ""

    return re.sub(r"\$(\d)", repl, arg)


def expand_vars(text: str, variables: Mapping[str, str]) -> str:
    """``${name}`` → the channel variable (empty when unset), as FreeSWITCH expands args."""
    if "${" not in text:
        return text
    return re.sub(r"\$\{([^}]+)\}", lambda m: variables.get(m[1], ""), text)


class Dialplan:
    """Ordered rules. Build with :meth:`from_config`; :meth:`match` is side-effect free."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)

    @classmethod
    def from_config(cls, rules: Iterable[Mapping[str, object]]) -> Dialplan:
        out = []
        for i, r in enumerate(rules):
            name = str(r.get("name") or f"rule-{i + 1}")
            dest = r.get("destination")
            if not isinstance(dest, str):
                raise DialplanError(f"dialplan rule {name!r}: destination regex is required")
            actions_raw = r.get("actions")
            if not isinstance(actions_raw, list) or not actions_raw:
                raise DialplanError(f"dialplan rule {name!r}: actions must be a non-empty list")
            actions = tuple(parse_action(str(a)) for a in actions_raw)
            caller = r.get("caller")
            source = r.get("source")
            context = r.get("context")
            out.append(
                Rule(
                    name=name,
                    destination=_compile(name, "destination", dest),
                    actions=actions,
                    caller=_compile(name, "caller", caller)
                    if isinstance(caller, str) and caller
                    else None,
                    source=_compile(name, "source", source)
                    if isinstance(source, str) and source
                    else None,
                    context=str(context) if context else None,
                )
            )
        return cls(out)

    @classmethod
    def default(cls) -> Dialplan:
        """The default dialplan (:data:`DEFAULT_RULES`)."""
        return cls.from_config(DEFAULT_RULES)

    def match(
        self, *, destination: str, caller: str = "", source: str = "", context: str = "default"
    ) -> Match | None:
        for rule in self.rules:
            if rule.context is not None and rule.context != context:
                continue
            m = rule.destination.search(destination)
            if m is None:
                continue
            if rule.caller is not None and rule.caller.search(caller) is None:
                continue
            if rule.source is not None and rule.source.search(source) is None:
                continue
            groups = [m.group(0), *m.groups()]
            apps = tuple((app, _substitute(arg, groups)) for app, arg in rule.actions)
            return Match(rule.name, apps)
        return None


DEFAULT_RULES: list[dict[str, object]] = [
    {"name": "echo", "destination": "^echo$", "actions": ["answer", "echo"]},
    {
        "name": "playback",
        "destination": "^playback$",
        "actions": ["answer", f"playback {DEFAULT_PROMPT}", "hangup NORMAL_CLEARING"],
    },
    {"name": "ivr", "destination": "^ivr$", "actions": ["answer", "ivr demo"]},
    {
        "name": "conference",
        "destination": r"^conf-([\w.-]+)$",
        "actions": ["answer", "conference $1"],
    },
    {
        "name": "transit",
        "destination": r"^(\+?\d{3,})$",
        "actions": ["bridge sofia/gateway/carrier/$1"],
    },
]
