"""Per-connection event subscription and filters, with FreeSWITCH's exact semantics.

* ``event <fmt> <names…>`` adds to a per-type on/off set (so one connection never gets
  an event twice); unknown names are ignored; ``ALL`` and a ``SWITCH_EVENT_`` prefix are
  accepted; words after ``CUSTOM`` are subclass names. A CUSTOM event with a subclass is
  delivered only when that subclass was listed, or with ALL (mod_event_socket.c:2465-2546,
  ``event_handler`` :320-373).
* ``nixevent X`` after ALL clears ALL, enables every other type, then disables X.
* Filters (``filter``): consulted after the type matched. Once any filter exists an event is
  sent only when at least one positive filter matches and no negative (``-value``) one
  does; values are compared case-insensitively; a raw value starting with ``/`` is a
  regular expression (``/re/`` or ``/re/i``). A connection with only negative filters
  receives nothing — as in FreeSWITCH.
* ``myevents <uuid>`` keeps only that channel's events (plus its BACKGROUND_JOBs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from switchboard.esl.wire import EventLike

# switch_event_types_t names (switch_event.c EVENT_NAMES), in FreeSWITCH's order.
EVENT_NAMES = (
    "CUSTOM", "CLONE", "CHANNEL_CREATE", "CHANNEL_DESTROY", "CHANNEL_STATE",
    "CHANNEL_CALLSTATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HOLD", "CHANNEL_UNHOLD",
    "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE", "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_OUTGOING", "CHANNEL_PARK", "CHANNEL_UNPARK", "CHANNEL_APPLICATION",
    "CHANNEL_ORIGINATE", "CHANNEL_UUID", "API", "LOG", "INBOUND_CHAN", "OUTBOUND_CHAN",
    "STARTUP", "SHUTDOWN", "PUBLISH", "UNPUBLISH", "TALK", "NOTALK", "SESSION_CRASH",
    "MODULE_LOAD", "MODULE_UNLOAD", "DTMF", "MESSAGE", "PRESENCE_IN", "NOTIFY_IN",
    "PRESENCE_OUT", "PRESENCE_PROBE", "MESSAGE_WAITING", "MESSAGE_QUERY", "ROSTER", "CODEC",
    "BACKGROUND_JOB", "DETECTED_SPEECH", "DETECTED_TONE", "PRIVATE_COMMAND", "HEARTBEAT",
    "TRAP", "ADD_SCHEDULE", "DEL_SCHEDULE", "EXE_SCHEDULE", "RE_SCHEDULE", "RELOADXML",
    "NOTIFY", "PHONE_FEATURE", "PHONE_FEATURE_SUBSCRIBE", "SEND_MESSAGE", "RECV_MESSAGE",
    "REQUEST_PARAMS", "CHANNEL_DATA", "GENERAL", "COMMAND", "SESSION_HEARTBEAT",
    "CLIENT_DISCONNECTED", "SERVER_DISCONNECTED", "SEND_INFO", "RECV_INFO",
    "RECV_RTCP_MESSAGE", "SEND_RTCP_MESSAGE", "CALL_SECURE", "NAT", "RECORD_START",
    "RECORD_STOP", "PLAYBACK_START", "PLAYBACK_STOP", "CALL_UPDATE", "FAILURE",
    "SOCKET_DATA", "MEDIA_BUG_START", "MEDIA_BUG_STOP", "CONFERENCE_DATA_QUERY",
    "CONFERENCE_DATA", "CALL_SETUP_REQ", "CALL_SETUP_RESULT", "CALL_DETAIL", "DEVICE_STATE",
    "TEXT", "SHUTDOWN_REQUESTED",
)  # fmt: skip
_KNOWN = frozenset(EVENT_NAMES)

# The fixed set ``myevents`` subscribes to (mod_event_socket.c:2063-2139).
MYEVENTS_SET = frozenset(
    {
        "CHANNEL_ANSWER", "CHANNEL_APPLICATION", "CHANNEL_BRIDGE", "CHANNEL_CREATE",
        "CHANNEL_DATA", "CHANNEL_DESTROY", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE",
        "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_ORIGINATE", "CHANNEL_UUID",
        "CHANNEL_OUTGOING", "CHANNEL_PARK", "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA",
        "CHANNEL_STATE", "CHANNEL_UNBRIDGE", "CHANNEL_UNPARK", "DETECTED_SPEECH", "DTMF",
        "NOTALK", "TALK",
    }
)  # fmt: skip


def event_id(word: str) -> str | None:
    """``switch_name_event``: case-insensitive, ``SWITCH_EVENT_`` prefix allowed."""
    name = word.upper()
    if name.startswith("SWITCH_EVENT_"):
        name = name[len("SWITCH_EVENT_") :]
    if name == "ALL" or name in _KNOWN:
        return name
    return None


def _get_ci(headers: Mapping[str, str], name: str) -> str | None:
    """``switch_event_get_header`` compares names case-insensitively."""
    value = headers.get(name)
    if value is not None:
        return value
    low = name.lower()
    for key, val in headers.items():
        if key.lower() == low:
            return val
    return None


@dataclass(frozen=True, slots=True)
class Filter:
    """One ``filter <header> <value>`` line as typed by the client."""

    header: str
    value: str
    positive: bool
    compare: str  # the value with its leading +/-/spaces removed
    regex: re.Pattern[str] | None

    @classmethod
    def parse(cls, header: str, value: str) -> Filter:
        positive = True
        i = 0
        while i < len(value):  # event_handler: leading '+', '-' and spaces (:336-345)
            c = value[i]
            if c == "+":
                positive = True
            elif c == "-":
                positive = False
            elif c != " ":
                break
            i += 1
        compare = value[i:]
        regex = None
        if value.startswith("/"):  # only a raw leading '/' makes a regex (:350)
            regex = _compile(compare)
        return cls(header, value, positive, compare, regex)

    def matches(self, actual: str) -> bool:
        if self.regex is not None:
            return self.regex.search(actual) is not None
        return actual.lower() == self.compare.lower()


def _compile(text: str) -> re.Pattern[str]:
    """``/re/flags`` as switch_regex_compile reads it; a broken regex never matches."""
    pattern, flags = text, 0
    if text.startswith("/"):
        body = text[1:]
        end = body.rfind("/")
        if end >= 0:
            pattern, opts = body[:end], body[end + 1 :]
            if "i" in opts:
                flags |= re.IGNORECASE
        else:
            pattern = body
    try:
        return re.compile(pattern, flags)
    except re.error:
        return re.compile(r"(?!)")


@dataclass
class Subscription:
    """What one connection wants to receive, and in which format."""

    fmt: str = "plain"
    all_events: bool = False
    names: set[str] = field(default_factory=set)
    subclasses: set[str] = field(default_factory=set)
    filters: list[Filter] = field(default_factory=list)
    session_uuid: str | None = None  # the controlled channel (myevents, or outbound mode)
    only_session: bool = False  # myevents: that channel's events only

    @property
    def active(self) -> bool:
        return self.all_events or bool(self.names)

    # --- commands -------------------------------------------------------------------

    def subscribe(self, fmt: str | None, words: tuple[str, ...]) -> str:
        """``event [plain|json|xml] <names…>`` → the Reply-Text."""
        if fmt is not None:
            self.fmt = fmt  # changes even when no valid name follows (:2470-2480)
        custom = False
        added = False
        for word in words:
            if custom:
                self.subclasses.add(word)
                added = True
                continue
            name = event_id(word)
            if name is None:
                continue
            added = True
            if name == "ALL":
                self.all_events = True
                self.names.update(_KNOWN)
            else:
                self.names.add(name)
            if name == "CUSTOM":
                custom = True
        if not added:
            return "-ERR no keywords supplied"
        return f"+OK event listener enabled {self.fmt}"

    def nix(self, words: tuple[str, ...]) -> str:
        """``nixevent <names…>`` → the Reply-Text."""
        custom = False
        removed = False
        for word in words:
            if custom:
                self.subclasses.discard(word)
                removed = True
                continue
            name = event_id(word)
            if name is None:
                continue
            removed = True
            if name == "CUSTOM":
                custom = True
            if self.all_events:
                self.all_events = False
                self.names = set(_KNOWN)
            if name == "ALL":
                self.names.clear()
            else:
                self.names.discard(name)
        if not removed:
            return "-ERR no keywords supplied"
        return "+OK events nixed"

    def clear(self) -> str:
        """``noevents`` → the Reply-Text."""
        if not self.active:
            return "-ERR not listening for events"
        self.all_events = False
        self.names.clear()
        self.subclasses.clear()
        return "+OK no longer listening for events"

    def add_filter(self, header: str, value: str) -> str:
        self.filters.append(Filter.parse(header, value))
        return f"+OK filter added. [{header}]=[{value}]"

    def delete_filter(self, header: str, value: str | None) -> str:
        if header.lower() == "all" and value is None:
            self.filters.clear()
            return "+OK filter deleted. [all][]"
        low = header.lower()
        self.filters = [
            f
            for f in self.filters
            if not (f.header.lower() == low and (value is None or f.value == value))
        ]
        return f"+OK filter deleted. [{header}][{value or ''}]"

    def bind_session(self, uuid: str, fmt: str | None) -> None:
        """``myevents <uuid>``: the fixed channel set, only that channel."""
        self.session_uuid = uuid
        self.only_session = True
        self.names.update(MYEVENTS_SET)
        if fmt is not None:
            self.fmt = fmt

    # --- delivery -------------------------------------------------------------------

    def wants(self, event: EventLike) -> bool:
        """Whether this connection gets ``event`` (event_handler, :320-384)."""
        name = event.name
        if self.all_events:
            send = True
        elif name in self.names:
            subclass = event.headers.get("Event-Subclass") if name == "CUSTOM" else None
            send = not subclass or subclass in self.subclasses
        else:
            return False
        if self.only_session:
            headers = event.headers
            if name == "BACKGROUND_JOB":
                send = headers.get("Job-Owner-UUID") == self.session_uuid
            elif headers.get("Unique-ID") != self.session_uuid:
                return False
        if send and self.filters:
            send = self._filters_allow(event)
        return send

    def _filters_allow(self, event: EventLike) -> bool:
        send = False
        headers = event.headers
        for f in self.filters:
            actual = _get_ci(headers, f.header)
            if actual is None:
                if f.header == "_body" and event.body is not None:
                    actual = event.body
                else:
                    continue
            if send and f.positive:
                continue  # already allowed; only a veto can change that
            if f.matches(actual):
                if f.positive:
                    send = True
                else:
                    return False
        return send
