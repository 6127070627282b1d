"""Channels: one call leg with FreeSWITCH-like states, call states and variables.

State model (FreeSWITCH ``switch_channel_state_t``, ``switch_types.h``):

    CS_NEW → CS_INIT → CS_ROUTING → CS_EXECUTE ⇄ CS_EXCHANGE_MEDIA (bridged) / CS_PARK
                         └──────────────┴──────────────┴──→ CS_HANGUP → CS_REPORTING → CS_DESTROY

Call state (``Channel-Call-State``): DOWN → RINGING (180 / ring_ready) → EARLY (183 +
SDP / pre_answer) → ACTIVE (answered) → HANGUP. ``Answer-State`` is the lower-case
companion used on events: ringing, early, answered, hangup.

The channel itself is a record plus transition bookkeeping; it fires no events and
does no IO. :class:`switchboard.media.core.Switch` owns channels, drives transitions
and publishes the events built from :meth:`Channel.event_headers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from switchboard.media.causes import Cause

# Channel variable FreeSWITCH sets on a leg created by ``bridge`` from another channel: the
# uuid of that channel (the A-leg). Set by the switch only (core.Switch._start_leg); an
# originated leg with no A-leg (ESL ``originate``) never has it. The CDR's
# ``originating_leg`` comes from it, and billing prices no sell side on such a B-leg.
ORIGINATING_LEG_VAR = "originating_leg_uuid"
# "true" on both legs of an emergency call (docs/compliance.md "Emergency calls").
EMERGENCY_VAR = "emergency"
# The caller's P-Asserted-Identity with the edge router's STIR verstat, passed on to the
# B-leg's INVITE (docs/compliance.md "STIR/SHAKEN"); a sip_h_ variable: a header there.
PAI_VAR = "sip_h_P-Asserted-Identity"
# Session data key: body parts (sip.multipart.Part) an emergency call's INVITE carried
# next to its SDP (a PIDF-LO location, RFC 6442), sent on in the B-leg's INVITE.
BODY_PARTS = "body_parts"


class ChannelState(Enum):
    """``switch_channel_state_t`` with FreeSWITCH's numbering (``Channel-State-Number``)."""

    CS_NEW = 0
    CS_INIT = 1
    CS_ROUTING = 2
    CS_SOFT_EXECUTE = 3
    CS_EXECUTE = 4
    CS_EXCHANGE_MEDIA = 5
    CS_PARK = 6
    CS_CONSUME_MEDIA = 7
    CS_HIBERNATE = 8
    CS_RESET = 9
    CS_HANGUP = 10
    CS_REPORTING = 11
    CS_DESTROY = 12


class CallState(Enum):
    """``switch_channel_callstate_t`` names (``Channel-Call-State``)."""

    DOWN = "DOWN"
    DIALING = "DIALING"
    RINGING = "RINGING"
    EARLY = "EARLY"
    ACTIVE = "ACTIVE"
    HELD = "HELD"
    HANGUP = "HANGUP"


ANSWER_STATE = {
    CallState.DOWN: "ringing",
    CallState.DIALING: "ringing",
    CallState.RINGING: "ringing",
    CallState.EARLY: "early",
    CallState.ACTIVE: "answered",
    CallState.HELD: "answered",
    CallState.HANGUP: "hangup",
}

# Ordered states a channel may not go back from (hangup path is one-way).
_TERMINAL = (ChannelState.CS_HANGUP, ChannelState.CS_REPORTING, ChannelState.CS_DESTROY)


class ChannelStateError(Exception):
    """A transition the state model forbids (e.g. answering a hung-up channel)."""


@dataclass
class CallerProfile:
    """The caller profile (``Caller-*`` headers, switch_caller.c)."""

    caller_id_name: str = ""
    caller_id_number: str = ""
    destination_number: str = ""
    network_addr: str = ""
    username: str = ""
    dialplan: str = "XML"
    context: str = "default"
    source: str = "mod_sofia"
    ani: str = ""
    rdnis: str = ""
    callee_id_name: str = ""
    callee_id_number: str = ""


def _us(t: float | None) -> str:
    return "0" if t is None else str(int(t * 1_000_000))


@dataclass(eq=False)
class Channel:
    """One call leg.

    Attributes other engineers read (never assign them from outside the node):
    ``uuid``, ``name`` (``sofia/internal/<user>@<host>`` style), ``direction``
    ("inbound" = the leg called us; "outbound" = we placed it), ``profile``,
    ``variables`` (channel variables; mutate with :meth:`set_var`), ``state``,
    ``call_state``, ``hangup_cause``, ``created_at``/``progress_at``/
    ``progress_media_at``/``answered_at``/``bridged_at``/``hangup_at`` (epoch seconds or
    None), ``read_codec`` (e.g. "PCMU") and ``codec_rate``, ``other_leg`` (uuid of the
    bridged partner or None), ``application``/``application_data`` (running app).
    """

    uuid: str
    name: str
    direction: str
    created_at: float
    profile: CallerProfile = field(default_factory=CallerProfile)
    variables: dict[str, str] = field(default_factory=dict)
    state: ChannelState = ChannelState.CS_NEW
    call_state: CallState = CallState.DOWN
    hangup_cause: Cause | None = None
    progress_at: float | None = None
    progress_media_at: float | None = None
    answered_at: float | None = None
    bridged_at: float | None = None
    hangup_at: float | None = None
    read_codec: str = "PCMU"
    codec_rate: int = 8000
    other_leg: str | None = None
    application: str = ""
    application_data: str = ""
    last_app: str = ""
    last_arg: str = ""
    sip_status: int | None = None
    hangup_disposition: str = ""
    held: bool = False

    # --- variables -------------------------------------------------------------------
    def set_var(self, name: str, value: str | None) -> None:
        """Set (or with ``None`` unset) a channel variable."""
        if value is None:
            self.variables.pop(name, None)
        else:
            self.variables[name] = str(value)

    def get_var(self, name: str, default: str | None = None) -> str | None:
        return self.variables.get(name, default)

    def var_true(self, name: str) -> bool:
        """FreeSWITCH ``switch_true``: yes/on/true/enabled/active/allow or a non-zero number."""
        v = (self.variables.get(name) or "").strip().lower()
        if v in ("yes", "on", "true", "t", "enabled", "active", "allow"):
            return True
        return v.lstrip("-").isdigit() and int(v) != 0

    # --- transitions -----------------------------------------------------------------
    @property
    def is_hungup(self) -> bool:
        return self.state in _TERMINAL

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def answer_state(self) -> str:
        return ANSWER_STATE[self.call_state]

    def set_state(self, new: ChannelState) -> ChannelState:
        """Move to ``new``; returns the old state. Hangup states only move forward."""
        old = self.state
        if old in _TERMINAL and new not in _TERMINAL:
            raise ChannelStateError(f"{self.uuid}: {old.name} → {new.name} after hangup")
        if old in _TERMINAL and _TERMINAL.index(new) < _TERMINAL.index(old):
            raise ChannelStateError(f"{self.uuid}: {old.name} → {new.name}")
        self.state = new
        return old

    def set_call_state(self, new: CallState) -> CallState:
        old = self.call_state
        if old is CallState.HANGUP and new is not CallState.HANGUP:
            raise ChannelStateError(f"{self.uuid}: call state {old.name} → {new.name}")
        self.call_state = new
        return old

    def mark_ringing(self, now: float) -> bool:
        """180 sent/received. Returns False when it changes nothing (already further)."""
        if self.call_state in (CallState.DOWN, CallState.DIALING):
            self.set_call_state(CallState.RINGING)
            self.progress_at = self.progress_at or now
            return True
        return False

    def mark_early(self, now: float) -> bool:
        """183 with SDP sent/received."""
        if self.call_state in (CallState.DOWN, CallState.DIALING, CallState.RINGING):
            self.set_call_state(CallState.EARLY)
            self.progress_at = self.progress_at or now
            self.progress_media_at = now
            return True
        return False

    def mark_answered(self, now: float) -> bool:
        if self.is_hungup:
            raise ChannelStateError(f"{self.uuid}: answer after hangup")
        if self.answered_at is not None:
            return False
        self.set_call_state(CallState.ACTIVE)
        self.answered_at = now
        return True

    def mark_hangup(self, cause: Cause, now: float) -> bool:
        """Enter CS_HANGUP with ``cause``. False when already hung up (first cause wins)."""
        if self.is_hungup:
            return False
        self.hangup_cause = cause
        self.hangup_at = now
        self.set_state(ChannelState.CS_HANGUP)
        self.set_call_state(CallState.HANGUP)
        return True

    # --- durations (CHANNEL_HANGUP_COMPLETE variables, switch_channel_set_timestamps) ----
    def durations(self, now: float | None = None) -> dict[str, float]:
        end = self.hangup_at if self.hangup_at is not None else (now or self.created_at)
        answered = self.answered_at
        return {
            "duration": max(0.0, end - self.created_at),
            "billsec": max(0.0, end - answered) if answered else 0.0,
            "progresssec": (self.progress_at - self.created_at) if self.progress_at else 0.0,
            "answersec": (answered - self.created_at) if answered else 0.0,
            "waitsec": (answered - self.created_at) if answered else 0.0,
            "progress_mediasec": (self.progress_media_at - self.created_at)
            if self.progress_media_at
            else 0.0,
        }

    # --- event headers (switch_channel.c) ----------------------------------------------
    def snapshot(self, with_variables: bool) -> Channel:
        """A frozen-in-time copy for an event rendered later (cheap: no header strings)."""
        snap = object.__new__(Channel)
        snap.__dict__.update(self.__dict__)
        snap.profile = object.__new__(CallerProfile)
        snap.profile.__dict__.update(self.profile.__dict__)
        snap.variables = dict(self.variables) if with_variables else {}
        return snap

    def event_headers(self, *, with_variables: bool) -> dict[str, str]:
        """Channel headers, ``Caller-*`` profile, and ``variable_*`` when ``with_variables``."""
        p = self.profile
        h: dict[str, str] = {
            "Channel-State": self.state.name,
            "Channel-Call-State": self.call_state.value,
            "Channel-State-Number": str(self.state.value),
            "Channel-Name": self.name,
            "Unique-ID": self.uuid,
            "Call-Direction": self.direction,
            "Presence-Call-Direction": self.direction,
            "Channel-HIT-Dialplan": "true" if self.direction == "inbound" else "false",
            "Channel-Call-UUID": self.uuid,
            "Answer-State": self.answer_state,
        }
        if self.hangup_cause is not None:
            h["Hangup-Cause"] = self.hangup_cause.name
        h.update(
            {
                "Channel-Read-Codec-Name": self.read_codec,
                "Channel-Read-Codec-Rate": str(self.codec_rate),
                "Channel-Read-Codec-Bit-Rate": "64000",
                "Channel-Write-Codec-Name": self.read_codec,
                "Channel-Write-Codec-Rate": str(self.codec_rate),
                "Channel-Write-Codec-Bit-Rate": "64000",
                "Caller-Direction": self.direction,
                "Caller-Logical-Direction": self.direction,
                "Caller-Username": p.username,
                "Caller-Dialplan": p.dialplan,
                "Caller-Caller-ID-Name": p.caller_id_name,
                "Caller-Caller-ID-Number": p.caller_id_number,
                "Caller-Orig-Caller-ID-Name": p.caller_id_name,
                "Caller-Orig-Caller-ID-Number": p.caller_id_number,
                "Caller-Callee-ID-Name": p.callee_id_name,
                "Caller-Callee-ID-Number": p.callee_id_number,
                "Caller-Network-Addr": p.network_addr,
                "Caller-ANI": p.ani or p.caller_id_number,
                "Caller-Destination-Number": p.destination_number,
                "Caller-Unique-ID": self.uuid,
                "Caller-Source": p.source,
                "Caller-Context": p.context,
                "Caller-RDNIS": p.rdnis,
                "Caller-Channel-Name": self.name,
                "Caller-Profile-Index": "1",
                "Caller-Profile-Created-Time": _us(self.created_at),
                "Caller-Channel-Created-Time": _us(self.created_at),
                "Caller-Channel-Answered-Time": _us(self.answered_at),
                "Caller-Channel-Progress-Time": _us(self.progress_at),
                "Caller-Channel-Progress-Media-Time": _us(self.progress_media_at),
                "Caller-Channel-Hangup-Time": _us(self.hangup_at),
                "Caller-Channel-Transfer-Time": "0",
                "Caller-Channel-Resurrect-Time": "0",
                "Caller-Channel-Bridged-Time": _us(self.bridged_at),
                "Caller-Channel-Last-Hold": "0",
                "Caller-Channel-Hold-Accum": "0",
            }
        )
        if self.other_leg:
            h["Other-Type"] = "originatee" if self.direction == "inbound" else "originator"
            h["Other-Leg-Unique-ID"] = self.other_leg
        if with_variables:
            for k, v in self.variables.items():
                h[f"variable_{k}"] = v
        return h
