"""What the client checks before it believes anything the relay hands it. Pure functions.

Nothing here awaits, logs or reads a clock: each check takes the pinned relay card, the
trust store and the times it needs, and either returns verified values or raises the
typed error of :mod:`keys.errors` that says what did not hold.

* a notice event: the relay's "accepted" attestation, the sender's certificate under the
  pinned root, then :func:`keys.envelope.open_envelope` (signatures, binding, S4);
* a receipt or acknowledgement of a notice we sent: the recipient's certificate, its
  signature bound to our notice's digest and to us, and the relay's attestation;
* a recipient's rejection of a notice we sent (it could not open it): the same checks;
* an escalation or resolution: the relay's signed statement (or attestation);
* a notice's status: every one of the above, each item flagged rather than raised, and
  compared with what this desk itself sent or holds.

Times are the client's, never the relay's (DESIGN.md "The client trusts proofs, not the
relay"): a live item's signer certificate (and the pinned root) is judged at the
client's clock, moved towards the relay's signed time by at most the allowed skew; a
stored item re-opened later is judged at the client's recorded time of receipt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from client.items import StatusMismatch
from keys.envelope import Envelope, Notice, open_envelope
from keys.errors import BadSignature, HotlineError, MalformedInput, UntrustedKey
from keys.frames import Event, NoticeStatus, RecipientStatus
from keys.ids import DeskId
from keys.primitives import equal
from keys.receipts import (
    MAX_STATEMENT_BYTES,
    Attestation,
    Confirmation,
    EscalationStatement,
    Rejection,
    RelayCard,
)
from keys.secrets import DeskSecrets
from keys.signed import split
from keys.trust import DeskCertificate, TrustStore

#: How far a relay-signed time may be off this client's clock before it is not believed.
DEFAULT_MAX_CLOCK_SKEW_MS = 5 * 60_000

#: The attestation event the relay signs for each kind of confirmation and stream event.
ATTESTED = {
    "receipt": "delivered",
    "ack": "acknowledged",
    "escalation": "escalated",
    "resolved": "resolved",
    "rejected": "rejected",
}


def check_attestation(
    raw: bytes,
    relay: RelayCard,
    *,
    event: str,
    notice_id: bytes,
    digest: bytes | None = None,
    desk: str | None = None,
) -> Attestation:
    """Decode and verify a relay attestation of ``event`` about exactly this notice."""
    att = Attestation.decode(raw)
    att.verify(relay, notice_id=notice_id, digest=digest)
    if att.event != event:
        raise BadSignature(f"the relay attests {att.event!r} where {event!r} was expected")
    if desk is not None and att.desk != desk:
        raise BadSignature(f"the relay's {event} attestation concerns {att.desk}, not {desk}")
    return att


def judged_time(attested_at: int, now: int, skew_ms: int) -> int:
    """The time a live item's signer is judged at: this client's clock ``now``, moved
    towards the relay's signed ``attested_at`` by at most ``skew_ms``, so a relay that
    backdates (or postdates) its time gains no more than the allowed skew."""
    return min(max(attested_at, now - skew_ms), now + skew_ms)


def beyond_skew(attested_at: int, *, earliest: int, latest: int, skew_ms: int) -> bool:
    """True if a relay-signed time lies outside ``[earliest, latest]`` (this client's own
    bounds for it) by more than ``skew_ms``."""
    return attested_at < earliest - skew_ms or attested_at > latest + skew_ms


def _require(value: bytes | None, what: str, kind: str) -> bytes:
    if value is None:
        raise MalformedInput(f"a {kind} event lacks its {what}", code="missing_field")
    return value


@dataclass(frozen=True, slots=True)
class VerifiedNotice:
    notice: Notice
    envelope: Envelope
    attestation: Attestation
    signer_cert: bytes


def verify_notice(
    event: Event, *, me: DeskSecrets, trust: TrustStore, relay: RelayCard, now: int,
    skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS,
) -> VerifiedNotice:
    """Everything a recipient checks before it shows a notice (S2-S4), in this order:
    envelope shape; the relay's acceptance of exactly these bytes; the sender's
    certificate under the pinned root (revocations included) at this client's time
    ``now`` (see :func:`judged_time`); then the envelope's signatures, binding and
    content."""
    raw = _require(event.envelope, "envelope", "notice")
    env = Envelope.decode(raw)
    if env.notice_id != event.notice_id:
        raise MalformedInput(
            f"event names notice {event.notice_id.hex()} but carries {env.notice_id.hex()}",
            code="bad_value",
        )
    att = check_attestation(
        _require(event.attestation, "attestation", "notice"),
        relay,
        event="accepted",
        notice_id=env.notice_id,
        digest=env.digest,
        desk=env.header.sender,
    )
    cert_raw = _require(event.signer_cert, "sender certificate", "notice")
    cert = DeskCertificate.decode(cert_raw)
    if cert.desk != env.header.sender:
        raise UntrustedKey(
            f"the certificate sent with notice {env.notice_id.hex()} is for {cert.desk}, "
            f"not for its sender {env.header.sender}"
        )
    sender = trust.verify_signer(cert, judged_time(att.at, now, skew_ms))
    notice = open_envelope(env, me=me, sender=sender,
                           hybrid_required_from=trust.root.hybrid_required_from)
    return VerifiedNotice(notice, env, att, cert_raw)


def reopen(
    envelope: bytes, signer_cert: bytes, received_at: int, *, me: DeskSecrets, trust: TrustStore
) -> Notice:
    """Open a stored notice again (it is kept sealed on disk), re-checking the sender's key
    at ``received_at``, the time this client recorded on receipt (never a relay's time):
    a key revoked since it arrived is refused from now on."""
    env = Envelope.decode(envelope)
    sender = trust.verify_signer(DeskCertificate.decode(signer_cert), received_at)
    return open_envelope(env, me=me, sender=sender,
                         hybrid_required_from=trust.root.hybrid_required_from)


@dataclass(frozen=True, slots=True)
class VerifiedConfirmation:
    confirmation: Confirmation
    attestation: Attestation


def verify_confirmation(
    confirmation: bytes,
    attestation: bytes,
    signer_cert: bytes,
    *,
    trust: TrustStore,
    relay: RelayCard,
    notice_id: bytes,
    digest: bytes,
    sender: DeskId,
    now: int,
    skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS,
    received_at: int | None = None,
    recipients: Sequence[str] | None = None,
    expected_recipient: str | None = None,
    expected_kind: str | None = None,
) -> VerifiedConfirmation:
    """Check a recipient's receipt or ack of a notice from ``sender`` with ``digest`` (S6):
    the recipient's certificate, its signature and binding, that it was a recipient, and
    the relay's attestation of it. The certificate is judged at ``received_at`` (this
    client's recorded time of receipt) for a stored confirmation, else live at ``now``
    (see :func:`judged_time`)."""
    conf = Confirmation.decode(confirmation)
    if expected_kind is not None and conf.kind != expected_kind:
        raise BadSignature(f"expected a {expected_kind}, got a {conf.kind}")
    if expected_recipient is not None and conf.recipient != expected_recipient:
        raise BadSignature(
            f"this {conf.kind} is signed as {conf.recipient}, not {expected_recipient}"
        )
    if recipients is not None and conf.recipient not in recipients:
        raise BadSignature(
            f"{conf.recipient} confirms notice {notice_id.hex()}, which was not addressed to it"
        )
    att = check_attestation(
        attestation,
        relay,
        event=ATTESTED[conf.kind],
        notice_id=notice_id,
        digest=digest,
        desk=conf.recipient,
    )
    cert = DeskCertificate.decode(signer_cert)
    if cert.desk != conf.recipient:
        raise UntrustedKey(f"the certificate sent with a {conf.kind} is for {cert.desk}")
    at = received_at if received_at is not None else judged_time(att.at, now, skew_ms)
    signer = trust.verify_signer(cert, at)
    # The recipient it must be from: the one the caller expects, else (its membership
    # among the notice's recipients checked above) the one it names.
    conf.verify(signer, notice_id=notice_id, digest=digest, sender=sender,
                recipient=DeskId(expected_recipient or conf.recipient))
    return VerifiedConfirmation(conf, att)


@dataclass(frozen=True, slots=True)
class VerifiedRejection:
    rejection: Rejection
    attestation: Attestation


def verify_rejection(
    rejection: bytes,
    attestation: bytes,
    signer_cert: bytes,
    *,
    trust: TrustStore,
    relay: RelayCard,
    notice_id: bytes,
    digest: bytes,
    sender: DeskId,
    now: int,
    skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS,
    recipients: Sequence[str] | None = None,
    expected_recipient: str | None = None,
) -> VerifiedRejection:
    """Check a recipient's rejection of a notice from ``sender`` with ``digest``: that the
    rejecting desk was a recipient, the relay's ``rejected`` attestation, the recipient's
    certificate under the pinned root (judged live at ``now``, see :func:`judged_time`),
    and its signature bound to this notice and us."""
    rej = Rejection.decode(rejection)
    if expected_recipient is not None and rej.recipient != expected_recipient:
        raise BadSignature(
            f"this rejection is signed as {rej.recipient}, not {expected_recipient}"
        )
    if recipients is not None and rej.recipient not in recipients:
        raise BadSignature(
            f"{rej.recipient} rejects notice {notice_id.hex()}, which was not addressed to it"
        )
    att = check_attestation(attestation, relay, event="rejected", notice_id=notice_id,
                            digest=digest, desk=rej.recipient)
    cert = DeskCertificate.decode(signer_cert)
    if cert.desk != rej.recipient:
        raise UntrustedKey(f"the certificate sent with a rejection is for {cert.desk}")
    signer = trust.verify_signer(cert, judged_time(att.at, now, skew_ms))
    rej.verify(signer, notice_id=notice_id, digest=digest, sender=sender,
               recipient=DeskId(expected_recipient or rej.recipient))
    return VerifiedRejection(rej, att)


@dataclass(frozen=True, slots=True)
class RelayStatement:
    """A verified escalation or resolution, signed by the relay.

    From an escalation statement (``keys.receipts.EscalationStatement``) every field is
    known; from a plain attestation only ``kind``, ``notice_id``, ``recipient``, ``level``
    and ``at``."""

    kind: str  # "escalated" | "resolved"
    notice_id: bytes
    digest: bytes
    recipient: str
    level: int
    at: int
    raw: bytes
    sender: str | None = None
    severity: str | None = None
    status: str | None = None
    track: str | None = None
    deadline: int | None = None
    delivered: bool | None = None
    final: bool | None = None


def _statement_type(raw: bytes) -> str:
    _, value = split(raw, what="relay statement", max_bytes=MAX_STATEMENT_BYTES)
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else ""


def check_statement(
    raw: bytes, relay: RelayCard, *, notice_id: bytes, digest: bytes | None = None
) -> RelayStatement:
    """Verify the relay's statement of an escalation or resolution of this notice."""
    if _statement_type(raw) == "escalation":
        st = EscalationStatement.decode(raw)
        st.verify(relay)
        if st.notice_id != notice_id:
            raise BadSignature("escalation statement is for another notice")
        if digest is not None and not equal(st.digest, digest):
            raise BadSignature("escalation statement is for another version of the notice")
        return RelayStatement(st.kind, st.notice_id, st.digest, st.recipient, st.level, st.at,
                              raw, st.sender, st.severity, st.status, st.track, st.deadline,
                              st.delivered, st.final)
    att = Attestation.decode(raw)
    att.verify(relay, notice_id=notice_id, digest=digest)
    if att.event not in ("escalated", "resolved"):
        raise BadSignature(f"the relay attests {att.event!r} where an escalation was expected")
    return RelayStatement(att.event, att.notice_id, att.digest, att.desk, att.level, att.at,
                          raw)


def verify_relay_event(event: Event, relay: RelayCard, digest: bytes | None) -> RelayStatement:
    """An escalation or resolution event: the relay's signed statement about one notice."""
    st = check_statement(
        _require(event.attestation, "statement", event.kind), relay,
        notice_id=event.notice_id, digest=digest,
    )
    if ATTESTED[event.kind] != st.kind:
        raise BadSignature(f"a {event.kind} event carries a statement of {st.kind!r}")
    return st


# ----------------------------------------------------------------------------- status


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a notice's life as the status shows it, with what was verified.

    ``at``: the time the signer put in its signed statement (None for relay-only steps);
    ``attested_at``: the relay's signed time; ``verified``: every signature held;
    ``problem``: what did not, if not."""

    at: int | None
    attested_at: int | None
    verified: bool
    problem: str | None = None
    level: int = 0
    message: str | None = None
    #: For escalations: "escalated" or "resolved".
    kind: str | None = None
    #: For a rejection: its reason code (keys.receipts.REJECTION_REASONS).
    reason: str | None = None
    #: For an acknowledgement: signed as made by the recipient's client, not a person.
    automatic: bool = False
    #: For escalations: "ack" or "response" (None from a bare attestation).
    track: str | None = None


@dataclass(frozen=True, slots=True)
class RecipientView:
    desk: str
    delivered: Step | None
    acknowledged: Step | None
    escalations: tuple[Step, ...] = ()
    #: The recipient's signed rejection: it could not open the notice (``reason``).
    rejected: Step | None = None


@dataclass(frozen=True, slots=True)
class NoticeStatusView:
    notice_id: bytes
    sender: str
    severity: str
    status: str
    digest: bytes
    accepted: Step
    #: True/False when this desk holds the notice and compared digests; None if it cannot.
    digest_matches: bool | None
    recipients: tuple[RecipientView, ...]
    #: The relay's frozen deadline policy per recipient (as it reports it; not signed).
    policy: dict[str, Any] | None = None
    #: Where the relay's recipients, severity, status or sender differ from this desk's
    #: own copy of the notice (its outbox, or the envelope it received).
    mismatches: tuple[StatusMismatch, ...] = ()

    @property
    def verified(self) -> bool:
        """Every signature in this status verified, the digest is the one we hold, and the
        relay's account of the notice agrees with our own copy."""
        steps = [self.accepted]
        for r in self.recipients:
            steps += [s for s in (r.delivered, r.acknowledged, r.rejected) if s is not None]
            steps += list(r.escalations)
        return (self.digest_matches is not False and not self.mismatches
                and all(s.verified for s in steps))


@dataclass(frozen=True, slots=True)
class OwnCopy:
    """What this desk itself knows of a notice (from its outbox or the envelope it holds),
    to compare the relay's status with."""

    sender: str
    severity: str
    status: str
    recipients: tuple[str, ...]
    digest: bytes


def compare_with_own_copy(status: NoticeStatus, own: OwnCopy) -> tuple[StatusMismatch, ...]:
    """Every field where the relay's status differs from this desk's own copy."""
    relay_recipients = tuple(sorted(r.desk for r in status.recipients))
    pairs = (
        ("sender", own.sender, status.sender),
        ("severity", own.severity, status.severity),
        ("status", own.status, status.status),
        ("recipients", ",".join(sorted(own.recipients)), ",".join(relay_recipients)),
    )
    return tuple(StatusMismatch(status.notice_id, name, ours, theirs)
                 for name, ours, theirs in pairs if ours != theirs)


def _problem(exc: Exception) -> str:
    code = getattr(exc, "code", type(exc).__name__)
    return f"{exc} [{code}]"


def _confirmation_step(
    r: RecipientStatus,
    raw: bytes | None,
    attestation: bytes | None,
    kind: str,
    *,
    status: NoticeStatus,
    trust: TrustStore,
    relay: RelayCard,
    me: DeskSecrets | None,
    now: int,
    skew_ms: int,
    received_at: Mapping[bytes, int],
) -> Step | None:
    if raw is None:
        return None
    try:
        if attestation is None or r.signer_cert is None:
            raise MalformedInput(f"the {kind} of {r.desk} comes without attestation or certificate")
        v = verify_confirmation(
            raw, attestation, r.signer_cert, trust=trust, relay=relay,
            notice_id=status.notice_id, digest=status.digest, sender=status.sender,
            now=now, skew_ms=skew_ms, received_at=received_at.get(raw),
            expected_recipient=r.desk, expected_kind=kind,
        )
    except Exception as exc:  # a status shows what failed; it never stops at the first one
        return Step(None, None, False, _problem(exc))
    message = None
    if me is not None and me.desk == status.sender and v.confirmation.message is not None:
        try:
            message = v.confirmation.open_message(me)
        except HotlineError as exc:
            return Step(v.confirmation.at, v.attestation.at, False, _problem(exc))
    return Step(v.confirmation.at, v.attestation.at, True, None, message=message,
                automatic=v.confirmation.automatic)


def _rejection_step(r: RecipientStatus, *, status: NoticeStatus, trust: TrustStore,
                    relay: RelayCard, now: int, skew_ms: int) -> Step | None:
    if r.rejection is None:
        return None
    try:
        if r.rejection_attestation is None or r.signer_cert is None:
            raise MalformedInput(f"the rejection of {r.desk} comes without attestation or "
                                 "certificate")
        v = verify_rejection(r.rejection, r.rejection_attestation, r.signer_cert, trust=trust,
                             relay=relay, notice_id=status.notice_id, digest=status.digest,
                             sender=status.sender, now=now, skew_ms=skew_ms,
                             expected_recipient=r.desk)
    except Exception as exc:  # flagged, like every other item
        return Step(None, None, False, _problem(exc))
    return Step(v.rejection.at, v.attestation.at, True, reason=v.rejection.reason)


def status_view(
    status: NoticeStatus,
    *,
    trust: TrustStore,
    relay: RelayCard,
    me: DeskSecrets | None = None,
    now: int,
    skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS,
    own: OwnCopy | None = None,
    received_at: Mapping[bytes, int] | None = None,
) -> NoticeStatusView:
    """Verify every signed item of a notice's status; flag each instead of raising.

    ``own`` is this desk's own copy of the notice: the relay's digest, sender, severity,
    status and recipients must match it. ``received_at`` maps confirmations this client
    stored to its recorded time of receipt (their certificates are judged then; others
    live at ``now``)."""
    stored = received_at or {}
    local_digest = own.digest if own is not None else None
    try:
        att = check_attestation(
            status.accepted, relay, event="accepted", notice_id=status.notice_id,
            digest=status.digest, desk=status.sender,
        )
        accepted = Step(None, att.at, True)
    except Exception as exc:  # flagged, like every other item
        accepted = Step(None, None, False, _problem(exc))
    recipients = []
    for r in status.recipients:
        escalations = []
        for raw in r.escalations:
            try:
                e = check_statement(raw, relay, notice_id=status.notice_id,
                                    digest=status.digest)
                if e.recipient != r.desk:
                    raise BadSignature(f"an escalation listed for {r.desk} concerns {e.recipient}")
                escalations.append(Step(None, e.at, True, level=e.level, kind=e.kind,
                                        track=e.track))
            except Exception as exc:  # flagged
                escalations.append(Step(None, None, False, _problem(exc)))
        recipients.append(
            RecipientView(
                r.desk,
                _confirmation_step(r, r.receipt, r.receipt_attestation, "receipt",
                                   status=status, trust=trust, relay=relay, me=me, now=now,
                                   skew_ms=skew_ms, received_at=stored),
                _confirmation_step(r, r.ack, r.ack_attestation, "ack",
                                   status=status, trust=trust, relay=relay, me=me, now=now,
                                   skew_ms=skew_ms, received_at=stored),
                tuple(escalations),
                _rejection_step(r, status=status, trust=trust, relay=relay, now=now,
                                skew_ms=skew_ms),
            )
        )
    digest_matches = None if local_digest is None else local_digest == status.digest
    return NoticeStatusView(
        status.notice_id, status.sender, status.severity, status.status, status.digest,
        accepted, digest_matches, tuple(recipients), status.policy,
        compare_with_own_copy(status, own) if own is not None else (),
    )


__all__ = [
    "DEFAULT_MAX_CLOCK_SKEW_MS",
    "NoticeStatusView",
    "OwnCopy",
    "RecipientView",
    "RelayStatement",
    "Step",
    "VerifiedConfirmation",
    "VerifiedNotice",
    "VerifiedRejection",
    "beyond_skew",
    "check_attestation",
    "check_statement",
    "compare_with_own_copy",
    "judged_time",
    "reopen",
    "status_view",
    "verify_confirmation",
    "verify_notice",
    "verify_rejection",
    "verify_relay_event",
]
