"""Slow clients are cut off; honest clients keep being served meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.relay_harness import RelayProcess, make_federation


@pytest.fixture
def guarded_relay(tmp_path: Path) -> Iterator[RelayProcess]:
    make_federation(tmp_path, ("us.caisi", "cn.cac"))
    proc = RelayProcess.create(tmp_path, env={"HOTLINE_RELAY_LIMITS_HEADER_TIMEOUT_S": "1"})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def _trickle(port: int, closed_after: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    try:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow: " + b"a" * 100:
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1), timeout=0.2) == b"":
                    break
            except TimeoutError:
                continue
    except (ConnectionResetError, BrokenPipeError):
        pass
    closed_after.append(time.monotonic() - start)
    writer.close()


async def test_header_trickle_is_cut_off_and_honest_clients_are_served(
        guarded_relay: RelayProcess) -> None:
    """50 connections trickling headers are closed after the 1 s header timeout (well before
    they finish), while honest requests made meanwhile answer at once."""
    closed_after: list[float] = []
    trickles = [asyncio.create_task(_trickle(guarded_relay.port, closed_after))
                for _ in range(50)]
    await asyncio.sleep(0.3)
    honest = []
    async with aiohttp.ClientSession() as http:
        for _ in range(10):
            t0 = time.monotonic()
            async with http.get(guarded_relay.url + "/healthz") as r:
                assert r.status == 200
            honest.append(time.monotonic() - t0)
    await asyncio.wait_for(asyncio.gather(*trickles), timeout=20)
    assert len(closed_after) == 50
    # Trickling all ~140 bytes would take ~28 s; each was cut near the 1 s timeout.
    assert max(closed_after) < 5, closed_after
    # Not closed at once either: the relay's timer starts at accept, a little before this
    # client's clock does (on a loaded machine, up to a few hundred ms before).
    assert min(closed_after) >= 0.5, closed_after
    # Honest requests are not queued behind the trickles (which would take ~28 s); the bound
    # leaves room for two loaded cores.
    assert max(honest) < 3.0, honest
    assert len(guarded_relay.events("http.header_timeout")) >= 50
