"""Receipts, acknowledgements and relay attestations (S5, S6; threat row 5; list (c) 27-28)."""

from __future__ import annotations

import nacl.signing
import pytest

from keys import (
    Attestation,
    BadSignature,
    Confirmation,
    DecryptionFailed,
    Envelope,
    MalformedInput,
    NotIntendedRecipient,
    RelayCard,
    seal,
)
from keys.ids import DeskId
from keys.primitives import Domain, key_id
from keys.receipts import ATTESTATION_EVENTS, MAX_ACK_MESSAGE_CHARS
from keys.signed import make
from tests.factory import NOW, Federation, report
from tests.keys._helpers import flip, pack, unpack

A, B, C = "us.caisi", "cn.cac", "cn.mss"


@pytest.fixture
def fed() -> Federation:
    return Federation.create(desks=(A, B, C))


def notice(fed: Federation, **kw: object) -> Envelope:
    return seal(report(**kw), sender=fed.desks[A].secrets,  # type: ignore[arg-type]
                recipients=[fed.verified(B), fed.verified(C)], severity="critical", now=NOW)


def confirm(fed: Federation, env: Envelope, kind: str = "ack", me: str = B,
            **kw: object) -> Confirmation:
    return Confirmation.create(kind, notice_id=env.notice_id, digest=env.digest, sender=A,  # type: ignore[arg-type]
                               me=fed.desks[me].secrets, at=NOW + 60_000, **kw)


def check(fed: Federation, data: bytes, env: Envelope, signer: str = B,
          recipient: str | None = None) -> Confirmation:
    conf = Confirmation.decode(data)
    conf.verify(fed.verified(signer), notice_id=env.notice_id, digest=env.digest, sender=A,  # type: ignore[arg-type]
                recipient=DeskId(recipient or signer))
    return conf


def forge(fed: Federation, env: Envelope, *, kind: str, domain: bytes, signer: str = B,
          claimed: str = B) -> bytes:
    """A confirmation of ``env`` claiming to be ``claimed``'s, signed by ``signer``."""
    body = {"v": 1, "type": kind, "notice_id": env.notice_id, "digest": env.digest, "to": A,
            "from": claimed, "from_kid": fed.desks[claimed].secrets.ik_kid, "at": NOW,
            "message": None}
    return make(fed.desks[signer].secrets.identity, domain, body).encode()


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("kind", ["receipt", "ack"])
def test_confirmation_round_trips(fed: Federation, kind: str) -> None:
    """A receipt or ack decodes to the same fields and verifies against the notice."""
    env = notice(fed)
    original = confirm(fed, env, kind)
    conf = check(fed, original.encode(), env)
    assert (conf.kind, conf.notice_id, conf.digest, conf.sender, conf.recipient, conf.at) == (
        kind, env.notice_id, env.digest, A, B, NOW + 60_000)
    assert conf.recipient_kid == fed.desks[B].secrets.ik_kid
    assert conf.message is None and conf.open_message(fed.desks[A].secrets) is None
    assert conf.encode() == original.encode()


def test_ack_from_each_recipient_verifies_only_as_its_own(fed: Federation) -> None:
    """B's and C's acks each verify under their own key and not under the other's."""
    env = notice(fed)
    for me, other in ((B, C), (C, B)):
        data = confirm(fed, env, me=me).encode()
        check(fed, data, env, signer=me)
        with pytest.raises(BadSignature) as exc:
            check(fed, data, env, signer=other)
        assert exc.value.code == "bad_signature"


# ------------------------------------------------------------------ binding (S5, S6)


def test_replayed_ack_for_another_notice_is_rejected(fed: Federation) -> None:
    """B's ack of notice 1 presented as the ack of notice 2 is refused (bad_signature)."""
    first, second = notice(fed), notice(fed)
    data = confirm(fed, first).encode()
    conf = Confirmation.decode(data)
    with pytest.raises(BadSignature) as exc:
        conf.verify(fed.verified(B), notice_id=second.notice_id, digest=second.digest, sender=A,
                    recipient=B)
    assert exc.value.code == "bad_signature"


def test_ack_for_another_version_of_the_notice_is_rejected(fed: Federation) -> None:
    """An ack bound to the same notice id but another digest does not acknowledge this one."""
    env = notice(fed)
    conf = Confirmation.decode(confirm(fed, env).encode())
    with pytest.raises(BadSignature) as exc:
        conf.verify(fed.verified(B), notice_id=env.notice_id, digest=flip(env.digest, 0),
                    sender=A, recipient=B)
    assert exc.value.code == "bad_signature"


def test_ack_with_rewritten_digest_is_rejected(fed: Federation) -> None:
    """A relay re-pointing B's ack at another notice by editing its body breaks the signature."""
    first, second = notice(fed), notice(fed)
    ack = confirm(fed, first)
    body = unpack(ack.signed.body) | {"notice_id": second.notice_id, "digest": second.digest}
    forged = pack([pack(body), ack.signed.signature])
    with pytest.raises(BadSignature) as exc:
        check(fed, forged, second)
    assert exc.value.code == "bad_signature"


def test_ack_signed_with_wrong_recipient_key_is_rejected(fed: Federation) -> None:
    """An ack that claims to be B's but is signed by C's key fails the signature check."""
    env = notice(fed)
    forged = forge(fed, env, kind="ack", domain=Domain.ACK, signer=C, claimed=B)
    with pytest.raises(BadSignature) as exc:
        check(fed, forged, env, signer=B)
    assert exc.value.code == "bad_signature"


def test_ack_from_a_thief_with_unrelated_key_is_rejected(fed: Federation) -> None:
    """An ack signed by an uncertified key but naming B and B's key id is refused."""
    env = notice(fed)
    thief = nacl.signing.SigningKey.generate()
    body = {"v": 1, "type": "ack", "notice_id": env.notice_id, "digest": env.digest, "to": A,
            "from": B, "from_kid": fed.desks[B].secrets.ik_kid, "at": NOW, "message": None}
    with pytest.raises(BadSignature) as exc:
        check(fed, make(thief, Domain.ACK, body).encode(), env)
    assert exc.value.code == "bad_signature"


def test_ack_addressed_to_another_sender_is_rejected(fed: Federation) -> None:
    """An ack whose 'to' is not the notice's sender is not an ack of that sender's notice."""
    env = notice(fed)
    ack = Confirmation.create("ack", notice_id=env.notice_id, digest=env.digest,
                              sender=C, me=fed.desks[B].secrets, at=NOW)  # type: ignore[arg-type]
    conf = Confirmation.decode(ack.encode())
    with pytest.raises(NotIntendedRecipient) as exc:
        conf.verify(fed.verified(B), notice_id=env.notice_id, digest=env.digest, sender=A,
                    recipient=B)
    assert exc.value.code == "not_intended_recipient"


@pytest.mark.parametrize(("kind", "domain"), [("ack", "RECEIPT"), ("receipt", "ACK")])
def test_confirmation_signed_with_the_other_confirmation_domain_is_rejected(
        fed: Federation, kind: str, domain: str) -> None:
    """An ack signed under the receipt prefix (or vice versa) is refused: cross-domain reuse."""
    env = notice(fed)
    forged = forge(fed, env, kind=kind, domain=getattr(Domain, domain))
    with pytest.raises(BadSignature) as exc:
        check(fed, forged, env)
    assert exc.value.code == "bad_signature"


def test_receipt_relabelled_as_ack_is_rejected(fed: Federation) -> None:
    """Changing a genuine receipt's type to 'ack' does not turn it into an acknowledgement."""
    env = notice(fed)
    receipt = confirm(fed, env, "receipt")
    body = unpack(receipt.signed.body) | {"type": "ack"}
    with pytest.raises(BadSignature) as exc:
        check(fed, pack([pack(body), receipt.signed.signature]), env)
    assert exc.value.code == "bad_signature"


@pytest.mark.parametrize("domain", [
    n for n in vars(Domain) if n.isupper() and n not in ("ACK", "RECEIPT")])
def test_ack_signed_with_a_foreign_domain_prefix_is_rejected(
        fed: Federation, domain: str) -> None:
    """An ack signature made under the AUTH (or any other) prefix is refused: bad_signature."""
    env = notice(fed)
    forged = forge(fed, env, kind="ack", domain=getattr(Domain, domain))
    with pytest.raises(BadSignature) as exc:
        check(fed, forged, env)
    assert exc.value.code == "bad_signature"


def test_flipped_bit_in_ack_signature_is_rejected(fed: Federation) -> None:
    """One flipped bit in an ack's signature is refused with bad_signature."""
    env = notice(fed)
    ack = confirm(fed, env)
    forged = pack([ack.signed.body, flip(ack.signed.signature, 5)])
    with pytest.raises(BadSignature) as exc:
        check(fed, forged, env)
    assert exc.value.code == "bad_signature"


# ------------------------------------------------------------------ ack messages


def test_ack_message_opens_only_for_the_sender(fed: Federation) -> None:
    """An ack's message is sealed to the sender: A reads it; C (or the relay) cannot."""
    env = notice(fed)
    text = "Received; our team is investigating. 已收到，正在调查。"
    ack = confirm(fed, env, message=text, sender_keys=fed.verified(A))
    conf = check(fed, ack.encode(), env)
    assert conf.open_message(fed.desks[A].secrets) == text
    assert text.encode() not in ack.encode()
    with pytest.raises(DecryptionFailed) as exc:
        conf.open_message(fed.desks[C].secrets)
    assert exc.value.code == "unknown_encryption_key"


def test_ack_message_transplanted_to_another_notice_is_rejected(fed: Federation) -> None:
    """A sealed ack message taken from notice 1 and put into B's ack of notice 2 is refused."""
    first, second = notice(fed), notice(fed)
    old = confirm(fed, first, message="Acknowledged: stand down.", sender_keys=fed.verified(A))
    body = {"v": 1, "type": "ack", "notice_id": second.notice_id, "digest": second.digest,
            "to": A, "from": B, "from_kid": fed.desks[B].secrets.ik_kid, "at": NOW,
            "message": old.message}
    conf = check(fed, make(fed.desks[B].secrets.identity, Domain.ACK, body).encode(), second)
    with pytest.raises(BadSignature) as exc:
        conf.open_message(fed.desks[A].secrets)
    assert exc.value.code == "bad_signature"


def test_ack_message_of_another_desk_is_rejected(fed: Federation) -> None:
    """C's sealed message for the same notice, put into B's ack, is refused (bound to desk)."""
    env = notice(fed)
    cs = confirm(fed, env, me=C, message="C says hello", sender_keys=fed.verified(A))
    body = unpack(confirm(fed, env).signed.body) | {"message": cs.message}
    conf = check(fed, make(fed.desks[B].secrets.identity, Domain.ACK, body).encode(), env)
    with pytest.raises(BadSignature) as exc:
        conf.open_message(fed.desks[A].secrets)
    assert exc.value.code == "bad_signature"


def test_receipt_carrying_a_message_is_malformed(fed: Federation) -> None:
    """A delivery receipt with a message field set is refused at decode (bad_value)."""
    env = notice(fed)
    ack = confirm(fed, env, message="hi", sender_keys=fed.verified(A))
    body = unpack(ack.signed.body) | {"type": "receipt"}
    data = make(fed.desks[B].secrets.identity, Domain.RECEIPT, body).encode()
    with pytest.raises(MalformedInput) as exc:
        Confirmation.decode(data)
    assert exc.value.code == "bad_value"


@pytest.mark.parametrize("char", ["a", "中", "😀"])
def test_ack_with_longest_allowed_message_round_trips(fed: Federation, char: str) -> None:
    """An ack whose message has MAX_ACK_MESSAGE_CHARS characters (any plane) decodes and opens."""
    env = notice(fed)
    text = char * MAX_ACK_MESSAGE_CHARS
    ack = confirm(fed, env, message=text, sender_keys=fed.verified(A))
    conf = check(fed, ack.encode(), env)
    assert conf.open_message(fed.desks[A].secrets) == text


# ------------------------------------------------------------------ relay attestations


@pytest.fixture
def relay() -> tuple[nacl.signing.SigningKey, RelayCard]:
    sk = nacl.signing.SigningKey.generate()
    return sk, RelayCard.decode(RelayCard.create("relay-1", sk, NOW).encode())


def attest(sk: nacl.signing.SigningKey, env: Envelope, event: str = "accepted",
           relay_id: str = "relay-1", level: int = 0) -> Attestation:
    return Attestation.create(event, relay_id=relay_id, relay_key=sk, notice_id=env.notice_id,
                              digest=env.digest, desk=A, at=NOW, level=level)  # type: ignore[arg-type]


@pytest.mark.parametrize("event", ATTESTATION_EVENTS)
def test_attestation_verifies_against_relay_card(
        fed: Federation, relay: tuple[nacl.signing.SigningKey, RelayCard], event: str) -> None:
    """Every attestation event round trips and verifies against the pinned relay card."""
    sk, card = relay
    env = notice(fed)
    att = Attestation.decode(attest(sk, env, event, level=3).encode())
    att.verify(card, notice_id=env.notice_id, digest=env.digest)
    assert (att.event, att.notice_id, att.digest, att.desk, att.at, att.level) == (
        event, env.notice_id, env.digest, A, NOW, 3)
    assert att.relay_kid == card.key_id == key_id(bytes(sk.verify_key))


def test_attestation_by_another_relay_key_is_rejected(
        fed: Federation, relay: tuple[nacl.signing.SigningKey, RelayCard]) -> None:
    """An attestation signed by a key other than the pinned relay's is refused."""
    _, card = relay
    env = notice(fed)
    impostor = nacl.signing.SigningKey.generate()
    att = Attestation.decode(attest(impostor, env).encode())
    with pytest.raises(BadSignature) as exc:
        att.verify(card)
    assert exc.value.code == "bad_signature"
    # Also when the impostor claims the pinned relay's key id in the body.
    body = unpack(att.signed.body) | {"relay_kid": card.key_id}
    forged = Attestation.decode(make(impostor, Domain.ATTESTATION, body).encode())
    with pytest.raises(BadSignature) as exc:
        forged.verify(card)
    assert exc.value.code == "bad_signature"


def test_tampered_attestation_body_is_rejected(
        fed: Federation, relay: tuple[nacl.signing.SigningKey, RelayCard]) -> None:
    """Changing an attestation's time or level after signing is detected."""
    sk, card = relay
    env = notice(fed)
    att = attest(sk, env, "escalated", level=1)
    for change in ({"at": NOW - 3_600_000}, {"level": 0}, {"event": "resolved"}):
        body = unpack(att.signed.body) | change
        forged = Attestation.decode(pack([pack(body), att.signed.signature]))
        with pytest.raises(BadSignature) as exc:
            forged.verify(card)
        assert exc.value.code == "bad_signature"


def test_attestation_for_another_notice_is_rejected(
        fed: Federation, relay: tuple[nacl.signing.SigningKey, RelayCard]) -> None:
    """A genuine attestation checked against another notice's id or digest is refused."""
    sk, card = relay
    first, second = notice(fed), notice(fed)
    att = Attestation.decode(attest(sk, first).encode())
    with pytest.raises(BadSignature):
        att.verify(card, notice_id=second.notice_id)
    with pytest.raises(BadSignature):
        att.verify(card, notice_id=first.notice_id, digest=second.digest)


def test_attestation_signature_is_not_a_relay_card_or_ack(
        fed: Federation, relay: tuple[nacl.signing.SigningKey, RelayCard]) -> None:
    """An attestation body signed by the relay key under the ACK prefix does not verify."""
    sk, card = relay
    env = notice(fed)
    body = unpack(attest(sk, env).signed.body)
    forged = Attestation.decode(make(sk, Domain.ACK, body).encode())
    with pytest.raises(BadSignature):
        forged.verify(card)


def test_tampered_relay_card_is_rejected(relay: tuple[nacl.signing.SigningKey, RelayCard]) -> None:
    """A relay card whose key was swapped after self-signing fails to decode (bad_signature)."""
    _, card = relay
    body = unpack(card.signed.body) | {"key": bytes(nacl.signing.SigningKey.generate()
                                                     .verify_key)}
    with pytest.raises(BadSignature) as exc:
        RelayCard.decode(pack([pack(body), card.signed.signature]))
    assert exc.value.code == "bad_signature"


def test_ack_by_another_desk_verified_with_that_desks_key_is_refused_for_this_recipient(
    fed: Federation,
) -> None:
    """C's own, validly signed ack, checked as the ack of recipient B with C's verified key
    (a caller that took the key from whoever signed), is refused by the function itself."""
    env = notice(fed)
    data = confirm(fed, env, me=C).encode()
    check(fed, data, env, signer=C)  # C's ack, as C's: fine
    with pytest.raises(BadSignature) as exc:
        check(fed, data, env, signer=C, recipient=B)
    assert exc.value.code == "bad_signature"
    assert "recipient cn.cac was expected" in str(exc.value)
    with pytest.raises(BadSignature):  # B's key for C's ack, expected from B: refused too
        check(fed, data, env, signer=B, recipient=B)
