"""The operator's web login link: a short-lived, single-use token signed with the operator key.

``hotline ops web`` mints ``<origin>/ops/login?t=<token>``; the relay verifies the token
against its configured ``[operators]`` keys, remembers the nonce until the expiry (so the
link works once) and answers with a session cookie. Format (keys/PROTOCOL.md, "Operator web
login link"): ``token = base64url(msgpack([body: bin, sig: bin(64)]))`` without padding,
``body = msgpack({v: 1, operator, origin, expires_at, nonce: bin(16)})`` and ``sig`` an
Ed25519 signature by the operator key over ``Domain.OPERATOR_WEB_LOGIN || body``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from urllib.parse import quote

import nacl.signing

from keys import codec, signed
from keys.codec import blob, text, timestamp, version
from keys.errors import MalformedInput
from keys.frames import OPERATOR_RE
from keys.primitives import Domain

LOGIN_NONCE_BYTES = 16
#: Longest lifetime a relay accepts for a link (the nonce is remembered that long).
MAX_LINK_TTL_MS = 15 * 60 * 1000
DEFAULT_LINK_TTL_MS = 5 * 60 * 1000
MAX_ORIGIN_CHARS = 256
#: base64url of the largest valid token, with room to spare; longer input is refused unread.
MAX_TOKEN_CHARS = 1024
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")
_SPEC: dict[str, codec.Check] = {
    "v": version(1),
    "operator": text(40, pattern=OPERATOR_RE),
    "origin": text(MAX_ORIGIN_CHARS, min_chars=1),
    "expires_at": timestamp,
    "nonce": blob(size=LOGIN_NONCE_BYTES),
}


@dataclass(frozen=True, slots=True)
class WebLogin:
    """A decoded login token; ``signed`` is what the signature covers, as received."""

    operator: str
    origin: str
    expires_at: int
    nonce: bytes
    signed: signed.SignedBytes

    def verify(self, key: bytes | nacl.signing.VerifyKey) -> None:
        """Raise BadSignature unless ``key`` signed this token."""
        self.signed.verify(key, Domain.OPERATOR_WEB_LOGIN, signer=f"operator {self.operator}")


def mint(key: nacl.signing.SigningKey, *, operator: str, origin: str, expires_at: int,
         nonce: bytes) -> str:
    """The token (base64url, no padding) for ``operator`` at ``origin`` until ``expires_at``."""
    body = {"v": 1, "operator": operator, "origin": normalize_origin(origin),
            "expires_at": expires_at, "nonce": nonce}
    fields = codec.fields(body, _SPEC, "web login")  # refuse what the relay would refuse
    doc = signed.make(key, Domain.OPERATOR_WEB_LOGIN, fields)
    return base64.urlsafe_b64encode(doc.encode()).rstrip(b"=").decode()


def link(origin: str, token: str) -> str:
    return f"{normalize_origin(origin)}/ops/login?t={quote(token, safe='')}"


def normalize_origin(origin: str) -> str:
    """The relay URL as desks and operators bind signatures to it: no trailing slash."""
    return origin.rstrip("/")


def parse(token: str) -> WebLogin:
    """Decode a token's shape and fields (not its signature: see WebLogin.verify)."""
    if len(token) > MAX_TOKEN_CHARS or not _B64URL_RE.fullmatch(token):
        raise MalformedInput("the login token is not base64url text of a sensible length",
                             code="malformed")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except binascii.Error as exc:  # a length no base64 text has (4n + 1)
        raise MalformedInput("the login token is not valid base64url", code="malformed"
                             ) from exc
    doc, value = signed.split(raw, what="web login", max_bytes=MAX_TOKEN_CHARS)
    f = codec.fields(value, _SPEC, "web login")
    return WebLogin(f["operator"], f["origin"], f["expires_at"], f["nonce"], doc)
