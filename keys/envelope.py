"""Sealing and opening notices: the envelope that makes invariants S1-S5 hold.

Wire form (all msgpack, see keys/PROTOCOL.md for the byte-level description)::

    envelope = [header: bin, ciphertext: bin, outer_sig: bin(64)]
    header   = {v, notice_id, from, from_kid, created_at, severity, status, in_reply_to,
                nonce, kc, stanzas: [{to, ek_kid, wrapped}]}
    plaintext P = [inner: bin, inner_sig: bin(64)]
    inner    = {v, notice_id, from, to, created_at, severity, status, in_reply_to, report}

    K          = random(32); nonce = random(24)
    kc         = BLAKE2b-256(key=K, personal="hotline-kc-v1", message="")   (S4)
    wrapped_r  = crypto_box_seal(K, EK_r)                                    (S1)
    inner_sig  = Ed25519(IK_from, "hotline/v1/inner\\0" || inner)           (repair (c))
    ciphertext = XChaCha20-Poly1305(P, aad=header, nonce, K)                 (S3)
    outer_sig  = Ed25519(IK_from, "hotline/v1/envelope\\0" || header || BLAKE2b-256(ciphertext))

Version 2 (hybrid, keys/PROTOCOL.md 6.8) is the same with ``v: 2`` and each stanza naming
its KEM: ``{to, ek_kid, kem: "x25519", wrapped: bin(80)}`` as above, or
``{to, ek_kid, kem: "x-wing", kem_ct: bin(1120), wrapped: bin(48)}`` where::

    ctx_r      = "hotline/v2/stanza\0" || notice_id || ek_kid || to
    ss, kem_ct = X-Wing.Encapsulate(EK_r)
    wrapped_r  = XChaCha20-Poly1305(K, aad=ctx_r, nonce=0^24,
                                    key=BLAKE2b-256(key=ss, personal="hotline-xwing-v1", ctx_r))

A recipient holding a hybrid key refuses a classical stanza for a notice created after its
first hybrid key became valid, and a root's ``hybrid_required_from`` refuses every classical
stanza from that time on (no downgrade). Version 1 envelopes still open.

The relay checks the outer signature and routing fields (:func:`check_submission`); a
recipient checks everything (:func:`open_envelope`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keys import codec, xwing
from keys.codec import blob, fields, list_of, nullable, one_of, timestamp, version
from keys.errors import (
    BadSignature,
    Downgrade,
    KeyCommitmentMismatch,
    MalformedInput,
    NotIntendedRecipient,
    ProtocolError,
    StaleOrFuture,
    UntrustedKey,
    UsageError,
)
from keys.ids import (
    KEY_ID_BYTES,
    NOTICE_ID_BYTES,
    SEVERITIES,
    STATUSES,
    DeskId,
    check_desk,
)
from keys.primitives import (
    AEAD_KEY_BYTES,
    AEAD_NONCE_BYTES,
    SIGNATURE_BYTES,
    WRAPPED_KEY_BYTES,
    Domain,
    Random,
    aead_decrypt,
    aead_encrypt,
    digest,
    equal,
    key_commitment,
    open_sealed,
    seal_to,
    sign,
    system_random,
    verify,
)
from keys.report import DEFAULT_MAX_NOTICE_BYTES, IncidentReport
from keys.report import from_wire as report_from_wire
from keys.secrets import CLASSICAL, HYBRID, DeskSecrets
from keys.trust import VerifiedDesk, kem_of
from keys.xwing import XWingPrivateKey

#: Recipients per notice. A notice goes to the desks of a handful of countries; 32 bounds
#: the unwrap and verification work an envelope can demand before anything is checked.
MAX_RECIPIENTS = 32
#: The envelope versions: 1 classical stanzas only, 2 each stanza names its KEM.
VERSIONS = (1, 2)
HYBRID_VERSION = 2
_STANZA_CONTEXT = b"hotline/v2/stanza\x00"
#: A notice stamped more than this far ahead of the relay's clock is refused.
MAX_FUTURE_MS = 5 * 60 * 1000
#: A notice stamped more than this far behind the relay's clock is refused.
MAX_AGE_MS = 24 * 60 * 60 * 1000
#: The largest honest header, 32 hybrid stanzas to 43-character desk ids, is 41,009 bytes
#: (tests/keys/test_hybrid.py); 48 KiB leaves room. It was 8 KiB for 80-byte stanzas.
MAX_HEADER_BYTES = 48 * 1024


def _recipients_of(stanzas: list[dict[str, Any]], path: str) -> tuple[DeskId, ...]:
    to = [s["to"] for s in stanzas]
    if len(set(to)) != len(to):
        codec.fail("bad_recipients", f"{path} names a recipient twice")
    if to != sorted(to):
        codec.fail("bad_recipients", f"{path} must list recipients in sorted order")
    return tuple(DeskId(d) for d in to)


_STANZA_V1 = {
    "to": check_desk,
    "ek_kid": blob(size=KEY_ID_BYTES),
    "wrapped": blob(size=WRAPPED_KEY_BYTES),
}
_STANZA_CLASSICAL = _STANZA_V1 | {"kem": codec.const(CLASSICAL)}
#: Exact lengths: a hybrid stanza's ciphertext and wrap are checked here, before any
#: decapsulation is attempted.
_STANZA_HYBRID = {
    "to": check_desk,
    "ek_kid": blob(size=KEY_ID_BYTES),
    "kem": codec.const(HYBRID),
    "kem_ct": blob(size=xwing.CIPHERTEXT_BYTES),
    "wrapped": blob(size=xwing.WRAPPED_KEY_BYTES),
}


def _stanza_check(value: Any, path: str) -> dict[str, Any]:
    return _stanza_fields(value, path, _STANZA_V1)


def _stanza_check_v2(value: Any, path: str) -> dict[str, Any]:
    kem = value.get("kem") if type(value) is dict else None
    if kem not in (CLASSICAL, HYBRID):
        raise MalformedInput(f"{path}.kem must be {CLASSICAL!r} or {HYBRID!r}", code="bad_stanza")
    return _stanza_fields(value, path, _STANZA_HYBRID if kem == HYBRID else _STANZA_CLASSICAL)


def _stanza_fields(value: Any, path: str, spec: dict[str, codec.Check]) -> dict[str, Any]:
    try:
        return fields(value, spec, path)
    except MalformedInput as exc:
        if exc.code in ("bad_value", "bad_type", "missing_field", "unknown_field"):
            raise MalformedInput(str(exc), code="bad_stanza") from exc
        raise


_HEADER_SPEC: dict[str, codec.Check] = {
    "v": version(1),
    "notice_id": blob(size=NOTICE_ID_BYTES, nonzero=True),
    "from": check_desk,
    "from_kid": blob(size=KEY_ID_BYTES),
    "created_at": timestamp,
    "severity": one_of(SEVERITIES),
    "status": one_of(STATUSES),
    "in_reply_to": nullable(blob(size=NOTICE_ID_BYTES, nonzero=True)),
    "nonce": blob(size=AEAD_NONCE_BYTES),
    "kc": blob(size=32),
}


def _stanzas_of(check: codec.Check) -> codec.Check:
    def stanzas(value: Any, path: str) -> list[dict[str, Any]]:
        # The count is checked before any element, so 10,000 stanzas cost one comparison.
        if type(value) is list and not 1 <= len(value) <= MAX_RECIPIENTS:
            codec.fail(
                "bad_recipients",
                f"{path} has {len(value)} recipients; allowed are 1 to {MAX_RECIPIENTS}",
            )
        out: list[dict[str, Any]] = list_of(check, min_items=1, max_items=MAX_RECIPIENTS)(
            value, path
        )
        return out

    return stanzas


_HEADER_SPEC["stanzas"] = _stanzas_of(_stanza_check)
_HEADER_SPEC_V2 = _HEADER_SPEC | {"v": version(2), "stanzas": _stanzas_of(_stanza_check_v2)}


@dataclass(frozen=True, slots=True)
class Stanza:
    to: DeskId
    ek_kid: bytes
    wrapped: bytes
    kem: str = CLASSICAL
    #: The X-Wing ciphertext of a hybrid stanza (empty for a classical one).
    kem_ct: bytes = b""


@dataclass(frozen=True, slots=True)
class Header:
    """The signed, cleartext routing header. ``raw`` is the exact bytes that were signed."""

    notice_id: bytes
    sender: DeskId
    sender_kid: bytes
    created_at: int
    severity: str
    status: str
    in_reply_to: bytes | None
    nonce: bytes
    kc: bytes
    stanzas: tuple[Stanza, ...]
    raw: bytes
    version: int = 1

    @property
    def recipients(self) -> tuple[DeskId, ...]:
        return tuple(s.to for s in self.stanzas)

    @classmethod
    def decode(cls, raw: bytes) -> Header:
        value = codec.unpack(raw, what="envelope header", max_bytes=MAX_HEADER_BYTES)
        # Exact version match: 2 has its own schema, anything but 1 or 2 is refused.
        is_v2 = type(value) is dict and type(value.get("v")) is int and value["v"] == 2
        f = fields(value, _HEADER_SPEC_V2 if is_v2 else _HEADER_SPEC, "header")
        recipients = _recipients_of(f["stanzas"], "header.stanzas")
        if f["from"] in recipients:
            codec.fail("bad_recipients", "a notice cannot be addressed to its own sender")
        return cls(
            notice_id=f["notice_id"],
            sender=DeskId(f["from"]),
            sender_kid=f["from_kid"],
            created_at=f["created_at"],
            severity=f["severity"],
            status=f["status"],
            in_reply_to=f["in_reply_to"],
            nonce=f["nonce"],
            kc=f["kc"],
            stanzas=tuple(
                Stanza(DeskId(s["to"]), s["ek_kid"], s["wrapped"], s.get("kem", CLASSICAL),
                       s.get("kem_ct", b""))
                for s in f["stanzas"]
            ),
            raw=raw,
            version=f["v"],
        )


@dataclass(frozen=True, slots=True)
class Envelope:
    """A sealed notice as it travels. ``raw`` is the exact wire bytes; ``digest`` their hash."""

    header: Header
    ciphertext: bytes
    signature: bytes
    raw: bytes

    @property
    def digest(self) -> bytes:
        """The notice digest H = BLAKE2b-256(envelope bytes): what receipts and acks bind."""
        return digest(self.raw)

    @property
    def notice_id(self) -> bytes:
        return self.header.notice_id

    @classmethod
    def decode(cls, data: bytes, *, max_bytes: int = DEFAULT_MAX_NOTICE_BYTES) -> Envelope:
        """Check the envelope's shape and header schema. Verifies no signature."""
        # By shape first: the canonical array of three byte strings is sliced, never run
        # through the msgpack decoder. The outer framing is not signed; only its one
        # canonical encoding is accepted, so nobody can re-frame a notice and give it a
        # second digest.
        outer = codec.bin_array(data, 3, what="envelope", max_bytes=max_bytes)
        header_raw = blob(max_size=MAX_HEADER_BYTES)(outer[0], "envelope.header")
        ciphertext = blob(max_size=max_bytes)(outer[1], "envelope.ciphertext")
        signature = blob(size=SIGNATURE_BYTES)(outer[2], "envelope.signature")
        return cls(Header.decode(header_raw), ciphertext, signature, data)

    def verify_outer(self, sender: VerifiedDesk) -> None:
        """Check that ``sender`` signed this header and ciphertext (raises BadSignature)."""
        h = self.header
        if h.sender != sender.desk or not equal(h.sender_kid, sender.ik_kid):
            raise UntrustedKey(
                f"envelope names sender {h.sender} key {h.sender_kid.hex()[:16]}, "
                f"which is not the verified key of {sender.desk}"
            )
        verify(
            sender.identity_key,
            Domain.ENVELOPE,
            _outer_message(h.raw, self.ciphertext),
            self.signature,
            signer=f"sender {h.sender}",
        )


def _outer_message(header_raw: bytes, ciphertext: bytes) -> bytes:
    return header_raw + digest(ciphertext)


@dataclass(frozen=True, slots=True)
class Notice:
    """An opened, fully verified notice."""

    notice_id: bytes
    sender: DeskId
    recipients: tuple[DeskId, ...]
    created_at: int
    severity: str
    status: str
    in_reply_to: bytes | None
    report: IncidentReport
    digest: bytes


def seal(
    report: IncidentReport,
    *,
    sender: DeskSecrets,
    recipients: Sequence[VerifiedDesk],
    severity: str,
    now: int,
    status: str = "actual",
    in_reply_to: bytes | None = None,
    notice_id: bytes | None = None,
    random: Random = system_random,
    max_bytes: int = DEFAULT_MAX_NOTICE_BYTES,
    kem: str | None = None,
) -> Envelope:
    """Seal ``report`` from ``sender`` to ``recipients`` (whose chains the caller verified).

    Each recipient's stanza uses its current key (:attr:`VerifiedDesk.current_encryption_key`:
    hybrid if it has one). ``kem`` forces one kind for every stanza (benchmarks, tests);
    forcing "x25519" to a recipient with a hybrid key is refused (``downgrade_refused``).
    The envelope is version 2 if any stanza is hybrid, else version 1."""
    report.validate()
    if severity not in SEVERITIES:
        raise UsageError(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    if status not in STATUSES:
        raise UsageError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    by_desk = {r.desk: r for r in recipients}
    if len(by_desk) != len(recipients) or not 1 <= len(by_desk) <= MAX_RECIPIENTS:
        raise UsageError(f"a notice needs 1 to {MAX_RECIPIENTS} distinct recipients")
    if sender.desk in by_desk:
        raise UsageError("a notice cannot be addressed to its own sender")
    to = sorted(by_desk)
    if kem is not None and kem not in (CLASSICAL, HYBRID):
        raise UsageError(f"kem must be {CLASSICAL!r} or {HYBRID!r}")
    keys: dict[str, tuple[bytes, bytes]] = {}
    for desk in to:
        r = by_desk[desk]
        if kem == CLASSICAL and r.has_hybrid_key:
            raise Downgrade(
                f"{desk} has a hybrid encryption key; sealing to it classically is refused",
                code="downgrade_refused",
            )
        if kem is None:
            keys[desk] = r.current_encryption_key
        else:
            match = [(k, pk) for k, pk in r.encryption_keys.items() if kem_of(pk) == kem]
            if not match:
                raise UsageError(f"{desk} has no {kem} encryption key")
            keys[desk] = match[0]
    v = HYBRID_VERSION if any(kem_of(pk) == HYBRID for _, pk in keys.values()) else 1
    nid = notice_id if notice_id is not None else random(NOTICE_ID_BYTES)
    content_key = random(AEAD_KEY_BYTES)
    nonce = random(AEAD_NONCE_BYTES)

    inner = codec.pack(
        {
            "v": 1,
            "notice_id": nid,
            "from": sender.desk,
            "to": to,
            "created_at": now,
            "severity": severity,
            "status": status,
            "in_reply_to": in_reply_to,
            "report": report.to_wire(),
        }
    )
    plaintext = codec.pack([inner, sign(sender.identity, Domain.INNER, inner)])
    stanzas: list[dict[str, Any]] = []
    for desk in to:
        ek_kid, ek = keys[desk]
        if kem_of(ek) == HYBRID:
            kem_ct, wrapped = xwing.seal(
                ek, content_key, stanza_context(nid, ek_kid, desk), random=random
            )
            stanzas.append(
                {"to": desk, "ek_kid": ek_kid, "kem": HYBRID, "kem_ct": kem_ct, "wrapped": wrapped}
            )
            continue
        stanza = {"to": desk, "ek_kid": ek_kid, "wrapped": seal_to(ek, content_key, random=random)}
        stanzas.append(stanza | ({"kem": CLASSICAL} if v == HYBRID_VERSION else {}))
    header_raw = codec.pack(
        {
            "v": v,
            "notice_id": nid,
            "from": sender.desk,
            "from_kid": sender.ik_kid,
            "created_at": now,
            "severity": severity,
            "status": status,
            "in_reply_to": in_reply_to,
            "nonce": nonce,
            "kc": key_commitment(content_key),
            "stanzas": stanzas,
        }
    )
    ciphertext = aead_encrypt(plaintext, header_raw, nonce, content_key)
    signature = sign(sender.identity, Domain.ENVELOPE, _outer_message(header_raw, ciphertext))
    raw = codec.pack([header_raw, ciphertext, signature])
    if len(raw) > max_bytes:
        raise UsageError(f"the sealed notice is {len(raw)} bytes; the limit is {max_bytes}")
    return Envelope.decode(raw, max_bytes=max_bytes)


def check_fresh(header: Header, now: int) -> None:
    """Refuse a notice stamped too far from ``now`` (the relay's clock)."""
    if header.created_at > now + MAX_FUTURE_MS:
        raise StaleOrFuture(
            f"notice created_at is {header.created_at - now} ms ahead of the relay's clock; "
            f"at most {MAX_FUTURE_MS} ms are allowed"
        )
    if header.created_at < now - MAX_AGE_MS:
        raise StaleOrFuture(
            f"notice created_at is {now - header.created_at} ms behind the relay's clock; "
            f"at most {MAX_AGE_MS} ms are allowed"
        )


def stanza_context(notice_id: bytes, ek_kid: bytes, to: str) -> bytes:
    """What a hybrid stanza's wrap is bound to: the notice and the recipient's key."""
    return _STANZA_CONTEXT + notice_id + ek_kid + to.encode()


def check_hybrid_rule(header: Header, hybrid_required_from: int | None, now: int) -> None:
    """Refuse classical stanzas once the federation root requires hybrid keys (judged at the
    later of the notice's time and ``now``, so that a backdated notice gains nothing)."""
    if hybrid_required_from is None or max(header.created_at, now) < hybrid_required_from:
        return
    if header.version != HYBRID_VERSION or any(s.kem != HYBRID for s in header.stanzas):
        raise Downgrade(
            f"notice {header.notice_id.hex()} carries a classical stanza (envelope version "
            f"{header.version}); the federation requires hybrid keys from "
            f"{hybrid_required_from} ms",
            code="hybrid_required",
        )


def check_submission(envelope: Envelope, *, sender: VerifiedDesk, now: int,
                     hybrid_required_from: int | None = None) -> None:
    """What the relay checks before it stores a notice: freshness, the federation's hybrid
    rule and the outer signature.

    The caller has already matched ``header.from`` with the authenticated desk and verified
    ``sender``'s certificate chain (and, if it wants, each stanza's ``ek_kid`` and kind).
    """
    check_fresh(envelope.header, now)
    check_hybrid_rule(envelope.header, hybrid_required_from, now)
    envelope.verify_outer(sender)


def open_envelope(envelope: Envelope, *, me: DeskSecrets, sender: VerifiedDesk,
                  hybrid_required_from: int | None = None) -> Notice:
    """Verify and decrypt ``envelope`` as recipient ``me``.

    Checks, in order: outer signature by the sender's verified key; a stanza for us; no
    downgrade (a classical stanza is refused once we hold a hybrid key, or the federation
    root's ``hybrid_required_from`` has passed, at the notice's creation time); the
    unwrapped key against the signed commitment; the AEAD over ciphertext and header; us
    among the recipients named inside; the inner routing fields equal to the header's; the
    inner signature by the same key; the report schema.
    """
    envelope.verify_outer(sender)
    h = envelope.header
    stanza = next((s for s in h.stanzas if s.to == me.desk), None)
    if stanza is None:
        # The relay routes by the stanzas: delivering this to us is the relay's doing.
        raise NotIntendedRecipient(f"notice {h.notice_id.hex()} is not addressed to {me.desk}")
    if hybrid_required_from is not None and h.created_at >= hybrid_required_from:
        check_hybrid_rule(h, hybrid_required_from, h.created_at)
    since = me.hybrid_since()
    if stanza.kem != HYBRID and since is not None and h.created_at >= since:
        raise Downgrade(
            f"notice {h.notice_id.hex()} wraps the key for {me.desk} classically, but "
            f"{me.desk} has had a hybrid key since {since} ms: a downgrade, refused",
            code="downgrade_refused",
        )
    ek = me.encryption_key(stanza.ek_kid)  # a key we do not hold is our own affair
    if isinstance(ek, XWingPrivateKey) != (stanza.kem == HYBRID):
        raise Downgrade(
            f"the stanza for {me.desk} is {stanza.kem} but names a key of the other kind",
            code="downgrade_refused",
        )
    # From here on the bytes are the sender's, signed: a failure is the sender's fault.
    fault = _Fault()
    try:
        return _open_signed(envelope, me=me, sender=sender, stanza=stanza, ek=ek, fault=fault)
    except ProtocolError as exc:
        exc.sender_fault = fault.reason
        raise


class _Fault:
    """Which step of opening a signed envelope is running (its rejection reason)."""

    reason = "stanza_unwrap_failed"


def _open_signed(envelope: Envelope, *, me: DeskSecrets, sender: VerifiedDesk, stanza: Stanza,
                 ek: Any, fault: _Fault) -> Notice:
    h = envelope.header
    what = f"the content key stanza for {me.desk}"
    if isinstance(ek, XWingPrivateKey):
        content_key = xwing.open_sealed(
            ek, stanza.kem_ct, stanza.wrapped, stanza_context(h.notice_id, stanza.ek_kid, me.desk),
            what=what,
        )
    else:
        content_key = open_sealed(ek, stanza.wrapped, what=what)
    fault.reason = "key_commitment_mismatch"
    if len(content_key) != AEAD_KEY_BYTES or not equal(key_commitment(content_key), h.kc):
        raise KeyCommitmentMismatch(
            f"the content key wrapped for {me.desk} does not match the signed commitment: "
            "recipients would not see the same content"
        )
    fault.reason = "aead_failed"
    plaintext = aead_decrypt(envelope.ciphertext, h.raw, h.nonce, content_key)
    fault.reason = "malformed_content"
    pair = codec.array(
        codec.unpack(plaintext, what="notice content", max_bytes=len(plaintext)),
        2,
        "notice content",
    )
    inner_raw = blob(max_size=len(plaintext))(pair[0], "notice content.inner")
    inner_sig = blob(size=SIGNATURE_BYTES)(pair[1], "notice content.signature")
    f = fields(
        codec.unpack(inner_raw, what="inner notice", max_bytes=len(inner_raw)),
        {
            "v": version(1),
            "notice_id": blob(size=NOTICE_ID_BYTES),
            "from": check_desk,
            "to": list_of(check_desk, min_items=1, max_items=MAX_RECIPIENTS),
            "created_at": timestamp,
            "severity": one_of(SEVERITIES),
            "status": one_of(STATUSES),
            "in_reply_to": nullable(blob(size=NOTICE_ID_BYTES)),
            # The report is checked by its own schema once the routing fields matched.
            "report": lambda value, path: value,
        },
        "inner",
    )
    fault.reason = "not_intended_recipient"
    if me.desk not in f["to"]:
        raise NotIntendedRecipient(
            f"the signed content of notice {h.notice_id.hex()} does not name {me.desk} as a "
            "recipient: it was forwarded"
        )
    expected = {
        "notice_id": h.notice_id,
        "from": h.sender,
        "to": list(h.recipients),
        "created_at": h.created_at,
        "severity": h.severity,
        "status": h.status,
        "in_reply_to": h.in_reply_to,
    }
    fault.reason = "inner_outer_mismatch"
    for key, value in expected.items():
        if f[key] != value:
            raise BadSignature(
                f"the signed content's {key} differs from the envelope header's: the notice "
                "was re-addressed or spliced"
            )
    fault.reason = "inner_signature_invalid"
    verify(
        sender.identity_key, Domain.INNER, inner_raw, inner_sig, signer=f"sender {h.sender} (inner)"
    )
    fault.reason = "malformed_content"
    report = report_from_wire(f["report"])
    return Notice(
        h.notice_id,
        h.sender,
        h.recipients,
        h.created_at,
        h.severity,
        h.status,
        h.in_reply_to,
        report,
        envelope.digest,
    )
