"""The relay's domain logic: accept notices, record confirmations, serve streams and status.

No aiohttp here: handlers pass bytes and the authenticated session in, and get frames or a
:class:`~relay.errors.RelayError` back. Every check that can be made before a signature
verification is made first (sizes, shapes, sender, rate limits).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import nacl.signing

from keys import (
    Attestation,
    Confirmation,
    DeskCard,
    Envelope,
    RelayCard,
    Revocation,
    TrustStore,
    VerifiedDesk,
    check_submission,
    codec,
)
from keys.errors import HotlineError
from keys.frames import Accepted, Event, InboxPage, NoticeStatus, RecipientStatus
from keys.ids import DeskId
from keys.primitives import equal
from keys.receipts import EscalationStatement, Rejection, statement_type
from keys.secrets import HYBRID
from keys.trust import kem_of
from relay import faults
from relay.auth import DeskSession
from relay.clock import Clock
from relay.config import ContactRule, RelayConfig
from relay.errors import RelayError
from relay.escalator import Escalator
from relay.hub import Hub
from relay.limits import Buckets
from relay.metrics import Metrics
from relay.policy import Policy
from relay.store.base import (
    ConfirmationRecord,
    Conflict,
    DeadlineSpec,
    Duplicate,
    EscalationRow,
    Inserted,
    NoticeRecord,
    OverdueRow,
    RejectionRecord,
    Store,
)
from relay.tlog import RelayLog


class RelayStamper:
    """Signs the relay's statements with its key (also inside store transactions)."""

    def __init__(self, relay_id: str, key: nacl.signing.SigningKey) -> None:
        self.relay_id = relay_id
        self.key = key

    def attestation(self, event: str, *, notice_id: bytes, digest: bytes, desk: str, at: int,
                    level: int = 0) -> bytes:
        return Attestation.create(event, relay_id=self.relay_id, relay_key=self.key,
                                  notice_id=notice_id, digest=digest, desk=desk,  # type: ignore[arg-type]
                                  at=at, level=level).encode()

    def escalation(self, kind: str, **fields: Any) -> bytes:
        return EscalationStatement.create(kind, relay_id=self.relay_id, relay_key=self.key,
                                          **fields).encode()


class ConfigRouting:
    """Contacts and webhooks for an escalation, from the relay configuration."""

    def __init__(self, config: RelayConfig) -> None:
        self.rules: tuple[ContactRule, ...] = config.contacts
        self.hooks = config.webhooks

    def contacts(self, recipient: str, level: int, status: str) -> tuple[str, ...]:
        out: list[str] = []
        for rule in self.rules:
            if rule.recipient not in ("*", recipient) or level < rule.from_level:
                continue
            if rule.real_only and status != "actual":
                continue
            out.extend(d for d in rule.notify if d not in out)
        return tuple(out)

    def webhooks(self, level: int, status: str) -> tuple[str, ...]:
        return tuple(h.name for h in self.hooks
                     if level >= h.from_level and not (h.real_only and status != "actual"))


#: How often a desk's count of unacknowledged notices is read from the store.
PENDING_RECOUNT_MS = 5_000
#: A recipient's verified card is re-verified this often (EK expiry, root expiry).
CARD_RECHECK_MS = 60_000


#: Notices whose routing facts the relay keeps in memory for their confirmations.
NOTICE_FACTS_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class NoticeFacts:
    """What a confirmation is checked against. A stored notice never changes (its id is
    bound to its digest), so these can be kept as long as wanted, by any relay node."""

    notice_id: bytes
    sender: str
    recipients: tuple[str, ...]
    digest: bytes
    severity: str
    status: str


@dataclass
class _CachedCard:
    card: bytes
    verified: VerifiedDesk
    checked_at: int


class Relay:
    def __init__(self, *, config: RelayConfig, store: Store, trust: TrustStore,
                 key: nacl.signing.SigningKey, card: RelayCard, clock: Clock, hub: Hub,
                 log: Any, metrics: Metrics | None = None) -> None:
        self.config = config
        self.store = store
        self.trust = trust
        self.key = key
        self.card = card
        self.clock = clock
        self.hub = hub
        self.log = log
        lim = config.limits
        self._notice_rate = Buckets(lim.notices_per_minute)
        self._byte_rate = Buckets(lim.bytes_per_minute)
        self._confirm_rate = Buckets(lim.confirmations_per_minute)
        self._cards: dict[str, _CachedCard] = {}
        self._facts: dict[bytes, NoticeFacts] = {}
        self._background: set[asyncio.Task[None]] = set()
        #: desk -> (unacknowledged (notice, recipient) pairs it sent, when counted).
        self._pending: dict[str, tuple[int, int]] = {}
        self.metrics = metrics or Metrics()
        # The store hands over each batch of committed events: streams read new events
        # from the hub's memory instead of querying the store for each one.
        store.on_events = hub.committed
        self.stamper = RelayStamper(config.relay_id, key)
        self.routing = ConfigRouting(config)
        self.escalator = Escalator(store=store, clock=clock, stamper=self.stamper,
                                   routing=self.routing, hub=hub, log=log, metrics=self.metrics,
                                   relay_id=config.relay_id,
                                   log_path=config.escalation_log_path)
        # The verifiable log: the store appends the leaves; this signs and serves the tree.
        self.tlog = RelayLog(store=store.log, relay_id=config.relay_id, key=key,
                             relay_card=card.encode(), clock=clock, settings=config.log,
                             metrics=self.metrics, log=log)

    # ----------------------------------------------------------------- helpers
    def _answer(self, attestation: bytes, duplicate: bool) -> Accepted:
        """The answer to a submission or confirmation, naming the attestation's leaf."""
        return Accepted(attestation, duplicate, self.tlog.index_of(attestation))

    def _limit(self, buckets: Buckets, key: str, now: int, amount: float, what: str) -> None:
        wait = buckets.take(key, now, amount)
        if wait > 0:
            raise RelayError(429, "rate_limited", f"{what} limit reached for {key}; retry later",
                             retry_after=min(wait, 3600.0))

    def _limit_pending(self, desk: str, now: int, pairs: int) -> None:
        """Refuse a desk that has too many notices nobody acknowledged yet (recounted from
        the store every few seconds; counted up in between)."""
        count, counted_at = self._pending.get(desk, (0, -PENDING_RECOUNT_MS))
        if now - counted_at >= PENDING_RECOUNT_MS:
            count, counted_at = self.store.pending_sent(desk), now
        limit = self.config.limits.max_pending_per_desk
        if count + pairs > limit:
            raise RelayError(429, "rate_limited",
                             f"{desk} has {count} unacknowledged notice deliveries; the limit "
                             f"is {limit}", retry_after=PENDING_RECOUNT_MS / 1000)
        self._pending[desk] = (count + pairs, counted_at)

    def recipient(self, desk: str, now: int) -> VerifiedDesk:
        """The verified keys of a recipient desk, from the card it last logged in with."""
        card = self.store.get_card(desk)
        if card is None:
            raise RelayError(400, "bad_recipients",
                             f"recipient {desk} is unknown to this relay (it has never logged in)")
        cached = self._cards.get(desk)
        if cached is None or cached.card != card or now - cached.checked_at >= CARD_RECHECK_MS:
            try:
                cached = _CachedCard(card, self.trust.verify_card(DeskCard.decode(card), now),
                                     now)
            except HotlineError as exc:
                raise RelayError(400, "bad_recipients",
                                 f"recipient {desk} has no valid certificate: {exc}") from exc
            self._cards[desk] = cached
        v = cached.verified
        if self.trust.is_revoked(v.desk, v.ik_kid) or v.not_after <= now:
            raise RelayError(400, "bad_recipients", f"recipient {desk}'s key is revoked or expired")
        return v

    def check_session(self, session: DeskSession) -> None:
        """Refuse a session whose key was revoked or whose time ran out since it began."""
        if self.trust.is_revoked(session.desk, session.verified.ik_kid):
            raise RelayError(401, "unauthorized", "the desk's key has been revoked")
        if session.expires_at <= self.clock.now_ms():
            raise RelayError(401, "unauthorized", "the session expired; log in again")

    async def publish_card(self, session: DeskSession, desk: str, raw: bytes) -> bool:
        """Take a desk's card from any logged-in desk (a card is self-certifying: its
        country's authority signed it), so that a desk set up today can receive notices
        before its first login. Returns whether the relay now holds a card it did not.

        A published card never replaces a newer one: the relay keeps the card whose
        identity certificate, then newest encryption key certificate, begins later (a
        peer must not be able to bring back a desk's retired encryption key). The desk's
        own login always replaces it, as before."""
        now = self.clock.now_ms()
        self._limit(self._confirm_rate, session.desk, now, 1, "confirmation")
        try:
            card = DeskCard.decode(raw)
        except HotlineError as exc:
            raise RelayError(400, "bad_card", f"the card does not decode: {exc}") from exc
        if card.desk != desk:
            raise RelayError(400, "bad_card",
                             f"the card is {card.desk}'s, published under {desk[:43]!r}")
        try:
            verified = self.trust.verify_card(card, now)
        except HotlineError as exc:
            # verify_card also refuses a revoked identity key.
            raise RelayError(400, "bad_card", f"the card of {desk} does not verify: {exc}"
                             ) from exc
        stored = self.store.get_card(desk)
        if stored == raw:
            return False
        if stored is not None and _card_age(DeskCard.decode(stored)) >= _card_age(card):
            raise RelayError(409, "stale_card",
                             f"the relay holds a newer card of {desk} than the one published")
        await self.store.put_card(desk, raw, verified.not_after, now)
        self._cards.pop(desk, None)
        self.log.info("card.published", desk=desk, by=session.desk,
                      key_id=verified.ik_kid.hex())
        return True

    async def remember_card(self, session: DeskSession, now: int) -> None:
        """Keep the card a desk logged in with (no write when it is the one stored: logins
        and reads then work even while the database cannot be written)."""
        if self.store.get_card(session.desk) != session.card:
            await self.store.put_card(session.desk, session.card, session.verified.not_after,
                                      now)

    def _deadlines(self, recipients: tuple[str, ...], severity: str, accepted_at: int
                   ) -> tuple[dict[str, Policy], tuple[DeadlineSpec, ...]]:
        """The policy in force now for each recipient, frozen, and the ladders it starts."""
        policies = {r: self.config.policy.for_recipient(r, severity) for r in recipients}
        specs = []
        for r, p in policies.items():
            specs.append(DeadlineSpec(r, "ack", accepted_at + p.ack_window_ms, p.repeat_ms,
                                      p.max_level))
            if p.response_window_ms is not None:
                specs.append(DeadlineSpec(r, "response", accepted_at + p.response_window_ms,
                                          p.repeat_ms, p.max_level))
        return policies, tuple(specs)

    # ----------------------------------------------------------------- notices
    def charge_bytes(self, session: DeskSession, size: int) -> None:
        """Charge ``size`` received bytes to the desk's byte budget (before decoding them)."""
        self._limit(self._byte_rate, session.desk, self.clock.now_ms(), size,
                    "bytes per minute")

    async def submit(self, session: DeskSession, body: bytes, *, bytes_charged: bool = False
                     ) -> tuple[Accepted, bool]:
        """Accept a sealed notice. Returns the answer and whether it was newly stored.

        The body's bytes are charged to the desk's byte budget before anything is
        decoded, so a desk sending bodies that fail to decode is limited like any other
        (``bytes_charged``: the stream charged the message's bytes already). Decoding is
        bounded (the envelope is read by its shape), so the notice count is charged once
        the body is known to be a notice of this desk."""
        now = self.clock.now_ms()
        if not bytes_charged:
            self._limit(self._byte_rate, session.desk, now, len(body), "bytes per minute")
        env = Envelope.decode(body, max_bytes=self.config.limits.max_notice_bytes)
        h = env.header
        if h.sender != session.desk or not equal(h.sender_kid, session.verified.ik_kid):
            raise RelayError(403, "sender_mismatch",
                             f"the notice is from {h.sender}, but this session is {session.desk}")
        self._limit(self._notice_rate, session.desk, now, 1, "notices per minute")
        self._limit_pending(session.desk, now, len(h.stanzas))
        check_submission(env, sender=session.verified, now=now,
                         hybrid_required_from=self.trust.root.hybrid_required_from)
        for stanza in h.stanzas:
            recipient = self.recipient(stanza.to, now)
            keys = recipient.encryption_keys
            if stanza.ek_kid not in keys:
                raise RelayError(400, "bad_stanza",
                                 f"the stanza for {stanza.to} uses an encryption key that is "
                                 "not among its current certified keys")
            # What the relay can tell of a downgrade: a classical stanza to a desk whose
            # card carries a hybrid key, or a stanza whose kind is not its key's.
            if stanza.kem != kem_of(keys[stanza.ek_kid]) or (
                    stanza.kem != HYBRID and recipient.has_hybrid_key):
                raise RelayError(400, "downgrade_refused",
                                 f"the stanza for {stanza.to} is {stanza.kem}; that desk has a "
                                 "hybrid encryption key and gets only hybrid stanzas")
        digest = env.digest
        attestation = self.stamper.attestation("accepted", notice_id=h.notice_id, digest=digest,
                                               desk=h.sender, at=now)
        policies, deadlines = self._deadlines(h.recipients, h.severity, now)
        rec = NoticeRecord(
            notice_id=h.notice_id, sender=h.sender, recipients=h.recipients, digest=digest,
            severity=h.severity, status=h.status, in_reply_to=h.in_reply_to,
            created_at=h.created_at, accepted_at=now, envelope=body, attestation=attestation,
            sender_cert=session.verified_cert,
            policy=codec.pack({r: p.to_wire() for r, p in policies.items()}),
            deadlines=deadlines)
        if self.config.test_only_answer_before_commit:
            return await self._answer_before_commit(rec, attestation)
        outcome = await self.store.insert_notice(rec, self.stamper, self.routing,
                                                 self.clock.now_ms)
        if isinstance(outcome, Conflict):
            raise RelayError(409, "id_conflict",
                             f"notice id {h.notice_id.hex()} was already used for other content")
        if isinstance(outcome, Duplicate):
            self.log.info("notice.resubmitted", notice_id=h.notice_id.hex(), sender=h.sender)
            return self._answer(outcome.attestation, True), False
        assert isinstance(outcome, Inserted)
        self._remember(NoticeFacts(h.notice_id, h.sender, h.recipients, digest, h.severity,
                                   h.status))
        for desk, _seq in outcome.events:
            self.hub.publish(desk)
        self.log.info("notice.accepted", notice_id=h.notice_id.hex(), sender=h.sender,
                      recipients=list(h.recipients), severity=h.severity, status=h.status,
                      size=len(body), accepted_at=now,
                      in_reply_to=h.in_reply_to.hex() if h.in_reply_to else None)
        self.metrics.accepted.labels(h.severity, h.status).inc()
        for original, responder in outcome.responded:
            self.log.info("notice.responded", notice_id=original.hex(), recipient=responder,
                          reply_id=h.notice_id.hex())
        await self.escalator.announce(list(outcome.resolved))
        if deadlines:
            self.escalator.poke(min(d.due_at for d in deadlines))
        faults.crash_point("post_commit_pre_response")
        return self._answer(attestation, False), True

    async def _answer_before_commit(self, rec: NoticeRecord, attestation: bytes
                                    ) -> tuple[Accepted, bool]:
        """The negative control's broken durability: commit later, answer now."""

        async def commit_later() -> None:
            await asyncio.sleep(0.2)
            outcome = await self.store.insert_notice(rec, self.stamper, self.routing,
                                                     self.clock.now_ms)
            if isinstance(outcome, Inserted):
                for desk, _seq in outcome.events:
                    self.hub.publish(desk)

        task = asyncio.create_task(commit_later())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return self._answer(attestation, False), True

    def _remember(self, facts: NoticeFacts) -> NoticeFacts:
        if len(self._facts) >= NOTICE_FACTS_KEPT:
            del self._facts[next(iter(self._facts))]  # the oldest
        self._facts[facts.notice_id] = facts
        return facts

    def facts(self, notice_id: bytes) -> NoticeFacts | None:
        """The routing facts of a stored notice (from memory, else from the store)."""
        facts = self._facts.get(notice_id)
        if facts is None:
            n = self.store.get_notice(notice_id)
            if n is None:
                return None
            facts = self._remember(NoticeFacts(n.notice_id, n.sender, tuple(n.recipients),
                                               n.digest, n.severity, n.status))
        return facts

    def _involved(self, session: DeskSession, notice_id: bytes) -> Any:
        notice = self.store.get_notice(notice_id)
        if notice is None or (session.desk != notice.sender
                              and session.desk not in notice.recipients):
            # The same answer for "no such notice" and "not yours": existence is not leaked.
            raise RelayError(404, "not_found", f"no notice {notice_id.hex()} for {session.desk}")
        return notice

    def envelope(self, session: DeskSession, notice_id: bytes) -> bytes:
        envelope: bytes = self._involved(session, notice_id).envelope
        return envelope

    def status(self, session: DeskSession, notice_id: bytes) -> NoticeStatus:
        n = self._involved(session, notice_id)
        escalations: dict[str, list[bytes]] = {}
        for row in self.store.escalations_of(notice_id):
            escalations.setdefault(row.recipient, []).append(row.statement)
        recipients = tuple(
            RecipientStatus(DeskId(d.recipient), d.signer_cert, d.receipt, d.receipt_attestation,
                            d.ack, d.ack_attestation, tuple(escalations.get(d.recipient, ())),
                            d.rejection, d.rejection_attestation)
            for d in self.store.deliveries(notice_id))
        policy = (codec.unpack(n.policy, what="stored policy", max_bytes=1 << 20)
                  if n.policy else None)
        return NoticeStatus(notice_id, n.sender, n.severity, n.status, n.attestation, n.digest,
                            recipients, policy)

    # ----------------------------------------------------------------- confirmations
    async def confirm(self, session: DeskSession, body: bytes) -> Accepted:
        """Record a receipt, an ack or (by the body's type) a rejection."""
        if statement_type(body) == "rejection":
            return await self.reject(session, body)
        now = self.clock.now_ms()
        self._limit(self._confirm_rate, session.desk, now, 1, "confirmations per minute")
        c = Confirmation.decode(body)
        if c.recipient != session.desk:
            raise RelayError(403, "forbidden",
                             f"this {c.kind} is signed as {c.recipient}, not {session.desk}")
        notice = self.facts(c.notice_id)
        if notice is None:
            raise RelayError(404, "not_found", f"no notice {c.notice_id.hex()}")
        if session.desk not in notice.recipients:
            raise RelayError(403, "forbidden",
                             f"notice {c.notice_id.hex()} is not addressed to {session.desk}")
        if not equal(c.digest, notice.digest):
            raise RelayError(409, "digest_mismatch",
                             f"this {c.kind} is for another version of notice "
                             f"{c.notice_id.hex()} (digest differs)")
        c.verify(session.verified, notice_id=notice.notice_id, digest=notice.digest,
                 sender=notice.sender, recipient=session.desk)  # type: ignore[arg-type]
        event = "delivered" if c.kind == "receipt" else "acknowledged"
        outcome = await self.store.record_confirmation(
            ConfirmationRecord(c.kind, c.notice_id, notice.digest, session.desk, notice.sender,
                               body, session.verified_cert),
            self.stamper, self.routing, self.clock.now_ms)
        if isinstance(outcome, Duplicate):
            return self._answer(outcome.attestation, True)
        self.hub.publish(notice.sender)
        latency = outcome.at - outcome.accepted_at
        self.log.info(f"notice.{event}", notice_id=c.notice_id.hex(), sender=notice.sender,
                      recipient=session.desk, severity=notice.severity, status=notice.status,
                      latency_ms=latency, in_time=outcome.in_time)
        counter = self.metrics.delivered if c.kind == "receipt" else self.metrics.acknowledged
        counter.labels(notice.severity, notice.status).inc()
        if c.kind == "ack":
            self.metrics.time_to_ack.labels(notice.severity, notice.status).observe(
                latency / 1000)
        if notice.status != "actual":
            step = ("deliver" if c.kind == "receipt"
                    else "auto_acknowledge" if c.automatic else "acknowledge")
            self.metrics.drill_time.labels(session.desk, notice.status, step).observe(
                latency / 1000)
            if c.kind == "ack" and not outcome.in_time:
                self.metrics.drill_late.labels(session.desk, notice.status).inc()
        if outcome.resolved is not None:
            self.log.info("escalation.time_to_acknowledge", notice_id=c.notice_id.hex(),
                          recipient=session.desk, time_to_ack_ms=latency)
            await self.escalator.announce([outcome.resolved])
        faults.crash_point("post_ack_commit_pre_response" if c.kind == "ack"
                           else "post_deliver_pre_mark")
        return self._answer(outcome.attestation, False)

    async def reject(self, session: DeskSession, body: bytes) -> Accepted:
        """Record a recipient's signed rejection of a notice it could not open, checked like
        a confirmation (its signer is the session's desk, a recipient of exactly this
        notice and digest), and push it to the sender. Its deadlines keep running."""
        now = self.clock.now_ms()
        r = Rejection.decode(body)
        if r.recipient != session.desk:
            raise RelayError(403, "forbidden",
                             f"this rejection is signed as {r.recipient}, not {session.desk}")
        self._limit(self._confirm_rate, session.desk, now, 1, "confirmations per minute")
        notice = self.facts(r.notice_id)
        if notice is None:
            raise RelayError(404, "not_found", f"no notice {r.notice_id.hex()}")
        if session.desk not in notice.recipients:
            raise RelayError(403, "forbidden",
                             f"notice {r.notice_id.hex()} is not addressed to {session.desk}")
        if not equal(r.digest, notice.digest):
            raise RelayError(409, "digest_mismatch",
                             f"this rejection is for another version of notice "
                             f"{r.notice_id.hex()} (digest differs)")
        r.verify(session.verified, notice_id=notice.notice_id, digest=notice.digest,
                 sender=notice.sender, recipient=session.desk)  # type: ignore[arg-type]
        outcome = await self.store.record_rejection(
            RejectionRecord(r.notice_id, notice.digest, session.desk, notice.sender, r.reason,
                            body, session.verified_cert),
            self.stamper, self.clock.now_ms)
        if isinstance(outcome, Conflict):
            raise RelayError(409, "already_confirmed",
                             f"{session.desk} already confirmed notice {r.notice_id.hex()}: "
                             "it cannot reject it now")
        if isinstance(outcome, Duplicate):
            return self._answer(outcome.attestation, True)
        self.hub.publish(notice.sender)
        self.log.warning("notice.rejected_by_recipient", notice_id=r.notice_id.hex(),
                         sender=notice.sender, recipient=session.desk, reason=r.reason,
                         severity=notice.severity, status=notice.status)
        return self._answer(outcome.attestation, False)

    # ----------------------------------------------------------------- streams
    def inbox(self, session: DeskSession, after: int, limit: int) -> InboxPage:
        """A page of the desk's stream: at most ``limit`` events and ``max_page_bytes``
        (but at least one event: a notice larger than the budget comes on its own)."""
        limit = max(1, min(limit, self.config.limits.max_inbox_page))
        events, more = self.store.events_page(session.desk, after, limit,
                                              self.config.limits.max_page_bytes)
        return InboxPage(tuple(self.tlog.annotate(events)), events[-1].seq if events else after,
                         more)

    def events_after(self, desk: str, after: int, limit: int = 200) -> tuple[list[Event], bool]:
        """The next events of a desk's stream (from memory when it reaches back), cut
        like an inbox page, and whether more follow."""
        max_bytes = self.config.limits.max_page_bytes
        recent = self.hub.recent_page(desk, after, limit, max_bytes)
        events, more = recent if recent is not None else self.store.events_page(
            desk, after, limit, max_bytes)
        return self.tlog.annotate(events), more

    # ----------------------------------------------------------------- operators
    def overdue(self, limit: int = 1000) -> list[OverdueRow]:
        return self.store.overdue(self.clock.now_ms(), limit)

    def escalations_since(self, since: int, limit: int = 1000) -> list[EscalationRow]:
        return self.store.escalations_since(since, limit)

    # ----------------------------------------------------------------- trust
    async def add_revocation(self, body: bytes, *, keep: bool = True) -> tuple[Revocation, bool]:
        """Verify a revocation (signed by the desk's own country), keep it durably (unless
        ``keep`` is False: it comes from the home's revocations/ folder), apply it: the
        key's streams end at once and every stream that asked for revocations gets it.
        Returns it and whether it was new here."""
        rev = Revocation.decode(body)
        new = not self.trust.is_revoked(rev.desk, rev.ik_kid)
        try:
            self.trust.add_revocation(rev)
        except HotlineError as exc:
            raise RelayError(400, "bad_signature",
                             f"the revocation of {rev.desk} is not signed by its country's "
                             f"authority: {exc}") from exc
        if keep:
            await self.store.add_revocation(rev.desk, rev.ik_kid, rev.encode(),
                                            self.clock.now_ms())
        self._cards.pop(rev.desk, None)
        self.hub.close_key(rev.desk, rev.ik_kid, "key revoked")
        if new:
            self.hub.publish_all()
            self.log.warning("desk.revoked", desk=rev.desk, key_id=rev.ik_kid.hex())
        return rev, new

    def revocations(self) -> list[bytes]:
        """Every revocation this relay enforces, encoded, in the order it learned them."""
        return [r.encode() for r in self.trust.revocations]


def _card_age(card: DeskCard) -> tuple[int, int]:
    """How recent a card is: its identity certificate's start, then its newest encryption
    key certificate's start."""
    return card.cert.not_before, max((e.not_before for e in card.eks), default=0)
