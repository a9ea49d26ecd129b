"""The relay's core, store and escalator in this process, on a manual clock.

For deadline and escalation tests that must move time by hours without waiting: the same
Relay, SqliteStore and Escalator the server runs, only the clock is a ManualClock and
the desks' sessions are made directly from the test federation's keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nacl.signing
import structlog

from keys import Confirmation, Envelope, RelayCard, seal
from keys.frames import Accepted
from relay import config as config_mod
from relay.auth import DeskSession
from relay.clock import ManualClock
from relay.core import Relay
from relay.hub import Hub
from relay.store.base import EscalationRow
from relay.store.sqlite import SqliteStore
from tests.factory import NOW, YEAR, Federation, report


class InProcessRelay:
    def __init__(self, home: Path, fed: Federation, toml: str = "") -> None:
        home.mkdir(parents=True, exist_ok=True)
        if "[relay]" not in toml:
            toml = '[relay]\nid = "test-relay"\n' + toml
        (home / "relay.toml").write_text(toml)
        self.home = home
        self.fed = fed
        self.clock = ManualClock(NOW)
        self.config = config_mod.load(home, env={})
        self.store = SqliteStore(str(home / "relay.db"))
        self.key = nacl.signing.SigningKey.generate()
        self.card = RelayCard.create("test-relay", self.key, NOW)
        assert fed.trust is not None
        self.relay = Relay(config=self.config, store=self.store, trust=fed.trust, key=self.key,
                           card=self.card, clock=self.clock, hub=Hub(),
                           log=structlog.get_logger("relay"))

    async def open(self) -> InProcessRelay:
        await self.store.open()
        for name in self.fed.desks:
            await self.relay.remember_card(self.session(name), self.clock.now_ms())
        return self

    async def close(self) -> None:
        await self.store.close()

    async def restart(self, toml: str | None = None) -> None:
        """A new Relay on the same database (and, if given, a new configuration)."""
        await self.store.close()
        if toml is not None:
            (self.home / "relay.toml").write_text(toml)
        now = self.clock.now_ms()
        self.__init__(self.home, self.fed, (self.home / "relay.toml").read_text())  # type: ignore[misc]
        self.clock.set(now)  # the relay was down; time went on
        await self.store.open()

    def session(self, name: str) -> DeskSession:
        desk = self.fed.desks[name]
        verified = self.fed.verified(name, NOW)
        return DeskSession(name, verified, desk.card.encode(), desk.card.cert.encode(),
                           NOW + YEAR)

    async def send(self, sender: str, *recipients: str, severity: str = "critical",
                   status: str = "actual", in_reply_to: bytes | None = None,
                   **report_fields: Any) -> Envelope:
        env = seal(report(**report_fields), sender=self.fed.desks[sender].secrets,
                   recipients=[self.fed.verified(r, NOW) for r in recipients],
                   severity=severity, status=status, in_reply_to=in_reply_to,
                   now=self.clock.now_ms())
        accepted, new = await self.relay.submit(self.session(sender), env.raw)
        assert new and isinstance(accepted, Accepted)
        return env

    async def confirm(self, kind: str, recipient: str, env: Envelope) -> Accepted:
        c = Confirmation.create(kind, notice_id=env.notice_id, digest=env.digest,
                                sender=env.header.sender, me=self.fed.desks[recipient].secrets,
                                at=self.clock.now_ms())
        return await self.relay.confirm(self.session(recipient), c.encode())

    async def ack(self, recipient: str, env: Envelope) -> Accepted:
        return await self.confirm("ack", recipient, env)

    async def tick(self) -> list[EscalationRow]:
        return await self.relay.escalator.tick()

    async def advance(self, ms: int) -> list[EscalationRow]:
        self.clock.advance(ms)
        return await self.tick()
