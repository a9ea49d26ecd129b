"""Sending and acknowledging with the relay down: what could not be delivered is kept in
the desk's outbox, said to be queued (never to be done), listed, and posted, the same
bytes and in order, by the next run; with queue=False nothing is kept."""

from __future__ import annotations

import pytest

from client.client import HotlineClient
from client.connection import RelayUnavailable
from client.items import ConfirmationEvent, ReceivedNotice
from tests.client.conftest import MakeClient
from tests.client.fakes import FakeConnection, FakeRelay
from tests.factory import Federation, report


def _with_contacts(client: HotlineClient, fed: Federation, *desks: str) -> None:
    """The desk holds these desks' verified cards (as 'contacts add' or an earlier send
    leave them)."""
    for d in desks:
        client.home.write(f"contacts/{d}.card", fed.desks[d].card.encode())


async def test_send_with_the_relay_down_is_sealed_from_contacts_queued_and_sent_by_the_next_run(
        make_client: MakeClient, fake_relay: FakeRelay, fed: Federation) -> None:
    """The relay is down: the notice is sealed to the contact card, kept, reported queued
    (no acceptance), listed by outbox(); the next run posts the very same bytes."""
    down = FakeConnection(fake_relay, "us.caisi", down=True)
    us = make_client("us.caisi", connection=down)
    _with_contacts(us, fed, "cn.cac")
    result = await us.send(to=["cn.cac"], severity="critical", notice=report())
    assert result.queued and result.accepted_at is None and result.attestation is None
    assert result.reason is not None and "connection refused" in result.reason
    (waiting,) = us.outbox()
    assert (waiting.kind, waiting.notice_id, waiting.peers) == (
        "notice", result.notice_id, ("cn.cac",))
    assert fake_relay.notices == {}
    # It did not wait for the relay twice: the card lookup found it down, the post was
    # not tried again.
    assert down.posted == []
    (sealed,) = us.state.unconfirmed()
    await us.close()

    up = FakeConnection(fake_relay, "us.caisi")
    us = make_client("us.caisi", connection=up)
    await us.start()
    assert up.posted == [sealed.envelope]
    assert list(fake_relay.notices) == [result.notice_id]
    assert us.outbox() == []
    cn = make_client("cn.cac")
    (got,) = [i for i in await cn.fetch() if isinstance(i, ReceivedNotice)]
    assert got.notice_id == result.notice_id and got.report == report()


async def test_send_with_the_relay_down_and_no_contact_card_says_nothing_was_sealed(
        make_client: MakeClient, fake_relay: FakeRelay) -> None:
    us = make_client("us.caisi", connection=FakeConnection(fake_relay, "us.caisi", down=True))
    with pytest.raises(RelayUnavailable, match="nothing was sealed or sent"):
        await us.send(to=["cn.cac"], severity="high", notice=report())
    assert us.outbox() == [] and us.state.outbox_list() == []


async def test_send_without_queuing_keeps_nothing_and_says_so(
        make_client: MakeClient, fake_relay: FakeRelay, fed: Federation) -> None:
    """queue=False: the relay unreachable at the post, the notice is withdrawn from the
    outbox (a later run never sends it) and the error says it was NOT sent."""
    conn = FakeConnection(fake_relay, "us.caisi", fail_posts=1)
    us = make_client("us.caisi", connection=conn)
    with pytest.raises(RelayUnavailable, match="NOT sent and is NOT kept"):
        await us.send(to=["cn.cac"], severity="high", notice=report(), queue=False)
    assert us.outbox() == []
    assert await us.retry_outbox() == 0
    assert fake_relay.notices == {} and len(conn.posted) == 1


async def test_ack_with_the_relay_down_is_queued_and_the_next_run_posts_acks_in_order(
        make_client: MakeClient, fake_relay: FakeRelay, fed: Federation) -> None:
    """Two acks signed while the relay is down (one with a message sealed to the sender's
    contact card) are reported queued, not done; the next run posts them in the order they
    were signed, and the sender reads the message."""
    us = make_client("us.caisi")
    first = await us.send(to=["cn.cac"], severity="critical", notice=report())
    second = await us.send(to=["cn.cac"], severity="low", notice=report())
    conn = FakeConnection(fake_relay, "cn.cac")
    cn = make_client("cn.cac", connection=conn)
    _with_contacts(cn, fed, "us.caisi")
    await cn.fetch()
    conn.down = True
    a1 = await cn.ack(first.notice_id, message="seen, blocking")
    a2 = await cn.ack(second.notice_id)
    assert a1.queued and a2.queued and a1.acknowledged_at is None
    assert [(i.kind, i.notice_id) for i in cn.outbox()] == [
        ("ack", first.notice_id), ("ack", second.notice_id)]
    assert [n.notice_id for n in cn.inbox()] == [first.notice_id, second.notice_id]
    assert not [k for k in fake_relay.confirmations if k[2] == "ack"]
    await cn.close()

    up = FakeConnection(fake_relay, "cn.cac")
    cn = make_client("cn.cac", connection=up)
    await cn.start()
    from keys import Confirmation

    acks = [Confirmation.decode(c) for c in up.confirmations]
    assert [(c.kind, c.notice_id) for c in acks] == [
        ("ack", first.notice_id), ("ack", second.notice_id)]
    assert cn.outbox() == [] and cn.inbox() == []
    items = [i for i in await us.fetch() if isinstance(i, ConfirmationEvent) and i.kind == "ack"]
    assert [(i.notice_id, i.message) for i in items] == [
        (first.notice_id, "seen, blocking"), (second.notice_id, None)]


async def test_ack_without_queuing_keeps_nothing_and_says_it_was_not_recorded(
        make_client: MakeClient, fake_relay: FakeRelay) -> None:
    us = make_client("us.caisi")
    sent = await us.send(to=["cn.cac"], severity="high", notice=report())
    conn = FakeConnection(fake_relay, "cn.cac")
    cn = make_client("cn.cac", connection=conn)
    await cn.fetch()
    conn.down = True
    with pytest.raises(RelayUnavailable, match="NOT recorded by the relay and NOT kept"):
        await cn.ack(sent.notice_id, queue=False)
    assert cn.outbox() == []
    assert [n.notice_id for n in cn.inbox()] == [sent.notice_id]


async def test_receipt_that_could_not_be_posted_is_kept_and_posted_before_a_later_ack(
        make_client: MakeClient, fake_relay: FakeRelay) -> None:
    """A notice received while its receipt could not be posted: the signed receipt waits
    in the outbox; the ack made later reaches the relay after it, never before."""
    us = make_client("us.caisi")
    sent = await us.send(to=["cn.cac"], severity="high", notice=report())
    conn = FakeConnection(fake_relay, "cn.cac")
    refused: list[bytes] = []
    real = conn.post_confirmation

    async def flaky(raw: bytes) -> object:
        if not refused:
            refused.append(raw)
            raise RelayUnavailable("connection refused (scripted)")
        return await real(raw)

    conn.post_confirmation = flaky  # type: ignore[method-assign,assignment]
    cn = make_client("cn.cac", connection=conn)
    await cn.fetch()
    assert [i.kind for i in cn.outbox()] == ["receipt"]
    await cn.ack(sent.notice_id)
    from keys import Confirmation

    kinds = [Confirmation.decode(c).kind for c in conn.confirmations]
    assert kinds == ["receipt", "ack"]
    assert conn.confirmations[0] == refused[0]  # the very bytes first signed
    assert cn.outbox() == []

