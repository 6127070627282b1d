"""The CDR of a call leg the router ended because its media node was lost with its box.

Pure: the proxy (router/proxy.py ``Proxy._end_lost_nodes``) ends the leg and hands its
:class:`~switchboard.router.proxy.FarEnd` to the service, which builds the record here
and stores it with the nodes' own writer (billing/writer.py: batched COPY, spooled while
the database is away). docs/router.md "A media node lost with its box".

Identity: a media node's tag names its channel (sip/ids.py ``leg_tag``): the To tag of
the 2xx it sent for a dispatched call (its inbound leg), the From tag of the INVITE it
placed through the router (its outbound leg, with the A-leg's uuid). The CDR's
``call_id`` is that channel uuid — the key billing deduplicates on (``cdr_seen``) — so
whichever of the router's record and a record the node writes later (its box came back
and its journal ended the call, or a partition healed and the node ended it on
``rtp_timeout``) reaches the database first is the leg's only CDR; the other is dropped
as a duplicate. A leg whose tag names no channel (a node of another kind, a client's own
``origination_uuid``) gets no CDR from the router: billing it under another key could
bill it twice.

Nothing here is read per call: the raw lines the proxy kept are parsed only for a leg
that is ended this way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from switchboard.billing.cdr import Cdr
from switchboard.sip.ids import leg_of_tag

if TYPE_CHECKING:
    from switchboard.router.proxy import FarEnd

# What the router's BYE says (Reason: Q.850;cause=38), as the node's reaper does.
HANGUP_CAUSE = "NETWORK_OUT_OF_ORDER"


def _value(line: bytes) -> str:
    return line.partition(b":")[2].strip().decode("utf-8", "replace")


def _tag(line: bytes) -> str:
    """The ``tag`` parameter of a From/To line (after the URI's closing ``>``, if any)."""
    value = _value(line)
    gt = value.find(">")
    params = value[gt + 1 :] if gt >= 0 else value.partition(";")[2]
    for param in params.split(";"):
        name, _, val = param.partition("=")
        if name.strip().lower() == "tag":
            return val.strip()
    return ""


def _user(uri: str) -> str:
    """The user part of a SIP URI (``sip:USER@host;...``), or "" when it has none."""
    scheme, colon, rest = uri.partition(":")
    if not colon or scheme.strip().lower() not in ("sip", "sips", "tel"):
        return ""
    if scheme.strip().lower() == "tel":
        return rest.partition(";")[0]
    user, at, _ = rest.partition("@")
    return user.partition(";")[0] if at else ""


def _line_user(line: bytes) -> str:
    """The user of a From/To line's URI."""
    value = _value(line)
    lt = value.find("<")
    if lt >= 0:
        return _user(value[lt + 1 : value.find(">", lt)])
    return _user(value.partition(";")[0])


def _request_uri(request_line: bytes) -> str:
    parts = request_line.decode("utf-8", "replace").split(" ")
    return parts[1] if len(parts) >= 3 else ""


def _hostport(text: str) -> str:
    """``host:port`` lower-case, port 5060 when none is named (IPv6 in brackets)."""
    text = text.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        host, port = text[: end + 1], text[end + 2 :]
    else:
        host, _, port = text.partition(":")
    return f"{host}:{port or '5060'}"


def carrier_of(request_line: bytes, gateways: Mapping[str, str]) -> str:
    """The ``[gateways.NAME]`` whose proxy (``host:port``) an outbound leg's INVITE was
    addressed to: the CDR's carrier (what its buy side is priced by), or ""."""
    rest = _request_uri(request_line).partition(":")[2]
    target = _hostport(rest.rpartition("@")[2].partition(";")[0].partition("?")[0])
    for name, proxy in gateways.items():
        if _hostport(proxy) == target:
            return name
    return ""


def leg_cdr(
    fe: FarEnd,
    ended: float,
    wall_offset: float,
    *,
    node: str,
    gateways: Mapping[str, str] | None = None,
    prefixes: Mapping[str, str] | None = None,
) -> Cdr | None:
    """The CDR of the node's leg of ``fe``, ended by the router at ``ended`` — or when its
    far end's BYE arrived, if one went unanswered (``fe.bye_at``) — on the proxy's
    clock (``wall_offset`` turns it into Unix time). None when the node's tag names no
    channel. An outbound leg's destination is its INVITE's user less its gateway's
    ``prefix`` (``prefixes``: gateway name -> prefix)."""
    if fe.to_caller:  # a dispatched call: the node's inbound leg, its tag in the 2xx's To
        ids = leg_of_tag(_tag(fe.to_line))
        direction = "inbound"
    else:  # a call the node placed: its outbound leg, its tag in the INVITE's From
        ids = leg_of_tag(_tag(fe.from_line))
        direction = "outbound"
    if ids is None:
        return None
    uuid, a_leg = ids
    destination = _user(_request_uri(fe.request_line))
    carrier = ""
    if not fe.to_caller:
        carrier = carrier_of(fe.request_line, gateways or {})
        prefix = (prefixes or {}).get(carrier, "")
        if prefix and destination.startswith(prefix):
            destination = destination[len(prefix) :]
    trunk = fe.trunk
    start = datetime.fromtimestamp(fe.started + wall_offset, UTC)
    answer = datetime.fromtimestamp(fe.created + wall_offset, UTC)
    # a far end that hung up meanwhile (its BYE unanswered by the lost node) ended its leg
    # then; the others end at the router's BYE
    end = datetime.fromtimestamp(max(fe.bye_at or ended, fe.created) + wall_offset, UTC)
    return Cdr.from_times(
        uuid,
        start,
        end,
        answer,
        caller_id=_line_user(fe.caller_line),
        destination=destination,
        sip_code=200,
        hangup_cause=HANGUP_CAUSE,
        account=trunk.account if trunk is not None else "",
        carrier=carrier,
        direction=direction,
        node=node,
        sip_call_id=fe.call_id.decode("utf-8", "replace"),
        originating_leg=a_leg,
        trunk=trunk.name if trunk is not None else "",
    )
