"""The operators' client: log in with an operator key, read overdue notices and escalations.

Operators see metadata only; the relay serves them JSON.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import nacl.signing

from client.home import now_ms
from keys.errors import HotlineError
from keys.frames import (
    Challenge,
    ErrorFrame,
    OperatorChallengeRequest,
    OperatorSessionRequest,
    Session,
    operator_auth_message,
)

MSGPACK = {"Content-Type": "application/msgpack"}


class OpsError(HotlineError):
    code = "ops_error"

    def __init__(self, message: str, *, code: str | None = None, status: int = 0) -> None:
        super().__init__(message, code=code)
        self.status = status

    @property
    def transient(self) -> bool:
        """A retry may cure it: the relay is unreachable, overloaded or failing."""
        return self.code == "relay_unreachable" or self.status == 429 or self.status >= 500


async def _check(resp: aiohttp.ClientResponse) -> bytes:
    body = await resp.read()
    if resp.status >= 400:
        try:
            err = ErrorFrame.decode(body)
            raise OpsError(f"relay refused: {err.detail}", code=err.error, status=resp.status)
        except HotlineError as exc:
            if isinstance(exc, OpsError):
                raise
            raise OpsError(f"relay answered HTTP {resp.status}", status=resp.status) from exc
    return body


class OpsClient:
    def __init__(self, relay_url: str, name: str, key: nacl.signing.SigningKey) -> None:
        self.url = relay_url.rstrip("/")
        self.name = name
        self.key = key
        self.http: aiohttp.ClientSession | None = None
        self.token = b""

    def open_session(self) -> None:
        """The HTTP session (no request yet); :meth:`close` ends it."""
        if self.http is None or self.http.closed:
            self.http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=10))

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()

    async def __aenter__(self) -> OpsClient:
        self.open_session()
        assert self.http is not None
        try:
            await self.login()
        except BaseException:
            await self.http.close()  # a refused login must not leak the session
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.http is not None:
            await self.http.close()

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": "Hotline " + self.token.hex()}

    async def login(self) -> None:
        assert self.http is not None
        try:
            async with self.http.post(self.url + "/v1/ops/challenge", headers=MSGPACK,
                                      data=OperatorChallengeRequest(self.name).encode()) as r:
                ch = Challenge.decode(await _check(r))
            if ch.origin.rstrip("/") != self.url:
                raise OpsError(f"the relay at {self.url} asks to sign a login for "
                               f"{ch.origin!r}; refusing (wrong --relay URL, or a relay in the "
                               "middle)", code="origin_mismatch")
            ts = now_ms()
            sig = self.key.sign(operator_auth_message(ch.origin, self.name, ch.nonce, ts)).signature
            async with self.http.post(self.url + "/v1/ops/session", headers=MSGPACK,
                                      data=OperatorSessionRequest(self.name, ch.nonce, ts,
                                                                  sig).encode()) as r:
                self.token = Session.decode(await _check(r)).token
        except aiohttp.ClientError as exc:
            raise OpsError(f"cannot reach the relay at {self.url}: {exc}",
                           code="relay_unreachable") from exc

    async def get_json(self, path: str) -> Any:
        assert self.http is not None
        try:
            async with self.http.get(self.url + path, headers=self._auth) as r:
                return json.loads(await _check(r))
        except aiohttp.ClientError as exc:
            raise OpsError(f"cannot reach the relay at {self.url}: {exc}",
                           code="relay_unreachable") from exc

    async def overdue(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = (await self.get_json("/v1/ops/overdue"))["overdue"]
        return out

    async def escalations(self, since_ms: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = (await self.get_json(
            f"/v1/ops/escalations?since={since_ms}"))["escalations"]
        return out

    async def watch(self) -> AsyncIterator[dict[str, Any]]:
        """Live escalation records until the stream ends (then it returns: the caller
        decides whether to reconnect). Raises OpsError if it cannot be opened."""
        ws = await self.open_watch()
        async for record in self.records(ws):
            yield record

    async def open_watch(self) -> aiohttp.ClientWebSocketResponse:
        """Open the live stream: it carries escalations recorded from now on."""
        assert self.http is not None
        try:
            ws = await self.http.ws_connect(self.url + "/v1/ops/watch", headers=self._auth,
                                            heartbeat=20)
        except aiohttp.WSServerHandshakeError as exc:
            raise OpsError(f"the relay refused the watch stream: HTTP {exc.status}",
                           status=exc.status) from exc
        except aiohttp.ClientError as exc:
            raise OpsError(f"cannot reach the relay at {self.url}: {exc}",
                           code="relay_unreachable") from exc
        return ws

    async def records(self, ws: aiohttp.ClientWebSocketResponse
                      ) -> AsyncIterator[dict[str, Any]]:
        """The records of an open watch stream, until it ends; closes it."""
        async with ws:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    yield json.loads(msg.data)
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
