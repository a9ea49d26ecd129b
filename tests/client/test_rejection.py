"""A recipient that cannot open a notice tells its sender, signed; the sender believes
only a rejection that verifies (the relay cannot forge, re-address or replay one)."""

from __future__ import annotations

import dataclasses

import nacl.signing

from client.cli.desk_cmd import _line
from client.client import NoticeRejected, NoticeRejectedByRecipient, ReceivedNotice
from keys import Envelope, seal
from keys.primitives import Domain
from keys.receipts import Rejection
from keys.signed import make
from tests.client.conftest import MakeClient
from tests.client.fakes import FakeRelay
from tests.factory import NOW, Federation, report
from tests.keys._helpers import divergent

US, CN, MSS = "us.caisi", "cn.cac", "cn.mss"


def divergent_notice(fed: Federation) -> bytes:
    """US to CN and MSS, the key wrapped for MSS not the committed one."""
    honest = seal(report(), sender=fed.desks[US].secrets,
                  recipients=[fed.verified(CN), fed.verified(MSS)], severity="critical",
                  now=NOW)
    return divergent(honest, fed.desks[US].secrets, fed.desks[CN].secrets,
                     [fed.verified(CN), fed.verified(MSS)], victim=MSS)


async def test_recipient_that_cannot_open_a_notice_tells_the_sender_signed(
        make_client: MakeClient, fake_relay: FakeRelay, fed: Federation) -> None:
    us, cn, mss = make_client(US), make_client(CN), make_client(MSS)
    raw = divergent_notice(fed)
    await us.connection.post_notice(raw)
    env = Envelope.decode(raw)
    (item,) = await mss.fetch()
    assert isinstance(item, NoticeRejected)
    assert (item.code, item.reported) == ("key_commitment_mismatch", "key_commitment_mismatch")
    (sent,) = [Rejection.decode(c) for c in mss.connection.confirmations]  # type: ignore[attr-defined]
    assert (sent.notice_id, sent.digest, sent.recipient, sent.sender, sent.reason) == (
        env.notice_id, env.digest, MSS, US, "key_commitment_mismatch")
    assert [type(i) for i in await cn.fetch()] == [ReceivedNotice]  # CN opens it fine
    items = await us.fetch()
    (told,) = [i for i in items if isinstance(i, NoticeRejectedByRecipient)]
    assert told.describe() == "cn.mss could not open your notice: key_commitment_mismatch"
    assert (told.notice_id, told.recipient, told.attested_at) == (env.notice_id, MSS, NOW)
    assert "cn.mss could not open your notice: key_commitment_mismatch" in _line(told)
    view = await us.status(env.notice_id)
    by_desk = {r.desk: r for r in view.recipients}
    rejected = by_desk[MSS].rejected
    assert rejected is not None and rejected.verified
    assert rejected.reason == "key_commitment_mismatch"
    assert by_desk[CN].rejected is None and view.verified


async def test_a_rejection_does_not_silence_the_senders_watchdog(
        make_client: MakeClient, fake_relay: FakeRelay, fed: Federation) -> None:
    """The notice is unread at the rejecting desk: the watchdog keeps watching it there."""
    us, env = await _sent(make_client, CN, MSS)
    await make_client(MSS).connection.send_confirmation(Rejection.create(
        notice_id=env.notice_id, digest=env.digest, sender=US, me=fed.desks[MSS].secrets,  # type: ignore[arg-type]
        at=NOW, reason="aead_failed").encode())
    items = await us.fetch()  # type: ignore[attr-defined]
    assert [(i.recipient, i.reason) for i in items
            if isinstance(i, NoticeRejectedByRecipient)] == [(MSS, "aead_failed")]
    watched = {(c[0], c[1]) for c in us.state.watch_candidates(0)}  # type: ignore[attr-defined]
    assert {(env.notice_id, CN), (env.notice_id, MSS)} <= watched


async def test_notice_the_relay_broke_is_not_blamed_on_the_sender(
        make_client: MakeClient, fake_relay: FakeRelay, fed: Federation) -> None:
    """An envelope whose outer signature fails proves nothing about its sender: the
    recipient records it and sends no rejection."""
    mss = make_client(MSS)
    env = seal(report(), sender=fed.desks[US].secrets, recipients=[fed.verified(MSS)],
               severity="high", now=NOW)
    broken = env.raw[:-1] + bytes([env.raw[-1] ^ 1])
    fake_relay.notices[env.notice_id] = env
    fake_relay.push(MSS, kind="notice", notice_id=env.notice_id, envelope=broken,
                    attestation=fake_relay.attest("accepted", env.notice_id,
                                                  Envelope.decode(broken).digest, US),
                    signer_cert=fake_relay.cert(US))
    (item,) = await mss.fetch()
    assert isinstance(item, NoticeRejected) and item.reported is None
    assert mss.connection.confirmations == []  # type: ignore[attr-defined]


def _rejection_body(fed: Federation, env: Envelope, claimed: str) -> dict[str, object]:
    return {"v": 1, "type": "rejection", "notice_id": env.notice_id, "digest": env.digest,
            "to": US, "from": claimed, "from_kid": fed.desks[claimed].secrets.ik_kid,
            "at": NOW, "reason": "key_commitment_mismatch"}


async def _sent(make_client: MakeClient, *to: str) -> tuple[object, Envelope]:
    us = make_client(US)
    result = await us.send(to=list(to), severity="critical", notice=report())
    return us, Envelope.decode(us.state.outbox(result.notice_id).envelope)  # type: ignore[union-attr]


async def test_forged_rejection_signed_by_the_relay_is_refused(
        make_client: MakeClient, fake_relay: FakeRelay, fed: Federation) -> None:
    """The relay signs a rejection in MSS's name with its own key (or any other key)."""
    us, env = await _sent(make_client, CN, MSS)
    for key in (fake_relay.key, nacl.signing.SigningKey.generate(),
                fed.desks[CN].secrets.identity):
        forged = make(key, Domain.REJECTION, _rejection_body(fed, env, MSS)).encode()
        fake_relay.push(US, kind="rejected", notice_id=env.notice_id, confirmation=forged,
                        attestation=fake_relay.attest("rejected", env.notice_id, env.digest,
                                                      MSS),
                        signer_cert=fake_relay.cert(MSS))
    items = await us.fetch()  # type: ignore[attr-defined]
    assert not [i for i in items if isinstance(i, NoticeRejectedByRecipient)]
    assert [i.code for i in items if isinstance(i, NoticeRejected)] == ["bad_signature"] * 3


async def test_replayed_rejection_for_another_notice_is_refused(
        make_client: MakeClient, fake_relay: FakeRelay, fed: Federation) -> None:
    """MSS's genuine rejection of one notice, pushed (and attested) as a rejection of
    another notice to the same recipients."""
    us, first = await _sent(make_client, CN, MSS)
    second = Envelope.decode(us.state.outbox(  # type: ignore[attr-defined]
        (await us.send(to=[CN, MSS], severity="critical", notice=report())).notice_id  # type: ignore[attr-defined]
    ).envelope)
    genuine = Rejection.create(notice_id=first.notice_id, digest=first.digest, sender=US,  # type: ignore[arg-type]
                               me=fed.desks[MSS].secrets, at=NOW,
                               reason="key_commitment_mismatch").encode()
    fake_relay.push(US, kind="rejected", notice_id=second.notice_id, confirmation=genuine,
                    attestation=fake_relay.attest("rejected", second.notice_id, second.digest,
                                                  MSS),
                    signer_cert=fake_relay.cert(MSS))
    items = await us.fetch()  # type: ignore[attr-defined]
    assert not [i for i in items if isinstance(i, NoticeRejectedByRecipient)]
    assert [i.code for i in items if isinstance(i, NoticeRejected)] == ["bad_signature"]


async def test_rejection_by_a_desk_the_notice_was_not_addressed_to_is_refused(
        make_client: MakeClient, fake_relay: FakeRelay, fed: Federation) -> None:
    """CN signs a genuine rejection of a notice sent to MSS only."""
    us, env = await _sent(make_client, MSS)
    theirs = Rejection.create(notice_id=env.notice_id, digest=env.digest, sender=US,  # type: ignore[arg-type]
                              me=fed.desks[CN].secrets, at=NOW,
                              reason="aead_failed").encode()
    fake_relay.push(US, kind="rejected", notice_id=env.notice_id, confirmation=theirs,
                    attestation=fake_relay.attest("rejected", env.notice_id, env.digest, CN),
                    signer_cert=fake_relay.cert(CN))
    items = await us.fetch()  # type: ignore[attr-defined]
    assert not [i for i in items if isinstance(i, NoticeRejectedByRecipient)]
    assert [i.code for i in items if isinstance(i, NoticeRejected)] == ["bad_signature"]


async def test_status_listing_one_recipients_rejection_under_another_is_flagged(
        make_client: MakeClient, fake_relay: FakeRelay, fed: Federation) -> None:
    us, env = await _sent(make_client, CN, MSS)
    genuine = Rejection.create(notice_id=env.notice_id, digest=env.digest, sender=US,  # type: ignore[arg-type]
                               me=fed.desks[MSS].secrets, at=NOW,
                               reason="key_commitment_mismatch").encode()
    # The relay files MSS's rejection, with MSS's certificate, in CN's row.
    honest = fake_relay.status(env.notice_id)
    rows = tuple(dataclasses.replace(
        r, signer_cert=fake_relay.cert(MSS), rejection=genuine,
        rejection_attestation=fake_relay.attest("rejected", env.notice_id, env.digest, MSS))
        if r.desk == CN else r for r in honest.recipients)
    fake_relay.status = lambda _nid: dataclasses.replace(honest, recipients=rows)  # type: ignore[method-assign,assignment]
    view = await us.status(env.notice_id)  # type: ignore[attr-defined]
    (cn_row,) = [r for r in view.recipients if r.desk == CN]
    assert cn_row.rejected is not None and not cn_row.rejected.verified
    assert not view.verified
