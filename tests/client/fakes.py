"""An in-memory relay and a connection to it, for the client's tests (no network).

``FakeRelay`` keeps notices, confirmations and each desk's event stream, and signs its
attestations with a real relay key, as the relay would. ``FakeConnection`` offers the
methods of :class:`client.connection.RelayConnection` that ``HotlineClient`` calls, served
by a ``FakeRelay``; tests script failures on it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

import nacl.signing

from client.connection import RelayError, RelayUnavailable
from keys import Attestation, Confirmation, Envelope, RelayCard
from keys.frames import Accepted, Event, InboxPage, NoticeStatus, RecipientStatus
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
    #: What ``GET /v1/revocations`` serves (encoded revocations, unverified).
    revocations: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.card = RelayCard.create(self.relay_id, self.key, NOW)
        for name, desk in self.fed.desks.items():
            self.cards.setdefault(name, desk.card.encode())

    def cert(self, desk: str) -> bytes:
        return self.fed.desks[desk].card.cert.encode()

    def attest(self, event: str, notice_id: bytes, digest: bytes, desk: str,
               level: int = 0) -> bytes:
        return Attestation.create(event, relay_id=self.relay_id, relay_key=self.key,
                                  notice_id=notice_id, digest=digest, desk=desk,  # type: ignore[arg-type]
                                  at=self.now, level=level).encode()

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
        for to in env.header.recipients:
            self.push(to, kind="notice", notice_id=nid, envelope=raw, attestation=att,
                      signer_cert=self.cert(env.header.sender))
        return Accepted(att, False)

    def confirm(self, raw: bytes) -> Accepted:
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

    def status(self, notice_id: bytes) -> NoticeStatus:
        env = self.notices[notice_id]
        recipients = []
        for to in env.header.recipients:
            receipt = self.confirmations.get((notice_id, to, "receipt"))
            ack = self.confirmations.get((notice_id, to, "ack"))
            recipients.append(RecipientStatus(
                to, self.cert(to), receipt[0] if receipt else None,
                receipt[1] if receipt else None, ack[0] if ack else None,
                ack[1] if ack else None))
        h = env.header
        return NoticeStatus(notice_id, h.sender, h.severity, h.status, self.accepted[notice_id],
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

    @property
    def relay_card(self) -> RelayCard:
        return self.relay.card

    async def ensure_relay(self) -> RelayCard:
        return self.relay.card

    async def get_card(self, desk: str) -> bytes | None:
        return self.relay.cards.get(desk)

    @property
    def url(self) -> str:
        return self.urls[0]

    async def revocations(self) -> list[bytes]:
        return list(self.relay.revocations)

    async def post_notice(self, raw: bytes) -> Accepted:
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
        self.confirmations.append(raw)
        return self.relay.confirm(raw)

    async def inbox(self, after: int, limit: int = 100) -> InboxPage:
        events = [e for e in self.relay.streams[self.desk] if e.seq > after]
        page = events[:limit]
        return InboxPage(tuple(page), page[-1].seq if page else after, len(events) > limit)

    async def events(self, cursor: Callable[[], int]) -> AsyncGenerator[Event, None]:
        """The stream as it is now (a live stream would then wait; this one ends)."""
        for event in [e for e in self.relay.streams[self.desk] if e.seq > cursor()]:
            yield event

    async def get_status(self, notice_id: bytes) -> NoticeStatus:
        return self.relay.status(notice_id)

    async def get_notice(self, notice_id: bytes) -> bytes:
        return self.relay.notices[notice_id].raw

    async def close(self) -> None:
        self.closed = True
