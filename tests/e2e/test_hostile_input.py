"""One desk or one unauthenticated address cannot freeze the relay or exhaust its memory.

Each attack runs against a real relay process; memory is its peak resident set (VmHWM,
reset through /proc/<pid>/clear_refs before each attack), not a timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import nacl.signing
import pytest
from yarl import URL

from client.client import HotlineClient
from client.items import ReceivedNotice
from keys import Envelope, seal
from keys.frames import (
    ChallengeRequest,
    ErrorFrame,
    InboxPage,
    client_message,
    decode_relay_message,
)
from keys.report import DEFAULT_MAX_NOTICE_BYTES, Attachment
from tests.e2e.test_escalation_e2e import operator_login
from tests.factory import report
from tests.relay_harness import PASSPHRASE, RawDesk, RelayProcess, make_federation, now_ms

DESKS = ("us.caisi", "cn.cac")
MIB = 1024 * 1024
MSGPACK = {"Content-Type": "application/msgpack"}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., RelayProcess]]:
    """Start a relay with the given environment (limits) and relay.toml additions;
    stopped after the test."""
    make_federation(tmp_path, DESKS)
    procs: list[RelayProcess] = []

    def run(env: dict[str, str], toml: str = "") -> RelayProcess:
        proc = RelayProcess.create(tmp_path, env=env)
        if toml:
            with open(proc.home / "relay.toml", "a") as fh:
                fh.write("\n" + toml)
        proc.start()
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        proc.stop()


def _reset_peak(relay: RelayProcess) -> None:
    assert relay.proc is not None
    Path(f"/proc/{relay.proc.pid}/clear_refs").write_text("5")


def _peak_mib(relay: RelayProcess) -> float:
    assert relay.proc is not None
    for line in Path(f"/proc/{relay.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _rss_mib(relay: RelayProcess) -> float:
    assert relay.proc is not None
    for line in Path(f"/proc/{relay.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def empty_maps(size: int) -> bytes:
    """About ``size`` bytes of msgpack: arrays of 4096 empty maps (each container within
    the 4096-entry limit; one map per byte)."""
    inner = b"\xdd" + (4096).to_bytes(4, "big") + b"\x80" * 4096
    count = size // len(inner)
    return b"\xdd" + count.to_bytes(4, "big") + inner * count


async def _post_large(desk: RawDesk, path: str, body: bytes) -> int:
    """POST a large body (from a BytesIO, as aiohttp wants); the answer's status."""
    async with desk.http.post(desk.url + path, data=io.BytesIO(body),
                              headers=MSGPACK | desk.auth) as r:
        await r.read()
        return r.status


async def _desk(http: aiohttp.ClientSession, relay: RelayProcess, name: str) -> RawDesk:
    return await RawDesk(http, relay.url, relay.home.parent / name).login()


# --------------------------------------------------------------------------- item: decoding


async def test_empty_map_bodies_are_charged_before_decoding_and_cost_no_memory(
        start: Callable[..., RelayProcess], http: aiohttp.ClientSession) -> None:
    """8 MiB bodies of empty maps posted as notices: each costs the desk its bytes before
    any decoding (the third is over a 20 MiB-a-minute budget: 429), is refused without
    being decoded into millions of dicts, and the relay's peak memory barely moves."""
    relay = start({"HOTLINE_RELAY_LIMITS_BYTES_PER_MINUTE": str(20 * MIB)})
    us = await _desk(http, relay, "us.caisi")
    body = empty_maps(DEFAULT_MAX_NOTICE_BYTES - 64 * 1024)
    _reset_peak(relay)
    base = _rss_mib(relay)
    statuses = [await _post_large(us, "/v1/notices", body) for _ in range(4)]
    assert statuses == [400, 400, 429, 429], statuses
    assert _peak_mib(relay) - base < 120, (base, _peak_mib(relay))


async def test_empty_map_stream_messages_are_charged_before_decoding(
        start: Callable[..., RelayProcess], http: aiohttp.ClientSession) -> None:
    """The same attack on the stream: every message is charged before it is decoded, the
    refusals come back as error messages, and memory stays flat."""
    relay = start({"HOTLINE_RELAY_LIMITS_BYTES_PER_MINUTE": str(20 * MIB)})
    us = await _desk(http, relay, "us.caisi")
    body = empty_maps(DEFAULT_MAX_NOTICE_BYTES - 64 * 1024)
    _reset_peak(relay)
    base = _rss_mib(relay)
    async with http.ws_connect(relay.url.replace("http", "ws") + "/v1/stream?after=0",
                               headers=us.auth) as ws:
        statuses = []
        for _ in range(4):
            await ws.send_bytes(body)
            msg = await ws.receive(timeout=60)
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            answer = decode_relay_message(msg.data)
            assert answer["type"] == "error"
            statuses.append(answer["status"])
    assert statuses == [400, 400, 429, 429], statuses
    assert _peak_mib(relay) - base < 120, (base, _peak_mib(relay))


async def test_unauthenticated_empty_map_body_is_refused_for_its_value_count(
        start: Callable[..., RelayProcess], http: aiohttp.ClientSession) -> None:
    """Before login, a 64 KiB challenge request whose desk field is 60,000 empty maps is
    refused for holding too many values (at most 256 are decoded), not after decoding."""
    relay = start({})
    body = b"\x82\xa1v\x01\xa4desk" + empty_maps(60 * 1024)
    async with http.post(relay.url + "/v1/auth/challenge", data=body, headers=MSGPACK) as r:
        assert r.status == 400
        frame = ErrorFrame.decode(await r.read())
    assert frame.error == "length_limit", frame
    async with http.post(relay.url + "/v1/auth/challenge", headers=MSGPACK,
                         data=ChallengeRequest("us.caisi").encode()) as r:
        assert r.status == 200


# --------------------------------------------------------------------------- item: pages


def _large_notice(sender: RawDesk, to: RawDesk, index: int) -> Envelope:
    now = now_ms()
    trust = sender.home.trust(now)
    data = os.urandom(DEFAULT_MAX_NOTICE_BYTES - 256 * 1024)
    big = report(title=f"large notice {index}",
                 attachments=(Attachment("dump.bin", "application/octet-stream", data),))
    return seal(big, sender=sender.secrets, recipients=[trust.verify_card(to.home.card(now), now)],
                severity="high", now=now)


@pytest.mark.parametrize("cut", ["relay_cuts_by_bytes", "relay_does_not_cut"])
async def test_ten_maximum_size_notices_do_not_jam_the_recipients_inbox(
        start: Callable[..., RelayProcess], http: aiohttp.ClientSession, cut: str) -> None:
    """A peer sends ten notices of nearly 8 MiB (within its limits). The recipient's
    client still fetches all of them: pages are cut by bytes (each large notice on its
    own page), and against a relay that does not cut them (a 1 GiB budget here) the
    client asks for an over-large page again one event at a time. Neither the inbox
    polls nor four stream replays from the start grow the relay's peak memory by more
    than a few notices when the relay cuts by bytes."""
    cuts = cut == "relay_cuts_by_bytes"
    relay = start({} if cuts else {"HOTLINE_RELAY_LIMITS_MAX_PAGE_BYTES": str(1 << 30)})
    us, cn = await _desk(http, relay, "us.caisi"), await _desk(http, relay, "cn.cac")
    sent = []
    for i in range(10):
        env = _large_notice(us, cn, i)
        assert len(env.raw) <= DEFAULT_MAX_NOTICE_BYTES
        assert await _post_large(us, "/v1/notices", env.raw) == 201
        sent.append(env.notice_id)
        del env
    _reset_peak(relay)
    base = _rss_mib(relay)
    # The raw page: cut by bytes, at least one event, and `more` set until the end.
    if cuts:
        page = InboxPage.decode((await cn.get("/v1/inbox?after=0&limit=500")).body)
        assert len(page.events) == 1 and page.more
    # The real client pages through everything.
    home = relay.home.parent / "cn.cac"
    async with HotlineClient.from_home(home, PASSPHRASE, relays=[relay.url]) as client:
        items = await asyncio.wait_for(client.fetch(), 120)
    got = [i.notice_id for i in items if isinstance(i, ReceivedNotice)]
    assert sorted(got) == sorted(sent), (len(got), len(items))
    if not cuts:
        return  # the client coped; the relay's memory is what cutting by bytes saves
    # Four replays of the whole stream.
    for _ in range(4):
        async with http.ws_connect(relay.url.replace("http", "ws") + "/v1/stream?after=0",
                                   headers=cn.auth, max_msg_size=0) as ws:
            seen = 0
            while seen < 10:
                msg = await ws.receive(timeout=60)
                assert msg.type == aiohttp.WSMsgType.BINARY, msg
                if decode_relay_message(msg.data)["type"] == "event":
                    seen += 1
    assert _peak_mib(relay) - base < 120, (base, _peak_mib(relay))


# --------------------------------------------------------------------------- item: bodies


async def _open(relay: RelayProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", relay.port)


async def _answer_status(reader: asyncio.StreamReader, timeout: float) -> int:
    line = await asyncio.wait_for(reader.readline(), timeout)
    assert line.startswith(b"HTTP/1.1 "), line
    return int(line.split()[1])


async def test_chunked_body_past_the_limit_is_refused_while_still_arriving(
        start: Callable[..., RelayProcess]) -> None:
    """An unauthenticated chunked body is cut with 413 once past the route's 64 KiB,
    while the client is still sending: it is not buffered up to 8 MiB first."""
    relay = start({})
    reader, writer = await _open(relay)
    try:
        writer.write(b"POST /v1/auth/challenge HTTP/1.1\r\nHost: relay\r\n"
                     b"Content-Type: application/msgpack\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % 65536 + b"\x00" * 65536 + b"\r\n"
        for _ in range(3):  # 192 KiB, never the final chunk
            writer.write(chunk)
            await writer.drain()
        assert await _answer_status(reader, 10) == 413
    finally:
        writer.close()


async def test_trickled_body_is_cut_by_the_body_timeout(
        start: Callable[..., RelayProcess]) -> None:
    """A body that never finishes arriving is answered 408 body_timeout after
    limits.body_timeout_s (1 s here), not held for as long as the client likes."""
    relay = start({"HOTLINE_RELAY_LIMITS_BODY_TIMEOUT_S": "1"})
    reader, writer = await _open(relay)
    started = time.monotonic()
    try:
        writer.write(b"POST /v1/auth/challenge HTTP/1.1\r\nHost: relay\r\n"
                     b"Content-Type: application/msgpack\r\nContent-Length: 1000\r\n\r\n\x82")
        await writer.drain()
        assert await _answer_status(reader, 15) == 408
    finally:
        writer.close()
    assert time.monotonic() - started < 10


async def test_second_request_trickling_its_headers_is_cut_by_the_header_timeout(
        start: Callable[..., RelayProcess]) -> None:
    """On a kept-alive connection, a second request whose headers trickle in is cut after
    the header timeout (1 s here), not after the 30 s keep-alive timeout."""
    relay = start({"HOTLINE_RELAY_LIMITS_HEADER_TIMEOUT_S": "1"})
    reader, writer = await _open(relay)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        await writer.drain()
        assert await _answer_status(reader, 10) == 200
        while (await asyncio.wait_for(reader.readline(), 10)) != b"\r\n":
            pass
        await asyncio.wait_for(reader.readexactly(len(b'{"status": "ok"}')), 10)
        started = time.monotonic()
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow: " + b"a" * 200:
            try:
                writer.write(bytes([byte]))
                await writer.drain()
                if await asyncio.wait_for(reader.read(1), 0.1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
        assert closed, "the trickling request was never cut"
        assert time.monotonic() - started < 12
    finally:
        writer.close()
    assert relay.events("http.header_timeout")


# --------------------------------------------------------------------------- item: smaller


async def test_non_ascii_or_huge_integer_parameters_are_400(
        start: Callable[..., RelayProcess], http: aiohttp.ClientSession) -> None:
    """'²', '①', an Arabic-Indic one, 5000 nines, a minus: integer parameters of the
    operator and desk routes take ASCII digits within bounds only (400 bad_value, never
    500 and never read as another number)."""
    key = nacl.signing.SigningKey.generate()
    relay = start({}, f'[operators]\n"ops.test" = "{bytes(key.verify_key).hex()}"\n')
    status, token = await operator_login(http, relay.url, "ops.test", key)
    assert status == 200
    ops = {"Authorization": "Hotline " + token.hex()}
    desk = await _desk(http, relay, "us.caisi")
    for value in ("%C2%B2", "%E2%91%A0", "%D9%A1", "9" * 5000, "-1", "0x1"):
        for path, auth in (("/v1/ops/overdue?limit=", ops), ("/v1/ops/escalations?since=", ops),
                           ("/v1/ops/escalations?limit=", ops), ("/v1/inbox?after=", desk.auth),
                           ("/v1/inbox?limit=", desk.auth)):
            url = URL(relay.url + path + value, encoded=True)
            async with http.get(url, headers=auth) as r:
                assert r.status == 400, (path, value[:20], r.status)
                assert ErrorFrame.decode(await r.read()).error == "bad_value"
    async with http.get(relay.url + "/v1/ops/overdue?limit=10", headers=ops) as r:
        assert r.status == 200  # control


async def test_malformed_http_is_answered_with_the_error_frame_and_one_log_line(
        start: Callable[..., RelayProcess]) -> None:
    """30 requests the HTTP parser refuses get the error frame (msgpack, http_error),
    each logged as one JSON event, rate-limited; no traceback reaches the output."""
    relay = start({})
    for i in range(30):
        reader, writer = await _open(relay)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nContent-Length: x%d\r\n\r\n"
                         % i)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(-1), 10)
        finally:
            writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ", 2)[1] == b"400", head
        assert b"application/msgpack" in head.lower(), head
        assert ErrorFrame.decode(body).error == "http_error"
    await asyncio.sleep(0.5)
    raw = [x for x in relay.lines if x.get("event") == "raw"]
    assert not raw, raw[:12]
    logged = relay.events("http.bad_request")
    assert 1 <= len(logged) <= 25, len(logged)


def _ws_handshake(port: int, token: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /v1/stream?after=0 HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\nAuthorization: Hotline " + token.hex().encode()
                 + b"\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_unmasked_client_websocket_frame_closes_the_connection(
        start: Callable[..., RelayProcess], http: aiohttp.ClientSession) -> None:
    """A client frame without the mask bit (RFC 6455 5.1) is not answered: the relay
    closes the connection. A masked ping on another stream is answered (control)."""
    relay = start({})
    us = await _desk(http, relay, "us.caisi")
    ping = client_message("ping", 7)
    loop = asyncio.get_running_loop()

    def exchange(masked: bool) -> bytes:
        sock = _ws_handshake(relay.port, us.token)
        try:
            if masked:
                mask = b"\x01\x02\x03\x04"
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(ping))
                sock.sendall(bytes([0x82, 0x80 | len(ping)]) + mask + payload)
            else:
                sock.sendall(bytes([0x82, len(ping)]) + ping)
            out = b""
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    out += data
                    if b"pong" in out:
                        break
            return out
        finally:
            sock.close()

    assert b"pong" in await loop.run_in_executor(None, exchange, True)
    assert b"pong" not in await loop.run_in_executor(None, exchange, False)
    assert relay.events("stream.unmasked_frame")
