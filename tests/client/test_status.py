"""A notice's status: every signature in it is verified, and each item says whether it was."""

from __future__ import annotations

import pytest

from keys import Confirmation
from keys.frames import NoticeStatus, RecipientStatus
from tests.client.conftest import MakeClient
from tests.client.fakes import FakeRelay
from tests.factory import NOW, Federation, report


async def test_status_after_receipt_and_ack_is_fully_verified(make_client: MakeClient) -> None:
    """Accepted, delivered and acknowledged, each verified; the sender reads the message."""
    us, cn = make_client("us.caisi"), make_client("cn.cac")
    sent = await us.send(to=["cn.cac", "cn.mss"], severity="high", notice=report())
    await cn.fetch()
    await cn.ack(sent.notice_id, message="ok")
    view = await us.status(sent.notice_id)
    assert view.verified and view.digest_matches is True and view.accepted.attested_at == NOW
    by_desk = {r.desk: r for r in view.recipients}
    cac, mss = by_desk["cn.cac"], by_desk["cn.mss"]
    assert cac.delivered is not None and cac.delivered.verified
    assert cac.acknowledged is not None and cac.acknowledged.message == "ok"
    assert mss.delivered is None and mss.acknowledged is None


async def test_recipient_sees_status_without_the_senders_message(
    make_client: MakeClient,
) -> None:
    """A recipient may look at the status; the ack message stays sealed to the sender."""
    us, cn = make_client("us.caisi"), make_client("cn.cac")
    sent = await us.send(to=["cn.cac"], severity="high", notice=report())
    await cn.fetch()
    await cn.ack(sent.notice_id, message="private to us.caisi")
    view = await cn.status(sent.notice_id)
    (r,) = view.recipients
    assert view.verified and r.acknowledged is not None and r.acknowledged.message is None


async def test_receipt_forged_by_another_desk_is_flagged(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """A receipt signed by cn.mss but listed for cn.cac shows as unverified."""
    us, cn = make_client("us.caisi"), make_client("cn.cac")
    sent = await us.send(to=["cn.cac"], severity="high", notice=report())
    await cn.fetch()
    real = fake_relay.status(sent.notice_id)
    env = fake_relay.notices[sent.notice_id]
    forged = Confirmation.create("receipt", notice_id=env.notice_id, digest=env.digest,
                                 sender="us.caisi", me=fed.desks["cn.mss"].secrets, at=NOW)  # type: ignore[arg-type]
    (r,) = real.recipients
    tampered = NoticeStatus(
        real.notice_id, real.sender, real.severity, real.status, real.accepted, real.digest,
        (RecipientStatus(r.desk, r.signer_cert, forged.encode(), r.receipt_attestation,
                         None, None),),
    )

    async def fake_status(notice_id: bytes) -> NoticeStatus:
        return tampered

    us.connection.get_status = fake_status  # type: ignore[method-assign]
    view = await us.status(sent.notice_id)
    (rv,) = view.recipients
    assert rv.delivered is not None and not rv.delivered.verified
    assert rv.delivered.problem and not view.verified


async def test_status_with_another_digest_is_flagged(
    make_client: MakeClient, fake_relay: FakeRelay
) -> None:
    """A relay reporting on another version of our notice is caught by the digest."""
    us = make_client("us.caisi")
    sent = await us.send(to=["cn.cac"], severity="high", notice=report())
    real = fake_relay.status(sent.notice_id)
    other = bytes(32)
    swapped = NoticeStatus(real.notice_id, real.sender, real.severity, real.status,
                           fake_relay.attest("accepted", real.notice_id, other, "us.caisi"),
                           other, real.recipients)

    async def fake_status(notice_id: bytes) -> NoticeStatus:
        return swapped

    us.connection.get_status = fake_status  # type: ignore[method-assign]
    view = await us.status(sent.notice_id)
    assert view.digest_matches is False and view.accepted.verified and not view.verified


async def test_relay_dropping_the_unacknowledged_recipient_and_relabeling_severity_fails_status(
    make_client: MakeClient, fake_relay: FakeRelay
) -> None:
    """The relay leaves out cn.mss, which never acknowledged, and reports the critical
    notice as low: every signature it shows is genuine, but the status is compared with
    the outbox and fails verification, naming both differences."""
    us, cn = make_client("us.caisi"), make_client("cn.cac")
    sent = await us.send(to=["cn.cac", "cn.mss"], severity="critical", notice=report())
    await cn.fetch()
    await cn.ack(sent.notice_id)
    fake_relay.status_drop_recipients = {"cn.mss"}
    fake_relay.status_severity = "low"
    view = await us.status(sent.notice_id)
    (r,) = view.recipients
    assert r.acknowledged is not None and r.acknowledged.verified  # the rest is genuine
    assert not view.verified
    assert {(m.field, m.ours, m.relay) for m in view.mismatches} == {
        ("severity", "critical", "low"), ("recipients", "cn.cac,cn.mss", "cn.cac")}


@pytest.mark.parametrize("viewer", ["us.caisi", "cn.cac"])
async def test_relay_relabeling_an_actual_notice_as_an_exercise_fails_status(
    make_client: MakeClient, fake_relay: FakeRelay, viewer: str
) -> None:
    """Sender (its outbox) and recipient (the envelope it holds) both catch a relabelled
    status."""
    us, cn = make_client("us.caisi"), make_client("cn.cac")
    sent = await us.send(to=["cn.cac"], severity="high", notice=report())
    await cn.fetch()
    assert (await (us if viewer == "us.caisi" else cn).status(sent.notice_id)).verified
    fake_relay.status_status = "exercise"
    view = await (us if viewer == "us.caisi" else cn).status(sent.notice_id)
    assert [(m.field, m.ours, m.relay) for m in view.mismatches] == [
        ("status", "actual", "exercise")]
    assert not view.verified
