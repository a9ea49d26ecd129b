"""Sending: recipients' keys are verified before sealing, the outbox is written before the
POST, and a notice is resent with the same bytes until the relay accepts it."""

from __future__ import annotations

import nacl.public
import nacl.signing
import pytest

from client.client import UnknownDesk
from client.connection import RelayError
from keys import (
    BadSignature,
    Confirmation,
    DecryptionFailed,
    DeskCard,
    EkCertificate,
    Envelope,
    KeyCertInvalid,
    UntrustedKey,
)
from keys.errors import UsageError
from keys.ids import DeskId
from tests.client.conftest import MakeClient
from tests.client.fakes import FakeConnection, FakeRelay
from tests.factory import DAY, NOW, Federation, report


async def test_send_seals_to_verified_recipients_and_records_acceptance(
    make_client: MakeClient, fake_relay: FakeRelay
) -> None:
    """The relay gets one envelope, addressed to both desks; the outbox holds it accepted."""
    us = make_client("us.caisi")
    result = await us.send(to=["cn.mss", "cn.cac"], severity="critical", notice=report())
    env = fake_relay.notices[result.notice_id]
    assert env.header.recipients == ("cn.cac", "cn.mss")
    assert result.accepted_at == NOW and result.attestation.event == "accepted"
    record = us.state.outbox(result.notice_id)
    assert record is not None and record.state == "accepted" and record.envelope == env.raw


async def test_forged_encryption_key_served_by_the_relay_is_refused(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """A card whose EK certificate is not signed by the desk's identity key is refused
    before anything is sealed (the relay would read the notice otherwise)."""
    us = make_client("us.caisi")
    real = fed.desks["cn.cac"].card
    attacker_ik = nacl.signing.SigningKey.generate()
    attacker_ek = nacl.public.PrivateKey.generate()
    forged_ek = EkCertificate.issue(DeskId("cn.cac"), attacker_ik, bytes(attacker_ek.public_key),
                                    NOW - DAY, NOW + DAY)
    fake_relay.cards["cn.cac"] = DeskCard(real.cert, (forged_ek,)).encode()
    with pytest.raises(KeyCertInvalid):
        await us.send(to=["cn.cac"], severity="critical", notice=report())
    assert us.connection.posted == []  # type: ignore[attr-defined]
    assert us.state.outbox_list() == []


async def test_revoked_recipient_is_refused(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """A recipient whose key its country revoked gets nothing."""
    us = make_client("us.caisi")
    fed.revoke("cn.cac")
    with pytest.raises(UntrustedKey, match="revoked"):
        await us.send(to=["cn.cac"], severity="high", notice=report())
    assert us.connection.posted == []  # type: ignore[attr-defined]


async def test_card_of_another_desk_is_refused(
    make_client: MakeClient, fake_relay: FakeRelay
) -> None:
    """The relay cannot substitute cn.mss's valid card for cn.cac's."""
    us = make_client("us.caisi")
    fake_relay.cards["cn.cac"] = fake_relay.cards["cn.mss"]
    with pytest.raises(UntrustedKey, match="served"):
        await us.send(to=["cn.cac"], severity="high", notice=report())


async def test_unknown_recipient_is_a_clear_error(
    make_client: MakeClient, fake_relay: FakeRelay
) -> None:
    us = make_client("us.caisi")
    with pytest.raises(UnknownDesk, match=r"cn\.nobody"):
        await us.send(to=["cn.nobody"], severity="high", notice=report())


async def test_notice_to_self_is_refused(make_client: MakeClient) -> None:
    us = make_client("us.caisi")
    with pytest.raises(UsageError, match="own sender"):
        await us.send(to=["us.caisi"], severity="high", notice=report())


async def test_failed_post_leaves_the_notice_in_the_outbox_and_restart_resends_it(
    make_client: MakeClient, fake_relay: FakeRelay
) -> None:
    """A crash or outage after sealing: on restart the same bytes (same id) are posted."""
    first = FakeConnection(fake_relay, "us.caisi", fail_posts=1)
    us = make_client("us.caisi", connection=first)
    result = await us.send(to=["cn.cac"], severity="high", notice=report())
    assert result.queued and result.accepted_at is None and result.attestation is None
    assert result.reason is not None and "connection refused" in result.reason
    (pending,) = us.state.unconfirmed()
    assert pending.envelope == first.posted[0]
    assert fake_relay.notices == {}
    await us.close()

    second = FakeConnection(fake_relay, "us.caisi")
    us = make_client("us.caisi", connection=second)
    await us.start()
    assert second.posted == first.posted
    assert us.state.unconfirmed() == []
    assert list(fake_relay.notices) == [pending.notice_id]


async def test_lost_answer_is_resent_and_accepted_as_duplicate(
    make_client: MakeClient, fake_relay: FakeRelay
) -> None:
    """The relay stored the notice but its answer was lost: the resend is a duplicate."""
    us = make_client("us.caisi")
    result = await us.send(to=["cn.cac"], severity="high", notice=report())
    env = fake_relay.notices[result.notice_id]
    # Simulate the lost answer: the outbox row is still unconfirmed.
    us.state._db.execute("UPDATE outbox SET state = 'unconfirmed'")
    (again,) = await us.resend_unconfirmed()
    assert again.duplicate and again.notice_id == env.notice_id
    assert len(fake_relay.notices) == 1


async def test_refused_notice_is_marked_failed_and_not_resent(
    make_client: MakeClient, fake_relay: FakeRelay
) -> None:
    """A 4xx refusal is final: resending the same bytes cannot help."""
    refusing = FakeConnection(fake_relay, "us.caisi",
                              post_error=RelayError(409, "id_conflict", "used for other content"))
    us = make_client("us.caisi", connection=refusing)
    with pytest.raises(RelayError) as info:
        await us.send(to=["cn.cac"], severity="high", notice=report())
    assert info.value.code == "id_conflict" and info.value.status == 409
    (record,) = us.state.outbox_list()
    assert record.state == "failed" and "id_conflict" in (record.error or "")
    assert await us.resend_unconfirmed() == []
    assert len(refusing.posted) == 1


async def test_acceptance_with_a_bad_signature_is_not_believed(
    make_client: MakeClient, fake_relay: FakeRelay
) -> None:
    """An "accepted" whose attestation does not verify leaves the notice unconfirmed."""

    def flip(att: bytes) -> bytes:
        return att[:-1] + bytes([att[-1] ^ 1])

    us = make_client("us.caisi", connection=FakeConnection(fake_relay, "us.caisi", tamper=flip))
    with pytest.raises(BadSignature):
        await us.send(to=["cn.cac"], severity="high", notice=report())
    assert len(us.state.unconfirmed()) == 1


async def test_send_with_an_explicit_id_is_idempotent(
    make_client: MakeClient, fake_relay: FakeRelay
) -> None:
    """Sending twice with the same notice id posts once and returns the first acceptance."""
    us = make_client("us.caisi")
    nid = "0123456789abcdef0123456789abcdef"
    one = await us.send(to=["cn.cac"], severity="high", notice=report(), notice_id=nid)
    two = await us.send(to=["cn.cac"], severity="high", notice=report(), notice_id=nid)
    assert one.notice_id == two.notice_id == bytes.fromhex(nid)
    assert not one.duplicate and two.duplicate and two.accepted_at == one.accepted_at
    assert len(us.connection.posted) == 1  # type: ignore[attr-defined]


async def test_ack_message_is_readable_only_by_the_sender(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """The ack posted is bound to the notice and its message opens with the sender's key."""
    us, cn = make_client("us.caisi"), make_client("cn.cac")
    sent = await us.send(to=["cn.cac"], severity="high", notice=report())
    await cn.fetch()
    result = await cn.ack(sent.notice_id.hex()[:8], message="on it")
    assert result.notice_id == sent.notice_id and result.attestation.event == "acknowledged"
    ack_raw = cn.connection.confirmations[-1]  # type: ignore[attr-defined]
    ack = Confirmation.decode(ack_raw)
    env: Envelope = fake_relay.notices[sent.notice_id]
    ack.verify(fed.trust.verify_signer(fed.desks["cn.cac"].card.cert, NOW),  # type: ignore[union-attr]
               notice_id=env.notice_id, digest=env.digest, sender=DeskId("us.caisi"),
               recipient=DeskId("cn.cac"))
    assert ack.open_message(fed.desks["us.caisi"].secrets) == "on it"
    with pytest.raises(DecryptionFailed):
        ack.open_message(fed.desks["cn.mss"].secrets)


async def test_ack_of_an_unknown_notice_is_a_usage_error(make_client: MakeClient) -> None:
    cn = make_client("cn.cac")
    with pytest.raises(UsageError, match="no notice"):
        await cn.ack("0123456789abcdef0123456789abcdef")
