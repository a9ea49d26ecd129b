"""Desk clients talking to the relay's real core, store and escalator in this process.

``InProcConnection`` offers what :class:`client.client.HotlineClient` calls of a
``RelayConnection``, served by :class:`tests.relay.inproc.InProcessRelay` (the same Relay,
SqliteStore and Escalator the server runs) on its manual clock: drills that span hours
and days run in milliseconds, through the real acceptance, confirmation and escalation
code. Only HTTP and the WebSocket are left out (tests/e2e covers them).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path

from client.client import HotlineClient
from client.home import Home
from keys import RelayCard
from keys.frames import Accepted, Event, InboxPage, NoticeStatus
from tests.factory import Federation
from tests.relay.inproc import InProcessRelay


@dataclass
class InProcConnection:
    relay: InProcessRelay
    desk: str
    urls: tuple[str, ...] = ("inproc://relay",)
    #: While True every request fails as if the relay could not be reached.
    down: bool = False

    def _check(self) -> None:
        if self.down:
            from client.connection import RelayUnavailable

            raise RelayUnavailable("connection refused (scripted)")

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def relay_card(self) -> RelayCard:
        return self.relay.card

    async def ensure_relay(self) -> RelayCard:
        return self.relay.card

    async def get_card(self, desk: str) -> bytes | None:
        self._check()
        return self.relay.store.get_card(desk)

    async def put_card(self, desk: str, raw: bytes) -> bool:
        self._check()
        return await self.relay.relay.publish_card(self.relay.session(self.desk), desk, raw)

    async def revocations(self) -> list[bytes]:
        self._check()
        return self.relay.relay.revocations()

    async def post_notice(self, raw: bytes) -> Accepted:
        self._check()
        accepted, _new = await self.relay.relay.submit(self.relay.session(self.desk), raw)
        return accepted

    async def send_confirmation(self, raw: bytes) -> Accepted:
        self._check()
        return await self.relay.relay.confirm(self.relay.session(self.desk), raw)

    async def inbox(self, after: int, limit: int = 100) -> InboxPage:
        self._check()
        return self.relay.relay.inbox(self.relay.session(self.desk), after, limit)

    async def events(self, cursor: Callable[[], int]) -> AsyncGenerator[Event, None]:
        self._check()
        for event in self.relay.relay.events_after(self.desk, cursor()):
            yield event

    async def get_status(self, notice_id: bytes) -> NoticeStatus:
        self._check()
        return self.relay.relay.status(self.relay.session(self.desk), notice_id)

    async def get_notice(self, notice_id: bytes) -> bytes:
        self._check()
        return self.relay.relay.envelope(self.relay.session(self.desk), notice_id)

    async def close(self) -> None:
        pass


def desk_client(relay: InProcessRelay, fed: Federation, home: Path, desk: str
                ) -> tuple[HotlineClient, InProcConnection]:
    conn = InProcConnection(relay, desk)
    client = HotlineClient(fed.desks[desk].secrets, Home(home / desk),
                           connection=conn,  # type: ignore[arg-type]
                           trust=fed.trust, card=fed.desks[desk].card,
                           clock=relay.clock.now_ms)
    return client, conn
