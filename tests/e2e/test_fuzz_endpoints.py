"""Property-based fuzzing of one running relay's HTTP and WebSocket endpoints (SECURITY.md 4.3,
threat-model row 13).

One relay child process (module scope) takes, for every body endpoint, random bytes, random
msgpack values, byte-level mutations of a genuine frame (bits flipped, bytes set, inserted,
deleted, slices duplicated, truncations) and field-level mutations of it (a value replaced,
a key dropped or added); random query strings on ``/v1/inbox``; random path ids; random and
mutated binary messages on ``/v1/stream``. The genuine seeds are a sealed notice, a receipt and
an acknowledgement, a challenge request, a login answer and a revocation (of a key nobody
uses, so an accepted one harms nothing).

Every answer must be a typed rejection (4xx carrying an ErrorFrame with a non-empty ``error``;
on a stream an ``error`` message or a close with 1002/1003/1009/4401/4403) or a correct
acceptance (2xx whose body decodes as the endpoint's answer frame). Never a 5xx, never a
``request.failed`` log line, never a hang (every request has a timeout), and the relay's RSS
ends under 2x its baseline + 50 MB. Afterwards an honest notice still makes the round trip.

The relay's rate limits are raised here so the fuzzer reaches the decoders rather than the
token buckets (those are tested in test_relay_input_limits.py and test_overload.py).
Hypothesis runs derandomized, with no example database; examples per test: ``FUZZ_EXAMPLES``
(env ``HOTLINE_FUZZ_EXAMPLES``, default 200).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from yarl import URL

from keys import Confirmation, Envelope, Revocation, seal
from keys.frames import (
    Accepted,
    Challenge,
    ChallengeRequest,
    ErrorFrame,
    InboxPage,
    NoticeStatus,
    Session,
    SessionRequest,
    auth_message,
    client_message,
    decode_relay_message,
)
from keys.keyfile import decode_signing_key, read_key_file
from tests import relay_harness
from tests.factory import report
from tests.relay_harness import PASSPHRASE, RawDesk, RelayProcess, make_federation, now_ms

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    # Keep Hypothesis's caches out of the repository (see tests/keys/conftest.py).
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / f"hotline-hypothesis-{os.getuid()}")

T = TypeVar("T")

SENDER, RECIPIENT, OTHER, OUTSIDER = "us.caisi", "cn.cac", "cn.mss", "us.nsc"
DESKS = (SENDER, RECIPIENT, OTHER, OUTSIDER)
MSGPACK = "application/msgpack"
#: Limits raised so the fuzzer reaches the decoders, not the token buckets.
LIMITS = {
    "HOTLINE_RELAY_LIMITS_NOTICES_PER_MINUTE": "1000000",
    "HOTLINE_RELAY_LIMITS_CONFIRMATIONS_PER_MINUTE": "1000000",
    "HOTLINE_RELAY_LIMITS_AUTH_PER_MINUTE_PER_ADDRESS": "1000000",
    "HOTLINE_RELAY_LIMITS_MAX_STREAMS_PER_DESK": "1000",
    "HOTLINE_RELAY_LIMITS_MAX_NOTICE_BYTES": str(64 * 1024),
}
#: The relay's limit for a stream message here: the notice limit (as set above) + 1 KiB.
MAX_STREAM_MESSAGE = 64 * 1024 + 1024
FUZZ_EXAMPLES = int(os.environ.get("HOTLINE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=15)
#: Close codes a stream may end with when fed garbage.
STREAM_CLOSE_CODES = {1002, 1003, 1009, 4401, 4403}


# --------------------------------------------------------------------------- the relay


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid`` in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@dataclass
class World:
    """The relay, logged-in desks, the genuine seeds, and the loop every example runs on."""

    relay: RelayProcess
    base: Path
    loop: asyncio.AbstractEventLoop
    http: aiohttp.ClientSession
    desks: dict[str, RawDesk]
    seeds: dict[str, list[bytes]]
    notice: Envelope
    baseline_rss_kib: int
    #: (endpoint, status, error code) of every answer, for the coverage checks.
    seen: Counter[tuple[str, int, str]] = field(default_factory=Counter)

    def run(self, coro: Awaitable[T], timeout: float = 60) -> T:
        """Run one example's requests; a hang is a failure, not a stuck test run."""
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    @property
    def pid(self) -> int:
        assert self.relay.proc is not None
        return self.relay.proc.pid


def authority_key(base: Path, country: str) -> Any:
    with relay_harness.test_env():
        payload = read_key_file(base / f"{country}-authority" / "authority.key",
                                PASSPHRASE.encode(), kind="authority")
    return decode_signing_key(payload)[1]


def seal_to(sender: RawDesk, *to: RawDesk, severity: str = "high") -> Envelope:
    now = now_ms()
    trust = sender.home.trust(now)
    return seal(report(), sender=sender.secrets,
                recipients=[trust.verify_card(r.home.card(now), now) for r in to],
                severity=severity, now=now)


async def login_answer(desk: RawDesk) -> bytes:
    """A genuine answer to a fresh challenge, not yet used (each nonce is single use, so the
    login checks past the nonce are reached only with a fresh one)."""
    r = await desk.post("/v1/auth/challenge", ChallengeRequest(desk.desk).encode(), auth=False)
    assert r.status == 200, r.body
    ch = Challenge.decode(r.body)
    now = now_ms()
    sig = desk.secrets.identity.sign(
        auth_message(ch.origin, desk.desk, desk.secrets.ik_kid, ch.nonce, now)).signature
    return SessionRequest(desk.desk, desk.home.card(now).encode(), ch.nonce, now, sig).encode()


async def _setup(relay: RelayProcess, base: Path, homes: dict[str, Path]
                 ) -> tuple[aiohttp.ClientSession, dict[str, RawDesk], dict[str, list[bytes]],
                            Envelope]:
    http = aiohttp.ClientSession(timeout=REQUEST_TIMEOUT)
    desks = {name: await RawDesk(http, relay.url, homes[name]).login() for name in DESKS}
    us, cn = desks[SENDER], desks[RECIPIENT]
    # A notice the relay holds, so confirmations of it reach the deepest checks.
    held = seal_to(us, cn, desks[OTHER])
    r = await us.post("/v1/notices", held.raw)
    assert r.status == 201, r.body
    fresh = seal_to(us, cn)  # a notice not yet sent: the fuzzer may send it as is
    now = now_ms()
    receipt = Confirmation.create("receipt", notice_id=held.notice_id, digest=held.digest,
                                  sender=us.desk, me=cn.secrets, at=now)  # type: ignore[arg-type]
    ack = Confirmation.create("ack", notice_id=held.notice_id, digest=held.digest,
                              sender=us.desk, me=cn.secrets, at=now)  # type: ignore[arg-type]
    login = await login_answer(us)
    # A genuine revocation of a key no desk here holds (accepting it harms nothing).
    revocation = Revocation.issue("us.spare", b"\x5a" * 16, authority_key(base, "us"),  # type: ignore[arg-type]
                                  now, "fuzz seed").encode()
    seeds = {
        "/v1/notices": [fresh.raw, held.raw],
        "/v1/confirmations": [receipt.encode(), ack.encode()],
        "/v1/auth/challenge": [ChallengeRequest(us.desk).encode(),
                               ChallengeRequest(cn.desk).encode()],  # type: ignore[arg-type]
        "/v1/auth/session": [login],
        "/v1/revocations": [revocation],
        "stream": [client_message("ping", 7), client_message("confirm", 8, receipt.encode()),
                   client_message("confirm", 9, ack.encode()),
                   client_message("submit", 10, notice=fresh.raw)],
    }
    return http, desks, seeds, held


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("fuzz")
    homes = make_federation(base, DESKS)
    relay = RelayProcess.create(base, env=LIMITS)
    relay.start()
    loop = asyncio.new_event_loop()
    try:
        http, desks, seeds, held = loop.run_until_complete(_setup(relay, base, homes))
        try:
            assert relay.proc is not None
            w = World(relay, base, loop, http, desks, seeds, held, rss_kib(relay.proc.pid))
            yield w
        finally:
            loop.run_until_complete(http.close())
        failed = relay.events("request.failed")
        assert not failed, f"the relay failed on a request: {failed[:3]}"
    finally:
        loop.close()
        relay.stop()


# --------------------------------------------------------------------------- strategies

MUTATION_OPS = ("flip", "set", "insert", "delete", "truncate", "duplicate")


def mutate(seed: bytes, ops: list[tuple[str, float, bytes]]) -> bytes:
    """Apply byte-level mutations to ``seed`` (positions are fractions of its length)."""
    out = bytearray(seed)
    for op, where, data in ops:
        i = int(where * (len(out) + 1))
        if op == "flip" and out:
            i %= len(out)
            out[i] ^= 1 << (data[0] % 8)
        elif op == "set" and out:
            i %= len(out)
            out[i] = data[0]
        elif op == "insert":
            out[i:i] = data
        elif op == "delete":
            del out[i:i + len(data)]
        elif op == "truncate":
            del out[i:]
        elif op == "duplicate":
            out[i:i] = out[i:i + 1 + data[0] % 64]
    return bytes(out)


WHERE = st.floats(0, 1, exclude_max=True)
byte_ops = st.lists(
    st.tuples(st.sampled_from(MUTATION_OPS), WHERE, st.binary(min_size=1, max_size=8)),
    min_size=1, max_size=4)


def flip_bit(seed: bytes, where: float, bit: int) -> bytes:
    """One bit flipped: the shape survives, so this reaches the signature checks."""
    out = bytearray(seed)
    out[int(where * len(out))] ^= 1 << bit
    return bytes(out)

msgpack_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True), st.text(max_size=40), st.binary(max_size=80),
    st.sampled_from([1, 0, 2, "us.caisi", "cn.cac", "ack", "receipt", "ping", "confirm",
                     b"\x00" * 16, b"\x01" * 32, b"\x00" * 64]))
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.text(max_size=12), inner, max_size=6)),
    max_leaves=24)


def pack(value: Any) -> bytes:
    out: bytes = msgpack.packb(value, use_bin_type=True)
    return out


def _field_mutation(seed: bytes, how: str, key_pick: int, value: Any, new_key: str) -> bytes:
    """Re-encode ``seed``'s top-level value (or the body of a signed ``[body, sig]`` pair)
    with one value replaced, one entry dropped or one entry added."""
    top = msgpack.unpackb(seed, raw=False)
    target, wrap = top, None
    if (isinstance(top, list) and len(top) == 2 and isinstance(top[0], bytes)
            and key_pick % 2 == 0):
        try:  # a signed document: mutate inside its body, keep the signature
            inner = msgpack.unpackb(top[0], raw=False)
        except Exception:  # a header that is not msgpack is mutated at the top level
            inner = None
        if isinstance(inner, dict):
            target, wrap = inner, top
    if isinstance(target, dict):
        keys = sorted(target)
        k = keys[key_pick % len(keys)] if keys else new_key
        if how == "replace":
            target[k] = value
        elif how == "drop":
            target.pop(k, None)
        else:
            target[new_key] = value
    elif isinstance(target, list):
        i = key_pick % (len(target) or 1)
        if how == "replace" and target:
            target[i] = value
        elif how == "drop" and target:
            del target[i]
        else:
            target.append(value)
    else:
        target = value
    if wrap is not None:
        return pack([pack(target), wrap[1]])
    return pack(target)


def bodies(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Random bytes, random msgpack, and byte- and field-level mutations of the seeds."""
    seed = st.sampled_from(seeds)
    return st.one_of(
        st.binary(max_size=2048),
        msgpack_values.map(pack),
        st.builds(mutate, seed, byte_ops),
        st.builds(flip_bit, seed, WHERE, st.integers(0, 7)),
        st.builds(_field_mutation, seed, st.sampled_from(["replace", "drop", "add"]),
                  st.integers(0, 64), msgpack_values, st.text(max_size=10)),
        seed,  # the genuine frame as is: a correct acceptance (or a typed refusal of a replay)
    )


# --------------------------------------------------------------------------- checking answers

#: Endpoint -> decoder of its 2xx body.
ACCEPTED: dict[str, Callable[[bytes], Any]] = {
    "/v1/notices": Accepted.decode,
    "/v1/confirmations": Accepted.decode,
    "/v1/auth/challenge": Challenge.decode,
    "/v1/auth/session": Session.decode,
    "/v1/revocations": json.loads,
    "/v1/inbox": InboxPage.decode,
    "/v1/notices/{id}": Envelope.decode,
    "/v1/notices/{id}/status": NoticeStatus.decode,
    "/v1/cards/{desk}": lambda b: b,
}


def check_answer(world: World, endpoint: str, status: int, body: bytes) -> None:
    """A typed rejection or a correct acceptance; nothing else."""
    assert status < 500, f"{endpoint} answered {status}: {body[:300]!r}"
    if 200 <= status < 300:
        ACCEPTED[endpoint](body)
        world.seen[(endpoint, status, "")] += 1
        return
    assert 400 <= status < 500, f"{endpoint} answered {status}: {body[:300]!r}"
    frame = ErrorFrame.decode(body)  # closed schema: error is 1..64 characters
    assert frame.error
    assert len(body) < 2048, "an error must not echo unbounded input"
    world.seen[(endpoint, status, frame.error)] += 1


async def _request(world: World, method: str, url: str | URL, endpoint: str,
                   headers: dict[str, str], body: bytes | None = None) -> None:
    try:
        async with world.http.request(method, url, data=body, headers=headers,
                                      timeout=REQUEST_TIMEOUT) as r:
            status, answer = r.status, await r.read()
    except TimeoutError as exc:
        raise AssertionError(f"{method} {endpoint} hung (no answer in 15 s)") from exc
    check_answer(world, endpoint, status, answer)


def auth_header(world: World, who: str) -> dict[str, str]:
    if who in world.desks:
        return world.desks[who].auth
    if who == "garbage":
        return {"Authorization": "Hotline " + "ab" * 32}
    if who == "malformed":
        return {"Authorization": "Bearer x"}
    return {}


WHO = st.sampled_from([SENDER, RECIPIENT, OTHER, OUTSIDER, "garbage", "malformed", "none"])


def mostly(owner: str) -> st.SearchStrategy[str]:
    """The desk whose request this would genuinely be, 7 times in 10; anyone otherwise."""
    return st.integers(0, 9).flatmap(lambda n: st.just(owner) if n < 7 else WHO)

CONTENT_TYPES = st.sampled_from([MSGPACK] * 6 + ["application/json", "text/plain",
                                                  "application/msgpack; charset=utf-8"])

#: Endpoint -> (whose session its genuine request carries, error codes that show the fuzzer
#: got past the decoders into the signature and domain checks).
BODY_ENDPOINTS: dict[str, tuple[str, set[str]]] = {
    "/v1/notices": (SENDER, {"bad_signature", "sender_mismatch", "stale_or_future",
                             "bad_recipients", "bad_stanza", "id_conflict"}),
    "/v1/confirmations": (RECIPIENT, {"bad_signature", "forbidden", "digest_mismatch",
                                      "not_found"}),
    "/v1/auth/challenge": ("none", {"bad_value", "missing_field", "unknown_field"}),
    "/v1/auth/session": ("none", {"bad_challenge", "unknown_or_revoked_key"}),
    "/v1/revocations": ("none", {"bad_signature"}),
}


# --------------------------------------------------------------------------- the fuzz tests


@pytest.mark.parametrize("endpoint", sorted(BODY_ENDPOINTS))
def test_fuzzed_bodies_get_typed_answers(world: World, endpoint: str) -> None:
    """Random and mutated bodies POSTed to an endpoint: 2xx or 4xx with an ErrorFrame."""
    owner, deep = BODY_ENDPOINTS[endpoint]

    @FUZZ
    @given(data=st.data(), who=mostly(owner), content_type=CONTENT_TYPES)
    def one(data: st.DataObject, who: str, content_type: str) -> None:
        seeds = world.seeds[endpoint]
        if endpoint == "/v1/auth/session":
            seeds = [world.run(login_answer(world.desks[SENDER]))]
        body = data.draw(bodies(seeds), label="body")
        headers = {"Content-Type": content_type} | auth_header(world, who)
        world.run(_request(world, "POST", world.relay.url + endpoint, endpoint, headers, body))

    one()
    codes = {code for (ep, _status, code) in world.seen if ep == endpoint and code}
    # The fuzzer got past the transport checks into the decoders, and past the decoders into
    # the signature and domain checks.
    assert len(codes) >= 5, (endpoint, sorted(codes))
    assert codes & deep, (endpoint, sorted(codes))


query_keys = st.one_of(st.sampled_from(["after", "limit", "after", "limit", "cursor", "",
                                        "after[]", "LIMIT"]),
                       st.text(max_size=8))
query_values = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", "0", "1", "500", "501", "999999999999999999", "9999999999999999999",
                     "1e3", "0x10", "-1", " 1", "1 ", "１２", "nan", "%00", "1;2"]),
    st.text(max_size=30))


def test_fuzzed_inbox_queries_get_typed_answers(world: World) -> None:
    """Random query strings on /v1/inbox: a page (200) or 400 with an ErrorFrame."""

    @FUZZ
    @given(params=st.lists(st.tuples(query_keys, query_values), max_size=4), who=mostly(SENDER),
           raw=st.booleans())
    def one(params: list[tuple[str, str]], who: str, raw: bool) -> None:
        if raw:  # not re-encoded: percent signs and separators as they come
            query = "&".join(urllib.parse.quote(k, safe="%=") + "="
                             + urllib.parse.quote(v, safe="%=&") for k, v in params)
        else:
            query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        url = URL(world.relay.url + "/v1/inbox?" + query, encoded=True)
        world.run(_request(world, "GET", url, "/v1/inbox", auth_header(world, who)))

    one()
    assert ("/v1/inbox", 200, "") in world.seen
    assert ("/v1/inbox", 400, "bad_value") in world.seen


path_ids = st.one_of(
    st.text(alphabet="0123456789abcdef", max_size=70),
    st.text(alphabet="0123456789abcdefABCDEF./%-_", max_size=70),
    st.text(max_size=60),
    st.binary(min_size=16, max_size=16).map(bytes.hex),
    st.sampled_from(["..", "../..", "../../etc/passwd", "%2e%2e%2f", "%00", "%ff%fe", "a" * 4000,
                     "us.caisi", "cn.cac", "xx.unknown", "US.CAISI", "*", " ", "%20"]),
)
PATHS = {"/v1/notices/{id}": "/v1/notices/{}", "/v1/notices/{id}/status": "/v1/notices/{}/status",
         "/v1/cards/{desk}": "/v1/cards/{}"}


def test_fuzzed_path_ids_get_typed_answers(world: World) -> None:
    """Random ids in /v1/notices/{id}, /v1/notices/{id}/status and /v1/cards/{desk}: the
    resource (200) or 400/404 with an ErrorFrame."""
    real = world.notice.notice_id.hex()

    @FUZZ
    @given(endpoint=st.sampled_from(sorted(PATHS)),
           ident=st.one_of(path_ids, st.just(real), st.just(real.upper())),
           encode=st.sampled_from(["segment", "keep_slashes", "as_is"]), who=mostly(SENDER))
    def one(endpoint: str, ident: str, encode: str, who: str) -> None:
        if encode == "segment":
            part = urllib.parse.quote(ident, safe="")
        elif encode == "keep_slashes":
            part = urllib.parse.quote(ident, safe="/%")
        else:  # only what HTTP cannot carry at all is escaped
            part = urllib.parse.quote(ident, safe="/%.~!$&'()*+,;=:@")
        url = URL(world.relay.url + PATHS[endpoint].format(part), encoded=True)
        world.run(_request(world, "GET", url, endpoint, auth_header(world, who)))

    one()
    assert ("/v1/notices/{id}", 200, "") in world.seen
    assert any(ep == "/v1/notices/{id}" and status == 400 for ep, status, _ in world.seen)
    assert any(ep == "/v1/cards/{desk}" and status == 404 for ep, status, _ in world.seen)


stream_garbage = st.one_of(
    st.binary(max_size=512),
    msgpack_values.map(pack),
    st.builds(mutate, st.sampled_from([client_message("ping", 1),
                                       client_message("confirm", 2, b"\x92\xc4\x00\xc4\x00"),
                                       client_message("submit", 3, notice=b"\x93\xc4\x00")]),
              byte_ops),
    st.builds(_field_mutation, st.sampled_from([client_message("ping", 1),
                                                client_message("confirm", 2, None),
                                                client_message("submit", 3, None)]),
              st.sampled_from(["replace", "drop", "add"]), st.integers(0, 64), msgpack_values,
              st.text(max_size=10)),
    st.integers(0, 2**53).map(lambda ref: client_message("ping", ref)),
)
#: One message in 50 is over the stream's message limit (the relay closes with 1009).
stream_messages = st.integers(0, 49).flatmap(
    lambda n: st.just(b"\x00" * (MAX_STREAM_MESSAGE + 1)) if n == 0 else stream_garbage)


async def _stream_example(world: World, who: str, messages: list[bytes],
                          seeds: list[bytes]) -> None:
    url = world.relay.url.replace("http://", "ws://") + "/v1/stream?after=99999999999999999"
    async with world.http.ws_connect(url, headers=world.desks[who].auth, heartbeat=None,
                                     timeout=aiohttp.ClientWSTimeout(ws_close=10)) as ws:
        for data in messages + seeds:
            await ws.send_bytes(data)
            while True:  # the answer to this message (pushed events are skipped)
                msg = await ws.receive(timeout=10)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    m = decode_relay_message(msg.data)
                    if m["type"] == "event":
                        continue
                    if m["type"] == "error":
                        assert m["error"], m
                        world.seen[("stream", 0, m["error"])] += 1
                    else:
                        assert m["type"] in ("pong", "confirmed", "accepted"), m
                        world.seen[("stream", 0, m["type"])] += 1
                    break
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                aiohttp.WSMsgType.CLOSED):
                    code = ws.close_code if msg.type != aiohttp.WSMsgType.CLOSE else msg.data
                    assert code in STREAM_CLOSE_CODES, (code, msg)
                    world.seen[("stream", int(code), "closed")] += 1
                    return
                raise AssertionError(f"unexpected stream message {msg.type}: {msg.data!r:.200}")


def test_fuzzed_stream_messages_get_typed_answers(world: World) -> None:
    """Random and mutated binary messages on /v1/stream: each answered with an error, pong,
    accepted or confirmed message, or the stream closed with a code that names the fault; a
    genuine ping, notice or confirmation sent after the garbage is still answered."""
    seeds = world.seeds["stream"]

    @FUZZ
    @given(messages=st.lists(stream_messages, min_size=1, max_size=4),
           who=st.sampled_from([RECIPIENT, SENDER, OTHER]),
           genuine=st.one_of(st.none(), st.sampled_from(seeds)))
    def one(messages: list[bytes], who: str, genuine: bytes | None) -> None:
        world.run(_stream_example(world, who, messages, [] if genuine is None else [genuine]))

    one()
    assert ("stream", 0, "pong") in world.seen
    assert ("stream", 1009, "closed") in world.seen
    errors = {code for (ep, status, code) in world.seen if ep == "stream" and status == 0}
    assert len(errors) >= 5, sorted(errors)


# --------------------------------------------------------------------------- and afterwards


async def _honest_round_trip(world: World) -> None:
    us, cn = world.desks[SENDER], world.desks[RECIPIENT]
    env = seal_to(us, cn, severity="critical")
    r = await us.post("/v1/notices", env.raw)
    assert r.status == 201, r.body
    Accepted.decode(r.body)
    page = InboxPage.decode((await cn.get("/v1/inbox?after=0&limit=500")).body)
    while env.notice_id not in [e.notice_id for e in page.events] and page.more:
        page = InboxPage.decode((await cn.get(f"/v1/inbox?after={page.next_cursor}"
                                              "&limit=500")).body)
    got = [e.envelope for e in page.events if e.notice_id == env.notice_id]
    assert got == [env.raw]
    ack = Confirmation.create("ack", notice_id=env.notice_id, digest=env.digest, sender=us.desk,
                              me=cn.secrets, at=now_ms())  # type: ignore[arg-type]
    r = await cn.post("/v1/confirmations", ack.encode())
    assert r.status == 200, r.body
    status = NoticeStatus.decode((await us.get(f"/v1/notices/{env.notice_id.hex()}/status")).body)
    assert [x.ack for x in status.recipients] == [ack.encode()]


def test_relay_survived_the_fuzzing(world: World) -> None:
    """After every fuzz test: the process is alive, never logged request.failed, its RSS is
    under 2x baseline + 50 MB, and an honest notice makes the whole round trip."""
    assert world.relay.proc is not None and world.relay.proc.poll() is None
    world.run(_honest_round_trip(world))
    assert not world.relay.events("request.failed")
    rss = rss_kib(world.pid)
    bound = 2 * world.baseline_rss_kib + 50 * 1024
    print(f"relay RSS: baseline {world.baseline_rss_kib} KiB, after fuzzing {rss} KiB "
          f"(bound {bound} KiB); answers: {sum(world.seen.values())}; "
          f"{time.strftime('%H:%M:%S')}")
    for (endpoint, status, code), n in sorted(world.seen.items()):
        print(f"  {endpoint:26} {status:4} {code or '-':28} {n}")
    assert rss < bound, (rss, world.baseline_rss_kib)
