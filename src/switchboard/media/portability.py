"""Number portability in the call path of a media node (docs/compliance.md, "Number
portability").

With ``[billing] portability = true`` every inbound leg whose destination is a number is
looked up in ``ported_number`` when the dialplan has routed it, before its applications
run (a setup hook, ahead of credit control): an ``await`` on the cached asynchronous
:class:`~switchboard.billing.portability.PortabilityLookup`, never a blocking query. The
A-leg gets

* ``switchboard_portability_number``: the digits looked up (the dip was made), and
* ``switchboard_routing_number``: the routing number when the number is ported.

Credit control then prices the call by the routing number, the leg's CDR carries it
(rating uses it), and a bridge to a gateway leg for that same number applies the gateway's
``portability`` mode to the Request-URI (:func:`request_user`) and copies the routing
number to the B-leg for its CDR.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from switchboard.media.cdr import ROUTING_NUMBER_VAR
from switchboard.rating.portability import canonical

if TYPE_CHECKING:
    from switchboard.billing.portability import PortabilityLookup
    from switchboard.media.core import Session, Switch

log = logging.getLogger(__name__)

LOOKED_UP_VAR = "switchboard_portability_number"


def request_user(number: str, looked_up: str, routing: str | None, mode: str) -> str:
    """The Request-URI user part for a gateway leg dialling ``number``.

    ``looked_up`` is the canonical number the A-leg's dip was made for and ``routing`` its
    routing number (None: not ported). Only a leg for that same number is changed:

    * ``rn`` (RFC 4694 §4): ``npdi`` says the dip was made, ``rn`` names the routing
      number, in the number's own form (global ``+`` numbers get a global ``rn``);
      parameters in lexicographic order (RFC 3966 §5.4 ordering used by RFC 4694's
      examples): ``+4930123;npdi;rn=+4915199``; a number not ported gets ``;npdi`` only;
    * ``prefix``: the routing number before the number's digits (``49151994930123``) for a
      ported number, the number unchanged otherwise;
    * ``off``: unchanged.
    """
    if mode == "off" or not looked_up or canonical(number) != looked_up:
        return number
    if mode == "prefix":
        return routing + number.lstrip("+") if routing else number
    glob = "+" if number.startswith("+") else ""
    return f"{number};npdi" + (f";rn={glob}{routing}" if routing else "")


class CallPortability:
    """The setup hook (module docstring)."""

    def __init__(self, switch: Switch, lookup: PortabilityLookup) -> None:
        self.switch = switch
        self.lookup = lookup

    def install(self) -> None:
        self.switch.setup_hooks.append(self.on_setup)

    async def on_setup(self, s: Session) -> None:
        ch = s.channel
        if ch.direction != "inbound":
            return
        digits = canonical(ch.profile.destination_number)
        if digits is None:
            return  # echo, ivr, conf-*: not numbers
        routing = await self.lookup.routing_number(digits)
        ch.set_var(LOOKED_UP_VAR, digits)
        if routing is not None:
            ch.set_var(ROUTING_NUMBER_VAR, routing)
            log.info("call %s: %s is ported, routing number %s", s.uuid, digits, routing)
