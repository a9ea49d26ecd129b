"""Calling operators' webhooks about escalations: at least once, never blocking.

Each (escalation, webhook) pair is a row in the outbox, written in the escalation's own
transaction. A sender loop posts due rows concurrently, each with a timeout: a failing or
slow webhook only delays its own retries (exponential backoff with jitter), never the
escalation or the other webhooks. Receivers de-duplicate by the ``Idempotency-Key``
header and check ``X-Hotline-Signature`` (HMAC-SHA256 of the body with the shared secret).
The body follows Alertmanager's webhook format, so such receivers take it as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
from typing import Any

import aiohttp

from relay.clock import Clock
from relay.config import Webhook
from relay.escalator import iso
from relay.metrics import Metrics
from relay.store.base import EscalationRow, OutboxItem, Store

MAX_ATTEMPTS = 12
TIMEOUT_S = 10.0
BACKOFF_BASE_MS = 1000
BACKOFF_MAX_MS = 5 * 60 * 1000


def backoff_ms(attempts: int, rng: random.Random | None = None) -> int:
    """Delay before attempt ``attempts + 1``: 1 s, 2 s, 4 s ... capped at 5 min, +-20 %."""
    base = min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** max(0, attempts - 1))
    jitter = (rng or random).uniform(0.8, 1.2)
    return int(base * jitter)


def alert_body(row: EscalationRow, webhook: str, relay_id: str, origin: str) -> dict[str, Any]:
    firing = row.kind == "escalated"
    labels = {
        "alertname": "HotlineNoticeUnacknowledged" if row.track == "ack"
        else "HotlineNoticeUnanswered",
        "notice_id": row.notice_id.hex(), "sender": row.sender, "recipient": row.recipient,
        "severity": row.severity, "status": row.status, "track": row.track,
        "relay": relay_id,
    }
    what = "acknowledged" if row.track == "ack" else "answered"
    summary = (f"{row.severity} notice from {row.sender} to {row.recipient} not {what}: "
               f"level {row.level}, {(row.at - row.deadline) // 1000} s past its deadline"
               if firing else
               f"{row.severity} notice from {row.sender} to {row.recipient} {what} "
               f"{(row.at - row.deadline) // 1000} s after its deadline")
    annotations = {"summary": summary, "level": str(row.level),
                   "delivered": str(row.delivered).lower(),
                   "missed_levels": str(row.missed_levels),
                   "exercise": str(row.status != "actual").lower()}
    if row.rejected is not None:
        annotations["summary"] += f"; rejected by recipient: {row.rejected}"
        annotations["rejected_by_recipient"] = row.rejected
    alert = {
        "status": "firing" if firing else "resolved", "labels": labels,
        # The level is an annotation, not a label: every level of one ladder is one alert,
        # which the resolution then clears.
        "annotations": annotations,
        "startsAt": iso(row.deadline),
        "endsAt": iso(row.at) if not firing else "0001-01-01T00:00:00Z",
        "generatorURL": origin, "fingerprint": f"{row.notice_id.hex()}-{row.recipient}-{row.track}",
    }
    return {"version": "4", "groupKey": f"{{}}:{{notice_id=\"{row.notice_id.hex()}\"}}",
            "truncatedAlerts": 0, "status": alert["status"], "receiver": webhook,
            "groupLabels": {"notice_id": row.notice_id.hex()}, "commonLabels": labels,
            "commonAnnotations": alert["annotations"], "externalURL": origin,
            "alerts": [alert]}


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


class WebhookSender:
    def __init__(self, *, store: Store, clock: Clock, webhooks: tuple[Webhook, ...],
                 relay_id: str, origin: str, log: Any, metrics: Metrics) -> None:
        self.store = store
        self.clock = clock
        self.hooks = {h.name: h for h in webhooks}
        self.relay_id = relay_id
        self.origin = origin
        self.log = log
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    await self.deliver_due()
                except Exception:  # the loop must outlive any one bad pass; it is logged
                    self.log.exception("webhook.pass_failed")
                nxt = self.store.outbox_next()
                now = self.clock.now_ms()
                delay = 30.0 if nxt is None else max(0.0, min(30.0, (nxt - now) / 1000))
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=delay)
        self._session = None

    async def deliver_due(self) -> int:
        items = self.store.outbox_due(self.clock.now_ms(), 100)
        await asyncio.gather(*(self._deliver(item) for item in items))
        return len(items)

    async def _deliver(self, item: OutboxItem) -> None:
        hook = self.hooks.get(item.webhook)
        now = self.clock.now_ms()
        attempts = item.attempts + 1
        if hook is None:
            await self.store.outbox_result(item.id, done_at=None, attempts=attempts,
                                           next_attempt_at=now, failed_at=now,
                                           error="webhook no longer configured")
            return
        body = json.dumps(alert_body(item.escalation, hook.name, self.relay_id, self.origin),
                          sort_keys=True).encode()
        ts = str(now // 1000)
        headers = {"Content-Type": "application/json",
                   "Idempotency-Key": f"{self.relay_id}:{item.escalation.id}:{hook.name}",
                   "X-Hotline-Timestamp": ts,
                   "X-Hotline-Signature": signature(hook.secret, ts, body)}
        error: str | None = None
        try:
            assert self._session is not None
            async with self._session.post(hook.url, data=body, headers=headers) as resp:
                if not 200 <= resp.status < 300:
                    error = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
        now = self.clock.now_ms()
        if error is None:
            self.metrics.webhook_calls.labels(hook.name).inc()
            self.log.info("webhook.delivered", webhook=hook.name, attempts=attempts,
                          escalation_id=item.escalation.id)
            await self.store.outbox_result(item.id, done_at=now, attempts=attempts,
                                           next_attempt_at=now, failed_at=None, error=None)
            return
        self.metrics.webhook_failures.labels(hook.name).inc()
        give_up = attempts >= MAX_ATTEMPTS
        self.log.warning("webhook.failed", webhook=hook.name, attempts=attempts, error=error,
                         escalation_id=item.escalation.id, giving_up=give_up)
        await self.store.outbox_result(item.id, done_at=None, attempts=attempts,
                                       next_attempt_at=now + backoff_ms(attempts),
                                       failed_at=now if give_up else None, error=error)
