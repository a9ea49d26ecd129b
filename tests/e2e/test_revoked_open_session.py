"""A revoked key still holding an open stream and a session token cannot submit.

A revocation is applied to the relay's trust store first; ending the key's sessions and
streams follows after the revocation is written to the store (an await, in which the
relay goes on handling messages). In that window only the check made at each submission
stands between the revoked key and an accepted notice. These tests hold that window open:
the revocation is in the trust store, the stream and the token are still there, and the
submission must be refused by the submit-time checks themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from keys import Envelope, Revocation, seal
from keys.frames import (
    Challenge,
    ChallengeRequest,
    ErrorFrame,
    Session,
    SessionRequest,
    auth_message,
    client_message,
    decode_relay_message,
)
from relay.app import make_app
from relay.auth import Authenticator
from tests.factory import Federation, report
from tests.relay.inproc import InProcessRelay

MSGPACK = {"Content-Type": "application/msgpack"}


@dataclass
class Served:
    relay: InProcessRelay
    url: str
    http: aiohttp.ClientSession


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """The relay's app over its core and store, on a loopback port, on a manual clock."""
    fed = Federation.create(desks=("us.caisi", "cn.cac"))
    ipr = await InProcessRelay(tmp_path / "relay", fed).open()
    limits = ipr.config.limits
    auth = Authenticator(relay_id="test-relay", origin="", trust=ipr.relay.trust,
                         challenge_ttl_ms=limits.challenge_ttl_s * 1000,
                         session_ttl_ms=limits.session_ttl_s * 1000)
    runner = web.AppRunner(make_app(ipr.relay, auth))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    auth.origin = url
    try:
        async with aiohttp.ClientSession() as http:
            yield Served(ipr, url, http)
    finally:
        await runner.cleanup()
        await ipr.close()


async def login(s: Served, name: str) -> dict[str, str]:
    desk = s.relay.fed.desks[name]
    async with s.http.post(s.url + "/v1/auth/challenge", headers=MSGPACK,
                           data=ChallengeRequest(desk.desk).encode()) as r:
        assert r.status == 200
        ch = Challenge.decode(await r.read())
    ts = s.relay.clock.now_ms()
    sig = desk.secrets.identity.sign(
        auth_message(ch.origin, desk.desk, desk.secrets.ik_kid, ch.nonce, ts)).signature
    req = SessionRequest(desk.desk, desk.card.encode(), ch.nonce, ts, sig)
    async with s.http.post(s.url + "/v1/auth/session", headers=MSGPACK, data=req.encode()) as r:
        assert r.status == 200, await r.read()
        token = Session.decode(await r.read()).token
    return {"Authorization": "Hotline " + token.hex()}


def notice(s: Served) -> Envelope:
    fed = s.relay.fed
    return seal(report(), sender=fed.desks["us.caisi"].secrets,
                recipients=[fed.verified("cn.cac")], severity="critical",
                now=s.relay.clock.now_ms())


def revoke_in_trust_only(s: Served, name: str) -> None:
    """The relay's trust store knows the revocation; its sessions and streams are not
    ended yet (as while the revocation is being written to the store)."""
    fed = s.relay.fed
    desk = fed.desks[name]
    assert fed.authorities is not None
    rev = Revocation.issue(desk.desk, desk.card.cert.key_id,
                           fed.authorities[desk.desk.split(".")[0]],  # type: ignore[index]
                           s.relay.clock.now_ms(), "key compromised")
    s.relay.relay.trust.add_revocation(rev)


def stored(s: Served, env: Envelope) -> bool:
    return any(e.notice_id == env.notice_id
               for e in s.relay.relay.store.events_after("cn.cac", 0, 1000))


async def test_revoked_key_submitting_on_its_still_open_stream_is_refused_at_submit(
        served: Served) -> None:
    """The stream opened before the revocation is still open; a notice sent on it is
    answered 401 unauthorized (the submit-time check) and not stored."""
    s = served
    auth = await login(s, "us.caisi")
    async with s.http.ws_connect(s.url + "/v1/stream?after=0", headers=auth) as ws:
        control = notice(s)
        await ws.send_bytes(client_message("submit", 1, notice=control.raw))
        answer = decode_relay_message((await asyncio.wait_for(ws.receive(), 20)).data)
        assert (answer["type"], answer["ref"]) == ("accepted", 1), answer

        revoke_in_trust_only(s, "us.caisi")
        late = notice(s)
        await ws.send_bytes(client_message("submit", 2, notice=late.raw))
        msg = await asyncio.wait_for(ws.receive(), 20)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        answer = decode_relay_message(msg.data)
        assert (answer["type"], answer["ref"], answer["status"], answer["error"]) == (
            "error", 2, 401, "unauthorized"), answer
    assert stored(s, control) and not stored(s, late)


async def test_revoked_key_submitting_over_http_with_its_unexpired_token_is_refused(
        served: Served) -> None:
    """The session token issued before the revocation has not expired and was not
    dropped; a notice posted with it is refused 401 unauthorized and not stored."""
    s = served
    auth = await login(s, "us.caisi")
    control = notice(s)
    async with s.http.post(s.url + "/v1/notices", headers=MSGPACK | auth,
                           data=control.raw) as r:
        assert r.status == 201, await r.read()

    revoke_in_trust_only(s, "us.caisi")
    late = notice(s)
    async with s.http.post(s.url + "/v1/notices", headers=MSGPACK | auth, data=late.raw) as r:
        assert r.status == 401
        assert ErrorFrame.decode(await r.read()).error == "unauthorized"
    assert stored(s, control) and not stored(s, late)
