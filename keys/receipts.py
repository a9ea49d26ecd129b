"""Signed statements about a notice after it was sealed.

* :class:`Confirmation`: a recipient's delivery receipt (``kind="receipt"``: the client
  received and verified the notice) or acknowledgement (``kind="ack"``: a person or system
  confirmed it), signed by the recipient's identity key and bound to one notice digest,
  one sender and one recipient (S5, S6). An acknowledgement may carry a short message,
  sealed to the sender's encryption key.
* :class:`Rejection`: a recipient's signed statement that it could not open a notice, for
  a reason the sender's own signed bytes prove to be the sender's (a key wrapped for this
  recipient that does not match the commitment, content that does not decrypt or verify).
  It tells the sender at once; it does not stop the escalation ladder.
* :class:`Attestation`: what the relay attests (accepted, delivered, acknowledged,
  rejected, escalated, resolved) signed by the relay key, which certifies nobody.
* :class:`RelayCard`: the relay's self-signed public key, pinned by fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nacl.signing

from keys import codec, xwing
from keys.codec import blob, fields, nullable, one_of, record, text, timestamp, uint, version
from keys.errors import BadSignature, DecryptionFailed, NotIntendedRecipient
from keys.ids import KEY_ID_BYTES, NOTICE_ID_BYTES, DeskId, check_desk
from keys.primitives import (
    Domain,
    Random,
    check_public_key,
    equal,
    key_id,
    open_sealed,
    seal_to,
    system_random,
)
from keys.secrets import DeskSecrets
from keys.signed import SignedBytes, make, split
from keys.trust import VerifiedDesk

MAX_STATEMENT_BYTES = 16 * 1024
MAX_ACK_MESSAGE_CHARS = 2000
CONFIRMATION_KINDS = ("receipt", "ack")
ATTESTATION_EVENTS = ("accepted", "delivered", "acknowledged", "escalated", "resolved", "responded",
                      "rejected")
#: Why a recipient could not open a notice, each provably the sender's fault and invisible
#: to the relay (which sees no plaintext and holds no recipient key): the step of
#: ``open_envelope`` that failed after the sender's outer signature held.
REJECTION_REASONS = (
    "stanza_unwrap_failed",  # our stanza does not open with the key it names
    "key_commitment_mismatch",  # the key wrapped for us is not the committed one
    "aead_failed",  # the ciphertext does not decrypt under the committed key
    "malformed_content",  # the decrypted content or report breaks the schema
    "not_intended_recipient",  # the signed content does not name us (forwarded)
    "inner_outer_mismatch",  # the signed content's routing differs from the header's
    "inner_signature_invalid",  # the inner signature does not verify
)
_DOMAINS = {"receipt": Domain.RECEIPT, "ack": Domain.ACK}
_nid = blob(size=NOTICE_ID_BYTES, nonzero=True)
_digest = blob(size=32)
_kid = blob(size=KEY_ID_BYTES)


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A recipient's signed receipt or acknowledgement of one notice."""

    kind: str
    notice_id: bytes
    digest: bytes
    sender: DeskId  # the notice's sender, to whom this confirmation is addressed
    recipient: DeskId  # the desk that signed this confirmation
    recipient_kid: bytes
    at: int
    message: dict[str, bytes] | None
    signed: SignedBytes
    #: An acknowledgement made by the recipient's client itself (a link test's answer),
    #: not by a person: the sender sees it, signed, and never counts it as a person's.
    automatic: bool = False

    @classmethod
    def create(
        cls,
        kind: str,
        *,
        notice_id: bytes,
        digest: bytes,
        sender: DeskId,
        me: DeskSecrets,
        at: int,
        message: str | None = None,
        sender_keys: VerifiedDesk | None = None,
        random: Random = system_random,
        automatic: bool = False,
    ) -> Confirmation:
        if kind not in CONFIRMATION_KINDS:
            raise ValueError(f"confirmation kind must be one of {', '.join(CONFIRMATION_KINDS)}")
        if automatic and kind != "ack":
            raise ValueError("only an acknowledgement is marked automatic")
        sealed: dict[str, bytes] | None = None
        if message is not None:
            if kind != "ack":
                raise ValueError("only an acknowledgement carries a message")
            if len(message.encode()) > 4 * MAX_ACK_MESSAGE_CHARS:
                raise ValueError("ack message is too long")
            if len(message) > MAX_ACK_MESSAGE_CHARS:
                raise ValueError(f"ack message is over {MAX_ACK_MESSAGE_CHARS} characters")
            if sender_keys is None:
                raise ValueError("sealing an ack message needs the sender's verified keys")
            ek_kid, ek = sender_keys.current_encryption_key
            plain = codec.pack([notice_id, me.desk, message])
            if len(ek) == xwing.PUBLIC_KEY_BYTES:
                # A sender with a hybrid key gets the message under X-Wing too (no downgrade).
                kem_ct, wrapped = xwing.seal(
                    ek, plain, _ack_context(notice_id, ek_kid, me.desk), random=random
                )
                sealed = {"ek_kid": ek_kid, "sealed": kem_ct + wrapped}
            else:
                sealed = {"ek_kid": ek_kid, "sealed": seal_to(ek, plain, random=random)}
        body = {
            "v": 1,
            "type": kind,
            "notice_id": notice_id,
            "digest": digest,
            "to": sender,
            "from": me.desk,
            "from_kid": me.ik_kid,
            "at": at,
            "message": sealed,
        }
        if automatic:
            # Present only when true: an ack without it is byte-identical to before.
            body["automatic"] = True
        return cls(
            kind,
            notice_id,
            digest,
            sender,
            me.desk,
            me.ik_kid,
            at,
            sealed,
            make(me.identity, _DOMAINS[kind], body),
            automatic,
        )

    @classmethod
    def decode(cls, data: bytes) -> Confirmation:
        signed, value = split(data, what="confirmation", max_bytes=MAX_STATEMENT_BYTES)
        automatic = False
        if isinstance(value, dict) and "automatic" in value:
            # The one optional field: when present it is `true` (absent means false, so
            # each ack has one encoding), and only on an acknowledgement.
            if value["automatic"] is not True:
                codec.fail("bad_value", "confirmation.automatic is present only as true")
            if value.get("type") != "ack":
                codec.fail("bad_value", "only an acknowledgement is marked automatic")
            value = {k: v for k, v in value.items() if k != "automatic"}
            automatic = True
        f = fields(
            value,
            {
                "v": version(1),
                "type": one_of(CONFIRMATION_KINDS),
                "notice_id": _nid,
                "digest": _digest,
                "to": check_desk,
                "from": check_desk,
                "from_kid": _kid,
                "at": timestamp,
                "message": nullable(
                    record(
                        {"ek_kid": _kid, "sealed": blob(
                            max_size=4 * MAX_ACK_MESSAGE_CHARS + 200 + xwing.CIPHERTEXT_BYTES)}
                    )
                ),
            },
            "confirmation",
        )
        if f["type"] == "receipt" and f["message"] is not None:
            codec.fail("bad_value", "a delivery receipt carries no message")
        return cls(
            f["type"],
            f["notice_id"],
            f["digest"],
            DeskId(f["to"]),
            DeskId(f["from"]),
            f["from_kid"],
            f["at"],
            f["message"],
            signed,
            automatic,
        )

    def encode(self) -> bytes:
        return self.signed.encode()

    def verify(
        self, signer: VerifiedDesk, *, notice_id: bytes, digest: bytes, sender: DeskId,
        recipient: DeskId,
    ) -> None:
        """Check this confirmation is recipient ``recipient``'s, signed with ``signer`` (the
        verified keys of that same desk), for exactly this notice and sender.

        ``recipient`` is the desk the caller expects the confirmation from (the one whose
        row it fills): a confirmation naming another desk, or a ``signer`` that is not
        ``recipient``'s, is refused here, whatever the caller checked before."""
        if self.recipient != recipient or signer.desk != recipient:
            raise BadSignature(
                f"{self.kind} is signed as {self.recipient} with the key of {signer.desk}, "
                f"where one from recipient {recipient} was expected"
            )
        if self.recipient != signer.desk or not equal(self.recipient_kid, signer.ik_kid):
            raise BadSignature(
                f"{self.kind} claims to be from {self.recipient}, "
                f"not from the verified key of {signer.desk}"
            )
        self.signed.verify(
            signer.identity_key, _DOMAINS[self.kind], signer=f"recipient {signer.desk}"
        )
        if self.notice_id != notice_id or not equal(self.digest, digest):
            raise BadSignature(
                f"{self.kind} is bound to another notice or another version "
                "of it (notice id or digest differs)"
            )
        if self.sender != sender:
            raise NotIntendedRecipient(
                f"{self.kind} is addressed to {self.sender}, not to the notice's sender {sender}"
            )

    def open_message(self, me: DeskSecrets) -> str | None:
        """Decrypt the acknowledgement's message (call after :meth:`verify`)."""
        if self.message is None:
            return None
        sk = me.encryption_key(self.message["ek_kid"])
        sealed = self.message["sealed"]
        what = "the acknowledgement message"
        if isinstance(sk, xwing.XWingPrivateKey):
            if len(sealed) < xwing.CIPHERTEXT_BYTES + 16:
                raise DecryptionFailed(f"{what} is too short for a hybrid seal")
            plain = xwing.open_sealed(
                sk, sealed[: xwing.CIPHERTEXT_BYTES], sealed[xwing.CIPHERTEXT_BYTES :],
                _ack_context(self.notice_id, self.message["ek_kid"], self.recipient), what=what,
            )
        else:
            plain = open_sealed(sk, sealed, what=what)
        pair = codec.array(
            codec.unpack(plain, what="ack message", max_bytes=len(plain)), 3, "ack message"
        )
        if pair[0] != self.notice_id or pair[1] != self.recipient:
            raise BadSignature("the acknowledgement message belongs to another notice or desk")
        out: str = text(MAX_ACK_MESSAGE_CHARS)(pair[2], "ack message.text")
        return out


def _ack_context(notice_id: bytes, ek_kid: bytes, recipient: str) -> bytes:
    """What a hybrid-sealed acknowledgement message is bound to."""
    return b"hotline/v2/ack-message\x00" + notice_id + ek_kid + recipient.encode()


def statement_type(data: bytes) -> str:
    """The ``type`` of a signed statement's body, before it is decoded as that type (a
    confirmation route carries receipts, acks and rejections alike)."""
    _, value = split(data, what="confirmation", max_bytes=MAX_STATEMENT_BYTES)
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else ""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A recipient's signed statement that it could not open one notice, and why."""

    notice_id: bytes
    digest: bytes
    sender: DeskId  # the notice's sender, to whom this rejection is addressed
    recipient: DeskId  # the desk that signed this rejection
    recipient_kid: bytes
    at: int
    reason: str
    signed: SignedBytes

    @classmethod
    def create(cls, *, notice_id: bytes, digest: bytes, sender: DeskId, me: DeskSecrets,
               at: int, reason: str) -> Rejection:
        if reason not in REJECTION_REASONS:
            raise ValueError(f"rejection reason must be one of {', '.join(REJECTION_REASONS)}")
        body = {"v": 1, "type": "rejection", "notice_id": notice_id, "digest": digest,
                "to": sender, "from": me.desk, "from_kid": me.ik_kid, "at": at,
                "reason": reason}
        return cls(notice_id, digest, sender, me.desk, me.ik_kid, at, reason,
                   make(me.identity, Domain.REJECTION, body))

    @classmethod
    def decode(cls, data: bytes) -> Rejection:
        signed, value = split(data, what="rejection", max_bytes=MAX_STATEMENT_BYTES)
        f = fields(value, {"v": version(1), "type": codec.const("rejection"),
                           "notice_id": _nid, "digest": _digest, "to": check_desk,
                           "from": check_desk, "from_kid": _kid, "at": timestamp,
                           "reason": one_of(REJECTION_REASONS)}, "rejection")
        return cls(f["notice_id"], f["digest"], DeskId(f["to"]), DeskId(f["from"]),
                   f["from_kid"], f["at"], f["reason"], signed)

    def encode(self) -> bytes:
        return self.signed.encode()

    def verify(self, signer: VerifiedDesk, *, notice_id: bytes, digest: bytes, sender: DeskId,
               recipient: DeskId) -> None:
        """Check this rejection is recipient ``recipient``'s, signed with ``signer`` (that
        desk's verified keys), of exactly this notice (id and digest) from ``sender``."""
        if self.recipient != recipient or signer.desk != recipient:
            raise BadSignature(
                f"rejection is signed as {self.recipient} with the key of {signer.desk}, "
                f"where one from recipient {recipient} was expected"
            )
        if not equal(self.recipient_kid, signer.ik_kid):
            raise BadSignature(f"rejection names a key of {self.recipient} other than the "
                               "verified one")
        self.signed.verify(signer.identity_key, Domain.REJECTION,
                           signer=f"recipient {signer.desk}")
        if self.notice_id != notice_id or not equal(self.digest, digest):
            raise BadSignature("rejection is bound to another notice or another version of "
                               "it (notice id or digest differs)")
        if self.sender != sender:
            raise NotIntendedRecipient(
                f"rejection is addressed to {self.sender}, not to the notice's sender {sender}"
            )


@dataclass(frozen=True, slots=True)
class RelayCard:
    """A relay's public signing key, self-signed. Pinned by clients via its fingerprint."""

    relay_id: str
    key: bytes
    created_at: int
    signed: SignedBytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.key)

    @classmethod
    def create(cls, relay_id: str, sk: nacl.signing.SigningKey, now: int) -> RelayCard:
        body = {
            "v": 1,
            "type": "relay-card",
            "relay": relay_id,
            "key": bytes(sk.verify_key),
            "created_at": now,
        }
        return cls(relay_id, bytes(sk.verify_key), now, make(sk, Domain.RELAY_CARD, body))

    @classmethod
    def decode(cls, data: bytes) -> RelayCard:
        signed, value = split(data, what="relay card", max_bytes=MAX_STATEMENT_BYTES)
        f = fields(
            value,
            {
                "v": version(1),
                "type": codec.const("relay-card"),
                "relay": text(100, min_chars=1),
                "key": blob(size=32, nonzero=True),
                "created_at": timestamp,
            },
            "relay card",
        )
        check_public_key(f["key"], "relay key")
        signed.verify(f["key"], Domain.RELAY_CARD, signer=f"relay {f['relay']}")
        return cls(f["relay"], f["key"], f["created_at"], signed)

    def encode(self) -> bytes:
        return self.signed.encode()


@dataclass(frozen=True, slots=True)
class Attestation:
    """A relay's signed statement of an event in a notice's life, at the relay's time."""

    event: str
    relay_id: str
    relay_kid: bytes
    notice_id: bytes
    digest: bytes
    desk: DeskId  # the sender for "accepted", else the recipient concerned
    at: int
    level: int
    signed: SignedBytes

    @classmethod
    def create(
        cls,
        event: str,
        *,
        relay_id: str,
        relay_key: nacl.signing.SigningKey,
        notice_id: bytes,
        digest: bytes,
        desk: DeskId,
        at: int,
        level: int = 0,
    ) -> Attestation:
        if event not in ATTESTATION_EVENTS:
            raise ValueError(f"unknown attestation event {event!r}")
        if not 0 <= level <= 1000:
            raise ValueError("attestation level must be 0 to 1000")
        kid = key_id(bytes(relay_key.verify_key))
        body: dict[str, Any] = {
            "v": 1,
            "type": "attestation",
            "event": event,
            "relay": relay_id,
            "relay_kid": kid,
            "notice_id": notice_id,
            "digest": digest,
            "desk": desk,
            "at": at,
            "level": level,
        }
        return cls(
            event,
            relay_id,
            kid,
            notice_id,
            digest,
            desk,
            at,
            level,
            make(relay_key, Domain.ATTESTATION, body),
        )

    @classmethod
    def decode(cls, data: bytes) -> Attestation:
        signed, value = split(data, what="attestation", max_bytes=MAX_STATEMENT_BYTES)
        f = fields(
            value,
            {
                "v": version(1),
                "type": codec.const("attestation"),
                "event": one_of(ATTESTATION_EVENTS),
                "relay": text(100, min_chars=1),
                "relay_kid": _kid,
                "notice_id": _nid,
                "digest": _digest,
                "desk": check_desk,
                "at": timestamp,
                "level": uint(1000),
            },
            "attestation",
        )
        return cls(
            f["event"],
            f["relay"],
            f["relay_kid"],
            f["notice_id"],
            f["digest"],
            DeskId(f["desk"]),
            f["at"],
            f["level"],
            signed,
        )

    def encode(self) -> bytes:
        return self.signed.encode()

    def verify(
        self, relay: RelayCard, *, notice_id: bytes | None = None, digest: bytes | None = None
    ) -> None:
        if self.relay_id != relay.relay_id or not equal(self.relay_kid, relay.key_id):
            raise BadSignature(f"attestation names relay {self.relay_id!r}, not the pinned one")
        self.signed.verify(relay.key, Domain.ATTESTATION, signer=f"relay {relay.relay_id}")
        if notice_id is not None and self.notice_id != notice_id:
            raise BadSignature("attestation is for another notice")
        if digest is not None and not equal(self.digest, digest):
            raise BadSignature("attestation is for another version of the notice")


ESCALATION_KINDS = ("escalated", "resolved")
TRACKS = ("ack", "response")


@dataclass(frozen=True, slots=True)
class EscalationStatement:
    """The relay's signed record that a deadline passed (``escalated``) or was met late
    (``resolved``), with the routing metadata operators and escalation contacts may see."""

    kind: str
    relay_id: str
    relay_kid: bytes
    notice_id: bytes
    digest: bytes
    sender: DeskId
    recipient: DeskId
    severity: str
    status: str
    track: str
    level: int
    missed_levels: int
    deadline: int
    at: int
    delivered: bool
    final: bool
    signed: SignedBytes

    @property
    def overdue_ms(self) -> int:
        return self.at - self.deadline

    @classmethod
    def create(cls, kind: str, *, relay_id: str, relay_key: nacl.signing.SigningKey,
               notice_id: bytes, digest: bytes, sender: str, recipient: str, severity: str,
               status: str, track: str, level: int, missed_levels: int, deadline: int,
               at: int, delivered: bool, final: bool) -> EscalationStatement:
        if kind not in ESCALATION_KINDS or track not in TRACKS:
            raise ValueError(f"unknown escalation kind {kind!r} or track {track!r}")
        kid = key_id(bytes(relay_key.verify_key))
        body: dict[str, Any] = {
            "v": 1, "type": "escalation", "kind": kind, "relay": relay_id, "relay_kid": kid,
            "notice_id": notice_id, "digest": digest, "sender": sender,
            "recipient": recipient, "severity": severity, "status": status, "track": track,
            "level": level, "missed_levels": missed_levels, "deadline": deadline, "at": at,
            "delivered": delivered, "final": final}
        return cls(kind, relay_id, kid, notice_id, digest, DeskId(sender), DeskId(recipient),
                   severity, status, track, level, missed_levels, deadline, at, delivered,
                   final, make(relay_key, Domain.ESCALATION, body))

    @classmethod
    def decode(cls, data: bytes) -> EscalationStatement:
        from keys.ids import SEVERITIES, STATUSES

        signed, value = split(data, what="escalation statement", max_bytes=MAX_STATEMENT_BYTES)
        f = fields(value, {
            "v": version(1), "type": codec.const("escalation"),
            "kind": one_of(ESCALATION_KINDS), "relay": text(100, min_chars=1),
            "relay_kid": _kid, "notice_id": _nid, "digest": _digest, "sender": check_desk,
            "recipient": check_desk, "severity": one_of(SEVERITIES),
            "status": one_of(STATUSES), "track": one_of(TRACKS), "level": uint(1000),
            "missed_levels": uint(1000), "deadline": timestamp, "at": timestamp,
            "delivered": codec.boolean, "final": codec.boolean}, "escalation statement")
        return cls(f["kind"], f["relay"], f["relay_kid"], f["notice_id"], f["digest"],
                   DeskId(f["sender"]), DeskId(f["recipient"]), f["severity"], f["status"],
                   f["track"], f["level"], f["missed_levels"], f["deadline"], f["at"],
                   f["delivered"], f["final"], signed)

    def encode(self) -> bytes:
        return self.signed.encode()

    def verify(self, relay: RelayCard) -> None:
        if self.relay_id != relay.relay_id or not equal(self.relay_kid, relay.key_id):
            raise BadSignature(f"escalation names relay {self.relay_id!r}, not the pinned one")
        self.signed.verify(relay.key, Domain.ESCALATION, signer=f"relay {relay.relay_id}")
