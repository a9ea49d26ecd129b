"""Fixtures for the client's unit tests: a federation in memory, a fake relay, clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from client.client import HotlineClient
from client.home import Home
from tests.client.fakes import FakeConnection, FakeRelay
from tests.factory import NOW, Federation

MakeClient = Callable[..., HotlineClient]


@pytest.fixture
def fed() -> Federation:
    return Federation.create(desks=("us.caisi", "cn.cac", "cn.mss"))


@pytest.fixture
def fake_relay(fed: Federation) -> FakeRelay:
    return FakeRelay(fed)


@pytest.fixture
async def make_client(
    tmp_path: Path, fed: Federation, fake_relay: FakeRelay
) -> AsyncIterator[MakeClient]:
    """``make_client("us.caisi")``: a client of that desk, with its own home folder, talking
    to the fake relay. Calling it again for the same desk reopens the same home (as a
    restarted process would)."""
    made: list[HotlineClient] = []

    def make(desk: str, **kw: object) -> HotlineClient:
        connection = kw.pop("connection", None) or FakeConnection(fake_relay, desk)
        clock = kw.pop("clock", lambda: NOW)
        trust = kw.pop("trust", fed.trust)
        client = HotlineClient(
            fed.desks[desk].secrets, Home(tmp_path / desk), connection=connection,  # type: ignore[arg-type]
            trust=trust, card=fed.desks[desk].card, clock=clock, **kw,  # type: ignore[arg-type]
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()
