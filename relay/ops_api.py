"""What operators see: overdue notices, escalations (history and live), metrics.

Metadata only (S7): ids, desks, severities, times and levels; no route here reads a
notice's envelope. Operators authenticate with a key the relay's configuration grants.
JSON, since these views are for people and monitoring tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keys.frames import Challenge, OperatorChallengeRequest, OperatorSessionRequest, Session
from relay.app_keys import AUTH, RELAY
from relay.auth import OperatorSession
from relay.errors import RelayError
from relay.escalator import OPERATORS, iso, log_record
from relay.params import whole_number
from relay.store.base import OverdueRow


def _token(request: web.Request) -> bytes:
    header = request.headers.get("Authorization", "")
    scheme, _, token_hex = header.partition(" ")
    if scheme != "Hotline" or not re.fullmatch(r"[0-9a-f]{64}", token_hex):
        raise RelayError(401, "unauthorized", "send 'Authorization: Hotline <operator token>'")
    return bytes.fromhex(token_hex)


def _operator(request: web.Request) -> str:
    relay = request.app[RELAY]
    return request.app[AUTH].operator_session(_token(request), relay.clock.now_ms()).operator


def overdue_record(row: OverdueRow, now: int) -> dict[str, Any]:
    return {"notice_id": row.notice_id.hex(), "sender": row.sender, "recipient": row.recipient,
            "track": row.track, "severity": row.severity, "status": row.status,
            "exercise": row.status != "actual", "deadline": iso(row.due_at),
            "overdue_ms": now - row.due_at, "level": row.level, "delivered": row.delivered,
            "rejected_by_recipient": row.rejected}


async def operator_challenge(request: web.Request, body: bytes) -> web.Response:
    relay = request.app[RELAY]
    req = OperatorChallengeRequest.decode(body)
    ch: Challenge = request.app[AUTH].challenge(f"operator:{req.operator}", relay.clock.now_ms())
    return web.Response(body=ch.encode(), content_type="application/msgpack")


async def operator_login(request: web.Request, body: bytes) -> web.Response:
    relay = request.app[RELAY]
    req = OperatorSessionRequest.decode(body)
    token, session = request.app[AUTH].operator_login(req, relay.clock.now_ms())
    relay.log.info("auth.operator_login", operator=session.operator)
    return web.Response(body=Session(token, session.expires_at, relay.card.encode()).encode(),
                        content_type="application/msgpack")


async def overdue(request: web.Request) -> web.Response:
    _operator(request)
    relay = request.app[RELAY]
    now = relay.clock.now_ms()
    rows = relay.overdue(limit=_limit(request))
    return web.json_response({"now": iso(now), "overdue": [overdue_record(r, now) for r in rows]})


def _limit(request: web.Request) -> int:
    return whole_number(request.query.get("limit"), "limit", 1000, minimum=1, maximum=10_000)


async def escalations(request: web.Request) -> web.Response:
    _operator(request)
    relay = request.app[RELAY]
    since = whole_number(request.query.get("since"), "since (UTC milliseconds)", 0)
    rows = relay.escalations_since(since, _limit(request))
    return web.json_response({"escalations": [log_record(r, relay.config.relay_id)
                                              for r in rows]})


async def watch(request: web.Request) -> web.StreamResponse:
    """Live escalations and resolutions, one JSON text message each."""
    session = request.app[AUTH].operator_session(_token(request),
                                                 request.app[RELAY].clock.now_ms())
    relay = request.app[RELAY]
    ws = web.WebSocketResponse(heartbeat=relay.config.limits.heartbeat_s, compress=False,
                               max_msg_size=4096)
    await ws.prepare(request)
    reader = asyncio.create_task(_drain(ws))
    try:
        async for item in follow(request.app, session, relay.store.last_escalation_id(),
                                 lambda: ws.closed or reader.done()):
            if item is not None:
                await ws.send_json(item[1])
        if not ws.closed:
            await ws.close(code=4401, message=b"operator session ended")
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return ws


async def follow(app: web.Application, session: OperatorSession, cursor: int,
                 gone: Callable[[], bool], idle_s: float = 30
                 ) -> AsyncIterator[tuple[int, dict[str, Any]] | None]:
    """The operators' feed after escalation row ``cursor``: ``(row id, record)`` as rows
    commit, ``None`` after ``idle_s`` without one (a keep-alive). Ends when ``gone()`` says
    the listener left, the session expires or its operator is no longer configured."""
    relay, auth = app[RELAY], app[AUTH]
    with relay.hub.subscribe(OPERATORS) as sub:
        while not gone():
            now = relay.clock.now_ms()
            if session.expires_at <= now or session.operator not in auth.operators:
                return
            sub.wake.clear()
            for row in relay.store.escalations_after_id(cursor, 500):
                yield row.id, log_record(row, relay.config.relay_id)
                cursor = row.id
            try:
                await asyncio.wait_for(sub.wake.wait(), timeout=min(
                    idle_s, max(0.05, (session.expires_at - now) / 1000)))
            except TimeoutError:
                yield None


async def _drain(ws: web.WebSocketResponse) -> None:
    async for _msg in ws:
        pass  # operators only listen; anything they send is ignored


async def metrics(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    relay.metrics.streams.set(relay.hub.total())
    body = generate_latest(relay.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
