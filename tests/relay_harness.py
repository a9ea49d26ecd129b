"""Real relay processes on loopback, and desks that speak the raw HTTP API, for tests.

``RelayProcess`` runs ``hotline relay serve`` as a child process on 127.0.0.1 with a free
port (the relay binds port 0 and logs the port it got); tests can SIGKILL and restart it.
``RawDesk`` logs in with a desk home's keys and sends raw bytes, so attacks can be built
byte by byte.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from client.demo import setup_federation
from client.home import Home
from keys import DeskSecrets, RelayCard
from keys.frames import (
    Accepted,
    Challenge,
    ChallengeRequest,
    ErrorFrame,
    Session,
    SessionRequest,
    auth_message,
    client_message,
    decode_relay_message,
)

PASSPHRASE = "test passphrase"
MSGPACK = {"Content-Type": "application/msgpack"}
TEST_ENV = {"HOTLINE_PASSPHRASE": PASSPHRASE, "HOTLINE_TEST_FAST_KDF": "1"}


@contextlib.contextmanager
def test_env() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in TEST_ENV}
    os.environ.update(TEST_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_federation(base: Path, desks: tuple[str, ...], *,
                    classical: tuple[str, ...] = (),
                    hybrid_required_from: int | None = None) -> dict[str, Path]:
    """Authorities, a signed root and certified desks under ``base`` (fast test keys);
    hybrid encryption keys except for the desks named in ``classical``."""
    with test_env():
        return setup_federation(base, desks, say=False, classical=classical,
                                hybrid_required_from=hybrid_required_from)


@dataclass
class RelayProcess:
    """A relay child process. ``start()`` returns once it listens."""

    home: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[str] | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @classmethod
    def create(cls, base: Path, *, env: dict[str, str] | None = None) -> RelayProcess:
        home = base / "relay"
        from client.cli.main import main

        with test_env():
            code = main(["relay", "init", "--home", str(home), "--root",
                         str(base / "federation.root"), "--id", "test-relay"])
        assert code == 0, "relay init failed"
        return cls(home, dict(env or {}))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0, extra_env: dict[str, str] | None = None) -> None:
        listen = f"127.0.0.1:{self.port}"
        env = dict(os.environ) | TEST_ENV | self.env | (extra_env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from client.cli.main import main; raise SystemExit(main())",
             "relay", "serve", "--home", str(self.home), "--listen", listen],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            cwd=str(Path(__file__).resolve().parent.parent))
        listening = threading.Event()

        def read(proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = {"event": "raw", "line": line.rstrip()}
                self.lines.append(entry)
                if entry.get("event") == "relay.listening":
                    self.port = int(entry["port"])
                    listening.set()

        self._reader = threading.Thread(target=read, args=(self.proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not listening.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("relay did not start:\n" + "\n".join(
                    json.dumps(x) for x in self.lines[-20:]))

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; what was committed must survive."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close_pipe()

    def restart(self) -> None:
        self.kill()
        self.start()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [x for x in self.lines if x.get("event") == name]


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def error(self) -> ErrorFrame:
        return ErrorFrame.decode(self.body)


class RawDesk:
    """A desk that logs in with its home's keys and sends raw requests."""

    def __init__(self, http: aiohttp.ClientSession, url: str, home: Path) -> None:
        self.http = http
        self.url = url
        self.home = Home(home)
        with test_env():
            self.secrets: DeskSecrets = self.home.desk_secrets(PASSPHRASE.encode())
        self.desk = self.secrets.desk
        self.token = b""
        self.relay_card: RelayCard | None = None
        #: "stream": notices and confirmations are sent on a WebSocket stream (``submit``,
        #: ``confirm``) and the answer is turned into the HTTP reply it stands for.
        self.transport = "http"
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ws_token = b""
        self._refs = 0

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": "Hotline " + self.token.hex()}

    async def login(self) -> RawDesk:
        now = now_ms()
        r = await self.post("/v1/auth/challenge", ChallengeRequest(self.desk).encode(), auth=False)
        assert r.status == 200, r.error
        ch = Challenge.decode(r.body)
        sig = self.secrets.identity.sign(
            auth_message(ch.origin, self.desk, self.secrets.ik_kid, ch.nonce, now)).signature
        req = SessionRequest(self.desk, self.home.card(now).encode(), ch.nonce, now, sig)
        r = await self.post("/v1/auth/session", req.encode(), auth=False)
        assert r.status == 200, r.error
        session = Session.decode(r.body)
        self.token = session.token
        self.relay_card = RelayCard.decode(session.relay_card)
        return self

    async def post(self, path: str, body: bytes, *, auth: bool = True,
                   headers: dict[str, str] | None = None) -> Reply:
        if (self.transport == "stream" and auth and headers is None
                and path in ("/v1/notices", "/v1/confirmations")):
            return await self.stream_post(path, body)
        h = MSGPACK | (self.auth if auth else {}) | (headers or {})
        return await self._request("POST", path, body, h)

    async def stream_post(self, path: str, body: bytes) -> Reply:
        """Send what ``POST path`` would on this desk's stream; the answer as a Reply with
        the status and body the HTTP API gives (201/200 + Accepted, or an error frame)."""
        if self._ws is None or self._ws.closed or self._ws_token != self.token:
            await self.close_stream()
            self._ws = await self.http.ws_connect(
                self.url + "/v1/stream?after=999999999999999", headers=self.auth,
                max_msg_size=0)
            self._ws_token = self.token
        self._refs += 1
        ref = self._refs
        if path == "/v1/notices":
            await self._ws.send_bytes(client_message("submit", ref, notice=body))
        else:
            await self._ws.send_bytes(client_message("confirm", ref, confirmation=body))
        while True:
            msg = await self._ws.receive(timeout=20)
            if msg.type != aiohttp.WSMsgType.BINARY:
                raise AssertionError(f"the stream ended: {msg.type} {msg.data!r:.100}")
            m = decode_relay_message(msg.data)
            if m["type"] == "event" or m["ref"] != ref:
                continue
            if m["type"] == "error":
                assert m["status"] >= 400, m
                return Reply(m["status"], ErrorFrame(m["error"], m["detail"] or "", "").encode(),
                             {})
            assert m["type"] == ("accepted" if path == "/v1/notices" else "confirmed"), m
            status = 200 if m["duplicate"] or path != "/v1/notices" else 201
            return Reply(status, Accepted(m["attestation"], m["duplicate"]).encode(), {})

    async def close_stream(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    async def get(self, path: str, *, auth: bool = True) -> Reply:
        return await self._request("GET", path, None, self.auth if auth else {})

    async def _request(self, method: str, path: str, body: bytes | None,
                       headers: dict[str, str]) -> Reply:
        # A pooled connection to a relay that was killed fails once; try a fresh one.
        for attempt in (1, 2):
            try:
                async with self.http.request(method, self.url + path, data=body,
                                             headers=headers) as r:
                    return Reply(r.status, await r.read(), dict(r.headers))
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
