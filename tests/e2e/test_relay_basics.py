"""The relay as a real process: health, login, a notice's round trip over HTTP."""

from __future__ import annotations

from keys import Attestation, Confirmation, Envelope, seal
from keys.frames import Accepted, InboxPage, NoticeStatus
from tests.factory import report
from tests.relay_harness import RawDesk, RelayProcess, now_ms


def _seal(sender: RawDesk, *to: RawDesk, severity: str = "high") -> Envelope:
    now = now_ms()
    trust = sender.home.trust(now)
    return seal(report(), sender=sender.secrets,
                recipients=[trust.verify_card(r.home.card(now), now) for r in to],
                severity=severity, now=now)


async def test_health_and_readiness(relay: RelayProcess, http) -> None:
    """A fresh relay answers /healthz and is ready on its embedded SQLite."""
    async with http.get(relay.url + "/healthz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"
    async with http.get(relay.url + "/readyz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ready"


async def test_notice_round_trip_over_http(desks: dict[str, RawDesk]) -> None:
    """Submit, see it in the recipient's inbox, receipt and ack, and see both in status."""
    us, cn = desks["us.caisi"], desks["cn.cac"]
    env = _seal(us, cn)
    r = await us.post("/v1/notices", env.raw)
    assert r.status == 201
    att = Attestation.decode(Accepted.decode(r.body).attestation)
    assert us.relay_card is not None
    att.verify(us.relay_card, notice_id=env.notice_id, digest=env.digest)
    assert att.event == "accepted"

    page = InboxPage.decode((await cn.get("/v1/inbox?after=0")).body)
    assert [e.kind for e in page.events] == ["notice"]
    assert page.events[0].envelope == env.raw

    for kind in ("receipt", "ack"):
        c = Confirmation.create(kind, notice_id=env.notice_id, digest=env.digest,
                                sender=us.desk, me=cn.secrets, at=now_ms())
        assert (await cn.post("/v1/confirmations", c.encode())).status == 200

    status = NoticeStatus.decode((await us.get(f"/v1/notices/{env.notice_id.hex()}/status")).body)
    (rec,) = status.recipients
    assert rec.desk == "cn.cac" and rec.receipt is not None and rec.ack is not None
    kinds = [e.kind for e in InboxPage.decode((await us.get("/v1/inbox")).body).events]
    assert kinds == ["receipt", "ack"]


async def test_accepted_notice_survives_sigkill(relay: RelayProcess,
                                                desks: dict[str, RawDesk]) -> None:
    """A notice the relay answered 'accepted' for is there after SIGKILL and restart (S10)."""
    us, cn = desks["us.caisi"], desks["cn.cac"]
    envs = [_seal(us, cn) for _ in range(20)]
    for env in envs:
        assert (await us.post("/v1/notices", env.raw)).status == 201
    relay.kill()
    relay.start()
    await cn.login()
    page = InboxPage.decode((await cn.get("/v1/inbox?after=0&limit=100")).body)
    assert [e.envelope for e in page.events] == [e.raw for e in envs]
