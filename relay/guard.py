"""The relay's HTTP connection handler: what aiohttp leaves to the application.

* **Header timeout on every request** (slowloris): aiohttp has no timeout for reading
  request headers, and its keep-alive timeout only closes connections that send nothing.
  A connection's first request must complete its headers within ``header_timeout``
  seconds of the connection opening; each later request within ``header_timeout`` of its
  first byte arriving.
* **Error frames for the HTTP parser's refusals**: a request aiohttp cannot parse is
  answered with the error frame (msgpack, code ``http_error``), like every other error.
* **One JSON log line per refused or failed request**, rate-limited, instead of aiohttp's
  multi-line tracebacks on stderr.
* **Unmasked client WebSocket frames close the connection** (RFC 6455 5.1): aiohttp's
  frame reader accepts them; the bytes are checked here before it sees them.

A proxy in front (deploy/nginx.conf) adds the same timeouts, but the relay does not rely
on it.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from keys.frames import ErrorFrame
from relay.limits import TokenBucket

#: HTTP-layer log events let through: a burst of 20, then 20 a minute (the others are
#: counted and reported with the next one let through).
LOG_BURST = 20


class LogLimiter:
    """Rate-limits one kind of log event; ``suppressed`` counts what was dropped."""

    def __init__(self, log: Any, per_minute: int = LOG_BURST) -> None:
        self.log = log
        self._bucket = TokenBucket.per_minute(per_minute, _now_ms())
        self.suppressed = 0

    def info(self, event: str, **fields: Any) -> None:
        if self._bucket.take(_now_ms()) > 0:
            self.suppressed += 1
            return
        if self.suppressed:
            fields["suppressed_before"] = self.suppressed
            self.suppressed = 0
        self.log.info(event, **fields)


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class MaskedFramesOnly:
    """Passes a WebSocket's bytes on to aiohttp's reader after checking that each frame
    has its mask bit set (a client must mask every frame, RFC 6455 5.1); an unmasked frame
    calls ``on_unmasked`` and nothing more is passed on. Only frame headers (2 to 14
    bytes) are looked at; payloads are skipped by their declared length."""

    def __init__(self, parser: Any, on_unmasked: Any) -> None:
        self._parser = parser
        self._on_unmasked = on_unmasked
        self._head = bytearray()
        self._skip = 0
        self._refused = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._refused or not self._scan(data):
            if not self._refused:
                self._refused = True
                self._on_unmasked()
            return True, b""
        result: tuple[bool, bytes] = self._parser.feed_data(data)
        return result

    def feed_eof(self) -> None:
        self._parser.feed_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)

    def _scan(self, data: bytes) -> bool:
        pos, end = 0, len(data)
        head = self._head
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            head.append(data[pos])
            pos += 1
            if len(head) < 2:
                continue
            if not head[1] & 0x80:
                return False
            length = head[1] & 0x7F
            extra = 2 if length == 126 else 8 if length == 127 else 0
            if len(head) < 2 + extra + 4:
                continue
            if extra:
                length = int.from_bytes(head[2 : 2 + extra], "big")
            self._skip = length
            head.clear()
        return True


class GuardedHandler(RequestHandler):
    def __init__(self, manager: web.Server, *, header_timeout: float, on_cut: Any,
                 log: LogLimiter, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._on_cut = on_cut
        self._limited_log = log
        self._header_timer: asyncio.TimerHandle | None = None
        #: Requests whose headers were complete when the timer was started.
        self._counted = 0

    # ------------------------------------------------------------ header timeout
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_header_timer()

    def _start_header_timer(self) -> None:
        self._counted = self._request_count
        self._header_timer = asyncio.get_running_loop().call_later(
            self._header_timeout, self._too_slow)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def data_received(self, data: bytes) -> None:
        parsing_http = self._payload_parser is None and not self._upgraded
        before = self._request_count
        super().data_received(data)
        if self._header_timer is not None:
            if self._request_count > self._counted:
                self._stop_header_timer()  # the awaited request's headers arrived
        elif (parsing_http and self._request_count == before and not self._messages
              and self._current_request is None and not self._force_close):
            # The first bytes of a next request on a kept-alive connection: its headers
            # have header_timeout from now.
            self._start_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._header_timer = None
        if self._request_count == self._counted and self.transport is not None:
            self._on_cut(self.transport.get_extra_info("peername"))
            self.force_close()
            self.transport.close()

    # ------------------------------------------------------------ errors
    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A request the HTTP layer refused (cannot parse, too long a line): the error
        frame, one rate-limited log line, and the connection closed."""
        request_id = secrets.token_hex(8)
        self._limited_log.info(
            "http.bad_request", status=status, peer=str(request.remote)[:64],
            error=type(exc).__name__ if exc else None,
            detail=(message or "")[:200], request_id=request_id)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was being sent already")
        code = "internal_error" if status >= 500 else "http_error"
        detail = ("the relay failed to handle this request" if status >= 500
                  else f"the request could not be read as HTTP: {(message or '')[:200]}")
        resp = web.Response(status=status,
                            body=ErrorFrame(code, detail, request_id).encode(),
                            content_type="application/msgpack",
                            headers={"X-Request-Id": request_id})
        resp.force_close()
        return resp

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        self._limited_log.info(
            "http.error", message=str(args[0] if args else "")[:200],
            error=type(exc).__name__ if isinstance(exc, BaseException) else None)

    # ------------------------------------------------------------ WebSocket
    def set_parser(self, parser: Any, data_received_cb: Any = None) -> None:
        super().set_parser(MaskedFramesOnly(parser, self._unmasked_frame),  # type: ignore[arg-type]
                           data_received_cb=data_received_cb)

    def _unmasked_frame(self) -> None:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        self._limited_log.info("stream.unmasked_frame", peer=str(peer)[:64])
        if self.transport is not None:
            self.transport.close()


async def start_site(runner: web.AppRunner, host: str, port: int, *, header_timeout: float,
                     log: Any, ssl_context: ssl.SSLContext | None = None) -> asyncio.Server:
    """Listen on ``host:port`` with the guarded handler (over TLS with ``ssl_context``);
    return the asyncio server. The TLS handshake gets the header timeout too."""
    server = runner.server
    assert server is not None, "runner.setup() first"
    loop = asyncio.get_running_loop()
    kwargs = dict(server._kwargs)  # the handler_args the application was made with
    limited = LogLimiter(log)

    def cut(peer: Any) -> None:
        log.info("http.header_timeout", peer=str(peer)[:64], timeout_s=header_timeout)

    def factory() -> GuardedHandler:
        return GuardedHandler(server, loop=loop, header_timeout=header_timeout,
                              on_cut=cut, log=limited, **kwargs)

    return await loop.create_server(
        factory, host, port, reuse_address=True, backlog=1024, ssl=ssl_context,
        ssl_handshake_timeout=header_timeout if ssl_context is not None else None)
