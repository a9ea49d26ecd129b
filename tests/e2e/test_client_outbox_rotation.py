"""Desks that run for days, against a real relay process: a key rotated under a running
client, and sends and acks while the relay is down (kept, said so, delivered later)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from pathlib import Path

from client.cli.main import main
from client.client import HotlineClient
from client.connection import RetryPolicy
from client.home import Home
from client.items import Item, ReceivedNotice
from keys import DeskCard, Envelope
from tests.factory import report
from tests.relay_harness import PASSPHRASE, TEST_ENV, RelayProcess
from tests.relay_harness import test_env as fast_kdf_env

ROOT = Path(__file__).resolve().parents[2]
#: Quick retries, so that a test with the relay down does not wait out the default policy.
QUICK = RetryPolicy(attempts=2, base_delay=0.05, max_delay=0.5)


def _open(federation: dict[str, Path], relay: RelayProcess, name: str,
          **kw: object) -> HotlineClient:
    return HotlineClient.from_home(federation[name], PASSPHRASE, relays=[relay.url],
                                   **kw)  # type: ignore[arg-type]


async def _login_all(federation: dict[str, Path], relay: RelayProcess) -> None:
    for name in federation:
        async with _open(federation, relay, name) as c:
            await c.fetch()


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    """Wait for a condition (polled), failing with ``what`` after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


def _cli(federation: dict[str, Path], relay: RelayProcess, desk: str, *argv: str
         ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ) | TEST_ENV | {"HOTLINE_RELAY": relay.url}
    return subprocess.run([sys.executable, "-m", "client.cli.main", *argv,
                           "--home", str(federation[desk])], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


async def test_key_rotated_under_a_running_client_reaches_senders_and_opens_new_notices(
        federation: dict[str, Path], relay: RelayProcess) -> None:
    """'hotline keys rotate' while cn.cac's event loop runs: without a restart the relay
    serves the new card, a sender seals to the new key, and the running loop opens the
    notice and receipts it."""
    await _login_all(federation, relay)
    got: list[Item] = []
    async with _open(federation, relay, "cn.cac") as cn, \
            _open(federation, relay, "us.caisi") as us:

        async def run() -> None:
            async with aclosing(cn.events()) as items:
                async for item in items:
                    got.append(item)

        loop = asyncio.create_task(run())
        try:
            async def connected() -> bool:
                return any(e.get("desk") == "cn.cac" for e in relay.events("stream.opened"))

            await _until(connected, "the stream opens")
            with fast_kdf_env():
                assert main(["keys", "rotate", "--home", str(federation["cn.cac"])]) == 0
            new_ek = Home(federation["cn.cac"]).ek_certs()[0].key_id

            async def relay_serves_new_card() -> bool:
                raw = await us.connection.get_card("cn.cac")
                return raw is not None and DeskCard.decode(raw).eks[0].key_id == new_ek

            await _until(relay_serves_new_card, "the relay serves the new card")
            sent = await us.send(to=["cn.cac"], severity="critical", notice=report())
            sealed = us.state.outbox(sent.notice_id)
            assert sealed is not None
            (stanza,) = Envelope.decode(sealed.envelope).header.stanzas
            assert stanza.ek_kid == new_ek

            async def opened() -> bool:
                return any(isinstance(i, ReceivedNotice) and i.notice_id == sent.notice_id
                           for i in got)

            await _until(opened, "the running loop opens the notice")
            view = await us.status(sent.notice_id)
            assert all(r.delivered is not None for r in view.recipients)
            assert cn.unopened() == []
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop


async def test_send_while_the_relay_is_down_is_kept_and_a_running_loop_delivers_it(
        federation: dict[str, Path], relay: RelayProcess) -> None:
    """The relay stops; a send is sealed from contacts and reported queued; a running
    event loop of the sender posts it once the relay is back, with no new command."""
    await _login_all(federation, relay)
    relay.stop()
    async with _open(federation, relay, "us.caisi", policy=QUICK) as us:
        result = await us.send(to=["cn.cac"], severity="critical", notice=report())
        assert result.queued and result.accepted_at is None
        assert [i.notice_id for i in us.outbox()] == [result.notice_id]

        loop = asyncio.create_task(_drain(us))
        try:
            await asyncio.sleep(0.5)  # the loop runs (and fails to reach the relay) first
            relay.start()

            async def delivered() -> bool:
                return us.outbox() == []

            await _until(delivered, "the running loop posts the outbox")
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
    async with _open(federation, relay, "cn.cac") as cn:
        notices = [i for i in await cn.fetch() if isinstance(i, ReceivedNotice)]
        assert [n.notice_id for n in notices] == [result.notice_id]


async def _drain(client: HotlineClient) -> None:
    async with aclosing(client.events()) as items:
        async for _ in items:
            pass


def test_cli_send_and_ack_with_the_relay_down_say_what_did_not_happen(
        federation: dict[str, Path], relay: RelayProcess) -> None:
    """With the relay stopped: 'send' exits 3 saying the notice was NOT sent and is kept;
    'outbox' lists it with its age; '--no-queue' exits 1 keeping nothing; 'ack' exits 3
    saying it was NOT recorded. Once the relay is back, 'outbox --send' delivers both."""
    assert _cli(federation, relay, "cn.cac", "inbox").returncode == 0
    first = _cli(federation, relay, "us.caisi", "send", "--to", "cn.cac", "--severity",
                 "high", "--title", "First", "--body", "x", "--json")
    assert first.returncode == 0, first.stderr
    first_id = json.loads(first.stdout)["notice_id"]
    assert _cli(federation, relay, "cn.cac", "inbox").returncode == 0
    relay.stop()

    queued = _cli(federation, relay, "us.caisi", "send", "--to", "cn.cac", "--severity",
                  "critical", "--title", "Weights leaked", "--body", "Mirrors.")
    assert queued.returncode == 3, queued.stderr
    assert "was NOT sent" in queued.stderr and "outbox" in queued.stderr
    nid = queued.stdout.split()[1]
    listing = _cli(federation, relay, "us.caisi", "outbox")
    assert listing.returncode == 0
    (row,) = listing.stdout.splitlines()
    assert row.startswith(nid) and "to cn.cac" in row and "waiting" in row

    fast = _cli(federation, relay, "us.caisi", "send", "--to", "cn.cac", "--severity", "low",
                "--title", "Not kept", "--body", "x", "--no-queue")
    assert fast.returncode == 1 and "nothing is kept" in fast.stderr, fast.stderr
    assert len(_cli(federation, relay, "us.caisi", "outbox").stdout.splitlines()) == 1
    ok = _cli(federation, relay, "us.caisi", "send", "--to", "cn.cac", "--severity", "low",
              "--title", "Queued, fine", "--body", "x", "--queue-ok")
    assert ok.returncode == 0 and "was NOT sent" in ok.stderr

    ack = _cli(federation, relay, "cn.cac", "ack", first_id)
    assert ack.returncode == 3 and "was NOT recorded" in ack.stderr, ack.stderr

    relay.start()
    sent = _cli(federation, relay, "us.caisi", "outbox", "--send")
    assert sent.returncode == 0, sent.stderr
    assert _cli(federation, relay, "us.caisi", "outbox").stdout == ""
    inbox = _cli(federation, relay, "cn.cac", "inbox", "--json")  # starts: posts the ack
    assert inbox.returncode == 0, inbox.stderr
    waiting = {json.loads(x)["notice_id"] for x in inbox.stdout.splitlines()}
    assert nid in waiting and first_id not in waiting
    status = _cli(federation, relay, "us.caisi", "status", first_id, "--json")
    assert json.loads(status.stdout)["acknowledged"] is not None
