"""The node's event bus: FreeSWITCH-named events with FreeSWITCH header dicts.

Every event carries the standard headers first, in FreeSWITCH's order
(``switch_event.c:1986-2002``), then the event's own headers (the channel headers of
``switch_channel.c`` for channel events). Values are plain ``str`` — the
Event Socket server URL-encodes them for ``text/event-plain`` and emits them verbatim
for JSON. A body (e.g. BACKGROUND_JOB's API output) is carried separately.

Subscribers are plain callables invoked synchronously, in subscription order, from the
node's event loop. They must not block: the ESL server appends to a per-connection
queue and returns. A subscriber that raises is logged and kept; it never breaks the call
that fired the event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# Event names used by the node (FreeSWITCH ``switch_event_types_t`` names).
CHANNEL_CREATE = "CHANNEL_CREATE"
CHANNEL_DESTROY = "CHANNEL_DESTROY"
CHANNEL_STATE = "CHANNEL_STATE"
CHANNEL_CALLSTATE = "CHANNEL_CALLSTATE"
CHANNEL_ANSWER = "CHANNEL_ANSWER"
CHANNEL_HANGUP = "CHANNEL_HANGUP"
CHANNEL_HANGUP_COMPLETE = "CHANNEL_HANGUP_COMPLETE"
CHANNEL_EXECUTE = "CHANNEL_EXECUTE"
CHANNEL_EXECUTE_COMPLETE = "CHANNEL_EXECUTE_COMPLETE"
CHANNEL_BRIDGE = "CHANNEL_BRIDGE"
CHANNEL_UNBRIDGE = "CHANNEL_UNBRIDGE"
CHANNEL_PROGRESS = "CHANNEL_PROGRESS"
CHANNEL_PROGRESS_MEDIA = "CHANNEL_PROGRESS_MEDIA"
CHANNEL_OUTGOING = "CHANNEL_OUTGOING"
CHANNEL_ORIGINATE = "CHANNEL_ORIGINATE"
CHANNEL_PARK = "CHANNEL_PARK"
CHANNEL_UNPARK = "CHANNEL_UNPARK"
CHANNEL_HOLD = "CHANNEL_HOLD"
CHANNEL_UNHOLD = "CHANNEL_UNHOLD"
CALL_UPDATE = "CALL_UPDATE"
DTMF = "DTMF"
PLAYBACK_START = "PLAYBACK_START"
PLAYBACK_STOP = "PLAYBACK_STOP"
RECORD_START = "RECORD_START"
RECORD_STOP = "RECORD_STOP"
HEARTBEAT = "HEARTBEAT"
BACKGROUND_JOB = "BACKGROUND_JOB"
CUSTOM = "CUSTOM"
API = "API"

# Events that carry ``variable_*`` headers (switch_channel.c:2768-2800).
VERBOSE_EVENTS = frozenset(
    {
        "CHANNEL_CREATE", "CHANNEL_ORIGINATE", "CHANNEL_UUID", "CHANNEL_ANSWER",
        "CHANNEL_PARK", "CHANNEL_UNPARK", "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE",
        "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA", "CHANNEL_HANGUP",
        "CHANNEL_HANGUP_COMPLETE", "REQUEST_PARAMS", "CHANNEL_DATA", "CHANNEL_EXECUTE",
        "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_DESTROY", "SESSION_HEARTBEAT", "API",
        "RECORD_START", "RECORD_STOP", "PLAYBACK_START", "PLAYBACK_STOP", "CALL_UPDATE",
        "MEDIA_BUG_START", "MEDIA_BUG_STOP", "CHANNEL_HOLD", "CHANNEL_UNHOLD", "TEXT",
        "CUSTOM",
    }
)  # fmt: skip


class Event:
    """One event. ``headers`` is ordered: standard headers first (``switch_event.c``
    order), then specific ones.

    ``headers["Event-Name"]`` equals ``name``; for CUSTOM events ``Event-Subclass`` is set.
    ``body`` is the optional event body (BACKGROUND_JOB output, CDR XML …), without framing.
    ``channel_uuid`` is the Unique-ID of the channel the event is about, or None
    (used by ESL ``myevents`` and ``filter Unique-ID``).

    Channel events are built lazily: the switch snapshots the channel when the event is
    fired and renders the ~70 headers only when a subscriber first reads ``headers`` — a
    node without Event Socket clients never pays for them. Treat events as immutable.
    """

    __slots__ = ("_build", "_headers", "body", "channel_uuid", "name")

    def __init__(
        self,
        name: str,
        headers: Mapping[str, str] | None = None,
        body: str | None = None,
        channel_uuid: str | None = None,
        *,
        build: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.name = name
        self._headers = headers
        self._build = build
        self.body = body
        self.channel_uuid = channel_uuid

    @property
    def headers(self) -> Mapping[str, str]:
        h = self._headers
        if h is None:
            build = self._build
            h = self._headers = build() if build is not None else {"Event-Name": self.name}
            self._build = None
        return h

    @property
    def subclass(self) -> str | None:
        return self.headers.get("Event-Subclass")

    def __repr__(self) -> str:
        return f"Event({self.name!r}, channel_uuid={self.channel_uuid!r})"


Subscriber = Callable[[Event], None]


@dataclass
class EventBus:
    """Synchronous publish/subscribe. ``subscribe`` returns a function that unsubscribes.

    A subscriber that looks only at an event's ``name`` and ``channel_uuid`` (the node's
    call counter, the recovery journal) subscribes with ``headers=False``; one that reads
    headers only sometimes passes a predicate (the Event Socket server: while it has a
    client). While no subscriber wants headers, :meth:`headers_wanted` is false and the
    switch fires channel events without snapshotting the channel for them — a node
    without Event Socket clients pays nothing per event beyond the call itself.
    """

    _subscribers: list[Subscriber] = field(default_factory=list)
    published: int = 0
    _readers: list[tuple[Subscriber, bool | Callable[[], bool]]] = field(default_factory=list)

    def subscribe(
        self, callback: Subscriber, *, headers: bool | Callable[[], bool] = True
    ) -> Callable[[], None]:
        self._subscribers.append(callback)
        entry = (callback, headers)
        if headers is not False:
            self._readers.append(entry)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)
            if entry in self._readers:
                self._readers.remove(entry)

        return unsubscribe

    def headers_wanted(self) -> bool:
        """Whether any subscriber may read the headers of an event fired now."""
        return any(wants is True or (callable(wants) and wants()) for _, wants in self._readers)

    def publish(self, event: Event) -> None:
        self.published += 1
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", callback, event.name)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
