"""The relay API's message frames: every body and WebSocket message, encoded and checked.

Both the relay and the client import these; nothing is written twice. Each frame is a
closed msgpack map with ``v: 1``; signed documents travel inside as opaque ``bin``.
See keys/PROTOCOL.md, "Relay API".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from keys import codec
from keys.codec import (
    blob,
    boolean,
    fields,
    list_of,
    nullable,
    one_of,
    record,
    text,
    timestamp,
    uint,
    version,
)
from keys.ids import NOTICE_ID_BYTES, SEVERITIES, STATUSES, DeskId, check_desk
from keys.primitives import SIGNATURE_BYTES, Domain
from keys.report import DEFAULT_MAX_NOTICE_BYTES

MAX_FRAME_BYTES = 64 * 1024
MAX_DOC = 64 * 1024
NONCE_BYTES = 32
TOKEN_BYTES = 32
#: Kinds of events in a desk's stream.
EVENT_KINDS = ("notice", "receipt", "ack", "escalation", "resolved", "rejected")
MAX_PAGE = 500

_nid = blob(size=NOTICE_ID_BYTES, nonzero=True)
_doc = blob(max_size=MAX_DOC)
_seq = uint()


#: Values a small frame (one flat map; at most a list of recipients) may decode into.
MAX_FRAME_OBJECTS = 256
#: A notice status lists up to 32 recipients with up to 1,000 escalations each.
MAX_STATUS_OBJECTS = 40_000


def _optional_leaf(value: Any, what: str) -> tuple[Any, int | None]:
    """Split the optional ``leaf`` field (a log leaf index) off a map."""
    if type(value) is not dict or "leaf" not in value:
        return value, None
    rest = dict(value)
    leaf = uint()(rest.pop("leaf"), f"{what}.leaf")
    return rest, leaf


def _decode(data: bytes, spec: dict[str, codec.Check], what: str,
            max_bytes: int = MAX_FRAME_BYTES,
            max_objects: int = MAX_FRAME_OBJECTS) -> dict[str, Any]:
    return fields(codec.unpack(data, what=what, max_bytes=max_bytes, max_objects=max_objects),
                  spec, what)


def auth_message(origin: str, desk: str, ik_kid: bytes, nonce: bytes, ts: int) -> bytes:
    """What a desk signs (with Domain.AUTH) to answer a challenge."""
    return Domain.AUTH + codec.pack([origin, desk, ik_kid, nonce, ts])


# ----------------------------------------------------------------------------- auth


@dataclass(frozen=True, slots=True)
class ChallengeRequest:
    desk: DeskId

    def encode(self) -> bytes:
        return codec.pack({"v": 1, "desk": self.desk})

    @classmethod
    def decode(cls, data: bytes) -> ChallengeRequest:
        f = _decode(data, {"v": version(1), "desk": check_desk}, "challenge request")
        return cls(DeskId(f["desk"]))


@dataclass(frozen=True, slots=True)
class Challenge:
    relay: str
    origin: str
    nonce: bytes
    expires_at: int

    def encode(self) -> bytes:
        return codec.pack({"v": 1, "relay": self.relay, "origin": self.origin,
                           "nonce": self.nonce, "expires_at": self.expires_at})

    @classmethod
    def decode(cls, data: bytes) -> Challenge:
        f = _decode(data, {"v": version(1), "relay": text(100, min_chars=1),
                           "origin": text(300, min_chars=1), "nonce": blob(size=NONCE_BYTES),
                           "expires_at": timestamp}, "challenge")
        return cls(f["relay"], f["origin"], f["nonce"], f["expires_at"])


@dataclass(frozen=True, slots=True)
class SessionRequest:
    desk: DeskId
    card: bytes
    nonce: bytes
    ts: int
    signature: bytes

    def encode(self) -> bytes:
        return codec.pack({"v": 1, "desk": self.desk, "card": self.card, "nonce": self.nonce,
                           "ts": self.ts, "sig": self.signature})

    @classmethod
    def decode(cls, data: bytes) -> SessionRequest:
        f = _decode(data, {"v": version(1), "desk": check_desk, "card": _doc,
                           "nonce": blob(size=NONCE_BYTES), "ts": timestamp,
                           "sig": blob(size=SIGNATURE_BYTES)}, "session request")
        return cls(DeskId(f["desk"]), f["card"], f["nonce"], f["ts"], f["sig"])


@dataclass(frozen=True, slots=True)
class Session:
    token: bytes
    expires_at: int
    relay_card: bytes

    def encode(self) -> bytes:
        return codec.pack({"v": 1, "token": self.token, "expires_at": self.expires_at,
                           "relay_card": self.relay_card})

    @classmethod
    def decode(cls, data: bytes) -> Session:
        f = _decode(data, {"v": version(1), "token": blob(size=TOKEN_BYTES),
                           "expires_at": timestamp, "relay_card": _doc}, "session")
        return cls(f["token"], f["expires_at"], f["relay_card"])


OPERATOR_RE = re.compile(r"[a-z0-9._-]{1,40}")


def operator_auth_message(origin: str, operator: str, nonce: bytes, ts: int) -> bytes:
    """What an operator signs (with Domain.OPERATOR_AUTH) to answer a challenge."""
    return Domain.OPERATOR_AUTH + codec.pack([origin, operator, nonce, ts])


@dataclass(frozen=True, slots=True)
class OperatorChallengeRequest:
    operator: str

    def encode(self) -> bytes:
        return codec.pack({"v": 1, "operator": self.operator})

    @classmethod
    def decode(cls, data: bytes) -> OperatorChallengeRequest:
        f = _decode(data, {"v": version(1), "operator": text(40, pattern=OPERATOR_RE)},
                    "operator challenge request")
        return cls(f["operator"])


@dataclass(frozen=True, slots=True)
class OperatorSessionRequest:
    operator: str
    nonce: bytes
    ts: int
    signature: bytes

    def encode(self) -> bytes:
        return codec.pack({"v": 1, "operator": self.operator, "nonce": self.nonce,
                           "ts": self.ts, "sig": self.signature})

    @classmethod
    def decode(cls, data: bytes) -> OperatorSessionRequest:
        f = _decode(data, {"v": version(1), "operator": text(40, pattern=OPERATOR_RE),
                           "nonce": blob(size=NONCE_BYTES), "ts": timestamp,
                           "sig": blob(size=SIGNATURE_BYTES)}, "operator session request")
        return cls(f["operator"], f["nonce"], f["ts"], f["sig"])


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Accepted:
    """The relay's answer to a submitted notice or confirmation."""

    attestation: bytes
    duplicate: bool
    #: The attestation's leaf index in the relay's log (PROTOCOL.md 20.2), if named.
    leaf: int | None = None

    def encode(self) -> bytes:
        out: dict[str, Any] = {"v": 1, "attestation": self.attestation,
                               "duplicate": self.duplicate}
        if self.leaf is not None:
            out["leaf"] = self.leaf
        return codec.pack(out)

    @classmethod
    def decode(cls, data: bytes) -> Accepted:
        value, leaf = _optional_leaf(codec.unpack(data, what="accepted", max_bytes=MAX_FRAME_BYTES,
                                                  max_objects=MAX_FRAME_OBJECTS), "accepted")
        f = fields(value, {"v": version(1), "attestation": _doc, "duplicate": boolean},
                   "accepted")
        return cls(f["attestation"], f["duplicate"], leaf)


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    error: str
    detail: str
    request_id: str

    def encode(self) -> bytes:
        return codec.pack({"error": self.error, "detail": self.detail[:500],
                           "request_id": self.request_id})

    @classmethod
    def decode(cls, data: bytes) -> ErrorFrame:
        f = _decode(data, {"error": text(64, min_chars=1), "detail": text(500),
                           "request_id": text(64)}, "error")
        return cls(f["error"], f["detail"], f["request_id"])


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a desk's stream, in order of ``seq``.

    * ``notice``: ``envelope`` addressed to this desk, ``attestation`` of its acceptance,
      ``signer_cert`` the sender's desk certificate.
    * ``receipt`` / ``ack``: ``confirmation`` by a recipient of a notice this desk sent,
      ``attestation`` of its recording, ``signer_cert`` the recipient's certificate.
    * ``rejected``: ``confirmation`` is a recipient's signed rejection (it could not open a
      notice this desk sent), ``attestation`` the relay's, ``signer_cert`` the recipient's.
    * ``escalation`` / ``resolved``: ``attestation`` by the relay (and ``envelope`` nil).
    """

    seq: int
    kind: str
    notice_id: bytes
    envelope: bytes | None = None
    confirmation: bytes | None = None
    attestation: bytes | None = None
    signer_cert: bytes | None = None
    #: The index of ``attestation``'s leaf in the relay's log (PROTOCOL.md 20.2); absent
    #: on the wire when the relay does not name one.
    leaf: int | None = None

    def to_wire(self) -> dict[str, Any]:
        out = {"seq": self.seq, "kind": self.kind, "notice_id": self.notice_id,
               "envelope": self.envelope, "confirmation": self.confirmation,
               "attestation": self.attestation, "signer_cert": self.signer_cert}
        if self.leaf is not None:
            out["leaf"] = self.leaf
        return out

    @classmethod
    def from_wire(cls, value: Any, path: str = "event",
                  max_bytes: int = DEFAULT_MAX_NOTICE_BYTES) -> Event:
        value, leaf = _optional_leaf(value, path)
        f = fields(value, {"seq": _seq, "kind": one_of(EVENT_KINDS), "notice_id": _nid,
                           "envelope": nullable(blob(max_size=max_bytes)),
                           "confirmation": nullable(_doc), "attestation": nullable(_doc),
                           "signer_cert": nullable(_doc)}, path)
        return cls(**f, leaf=leaf)


@dataclass(frozen=True, slots=True)
class InboxPage:
    events: tuple[Event, ...]
    next_cursor: int
    more: bool

    def encode(self) -> bytes:
        return codec.pack({"v": 1, "events": [e.to_wire() for e in self.events],
                           "next": self.next_cursor, "more": self.more})

    @classmethod
    def decode(cls, data: bytes, max_bytes: int = 64 * 1024 * 1024) -> InboxPage:
        value = codec.unpack(data, what="inbox page", max_bytes=max_bytes)
        f = fields(value, {"v": version(1), "events": list_of(lambda v, p: v, max_items=MAX_PAGE),
                           "next": _seq, "more": boolean}, "inbox page")
        events = tuple(Event.from_wire(e, f"inbox page.events[{i}]")
                       for i, e in enumerate(f["events"]))
        return cls(events, f["next"], f["more"])


# ----------------------------------------------------------------------------- revocations

#: Revocations one answer of ``GET /v1/revocations`` carries at most (a federation revokes a
#: handful of desk keys a year; this bounds the work a relay can make a client do).
MAX_REVOCATIONS = 10_000
#: The most bytes that answer may have (each revocation is a signed document of < 1 KiB).
MAX_REVOCATION_LIST_BYTES = MAX_REVOCATIONS * 1024


@dataclass(frozen=True, slots=True)
class RevocationList:
    """Every revocation a relay knows (``GET /v1/revocations``), each an encoded signed
    revocation (7.4), unverified: the reader verifies each against the pinned root."""

    revocations: tuple[bytes, ...]

    def encode(self) -> bytes:
        return codec.pack({"v": 1, "revocations": list(self.revocations)})

    @classmethod
    def decode(cls, data: bytes) -> RevocationList:
        f = _decode(data, {"v": version(1),
                           "revocations": list_of(_doc, max_items=MAX_REVOCATIONS)},
                    "revocation list", max_bytes=MAX_REVOCATION_LIST_BYTES)
        return cls(tuple(f["revocations"]))


# ----------------------------------------------------------------------------- status


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    desk: DeskId
    signer_cert: bytes | None
    receipt: bytes | None
    receipt_attestation: bytes | None
    ack: bytes | None
    ack_attestation: bytes | None
    escalations: tuple[bytes, ...] = ()
    #: The recipient's signed rejection (it could not open the notice) and its attestation.
    rejection: bytes | None = None
    rejection_attestation: bytes | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"desk": self.desk, "signer_cert": self.signer_cert, "receipt": self.receipt,
                "receipt_attestation": self.receipt_attestation, "ack": self.ack,
                "ack_attestation": self.ack_attestation, "escalations": list(self.escalations),
                "rejection": self.rejection,
                "rejection_attestation": self.rejection_attestation}


@dataclass(frozen=True, slots=True)
class NoticeStatus:
    notice_id: bytes
    sender: DeskId
    severity: str
    status: str
    accepted: bytes
    digest: bytes
    recipients: tuple[RecipientStatus, ...]
    policy: dict[str, Any] | None = None

    def encode(self) -> bytes:
        return codec.pack({"v": 1, "notice_id": self.notice_id, "sender": self.sender,
                           "severity": self.severity, "status": self.status,
                           "accepted": self.accepted, "digest": self.digest,
                           "recipients": [r.to_wire() for r in self.recipients],
                           "policy": self.policy})

    @classmethod
    def decode(cls, data: bytes) -> NoticeStatus:
        rec = record({"desk": check_desk, "signer_cert": nullable(_doc),
                      "receipt": nullable(_doc), "receipt_attestation": nullable(_doc),
                      "ack": nullable(_doc), "ack_attestation": nullable(_doc),
                      "escalations": list_of(_doc, max_items=1000),
                      "rejection": nullable(_doc), "rejection_attestation": nullable(_doc)})
        f = _decode(data, {"v": version(1), "notice_id": _nid, "sender": check_desk,
                           "severity": one_of(SEVERITIES), "status": one_of(STATUSES),
                           "accepted": _doc, "digest": blob(size=32),
                           "recipients": list_of(rec, min_items=1, max_items=32),
                           "policy": lambda v, p: v if v is None or type(v) is dict
                           else codec.fail("bad_type", f"{p} must be a map or nil")},
                    "notice status", max_bytes=4 * 1024 * 1024,
                    max_objects=MAX_STATUS_OBJECTS)
        recipients = tuple(
            RecipientStatus(DeskId(r["desk"]), r["signer_cert"], r["receipt"],
                            r["receipt_attestation"], r["ack"], r["ack_attestation"],
                            tuple(r["escalations"]), r["rejection"],
                            r["rejection_attestation"]) for r in f["recipients"])
        return cls(f["notice_id"], DeskId(f["sender"]), f["severity"], f["status"],
                   f["accepted"], f["digest"], recipients, f["policy"])


# ----------------------------------------------------------------------------- WebSocket

#: Messages a client sends on its stream (``credit`` only on a flow-controlled stream).
CLIENT_MESSAGE_TYPES = ("submit", "confirm", "ping", "credit")
#: The WebSocket subprotocol of a flow-controlled stream: the relay sends events only as
#: far as the client granted them with ``credit`` messages (PROTOCOL.md 13.4, 16.5).
STREAM_SUBPROTOCOL = "hotline.credit.1"
#: Events a client may have granted and not yet received, at most.
MAX_STREAM_CREDIT = 4096
#: Messages the relay sends on a stream.
RELAY_MESSAGE_TYPES = ("event", "accepted", "confirmed", "error", "pong")
#: Sent only on a stream opened with ``revocations=1``: its own, smaller map.
REVOCATION_MESSAGE = "revocation"


def client_message(kind: str, ref: int, confirmation: bytes | None = None,
                   notice: bytes | None = None, credit: int = 0) -> bytes:
    """A client's stream message: ``submit`` carries a sealed notice (as POST /v1/notices),
    ``confirm`` a receipt, ack or rejection (as POST /v1/confirmations), ``ping`` nothing,
    ``credit`` the number of further events the relay may send (its own closed map, with
    ``credit`` instead of ``confirmation`` and ``notice``)."""
    if kind == "credit":
        return codec.pack({"v": 1, "type": kind, "ref": ref, "credit": credit})
    return codec.pack({"v": 1, "type": kind, "ref": ref, "confirmation": confirmation,
                       "notice": notice})


def decode_client_message(data: bytes,
                          max_bytes: int = DEFAULT_MAX_NOTICE_BYTES + 1024) -> dict[str, Any]:
    """A client's stream message as a map with every field: ``credit`` is 0 but for a
    ``credit`` message, ``confirmation`` and ``notice`` None for it."""
    value = codec.unpack(data, what="stream message", max_bytes=max_bytes,
                         max_objects=MAX_FRAME_OBJECTS)
    if type(value) is dict and value.get("type") == "credit":
        f = fields(value, {"v": version(1), "type": one_of(("credit",)), "ref": uint(2**53),
                           "credit": uint(MAX_STREAM_CREDIT, minimum=1)}, "stream message")
        return {**f, "confirmation": None, "notice": None}
    f = fields(value, {"v": version(1), "type": one_of(CLIENT_MESSAGE_TYPES[:3]),
                       "ref": uint(2**53), "confirmation": nullable(_doc),
                       "notice": nullable(blob(max_size=max_bytes))}, "stream message")
    f["credit"] = 0
    needs = {"submit": "notice", "confirm": "confirmation"}.get(f["type"])
    for name in ("notice", "confirmation"):
        if name == needs and f[name] is None:
            codec.fail("missing_field", f"a {f['type']} message carries a {name}")
        if name != needs and f[name] is not None:
            codec.fail("bad_value", f"a {f['type']} message carries no {name}")
    return f


def relay_message(kind: str, *, ref: int = 0, event: Event | None = None,
                  attestation: bytes | None = None, duplicate: bool = False,
                  error: str | None = None, status: int = 0,
                  detail: str | None = None, leaf: int | None = None) -> bytes:
    """A relay's stream message. ``accepted`` and ``confirmed`` answer a ``submit`` and a
    ``confirm`` with the attestation (``duplicate`` as the HTTP API's); ``error`` answers
    either with the code, the HTTP status the same refusal has on the HTTP API, and the
    detail."""
    out = {"v": 1, "type": kind, "ref": ref, "event": event.to_wire() if event else None,
           "attestation": attestation, "duplicate": duplicate, "error": error,
           "status": status, "detail": detail[:500] if detail else None}
    if leaf is not None:
        out["leaf"] = leaf  # the attestation's log leaf index (PROTOCOL.md 20.2)
    return codec.pack(out)


def revocation_message(revocation: bytes) -> bytes:
    """A relay's stream message carrying one revocation it knows (7.4, unverified)."""
    return codec.pack({"v": 1, "type": REVOCATION_MESSAGE, "ref": 0, "revocation": revocation})


def decode_relay_message(data: bytes,
                         max_bytes: int = DEFAULT_MAX_NOTICE_BYTES + 64 * 1024
                         ) -> dict[str, Any]:
    """A relay's stream message as a map. A ``revocation`` message has the keys ``v``,
    ``type``, ``ref`` and ``revocation`` only; every other type has the keys of
    :func:`relay_message` (and the optional ``leaf``)."""
    value = codec.unpack(data, what="relay message", max_bytes=max_bytes,
                         max_objects=MAX_FRAME_OBJECTS)
    if type(value) is dict and value.get("type") == REVOCATION_MESSAGE:
        return fields(value, {"v": version(1), "type": codec.const(REVOCATION_MESSAGE),
                              "ref": uint(2**53), "revocation": _doc}, "relay message")
    value, leaf = _optional_leaf(value, "relay message")
    f = fields(value, {"v": version(1), "type": one_of(RELAY_MESSAGE_TYPES),
                       "ref": uint(2**53), "event": lambda v, p: v,
                       "attestation": nullable(_doc), "duplicate": codec.boolean,
                       "error": nullable(text(64)), "status": uint(599),
                       "detail": nullable(text(500))}, "relay message")
    f["leaf"] = leaf
    if f["event"] is not None:
        f["event"] = Event.from_wire(f["event"], "relay message.event", max_bytes=max_bytes)
    return f
