"""Shared fixtures: a federation of test desks on disk and a real relay process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.relay_harness import RawDesk, RelayProcess, make_federation

DESKS = ("us.caisi", "us.nsc", "cn.cac", "cn.mss")


@pytest.fixture
def federation(tmp_path: Path) -> dict[str, Path]:
    """Two countries, two desks each, certified and with each other's cards."""
    return make_federation(tmp_path, DESKS)


@pytest.fixture
def relay(tmp_path: Path, federation: dict[str, Path]) -> Iterator[RelayProcess]:
    proc = RelayProcess.create(tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def desks(relay: RelayProcess, federation: dict[str, Path],
                http: aiohttp.ClientSession) -> dict[str, RawDesk]:
    """Every test desk, logged in to the relay (so the relay knows all their cards)."""
    return {name: await RawDesk(http, relay.url, home).login() for name, home in federation.items()}
