"""The client's link to a relay: authentication, requests with retries, the event stream.

Speaks only :mod:`keys.frames` frames and knows nothing of a notice's content or of the
client's local state. The errors it raises, each naming who is at fault::

    HotlineError
    ├── RelayError            the relay answered a request with an error frame
    │   │                     (``status``, ``code``, ``detail``, ``request_id``)
    │   └── RelayUnavailable  no relay URL gave a usable answer within the retry budget
    │                         (connection errors, 5xx, rate limits longer than we wait)
    └── ProtocolError
        └── RelayIdentityError the relay is not the one this desk pinned, or it asked us to
                              sign a login for another origin

Retries: connection errors, timeouts and 5xx answers are retried with exponential backoff
and jitter, switching to the next relay URL at each failure (every URL of one relay shares
one key, checked against the pin); a 429 waits for its Retry-After; a 401 on an
authenticated request logs in again once. Every POST the client makes is idempotent on the
relay (a notice by its id, a confirmation by its signer and kind), so a retry never
duplicates anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random as _random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from yarl import URL

from keys.errors import HotlineError, MalformedInput, ProtocolError, UsageError
from keys.fingerprint import fingerprint
from keys.frames import (
    MAX_REVOCATION_LIST_BYTES,
    REVOCATION_MESSAGE,
    STREAM_SUBPROTOCOL,
    Accepted,
    Challenge,
    ChallengeRequest,
    ErrorFrame,
    Event,
    InboxPage,
    NoticeStatus,
    RevocationList,
    Session,
    SessionRequest,
    auth_message,
    client_message,
    decode_relay_message,
)
from keys.receipts import RelayCard
from keys.report import DEFAULT_MAX_NOTICE_BYTES
from keys.secrets import DeskSecrets

log = logging.getLogger("hotline.client.connection")

MSGPACK = "application/msgpack"
#: Log in again this long before the relay's stated session expiry (clock skew margin).
SESSION_MARGIN_MS = 60_000
#: Largest single answer we read: a notice plus its event wrapping.
MAX_ANSWER_BYTES = DEFAULT_MAX_NOTICE_BYTES + 64 * 1024
#: An inbox page holds up to 500 events; most are small, a few may be whole notices.
MAX_PAGE_BYTES = 64 * 1024 * 1024
#: Status codes that mean "this relay node cannot answer now; another try may work".
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
#: Error codes a relay sends on a stream whose session is no longer valid.
SESSION_CODES = frozenset({"unauthorized", "session_expired", "unauthenticated"})

Clock = Callable[[], int]
Sleep = Callable[[float], Awaitable[None]]


# ----------------------------------------------------------------------------- errors


class RelayError(HotlineError):
    """The relay refused a request; ``code`` is the relay's stable error code."""

    code = "relay_error"

    def __init__(
        self, status: int, code: str, detail: str, *, request_id: str = "", url: str = ""
    ) -> None:
        where = f" at {url}" if url else ""
        rid = f" (request {request_id})" if request_id else ""
        super().__init__(
            f"the relay{where} answered {status} {code}: {detail or 'no detail'}{rid}", code=code
        )
        self.status = status
        self.detail = detail
        self.request_id = request_id
        self.url = url


class RelayUnavailable(RelayError):
    """No relay URL answered usefully within the retry budget. Nothing was refused: retry
    later (a sent notice stays in the outbox and is resent with the same bytes)."""

    code = "relay_unavailable"

    def __init__(self, detail: str, *, status: int = 0, url: str = "") -> None:
        HotlineError.__init__(self, f"the relay is unavailable: {detail}")
        self.status = status
        self.detail = detail
        self.request_id = ""
        self.url = url


class RelayIdentityError(ProtocolError):
    """The relay is not the one this desk pinned, or it asked us to sign for another origin."""

    code = "relay_key_changed"


# ----------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try before giving up. Delays are in seconds."""

    #: Tries of one request across all URLs, the first included.
    attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 30.0
    #: A 429 asking to wait longer than this is reported instead of waited out.
    max_retry_after: float = 120.0
    #: Failed stream connections in a row before giving up; None: keep trying forever.
    stream_attempts: int | None = None

    def delay(self, failures: int, jitter: float) -> float:
        """Backoff before the next try after ``failures`` failures in a row.

        Exponential with "equal jitter": half the ceiling fixed, half random, so that many
        desks reconnecting after a relay restart spread out yet none retries at once.
        ``jitter`` is a number in [0, 1).
        """
        if failures <= 0:
            return 0.0
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(failures - 1, 60))
        return ceiling * (0.5 + jitter / 2)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form); None if absent or unusable."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds != seconds or seconds < 0:  # NaN or negative
        return None
    return seconds


def normalize_relay_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash; raise UsageError if not."""
    try:
        parsed = URL(url.strip())
    except ValueError as exc:
        raise UsageError(f"relay URL {url!r} is not a URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(f"relay URL {url!r} must start with http:// or https:// and name a host")
    if parsed.query_string or parsed.fragment:
        raise UsageError(f"relay URL {url!r} must not carry a query or fragment")
    return str(parsed).rstrip("/")


def origin_of(url: str) -> str:
    """The origin (scheme, host, port) of ``url``, normalized: what a login is bound to."""
    return str(URL(url).origin()).rstrip("/").lower()


# ----------------------------------------------------------------------------- pinning


class PinStore(Protocol):
    """Where the relay card pinned on first use is kept."""

    def load(self) -> RelayCard | None: ...

    def save(self, card: RelayCard) -> None: ...


class MemoryPin:
    """A pin kept in memory (tests, or a card pinned out of band)."""

    def __init__(self, card: RelayCard | None = None) -> None:
        self.card = card

    def load(self) -> RelayCard | None:
        return self.card

    def save(self, card: RelayCard) -> None:
        self.card = card


@dataclass(frozen=True, slots=True)
class LinkState:
    """A change in the event stream's connectivity, for live views (``on_link``).

    ``state`` is ``connected`` (first open), ``lost`` (an open stream ended; ``reason``),
    ``retrying`` (the next try is in ``wait_s`` seconds, after ``failures`` failed tries;
    ``reason``) or ``reconnected`` (open again after a loss or failed tries)."""

    state: str
    url: str
    reason: str | None = None
    wait_s: float | None = None
    failures: int = 0


class _Transient(Exception):
    """A failure another try (maybe at another URL) may cure. Internal to this module."""

    def __init__(self, reason: str, *, status: int = 0, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


@dataclass(slots=True)
class _Login:
    base: str
    token: bytes
    expires_at: int


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


@dataclass(slots=True)
class StreamStats:
    """What became of the notices and confirmations this connection sent on the stream."""

    #: Answered on the stream (accepted, confirmed or a final refusal).
    answered: int = 0
    #: No answer within STREAM_ANSWER_TIMEOUT_S (then sent over HTTP).
    answer_timeouts: int = 0
    #: Sent again over HTTP after the stream failed them, for whatever reason.
    http_fallbacks: int = 0


# ----------------------------------------------------------------------------- connection


class RelayConnection:
    """A desk's authenticated connection to one relay, reachable at one or more URLs."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        secrets: DeskSecrets,
        card: Callable[[], bytes],
        pin: PinStore,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = _random.random,
        policy: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
        heartbeat: float = 30.0,
        on_pinned: Callable[[RelayCard, str], None] | None = None,
        on_revocation: Callable[[bytes], None] | None = None,
    ) -> None:
        """``card`` returns this desk's current DeskCard bytes (sent at each login);
        ``on_pinned(card, fingerprint)`` is called once, when a relay is pinned on first use;
        ``on_revocation(body)`` with each revocation the relay pushes on the stream
        (unverified; the stream then asks for them), before any event read after it."""
        if not urls:
            raise UsageError(
                "no relay URL: pass one, set HOTLINE_RELAY, or put relays = [...] in config.toml"
            )
        self.urls = tuple(dict.fromkeys(normalize_relay_url(u) for u in urls))
        self.secrets = secrets
        self._card = card
        self._pin = pin
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self.policy = policy or RetryPolicy()
        self._session = session
        self._own_session = session is None
        self._timeout = timeout or aiohttp.ClientTimeout(total=60, sock_connect=10)
        self._heartbeat = heartbeat
        self._on_pinned = on_pinned
        self.on_revocation = on_revocation
        self._current = 0
        self._login: _Login | None = None
        #: The open stream, if any: receipts are sent on it.
        self._stream: _StreamReader | None = None
        self._checked: set[str] = set()  # URLs whose relay card matched the pin
        self._relay: RelayCard | None = None
        self.stream_stats = StreamStats()
        #: Called with a LinkState at each change of the stream's connectivity.
        self.on_link: Callable[[LinkState], None] | None = None

    def _link(self, state: str, **details: object) -> None:
        if self.on_link is not None:
            self.on_link(LinkState(state, self.url, **details))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> RelayConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._own_session = True
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()

    @property
    def url(self) -> str:
        """The URL in use now (it changes on failover)."""
        return self.urls[self._current]

    def _fail_over(self) -> None:
        if len(self.urls) > 1:
            self._current = (self._current + 1) % len(self.urls)
            log.info("relay.failover url=%s", self.url)

    # ------------------------------------------------------------------ relay identity
    @property
    def relay_card(self) -> RelayCard | None:
        """The pinned relay card, once checked in this process (or loaded from the pin)."""
        return self._relay or self._pin.load()

    def _check_pin(self, card: RelayCard, base: str) -> RelayCard:
        pinned = self._pin.load()
        if pinned is None:
            self._pin.save(card)
            fpr = fingerprint("relay", card.relay_id, card.key)
            log.info("relay.pinned relay=%s url=%s fingerprint=%s", card.relay_id, base, fpr)
            if self._on_pinned is not None:
                self._on_pinned(card, fpr)
        elif pinned.key != card.key or pinned.relay_id != card.relay_id:
            raise RelayIdentityError(
                f"the relay at {base} presents key {fingerprint('relay', card.relay_id, card.key)}"
                f" ({card.relay_id}), not the pinned "
                f"{fingerprint('relay', pinned.relay_id, pinned.key)} ({pinned.relay_id}); "
                "if the relay's key really changed, compare the new fingerprint out of band "
                "and remove relay.card from the desk home"
            )
        self._relay = pinned or card
        self._checked.add(base)
        return self._relay

    async def ensure_relay(self) -> RelayCard:
        """Fetch the relay card of the current URL and check it against the pin (TOFU)."""
        if self._relay is None or self.url not in self._checked:
            await self.request("GET", "/v1/relay", auth=False)
        assert self._relay is not None  # set by the pin check in _attempt
        return self._relay

    async def _check_url(self, base: str) -> None:
        if base not in self._checked:
            answer = await self._call("GET", base, "/v1/relay", None, token=None)
            self._check_pin(RelayCard.decode(answer.body), base)

    # ------------------------------------------------------------------ raw HTTP
    async def _call(
        self,
        method: str,
        base: str,
        path: str,
        body: bytes | None,
        *,
        token: bytes | None,
        params: dict[str, str] | None = None,
        max_bytes: int = MAX_ANSWER_BYTES,
    ) -> Answer:
        """One HTTP exchange. Raises _Transient for what a retry may cure, RelayError for
        an answer that refuses, and returns any 2xx answer."""
        headers = {"Accept": MSGPACK}
        if body is not None:
            headers["Content-Type"] = MSGPACK
        if token is not None:
            headers["Authorization"] = f"Hotline {token.hex()}"
        try:
            async with self._http().request(
                method, base + path, data=body, headers=headers, params=params,
                allow_redirects=False,
            ) as resp:
                data = await _read_limited(resp, max_bytes, f"{method} {path}")
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise _Transient(f"{base}: {_describe(exc)}") from exc
        if 200 <= status < 300:
            return Answer(status, data)
        if status == 429:
            raise _Transient(f"{base}: rate limited", status=429, retry_after=retry_after)
        if status in TRANSIENT_STATUSES:
            raise _Transient(
                f"{base}: {status} {_error_code(data, status)}", status=status,
                retry_after=retry_after,
            )
        raise _relay_error(status, data, base)

    async def _token(self, base: str) -> bytes:
        login = self._login
        if (
            login is not None
            and login.base == base
            and login.expires_at - SESSION_MARGIN_MS > self._clock()
        ):
            return login.token
        self._login = await self._authenticate(base)
        return self._login.token

    async def _authenticate(self, base: str) -> _Login:
        """Challenge, then session: prove possession of this desk's identity key."""
        me = self.secrets
        ch = Challenge.decode(
            (await self._call("POST", base, "/v1/auth/challenge",
                              ChallengeRequest(me.desk).encode(), token=None)).body
        )
        # The signed login names the origin; signing a challenge for an origin we do not
        # use would let this server log in as us at that other relay.
        if origin_of(ch.origin) not in {origin_of(u) for u in self.urls}:
            raise RelayIdentityError(
                f"the relay at {base} asked us to sign a login for origin {ch.origin!r}, "
                "which is not among this desk's relay URLs (list that URL as a relay, or ask "
                "the operator to set the relay's origin to the URL desks use)",
                code="origin_mismatch",
            )
        pinned = self._pin.load()
        if pinned is not None and ch.relay != pinned.relay_id:
            raise RelayIdentityError(
                f"the relay at {base} calls itself {ch.relay!r}, not the pinned {pinned.relay_id!r}"
            )
        ts = self._clock()
        signature = me.identity.sign(
            auth_message(ch.origin, me.desk, me.ik_kid, ch.nonce, ts)
        ).signature
        request = SessionRequest(me.desk, self._card(), ch.nonce, ts, signature)
        session = Session.decode(
            (await self._call("POST", base, "/v1/auth/session", request.encode(),
                              token=None)).body
        )
        self._check_pin(RelayCard.decode(session.relay_card), base)
        log.info("relay.login desk=%s url=%s", me.desk, base)
        return _Login(base, session.token, session.expires_at)

    async def _attempt(
        self, method: str, path: str, body: bytes | None, *, auth: bool,
        params: dict[str, str] | None, max_bytes: int,
    ) -> Answer:
        base = self.url
        if path == "/v1/relay":
            answer = await self._call("GET", base, path, None, token=None)
            self._check_pin(RelayCard.decode(answer.body), base)
            return answer
        await self._check_url(base)
        token = await self._token(base) if auth else None
        return await self._call(method, base, path, body, token=token, params=params,
                                max_bytes=max_bytes)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        auth: bool = True,
        params: dict[str, str] | None = None,
        max_bytes: int = MAX_ANSWER_BYTES,
    ) -> Answer:
        """Send one request with retries, failover, rate-limit waits and one re-login."""
        failures = 0
        relogged = False
        last: _Transient | None = None
        while True:
            try:
                return await self._attempt(method, path, body, auth=auth, params=params,
                                           max_bytes=max_bytes)
            except RelayError as exc:
                if exc.status == 401 and auth and not relogged:
                    relogged = True
                    self._login = None
                    continue
                raise
            except _Transient as exc:
                last = exc
                failures += 1
                if failures >= self.policy.attempts:
                    break
                wait = self._wait_for(exc, failures)
                log.info("relay.retry %s %s failures=%d wait=%.2fs reason=%s",
                         method, path, failures, wait, exc.reason)
                if exc.status != 429:
                    self._fail_over()
                await self._sleep(wait)
        assert last is not None
        raise RelayUnavailable(
            f"{method} {path} failed {failures} times; last: {last.reason}",
            status=last.status,
        )

    def _wait_for(self, exc: _Transient, failures: int) -> float:
        if exc.retry_after is not None:
            if exc.retry_after > self.policy.max_retry_after:
                raise RelayUnavailable(
                    f"{exc.reason}; the relay asks to wait {exc.retry_after:.0f} s, more than "
                    f"the {self.policy.max_retry_after:.0f} s this client waits",
                    status=exc.status,
                )
            return exc.retry_after
        return self.policy.delay(failures, self._jitter())

    # ------------------------------------------------------------------ API
    async def get_card(self, desk: str) -> bytes | None:
        """Another desk's card as the relay serves it (unverified), or None if unknown."""
        try:
            return (await self.request("GET", f"/v1/cards/{desk}")).body
        except RelayError as exc:
            if exc.status == 404:
                return None
            raise

    async def put_card(self, desk: str, card: bytes) -> bool:
        """Give the relay a desk's (self-certifying) card; True if it stored it, False if
        it held that card already."""
        return (await self.request("PUT", f"/v1/cards/{desk}", card)).status == 201

    async def root(self) -> bytes:
        return (await self.request("GET", "/v1/root", auth=False)).body

    async def revocations(self) -> list[bytes]:
        """Every revocation the relay serves (``GET /v1/revocations``), unverified."""
        answer = await self.request("GET", "/v1/revocations", auth=False,
                                    max_bytes=MAX_REVOCATION_LIST_BYTES)
        return list(RevocationList.decode(answer.body).revocations)

    async def post_revocation(self, body: bytes) -> dict[str, Any]:
        """Hand a revocation to the relay (``POST /v1/revocations``); its JSON answer."""
        answer = await self.request("POST", "/v1/revocations", body, auth=False)
        try:
            value = json.loads(answer.body)
        except ValueError as exc:
            raise ProtocolError("the relay's answer to a revocation is not JSON") from exc
        if not isinstance(value, dict):
            raise ProtocolError("the relay's answer to a revocation is not a JSON object")
        return value

    async def post_notice(self, envelope: bytes) -> Accepted:
        """Submit a sealed notice: on the open stream when there is one, else over HTTP."""
        return await self._on_stream("submit", envelope, "/v1/notices")

    async def _on_stream(self, kind: str, body: bytes, path: str) -> Accepted:
        """Send a notice or a confirmation on the open stream (a WebSocket message costs
        the relay and this client a fraction of an HTTP request), else over HTTP. A refusal
        is final as over HTTP; a failure of the stream, a transient refusal (a rate limit,
        a storage fault) or a session refused (401) goes over HTTP, which waits and retries
        as the relay asks, or logs in again. Both ways are idempotent at the relay, so a
        retry never duplicates anything."""
        stream = self._stream
        stats = self.stream_stats
        # Only a flow-controlled stream is read whatever the consumer does; on another
        # (an older relay) an answer could wait behind events nobody takes.
        if stream is not None and stream.flow_controlled:
            try:
                accepted = await stream.ask(kind, body)
                stats.answered += 1
                return accepted
            except RelayError as exc:
                if exc.status not in (401, 429) and exc.status not in TRANSIENT_STATUSES:
                    stats.answered += 1
                    raise
                log.info("relay.stream.%s_fallback reason=%s", kind, exc.code)
            except Exception as exc:  # the stream went away meanwhile, or no answer came
                if isinstance(exc, TimeoutError):
                    stats.answer_timeouts += 1
                log.info("relay.stream.%s_fallback reason=%s", kind, _describe(exc))
            stats.http_fallbacks += 1
        return Accepted.decode((await self.request("POST", path, body)).body)

    async def get_notice(self, notice_id: bytes) -> bytes:
        return (await self.request("GET", f"/v1/notices/{notice_id.hex()}")).body

    async def get_status(self, notice_id: bytes) -> NoticeStatus:
        answer = await self.request(
            "GET", f"/v1/notices/{notice_id.hex()}/status", max_bytes=4 * 1024 * 1024
        )
        return NoticeStatus.decode(answer.body)

    async def send_confirmation(self, confirmation: bytes) -> Accepted:
        """A receipt or an ack: on the open stream when there is one, else over HTTP."""
        return await self._on_stream("confirm", confirmation, "/v1/confirmations")

    async def post_confirmation(self, confirmation: bytes) -> Accepted:
        """A receipt or an ack over HTTP only."""
        return Accepted.decode((await self.request("POST", "/v1/confirmations", confirmation)).body)

    async def inbox(self, after: int, limit: int = 100) -> InboxPage:
        """The page after ``after``. A relay cuts pages by bytes too (always at least one
        event; ``more`` says whether to ask again). A page over this client's bound (a
        relay that does not cut by bytes, several large notices) is asked for again one
        event at a time, so large notices never stop the cursor."""
        try:
            return await self._inbox_page(after, limit)
        except MalformedInput as exc:
            if exc.code != "too_large" or limit <= 1:
                raise
            log.info("inbox page after %d over %d bytes; fetching one event", after,
                     MAX_PAGE_BYTES)
            return await self._inbox_page(after, 1)

    async def _inbox_page(self, after: int, limit: int) -> InboxPage:
        answer = await self.request(
            "GET", "/v1/inbox", params={"after": str(after), "limit": str(limit)},
            max_bytes=MAX_PAGE_BYTES,
        )
        return InboxPage.decode(answer.body, max_bytes=MAX_PAGE_BYTES)

    # ------------------------------------------------------------------ stream
    async def events(self, cursor: Callable[[], int]) -> AsyncGenerator[Event, None]:
        """Events of this desk's stream, live, for ever.

        Connects with ``after=cursor()``; on any disconnection reconnects with backoff (and
        failover), resuming from ``cursor()`` again, so an event is replayed until the
        caller has durably advanced its cursor past it. Raises RelayError for a refusal,
        RelayUnavailable after ``policy.stream_attempts`` failed connections in a row.
        """
        failures = 0
        relogged = False
        opened = False
        while True:
            try:
                ws = await self._open_stream(cursor())
            except RelayError as exc:
                if exc.status == 401 and not relogged:
                    relogged, self._login = True, None
                    continue
                raise
            except _Transient as exc:
                failures += 1
                if exc.status != 429:
                    self._fail_over()
                limit = self.policy.stream_attempts
                if limit is not None and failures >= limit:
                    raise RelayUnavailable(
                        f"the event stream failed {failures} times; last: {exc.reason}",
                        status=exc.status,
                    ) from None
                wait = self._wait_for(exc, failures)
                log.info("relay.stream.retry failures=%d wait=%.2fs reason=%s",
                         failures, wait, exc.reason)
                self._link("retrying", reason=exc.reason, wait_s=wait, failures=failures)
                await self._sleep(wait)
                continue
            self._link("reconnected" if opened or failures else "connected")
            failures, relogged, opened = 0, False, True
            log.info("relay.stream.open url=%s after=%d", self.url, cursor())
            reader = _StreamReader(ws, self.url, on_revocation=self.on_revocation)
            self._stream = reader
            try:
                async for event in reader:
                    yield event
                reason = "the relay closed the stream"
            except _Transient as exc:
                reason = exc.reason
                if exc.status == 401:
                    self._login = None
            finally:
                self._stream = None
                await reader.close()
            failures = 1
            wait = self.policy.delay(failures, self._jitter())
            log.warning("relay.stream.lost reason=%s; reconnecting", reason)
            self._link("lost", reason=reason)
            self._link("retrying", reason=reason, wait_s=wait, failures=failures)
            await self._sleep(wait)

    async def _open_stream(self, after: int) -> aiohttp.ClientWebSocketResponse:
        base = self.url
        await self._check_url(base)
        token = await self._token(base)
        try:
            return await self._http().ws_connect(
                base + "/v1/stream",
                params={"after": str(after)} | (
                    {"revocations": "1"} if self.on_revocation is not None else {}),
                headers={"Authorization": f"Hotline {token.hex()}"},
                heartbeat=self._heartbeat,
                max_msg_size=MAX_ANSWER_BYTES,
                protocols=(STREAM_SUBPROTOCOL,),
                autoclose=True,
            )
        except aiohttp.WSServerHandshakeError as exc:
            status = exc.status
            if status == 429 or status in TRANSIENT_STATUSES:
                headers = exc.headers
                retry = parse_retry_after(
                    headers.get("Retry-After") if headers is not None else None
                )
                raise _Transient(f"{base}: stream {status}", status=status,
                                 retry_after=retry) from exc
            raise RelayError(status, f"http_{status}", exc.message or "stream refused",
                             url=base) from exc
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise _Transient(f"{base}: {_describe(exc)}") from exc


#: How long a notice or confirmation sent on the stream waits for the relay's answer.
STREAM_ANSWER_TIMEOUT_S = 10.0


#: Events a flow-controlled stream may have on their way to this client at once.
STREAM_WINDOW = 64


class _StreamReader:
    """Reads one open stream in a task of its own, and never stops reading: the relay's
    heartbeat pings are answered and the answers to notices and confirmations sent on the
    stream reach their waiters whatever the consumer is doing.

    Events are handed over in order through a buffer of ``window`` events. On a
    flow-controlled stream (the relay chose STREAM_SUBPROTOCOL) the relay sends no more
    events than this reader granted: ``window`` at first, then as many as the consumer
    took, granted by halves; so a backlog arrives in windows as it is consumed, memory
    stays bounded and an answer never waits behind events. A relay that sends more is
    broken (reconnect). On an older relay's stream, without flow control, the reader stops
    reading while the buffer is full (TCP back-pressure); an answer could then wait behind
    events, so nothing is sent on such a stream (``flow_controlled`` False).
    Ends with _Transient (reconnect) or RelayError (refusal)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, base: str,
                 window: int = STREAM_WINDOW,
                 on_revocation: Callable[[bytes], None] | None = None):
        self._ws = ws
        self._base = base
        self._on_revocation = on_revocation
        self.flow_controlled = ws.protocol == STREAM_SUBPROTOCOL
        self._window = window
        self._taken = 0  # events the consumer took since the last grant
        # One place more than the window: the end of the stream always fits.
        self._queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue(window + 1)
        #: Notices and confirmations sent on this stream, by ref, awaiting the answer.
        self._pending: dict[int, asyncio.Future[Accepted]] = {}
        self._refs = itertools.count(1)
        self._task = asyncio.create_task(self._run())

    async def ask(self, kind: str, body: bytes) -> Accepted:
        """Send a ``submit`` (a notice) or a ``confirm`` (a receipt or ack); the answer."""
        ref = next(self._refs)
        fut: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._pending[ref] = fut
        try:
            if kind == "submit":
                await self._ws.send_bytes(client_message("submit", ref, notice=body))
            else:
                await self._ws.send_bytes(client_message("confirm", ref, confirmation=body))
            return await asyncio.wait_for(fut, timeout=STREAM_ANSWER_TIMEOUT_S)
        finally:
            self._pending.pop(ref, None)

    async def _run(self) -> None:
        end: BaseException | None
        try:
            if self.flow_controlled:
                await self._ws.send_bytes(client_message("credit", 0, credit=self._window))
            async for event in _read_stream(self._ws, self._base, self._pending,
                                            self._on_revocation):
                if not self.flow_controlled:
                    await self._queue.put(event)
                elif self._queue.qsize() >= self._window:
                    raise _Transient("the relay sent more events than this client granted")
                else:
                    self._queue.put_nowait(event)
            end = None
        except (_Transient, RelayError) as exc:
            end = exc
        except Exception as exc:  # any failure of the link is a reason to reconnect
            end = _Transient(f"stream failed: {_describe(exc)}")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(_Transient("the stream ended before the relay answered"))
        await self._queue.put(end)

    def __aiter__(self) -> _StreamReader:
        return self

    async def __anext__(self) -> Event:
        item = await self._queue.get()
        if isinstance(item, Event):
            if self.flow_controlled:
                self._taken += 1
                if self._taken >= max(1, self._window // 2):
                    granted, self._taken = self._taken, 0
                    # A stream that fails here ends in the reader, which reports it.
                    with contextlib.suppress(Exception):
                        await self._ws.send_bytes(client_message("credit", 0, credit=granted))
            return item
        self._queue.put_nowait(item)  # stay ended for any later call
        if item is None:
            raise StopAsyncIteration
        raise item

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        await self._ws.close()


#: Close codes of a relay ending a stream because its session ended or its key was revoked.
_SESSION_CLOSE_CODES = frozenset({4401, 4403})


async def _read_stream(ws: aiohttp.ClientWebSocketResponse, base: str,
                       pending: dict[int, asyncio.Future[Accepted]] | None = None,
                       on_revocation: Callable[[bytes], None] | None = None,
                       ) -> AsyncIterator[Event]:
    """Events from one open stream; raises _Transient when it ends abnormally."""
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY:
            try:
                frame = decode_relay_message(msg.data)
            except MalformedInput as exc:
                # The relay's fault. Reconnecting replays from the durable cursor.
                raise _Transient(f"the relay sent a bad stream frame: {exc}") from exc
            kind = frame["type"]
            if kind == REVOCATION_MESSAGE:
                # Applied here, in the reader, so that it holds for every event after it.
                if on_revocation is not None:
                    on_revocation(frame["revocation"])
            elif kind == "event":
                if frame["event"] is None:
                    raise _Transient("the relay sent an event frame without an event")
                yield frame["event"]
            elif kind in ("accepted", "confirmed") and pending and frame["ref"] in pending:
                fut = pending[frame["ref"]]
                if not fut.done() and frame["attestation"] is not None:
                    fut.set_result(Accepted(frame["attestation"], frame["duplicate"],
                                            frame["leaf"]))
            elif kind == "error" and pending and frame["ref"] in pending:
                # The relay refused one message sent on the stream; the stream goes on.
                fut = pending[frame["ref"]]
                if not fut.done():
                    fut.set_exception(RelayError(frame["status"], frame["error"] or "error",
                                                 frame["detail"] or "", url=base))
            elif kind == "error":
                code, detail = frame["error"] or "error", frame["detail"] or ""
                if code in SESSION_CODES:
                    raise _Transient(f"stream session ended: {code}", status=401)
                raise RelayError(0, code, detail, url=base)
            # "pong" answers a message this client does not send.
        elif msg.type == aiohttp.WSMsgType.ERROR:
            raise _Transient(f"stream error: {_describe(ws.exception())}")
        elif msg.type == aiohttp.WSMsgType.TEXT:
            raise _Transient("the relay sent a text frame; the stream carries msgpack only")
    if ws.close_code in _SESSION_CLOSE_CODES:
        raise _Transient(f"the relay ended the stream's session (code {ws.close_code})",
                         status=401)
    if ws.close_code not in (None, 1000, 1001):
        raise _Transient(f"stream closed with code {ws.close_code}")


async def _read_limited(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise MalformedInput(
            f"the relay's answer to {what} is {resp.content_length} bytes; the limit is {limit}",
            code="too_large",
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise MalformedInput(
                f"the relay's answer to {what} exceeds {limit} bytes", code="too_large"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _error_code(data: bytes, status: int) -> str:
    try:
        return ErrorFrame.decode(data).error
    except HotlineError:
        return f"http_{status}"


def _relay_error(status: int, data: bytes, base: str) -> RelayError:
    try:
        frame = ErrorFrame.decode(data)
    except HotlineError:
        text = data[:200].decode("utf-8", "replace").strip()
        return RelayError(status, f"http_{status}", text or "no error frame", url=base)
    return RelayError(status, frame.error, frame.detail, request_id=frame.request_id, url=base)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = [
    "Answer",
    "MemoryPin",
    "PinStore",
    "RelayConnection",
    "RelayError",
    "RelayIdentityError",
    "RelayUnavailable",
    "RetryPolicy",
    "normalize_relay_url",
    "origin_of",
    "parse_retry_after",
]
