"""A rebuilt bridge's legs end together until the bridge is re-established (restore
installs this before the SIP socket listens: a BYE may arrive as soon as UDP is bound)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from switchboard.media import recovery


@dataclass
class FakeSession:
    uuid: str
    is_hungup: bool = False


@dataclass
class FakeSwitch:
    hangup_hooks: list[Any] = field(default_factory=list)
    hung: list[str] = field(default_factory=list)

    def hangup(self, uuid: str, cause: Any) -> bool:
        self.hung.append(uuid)
        return True


@dataclass
class FakeUa:
    switch: FakeSwitch = field(default_factory=FakeSwitch)


def test_either_leg_ending_ends_its_partner_once() -> None:
    ua = FakeUa()
    a, b, c, d, m = (FakeSession(x) for x in "abcdm")
    restored: list[Any] = [
        ([a, b], True, None),  # a bridge
        ([c, d], True, None),
        ([m], True, ("conference", "r1")),  # a conference member: no partner
    ]
    recovery._end_partners_together(ua, restored)  # type: ignore[arg-type]
    (hook,) = ua.switch.hangup_hooks
    hook(b)  # the carrier's BYE reached the node before the bridge app ran
    assert ua.switch.hung == ["a"]
    hook(a)  # the partner's own end: nothing more
    hook(m)
    assert ua.switch.hung == ["a"]
    hook(c)
    assert ua.switch.hung == ["a", "d"]


def test_no_hook_without_bridges() -> None:
    ua = FakeUa()
    recovery._end_partners_together(ua, [([FakeSession("x")], False, None)])  # type: ignore[arg-type,list-item]
    assert ua.switch.hangup_hooks == []
