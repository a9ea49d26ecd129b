"""An in-memory relay and a connection to it, for the client's tests (no network).

``FakeRelay`` keeps notices, confirmations and each desk's event stream, and signs its
attestations with a real relay key, as the relay would. ``FakeConnection`` offers the
methods of :class:`client.connection.RelayConnection` that ``HotlineClient`` calls, served
by a ``FakeRelay``; tests script failures on it.

A ``FakeRelay`` turns hostile through named fault switches (all off by default), each a
lie a relay could tell the client:

* ``sign_accepted_at``: sign this time in "accepted" attestations instead of its clock
  (backdating, postdating, ``0``);
* ``drop_notices``: accept notices but deliver them to nobody;
* ``status_drop_recipients``, ``status_severity``, ``status_status``: answer status
  requests without those recipients, or with another severity or status;
* :meth:`FakeRelay.resolve`: sign a "resolved" for a recipient that never acknowledged.

``FakeConnection.down`` makes the relay unreachable: every request raises RelayUnavailable
(``requests_while_down`` counts them), as the real connection does after its retries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

import nacl.signing

from client.connection import RelayError, RelayUnavailable
from keys import Attestation, Confirmation, Envelope, RelayCard
from keys.frames import Accepted, Event, InboxPage, NoticeStatus, RecipientStatus
from keys.receipts import Rejection, statement_type
from tests.factory import NOW, Federation


@dataclass
class FakeRelay:
    fed: Federation
    relay_id: str = "test-relay"
    key: nacl.signing.SigningKey = field(default_factory=nacl.signing.SigningKey.generate)
    now: int = NOW
    cards: dict[str, bytes] = field(default_factory=dict)
    notices: dict[bytes, Envelope] = field(default_factory=dict)
    accepted: dict[bytes, bytes] = field(default_factory=dict)
    streams: dict[str, list[Event]] = field(default_factory=lambda: defaultdict(list))
    confirmations: dict[tuple[bytes, str, str], tuple[bytes, bytes]] = field(default_factory=dict)
    seq: int = 0
    # Fault switches (see the module docstring).
    sign_accepted_at: int | None = None
    drop_notices: bool = False
    status_drop_recipients: set[str] = field(default_factory=set)
    status_severity: str | None = None
    status_status: str | None = None
    #: What ``GET /v1/revocations`` serves (encoded revocations, unverified).
    revocations: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.card = RelayCard.create(self.relay_id, self.key, NOW)
        for name, desk in self.fed.desks.items():
            self.cards.setdefault(name, desk.card.encode())

    def cert(self, desk: str) -> bytes:
        return self.fed.desks[desk].card.cert.encode()

    def attest(self, event: str, notice_id: bytes, digest: bytes, desk: str,
               level: int = 0, at: int | None = None) -> bytes:
        if at is None:
            forged = self.sign_accepted_at if event == "accepted" else None
            at = self.now if forged is None else forged
        return Attestation.create(event, relay_id=self.relay_id, relay_key=self.key,
                                  notice_id=notice_id, digest=digest, desk=desk,  # type: ignore[arg-type]
                                  at=at, level=level).encode()

    def push(self, desk: str, **kw: object) -> Event:
        self.seq += 1
        event = Event(self.seq, **kw)  # type: ignore[arg-type]
        self.streams[desk].append(event)
        return event

    def submit(self, raw: bytes) -> Accepted:
        env = Envelope.decode(raw)
        nid = env.notice_id
        if nid in self.notices:
            if self.notices[nid].raw != raw:
                raise RelayError(409, "id_conflict", "notice id used for other content")
            return Accepted(self.accepted[nid], True)
        att = self.attest("accepted", nid, env.digest, env.header.sender)
        self.notices[nid] = env
        self.accepted[nid] = att
        for to in () if self.drop_notices else env.header.recipients:
            self.push(to, kind="notice", notice_id=nid, envelope=raw, attestation=att,
                      signer_cert=self.cert(env.header.sender))
        return Accepted(att, False)

    def confirm(self, raw: bytes) -> Accepted:
        if statement_type(raw) == "rejection":
            return self.reject(raw)
        c = Confirmation.decode(raw)
        env = self.notices[c.notice_id]
        key = (c.notice_id, c.recipient, c.kind)
        if key in self.confirmations:
            return Accepted(self.confirmations[key][1], True)
        event = "delivered" if c.kind == "receipt" else "acknowledged"
        att = self.attest(event, c.notice_id, env.digest, c.recipient)
        self.confirmations[key] = (raw, att)
        self.push(env.header.sender, kind=c.kind, notice_id=c.notice_id, confirmation=raw,
                  attestation=att, signer_cert=self.cert(c.recipient))
        return Accepted(att, False)

    def resolve(self, notice_id: bytes, desk: str) -> Event:
        """Tell the sender, signed, that ``desk``'s escalation of the notice is resolved
        (whether or not ``desk`` ever acknowledged)."""
        env = self.notices[notice_id]
        return self.push(env.header.sender, kind="resolved", notice_id=notice_id,
                         attestation=self.attest("resolved", notice_id, env.digest, desk))

    def reject(self, raw: bytes) -> Accepted:
        r = Rejection.decode(raw)
        env = self.notices[r.notice_id]
        key = (r.notice_id, r.recipient, "rejection")
        if key in self.confirmations:
            return Accepted(self.confirmations[key][1], True)
        att = self.attest("rejected", r.notice_id, env.digest, r.recipient)
        self.confirmations[key] = (raw, att)
        self.push(env.header.sender, kind="rejected", notice_id=r.notice_id, confirmation=raw,
                  attestation=att, signer_cert=self.cert(r.recipient))
        return Accepted(att, False)

    def status(self, notice_id: bytes) -> NoticeStatus:
        env = self.notices[notice_id]
        recipients = []
        for to in env.header.recipients:
            if to in self.status_drop_recipients:
                continue
            receipt = self.confirmations.get((notice_id, to, "receipt"))
            ack = self.confirmations.get((notice_id, to, "ack"))
            rej = self.confirmations.get((notice_id, to, "rejection"))
            recipients.append(RecipientStatus(
                to, self.cert(to), receipt[0] if receipt else None,
                receipt[1] if receipt else None, ack[0] if ack else None,
                ack[1] if ack else None, (), rej[0] if rej else None,
                rej[1] if rej else None))
        h = env.header
        return NoticeStatus(notice_id, h.sender, self.status_severity or h.severity,
                            self.status_status or h.status, self.accepted[notice_id],
                            env.digest, tuple(recipients))


@dataclass
class FakeConnection:
    """What HotlineClient needs of a RelayConnection, served by a FakeRelay."""

    relay: FakeRelay
    desk: str
    urls: tuple[str, ...] = ("http://fake-relay.invalid",)
    #: Raise RelayUnavailable for this many POSTs of notices before accepting.
    fail_posts: int = 0
    #: Raise this for every POST of a notice.
    post_error: Exception | None = None
    #: Replace the attestation of accepted notices (to test that it is verified).
    tamper: Callable[[bytes], bytes] | None = None
    posted: list[bytes] = field(default_factory=list)
    confirmations: list[bytes] = field(default_factory=list)
    closed: bool = False
    #: While True every request fails as if the relay could not be reached.
    down: bool = False
    requests_while_down: int = 0
    #: Cards this desk gave the relay with PUT /v1/cards/{desk}.
    published: list[bytes] = field(default_factory=list)

    def _check(self) -> None:
        if self.down:
            self.requests_while_down += 1
            raise RelayUnavailable("GET /v1/relay failed 6 times; last: connection refused "
                                   "(scripted)")

    @property
    def relay_card(self) -> RelayCard:
        return self.relay.card

    async def ensure_relay(self) -> RelayCard:
        return self.relay.card

    async def get_card(self, desk: str) -> bytes | None:
        self._check()
        return self.relay.cards.get(desk)

    @property
    def url(self) -> str:
        return self.urls[0]

    async def revocations(self) -> list[bytes]:
        self._check()
        return list(self.relay.revocations)

    async def post_notice(self, raw: bytes) -> Accepted:
        self._check()
        self.posted.append(raw)
        if self.post_error is not None:
            raise self.post_error
        if self.fail_posts > 0:
            self.fail_posts -= 1
            raise RelayUnavailable("connection refused (scripted)")
        accepted = self.relay.submit(raw)
        if self.tamper is not None:
            return Accepted(self.tamper(accepted.attestation), accepted.duplicate)
        return accepted

    async def send_confirmation(self, raw: bytes) -> Accepted:
        return await self.post_confirmation(raw)

    async def post_confirmation(self, raw: bytes) -> Accepted:
        self._check()
        self.confirmations.append(raw)
        return self.relay.confirm(raw)

    async def inbox(self, after: int, limit: int = 100) -> InboxPage:
        self._check()
        events = [e for e in self.relay.streams[self.desk] if e.seq > after]
        page = events[:limit]
        return InboxPage(tuple(page), page[-1].seq if page else after, len(events) > limit)

    async def put_card(self, desk: str, card: bytes) -> bool:
        self._check()
        self.published.append(card)
        self.relay.cards[desk] = card
        return True

    async def events(self, cursor: Callable[[], int]) -> AsyncGenerator[Event, None]:
        """The stream as it is now (a live stream would then wait; this one ends)."""
        self._check()
        for event in [e for e in self.relay.streams[self.desk] if e.seq > cursor()]:
            yield event

    async def get_status(self, notice_id: bytes) -> NoticeStatus:
        self._check()
        return self.relay.status(notice_id)

    async def get_notice(self, notice_id: bytes) -> bytes:
        self._check()
        return self.relay.notices[notice_id].raw

    async def close(self) -> None:
        self.closed = True
