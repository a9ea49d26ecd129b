"""A recipient's signed rejection of a notice it cannot open, and which failures are the
sender's to be told of (``HotlineError.sender_fault``)."""

from __future__ import annotations

import os

import nacl.signing
import pytest

from keys import BadSignature, Envelope, MalformedInput, NotIntendedRecipient, seal
from keys.envelope import open_envelope
from keys.errors import HotlineError, KeyCommitmentMismatch
from keys.primitives import Domain
from keys.receipts import REJECTION_REASONS, Rejection, statement_type
from keys.signed import make
from tests.factory import NOW, Federation, report
from tests.keys._helpers import (
    assemble,
    divergent,
    flip,
    fresh_header,
    header_of,
    unseal,
    wrap_for,
)

A, B, C = "us.caisi", "cn.cac", "cn.mss"


@pytest.fixture
def fed() -> Federation:
    return Federation.create(desks=(A, B, C))


def notice(fed: Federation) -> Envelope:
    return seal(report(), sender=fed.desks[A].secrets,
                recipients=[fed.verified(B), fed.verified(C)], severity="critical", now=NOW)


def reject(fed: Federation, env: Envelope, me: str = C,
           reason: str = "key_commitment_mismatch") -> Rejection:
    return Rejection.create(notice_id=env.notice_id, digest=env.digest, sender=A,  # type: ignore[arg-type]
                            me=fed.desks[me].secrets, at=NOW + 1000, reason=reason)


def check(fed: Federation, data: bytes, env: Envelope, *, signer: str = C,
          recipient: str = C, sender: str = A) -> Rejection:
    r = Rejection.decode(data)
    r.verify(fed.verified(signer), notice_id=env.notice_id, digest=env.digest,
             sender=sender, recipient=recipient)  # type: ignore[arg-type]
    return r


def forged_body(fed: Federation, env: Envelope, claimed: str = C) -> dict[str, object]:
    return {"v": 1, "type": "rejection", "notice_id": env.notice_id, "digest": env.digest,
            "to": A, "from": claimed, "from_kid": fed.desks[claimed].secrets.ik_kid,
            "at": NOW, "reason": "key_commitment_mismatch"}


def test_rejection_round_trips_and_verifies(fed: Federation) -> None:
    env = notice(fed)
    original = reject(fed, env)
    r = check(fed, original.encode(), env)
    assert (r.notice_id, r.digest, r.sender, r.recipient, r.at, r.reason) == (
        env.notice_id, env.digest, A, C, NOW + 1000, "key_commitment_mismatch")
    assert r.encode() == original.encode()
    assert statement_type(r.encode()) == "rejection"


def test_forged_rejection_signed_by_another_desk_is_refused(fed: Federation) -> None:
    """B signs a rejection that claims to be C's: C's key does not verify it."""
    env = notice(fed)
    forged = make(fed.desks[B].secrets.identity, Domain.REJECTION, forged_body(fed, env))
    with pytest.raises(BadSignature):
        check(fed, forged.encode(), env)


def test_forged_rejection_signed_by_the_relay_is_refused(fed: Federation) -> None:
    env = notice(fed)
    relay_key = nacl.signing.SigningKey.generate()
    forged = make(relay_key, Domain.REJECTION, forged_body(fed, env))
    with pytest.raises(BadSignature):
        check(fed, forged.encode(), env)


def test_ack_signature_does_not_serve_as_a_rejection(fed: Federation) -> None:
    """C's signature under the ACK prefix over a rejection body: the prefix differs."""
    env = notice(fed)
    forged = make(fed.desks[C].secrets.identity, Domain.ACK, forged_body(fed, env))
    with pytest.raises(BadSignature):
        check(fed, forged.encode(), env)


def test_rejection_with_a_wrong_digest_is_refused(fed: Federation) -> None:
    env = notice(fed)
    r = Rejection.decode(reject(fed, env).encode())
    with pytest.raises(BadSignature):
        r.verify(fed.verified(C), notice_id=env.notice_id, digest=flip(env.digest, 0),
                 sender=A, recipient=C)  # type: ignore[arg-type]


def test_replayed_rejection_for_another_notice_is_refused(fed: Federation) -> None:
    first, second = notice(fed), notice(fed)
    data = reject(fed, first).encode()
    with pytest.raises(BadSignature):
        check(fed, data, second)


def test_rejection_verified_as_another_recipients_is_refused(fed: Federation) -> None:
    """C's valid rejection, checked as B's (with C's key or B's): the function refuses."""
    env = notice(fed)
    data = reject(fed, env).encode()
    with pytest.raises(BadSignature):
        check(fed, data, env, signer=C, recipient=B)
    with pytest.raises(BadSignature):
        check(fed, data, env, signer=B, recipient=B)


def test_rejection_addressed_to_another_sender_is_refused(fed: Federation) -> None:
    env = notice(fed)
    with pytest.raises(NotIntendedRecipient):
        check(fed, reject(fed, env).encode(), env, sender=B)


def test_unknown_reason_is_malformed(fed: Federation) -> None:
    env = notice(fed)
    body = forged_body(fed, env) | {"reason": "i_do_not_like_it"}
    with pytest.raises(MalformedInput):
        Rejection.decode(make(fed.desks[C].secrets.identity, Domain.REJECTION, body).encode())
    with pytest.raises(ValueError, match="rejection reason"):
        reject(fed, env, reason="i_do_not_like_it")


# ------------------------------------------------------------------ which failures are rejectable


def fault_of(fed: Federation, raw: bytes, me: str, sender: str = A) -> HotlineError:
    with pytest.raises(HotlineError) as exc:
        open_envelope(Envelope.decode(raw), me=fed.desks[me].secrets,
                      sender=fed.verified(sender))
    return exc.value


def test_wrong_key_wrapped_for_one_recipient_is_the_senders_fault(fed: Federation) -> None:
    env = notice(fed)
    raw = divergent(env, fed.desks[A].secrets, fed.desks[B].secrets,
                    [fed.verified(B), fed.verified(C)], victim=C)
    exc = fault_of(fed, raw, C)
    assert isinstance(exc, KeyCommitmentMismatch)
    assert exc.sender_fault == "key_commitment_mismatch" in REJECTION_REASONS
    open_envelope(Envelope.decode(raw), me=fed.desks[B].secrets, sender=fed.verified(A))


def test_forwarded_content_is_the_senders_fault(fed: Federation) -> None:
    """B re-seals A's content to C under its own signature: B (the sender) is at fault."""
    env = seal(report(), sender=fed.desks[A].secrets, recipients=[fed.verified(B)],
               severity="high", now=NOW)
    b = fed.desks[B].secrets
    _, plaintext = unseal(env, b)
    key = os.urandom(32)
    header = fresh_header(header_of(env), sender=b, content_key=key,
                          stanzas=[wrap_for(fed.verified(C), key)])
    exc = fault_of(fed, assemble(header, plaintext, key, b.identity), C, sender=B)
    assert exc.sender_fault == "not_intended_recipient"


def test_broken_outer_signature_is_not_the_senders_fault(fed: Federation) -> None:
    """Bytes the sender's key did not sign prove nothing about the sender: no rejection."""
    env = notice(fed)
    raw = env.raw[:-1] + bytes([env.raw[-1] ^ 1])
    exc = fault_of(fed, raw, C)
    assert isinstance(exc, BadSignature) and exc.sender_fault is None
