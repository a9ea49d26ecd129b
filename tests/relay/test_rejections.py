"""A recipient's signed rejection of a notice it cannot open, on the real Relay, SqliteStore
and Escalator (manual clock): recorded once, attested, pushed to the sender, shown in the
status, named in escalation records, operators' views and webhooks, and it never stops the
deadline. Each forgery is refused before anything is stored."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import nacl.signing
import pytest

from keys import Envelope, seal
from keys.codec import pack, unpack
from keys.errors import BadSignature, HotlineError
from keys.frames import NoticeStatus, RecipientStatus
from keys.primitives import Domain
from keys.receipts import Attestation, Rejection
from keys.signed import make
from relay.errors import RelayError
from relay.escalator import log_record
from relay.ops_api import overdue_record
from relay.policy import MINUTE
from relay.webhooks import alert_body
from tests.factory import NOW, Federation, report
from tests.keys._helpers import divergent
from tests.relay.inproc import InProcessRelay

US, CN, MSS, NSC = "us.caisi", "cn.cac", "cn.mss", "us.nsc"
CRIT_ACK = 15 * MINUTE
CONFIG = """[relay]
id = "test-relay"

[policy.critical]
response_window = "none"

[[webhooks]]
name = "pager"
url = "http://127.0.0.1:9/pager"
secret = "0123456789abcdef0123"
"""


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    r = await InProcessRelay(tmp_path / "relay", Federation.create(desks=(US, CN, MSS, NSC)),
                             CONFIG).open()
    yield r
    await r.close()


async def send_divergent(r: InProcessRelay) -> Envelope:
    """A notice from US to CN and MSS whose stanza for MSS wraps a wrong key."""
    fed = r.fed
    honest = seal(report(), sender=fed.desks[US].secrets,
                  recipients=[fed.verified(CN, NOW), fed.verified(MSS, NOW)],
                  severity="critical", now=r.clock.now_ms())
    raw = divergent(honest, fed.desks[US].secrets, fed.desks[CN].secrets,
                    [fed.verified(CN, NOW), fed.verified(MSS, NOW)], victim=MSS)
    _accepted, new = await r.relay.submit(r.session(US), raw)
    assert new
    return Envelope.decode(raw)


def rejection(r: InProcessRelay, env: Envelope, me: str = MSS,
              reason: str = "key_commitment_mismatch") -> Rejection:
    return Rejection.create(notice_id=env.notice_id, digest=env.digest,
                            sender=env.header.sender, me=r.fed.desks[me].secrets,
                            at=r.clock.now_ms(), reason=reason)


def stored_rejections(r: InProcessRelay) -> list[tuple[str, str | None]]:
    db = sqlite3.connect(r.home / "relay.db")
    try:
        return [(row[0], row[1]) for row in db.execute(
            "SELECT recipient, rejection_reason FROM deliveries WHERE rejection IS NOT NULL")]
    finally:
        db.close()


async def refused(r: InProcessRelay, desk: str, body: bytes) -> HotlineError:
    with pytest.raises(HotlineError) as exc:
        await r.relay.confirm(r.session(desk), body)
    assert stored_rejections(r) == []
    assert [e.kind for e in r.relay.store.events_after(US, 0, 100)] == []
    return exc.value


async def test_rejection_is_recorded_attested_pushed_and_shown_but_the_deadline_runs(
        relay: InProcessRelay) -> None:
    r = relay
    env = await send_divergent(r)
    body = rejection(r, env).encode()
    r.clock.advance(1000)
    answer = await r.relay.confirm(r.session(MSS), body)
    att = Attestation.decode(answer.attestation)
    att.verify(r.card, notice_id=env.notice_id, digest=env.digest)
    assert (att.event, att.desk, att.at, answer.duplicate) == ("rejected", MSS, NOW + 1000,
                                                               False)
    # Idempotent: the same (or any later) rejection answers with the first attestation.
    again = await r.relay.confirm(r.session(MSS), body)
    assert again.duplicate and again.attestation == answer.attestation
    later = await r.relay.confirm(r.session(MSS), rejection(r, env, reason="aead_failed").encode())
    assert later.duplicate and later.attestation == answer.attestation
    # The sender's stream carries it, with the recipient's certificate.
    (event,) = [e for e in r.relay.store.events_after(US, 0, 100) if e.kind == "rejected"]
    assert (event.confirmation, event.attestation) == (body, answer.attestation)
    assert event.signer_cert == r.fed.desks[MSS].card.cert.encode()
    # The status shows it for MSS only.
    status = NoticeStatus.decode(r.relay.status(r.session(US), env.notice_id).encode())
    by_desk: dict[str, RecipientStatus] = {s.desk: s for s in status.recipients}
    assert by_desk[MSS].rejection == body
    assert by_desk[MSS].rejection_attestation == answer.attestation
    assert by_desk[CN].rejection is None
    # The deadline keeps running: MSS (and CN, which never acked) escalate at 15 min.
    rows = await r.advance(CRIT_ACK)
    assert sorted((x.recipient, x.rejected) for x in rows) == [
        (CN, None), (MSS, "key_commitment_mismatch")]
    row = next(x for x in rows if x.recipient == MSS)
    assert log_record(row, "test-relay")["rejected_by_recipient"] == "key_commitment_mismatch"
    (logged,) = [json.loads(line) for line in r.config.escalation_log_path.read_text().splitlines()
                 if json.loads(line)["recipient"] == MSS]
    assert logged["rejected_by_recipient"] == "key_commitment_mismatch"
    (history,) = [x for x in r.relay.escalations_since(0) if x.recipient == MSS]
    assert history.rejected == "key_commitment_mismatch" and history.webhooks == ("pager",)
    assert logged["webhooks"] == ["pager"]
    overdue = {o.recipient: overdue_record(o, r.clock.now_ms()) for o in r.relay.overdue()}
    assert overdue[MSS]["rejected_by_recipient"] == "key_commitment_mismatch"
    assert overdue[CN]["rejected_by_recipient"] is None
    (item,) = [i for i in r.store.outbox_due(r.clock.now_ms(), 10)
               if i.escalation.recipient == MSS]
    hook = alert_body(item.escalation, "pager", "test-relay", "http://relay")
    annotations = hook["alerts"][0]["annotations"]
    assert annotations["rejected_by_recipient"] == "key_commitment_mismatch"
    assert annotations["summary"].endswith("; rejected by recipient: key_commitment_mismatch")
    # A late ack (someone phoned) still meets the deadline as usual.
    await r.ack(MSS, env)
    assert (await r.advance(CRIT_ACK)) and all(x.recipient == CN for x in r.relay.overdue())


async def test_forged_rejection_signed_by_another_desk_is_refused(
        relay: InProcessRelay) -> None:
    """MSS's session posts a rejection in MSS's name signed with CN's key."""
    env = await send_divergent(relay)
    body = {"v": 1, "type": "rejection", "notice_id": env.notice_id, "digest": env.digest,
            "to": US, "from": MSS, "from_kid": relay.fed.desks[MSS].secrets.ik_kid,
            "at": NOW, "reason": "key_commitment_mismatch"}
    forged = make(relay.fed.desks[CN].secrets.identity, Domain.REJECTION, body).encode()
    exc = await refused(relay, MSS, forged)
    assert isinstance(exc, BadSignature)


async def test_forged_rejection_signed_by_the_relay_key_is_refused(
        relay: InProcessRelay) -> None:
    env = await send_divergent(relay)
    body = {"v": 1, "type": "rejection", "notice_id": env.notice_id, "digest": env.digest,
            "to": US, "from": MSS, "from_kid": relay.fed.desks[MSS].secrets.ik_kid,
            "at": NOW, "reason": "key_commitment_mismatch"}
    for key in (relay.key, nacl.signing.SigningKey.generate()):
        exc = await refused(relay, MSS, make(key, Domain.REJECTION, body).encode())
        assert isinstance(exc, BadSignature)


async def test_rejection_posted_in_another_desks_name_is_refused(
        relay: InProcessRelay) -> None:
    """CN's session posts MSS's genuine rejection: the session must be the signer."""
    env = await send_divergent(relay)
    exc = await refused(relay, CN, rejection(relay, env).encode())
    assert isinstance(exc, RelayError) and (exc.status, exc.code) == (403, "forbidden")


async def test_rejection_of_a_notice_not_addressed_to_the_rejecter_is_refused(
        relay: InProcessRelay) -> None:
    env = await send_divergent(relay)
    exc = await refused(relay, NSC, rejection(relay, env, me=NSC).encode())
    assert isinstance(exc, RelayError) and (exc.status, exc.code) == (403, "forbidden")


async def test_rejection_with_a_wrong_digest_is_refused(relay: InProcessRelay) -> None:
    env = await send_divergent(relay)
    wrong = Rejection.create(notice_id=env.notice_id, digest=bytes(32), sender=US,  # type: ignore[arg-type]
                             me=relay.fed.desks[MSS].secrets, at=NOW,
                             reason="key_commitment_mismatch")
    exc = await refused(relay, MSS, wrong.encode())
    assert isinstance(exc, RelayError) and (exc.status, exc.code) == (409, "digest_mismatch")


async def test_replayed_rejection_rebound_to_another_notice_is_refused(
        relay: InProcessRelay) -> None:
    """MSS's rejection of one notice, its notice id and digest rewritten to another's and
    posted again: the signature no longer holds."""
    first, second = await send_divergent(relay), await send_divergent(relay)
    genuine = rejection(relay, first)
    body_raw, sig = genuine.signed.body, genuine.signed.signature
    body = unpack(body_raw, what="test", max_bytes=len(body_raw))
    body.update(notice_id=second.notice_id, digest=second.digest)
    replayed = pack([pack(body), sig])
    exc = await refused(relay, MSS, replayed)
    assert isinstance(exc, BadSignature)


async def test_rejection_after_an_ack_is_refused(relay: InProcessRelay) -> None:
    env = await send_divergent(relay)
    await relay.ack(MSS, env)
    with pytest.raises(RelayError) as exc:
        await relay.relay.confirm(relay.session(MSS), rejection(relay, env).encode())
    assert (exc.value.status, exc.value.code) == (409, "already_confirmed")
    assert stored_rejections(relay) == []
