"""Subscription and filter semantics (mod_event_socket.c: event/nixevent, filter, myevents)."""

from __future__ import annotations

from dataclasses import dataclass, field

from switchboard.esl.subscription import Subscription


@dataclass(frozen=True)
class Ev:
    name: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None


def ev(name: str, **headers: str) -> Ev:
    h = {"Event-Name": name}
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    return Ev(name, h)


def test_nothing_before_subscribing() -> None:
    assert not Subscription().wants(ev("CHANNEL_ANSWER"))


def test_subscribe_names_and_reply_texts() -> None:
    s = Subscription()
    assert s.subscribe("plain", ("channel_answer", "SWITCH_EVENT_DTMF", "BOGUS")) == (
        "+OK event listener enabled plain"
    )
    assert s.wants(ev("CHANNEL_ANSWER")) and s.wants(ev("DTMF"))
    assert not s.wants(ev("CHANNEL_HANGUP"))
    assert s.subscribe("json", ("BOGUS",)) == "-ERR no keywords supplied"
    assert s.fmt == "json"  # the format changes even without a valid name


def test_all_and_nixevent() -> None:
    s = Subscription()
    s.subscribe("plain", ("ALL",))
    assert s.wants(ev("HEARTBEAT"))
    assert s.nix(("HEARTBEAT",)) == "+OK events nixed"
    assert not s.wants(ev("HEARTBEAT")) and s.wants(ev("CHANNEL_CREATE"))
    assert s.nix(("NOPE",)) == "-ERR no keywords supplied"


def test_custom_subclasses() -> None:
    s = Subscription()
    s.subscribe("plain", ("CUSTOM", "conference::maintenance"))
    assert s.wants(ev("CUSTOM", Event_Subclass="conference::maintenance"))
    assert not s.wants(ev("CUSTOM", Event_Subclass="sofia::register"))
    assert s.wants(ev("CUSTOM"))  # a CUSTOM without subclass goes to CUSTOM subscribers
    t = Subscription()
    t.subscribe("plain", ("ALL",))
    assert t.wants(ev("CUSTOM", Event_Subclass="sofia::register"))


def test_noevents() -> None:
    s = Subscription()
    assert s.clear() == "-ERR not listening for events"
    s.subscribe(None, ("ALL",))
    assert s.clear() == "+OK no longer listening for events"
    assert not s.wants(ev("CHANNEL_ANSWER"))


def test_filters_positive_or_list_case_insensitive() -> None:
    s = Subscription()
    s.subscribe("plain", ("ALL",))
    assert s.add_filter("Unique-ID", "A") == "+OK filter added. [Unique-ID]=[A]"
    s.add_filter("unique-id", "b")
    assert s.wants(ev("CHANNEL_ANSWER", Unique_ID="a"))
    assert s.wants(ev("CHANNEL_ANSWER", Unique_ID="B"))
    assert not s.wants(ev("CHANNEL_ANSWER", Unique_ID="c"))
    assert not s.wants(ev("HEARTBEAT"))  # no such header: no positive match


def test_negative_filter_vetoes_and_alone_blocks_everything() -> None:
    s = Subscription()
    s.subscribe("plain", ("ALL",))
    s.add_filter("Event-Name", "-HEARTBEAT")
    assert not s.wants(ev("CHANNEL_ANSWER"))  # FS: only negative filters → nothing
    s.add_filter("Event-Name", "/^CHANNEL_/")
    assert s.wants(ev("CHANNEL_ANSWER"))
    assert not s.wants(ev("HEARTBEAT"))
    s.add_filter("Unique-ID", "-bad")
    assert not s.wants(ev("CHANNEL_ANSWER", Unique_ID="bad"))
    assert s.wants(ev("CHANNEL_ANSWER", Unique_ID="good"))


def test_regex_filter_with_flags_and_broken_regex() -> None:
    s = Subscription()
    s.subscribe("plain", ("ALL",))
    s.add_filter("Caller-Destination-Number", "/^1555/")
    s.add_filter("Event-Name", "/channel_hang/i")
    s.add_filter("Event-Name", "/([/")
    assert s.wants(ev("CHANNEL_ANSWER", Caller_Destination_Number="15551230000"))
    assert s.wants(ev("CHANNEL_HANGUP"))
    assert not s.wants(ev("CHANNEL_ANSWER", Caller_Destination_Number="4420"))


def test_filter_delete_forms() -> None:
    s = Subscription()
    s.subscribe("plain", ("ALL",))
    s.add_filter("Unique-ID", "a")
    s.add_filter("Unique-ID", "b")
    assert s.delete_filter("Unique-ID", "a") == "+OK filter deleted. [Unique-ID][a]"
    assert not s.wants(ev("X", Unique_ID="a")) and s.wants(ev("CHANNEL_ANSWER", Unique_ID="b"))
    assert s.delete_filter("Unique-ID", None) == "+OK filter deleted. [Unique-ID][]"
    assert s.wants(ev("CHANNEL_ANSWER", Unique_ID="a"))
    s.add_filter("Unique-ID", "z")
    assert s.delete_filter("all", None) == "+OK filter deleted. [all][]"
    assert s.filters == []


def test_myevents_binds_to_one_channel() -> None:
    s = Subscription()
    s.bind_session("u1", "json")
    assert s.fmt == "json"
    assert s.wants(ev("CHANNEL_ANSWER", Unique_ID="u1"))
    assert not s.wants(ev("CHANNEL_ANSWER", Unique_ID="u2"))
    assert not s.wants(ev("HEARTBEAT"))
    s.subscribe(None, ("BACKGROUND_JOB",))
    assert s.wants(ev("BACKGROUND_JOB", Job_Owner_UUID="u1"))
    assert not s.wants(ev("BACKGROUND_JOB", Job_Owner_UUID=""))
