"""Receiving: every notice is verified, receipted, de-duplicated and yielded exactly once;
a notice that does not verify is reported and never shown, and never stops the loop."""

from __future__ import annotations

import sqlite3
from contextlib import aclosing

import nacl.signing

from client.client import (
    ClockSkewWarning,
    ConfirmationEvent,
    EscalationEvent,
    NoticeRejected,
    ReceivedNotice,
    WatchdogOverdue,
)
from keys import Confirmation, Envelope, FederationRoot, TrustStore, seal
from keys.receipts import EscalationStatement, RelayCard
from tests.client.conftest import MakeClient
from tests.client.fakes import FakeRelay
from tests.factory import DAY, NOW, Federation, report


def _seal(fed: Federation, sender: str, *to: str, **kw: object) -> Envelope:
    return seal(report(**kw), sender=fed.desks[sender].secrets,
                recipients=[fed.verified(d) for d in to], severity="high", now=NOW)


def _push_notice(relay: FakeRelay, desk: str, env: Envelope, *, raw: bytes | None = None,
                 cert: bytes | None = None, attestation: bytes | None = None) -> None:
    relay.notices.setdefault(env.notice_id, env)
    relay.accepted.setdefault(
        env.notice_id, relay.attest("accepted", env.notice_id, env.digest, env.header.sender))
    relay.push(desk, kind="notice", notice_id=env.notice_id, envelope=raw or env.raw,
               attestation=attestation or relay.attest("accepted", env.notice_id, env.digest,
                                                       env.header.sender),
               signer_cert=cert or relay.cert(env.header.sender))


async def test_notice_is_receipted_before_it_is_yielded(make_client: MakeClient) -> None:
    """The delivery receipt is on its way to the relay before the caller sees the notice."""
    us, cn = make_client("us.caisi"), make_client("cn.cac")
    sent = await us.send(to=["cn.cac"], severity="critical", notice=report())
    got = []
    async for n in cn.notices(follow=False):
        (receipt,) = [Confirmation.decode(c) for c in cn.connection.confirmations]  # type: ignore[attr-defined]
        assert receipt.kind == "receipt" and receipt.notice_id == n.notice_id
        got.append(n)
    assert [n.notice_id for n in got] == [sent.notice_id]
    n = got[0]
    assert n.report == report() and n.sender == "us.caisi" and n.severity == "critical"
    assert n.accepted_at == NOW and not n.redelivered


async def test_replayed_and_repushed_notices_are_yielded_once(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """The same notice under a later seq (a re-push) is dropped by its id."""
    cn = make_client("cn.cac")
    env = _seal(fed, "us.caisi", "cn.cac")
    _push_notice(fake_relay, "cn.cac", env)
    _push_notice(fake_relay, "cn.cac", env)
    first = [n.notice_id async for n in cn.notices(follow=False)]
    _push_notice(fake_relay, "cn.cac", env)
    second = [n.notice_id async for n in cn.notices(follow=False)]
    assert first == [env.notice_id] and second == []
    assert cn.state.cursor() == fake_relay.seq


async def test_notice_interrupted_while_processing_is_redelivered_once(
    make_client: MakeClient,
) -> None:
    """Stopping while a notice is in hand re-yields it after restart, flagged; once it is
    processed (the caller asked for the next one) it never comes again."""
    us = make_client("us.caisi")
    sent = await us.send(to=["cn.cac"], severity="high", notice=report())
    cn = make_client("cn.cac")
    async with aclosing(cn.notices(follow=False)) as it:
        async for n in it:
            assert n.notice_id == sent.notice_id
            break  # the process dies while handling it
    await cn.close()

    cn = make_client("cn.cac")
    again = [n async for n in cn.notices(follow=False)]
    assert [(n.notice_id, n.redelivered) for n in again] == [(sent.notice_id, True)]
    await cn.close()

    cn = make_client("cn.cac")
    assert [n async for n in cn.notices(follow=False)] == []


async def test_acknowledging_marks_a_notice_processed(make_client: MakeClient) -> None:
    """An ack inside the loop is enough: the notice is not redelivered after a stop."""
    us = make_client("us.caisi")
    await us.send(to=["cn.cac"], severity="high", notice=report())
    cn = make_client("cn.cac")
    async with aclosing(cn.notices(follow=False)) as it:
        async for n in it:
            await cn.ack(n.notice_id)
            break
    await cn.close()
    cn = make_client("cn.cac")
    assert [n async for n in cn.notices(follow=False)] == []
    (stored,) = cn.inbox(include_acked=True)
    assert stored.acked_at == NOW


async def test_notice_is_stored_sealed_not_in_clear(make_client: MakeClient) -> None:
    """client.db holds the envelope as received, never the report's text."""
    us, cn = make_client("us.caisi"), make_client("cn.cac")
    await us.send(to=["cn.cac"], severity="high", notice=report(title="SECRET-TITLE-XYZ"))
    await cn.fetch()
    await cn.close()
    for path in (cn.home.path).glob("client.db*"):
        assert b"SECRET-TITLE-XYZ" not in path.read_bytes()
    db = sqlite3.connect(cn.home.file("client.db"))
    assert db.execute("SELECT count(*) FROM received").fetchone() == (1,)
    db.close()


async def test_tampered_notice_is_rejected_and_the_loop_goes_on(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """A flipped ciphertext byte is reported as NoticeRejected; the next notice still comes."""
    cn = make_client("cn.cac")
    bad = _seal(fed, "us.caisi", "cn.cac")
    raw = bytearray(bad.raw)
    raw[-100] ^= 0x01  # inside the ciphertext
    _push_notice(fake_relay, "cn.cac", bad, raw=bytes(raw))
    good = _seal(fed, "us.caisi", "cn.cac", title="the good one")
    _push_notice(fake_relay, "cn.cac", good)
    items = [i async for i in cn.events(follow=False)]
    assert isinstance(items[0], NoticeRejected) and items[0].notice_id == bad.notice_id
    assert isinstance(items[1], ReceivedNotice) and items[1].report.title == "the good one"
    assert [r.notice_id for r in cn.state.rejected()] == [bad.notice_id]
    assert cn.state.received(bad.notice_id) is None


async def test_notices_skips_rejected_events(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """notices() yields only verified notices."""
    cn = make_client("cn.cac")
    env = _seal(fed, "us.caisi", "cn.cac")
    _push_notice(fake_relay, "cn.cac", env, cert=fake_relay.cert("cn.mss"))
    assert [n async for n in cn.notices(follow=False)] == []
    (rejected,) = cn.state.rejected()
    assert rejected.code == "unknown_or_revoked_key"


async def test_notice_from_revoked_sender_is_rejected(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """A notice signed by a key its country revoked is refused (S8)."""
    cn = make_client("cn.cac")
    env = _seal(fed, "us.caisi", "cn.cac")
    fed.revoke("us.caisi")
    _push_notice(fake_relay, "cn.cac", env)
    (item,) = [i async for i in cn.events(follow=False)]
    assert isinstance(item, NoticeRejected) and "revoked" in item.reason


async def test_notice_with_another_relays_attestation_is_rejected(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """The acceptance must be signed by the pinned relay key."""
    cn = make_client("cn.cac")
    env = _seal(fed, "us.caisi", "cn.cac")
    impostor = FakeRelay(fed, relay_id=fake_relay.relay_id)
    _push_notice(fake_relay, "cn.cac", env,
                 attestation=impostor.attest("accepted", env.notice_id, env.digest, "us.caisi"))
    (item,) = [i async for i in cn.events(follow=False)]
    assert isinstance(item, NoticeRejected) and item.code == "bad_signature"


async def test_notice_forwarded_to_a_non_recipient_is_rejected(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """A notice for cn.mss placed in cn.cac's stream does not open as cn.cac's."""
    cn = make_client("cn.cac")
    env = _seal(fed, "us.caisi", "cn.mss")
    _push_notice(fake_relay, "cn.cac", env)
    (item,) = [i async for i in cn.events(follow=False)]
    assert isinstance(item, NoticeRejected) and item.code == "not_intended_recipient"


async def test_sender_sees_verified_receipt_and_ack_with_message(
    make_client: MakeClient,
) -> None:
    """Receipts and acks of our notices arrive verified; the ack's message is decrypted."""
    us, cn = make_client("us.caisi"), make_client("cn.cac")
    sent = await us.send(to=["cn.cac"], severity="high", notice=report())
    await cn.fetch()
    await cn.ack(sent.notice_id, message="seen, investigating")
    items = [i async for i in us.events(follow=False)]
    assert [(type(i), getattr(i, "kind", None)) for i in items] == [
        (ConfirmationEvent, "receipt"), (ConfirmationEvent, "ack")]
    ack = items[1]
    assert isinstance(ack, ConfirmationEvent)
    assert ack.recipient == "cn.cac" and ack.message == "seen, investigating"
    assert [c.kind for c in us.state.confirmations(sent.notice_id)] == ["ack", "receipt"]


async def test_receipt_from_a_desk_that_was_not_a_recipient_is_rejected(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """cn.mss cannot confirm a notice sent only to cn.cac, even with a valid signature."""
    us = make_client("us.caisi")
    sent = await us.send(to=["cn.cac"], severity="high", notice=report())
    env = fake_relay.notices[sent.notice_id]
    forged = Confirmation.create("receipt", notice_id=env.notice_id, digest=env.digest,
                                 sender="us.caisi", me=fed.desks["cn.mss"].secrets, at=NOW)  # type: ignore[arg-type]
    fake_relay.push("us.caisi", kind="receipt", notice_id=env.notice_id,
                    confirmation=forged.encode(),
                    attestation=fake_relay.attest("delivered", env.notice_id, env.digest,
                                                  "cn.mss"),
                    signer_cert=fake_relay.cert("cn.mss"))
    (item,) = [i async for i in us.events(follow=False)]
    assert isinstance(item, NoticeRejected) and item.kind == "receipt"
    assert us.state.confirmations(sent.notice_id) == []


async def test_ack_bound_to_another_version_is_rejected(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """An ack signed over another digest does not confirm our notice (S5, S6)."""
    us = make_client("us.caisi")
    sent = await us.send(to=["cn.cac"], severity="high", notice=report())
    env = fake_relay.notices[sent.notice_id]
    other = bytes(32)
    ack = Confirmation.create("ack", notice_id=env.notice_id, digest=other, sender="us.caisi",  # type: ignore[arg-type]
                              me=fed.desks["cn.cac"].secrets, at=NOW)
    fake_relay.push("us.caisi", kind="ack", notice_id=env.notice_id, confirmation=ack.encode(),
                    attestation=fake_relay.attest("acknowledged", env.notice_id, env.digest,
                                                  "cn.cac"),
                    signer_cert=fake_relay.cert("cn.cac"))
    (item,) = [i async for i in us.events(follow=False)]
    assert isinstance(item, NoticeRejected)


async def test_escalation_event_is_verified(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """An escalation signed by the pinned relay is yielded; one by another key is not."""
    us = make_client("us.caisi")
    sent = await us.send(to=["cn.cac"], severity="critical", notice=report())
    env = fake_relay.notices[sent.notice_id]
    fake_relay.push("us.caisi", kind="escalation", notice_id=env.notice_id,
                    attestation=fake_relay.attest("escalated", env.notice_id, env.digest,
                                                  "cn.cac", level=2))
    other = nacl.signing.SigningKey.generate()
    assert RelayCard.create("test-relay", other, NOW).key != fake_relay.card.key
    fake_relay.key, real = other, fake_relay.key
    fake_relay.push("us.caisi", kind="escalation", notice_id=env.notice_id,
                    attestation=fake_relay.attest("escalated", env.notice_id, env.digest,
                                                  "cn.cac", level=3))
    fake_relay.key = real
    items = [i async for i in us.events(follow=False)]
    esc = items[0]
    assert isinstance(esc, EscalationEvent)
    assert esc.kind == "escalation" and esc.level == 2 and esc.desk == "cn.cac"
    assert isinstance(items[1], NoticeRejected)


def _statement(relay: FakeRelay, env: Envelope, recipient: str, *, level: int = 1,
               kind: str = "escalated") -> bytes:
    return EscalationStatement.create(
        kind, relay_id=relay.relay_id, relay_key=relay.key, notice_id=env.notice_id,
        digest=env.digest, sender=env.header.sender, recipient=recipient,
        severity=env.header.severity, status=env.header.status, track="ack", level=level,
        missed_levels=0, deadline=NOW - 60_000, at=NOW, delivered=True, final=False,
    ).encode()


async def test_sender_sees_the_relays_escalation_statement(
    make_client: MakeClient, fake_relay: FakeRelay
) -> None:
    """An escalation statement of our notice is verified and carries its deadline."""
    us = make_client("us.caisi")
    sent = await us.send(to=["cn.cac"], severity="critical", notice=report())
    env = fake_relay.notices[sent.notice_id]
    fake_relay.push("us.caisi", kind="escalation", notice_id=env.notice_id,
                    attestation=_statement(fake_relay, env, "cn.cac", level=1))
    fake_relay.push("us.caisi", kind="resolved", notice_id=env.notice_id,
                    attestation=_statement(fake_relay, env, "cn.cac", kind="resolved"))
    esc, res = [i async for i in us.events(follow=False)]
    assert isinstance(esc, EscalationEvent) and isinstance(res, EscalationEvent)
    assert (esc.kind, esc.desk, esc.level, esc.track, esc.deadline) == (
        "escalation", "cn.cac", 1, "ack", NOW - 60_000)
    assert res.kind == "resolved"
    assert [e.kind for e in us.state.relay_events(env.notice_id)] == ["escalation", "resolved"]


async def test_escalation_statement_of_another_kind_is_rejected(
    make_client: MakeClient, fake_relay: FakeRelay
) -> None:
    """A "resolved" statement sent as an escalation event does not pass."""
    us = make_client("us.caisi")
    sent = await us.send(to=["cn.cac"], severity="critical", notice=report())
    env = fake_relay.notices[sent.notice_id]
    fake_relay.push("us.caisi", kind="escalation", notice_id=env.notice_id,
                    attestation=_statement(fake_relay, env, "cn.cac", kind="resolved"))
    (item,) = [i async for i in us.events(follow=False)]
    assert isinstance(item, NoticeRejected)


async def test_repushed_notice_never_received_before_is_delivered(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """A notice whose first delivery we never stored arrives with its escalation: it is
    verified (acceptance taken from its status) and yielded as a notice, receipted."""
    cn = make_client("cn.cac")
    env = _seal(fed, "us.caisi", "cn.cac")
    fake_relay.notices[env.notice_id] = env
    fake_relay.accepted[env.notice_id] = fake_relay.attest("accepted", env.notice_id,
                                                           env.digest, "us.caisi")
    fake_relay.push("cn.cac", kind="escalation", notice_id=env.notice_id, envelope=env.raw,
                    signer_cert=fake_relay.cert("us.caisi"),
                    attestation=_statement(fake_relay, env, "cn.cac"))
    (item,) = [i async for i in cn.events(follow=False)]
    assert isinstance(item, ReceivedNotice) and item.notice_id == env.notice_id
    assert (env.notice_id, "cn.cac", "receipt") in fake_relay.confirmations


async def test_repushed_notice_already_received_is_a_reminder(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """A re-push of a notice we hold is not a second notice, but the escalation shows."""
    cn = make_client("cn.cac")
    env = _seal(fed, "us.caisi", "cn.cac")
    _push_notice(fake_relay, "cn.cac", env)
    fake_relay.push("cn.cac", kind="escalation", notice_id=env.notice_id, envelope=env.raw,
                    signer_cert=fake_relay.cert("us.caisi"),
                    attestation=_statement(fake_relay, env, "cn.cac", level=2))
    first, second = [i async for i in cn.events(follow=False)]
    assert isinstance(first, ReceivedNotice)
    assert isinstance(second, EscalationEvent) and second.level == 2


# ----------------------------------------------------------------------------- relay times

HOUR = 3_600_000


def _root_trust(fed: Federation, issued_at: int, expires_at: int) -> TrustStore:
    """A trust store pinning a root of ``fed``'s authorities with these dates (the
    factory's root is issued only a day back, too recent to backdate across)."""
    root = FederationRoot.create(
        1, {c: bytes(k.verify_key) for c, k in fed.authorities.items()}, issued_at, expires_at)
    for c, k in fed.authorities.items():
        root = root.signed_by(c, k)
    return TrustStore(root)


async def test_relay_backdating_accepted_at_does_not_admit_an_expired_sender_certificate(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """The sender's certificate expired 47 hours ago; the relay signs the acceptance 48
    hours back, when it was valid. The client judges it at its own clock: refused."""
    old = fed.add_desk("us.old", not_before=NOW - 10 * DAY, not_after=NOW - 47 * HOUR)
    cn = make_client("cn.cac", trust=_root_trust(fed, NOW - 30 * DAY, NOW + DAY))
    env = seal(report(), sender=old.secrets, recipients=[fed.verified("cn.cac")],
               severity="critical", now=NOW - 48 * HOUR)
    fake_relay.push("cn.cac", kind="notice", notice_id=env.notice_id, envelope=env.raw,
                    attestation=fake_relay.attest("accepted", env.notice_id, env.digest,
                                                  "us.old", at=NOW - 48 * HOUR),
                    signer_cert=fake_relay.cert("us.old"))
    (item,) = [i async for i in cn.events(follow=False)]
    assert isinstance(item, NoticeRejected) and item.code == "unknown_or_revoked_key"
    assert "valid from" in item.reason
    assert cn.state.received(env.notice_id) is None


async def test_relay_backdating_accepted_at_does_not_extend_an_expired_federation_root(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """The pinned root expired an hour ago by the client's clock; a relay that signs the
    acceptance two hours back does not make the client trust it again."""
    cn = make_client("cn.cac", trust=_root_trust(fed, NOW - 10 * DAY, NOW - HOUR))
    env = _seal(fed, "us.caisi", "cn.cac")
    _push_notice(fake_relay, "cn.cac", env,
                 attestation=fake_relay.attest("accepted", env.notice_id, env.digest,
                                               "us.caisi", at=NOW - 2 * HOUR))
    (item,) = [i async for i in cn.events(follow=False)]
    assert isinstance(item, NoticeRejected) and "expired" in item.reason
    assert cn.state.received(env.notice_id) is None


async def test_relay_backdating_an_ack_signed_by_an_expired_key_does_not_silence_watchdog(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """An ack signed with cn.cac's old identity key, whose certificate expired 47 hours
    ago, attested 48 hours back: rejected, and the watchdog still raises its alarm."""
    now = [NOW]
    us = make_client("us.caisi", clock=lambda: now[0],
                     trust=_root_trust(fed, NOW - 30 * DAY, NOW + DAY))
    sent = await us.send(to=["cn.cac"], severity="critical", notice=report())
    env = fake_relay.notices[sent.notice_id]
    old = fed.add_desk("cn.cac", not_before=NOW - 10 * DAY, not_after=NOW - 47 * HOUR)
    ack = Confirmation.create("ack", notice_id=env.notice_id, digest=env.digest,
                              sender="us.caisi", me=old.secrets, at=NOW - 48 * HOUR)  # type: ignore[arg-type]
    fake_relay.push("us.caisi", kind="ack", notice_id=env.notice_id, confirmation=ack.encode(),
                    attestation=fake_relay.attest("acknowledged", env.notice_id, env.digest,
                                                  "cn.cac", at=NOW - 48 * HOUR),
                    signer_cert=old.card.cert.encode())
    now[0] = NOW + 20 * 60_000
    items = [i async for i in us.events(follow=False)]
    assert [type(i) for i in items] == [NoticeRejected, WatchdogOverdue]
    assert isinstance(items[0], NoticeRejected) and "valid from" in items[0].reason
    assert us.state.confirmations(sent.notice_id) == []


async def test_relay_chosen_time_is_not_used_to_reopen_a_stored_notice(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """A notice from a key certified an hour ago, which the relay signs as accepted two
    hours ago: it verifies at the client's time (a warning shows the relay's time), and
    opens again later from the store, judged at the recorded local receipt time."""
    new = fed.add_desk("us.new", not_before=NOW - HOUR)
    now = [NOW]
    cn = make_client("cn.cac", clock=lambda: now[0])
    env = seal(report(), sender=new.secrets, recipients=[fed.verified("cn.cac")],
               severity="high", now=NOW - 30 * 60_000)
    fake_relay.push("cn.cac", kind="notice", notice_id=env.notice_id, envelope=env.raw,
                    attestation=fake_relay.attest("accepted", env.notice_id, env.digest,
                                                  "us.new", at=NOW - 2 * HOUR),
                    signer_cert=fake_relay.cert("us.new"))
    items = [i async for i in cn.events(follow=False)]
    assert [type(i) for i in items] == [ReceivedNotice, ClockSkewWarning]
    assert cn.state.received(env.notice_id).received_at == NOW  # type: ignore[union-attr]
    now[0] = NOW + DAY
    assert cn.received(env.notice_id).notice_id == env.notice_id
    assert [n.notice_id for n in cn.inbox()] == [env.notice_id]


# ----------------------------------------------------------------------------- versions


def _two_versions(fed: Federation) -> tuple[Envelope, Envelope]:
    nid = bytes(range(16))
    first, second = (seal(report(title=t), sender=fed.desks["us.caisi"].secrets,
                          recipients=[fed.verified("cn.cac")], severity="high", now=NOW,
                          notice_id=nid) for t in ("first version", "second version"))
    assert first.notice_id == second.notice_id and first.digest != second.digest
    return first, second


async def test_second_version_pushed_with_the_first_versions_attestation_is_rejected(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """The relay's acceptance is bound to the digest of the envelope it comes with: a
    second version under the same id, sent with the first version's attestation, is
    refused and never shown."""
    first, second = _two_versions(fed)
    cn = make_client("cn.cac")
    _push_notice(fake_relay, "cn.cac", second,
                 attestation=fake_relay.attest("accepted", first.notice_id, first.digest,
                                               "us.caisi"))
    (item,) = [i async for i in cn.events(follow=False)]
    assert isinstance(item, NoticeRejected) and item.code == "bad_signature"
    assert cn.state.received(first.notice_id) is None


async def test_second_version_under_a_known_id_is_reported_as_id_conflict(
    make_client: MakeClient, fake_relay: FakeRelay, fed: Federation
) -> None:
    """A relay that accepts (and signs) two versions of one notice id: the second is
    reported as a conflict, recorded, and the first stays the one held."""
    first, second = _two_versions(fed)
    cn = make_client("cn.cac")
    _push_notice(fake_relay, "cn.cac", first)
    _push_notice(fake_relay, "cn.cac", second)
    items = [i async for i in cn.events(follow=False)]
    assert [type(i) for i in items] == [ReceivedNotice, NoticeRejected]
    assert isinstance(items[1], NoticeRejected) and items[1].code == "id_conflict"
    assert [(r.notice_id, r.code) for r in cn.state.rejected()] == [
        (first.notice_id, "id_conflict")]
    assert cn.received(first.notice_id).report.title == "first version"
