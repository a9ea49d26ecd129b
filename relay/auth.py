"""Desk authentication without passwords (S7): challenge, signature, short-lived session.

1. A desk asks for a challenge: a 32-byte nonce, single use, valid ``challenge_ttl_s``.
2. It signs ``Domain.AUTH || msgpack([origin, desk, ik_kid, nonce, ts])`` with its identity
   key and sends that with its desk card; the relay verifies the card's chain against the
   pinned root (revocations included) and the signature.
3. The relay issues an opaque 256-bit token, keeps only its hash, bound to (desk, key id),
   valid ``session_ttl_s``. A revocation of the key ends its sessions at once.

Nothing here awaits or reads a clock: ``now`` is passed in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from keys import DeskCard, TrustStore, VerifiedDesk
from keys.errors import HotlineError
from keys.frames import (
    NONCE_BYTES,
    TOKEN_BYTES,
    Challenge,
    OperatorSessionRequest,
    SessionRequest,
    auth_message,
    operator_auth_message,
)
from keys.primitives import Domain, blake2b, verify
from keys.weblogin import MAX_LINK_TTL_MS, WebLogin, normalize_origin
from relay.errors import RelayError

#: A client clock this far from ours still logs in; the nonce is what prevents replay.
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
MAX_OPEN_CHALLENGES = 100_000


@dataclass(frozen=True, slots=True)
class DeskSession:
    desk: str
    verified: VerifiedDesk
    card: bytes
    #: The desk certificate, as sent in events so peers can verify this desk's signatures.
    verified_cert: bytes
    expires_at: int


@dataclass(frozen=True, slots=True)
class OperatorSession:
    operator: str
    expires_at: int


class Authenticator:
    def __init__(self, *, relay_id: str, origin: str, trust: TrustStore,
                 challenge_ttl_ms: int, session_ttl_ms: int,
                 operators: dict[str, bytes] | None = None) -> None:
        self.relay_id = relay_id
        self.origin = origin
        self.trust = trust
        self.challenge_ttl_ms = challenge_ttl_ms
        self.session_ttl_ms = session_ttl_ms
        self._challenges: dict[bytes, tuple[str, int]] = {}
        self._sessions: dict[bytes, DeskSession] = {}
        self.operators = dict(operators or {})
        self._operator_sessions: dict[bytes, OperatorSession] = {}

    def challenge(self, desk: str, now: int) -> Challenge:
        if len(self._challenges) >= MAX_OPEN_CHALLENGES:
            self._expire(now)
            if len(self._challenges) >= MAX_OPEN_CHALLENGES:
                raise RelayError(
                    429, "rate_limited", "too many open challenges; retry shortly", retry_after=1.0
                )
        nonce = os.urandom(NONCE_BYTES)
        expires = now + self.challenge_ttl_ms
        self._challenges[nonce] = (desk, expires)
        return Challenge(self.relay_id, self.origin, nonce, expires)

    def login(self, req: SessionRequest, now: int) -> tuple[bytes, DeskSession]:
        """Verify a challenge answer; return the new token and its session."""
        entry = self._challenges.pop(req.nonce, None)  # single use, whatever happens next
        if entry is None or entry[0] != req.desk or entry[1] < now:
            raise RelayError(
                401, "bad_challenge", "the challenge is unknown, used, expired or for another desk"
            )
        if abs(req.ts - now) > MAX_CLOCK_SKEW_MS:
            raise RelayError(
                401,
                "bad_challenge",
                f"the login timestamp is {abs(req.ts - now)} ms from the relay's clock",
            )
        card = DeskCard.decode(req.card)
        if card.desk != req.desk:
            raise RelayError(401, "bad_challenge", "the card is for another desk")
        verified = self.trust.verify_card(card, now)
        try:
            verify(
                verified.identity_key,
                b"",
                auth_message(self.origin, req.desk, verified.ik_kid, req.nonce, req.ts),
                req.signature,
                signer=f"desk {req.desk}",
            )
        except HotlineError as exc:
            raise RelayError(
                401, "bad_challenge", "the challenge signature does not verify for this relay"
            ) from exc
        token = os.urandom(TOKEN_BYTES)
        expires = min(now + self.session_ttl_ms, verified.not_after)
        session = DeskSession(req.desk, verified, req.card, card.cert.encode(), expires)
        self._sessions[_hash(token)] = session
        return token, session

    def session(self, token: bytes, now: int) -> DeskSession:
        session = self._sessions.get(_hash(token))
        if session is None:
            raise RelayError(401, "unauthorized", "unknown or expired session; log in again")
        if session.expires_at <= now:
            del self._sessions[_hash(token)]
            raise RelayError(401, "unauthorized", "the session expired; log in again")
        if self.trust.is_revoked(session.desk, session.verified.ik_kid):
            del self._sessions[_hash(token)]
            raise RelayError(401, "unauthorized", "the desk's key has been revoked")
        return session

    def operator_login(self, req: OperatorSessionRequest, now: int
                       ) -> tuple[bytes, OperatorSession]:
        """Operators log in like desks, with a key the relay's configuration grants."""
        entry = self._challenges.pop(req.nonce, None)
        key = self.operators.get(req.operator)
        if entry is None or entry[0] != f"operator:{req.operator}" or entry[1] < now:
            raise RelayError(401, "bad_challenge",
                             "the challenge is unknown, used, expired or for someone else")
        if key is None:
            raise RelayError(403, "forbidden", f"{req.operator!r} is not an operator here")
        if abs(req.ts - now) > MAX_CLOCK_SKEW_MS:
            raise RelayError(401, "bad_challenge", "the login timestamp is too far off")
        try:
            verify(key, b"", operator_auth_message(self.origin, req.operator, req.nonce,
                                                   req.ts),
                   req.signature, signer=f"operator {req.operator}")
        except HotlineError as exc:
            raise RelayError(401, "bad_challenge", "the operator signature does not verify"
                             ) from exc
        return self.open_operator_session(req.operator, now)

    def check_web_login(self, login: WebLogin, now: int) -> None:
        """Refuse a web login link not signed for this relay by a configured operator key,
        or expired. Single use is the caller's part (the nonce, kept in the store)."""
        if normalize_origin(login.origin) != normalize_origin(self.origin):
            raise RelayError(401, "bad_login", f"the link is for {login.origin[:100]!r}; "
                             f"this relay is {self.origin!r}")
        key = self.operators.get(login.operator)
        if key is None:
            raise RelayError(403, "forbidden", f"{login.operator!r} is not an operator here")
        try:
            login.verify(key)
        except HotlineError as exc:
            raise RelayError(401, "bad_login", "the link's signature does not verify for "
                             f"operator {login.operator}") from exc
        if login.expires_at <= now:
            raise RelayError(401, "login_expired", "the login link expired; mint a new one "
                             "with 'hotline ops web'")
        if login.expires_at - now > MAX_LINK_TTL_MS + MAX_CLOCK_SKEW_MS:
            raise RelayError(401, "bad_login", "the link expires too far ahead (at most "
                             f"{MAX_LINK_TTL_MS // 60_000} minutes)")

    def open_operator_session(self, operator: str, now: int) -> tuple[bytes, OperatorSession]:
        token = os.urandom(TOKEN_BYTES)
        session = OperatorSession(operator, now + self.session_ttl_ms)
        self._operator_sessions[_hash(token)] = session
        return token, session

    def operator_session(self, token: bytes, now: int) -> OperatorSession:
        session = self._operator_sessions.get(_hash(token))
        if session is None or session.expires_at <= now or (
                session.operator not in self.operators):
            raise RelayError(401, "unauthorized", "not an operator session; log in again")
        return session

    def revoke_sessions(self, desk: str, ik_kid: bytes) -> int:
        gone = [h for h, s in self._sessions.items()
                if s.desk == desk and s.verified.ik_kid == ik_kid]
        for h in gone:
            del self._sessions[h]
        return len(gone)

    def _expire(self, now: int) -> None:
        for nonce in [n for n, (_, exp) in self._challenges.items() if exp < now]:
            del self._challenges[nonce]
        for h in [h for h, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[h]
        for h in [h for h, o in self._operator_sessions.items() if o.expires_at <= now]:
            del self._operator_sessions[h]

    def sweep(self, now: int) -> None:
        self._expire(now)


def _hash(token: bytes) -> bytes:
    return blake2b(token, size=32, person=b"hotline-token")


__all__ = ["Authenticator", "DeskSession", "Domain"]
