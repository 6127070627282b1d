"""No user enumeration: an unknown user is answered exactly like a known user with a wrong
password (Asterisk's alwaysauthreject), apart from the nonce and the To tag."""

from __future__ import annotations

import re

from switchboard.media import digest
from switchboard.media.registrar import Registrar
from switchboard.sip.message import Request, Response

SRC = ("UDP", "192.0.2.7", 5070)


def register(user: str, auth: str | None = None) -> Request:
    headers = [("Expires", "600")]
    if auth:
        headers.append(("Authorization", auth))
    return Request.build(
        "REGISTER",
        "sip:switchboard",
        via="SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bKabc",
        from_=f"<sip:{user}@switchboard>;tag=a1",
        to=f"<sip:{user}@switchboard>",
        call_id="reg-1",
        cseq=1,
        contact=f"<sip:{user}@192.0.2.7:5070>",
        headers=headers,
    )


def guess(reg: Registrar, user: str, password: str) -> tuple[Response, Response]:
    first = reg.handle(register(user), SRC, 100.0, to_tag="t")
    [challenge] = first.headers.get_all("WWW-Authenticate")
    auth = digest.authorization(
        challenge, method="REGISTER", uri="sip:switchboard", username=user,
        password=password, cnonce="c0ffee",
    )  # fmt: skip
    assert auth is not None
    return first, reg.handle(register(user, auth), SRC, 100.5, to_tag="t")


def shape(resp: Response, user: str) -> bytes:
    """The response with the nonce and the user name blanked: what may legitimately differ."""
    text = resp.to_bytes().replace(user.encode(), b"USER")
    return re.sub(rb'nonce="[^"]*"', b'nonce="N"', text)


def test_unknown_user_answered_like_a_wrong_password() -> None:
    reg = Registrar({"1000": "secret"}, secret=b"k" * 16, algorithms=("MD5",))
    known_challenge, known_refusal = guess(reg, "1000", "wrong")
    unknown_challenge, unknown_refusal = guess(reg, "1999", "wrong")
    assert known_challenge.status == unknown_challenge.status == 401
    assert known_refusal.status == unknown_refusal.status == 403
    assert shape(known_challenge, "1000") == shape(unknown_challenge, "1999")
    assert shape(known_refusal, "1000") == shape(unknown_refusal, "1999")
    # an unknown user cannot register whatever the password (the decoy is never accepted)
    assert guess(reg, "1999", reg._decoy)[1].status == 403
    assert reg.contacts("1999", 101.0) == []
    # and the known user with the right password still can
    assert guess(reg, "1000", "secret")[1].status == 200
