"""Bad input over HTTP and WebSocket (SECURITY.md list (c), the items that reach the relay).

One relay with small limits (64 KiB notices, 5 notices per minute, 2 streams per desk) takes
oversize, compressed, mistyped, malformed and deeply nested bodies, bad path ids, oversize
headers, smuggling attempts, floods and bad WebSocket frames. Each is refused with the status
and stable error code that names it, stores nothing, and the relay never answers 500 and
still accepts an honest notice afterwards.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import math
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from yarl import URL

from keys import Envelope, seal
from keys.frames import (
    ChallengeRequest,
    ErrorFrame,
    InboxPage,
    client_message,
    decode_relay_message,
)
from keys.report import Attachment
from tests.factory import report
from tests.relay_harness import RawDesk, RelayProcess, Reply, make_federation, now_ms

DESKS = ("us.caisi", "cn.cac", "cn.mss")
MAX_NOTICE = 65536
#: The relay's limit for every body other than a notice (and for WebSocket frames).
MAX_SMALL = 64 * 1024
LIMITS = {
    "HOTLINE_RELAY_LIMITS_MAX_NOTICE_BYTES": str(MAX_NOTICE),
    "HOTLINE_RELAY_LIMITS_NOTICES_PER_MINUTE": "5",
    "HOTLINE_RELAY_LIMITS_MAX_STREAMS_PER_DESK": "2",
}
MSGPACK = "application/msgpack"


@dataclass
class World:
    relay: RelayProcess
    homes: dict[str, Path]
    tokens: dict[str, bytes]


async def _login_all(relay: RelayProcess, homes: dict[str, Path]) -> dict[str, bytes]:
    async with aiohttp.ClientSession() as http:
        return {d: (await RawDesk(http, relay.url, homes[d]).login()).token for d in DESKS}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("limits")
    homes = make_federation(base, DESKS, classical=DESKS)  # v1 shapes
    relay = RelayProcess.create(base, env=LIMITS)
    relay.start()
    try:
        yield World(relay, homes, asyncio.run(_login_all(relay, homes)))
        failed = relay.events("request.failed")
        assert not failed, f"the relay failed on a request: {failed[:3]}"
    finally:
        relay.stop()


@pytest.fixture
def d(world: World, http: aiohttp.ClientSession) -> dict[str, RawDesk]:
    out = {}
    for name in DESKS:
        desk = RawDesk(http, world.relay.url, world.homes[name])
        desk.token = world.tokens[name]
        out[name] = desk
    return out


# --------------------------------------------------------------------------- helpers


def seal_to(sender: RawDesk, *to: RawDesk, **kwargs: Any) -> Envelope:
    now = now_ms()
    trust = sender.home.trust(now)
    return seal(kwargs.pop("report", None) or report(), sender=sender.secrets,
                recipients=[trust.verify_card(r.home.card(now), now) for r in to],
                severity="high", now=now, **kwargs)


def expect(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert ErrorFrame.decode(reply.body).error == code


async def not_stored(notice_id: bytes, sender: RawDesk, recipient: RawDesk) -> None:
    page = InboxPage.decode((await recipient.get("/v1/inbox?after=0&limit=500")).body)
    assert notice_id not in [e.notice_id for e in page.events]
    expect(await sender.get(f"/v1/notices/{notice_id.hex()}"), 404, "not_found")


def ws_url(world: World, query: str = "?after=0") -> str:
    return world.relay.url.replace("http://", "ws://") + "/v1/stream" + query


async def raw_http(world: World, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` bytes as is on a fresh connection; return (status, whole answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", world.relay.port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(-1), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    status = int(answer.split(b" ", 2)[1])
    return status, answer


# --------------------------------------------------------------------------- body size


async def _post_streaming(http: aiohttp.ClientSession, url: str, headers: dict[str, str],
                          size: int) -> Reply:
    """POST ``size`` bytes with chunked transfer encoding (no Content-Length)."""
    async def chunks() -> Any:
        for _ in range(size // 65536):
            yield b"\x00" * 65536

    try:
        async with http.post(url, data=chunks(), headers=headers) as r:
            return Reply(r.status, await r.read(), dict(r.headers))
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
        # The relay may stop reading once it has answered; the answer is what counts.
        raise AssertionError(f"the relay dropped the connection without an answer: {exc}") \
            from exc


@pytest.mark.parametrize("how", ["content_length_2mib", "chunked_2mib", "genuine_notice_70kib"])
async def test_body_over_limit_is_413(world: World, d: dict[str, RawDesk],
                                      http: aiohttp.ClientSession, how: str) -> None:
    """A notice body over the relay's limit is refused with 413 body_too_large."""
    us, cn = d["us.caisi"], d["cn.cac"]
    url = world.relay.url + "/v1/notices"
    headers = {"Content-Type": MSGPACK} | us.auth
    if how == "content_length_2mib":
        body = io.BytesIO(b"\x93" + b"\x00" * (2 * 1024 * 1024))
        async with http.post(url, data=body, headers=headers) as r:
            reply = Reply(r.status, await r.read(), dict(r.headers))
    elif how == "chunked_2mib":
        reply = await _post_streaming(http, url, headers, 2 * 1024 * 1024)
    else:
        big = report(attachments=(Attachment("dump.bin", "application/octet-stream",
                                             os.urandom(70 * 1024)),))
        env = seal_to(us, cn, report=big)
        assert len(env.raw) > MAX_NOTICE
        reply = await us.post("/v1/notices", env.raw)
        expect(reply, 413, "body_too_large")
        await not_stored(env.notice_id, us, cn)
    expect(reply, 413, "body_too_large")


@pytest.mark.parametrize("path", ["/v1/confirmations", "/v1/auth/challenge",
                                  "/v1/auth/session", "/v1/revocations"])
async def test_small_body_over_limit_is_413(d: dict[str, RawDesk], path: str) -> None:
    """Bodies of the other endpoints are capped at 64 KiB: 413 body_too_large."""
    us = d["us.caisi"]
    reply = await us.post(path, b"\x93" + b"\x00" * (MAX_SMALL + 1))
    expect(reply, 413, "body_too_large")


# --------------------------------------------------------------------------- encodings and types


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "gzip, identity"])
@pytest.mark.parametrize("path", ["/v1/notices", "/v1/auth/challenge"])
async def test_compressed_body_is_415(d: dict[str, RawDesk], encoding: str, path: str) -> None:
    """Any Content-Encoding (a gzip bomb included) is refused with 415 encoding_not_allowed."""
    us, cn = d["us.caisi"], d["cn.cac"]
    env = seal_to(us, cn)
    plain = env.raw if path == "/v1/notices" else ChallengeRequest(us.desk).encode()  # type: ignore[arg-type]
    body = {"gzip": gzip.compress(plain), "deflate": zlib.compress(plain)}.get(encoding, plain)
    reply = await us.post(path, body, headers={"Content-Encoding": encoding})
    expect(reply, 415, "encoding_not_allowed")
    # A 10 MiB zip bomb costs the relay nothing either.
    bomb = gzip.compress(b"\x00" * (10 * 1024 * 1024))
    expect(await us.post(path, bomb, headers={"Content-Encoding": "gzip"}),
           415, "encoding_not_allowed")
    await not_stored(env.notice_id, us, cn)


@pytest.mark.parametrize("content_type", [
    "application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "text/plain", "application/octet-stream", "application/msgpackx",
])
@pytest.mark.parametrize("path", ["/v1/notices", "/v1/confirmations", "/v1/auth/challenge"])
async def test_wrong_content_type_is_415(d: dict[str, RawDesk], content_type: str,
                                         path: str) -> None:
    """A body that is not application/msgpack is refused with 415 unsupported_media_type."""
    us, cn = d["us.caisi"], d["cn.cac"]
    env = seal_to(us, cn)
    body = env.raw if path != "/v1/auth/challenge" else ChallengeRequest(us.desk).encode()  # type: ignore[arg-type]
    reply = await us.post(path, body, headers={"Content-Type": content_type})
    expect(reply, 415, "unsupported_media_type")
    await not_stored(env.notice_id, us, cn)


# --------------------------------------------------------------------------- malformed msgpack


class Raw(bytes):
    """Bytes spliced verbatim into a hand-built msgpack map."""


def _enc(value: Any) -> bytes:
    return bytes(value) if isinstance(value, Raw) else msgpack.packb(value, use_bin_type=True)


def _map(pairs: list[tuple[Any, Any]]) -> bytes:
    n = len(pairs)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + n.to_bytes(2, "big")
    return head + b"".join(_enc(k) + _enc(v) for k, v in pairs)


def _header(env: Envelope, drop: str | None = None, extra: tuple[Any, Any] | None = None,
            **changes: Any) -> bytes:
    """The envelope with its header re-encoded with ``changes`` (signature left as it was)."""
    fields = msgpack.unpackb(env.header.raw, raw=False)
    pairs = [(k, changes.get(k, v)) for k, v in fields.items() if k != drop]
    if extra is not None:
        pairs.append(extra)
    return msgpack.packb([_map(pairs), env.ciphertext, env.signature], use_bin_type=True)


def _stanzas(env: Envelope, n: int) -> list[dict[str, Any]]:
    return [{"to": f"cn.d{i:02d}", "ek_kid": bytes([i + 1]) * 16, "wrapped": bytes([i + 1]) * 80}
            for i in range(n)]


def _first_stanza(env: Envelope, **changes: Any) -> list[dict[str, Any]]:
    s = env.header.stanzas[0]
    return [{"to": s.to, "ek_kid": s.ek_kid, "wrapped": s.wrapped} | changes]


def _outer(env: Envelope, *items: Any) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


#: name -> (build the body from a genuine envelope, the error code the relay must answer)
MALFORMED: dict[str, tuple[Callable[[Envelope], bytes], str]] = {
    "empty": (lambda e: b"", "truncated"),
    "truncated_by_one": (lambda e: e.raw[:-1], "truncated"),
    "truncated_half": (lambda e: e.raw[: len(e.raw) // 2], "truncated"),
    "trailing_byte": (lambda e: e.raw + b"\x00", "extra_data"),
    "trailing_envelope": (lambda e: e.raw + e.raw, "extra_data"),
    "reserved_c1": (lambda e: b"\xc1", "malformed"),
    "reserved_c1_first": (lambda e: b"\xc1" + e.raw[1:], "malformed"),
    "nested_5000": (lambda e: b"\x91" * 5000 + b"\xc0", "too_deep"),
    "nested_10": (lambda e: b"\x91" * 10 + b"\xc0", "too_deep"),
    "array_2pow32_minus_1": (lambda e: b"\xdd\xff\xff\xff\xff", "length_limit"),
    "map_2pow32_minus_1": (lambda e: b"\xdf\xff\xff\xff\xff", "length_limit"),
    "not_an_array": (lambda e: msgpack.packb({"header": e.header.raw}), "bad_type"),
    "two_elements": (lambda e: _outer(e, e.header.raw, e.ciphertext), "bad_value"),
    "signature_63": (lambda e: _outer(e, e.header.raw, e.ciphertext, e.signature[:63]),
                     "bad_value"),
    "signature_65": (lambda e: _outer(e, e.header.raw, e.ciphertext, e.signature + b"\x00"),
                     "bad_value"),
    "ext_type_5_outer": (lambda e: _outer(e, e.header.raw, msgpack.ExtType(5, b"abcd"),
                                          e.signature), "type_not_allowed"),
    "invalid_utf8_outer": (lambda e: b"\x93" + _enc(e.header.raw) + b"\xa2\xff\xfe"
                           + _enc(e.signature), "bad_utf8"),
    # Inside the signed header (checked before any signature).
    "header_truncated": (lambda e: _outer(e, e.header.raw[:-1], e.ciphertext, e.signature),
                         "truncated"),
    "header_trailing": (lambda e: _outer(e, e.header.raw + b"\xc0", e.ciphertext,
                                         e.signature), "extra_data"),
    "header_c1": (lambda e: _header(e, severity=Raw(b"\xc1")), "malformed"),
    "duplicate_key": (lambda e: _header(e, extra=("severity", "low")), "duplicate_key"),
    "int_map_key": (lambda e: _header(e, extra=(1, 1)), "bad_type"),
    "ext_type_5": (lambda e: _header(e, nonce=msgpack.ExtType(5, b"\x00" * 24)),
                   "type_not_allowed"),
    "timestamp_ext": (lambda e: _header(e, created_at=msgpack.Timestamp(now_ms() // 1000)),
                      "type_not_allowed"),
    "invalid_utf8": (lambda e: _header(e, **{"from": Raw(b"\xa8us.cais\xff")}), "bad_utf8"),
    "float_created_at": (lambda e: _header(e, created_at=float(e.header.created_at)),
                         "bad_type"),
    "nan_created_at": (lambda e: _header(e, created_at=math.nan), "bad_type"),
    "bool_created_at": (lambda e: _header(e, created_at=True), "bad_type"),
    "str_created_at": (lambda e: _header(e, created_at=str(e.header.created_at)), "bad_type"),
    "created_at_2pow64_minus_1": (lambda e: _header(e, created_at=2**64 - 1), "bad_value"),
    "created_at_negative": (lambda e: _header(e, created_at=-1), "bad_value"),
    "float_version": (lambda e: _header(e, v=1.0), "bad_type"),
    "bool_version": (lambda e: _header(e, v=True), "bad_type"),
    "unknown_field": (lambda e: _header(e, extra=("priority", "urgent")), "unknown_field"),
    "missing_field": (lambda e: _header(e, drop="kc"), "missing_field"),
    "version_0": (lambda e: _header(e, v=0), "unsupported_version"),
    # 3: past the newest envelope version (1 and 2 are both spoken).
    "version_3": (lambda e: _header(e, v=3), "unsupported_version"),
    "notice_id_15_bytes": (lambda e: _header(e, notice_id=b"\x01" * 15), "bad_value"),
    "notice_id_17_bytes": (lambda e: _header(e, notice_id=b"\x01" * 17), "bad_value"),
    "notice_id_all_zero": (lambda e: _header(e, notice_id=bytes(16)), "bad_value"),
    "kc_31_bytes": (lambda e: _header(e, kc=e.header.kc[:31]), "bad_value"),
    "nonce_23_bytes": (lambda e: _header(e, nonce=e.header.nonce[:23]), "bad_value"),
    "severity_unknown": (lambda e: _header(e, severity="apocalyptic"), "bad_value"),
    "sender_not_a_desk_id": (lambda e: _header(e, **{"from": "US.CAISI"}), "bad_value"),
    "recipients_33": (lambda e: _header(e, stanzas=_stanzas(e, 33)), "bad_recipients"),
    # 10,000 stanzas make the header itself too large: refused before anything is checked.
    # Past the 48 KiB header limit (a byte per item): refused on size, before decoding.
    "recipients_60000": (lambda e: _header(e, stanzas=[0] * 60_000), "too_large"),
    "recipients_4000": (lambda e: _header(e, stanzas=[0] * 4000), "bad_recipients"),
    "recipients_none": (lambda e: _header(e, stanzas=[]), "bad_recipients"),
    "recipient_twice": (lambda e: _header(e, stanzas=_first_stanza(e) * 2), "bad_recipients"),
    "recipient_is_sender": (lambda e: _header(e, stanzas=_first_stanza(e, to="us.caisi")),
                            "bad_recipients"),
    "stanza_wrapped_79": (lambda e: _header(e, stanzas=_first_stanza(e, wrapped=b"\x01" * 79)),
                          "bad_stanza"),
    "stanza_wrapped_81": (lambda e: _header(e, stanzas=_first_stanza(e, wrapped=b"\x01" * 81)),
                          "bad_stanza"),
    "stanza_ek_kid_15": (lambda e: _header(e, stanzas=_first_stanza(e, ek_kid=b"\x01" * 15)),
                         "bad_stanza"),
    "stanza_extra_field": (lambda e: _header(e, stanzas=_first_stanza(e, x=1)), "bad_stanza"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_notice_is_400_with_code(d: dict[str, RawDesk], case: str) -> None:
    """Each malformed notice body is refused with 400 and the code that names the fault."""
    us, cn = d["us.caisi"], d["cn.cac"]
    env = seal_to(us, cn)
    build, code = MALFORMED[case]
    body = build(env)
    assert len(body) <= MAX_NOTICE
    # Only the header over its 8 KiB cap is answered 413 (too_large); all else is 400.
    expect(await us.post("/v1/notices", body), 413 if code == "too_large" else 400, code)
    await not_stored(env.notice_id, us, cn)


@pytest.mark.parametrize("case", ["truncated_by_one", "trailing_byte", "reserved_c1",
                                  "nested_5000", "array_2pow32_minus_1"])
@pytest.mark.parametrize("path", ["/v1/confirmations", "/v1/auth/challenge",
                                  "/v1/auth/session", "/v1/revocations"])
async def test_malformed_small_body_is_400(d: dict[str, RawDesk], case: str, path: str) -> None:
    """The other endpoints' bodies go through the same strict decoder: 400 with the same code."""
    us, cn = d["us.caisi"], d["cn.cac"]
    build, code = MALFORMED[case]
    valid = ChallengeRequest(us.desk).encode()  # type: ignore[arg-type]
    body = build(seal_to(us, cn)) if case != "truncated_by_one" else valid[:-1]
    if case == "trailing_byte":
        body = valid + b"\x00"
    expect(await us.post(path, body), 400, code)


# --------------------------------------------------------------------------- paths and headers


@pytest.mark.parametrize("path", [
    "/v1/notices/zz",
    "/v1/notices/" + "a" * 33,
    "/v1/notices/" + "a" * 31,
    "/v1/notices/" + "A" * 32,
    "/v1/notices/" + "a" * 5000,
    "/v1/notices/..%2F..%2Frelay.key",
    "/v1/notices/%2e%2e",
    "/v1/notices/" + "a" * 31 + "%00",
    "/v1/notices/zz/status",
    "/v1/notices/" + "a" * 33 + "/status",
    "/v1/notices/..%2Finbox/status",
    "/v1/notices/../../etc/passwd",
    "/v1/notices/%2e%2e/%2e%2e/relay.key",
    "/v1/cards/..%2F..%2Frelay.key",
    "/v1/cards/" + "a" * 5000,
    "/v1/notices/" + "0" * 32,
])
async def test_bad_path_id_is_400_or_404(d: dict[str, RawDesk], http: aiohttp.ClientSession,
                                         path: str) -> None:
    """A notice id that is not 32 lower-case hex digits, or a traversal, gets 400 or 404."""
    us = d["us.caisi"]
    url = URL(us.url + path, encoded=True)
    async with http.get(url, headers=us.auth) as r:
        status, body = r.status, await r.read()
    assert status in (400, 404), (status, body[:200])
    code = ErrorFrame.decode(body).error
    assert code == ("bad_value" if status == 400 else "not_found")
    assert len(body) < 1024  # the error never echoes the long input back whole


async def test_oversize_headers_are_refused(world: World, d: dict[str, RawDesk],
                                            http: aiohttp.ClientSession) -> None:
    """A header or request line over 8 KiB, or over 128 headers, is refused (400/414/431)."""
    us = d["us.caisi"]
    long_line = us.auth | {"X-Padding": "a" * (9 * 1024)}
    async with http.get(world.relay.url + "/v1/inbox", headers=long_line) as r:
        assert r.status in (400, 431)
        assert len(await r.read()) < 1024
    many = us.auth | {f"X-H{i}": "1" for i in range(200)}
    async with http.get(world.relay.url + "/v1/inbox", headers=many) as r:
        assert r.status in (400, 431)
    long_token = {"Authorization": "Hotline " + "a" * (9 * 1024)}
    async with http.get(world.relay.url + "/v1/inbox", headers=long_token) as r:
        assert r.status in (400, 431)
    long_target = world.relay.url + "/v1/notices/" + "a" * (9 * 1024)
    async with http.get(long_target, headers=us.auth) as r:
        assert r.status in (400, 414, 431)
        assert len(await r.read()) < 1024
    assert (await us.get("/v1/inbox")).status == 200


@pytest.mark.parametrize("how", ["content_length_and_chunked", "two_content_lengths",
                                 "negative_content_length", "bad_chunk_size"])
async def test_request_smuggling_is_400(world: World, d: dict[str, RawDesk], how: str) -> None:
    """Ambiguous framing (Content-Length with chunked, conflicting lengths) is refused: 400."""
    us, cn = d["us.caisi"], d["cn.cac"]
    env = seal_to(us, cn)
    head = (b"POST /v1/notices HTTP/1.1\r\nHost: relay\r\nContent-Type: application/msgpack\r\n"
            b"Authorization: Hotline " + us.token.hex().encode() + b"\r\nConnection: close\r\n")
    n = len(env.raw)
    framing = {
        "content_length_and_chunked":
            b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (n, n)
            + env.raw + b"\r\n0\r\n\r\n",
        "two_content_lengths":
            b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (n, n + 1) + env.raw + b"\x00",
        "negative_content_length": b"Content-Length: -%d\r\n\r\n" % n + env.raw,
        "bad_chunk_size": b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + env.raw + b"\r\n0\r\n\r\n",
    }[how]
    status, _ = await raw_http(world, head + framing)
    assert status == 400
    await not_stored(env.notice_id, us, cn)


# --------------------------------------------------------------------------- rate limits


async def test_notices_over_rate_limit_are_429_with_retry_after(d: dict[str, RawDesk]) -> None:
    """A desk over its notices-per-minute bucket gets 429 rate_limited with Retry-After."""
    mss, cn, us = d["cn.mss"], d["cn.cac"], d["us.caisi"]
    for _ in range(5):
        assert (await mss.post("/v1/notices", seal_to(mss, cn).raw)).status == 201
    over = seal_to(mss, cn)
    reply = await mss.post("/v1/notices", over.raw)
    expect(reply, 429, "rate_limited")
    retry_after = reply.headers.get("Retry-After", "")
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 3600
    await not_stored(over.notice_id, mss, cn)
    # Another desk's bucket is its own.
    assert (await us.post("/v1/notices", seal_to(us, cn).raw)).status == 201


# --------------------------------------------------------------------------- WebSocket


async def _closed_with(ws: aiohttp.ClientWebSocketResponse) -> int:
    """Read until the relay closes the stream; return its close code."""
    for _ in range(100):
        msg = await ws.receive(timeout=5)
        if msg.type == aiohttp.WSMsgType.CLOSE:
            return int(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return int(ws.close_code or 0)
    raise AssertionError("the stream was never closed")


async def test_websocket_text_frame_is_closed_1003(world: World, d: dict[str, RawDesk],
                                                   http: aiohttp.ClientSession) -> None:
    """A text frame on a stream (binary msgpack only) closes it with 1003."""
    async with http.ws_connect(ws_url(world), headers=d["us.caisi"].auth) as ws:
        await ws.send_str('{"type": "ping"}')
        assert await _closed_with(ws) == 1003


async def test_websocket_frame_over_limit_is_closed_1009(world: World, d: dict[str, RawDesk],
                                                         http: aiohttp.ClientSession) -> None:
    """A frame bigger than the stream's message limit closes it with 1009."""
    async with http.ws_connect(ws_url(world), headers=d["us.caisi"].auth) as ws:
        await ws.send_bytes(b"\x00" * (MAX_NOTICE + 1024 + 1))
        assert await _closed_with(ws) == 1009


async def test_websocket_malformed_message_gets_error_and_stream_survives(
        world: World, d: dict[str, RawDesk], http: aiohttp.ClientSession) -> None:
    """A malformed binary message is answered with an error naming it; the stream stays usable."""
    async with http.ws_connect(ws_url(world), headers=d["us.caisi"].auth) as ws:
        for body, code in [(b"\xc1", "malformed"), (b"\x91" * 5000 + b"\xc0", "too_deep"),
                           (msgpack.packb({"v": 2, "type": "ping", "ref": 1,
                                           "confirmation": None}), "unsupported_version")]:
            await ws.send_bytes(body)
            m = await _next_reply(ws)
            assert (m["type"], m["error"]) == ("error", code)
        await ws.send_bytes(client_message("ping", 42))
        m = await _next_reply(ws)
        assert (m["type"], m["ref"]) == ("pong", 42)


async def _next_reply(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next message that is not a pushed event."""
    while True:
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        m = decode_relay_message(msg.data)
        if m["type"] != "event":
            return m


async def _close_code_from(reader: asyncio.StreamReader) -> int:
    """Read server frames (unmasked) until a close frame; return its code."""
    while True:
        b0, b1 = await asyncio.wait_for(reader.readexactly(2), 5)
        size = b1 & 0x7F
        if size == 126:
            size = int.from_bytes(await reader.readexactly(2), "big")
        elif size == 127:
            size = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(size)
        if b0 & 0x0F == 0x8:
            return int.from_bytes(payload[:2], "big")


async def test_websocket_compressed_frame_without_negotiation_is_closed(
        world: World, d: dict[str, RawDesk]) -> None:
    """A frame with the compression bit set on a stream that negotiated none is closed (1002)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", world.relay.port)
    try:
        writer.write(b"GET /v1/stream?after=0 HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Authorization: Hotline " + d["us.caisi"].token.hex().encode() + b"\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head[:200]
        assert b"permessage-deflate" not in head.lower()
        payload, mask = client_message("ping", 1), os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        writer.write(bytes([0x80 | 0x40 | 0x2, 0x80 | len(payload)]) + mask + masked)
        await writer.drain()
        # The relay answers with a close frame carrying 1002 (it may push events before).
        assert await _close_code_from(reader) == 1002
    finally:
        writer.close()
        await writer.wait_closed()


async def test_too_many_streams_per_desk_is_429(world: World, d: dict[str, RawDesk],
                                                http: aiohttp.ClientSession) -> None:
    """A desk's third concurrent stream (the limit is 2) is refused with 429 rate_limited."""
    cn = d["cn.cac"]
    first = await http.ws_connect(ws_url(world), headers=cn.auth)
    second = await http.ws_connect(ws_url(world), headers=cn.auth)
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await http.ws_connect(ws_url(world), headers=cn.auth)
        assert exc.value.status == 429
        reply = await cn.get("/v1/stream?after=0")  # the same refusal, with its error frame
        expect(reply, 429, "rate_limited")
        assert reply.headers.get("Retry-After", "").isdigit()
        # Another desk is not affected by cn.cac's streams.
        async with http.ws_connect(ws_url(world), headers=d["cn.mss"].auth):
            pass
    finally:
        await first.close()
    # Once one closes, a new stream is allowed again.
    for _ in range(50):
        try:
            third = await http.ws_connect(ws_url(world), headers=cn.auth)
            break
        except aiohttp.WSServerHandshakeError:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("a closed stream never freed its slot")
    await third.close()
    await second.close()


# --------------------------------------------------------------------------- and afterwards


async def test_relay_still_serves_honest_desks_and_never_failed(world: World,
                                                                d: dict[str, RawDesk]) -> None:
    """After all of the above the relay accepts an honest notice and never answered 500."""
    us, cn = d["us.caisi"], d["cn.cac"]
    env = seal_to(us, cn)
    assert (await us.post("/v1/notices", env.raw)).status == 201
    page = InboxPage.decode((await cn.get("/v1/inbox?after=0&limit=500")).body)
    assert env.raw in [e.envelope for e in page.events]
    assert world.relay.proc is not None and world.relay.proc.poll() is None
    assert not world.relay.events("request.failed")


# --------------------------------------------------------------------------- stream messages


async def test_stream_submissions_keep_every_limit(tmp_path: Path,
                                                   http: aiohttp.ClientSession) -> None:
    """Notices and confirmations sent on a stream meet the limits of the HTTP API, answered
    with the same codes and statuses, and the stream survives each refusal: a notice over
    the notice limit (413), a confirmation over 64 KiB (413), a message carrying the wrong
    part (400), a desk over its notice rate (429, nothing stored); 200 pipelined messages
    are all answered, by ref."""
    homes = make_federation(tmp_path, DESKS)
    relay = RelayProcess.create(tmp_path, env={
        "HOTLINE_RELAY_LIMITS_MAX_NOTICE_BYTES": str(MAX_NOTICE),
        "HOTLINE_RELAY_LIMITS_NOTICES_PER_MINUTE": "3",
    })
    relay.start()
    try:
        us = await RawDesk(http, relay.url, homes["us.caisi"]).login()
        cn = await RawDesk(http, relay.url, homes["cn.cac"]).login()
        async with http.ws_connect(relay.url.replace("http://", "ws://") + "/v1/stream",
                                   headers=us.auth, max_msg_size=0) as ws:
            # (message, status, ref of the answer: 0 where the message itself did not decode)
            refusals = [
                (client_message("submit", 1, notice=b"\x00" * (MAX_NOTICE + 1)), 413, 1),
                (client_message("confirm", 2, confirmation=b"\x00" * (MAX_SMALL + 1)), 413, 0),
                (client_message("submit", 3, confirmation=b"\x90"), 400, 0),
                (client_message("confirm", 4, notice=b"\x90"), 400, 0),
                (client_message("submit", 5), 400, 0),
                (client_message("submit", 6, notice=b"\x93\xc4\x00"), 400, 6),
            ]
            for message, status, ref in refusals:
                await ws.send_bytes(message)
                m = await _next_reply(ws)
                assert (m["type"], m["status"], m["ref"]) == ("error", status, ref), m
                assert m["error"] and m["detail"], m
            sent = [seal_to(us, cn) for _ in range(4)]
            for i, env in enumerate(sent):
                await ws.send_bytes(client_message("submit", 10 + i, notice=env.raw))
            # Handled concurrently: the answers may come in any order; the fourth notice is
            # over the rate (3 a minute), whichever of them the relay took up last.
            by_ref = {}
            while len(by_ref) < 4:
                m = await _next_reply(ws)
                by_ref[m["ref"]] = m
            outcomes = sorted((m["type"], m["status"], m["error"]) for m in by_ref.values())
            assert outcomes == [("accepted", 0, None)] * 3 + [("error", 429, "rate_limited")]
            refused = [sent[r - 10] for r, m in by_ref.items() if m["type"] == "error"]
            for i in range(200):
                await ws.send_bytes(client_message("ping", 1000 + i))
            refs = set()
            while len(refs) < 200:
                m = await _next_reply(ws)
                assert m["type"] == "pong", m
                refs.add(m["ref"])
            assert refs == set(range(1000, 1200))
        page = InboxPage.decode((await cn.get("/v1/inbox?after=0&limit=500")).body)
        stored = {e.notice_id for e in page.events}
        assert {e.notice_id for e in sent if e not in refused} <= stored
        assert refused[0].notice_id not in stored
        assert not relay.events("stream.message_failed")
    finally:
        relay.stop()
