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

import aiohttp
import pytest

from client.client import HotlineClient
from client.items import EscalationEvent, ReceivedNotice
from keys.errors import MalformedInput
from keys.frames import (
    MAX_STREAM_CREDIT,
    STREAM_SUBPROTOCOL,
    client_message,
    decode_client_message,
    decode_relay_message,
)
from tests.factory import report
from tests.relay_harness import PASSPHRASE, RawDesk, RelayProcess

#: Notices waiting for the desk, each also escalated to it once: 2 * N events.
N = 1000
#: Every notice escalates one second after it was accepted, once.
POLICY = '\n[policy.critical]\nack_window = "1s"\nrepeat_every = "1s"\nmax_level = 1\n'
LIMITS = {"HOTLINE_RELAY_LIMITS_NOTICES_PER_MINUTE": "1000000",
          "HOTLINE_RELAY_LIMITS_CONFIRMATIONS_PER_MINUTE": "1000000"}
#: Failure bounds on a loaded 2-core machine, not measures of speed.
FILL_BOUND_S = 300.0
DRAIN_BOUND_S = 300.0
#: The drain fails as stalled when no item came for this long.
STALL_S = 60.0


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
            loop = asyncio.get_running_loop()
            bound = loop.time() + DRAIN_BOUND_S
            try:
                async with asyncio.timeout(STALL_S) as stall:
                    async for item in items:
                        stall.reschedule(min(bound, loop.time() + STALL_S))
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
                pytest.fail(f"stalled {STALL_S:.0f} s or over {DRAIN_BOUND_S:.0f} s: the desk "
                            f"got {len(notices)} of {N} notices and {len(escalated)} of {N} "
                            "escalations")
        drained_s = time.monotonic() - started
        assert notices == ids and escalated == ids
        stats = cn.connection.stream_stats
        assert (stats.answer_timeouts, stats.http_fallbacks) == (0, 0)
        # Every receipt went on the stream (the connection sends nothing else here).
        assert stats.answered == N
    logging.getLogger(__name__).info("drained %d events in %.1f s", 2 * N, drained_s)


# ----------------------------------------------------------------------------- the window


async def _backlog(federation: dict[str, Path], relay: RelayProcess, n: int) -> None:
    async with open_desk(federation, relay, "us.caisi") as us:
        for _ in range(n):
            await us.send(to=["cn.cac"], severity="high", notice=report())


async def _next(ws: aiohttp.ClientWebSocketResponse) -> dict[str, object]:
    msg = await ws.receive(timeout=20)
    assert msg.type == aiohttp.WSMsgType.BINARY, (msg.type, msg.data)
    return decode_relay_message(msg.data)


async def _events(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[int]:
    seqs = []
    for _ in range(n):
        m = await _next(ws)
        assert m["type"] == "event", m
        seqs.append(m["event"].seq)  # type: ignore[attr-defined]
    return seqs


async def _nothing_more_before_pong(ws: aiohttp.ClientWebSocketResponse, ref: int) -> None:
    await ws.send_bytes(client_message("ping", ref))
    m = await _next(ws)
    assert (m["type"], m["ref"]) == ("pong", ref), f"the relay sent {m['type']} first"


async def test_relay_sends_no_more_events_than_the_client_granted(
        federation: dict[str, Path], relay: RelayProcess, desks: dict[str, RawDesk]) -> None:
    """A client that granted 3 events gets 3 of a backlog of 10 and then nothing but the
    answers to its messages; each further grant lets exactly that many more through."""
    await _backlog(federation, relay, 10)
    cn = desks["cn.cac"]
    async with cn.http.ws_connect(relay.url + "/v1/stream?after=0", headers=cn.auth,
                                  protocols=(STREAM_SUBPROTOCOL,)) as ws:
        assert ws.protocol == STREAM_SUBPROTOCOL
        await ws.send_bytes(client_message("credit", 0, credit=3))
        first = await _events(ws, 3)
        await _nothing_more_before_pong(ws, 1)
        await ws.send_bytes(client_message("credit", 0, credit=7))
        rest = await _events(ws, 7)
        await _nothing_more_before_pong(ws, 2)
    seqs = first + rest
    assert seqs == sorted(set(seqs)) and len(seqs) == 10


async def test_client_granting_more_than_the_maximum_credit_is_refused(
        federation: dict[str, Path], relay: RelayProcess, desks: dict[str, RawDesk]) -> None:
    """Credit beyond MAX_STREAM_CREDIT outstanding is refused with an error naming the
    limit; the stream goes on with the credit it had."""
    await _backlog(federation, relay, 2)
    cn = desks["cn.cac"]
    async with cn.http.ws_connect(relay.url + "/v1/stream?after=0", headers=cn.auth,
                                  protocols=(STREAM_SUBPROTOCOL,)) as ws:
        await ws.send_bytes(client_message("credit", 5, credit=MAX_STREAM_CREDIT))
        await _events(ws, 2)
        # Two sent, MAX - 2 outstanding: 3 more would exceed the maximum.
        await ws.send_bytes(client_message("credit", 6, credit=3))
        m = await _next(ws)
        assert (m["type"], m["ref"], m["error"], m["status"]) == ("error", 6, "bad_value", 400)
        assert str(MAX_STREAM_CREDIT) in str(m["detail"])
        await _nothing_more_before_pong(ws, 7)


async def test_client_without_flow_control_gets_the_backlog_and_cannot_grant_credit(
        federation: dict[str, Path], relay: RelayProcess, desks: dict[str, RawDesk]) -> None:
    """An older client (no subprotocol) gets the whole backlog unasked, as before; a credit
    message on its stream is refused, and the stream goes on."""
    await _backlog(federation, relay, 5)
    cn = desks["cn.cac"]
    async with cn.http.ws_connect(relay.url + "/v1/stream?after=0", headers=cn.auth) as ws:
        assert ws.protocol is None
        assert len(set(await _events(ws, 5))) == 5
        await ws.send_bytes(client_message("credit", 9, credit=1))
        m = await _next(ws)
        assert (m["type"], m["ref"], m["error"]) == ("error", 9, "bad_value")
        await _nothing_more_before_pong(ws, 10)


@pytest.mark.parametrize("message, code", [
    ({"v": 1, "type": "credit", "ref": 0, "credit": 0}, "bad_value"),
    ({"v": 1, "type": "credit", "ref": 0, "credit": MAX_STREAM_CREDIT + 1}, "bad_value"),
    ({"v": 1, "type": "credit", "ref": 0}, "missing_field"),
    ({"v": 1, "type": "credit", "ref": 0, "credit": 1, "notice": None}, "unknown_field"),
    ({"v": 1, "type": "ping", "ref": 0, "credit": 1, "notice": None, "confirmation": None},
     "unknown_field"),
])
def test_malformed_credit_message_is_refused(message: dict[str, object], code: str) -> None:
    from keys import codec

    with pytest.raises(MalformedInput) as exc:
        decode_client_message(codec.pack(message))
    assert exc.value.code == code


def test_credit_message_round_trips() -> None:
    assert decode_client_message(client_message("credit", 3, credit=64)) == {
        "v": 1, "type": "credit", "ref": 3, "credit": 64, "confirmation": None, "notice": None}
    assert decode_client_message(client_message("ping", 4))["credit"] == 0
