"""Webhook calls about escalations: outbox, retries with backoff, Alertmanager body, HMAC.

A real aiohttp receiver listens on 127.0.0.1; the relay runs in-process on a manual clock
and the WebhookSender is driven pass by pass (or its loop is woken with ``poke``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from relay.escalator import iso
from relay.policy import MINUTE
from relay.webhooks import MAX_ATTEMPTS, WebhookSender
from tests.factory import DAY, NOW, Federation
from tests.relay.inproc import InProcessRelay

US, CN = "us.caisi", "cn.cac"
SECRET = "webhook-secret-0123456789"
OTHER_SECRET = "another-secret-9876543210"
ORIGIN = "https://relay.test.example"
CRIT_ACK = 15 * MINUTE


@dataclass
class Call:
    at: int  # relay (manual clock) time of the call
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass
class Receiver:
    """Answers 500 to the first ``failures[name]`` calls to /<name>, then 200."""

    url: str = ""
    now: Callable[[], int] = lambda: 0
    failures: dict[str, int] = field(default_factory=dict)
    calls: dict[str, list[Call]] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        calls = self.calls.setdefault(name, [])
        calls.append(Call(self.now(), dict(request.headers), await request.read()))
        if len(calls) <= self.failures.get(name, 0):
            return web.Response(status=500, text="try again")
        return web.Response(status=200, text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(failures={"good": 2, "bad": 10**9})
    app = web.Application()
    app.router.add_post("/{name}", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield rec
    finally:
        await runner.cleanup()


def hook(name: str, url: str, secret: str = SECRET, extra: str = "") -> str:
    return f'[[webhooks]]\nname = "{name}"\nurl = "{url}"\nsecret = "{secret}"\n{extra}'


async def open_relay(tmp_path: Path, receiver: Receiver, toml: str) -> InProcessRelay:
    fed = Federation.create()
    r = await InProcessRelay(tmp_path / "relay", fed, '[relay]\nid = "test-relay"\n' + toml
                             ).open()
    receiver.now = r.clock.now_ms
    return r


def make_sender(r: InProcessRelay) -> WebhookSender:
    return WebhookSender(store=r.store, clock=r.clock, webhooks=r.config.webhooks,
                         relay_id="test-relay", origin=ORIGIN,
                         log=structlog.get_logger("webhooks"), metrics=r.relay.metrics)


@contextlib.asynccontextmanager
async def session_for(sender: WebhookSender) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        sender._session = s
        try:
            yield
        finally:
            sender._session = None


async def drive(r: InProcessRelay, sender: WebhookSender, until: Callable[[], bool],
                max_passes: int = 100) -> int:
    """Move the manual clock to each next attempt and run a pass, until ``until()``."""
    passes = 0
    while not until():
        nxt = r.store.outbox_next()
        assert nxt is not None, "the outbox ran dry before the condition held"
        assert passes < max_passes, "too many passes"
        r.clock.set(max(r.clock.now_ms(), nxt))
        await sender.deliver_due()
        passes += 1
    return passes


def outbox(r: InProcessRelay) -> dict[tuple[int, str], tuple[Any, ...]]:
    """(escalation id, webhook) -> (attempts, done_at, failed_at, last_error)."""
    with contextlib.closing(sqlite3.connect(r.home / "relay.db")) as conn:
        rows = conn.execute("SELECT escalation_id, webhook, attempts, done_at, failed_at,"
                            " last_error FROM outbox").fetchall()
    return {(x[0], x[1]): tuple(x[2:]) for x in rows}


def sample(r: InProcessRelay, name: str, **labels: str) -> float | None:
    value: float | None = r.relay.metrics.registry.get_sample_value(name, labels)
    return value


def check_signature(call: Call, secret: str) -> None:
    ts = call.headers["X-Hotline-Timestamp"]
    assert ts == str(call.at // 1000)
    expected = hmac.new(secret.encode(), ts.encode() + b"." + call.body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(call.headers["X-Hotline-Signature"], f"sha256={expected}")


# --------------------------------------------------------------------------- tests


async def test_retried_until_delivered_once_with_one_key_and_valid_signature(
        tmp_path: Path, receiver: Receiver) -> None:
    """Two HTTP 500s then success: exactly three calls with the same Idempotency-Key, signed
    with the secret, carrying an Alertmanager 'firing' body; then nothing more is sent."""
    r = await open_relay(tmp_path, receiver, hook("good", receiver.url + "/good"))
    try:
        sender = make_sender(r)
        env = await r.send(US, CN)
        (esc,) = await r.advance(CRIT_ACK)
        assert esc.webhooks == ("good",)
        async with session_for(sender):
            passes = await drive(r, sender, lambda: r.store.outbox_next() is None)
            assert passes == 3
            calls = receiver.calls["good"]
            assert len(calls) == 3
            assert {c.headers["Idempotency-Key"] for c in calls} == {f"test-relay:{esc.id}:good"}
            for call in calls:
                check_signature(call, SECRET)
                assert call.headers["Content-Type"] == "application/json"
                assert call.json == calls[0].json  # the same alert each time
            # Exponential backoff with +-20 % jitter: about 1 s, then about 2 s.
            assert 800 <= calls[1].at - calls[0].at <= 1200
            assert 1600 <= calls[2].at - calls[1].at <= 2400
            assert calls[0].at == esc.at

            body = calls[0].json
            assert (body["version"], body["status"], body["receiver"], body["externalURL"],
                    body["truncatedAlerts"]) == ("4", "firing", "good", ORIGIN, 0)
            assert body["groupLabels"] == {"notice_id": env.notice_id.hex()}
            (alert,) = body["alerts"]
            assert alert["status"] == "firing"
            assert alert["labels"] == body["commonLabels"] == {
                "alertname": "HotlineNoticeUnacknowledged", "notice_id": env.notice_id.hex(),
                "sender": US, "recipient": CN, "severity": "critical", "status": "actual",
                "track": "ack", "relay": "test-relay"}
            assert alert["annotations"]["level"] == "1"
            assert alert["annotations"]["exercise"] == "false"
            assert alert["annotations"]["delivered"] == "false"
            assert alert["annotations"]["missed_levels"] == "0"
            assert alert["startsAt"] == iso(NOW + CRIT_ACK)
            assert alert["endsAt"] == "0001-01-01T00:00:00Z"
            assert alert["generatorURL"] == ORIGIN
            assert "Model weights" not in calls[0].body.decode()  # metadata only

            assert outbox(r) == {(esc.id, "good"): (3, calls[2].at, None, None)}
            assert sample(r, "hotline_webhook_deliveries_total", webhook="good") == 1
            assert sample(r, "hotline_webhook_failures_total", webhook="good") == 2

            # Nothing is due any more (before the next level falls due).
            r.clock.advance(4 * MINUTE)
            assert await sender.deliver_due() == 0
            assert len(receiver.calls["good"]) == 3

            # The late ack's resolution goes out as a 'resolved' alert.
            await r.ack(CN, env)
            acked_at = r.clock.now_ms()
            await drive(r, sender, lambda: r.store.outbox_next() is None)
            (resolved_call,) = receiver.calls["good"][3:]
            check_signature(resolved_call, SECRET)
            assert resolved_call.headers["Idempotency-Key"] != calls[0].headers["Idempotency-Key"]
            body = resolved_call.json
            assert body["status"] == "resolved"
            (alert,) = body["alerts"]
            assert (alert["status"], alert["startsAt"], alert["endsAt"]) == (
                "resolved", iso(NOW + CRIT_ACK), iso(acked_at))
            assert alert["annotations"]["level"] == "1"
            assert "level" not in alert["labels"]  # one alert per ladder, whatever the level
            assert sample(r, "hotline_webhook_deliveries_total", webhook="good") == 2
    finally:
        await r.close()


async def test_failing_webhook_neither_blocks_another_nor_retries_forever(
        tmp_path: Path, receiver: Receiver) -> None:
    """A webhook that always fails does not delay another's delivery, and is marked failed
    after MAX_ATTEMPTS attempts, each counted in hotline_webhook_failures_total."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    r = await open_relay(tmp_path, receiver,
                         hook("good", receiver.url + "/good")
                         + hook("bad", receiver.url + "/bad", OTHER_SECRET)
                         + hook("dead", f"http://127.0.0.1:{dead_port}/x"))
    try:
        sender = make_sender(r)
        await r.send(US, CN)
        (esc,) = await r.advance(CRIT_ACK)
        assert esc.webhooks == ("good", "bad", "dead")
        async with session_for(sender):
            await drive(r, sender, lambda: outbox(r)[(esc.id, "good")][1] is not None)
            assert len(receiver.calls["good"]) == 3
            assert outbox(r)[(esc.id, "bad")][1:3] == (None, None)  # still being retried
            for call in receiver.calls["bad"]:
                check_signature(call, OTHER_SECRET)
            await drive(r, sender, lambda: r.store.outbox_next() is None)
            assert len(receiver.calls["good"]) == 3
            assert len(receiver.calls["bad"]) == MAX_ATTEMPTS
            assert len({c.headers["Idempotency-Key"] for c in receiver.calls["bad"]}) == 1
            rows = outbox(r)
            attempts, done_at, failed_at, error = rows[(esc.id, "bad")]
            assert (attempts, done_at, error) == (MAX_ATTEMPTS, None, "HTTP 500")
            assert failed_at == receiver.calls["bad"][-1].at
            attempts, done_at, failed_at, error = rows[(esc.id, "dead")]
            assert (attempts, done_at) == (MAX_ATTEMPTS, None) and failed_at is not None
            assert error is not None and error != "HTTP 500"
            assert sample(r, "hotline_webhook_failures_total", webhook="bad") == MAX_ATTEMPTS
            assert sample(r, "hotline_webhook_failures_total", webhook="dead") == MAX_ATTEMPTS
            assert sample(r, "hotline_webhook_failures_total", webhook="good") == 2
            assert sample(r, "hotline_webhook_deliveries_total", webhook="good") == 1
            assert sample(r, "hotline_webhook_deliveries_total", webhook="bad") is None
            r.clock.advance(30 * DAY)
            assert await sender.deliver_due() == 0
            assert len(receiver.calls["bad"]) == MAX_ATTEMPTS
    finally:
        await r.close()


async def test_exercise_notice_alert_is_labelled_and_skips_real_only_hooks(
        tmp_path: Path, receiver: Receiver) -> None:
    """An exercise notice's alert says status=exercise, exercise=true; a real_only hook gets
    no call for it, but does for an actual notice."""
    receiver.failures.clear()
    r = await open_relay(tmp_path, receiver,
                         hook("all", receiver.url + "/all")
                         + hook("real", receiver.url + "/real", extra="real_only = true\n"))
    try:
        sender = make_sender(r)
        drill = await r.send(US, CN, status="exercise")
        (esc,) = await r.advance(CRIT_ACK)
        assert esc.webhooks == ("all",)
        async with session_for(sender):
            await drive(r, sender, lambda: r.store.outbox_next() is None)
            (call,) = receiver.calls["all"]
            assert "real" not in receiver.calls
            (alert,) = call.json["alerts"]
            assert alert["labels"]["status"] == "exercise"
            assert alert["labels"]["notice_id"] == drill.notice_id.hex()
            assert alert["annotations"]["exercise"] == "true"
            actual = await r.send(US, CN)
            await r.advance(CRIT_ACK)  # the actual notice's level 1 (the drill's levels too)
            await drive(r, sender, lambda: r.store.outbox_next() is None)
            (real_call,) = receiver.calls["real"]
            assert real_call.json["alerts"][0]["labels"]["notice_id"] == actual.notice_id.hex()
    finally:
        await r.close()


async def test_sender_loop_delivers_when_poked_on_the_manual_clock(
        tmp_path: Path, receiver: Receiver) -> None:
    """The sender's own loop, woken by the escalator and by poke(), retries on relay time
    and delivers exactly once."""
    r = await open_relay(tmp_path, receiver, hook("good", receiver.url + "/good"))
    sender = make_sender(r)
    r.relay.escalator.on_webhooks = sender.poke
    task = asyncio.create_task(sender.run())
    try:
        await r.send(US, CN)
        (esc,) = await r.advance(CRIT_ACK)  # announces, which pokes the sender

        async def attempts(n: int) -> None:
            for _ in range(500):
                row = outbox(r).get((esc.id, "good"))
                if row is not None and row[0] >= n:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"no attempt {n} within 5 s")

        await attempts(1)
        for n in (2, 3):
            nxt = r.store.outbox_next()
            assert nxt is not None
            r.clock.set(nxt)
            sender.poke()
            await attempts(n)
        assert outbox(r)[(esc.id, "good")][1] is not None
        assert r.store.outbox_next() is None
        r.clock.advance(DAY)
        sender.poke()
        await asyncio.sleep(0.05)
        assert len(receiver.calls["good"]) == 3
    finally:
        sender.stop()
        await asyncio.wait_for(task, 5)
        await r.close()
