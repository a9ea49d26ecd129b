"""The authorization matrix (SECURITY.md section 5, threat 12, invariant S7) on a real relay.

Four desks each send a notice to every other desk and to every pair of the others, so that
for each ordered pair of distinct desks (A, B) there are notices that involve B and not A.
A then tries every endpoint on each of them: fetch, status, receipts and acks signed by A,
confirmations claiming to be B's (stolen or forged), inbox queries and the WebSocket stream.
Every cell must be refused (404 where existence must not leak, 403 where A names the
notice itself) and nothing may be recorded. Requests without a valid session get 401.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from keys import Confirmation, Envelope, seal
from keys.frames import (
    ErrorFrame,
    InboxPage,
    NoticeStatus,
    client_message,
    decode_relay_message,
)
from keys.primitives import Domain
from keys.signed import make
from tests.factory import report
from tests.relay_harness import RawDesk, RelayProcess, Reply, make_federation, now_ms

DESKS = ("us.caisi", "us.nsc", "cn.cac", "cn.mss")
PAIRS = list(itertools.permutations(DESKS, 2))
ENDPOINTS = (
    "get_notice",
    "get_status",
    "receipt_signed_by_a",
    "ack_signed_by_a",
    "confirmation_claiming_b",
    "inbox",
    "stream",
)
CELLS = [(a, b, e) for a, b in PAIRS for e in ENDPOINTS]
INBOX_QUERIES = (
    "",
    "?after=0",
    "?after=0&limit=500",
    "?limit=1000000",
    "?desk={b}",
    "?after=0&desk={b}&recipient={b}&sender={b}",
    "?after=1&limit=1",
)
#: Seconds a stream is watched for stray events once everything expected arrived.
SETTLE_S = 0.1


@dataclass(frozen=True)
class Sent:
    env: Envelope
    sender: str
    recipients: tuple[str, ...]

    @property
    def involved(self) -> set[str]:
        return {self.sender, *self.recipients}

    @property
    def nid(self) -> str:
        return self.env.notice_id.hex()


@dataclass
class World:
    relay: RelayProcess
    homes: dict[str, Path]
    tokens: dict[str, bytes]
    notices: list[Sent]
    #: Cells already tried in this module: (a, b, endpoint) -> (attempts, failures).
    tally: dict[tuple[str, str, str], tuple[int, list[str]]] = field(default_factory=dict)

    def resources_of(self, victim: str, attacker: str) -> list[Sent]:
        """Notices that involve ``victim`` (as sender or recipient) and not ``attacker``."""
        return [n for n in self.notices if victim in n.involved and attacker not in n.involved]

    def addressed_to(self, desk: str) -> set[bytes]:
        return {n.env.notice_id for n in self.notices if desk in n.recipients}

    def by_id(self) -> dict[bytes, Sent]:
        return {n.env.notice_id: n for n in self.notices}


def seal_to(sender: RawDesk, recipients: list[RawDesk]) -> Envelope:
    now = now_ms()
    trust = sender.home.trust(now)
    return seal(report(), sender=sender.secrets,
                recipients=[trust.verify_card(r.home.card(now), now) for r in recipients],
                severity="high", now=now)


async def _populate(relay: RelayProcess, homes: dict[str, Path]) -> World:
    async with aiohttp.ClientSession() as http:
        desks = {d: await RawDesk(http, relay.url, homes[d]).login() for d in DESKS}
        notices = []
        for s in DESKS:
            others = [d for d in DESKS if d != s]
            groups = [[o] for o in others] + [list(g) for g in itertools.combinations(others, 2)]
            for group in groups:
                env = seal_to(desks[s], [desks[d] for d in group])
                r = await desks[s].post("/v1/notices", env.raw)
                assert r.status == 201, r.body
                notices.append(Sent(env, s, tuple(sorted(group))))
        world = World(relay, homes, {d: x.token for d, x in desks.items()}, notices)
        # Control: each desk's inbox holds exactly the notices addressed to it, so the
        # refusals below are not explained by an empty relay.
        for d, desk in desks.items():
            page = InboxPage.decode((await desk.get("/v1/inbox?after=0&limit=500")).body)
            assert {e.notice_id for e in page.events} == world.addressed_to(d)
            assert {e.kind for e in page.events} == {"notice"}
        return world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("authz")
    homes = make_federation(base, DESKS)
    relay = RelayProcess.create(base)
    relay.start()
    try:
        yield asyncio.run(_populate(relay, homes))
        failed = relay.events("request.failed")
        assert not failed, f"the relay failed on a request: {failed[:3]}"
    finally:
        relay.stop()


@pytest.fixture
def as_desk(world: World, http: aiohttp.ClientSession) -> dict[str, RawDesk]:
    """Every desk, with the session token it got at the module's start."""
    out = {}
    for d in DESKS:
        desk = RawDesk(http, world.relay.url, world.homes[d])
        desk.token = world.tokens[d]
        out[d] = desk
    return out


# --------------------------------------------------------------------------- helpers


def refused(reply: Reply, status: int, code: str) -> str | None:
    """None if ``reply`` is the expected refusal, else what was seen instead."""
    if reply.status != status:
        return f"HTTP {reply.status}"
    error = ErrorFrame.decode(reply.body).error
    return None if error == code else f"HTTP {reply.status} {error}"


def forged_confirmation(kind: str, notice: Sent, *, claimed: RawDesk, signer: RawDesk) -> bytes:
    """A confirmation whose body says it is ``claimed``'s, signed with ``signer``'s key."""
    body: dict[str, Any] = {
        "v": 1, "type": kind, "notice_id": notice.env.notice_id, "digest": notice.env.digest,
        "to": notice.sender, "from": claimed.desk, "from_kid": claimed.secrets.ik_kid,
        "at": now_ms(), "message": None,
    }
    domain = Domain.ACK if kind == "ack" else Domain.RECEIPT
    return make(signer.secrets.identity, domain, body).encode()


def genuine_confirmation(kind: str, notice: Sent, by: RawDesk) -> bytes:
    return Confirmation.create(kind, notice_id=notice.env.notice_id, digest=notice.env.digest,
                               sender=notice.sender, me=by.secrets, at=now_ms()).encode()  # type: ignore[arg-type]


async def nothing_confirmed(desks: dict[str, RawDesk], notice: Sent) -> str | None:
    """None if no recipient of ``notice`` has a receipt or ack recorded (sender's view)."""
    r = await desks[notice.sender].get(f"/v1/notices/{notice.nid}/status")
    assert r.status == 200, r.status
    for rec in NoticeStatus.decode(r.body).recipients:
        if rec.receipt is not None or rec.ack is not None:
            return f"a confirmation by {rec.desk} was recorded"
    return None


def ws_url(relay: RelayProcess, query: str = "?after=0") -> str:
    return relay.url.replace("http://", "ws://") + "/v1/stream" + query


async def read_stream(ws: aiohttp.ClientWebSocketResponse, want: set[bytes]
                      ) -> tuple[list[Any], list[dict[str, Any]]]:
    """Events until every id in ``want`` arrived and the stream stays quiet; other messages."""
    events: list[Any] = []
    other: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while True:
        seen = {e.notice_id for e in events}
        timeout = SETTLE_S if want <= seen else deadline - time.monotonic()
        if timeout <= 0:
            break
        try:
            msg = await ws.receive(timeout=timeout)
        except TimeoutError:
            break
        if msg.type != aiohttp.WSMsgType.BINARY:
            other.append({"type": str(msg.type), "data": msg.data})
            break
        m = decode_relay_message(msg.data)
        if m["type"] == "event":
            events.append(m["event"])
        else:
            other.append(m)
    return events, other


# --------------------------------------------------------------------------- the cells


async def check_cell(world: World, desks: dict[str, RawDesk], http: aiohttp.ClientSession,
                     a: str, b: str, endpoint: str) -> tuple[int, list[str]]:
    """Try ``endpoint`` as desk ``a`` on every resource of desk ``b``.

    Returns the number of individual attempts and a description of each that was not
    refused as it must be (a cross-desk success or a wrong error).
    """
    attacker, victim = desks[a], desks[b]
    resources = world.resources_of(b, a)
    assert resources, f"no notice involves {b} without {a}: the matrix would be vacuous"
    failures: list[str] = []
    attempts = 0

    def note(what: str, notice: Sent | None, problem: str | None) -> None:
        nonlocal attempts
        attempts += 1
        if problem is not None:
            where = f" notice {notice.nid[:8]} ({notice.sender}->{','.join(notice.recipients)})" \
                if notice else ""
            failures.append(f"{a} {what}{where}: {problem}")

    if endpoint in ("get_notice", "get_status"):
        suffix = "" if endpoint == "get_notice" else "/status"
        for n in resources:
            note(endpoint, n,
                 refused(await attacker.get(f"/v1/notices/{n.nid}{suffix}"), 404, "not_found"))
            # Control: the victim does see it, so the 404 is about A, not about the notice.
            ok = await victim.get(f"/v1/notices/{n.nid}{suffix}")
            assert ok.status == 200, f"control: {b} cannot read its own notice ({ok.status})"
            if endpoint == "get_notice":
                assert ok.body == n.env.raw

    elif endpoint in ("receipt_signed_by_a", "ack_signed_by_a"):
        kind = "receipt" if endpoint.startswith("receipt") else "ack"
        for n in resources:
            body = genuine_confirmation(kind, n, attacker)
            note(endpoint, n, refused(await attacker.post("/v1/confirmations", body),
                                      403, "forbidden"))
            note(f"{endpoint} (stored?)", n, await nothing_confirmed(desks, n))

    elif endpoint == "confirmation_claiming_b":
        for n in resources:
            for kind in ("receipt", "ack"):
                bodies = {"forged": forged_confirmation(kind, n, claimed=victim, signer=attacker)}
                if b in n.recipients:  # B's own, genuinely signed confirmation, replayed by A
                    bodies["stolen"] = genuine_confirmation(kind, n, victim)
                for how, body in bodies.items():
                    note(f"posts {how} {kind} of {b}", n,
                         refused(await attacker.post("/v1/confirmations", body),
                                 403, "forbidden"))
            note("confirmation_claiming_b (stored?)", n, await nothing_confirmed(desks, n))

    elif endpoint == "inbox":
        own = world.addressed_to(a)
        theirs = {n.env.notice_id for n in resources}
        by_id = world.by_id()
        for query in INBOX_QUERIES:
            q = query.format(b=b)
            reply = await attacker.get("/v1/inbox" + q)
            if reply.status != 200:
                note(f"inbox{q}", None, f"HTTP {reply.status} for its own inbox")
                continue
            events = InboxPage.decode(reply.body).events
            leaked = [e for e in events if e.notice_id in theirs]
            foreign = [e for e in events
                       if not (e.kind == "notice" and e.notice_id in own)
                       and not (e.kind in ("receipt", "ack") and e.notice_id in by_id
                                and by_id[e.notice_id].sender == a)]
            note(f"inbox{q}", None,
                 f"{len(leaked)} events of {b}, {len(foreign)} not {a}'s"
                 if leaked or foreign else None)
        # Paging through the whole inbox never reaches B's events either.
        cursor, seen = 0, set()
        for _ in range(100):
            page = InboxPage.decode((await attacker.get(f"/v1/inbox?after={cursor}&limit=2")).body)
            seen |= {e.notice_id for e in page.events}
            cursor = page.next_cursor
            if not page.more:
                break
        note("inbox paged", None,
             None if seen == own else f"paged inbox has {len(seen - own)} foreign notices")

    elif endpoint == "stream":
        own = world.addressed_to(a)
        theirs = {n.env.notice_id for n in resources}
        for query in ("?after=0", f"?after=0&desk={b}"):
            async with http.ws_connect(ws_url(world.relay, query),
                                       headers=attacker.auth) as ws:
                events, other = await read_stream(ws, own)
                got = {e.notice_id for e in events}
                note(f"stream{query}", None,
                     None if got == own and not got & theirs and not other
                     else f"stream gave {len(got & theirs)} of {b}'s events, "
                          f"{len(got - own)} foreign, missing {len(own - got)}, other {other}")
                # Confirmations sent over the stream are checked the same way.
                for i, n in enumerate(resources, start=1):
                    body = genuine_confirmation("ack", n, attacker)
                    await ws.send_bytes(client_message("confirm", i, body))
                    msg = await ws.receive(timeout=5)
                    m = decode_relay_message(msg.data)
                    note("stream confirm", n,
                         None if (m["type"], m["ref"], m["error"]) == ("error", i, "forbidden")
                         else f"stream answered {m['type']} {m['error']}")
                    note("stream confirm (stored?)", n, await nothing_confirmed(desks, n))
    else:  # pragma: no cover - the parametrization lists only the endpoints above
        raise AssertionError(endpoint)
    return attempts, failures


@pytest.mark.parametrize(("a", "b", "endpoint"),
                         [pytest.param(*c, id=f"{c[0]}-on-{c[1]}-{c[2]}") for c in CELLS])
async def test_cross_desk_cell_is_refused(world: World, as_desk: dict[str, RawDesk],
                                          http: aiohttp.ClientSession,
                                          a: str, b: str, endpoint: str) -> None:
    """Desk A acting through one endpoint on B's notices is refused (403/404), storing nothing."""
    attempts, failures = await check_cell(world, as_desk, http, a, b, endpoint)
    world.tally[(a, b, endpoint)] = (attempts, failures)
    assert attempts > 0
    assert failures == [], "\n".join(failures)


async def test_matrix_has_zero_cross_desk_successes(
        world: World, as_desk: dict[str, RawDesk], http: aiohttp.ClientSession) -> None:
    """Across all 84 cells of desk x desk x endpoint, no cross-desk attempt succeeds."""
    for cell in CELLS:  # cells not run above (e.g. deselected) are tried here
        if cell not in world.tally:
            world.tally[cell] = await check_cell(world, as_desk, http, *cell)
    assert len(CELLS) == len(world.tally) == len(PAIRS) * len(ENDPOINTS) == 84
    # 7 notices involve B and not A; every one of them was tried in every cell.
    assert all(len(world.resources_of(b, a)) == 7 for a, b in PAIRS)
    total = sum(attempts for attempts, _ in world.tally.values())
    failures = [f for _, fs in world.tally.values() for f in fs]
    assert total >= len(CELLS) * 7
    assert failures == [], f"{len(failures)} of {total} cross-desk attempts were not refused:\n" \
        + "\n".join(failures[:40])
    # The honest paths still work afterwards: each desk reads its own notices.
    for d, desk in as_desk.items():
        for nid in world.addressed_to(d):
            assert (await desk.get(f"/v1/notices/{nid.hex()}")).status == 200


@pytest.mark.parametrize("desk", DESKS)
async def test_sender_cannot_confirm_its_own_notice(world: World, as_desk: dict[str, RawDesk],
                                                    http: aiohttp.ClientSession,
                                                    desk: str) -> None:
    """A sender's receipt or ack of its own notice is refused: 403 forbidden (HTTP and stream)."""
    me = as_desk[desk]
    mine = [n for n in world.notices if n.sender == desk]
    assert len(mine) == 6
    for n in mine:
        for kind in ("receipt", "ack"):
            body = genuine_confirmation(kind, n, me)
            r = await me.post("/v1/confirmations", body)
            assert (r.status, ErrorFrame.decode(r.body).error) == (403, "forbidden")
        assert await nothing_confirmed(as_desk, n) is None
    async with http.ws_connect(ws_url(world.relay), headers=me.auth) as ws:
        await read_stream(ws, world.addressed_to(desk))
        await ws.send_bytes(client_message("confirm", 7, genuine_confirmation("ack", mine[0], me)))
        m = decode_relay_message((await ws.receive(timeout=5)).data)
        assert (m["type"], m["ref"], m["error"]) == ("error", 7, "forbidden")
    assert await nothing_confirmed(as_desk, mine[0]) is None


OPS_ENDPOINTS = ("/v1/ops/overdue", "/v1/ops/escalations?since=0", "/v1/ops/watch")


@pytest.mark.parametrize("path", OPS_ENDPOINTS)
@pytest.mark.parametrize("desk", DESKS)
async def test_desk_session_cannot_use_operator_endpoints(world: World,
                                                          as_desk: dict[str, RawDesk],
                                                          http: aiohttp.ClientSession,
                                                          desk: str, path: str) -> None:
    """A desk's session token opens no operator view (escalations, overdue list, live watch)."""
    me = as_desk[desk]
    if path.endswith("/watch"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await http.ws_connect(world.relay.url.replace("http://", "ws://") + path,
                                  headers=me.auth)
        assert exc.value.status in (401, 403)
    reply = await me.get(path)
    assert reply.status in (401, 403), reply.status
    assert ErrorFrame.decode(reply.body).error in ("unauthorized", "forbidden")
    assert (await me.get("/v1/inbox")).status == 200  # the desk session itself is fine


# --------------------------------------------------------------------------- 401 without a session

#: (method, path template, needs a body). The ids are filled in per test.
AUTHED_ENDPOINTS = {
    "inbox": ("GET", "/v1/inbox?after=0"),
    "get_notice": ("GET", "/v1/notices/{nid}"),
    "get_status": ("GET", "/v1/notices/{nid}/status"),
    "get_card": ("GET", "/v1/cards/cn.cac"),
    "submit": ("POST", "/v1/notices"),
    "confirm": ("POST", "/v1/confirmations"),
    "stream": ("WS", "/v1/stream?after=0"),
}
BAD_TOKENS = {
    "missing": None,
    "empty": "",
    "wrong_scheme": "Bearer {hex}",
    "no_scheme": "{hex}",
    "short_hex": "Hotline {short}",
    "long_hex": "Hotline {hex}00",
    "non_hex": "Hotline " + "zz" * 32,
    "upper_hex": "Hotline {upper}",
    "unknown_token": "Hotline " + "ab" * 32,
    "two_tokens": "Hotline {hex} {hex}",
}


async def attempt(http: aiohttp.ClientSession, relay: RelayProcess, endpoint: str,
                  headers: dict[str, str], nid: str, body: bytes) -> tuple[int, str | None]:
    """Call ``endpoint`` with ``headers``; return (status, error code)."""
    method, template = AUTHED_ENDPOINTS[endpoint]
    path = template.format(nid=nid)
    if method == "WS":
        try:
            async with http.ws_connect(ws_url(relay, path.removeprefix("/v1/stream")),
                                       headers=headers):
                return 101, None
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status, None
    h = {"Content-Type": "application/msgpack"} | headers
    async with http.request(method, relay.url + path, data=body if method == "POST" else None,
                            headers=h) as r:
        data = await r.read()
        return r.status, ErrorFrame.decode(data).error if r.status >= 400 else None


def attack_bodies(desks: dict[str, RawDesk], world: World) -> tuple[Sent, Envelope, bytes]:
    """A notice to read, a fresh valid envelope to submit and a valid ack to post."""
    target = next(n for n in world.notices if n.sender == "us.caisi"
                  and n.recipients == ("cn.cac",))
    env = seal_to(desks["us.caisi"], [desks["cn.cac"]])
    ack = genuine_confirmation("ack", target, desks["cn.cac"])
    return target, env, ack


@pytest.mark.parametrize("endpoint", list(AUTHED_ENDPOINTS))
@pytest.mark.parametrize("token", list(BAD_TOKENS))
async def test_request_without_valid_session_is_401(world: World, as_desk: dict[str, RawDesk],
                                                   http: aiohttp.ClientSession,
                                                   endpoint: str, token: str) -> None:
    """A request with a missing or malformed or unknown session token is refused with 401."""
    real = as_desk["us.caisi"].token.hex()
    template = BAD_TOKENS[token]
    headers = {} if template is None else {"Authorization": template.format(
        hex=real, short=real[:-1], upper=real.upper())}
    target, env, ack = attack_bodies(as_desk, world)
    body = env.raw if endpoint == "submit" else ack
    status, code = await attempt(http, world.relay, endpoint, headers, target.nid, body)
    assert status == 401
    assert code in (None, "unauthorized") and (code is not None or endpoint == "stream")
    # Nothing was stored: the notice is unknown and the ack not recorded.
    cn = as_desk["cn.cac"]
    assert (await cn.get(f"/v1/notices/{env.notice_id.hex()}")).status == 404
    assert await nothing_confirmed(as_desk, target) is None
    # Control: the same request with the real token works.
    if endpoint in ("inbox", "get_card"):
        status, _ = await attempt(http, world.relay, endpoint, as_desk["us.caisi"].auth,
                                  target.nid, body)
        assert status == 200


@pytest.fixture(scope="module")
def other_relay(tmp_path_factory: pytest.TempPathFactory, world: World
                ) -> Iterator[RelayProcess]:
    """A second, independent relay of the same federation."""
    base = tmp_path_factory.mktemp("other")
    shutil.copy(world.relay.home.parent / "federation.root", base / "federation.root")
    relay = RelayProcess.create(base)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


async def test_token_of_another_relay_is_401(world: World, other_relay: RelayProcess,
                                             as_desk: dict[str, RawDesk],
                                             http: aiohttp.ClientSession) -> None:
    """A session token issued by another relay of the same federation is refused with 401."""
    elsewhere = await RawDesk(http, other_relay.url, world.homes["us.caisi"]).login()
    assert (await elsewhere.get("/v1/inbox")).status == 200  # valid where it was issued
    target, env, ack = attack_bodies(as_desk, world)
    for endpoint in AUTHED_ENDPOINTS:
        body = env.raw if endpoint == "submit" else ack
        status, code = await attempt(http, world.relay, endpoint, elsewhere.auth, target.nid,
                                     body)
        assert status == 401, endpoint
        assert code == ("unauthorized" if endpoint != "stream" else None)
    assert (await as_desk["cn.cac"].get(f"/v1/notices/{env.notice_id.hex()}")).status == 404
    assert await nothing_confirmed(as_desk, target) is None


async def test_expired_session_token_is_401_and_closes_stream(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """Once a session's lifetime has passed, every endpoint answers 401 and its stream is closed."""
    homes = make_federation(tmp_path, ("us.caisi", "cn.cac"))
    relay = RelayProcess.create(tmp_path, env={"HOTLINE_RELAY_LIMITS_SESSION_TTL_S": "1"})
    relay.start()
    try:
        us = await RawDesk(http, relay.url, homes["us.caisi"]).login()
        cn = await RawDesk(http, relay.url, homes["cn.cac"]).login()
        env = seal_to(us, [cn])
        assert (await us.post("/v1/notices", env.raw)).status == 201
        ws = await http.ws_connect(ws_url(relay), headers=cn.auth)
        events, _ = await read_stream(ws, {env.notice_id})
        assert [e.notice_id for e in events] == [env.notice_id]
        await asyncio.sleep(1.2)
        # The open stream was closed by the relay when the session ran out.
        msg = await ws.receive(timeout=5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4401)
        await ws.close()
        late = seal_to(us, [cn])
        sent = Sent(env, "us.caisi", ("cn.cac",))
        ack = genuine_confirmation("ack", sent, cn)
        for endpoint in AUTHED_ENDPOINTS:
            who = us if endpoint == "submit" else cn
            body = late.raw if endpoint == "submit" else ack
            status, code = await attempt(http, relay, endpoint, who.auth, env.notice_id.hex(),
                                         body)
            assert status == 401, endpoint
            assert code == ("unauthorized" if endpoint != "stream" else None)
        # Nothing was stored with the expired tokens; a fresh login works.
        await us.login()
        await cn.login()
        page = InboxPage.decode((await cn.get("/v1/inbox")).body)
        assert [e.notice_id for e in page.events] == [env.notice_id]
        assert await nothing_confirmed({"us.caisi": us}, sent) is None
        assert (await us.post("/v1/notices", late.raw)).status == 201
        assert not relay.events("request.failed")
    finally:
        relay.stop()
