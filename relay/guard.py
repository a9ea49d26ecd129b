"""Cutting off clients that send their request headers too slowly (slowloris).

aiohttp has no timeout for reading request headers: a client that trickles one byte at a
time holds its connection open indefinitely. This request handler closes a connection
whose first request's headers are not complete within ``header_timeout`` seconds; idle
keep-alive connections are closed by aiohttp's keepalive timeout. A proxy in front
(deploy/nginx.conf) adds the same protection for every request.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler


class HeaderTimeoutHandler(RequestHandler):
    def __init__(self, manager: web.Server, *, header_timeout: float, on_cut: Any,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._on_cut = on_cut
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._header_timer = asyncio.get_running_loop().call_later(
            self._header_timeout, self._too_slow)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is not None and self._request_count > 0:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._header_timer = None
        if self._request_count == 0 and self.transport is not None:
            self._on_cut(self.transport.get_extra_info("peername"))
            self.force_close()
            self.transport.close()


async def start_site(runner: web.AppRunner, host: str, port: int, *, header_timeout: float,
                     log: Any, ssl_context: ssl.SSLContext | None = None) -> asyncio.Server:
    """Listen on ``host:port`` with the guarded handler (over TLS with ``ssl_context``);
    return the asyncio server. The TLS handshake gets the header timeout too."""
    server = runner.server
    assert server is not None, "runner.setup() first"
    loop = asyncio.get_running_loop()
    kwargs = dict(server._kwargs)  # the handler_args the application was made with

    def cut(peer: Any) -> None:
        log.info("http.header_timeout", peer=str(peer)[:64], timeout_s=header_timeout)

    def factory() -> HeaderTimeoutHandler:
        return HeaderTimeoutHandler(server, loop=loop, header_timeout=header_timeout,
                                    on_cut=cut, **kwargs)

    return await loop.create_server(
        factory, host, port, reuse_address=True, backlog=1024, ssl=ssl_context,
        ssl_handshake_timeout=header_timeout if ssl_context is not None else None)
