"""Live views say where they stand: `hotline watch` and `hotline ops watch` against a relay
that goes down and comes back, one that is not there, and one that is not a relay."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client.cli.main import main
from client.client import HotlineClient
from tests import relay_harness
from tests.factory import report
from tests.relay_harness import PASSPHRASE, TEST_ENV, RelayProcess

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 60.0


class Live:
    """A ``hotline`` child process whose stdout and stderr lines are collected as they come."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "client.cli.main", *argv], cwd=ROOT, text=True,
            env=dict(os.environ) | TEST_ENV | env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.seen: list[tuple[str, str]] = []
        self.readers = [threading.Thread(target=self._read, args=(name, pipe), daemon=True)
                        for name, pipe in (("out", self.proc.stdout), ("err", self.proc.stderr))]
        for reader in self.readers:
            reader.start()

    def _read(self, name: str, pipe: Any) -> None:
        for text in pipe:
            self.lines.put((name, text.rstrip("\n")))

    def wait_for(self, test: Callable[[str, str], bool], what: str) -> str:
        """The first line (not seen before) for which ``test(stream, line)`` holds."""
        deadline = time.monotonic() + WAIT_S
        for name, text in self.seen:
            if test(name, text):
                self.seen.remove((name, text))
                return text
        while True:
            try:
                name, text = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise AssertionError(f"no {what}; got: {self.seen[-30:]}") from None
            if test(name, text):
                return text
            self.seen.append((name, text))

    def json_item(self, **fields: object) -> dict[str, Any]:
        def matches(name: str, text: str) -> bool:
            if name != "out" or not text.startswith("{"):
                return False
            item = json.loads(text)
            return all(item.get(k) == v for k, v in fields.items())

        return dict(json.loads(self.wait_for(matches, f"JSON item {fields}")))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for reader in self.readers:
            reader.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def live() -> Iterator[Callable[..., Live]]:
    started: list[Live] = []

    def start(*argv: str, **env: str) -> Live:
        started.append(Live(list(argv), env))
        return started[-1]

    yield start
    for p in started:
        p.stop()


def _desk(federation: dict[str, Path], relay: RelayProcess, name: str) -> HotlineClient:
    return HotlineClient.from_home(federation[name], PASSPHRASE, relays=[relay.url])


async def _send(federation: dict[str, Path], relay: RelayProcess, n: int = 1,
                severity: str = "high") -> list[str]:
    async with _desk(federation, relay, "us.caisi") as us:
        return [(await us.send(to=["cn.cac"], severity=severity, notice=report(
            title=f"notice {i}"))).notice_id.hex() for i in range(n)]


async def test_desk_watch_says_connected_lost_retrying_reconnected_and_caught_up(
        federation: dict[str, Path], relay: RelayProcess, live: Callable[..., Live]) -> None:
    """The backlog that waited is counted ("caught up on 3 events"); a relay restart is
    "lost", "retrying in N s", "reconnected"; a notice sent after it still arrives."""
    waiting = await _send(federation, relay, 3)
    watch = live("watch", "--json", "--count", "4", "--home", str(federation["cn.cac"]),
                 HOTLINE_RELAY=relay.url)
    assert watch.json_item(event="connection", state="connected")["url"] == relay.url
    got = [watch.json_item(event="notice")["notice_id"] for _ in waiting]
    assert sorted(got) == sorted(waiting)
    assert watch.json_item(event="connection", state="caught_up")["events"] == 3

    relay.kill()
    assert watch.json_item(event="connection", state="lost")["reason"]
    retry = watch.json_item(event="connection", state="retrying")
    assert retry["wait_s"] > 0 and retry["failures"] >= 1
    relay.start()
    watch.json_item(event="connection", state="reconnected")
    (late,) = await _send(federation, relay, 1)
    assert watch.json_item(event="notice")["notice_id"] == late
    assert watch.proc.wait(WAIT_S) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_desk_watch_against_a_relay_that_is_not_there_says_it_is_retrying(
        federation: dict[str, Path], live: Callable[..., Live]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    watch = live("watch", "--home", str(federation["cn.cac"]), "--relay", url)
    first = watch.wait_for(lambda name, text: name == "err" and "retrying in" in text,
                           "retrying line")
    assert re.search(rf"cannot reach {re.escape(url)} .*; retrying in [0-9.]+ s", first)
    assert watch.proc.poll() is None  # it keeps trying; nothing a retry cannot fix


class _NotARelay(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_desk_watch_against_a_server_that_is_not_a_relay_exits_non_zero(
        federation: dict[str, Path], live: Callable[..., Live]) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotARelay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        watch = live("watch", "--home", str(federation["cn.cac"]), "--relay", url)
        assert watch.proc.wait(WAIT_S) == 1
        error = watch.wait_for(lambda name, text: name == "err" and "hotline:" in text,
                               "error line")
        assert "404" in error
    finally:
        server.shutdown()
        server.server_close()


def _operator(tmp_path: Path, relay: RelayProcess, policy: str) -> Path:
    home = tmp_path / "ops"
    out = io.StringIO()
    with relay_harness.test_env():
        with contextlib.redirect_stdout(out):
            assert main(["ops", "init", "--name", "ops.test", "--home", str(home)]) == 0
    (entry,) = [x for x in out.getvalue().splitlines() if x.startswith('"ops.test"')]
    with open(relay.home / "relay.toml", "a") as fh:
        fh.write(f"\n{policy}\n[operators]\n{entry}\n")
    return home


async def test_ops_watch_reconnects_after_the_relay_restarts_and_shows_what_it_missed(
        tmp_path: Path, federation: dict[str, Path], relay: RelayProcess,
        live: Callable[..., Live]) -> None:
    """The relay goes down while a deadline runs and escalates it when it comes back:
    the operator's view says lost / retrying / reconnected and shows that escalation
    exactly once (from the history or live), instead of exiting with status 0."""
    ops_home = _operator(tmp_path, relay, '[policy.critical]\nack_window = "2s"\n'
                         'repeat_every = "1h"\nmax_level = 1\n')
    relay.restart()
    watch = live("ops", "watch", "--json", "--count", "1", "--home", str(ops_home),
                 "--relay", relay.url)
    watch.json_item(event="connection", state="connected")
    started = time.time()
    (nid,) = await _send(federation, relay, 1, severity="critical")
    relay.kill()
    watch.json_item(event="connection", state="lost")
    assert watch.json_item(event="connection", state="retrying")["wait_s"] > 0
    time.sleep(max(0.0, started + 3.0 - time.time()))  # the deadline passes while it is down
    relay.start()
    watch.json_item(event="connection", state="reconnected")
    record = watch.json_item(event="notice.escalated")
    assert record["notice_id"] == nid and record["level"] == 1
    assert watch.proc.wait(WAIT_S) == 0
    stdout_left = [t for n, t in watch.seen if n == "out" and nid in t and "escalated" in t]
    assert stdout_left == []  # shown once
