"""Registrar for the node's users (RFC 3261 §10.3) with digest authentication.

``[users.<id>] password = "..."`` defines who may register. A REGISTER is challenged
(401 with SHA-256 and MD5 ``WWW-Authenticate``), then verified; its Contacts are bound
with their expiry (Contact ``expires`` param, else ``Expires`` header, else 3600,
clamped to [min_expires, max_expires]; 423 Interval Too Brief below min). ``Contact: *``
with ``Expires: 0`` removes every binding. The 200 lists the current bindings.

Time is a parameter (``now``, seconds on the node's clock).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from switchboard.media import digest
from switchboard.sip.message import Request, Response, make_response
from switchboard.sip.uri import NameAddr

log = logging.getLogger(__name__)

DEFAULT_EXPIRES = 3600
MIN_EXPIRES = 10
MAX_EXPIRES = 7200


@dataclass
class Binding:
    contact: NameAddr
    expires_at: float
    source: tuple[str, str, int]  # transport, host, port the REGISTER came from
    call_id: str
    cseq: int


@dataclass
class Registrar:
    users: Mapping[str, str]  # user id → password
    realm: str = "switchboard"
    secret: bytes = field(default_factory=lambda: os.urandom(16))
    min_expires: int = MIN_EXPIRES
    max_expires: int = MAX_EXPIRES
    algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    bindings: dict[str, dict[str, Binding]] = field(default_factory=dict)
    _decoy: str = field(default_factory=lambda: os.urandom(12).hex(), repr=False)

    def contacts(self, user: str, now: float) -> list[Binding]:
        """Live bindings of ``user`` (expired ones are dropped here)."""
        live = {k: b for k, b in self.bindings.get(user, {}).items() if b.expires_at > now}
        if live:
            self.bindings[user] = live
        else:
            self.bindings.pop(user, None)
        return list(live.values())

    def handle(
        self, request: Request, source: tuple[str, str, int], now: float, *, to_tag: str
    ) -> Response:
        """Answer one REGISTER (401 / 403 / 423 / 400 / 200); an unknown user gets the
        401s and the 403 a known user with a wrong password gets."""
        user = request.to.uri.user or ""
        # No user enumeration (Asterisk's alwaysauthreject): an unknown user is challenged
        # and refused exactly like a known one with a wrong password — same responses,
        # same headers, and the same digest computed (against a random decoy password),
        # so neither the answer nor its timing tells whether the user exists.
        password = self.users.get(user)
        auth_value = request.headers.get("Authorization")
        creds = digest.parse_authorization(auth_value) if auth_value else None
        if creds is None or creds.username != user or creds.realm != self.realm:
            return self._challenge(request, now, to_tag, stale=False)
        if not digest.nonce_valid(self.secret, creds.nonce, now):
            return self._challenge(request, now, to_tag, stale=True)
        ok = digest.verify(creds, method="REGISTER", password=password or self._decoy)
        if not ok or password is None:
            log.warning("REGISTER for %s from %s:%s: authentication failed", user, *source[1:])
            return make_response(request, 403, "Forbidden", to_tag=to_tag)
        header_expires = request.headers.get("Expires")
        default = DEFAULT_EXPIRES
        if header_expires is not None:
            if not header_expires.strip().isdigit():
                return make_response(request, 400, "Bad Expires", to_tag=to_tag)
            default = int(header_expires)
        if request.is_star_contact:
            if default != 0:
                return make_response(request, 400, "Bad Request", to_tag=to_tag)
            self.bindings.pop(user, None)
            return make_response(request, 200, "OK", to_tag=to_tag)
        table = self.bindings.setdefault(user, {})
        for c in request.contacts:
            expires = c.expires if c.expires is not None else default
            key = str(c.uri)
            if expires == 0:
                table.pop(key, None)
                continue
            if expires < self.min_expires:
                resp = make_response(request, 423, "Interval Too Brief", to_tag=to_tag)
                resp.headers.add("Min-Expires", str(self.min_expires))
                return resp
            expires = min(expires, self.max_expires)
            table[key] = Binding(
                NameAddr(None, c.uri, {}), now + expires, source, request.call_id, request.cseq.seq
            )
        resp = make_response(request, 200, "OK", to_tag=to_tag)
        for b in self.contacts(user, now):
            resp.headers.add("Contact", f"<{b.contact.uri}>;expires={int(b.expires_at - now)}")
        return resp

    def _challenge(self, request: Request, now: float, to_tag: str, *, stale: bool) -> Response:
        resp = make_response(request, 401, "Unauthorized", to_tag=to_tag)
        nonce = digest.make_nonce(self.secret, now)
        for value in digest.challenge(self.realm, nonce, stale=stale, algorithms=self.algorithms):
            resp.headers.add("WWW-Authenticate", value)
        return resp
