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


async def _check(resp: aiohttp.ClientResponse) -> bytes:
    body = await resp.read()
    if resp.status >= 400:
        try:
            err = ErrorFrame.decode(body)
            raise OpsError(f"relay refused: {err.detail}", code=err.error)
        except HotlineError as exc:
            if isinstance(exc, OpsError):
                raise
            raise OpsError(f"relay answered HTTP {resp.status}") from exc
    return body


class OpsClient:
    def __init__(self, relay_url: str, name: str, key: nacl.signing.SigningKey) -> None:
        self.url = relay_url.rstrip("/")
        self.name = name
        self.key = key
        self.http: aiohttp.ClientSession | None = None
        self.token = b""

    async def __aenter__(self) -> OpsClient:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=10))
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
        async with self.http.get(self.url + path, headers=self._auth) as r:
            return json.loads(await _check(r))

    async def overdue(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = (await self.get_json("/v1/ops/overdue"))["overdue"]
        return out

    async def escalations(self, since_ms: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = (await self.get_json(
            f"/v1/ops/escalations?since={since_ms}"))["escalations"]
        return out

    async def watch(self) -> AsyncIterator[dict[str, Any]]:
        assert self.http is not None
        async with self.http.ws_connect(self.url + "/v1/ops/watch", headers=self._auth,
                                        heartbeat=20) as ws:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    yield json.loads(msg.data)
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
