"""A recipient that cannot open a notice says so, signed, through a real relay process:
over HTTP and on the live stream; the sender sees it at once and in the status; forged
rejections are refused on the wire with the documented statuses."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path

import aiohttp
import pytest

from client.client import HotlineClient
from client.items import NoticeRejected, NoticeRejectedByRecipient
from keys import Envelope, seal
from keys.frames import NoticeStatus
from keys.primitives import Domain
from keys.receipts import Rejection
from keys.signed import make
from keys.trust import VerifiedDesk
from tests.factory import report
from tests.keys._helpers import divergent
from tests.relay_harness import PASSPHRASE, RawDesk, RelayProcess, now_ms

US, CN, MSS = "us.caisi", "cn.cac", "cn.mss"


def open_desk(federation: dict[str, Path], relay: RelayProcess, name: str) -> HotlineClient:
    return HotlineClient.from_home(federation[name], PASSPHRASE, relays=[relay.url])


async def login_all(federation: dict[str, Path], relay: RelayProcess) -> None:
    for name in federation:
        async with open_desk(federation, relay, name) as c:
            await c.fetch()


@pytest.mark.parametrize("transport", ["http", "stream"])
async def test_recipient_that_cannot_open_a_notice_tells_the_sender_through_the_relay(
        federation: dict[str, Path], relay: RelayProcess, transport: str) -> None:
    await login_all(federation, relay)
    async with open_desk(federation, relay, US) as us, \
            open_desk(federation, relay, CN) as cn, \
            open_desk(federation, relay, MSS) as mss:
        recipients = [await us.card_of(CN), await us.card_of(MSS)]
        honest = seal(report(), sender=us.secrets, recipients=recipients,
                      severity="critical", now=now_ms())
        raw = divergent(honest, us.secrets, cn.secrets, recipients, victim=MSS)
        env = Envelope.decode(raw)
        await us.connection.post_notice(raw)
        if transport == "http":
            items = await mss.fetch()
        else:
            async def first() -> NoticeRejected:
                async with aclosing(mss.events()) as live:
                    async for item in live:
                        assert isinstance(item, NoticeRejected)
                        return item
                raise AssertionError("stream ended")
            items = [await asyncio.wait_for(first(), 20)]
        (rejected,) = items
        assert isinstance(rejected, NoticeRejected)
        assert rejected.reported == "key_commitment_mismatch"
        told = [i for i in await us.fetch() if isinstance(i, NoticeRejectedByRecipient)]
        assert [t.describe() for t in told] == [
            "cn.mss could not open your notice: key_commitment_mismatch"]
        view = await us.status(env.notice_id)
        (row,) = [r for r in view.recipients if r.desk == MSS]
        assert row.rejected is not None and row.rejected.verified
        assert row.rejected.reason == "key_commitment_mismatch"
        assert row.acknowledged is None and row.delivered is None and view.verified


async def test_forged_rejections_are_refused_on_the_wire(
        federation: dict[str, Path], relay: RelayProcess) -> None:
    await login_all(federation, relay)
    async with aiohttp.ClientSession() as http:
        us, cn, mss = [await RawDesk(http, relay.url, federation[d]).login()
                       for d in (US, CN, MSS)]
        env = seal(report(), sender=us.secrets,
                   recipients=[(await _verified(federation, relay, d)) for d in (MSS,)],
                   severity="critical", now=now_ms())
        assert (await us.post("/v1/notices", env.raw)).status == 201
        body = {"v": 1, "type": "rejection", "notice_id": env.notice_id,
                "digest": env.digest, "to": US, "from": MSS,
                "from_kid": mss.secrets.ik_kid, "at": now_ms(),
                "reason": "key_commitment_mismatch"}
        by_cn = make(cn.secrets.identity, Domain.REJECTION, body).encode()
        reply = await mss.post("/v1/confirmations", by_cn)
        assert (reply.status, reply.error.error) == (400, "bad_signature")
        genuine = Rejection.create(notice_id=env.notice_id, digest=env.digest,
                                   sender=us.desk, me=cn.secrets, at=now_ms(),
                                   reason="aead_failed").encode()
        reply = await cn.post("/v1/confirmations", genuine)  # CN is not a recipient
        assert (reply.status, reply.error.error) == (403, "forbidden")
        mss.transport = "stream"
        reply = await mss.post("/v1/confirmations", Rejection.create(
            notice_id=env.notice_id, digest=bytes(32), sender=us.desk, me=mss.secrets,
            at=now_ms(), reason="aead_failed").encode())
        assert (reply.status, reply.error.error) == (409, "digest_mismatch")
        await mss.close_stream()
        status = await us.get(f"/v1/notices/{env.notice_id.hex()}/status")
        assert status.status == 200
        (row,) = NoticeStatus.decode(status.body).recipients
        assert (row.desk, row.rejection, row.rejection_attestation) == (MSS, None, None)


async def _verified(federation: dict[str, Path], relay: RelayProcess, desk: str
                    ) -> VerifiedDesk:
    async with open_desk(federation, relay, US) as us:
        return await us.card_of(desk)
