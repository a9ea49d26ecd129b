"""The relay connection against a scripted in-process HTTP server (not the relay): login,
pinning, retries with backoff, rate limits, re-login, failover and the event stream."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import nacl.signing
import pytest
from aiohttp import WSCloseCode, web
from aiohttp.test_utils import TestServer

from client.connection import (
    MemoryPin,
    RelayConnection,
    RelayError,
    RelayIdentityError,
    RelayUnavailable,
    RetryPolicy,
)
from keys import RelayCard
from keys.frames import (
    Challenge,
    ErrorFrame,
    Event,
    Session,
    SessionRequest,
    auth_message,
    relay_message,
)
from keys.primitives import verify
from tests.factory import NOW, Federation

MSGPACK = "application/msgpack"


def _error(status: int, code: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=ErrorFrame(code, f"scripted {code}", "rq1").encode(),
                        content_type=MSGPACK, headers=headers)


@dataclass
class ScriptedRelay:
    """Speaks the relay's login and answers GET /v1/thing from a script of responses."""

    fed: Federation
    key: nacl.signing.SigningKey = field(default_factory=nacl.signing.SigningKey.generate)
    origin: str = ""
    script: list[web.Response] = field(default_factory=list)
    tokens: set[bytes] = field(default_factory=set)
    logins: int = 0
    sessions_asked: int = 0
    hits: int = 0
    events: list[Event] = field(default_factory=list)
    stream_afters: list[int] = field(default_factory=list)
    #: Close codes for successive stream connections once their events are sent.
    stream_closes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.card = RelayCard.create("test-relay", self.key, NOW)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/relay", self.relay_card)
        app.router.add_post("/v1/auth/challenge", self.challenge)
        app.router.add_post("/v1/auth/session", self.session)
        app.router.add_get("/v1/thing", self.thing)
        app.router.add_get("/v1/stream", self.stream)
        return app

    async def relay_card(self, request: web.Request) -> web.Response:
        return web.Response(body=self.card.encode(), content_type=MSGPACK)

    async def challenge(self, request: web.Request) -> web.Response:
        self.nonce = os.urandom(32)
        ch = Challenge("test-relay", self.origin, self.nonce, NOW + 60_000)
        return web.Response(body=ch.encode(), content_type=MSGPACK)

    async def session(self, request: web.Request) -> web.Response:
        self.sessions_asked += 1
        req = SessionRequest.decode(await request.read())
        desk = self.fed.desks[req.desk]
        verify(desk.secrets.identity.verify_key, b"",
               auth_message(self.origin, req.desk, desk.secrets.ik_kid, req.nonce, req.ts),
               req.signature, signer=req.desk)
        assert req.nonce == self.nonce
        token = os.urandom(32)
        self.tokens.add(token)
        self.logins += 1
        return web.Response(body=Session(token, NOW + 900_000, self.card.encode()).encode(),
                            content_type=MSGPACK)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme == "Hotline" and bytes.fromhex(token or "00") in self.tokens

    async def thing(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if not self._authorized(request):
            return _error(401, "unauthorized")
        if not self.script:
            return web.Response(body=b"ok", content_type=MSGPACK)
        return self.script.pop(0)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(401, "unauthorized")
        after = int(request.query["after"])
        self.stream_afters.append(after)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for event in self.events:
            if event.seq > after:
                await ws.send_bytes(relay_message("event", event=event))
        if self.stream_closes:
            await ws.close(code=self.stream_closes.pop(0))
            return ws
        async for _ in ws:  # hold the stream open until the client leaves
            pass
        return ws


@dataclass
class Harness:
    relay: ScriptedRelay
    url: str
    sleeps: list[float]
    pinned: list[str]
    connections: list[RelayConnection]

    def connect(self, urls: list[str] | None = None, **kw: object) -> RelayConnection:
        desk = self.relay.fed.desks["us.caisi"]
        options: dict[str, object] = dict(
            pin=MemoryPin(), policy=RetryPolicy(attempts=4, base_delay=0.25),
            jitter=lambda: 0.0,
        )
        options.update(kw)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        conn = RelayConnection(
            urls or [self.url], secrets=desk.secrets, card=lambda: desk.card.encode(),
            clock=lambda: NOW, sleep=sleep,
            on_pinned=lambda card, fpr: self.pinned.append(fpr), **options,  # type: ignore[arg-type]
        )
        self.connections.append(conn)
        return conn


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    relay = ScriptedRelay(Federation.create())
    server = TestServer(relay.app(), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    relay.origin = url
    h = Harness(relay, url, [], [], [])
    yield h
    for conn in h.connections:
        await conn.close()
    await server.close()


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_login_signs_for_the_origin_and_pins_the_relay_on_first_use(
    harness: Harness,
) -> None:
    """One login serves many requests; the relay card is pinned once, fingerprint reported."""
    pin = MemoryPin()
    conn = harness.connect(pin=pin)
    assert (await conn.request("GET", "/v1/thing")).body == b"ok"
    assert (await conn.request("GET", "/v1/thing")).body == b"ok"
    assert harness.relay.logins == 1
    assert pin.card is not None and pin.card.key == harness.relay.card.key
    assert len(harness.pinned) == 1 and len(harness.pinned[0].split()) == 6


async def test_transient_failures_are_retried_with_growing_backoff(harness: Harness) -> None:
    harness.relay.script = [_error(503, "storage_unavailable"), _error(502, "bad_gateway"),
                            _error(500, "bug")]
    conn = harness.connect()
    assert (await conn.request("GET", "/v1/thing")).body == b"ok"
    assert harness.sleeps == [0.125, 0.25, 0.5]


async def test_attempts_are_bounded(harness: Harness) -> None:
    """Four tries, then RelayUnavailable naming the last failure."""
    harness.relay.script = [_error(503, "storage_unavailable") for _ in range(10)]
    conn = harness.connect()
    with pytest.raises(RelayUnavailable, match="storage_unavailable") as info:
        await conn.request("GET", "/v1/thing")
    assert harness.relay.hits == 4 and len(harness.sleeps) == 3
    assert info.value.code == "relay_unavailable" and info.value.status == 503


async def test_rate_limit_waits_as_long_as_the_relay_asks(harness: Harness) -> None:
    harness.relay.script = [_error(429, "rate_limited", {"Retry-After": "3"})]
    conn = harness.connect()
    assert (await conn.request("GET", "/v1/thing")).body == b"ok"
    assert harness.sleeps == [3.0]


async def test_rate_limit_beyond_the_policy_is_reported_not_waited(harness: Harness) -> None:
    harness.relay.script = [_error(429, "rate_limited", {"Retry-After": "3600"})]
    conn = harness.connect()
    with pytest.raises(RelayUnavailable, match="3600"):
        await conn.request("GET", "/v1/thing")
    assert harness.sleeps == []


async def test_expired_session_logs_in_again_once(harness: Harness) -> None:
    conn = harness.connect()
    await conn.request("GET", "/v1/thing")
    harness.relay.tokens.clear()  # the relay restarted and forgot its sessions
    assert (await conn.request("GET", "/v1/thing")).body == b"ok"
    assert harness.relay.logins == 2


async def test_a_second_401_is_raised(harness: Harness) -> None:
    harness.relay.script = [_error(401, "unauthorized"), _error(401, "unauthorized")]
    conn = harness.connect()
    with pytest.raises(RelayError) as info:
        await conn.request("GET", "/v1/thing")
    assert info.value.status == 401 and harness.relay.logins == 2


async def test_refusal_carries_status_code_detail_and_is_not_retried(harness: Harness) -> None:
    harness.relay.script = [_error(409, "id_conflict")]
    conn = harness.connect()
    with pytest.raises(RelayError) as info:
        await conn.request("GET", "/v1/thing")
    e = info.value
    assert (e.status, e.code, e.detail, e.request_id) == (409, "id_conflict",
                                                          "scripted id_conflict", "rq1")
    assert "409 id_conflict" in e.message and harness.sleeps == []


async def test_answer_without_error_frame_is_still_a_clear_error(harness: Harness) -> None:
    harness.relay.script = [web.Response(status=400, text="<html>bad</html>")]
    conn = harness.connect()
    with pytest.raises(RelayError) as info:
        await conn.request("GET", "/v1/thing")
    assert info.value.code == "http_400" and "bad" in info.value.detail


async def test_fails_over_to_the_next_url(harness: Harness) -> None:
    """A URL that refuses connections is skipped for the next one of the same relay."""
    conn = harness.connect([_dead_url(), harness.url])
    assert (await conn.request("GET", "/v1/thing")).body == b"ok"
    assert conn.url == harness.url and len(harness.sleeps) == 1


async def test_a_changed_relay_key_is_refused_before_login(harness: Harness) -> None:
    """The pinned card decides; a relay presenting another key gets no signature."""
    other = RelayCard.create("test-relay", nacl.signing.SigningKey.generate(), NOW)
    conn = harness.connect(pin=MemoryPin(other))
    with pytest.raises(RelayIdentityError, match="not the pinned"):
        await conn.request("GET", "/v1/thing")
    assert harness.relay.sessions_asked == 0


async def test_challenge_for_another_origin_is_not_signed(harness: Harness) -> None:
    """A server relaying another relay's challenge cannot get our login for it."""
    harness.relay.origin = "https://other-relay.example"
    conn = harness.connect()
    with pytest.raises(RelayIdentityError) as info:
        await conn.request("GET", "/v1/thing")
    assert info.value.code == "origin_mismatch" and harness.relay.sessions_asked == 0


def _event(seq: int) -> Event:
    return Event(seq, "escalation", bytes([seq]) * 16, attestation=b"statement")


async def test_stream_resumes_from_the_cursor_after_a_disconnect(harness: Harness) -> None:
    """After an abnormal close the stream reconnects with after=cursor() and goes on."""
    harness.relay.events = [_event(1), _event(2), _event(3)]
    harness.relay.stream_closes = [WSCloseCode.INTERNAL_ERROR]
    conn = harness.connect()
    cursor = 0
    got = []
    gen = conn.events(lambda: cursor)
    async with asyncio.timeout(10):
        async for event in gen:
            got.append(event.seq)
            if event.seq == 2:
                cursor = 2  # the caller durably handled 1 and 2
            if len(got) == 4:
                break
    await gen.aclose()
    # 1,2,3 then (replay after the close) 3 again: 3 was not yet handled durably.
    assert got == [1, 2, 3, 3]
    assert harness.relay.stream_afters == [0, 2] and harness.relay.logins == 1


async def test_stream_whose_session_ended_logs_in_again(harness: Harness) -> None:
    harness.relay.events = [_event(1)]
    harness.relay.stream_closes = [4401]
    conn = harness.connect()
    seen: list[int] = []
    gen = conn.events(lambda: seen[-1] if seen else 0)
    async with asyncio.timeout(10):
        async for event in gen:
            seen.append(event.seq)
            harness.relay.events.append(_event(event.seq + 1))
            if len(seen) == 2:
                break
    await gen.aclose()
    assert seen == [1, 2] and harness.relay.logins == 2
