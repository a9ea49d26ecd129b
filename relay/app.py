"""The relay's HTTP and WebSocket surface: bytes in, frames out, errors as stable codes.

Handlers only translate: they check transport-level limits, find the session, call the
:class:`relay.core.Relay` and encode its answer. Every error leaves as
``{error, detail, request_id}`` (msgpack) with the status for its code; nothing leaves
as a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from keys.errors import HotlineError
from keys.frames import (
    MAX_STREAM_CREDIT,
    STREAM_SUBPROTOCOL,
    Challenge,
    ChallengeRequest,
    ErrorFrame,
    RevocationList,
    Session,
    SessionRequest,
    decode_client_message,
    relay_message,
    revocation_message,
)
from relay import faults, log_routes, ops_api, ops_web
from relay.app_keys import AUTH, AUTH_RATE, RELAY
from relay.auth import Authenticator, DeskSession
from relay.core import Relay
from relay.errors import RelayError, StorageUnavailable, status_for
from relay.limits import Buckets
from relay.params import whole_number

MSGPACK = "application/msgpack"
_NOTICE_ID_RE = re.compile(r"[0-9a-f]{32}")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(
    status: int, code: str, detail: str, request_id: str, retry_after: float | None = None
) -> web.Response:
    headers = {"X-Request-Id": request_id}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return web.Response(
        status=status,
        body=ErrorFrame(code, detail, request_id).encode(),
        content_type=MSGPACK,
        headers=headers,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = secrets.token_hex(8)
    relay = request.app[RELAY]
    try:
        if request.headers.get("Content-Encoding", "identity").lower() != "identity":
            raise RelayError(
                415, "encoding_not_allowed", "compressed request bodies are not accepted"
            )
        return await handler(request)
    except HotlineError as exc:
        status, code, message, retry_after = refusal(exc)
        if isinstance(exc, StorageUnavailable):
            relay.log.error("storage.unavailable", error=str(exc)[:300], request_id=request_id)
        else:
            relay.metrics.rejected.labels(code).inc()
        if status == 401:
            relay.log.info(
                "auth.failed", code=code, path=request.path, peer=request.remote,
                request_id=request_id,
            )
        return _error(status, code, message, request_id, retry_after)
    except web.HTTPRequestEntityTooLarge as exc:
        return _error(413, "body_too_large", exc.text or "request body too large", request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        return _error(exc.status, code, exc.reason, request_id)
    except asyncio.CancelledError:
        raise
    except Exception:
        relay.log.exception("request.failed", path=request.path, request_id=request_id)
        return _error(500, "internal_error", "the relay failed to handle this request", request_id)


# --------------------------------------------------------------------------- helpers


async def _body(request: web.Request, limit: int) -> bytes:
    if request.content_type != MSGPACK:
        raise RelayError(
            415,
            "unsupported_media_type",
            f"the body must be {MSGPACK}, not {request.content_type or 'none'}",
        )
    if request.content_length is not None and request.content_length > limit:
        raise RelayError(
            413,
            "body_too_large",
            f"the body is {request.content_length} bytes; the limit is {limit}",
        )
    # Read as it arrives and stop at the limit (a chunked body has no Content-Length to
    # check first), within the body timeout: a trickled body holds neither memory beyond
    # the route's limit nor its connection for long.
    timeout = request.app[RELAY].config.limits.body_timeout_s
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.readany():
                body += chunk
                if len(body) > limit:
                    raise RelayError(413, "body_too_large", f"the body is over {limit} bytes")
    except TimeoutError:
        raise RelayError(408, "body_timeout",
                         f"the request body did not arrive within {timeout:g} s") from None
    return bytes(body)


def _session(request: web.Request) -> DeskSession:
    header = request.headers.get("Authorization", "")
    scheme, _, token_hex = header.partition(" ")
    if scheme != "Hotline" or not re.fullmatch(r"[0-9a-f]{64}", token_hex):
        raise RelayError(401, "unauthorized", "send 'Authorization: Hotline <session token>'")
    session = request.app[AUTH].session(bytes.fromhex(token_hex),
                                        request.app[RELAY].clock.now_ms())
    split = request.app[RELAY].tlog.split
    if split is not None:  # the split-view attack (tests only): who is on this connection
        split.identify(request.protocol, session.desk)
    return session


def _notice_id(request: web.Request) -> bytes:
    raw = request.match_info["notice_id"]
    if not _NOTICE_ID_RE.fullmatch(raw):
        raise RelayError(400, "bad_value", "a notice id is 32 lower-case hex digits")
    return bytes.fromhex(raw)


def _msgpack(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type=MSGPACK)


# --------------------------------------------------------------------------- handlers


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    problems = []
    try:
        await relay.store.check_writable()
    except StorageUnavailable as exc:
        problems.append(str(exc)[:200])
    now = relay.clock.now_ms()
    if relay.trust.root.expires_at <= now:
        problems.append(f"the federation root v{relay.trust.root.version} has expired")
    body = {"status": "ready" if not problems else "not_ready", "problems": problems}
    return web.Response(
        status=200 if not problems else 503, text=json.dumps(body), content_type="application/json"
    )


async def relay_card(request: web.Request) -> web.Response:
    return _msgpack(request.app[RELAY].card.encode())


async def federation_root(request: web.Request) -> web.Response:
    return _msgpack(request.app[RELAY].trust.root.encode())


def client_address(request: web.Request) -> str:
    """The address per-address limits apply to (the proxy's X-Forwarded-For if trusted)."""
    if request.app[RELAY].config.limits.trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            return forwarded.split(",")[-1].strip()[:64]
    return request.remote or "?"


def _auth_limit(request: web.Request) -> None:
    relay = request.app[RELAY]
    wait = request.app[AUTH_RATE].take(client_address(request), relay.clock.now_ms())
    if wait > 0:
        raise RelayError(429, "rate_limited", "too many logins from this address",
                         retry_after=wait)


async def challenge(request: web.Request) -> web.Response:
    _auth_limit(request)
    relay = request.app[RELAY]
    req = ChallengeRequest.decode(await _body(request, relay.config.limits.max_small_body_bytes))
    ch: Challenge = request.app[AUTH].challenge(req.desk, relay.clock.now_ms())
    return _msgpack(ch.encode())


async def login(request: web.Request) -> web.Response:
    _auth_limit(request)
    relay = request.app[RELAY]
    req = SessionRequest.decode(await _body(request, relay.config.limits.max_small_body_bytes))
    now = relay.clock.now_ms()
    try:
        token, session = request.app[AUTH].login(req, now)
    except HotlineError as exc:
        if isinstance(exc, RelayError):
            raise
        raise RelayError(
            403 if exc.code == "unknown_or_revoked_key" else 401,
            exc.code if exc.code == "unknown_or_revoked_key" else "bad_challenge",
            exc.message,
        ) from exc
    await relay.remember_card(session, now)
    relay.log.info("auth.login", desk=session.desk, key_id=session.verified.ik_kid.hex())
    return _msgpack(Session(token, session.expires_at, relay.card.encode()).encode())


async def get_card(request: web.Request) -> web.Response:
    _session(request)
    desk = request.match_info["desk"]
    card = request.app[RELAY].store.get_card(desk) if len(desk) <= 43 else None
    if card is None:
        raise RelayError(404, "not_found", f"no card for desk {desk[:43]!r}")
    return _msgpack(card)


async def put_card(request: web.Request) -> web.Response:
    session = _session(request)
    relay = request.app[RELAY]
    desk = request.match_info["desk"]
    body = await _body(request, relay.config.limits.max_small_body_bytes)
    stored = await relay.publish_card(session, desk, body)
    return web.Response(status=201 if stored else 200)


async def submit(request: web.Request) -> web.Response:
    session = _session(request)
    relay = request.app[RELAY]
    body = await _body(request, relay.config.limits.max_notice_bytes)
    accepted, new = await relay.submit(session, body)
    return _msgpack(accepted.encode(), 201 if new else 200)


async def get_notice(request: web.Request) -> web.Response:
    return _msgpack(request.app[RELAY].envelope(_session(request), _notice_id(request)))


async def get_status(request: web.Request) -> web.Response:
    return _msgpack(request.app[RELAY].status(_session(request), _notice_id(request)).encode())


async def confirm(request: web.Request) -> web.Response:
    session = _session(request)
    relay = request.app[RELAY]
    body = await _body(request, relay.config.limits.max_small_body_bytes)
    return _msgpack((await relay.confirm(session, body)).encode())


def _int_param(request: web.Request, name: str, default: int) -> int:
    return whole_number(request.query.get(name), name, default)


async def inbox(request: web.Request) -> web.Response:
    session = _session(request)
    page = request.app[RELAY].inbox(
        session, _int_param(request, "after", 0), _int_param(request, "limit", 100)
    )
    return _msgpack(page.encode())


async def revocation(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    _auth_limit(request)
    rev, _new = await relay.add_revocation(
        await _body(request, relay.config.limits.max_small_body_bytes))
    killed = request.app[AUTH].revoke_sessions(rev.desk, rev.ik_kid)
    return web.json_response({"revoked": rev.desk, "sessions_closed": killed})


async def revocations(request: web.Request) -> web.Response:
    """Every revocation the relay enforces: public, signed by the authorities, so no
    session is needed (a desk whose key was revoked can still learn why); counted against
    the address's login limit."""
    _auth_limit(request)
    return _msgpack(RevocationList(tuple(request.app[RELAY].revocations())).encode())


#: Client messages of one stream handled at the same time; the next is read when one ends.
STREAM_INFLIGHT = 32
#: Events read from the store at once for a stream.
PUSH_BATCH = 200


class Credit:
    """The events a flow-controlled stream's client granted and has not received yet.

    The pusher sends no more than that, so a backlog goes out in windows as the client
    consumes it, and the answers to its messages never queue behind events it cannot take.
    """

    def __init__(self, wake: asyncio.Event) -> None:
        self.left = 0
        self._wake = wake

    def grant(self, n: int) -> None:
        if self.left + n > MAX_STREAM_CREDIT:
            raise RelayError(400, "bad_value",
                             f"credit {n} would allow {self.left + n} events not yet sent; "
                             f"at most {MAX_STREAM_CREDIT}")
        self.left += n
        self._wake.set()  # the pusher may be waiting for credit

    def allows(self) -> int:
        """Events that may be sent now, at most one batch."""
        return min(PUSH_BATCH, self.left)


async def stream(request: web.Request) -> web.StreamResponse:
    session = _session(request)
    relay = request.app[RELAY]
    limits = relay.config.limits
    after = _int_param(request, "after", 0)
    with_revocations = _int_param(request, "revocations", 0) == 1
    if relay.hub.count(session.desk) >= limits.max_streams_per_desk:
        raise RelayError(
            429,
            "rate_limited",
            f"{session.desk} already has {limits.max_streams_per_desk} open streams",
            retry_after=5,
        )
    ws = web.WebSocketResponse(
        max_msg_size=limits.max_notice_bytes + 1024, heartbeat=limits.heartbeat_s,
        compress=False, protocols=(STREAM_SUBPROTOCOL,),
    )
    await ws.prepare(request)
    # A client that chose the flow-controlled subprotocol receives events as far as it
    # granted them; an older one, without it, receives them as fast as TCP takes them.
    flow = ws.ws_protocol == STREAM_SUBPROTOCOL
    relay.log.info("stream.opened", desk=session.desk, after=after, flow_control=flow)
    # Messages are handled concurrently (their writes share group commits), at most
    # STREAM_INFLIGHT at once and two notices' worth of bytes: past that, the stream is
    # not read until one is answered.
    handling: set[asyncio.Task[None]] = set()
    budget = 2 * limits.max_notice_bytes
    in_flight = 0

    def done(task: asyncio.Task[None], size: int) -> None:
        nonlocal in_flight
        handling.discard(task)
        in_flight -= size

    with relay.hub.subscribe(session.desk, session.verified.ik_kid) as sub:
        credit = Credit(sub.wake) if flow else None
        sender = asyncio.create_task(
            _push(ws, relay, session, sub, after, credit, with_revocations))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    await ws.close(code=1003, message=b"binary msgpack frames only")
                    break
                size = len(msg.data)
                while handling and (len(handling) >= STREAM_INFLIGHT
                                    or in_flight + size > budget):
                    await asyncio.wait(handling, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.create_task(_on_client_message(ws, relay, session, msg.data,
                                                              credit))
                handling.add(task)
                in_flight += size
                task.add_done_callback(functools.partial(done, size=size))
        finally:
            if handling:
                # Answers still on their way are committed already or will be: let them
                # finish (their results stay stored even if the answer cannot be sent).
                await asyncio.wait(handling, timeout=30)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
    relay.log.info("stream.closed", desk=session.desk, code=ws.close_code)
    return ws


def refusal(exc: Exception) -> tuple[int, str, str, float | None]:
    """The HTTP status, stable code, message and Retry-After of a refused request."""
    if isinstance(exc, RelayError):
        return exc.status, exc.code, exc.message, exc.retry_after
    if isinstance(exc, StorageUnavailable):
        return 503, exc.code, "the relay cannot store anything right now; retry later", 5
    if isinstance(exc, HotlineError):
        return status_for(exc.code), exc.code, exc.message, None
    raise exc


async def _on_client_message(
    ws: web.WebSocketResponse, relay: Relay, session: DeskSession, data: bytes,
    credit: Credit | None = None,
) -> None:
    ref = 0
    try:
        # Every message's bytes are charged before it is decoded (a message that fails to
        # decode still costs the desk its size). A refused one is still answered by its
        # ref when it has one (decoding is bounded, at most 256 values).
        max_bytes = relay.config.limits.max_notice_bytes + 1024
        try:
            relay.charge_bytes(session, len(data))
        except RelayError:
            with contextlib.suppress(HotlineError):
                ref = decode_client_message(data, max_bytes)["ref"]
            raise
        msg = decode_client_message(data, max_bytes)
        ref = msg["ref"]
        if msg["type"] == "credit":
            if credit is None:
                raise RelayError(400, "bad_value", "credit is only sent on a stream opened "
                                 f"with the {STREAM_SUBPROTOCOL} subprotocol")
            credit.grant(msg["credit"])
            return  # a grant is not answered
        if msg["type"] == "ping":
            answer = relay_message("pong", ref=ref)
        elif msg["type"] == "submit":
            relay.check_session(session)
            accepted, _new = await relay.submit(session, msg["notice"], bytes_charged=True)
            answer = relay_message("accepted", ref=ref, attestation=accepted.attestation,
                                   duplicate=accepted.duplicate, leaf=accepted.leaf)
        else:
            relay.check_session(session)
            confirmed = await relay.confirm(session, msg["confirmation"])
            answer = relay_message("confirmed", ref=ref, attestation=confirmed.attestation,
                                   duplicate=confirmed.duplicate, leaf=confirmed.leaf)
    except HotlineError as exc:
        status, code, message, _ = refusal(exc)
        if isinstance(exc, StorageUnavailable):
            relay.log.error("storage.unavailable", error=str(exc)[:300], desk=session.desk)
        else:
            relay.metrics.rejected.labels(code).inc()
        answer = relay_message("error", ref=ref, error=code, status=status, detail=message)
    except Exception:
        relay.log.exception("stream.message_failed", desk=session.desk)
        answer = relay_message("error", ref=ref, error="internal_error", status=500,
                               detail="the relay failed to handle this message")
    if not ws.closed:
        with contextlib.suppress(ConnectionError):
            await ws.send_bytes(answer)


async def _push(
    ws: web.WebSocketResponse, relay: Relay, session: DeskSession, sub: Any, after: int,
    credit: Credit | None = None,
    with_revocations: bool = False,
) -> None:
    """Send the desk's events after ``after``, then each new one, as far as ``credit``
    allows (None: no flow control); a grant of credit wakes it like a new event. With
    ``with_revocations``, every revocation the relay knows goes first, then each new one
    before any later event."""
    cursor = after
    #: Revocations sent so far (the relay's list only grows, in order).
    sent_revocations = 0
    while not ws.closed:
        sub.wake.clear()
        if with_revocations and relay.trust.revocation_count > sent_revocations:
            # Before any event: a client applies a revocation to what follows it.
            # Revocation messages are not events: they take no credit.
            known = relay.revocations()
            for body in known[sent_revocations:]:
                await ws.send_bytes(revocation_message(body))
            sent_revocations = len(known)
        more = True
        while more:
            limit = PUSH_BATCH if credit is None else credit.allows()
            if limit == 0:
                break  # the client has not taken what it has; a grant wakes us
            # At most one page budget (max_page_bytes) at a time: a replay of a long
            # stream of large notices never holds more than that and the one being sent.
            events, more = relay.events_after(session.desk, cursor, limit)
            while events:
                event = events.pop(0)
                if faults.HOSTILE and faults.push_delay_s():  # tests only: a slow relay
                    await asyncio.sleep(faults.push_delay_s())
                await ws.send_bytes(relay_message("event", event=event))
                cursor = event.seq
                if credit is not None:
                    credit.left -= 1
                del event
        if sub.closed_reason is not None:
            await ws.close(code=4403, message=sub.closed_reason.encode()[:100])
            return
        remaining = (session.expires_at - relay.clock.now_ms()) / 1000
        if remaining <= 0:
            await ws.close(code=4401, message=b"session expired")
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(remaining, 60)):
                await sub.wake.wait()


async def ops_challenge(request: web.Request) -> web.Response:
    _auth_limit(request)
    body = await _body(request, request.app[RELAY].config.limits.max_small_body_bytes)
    return await ops_api.operator_challenge(request, body)


async def ops_login(request: web.Request) -> web.Response:
    _auth_limit(request)
    body = await _body(request, request.app[RELAY].config.limits.max_small_body_bytes)
    return await ops_api.operator_login(request, body)


def make_app(relay: Relay, auth: Authenticator) -> web.Application:
    limits = relay.config.limits
    app = web.Application(
        client_max_size=limits.max_notice_bytes + 64 * 1024,
        middlewares=[error_middleware],
        handler_args={
            "auto_decompress": False,
            "keepalive_timeout": limits.keepalive_timeout_s,
        },
    )
    app[RELAY] = relay
    app[AUTH] = auth
    app[AUTH_RATE] = Buckets(limits.auth_per_minute_per_address)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/relay", relay_card)
    app.router.add_get("/v1/root", federation_root)
    app.router.add_post("/v1/auth/challenge", challenge)
    app.router.add_post("/v1/auth/session", login)
    app.router.add_get("/v1/cards/{desk}", get_card)
    app.router.add_put("/v1/cards/{desk}", put_card)
    app.router.add_post("/v1/notices", submit)
    app.router.add_get("/v1/notices/{notice_id}", get_notice)
    app.router.add_get("/v1/notices/{notice_id}/status", get_status)
    app.router.add_post("/v1/confirmations", confirm)
    app.router.add_get("/v1/inbox", inbox)
    app.router.add_get("/v1/stream", stream)
    app.router.add_post("/v1/revocations", revocation)
    app.router.add_get("/v1/revocations", revocations)
    app.router.add_post("/v1/ops/challenge", ops_challenge)
    app.router.add_post("/v1/ops/session", ops_login)
    app.router.add_get("/v1/ops/overdue", ops_api.overdue)
    app.router.add_get("/v1/ops/escalations", ops_api.escalations)
    app.router.add_get("/v1/ops/watch", ops_api.watch)
    app.router.add_get("/metrics", ops_api.metrics)
    log_routes.add_routes(app)
    ops_web.add_routes(app)
    return app
