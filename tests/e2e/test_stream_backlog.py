"""A desk that comes back to a large backlog gets all of it on the stream, without stalls.

The relay sends a backlog in windows the client grants as it consumes (PROTOCOL.md 16.5);
the client reads its stream whatever its consumer is doing, so the answer to each delivery
receipt sent on the stream arrives at once, never behind events the consumer has not
taken yet. Before, the reader stopped reading when its buffer was full: every receipt
then waited out the stream's answer timeout and went over HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from pathlib import Path

import pytest

from client.client import HotlineClient
from client.items import EscalationEvent, ReceivedNotice
from tests.factory import report
from tests.relay_harness import PASSPHRASE, RelayProcess

#: Notices waiting for the desk, each also escalated to it once: 2 * N events.
N = 1000
#: Every notice escalates one second after it was accepted, once.
POLICY = '\n[policy.critical]\nack_window = "1s"\nrepeat_every = "1s"\nmax_level = 1\n'
LIMITS = {"HOTLINE_RELAY_LIMITS_NOTICES_PER_MINUTE": "1000000",
          "HOTLINE_RELAY_LIMITS_CONFIRMATIONS_PER_MINUTE": "1000000"}
#: Failure bounds on a loaded 2-core machine, not measures of speed.
FILL_BOUND_S = 300.0
DRAIN_BOUND_S = 300.0


def open_desk(federation: dict[str, Path], relay: RelayProcess, name: str) -> HotlineClient:
    return HotlineClient.from_home(federation[name], PASSPHRASE, relays=[relay.url])


@pytest.fixture
def busy_relay(tmp_path: Path, federation: dict[str, Path]) -> RelayProcess:
    proc = RelayProcess.create(tmp_path, env=LIMITS)
    with open(proc.home / "relay.toml", "a") as fh:
        fh.write(POLICY)
    proc.start()
    yield proc  # type: ignore[misc]
    proc.stop()


async def _fill(federation: dict[str, Path], relay: RelayProcess) -> set[bytes]:
    """N critical notices from us.caisi to cn.cac (offline), all escalated to it."""
    async with open_desk(federation, relay, "cn.cac") as cn:
        await cn.fetch()  # logs in: the relay learns its card
    async with open_desk(federation, relay, "us.caisi") as us:
        gate = asyncio.Semaphore(16)

        async def one() -> bytes:
            async with gate:
                return (await us.send(to=["cn.cac"], severity="critical",
                                      notice=report())).notice_id

        async with asyncio.timeout(FILL_BOUND_S):
            ids = set(await asyncio.gather(*(one() for _ in range(N))))
            while len(relay.events("notice.escalated")) < N:
                await asyncio.sleep(0.2)
    return ids


async def test_desk_back_to_a_backlog_gets_it_all_on_the_stream_without_timeouts(
        federation: dict[str, Path], busy_relay: RelayProcess,
        caplog: pytest.LogCaptureFixture) -> None:
    """1,000 waiting notices and 1,000 escalations arrive over the stream; every delivery
    receipt is answered on the stream: no answer timeout, no fallback to HTTP."""
    ids = await _fill(federation, busy_relay)
    caplog.set_level(logging.INFO, logger="hotline.client.connection")
    notices: set[bytes] = set()
    escalated: set[bytes] = set()
    async with open_desk(federation, busy_relay, "cn.cac") as cn:
        started = time.monotonic()
        async with aclosing(cn.events()) as items:
            try:
                async with asyncio.timeout(DRAIN_BOUND_S):
                    async for item in items:
                        if isinstance(item, ReceivedNotice):
                            notices.add(item.notice_id)
                        elif isinstance(item, EscalationEvent) and item.kind == "escalation":
                            escalated.add(item.notice_id)
                        # The first receipt that fell back fails the test at once.
                        fallbacks = [r.getMessage() for r in caplog.records
                                     if "_fallback" in r.getMessage()]
                        assert not fallbacks, (
                            f"after {len(notices)} notices: {fallbacks[0]}")
                        if len(notices) == N and len(escalated) == N:
                            break
            except TimeoutError:
                pytest.fail(f"in {DRAIN_BOUND_S:.0f} s the desk got {len(notices)} of {N} "
                            f"notices and {len(escalated)} of {N} escalations")
        drained_s = time.monotonic() - started
        assert notices == ids and escalated == ids
        stats = cn.connection.stream_stats
        assert (stats.answer_timeouts, stats.http_fallbacks) == (0, 0)
        # Every receipt went on the stream (the connection sends nothing else here).
        assert stats.answered == N
    logging.getLogger(__name__).info("drained %d events in %.1f s", 2 * N, drained_s)
