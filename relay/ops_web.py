"""The operators' web view (``/ops/``): a read-only page of overdue notices and the live feed.

Login: ``GET /ops/login?t=<token>`` with a link minted by ``hotline ops web`` (keys/weblogin.py):
signed by a configured operator key for this relay's origin, unexpired, and used once (the
nonce is kept in the store until the link's expiry, so a restart does not make it usable
again). The answer sets an operator session in a cookie (HttpOnly, SameSite=Strict, Secure
over TLS, path ``/ops/``) and sends the browser on to ``/ops/``.

The page is static files from this package (no inline script, no third-party origin) under
a strict Content-Security-Policy; its script reads ``/ops/api/overdue`` and follows
``/ops/api/feed`` (Server-Sent Events), both authenticated by the cookie. They carry the same
metadata as ``hotline ops watch`` (ops_api), never content. Nothing here changes state but
the login itself, so there is nothing for a cross-site request to forge; the cookie is not
sent on cross-site requests anyway, and no route answers with CORS headers.
"""

from __future__ import annotations

import asyncio
import json
import re
from importlib import resources

from aiohttp import web

from keys.errors import HotlineError
from keys.weblogin import parse
from relay import ops_api
from relay.app_keys import AUTH, RELAY
from relay.auth import OperatorSession
from relay.errors import RelayError
from relay.escalator import OPERATORS, iso

COOKIE = "hotline_ops"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'none'; form-action 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
#: Escalation records sent first on a new feed (no Last-Event-ID): the recent history.
HISTORY = 50
_STATIC = {"ops.js": "text/javascript", "ops.css": "text/css"}
_TOKEN_RE = re.compile(r"[0-9a-f]{64}")
_STOPPING = web.AppKey("ops_web_stopping", asyncio.Event)


def _file(name: str) -> bytes:
    return resources.files("relay").joinpath("web", name).read_bytes()


def _page(name: str, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_file(name), content_type="text/html",
                        charset="utf-8", headers=SECURITY_HEADERS)


def _session(request: web.Request) -> OperatorSession:
    raw = request.cookies.get(COOKIE, "")
    if not _TOKEN_RE.fullmatch(raw):
        raise RelayError(401, "unauthorized", "no operator session; log in with a link from "
                         "'hotline ops web'")
    return request.app[AUTH].operator_session(bytes.fromhex(raw),
                                              request.app[RELAY].clock.now_ms())


async def login(request: web.Request) -> web.Response:
    relay, auth = request.app[RELAY], request.app[AUTH]
    now = relay.clock.now_ms()
    try:
        link = parse(request.query.get("t", ""))
        auth.check_web_login(link, now)
        if not await relay.store.use_login_nonce(link.nonce, link.expires_at, now):
            raise RelayError(401, "login_used", "this login link was used already; mint a "
                             "new one with 'hotline ops web'")
    except HotlineError as exc:
        code = exc.code if isinstance(exc, RelayError) else "bad_login"
        relay.log.info("auth.failed", code=code, path=request.path, peer=request.remote)
        relay.metrics.rejected.labels(code).inc()
        return _page("refused.html", exc.status if isinstance(exc, RelayError) else 400)
    token, session = auth.open_operator_session(link.operator, now)
    relay.log.info("auth.operator_login", operator=session.operator, via="web")
    # Secure when this relay serves TLS, or sits behind a proxy that does (an https origin).
    # A page, not a redirect: its refresh is a same-origin navigation, so the SameSite=Strict
    # cookie goes with it even when the link was opened from another site (a mail client).
    resp = _page("login.html")
    resp.set_cookie(COOKIE, token.hex(), path="/ops/", httponly=True, samesite="Strict",
                    secure=request.secure or auth.origin.startswith("https://"),
                    max_age=max(1, (session.expires_at - now) // 1000))
    return resp


async def index(request: web.Request) -> web.Response:
    try:
        _session(request)
    except RelayError:
        return _page("refused.html", 401)
    return _page("index.html")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _STATIC:
        raise RelayError(404, "not_found", "no such file")
    return web.Response(body=_file(name), content_type=_STATIC[name], charset="utf-8",
                        headers=SECURITY_HEADERS)


async def overdue(request: web.Request) -> web.Response:
    session = _session(request)
    relay = request.app[RELAY]
    now = relay.clock.now_ms()
    rows = relay.overdue(limit=1000)
    body = {"now": iso(now), "relay": relay.config.relay_id, "operator": session.operator,
            "session_expires": iso(session.expires_at),
            "overdue": [ops_api.overdue_record(r, now) for r in rows]}
    return web.json_response(body, headers=SECURITY_HEADERS)


async def feed(request: web.Request) -> web.StreamResponse:
    """Escalations and resolutions as Server-Sent Events (``id`` = escalation row id, so a
    reconnecting EventSource resumes after the last one it saw)."""
    session = _session(request)
    relay = request.app[RELAY]
    last = request.headers.get("Last-Event-ID", "")
    cursor = (int(last) if re.fullmatch(r"\d{1,18}", last)
              else max(0, relay.store.last_escalation_id() - HISTORY))
    resp = web.StreamResponse(headers=SECURITY_HEADERS | {
        "Content-Type": "text/event-stream; charset=utf-8", "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    await resp.write(b"retry: 3000\n\n")
    stopping = request.app[_STOPPING]
    try:
        async for item in ops_api.follow(request.app, session, cursor, stopping.is_set):
            if item is None:
                await resp.write(b": keep-alive\n\n")
                continue
            row_id, record = item
            data = json.dumps(record, separators=(",", ":"))  # one line: JSON escapes newlines
            await resp.write(f"id: {row_id}\nevent: escalation\ndata: {data}\n\n".encode())
        if not stopping.is_set():
            await resp.write(b"event: ended\ndata: {}\n\n")
    except ConnectionResetError:
        pass  # the browser left
    return resp


async def _stop_feeds(app: web.Application) -> None:
    app[_STOPPING].set()
    app[RELAY].hub.publish(OPERATORS)


def add_routes(app: web.Application) -> None:
    app[_STOPPING] = asyncio.Event()
    app.on_shutdown.append(_stop_feeds)
    app.router.add_get("/ops/login", login)
    app.router.add_get("/ops/", index)
    app.router.add_get("/ops/{name}", static)
    app.router.add_get("/ops/api/overdue", overdue)
    app.router.add_get("/ops/api/feed", feed)
