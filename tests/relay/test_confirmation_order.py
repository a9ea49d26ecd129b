"""Confirmations in an unusual order, as PROTOCOL.md 16.4 documents them."""

from __future__ import annotations

from pathlib import Path

from keys.receipts import Attestation
from tests.factory import NOW, Federation
from tests.relay.inproc import InProcessRelay


async def test_receipt_sent_after_the_ack_is_recorded_as_a_new_delivery_statement(
        tmp_path: Path) -> None:
    """200 with ``duplicate: false`` and its own ``delivered`` attestation; the delivery
    time stays the ack's (an ack counts as delivery)."""
    r = await InProcessRelay(tmp_path, Federation.create(desks=("us.caisi", "cn.cac")),
                             "").open()
    try:
        env = await r.send("us.caisi", "cn.cac")
        await r.ack("cn.cac", env)
        r.clock.advance(5_000)
        answer = await r.confirm("receipt", "cn.cac", env)
        att = Attestation.decode(answer.attestation)
        assert (answer.duplicate, att.event, att.desk, att.at) == (
            False, "delivered", "cn.cac", NOW + 5_000)
        (state,) = r.store.deliveries(env.notice_id)
        assert state.delivered_at == state.acked_at == NOW
        assert [e.kind for e in r.store.events_after("us.caisi", 0, 10)] == ["ack", "receipt"]
    finally:
        await r.close()
