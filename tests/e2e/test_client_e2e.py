"""The client library and the desk CLI against a real relay process on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from contextlib import aclosing
from pathlib import Path

import pytest

from client.client import HotlineClient
from client.connection import RelayError
from client.items import ConfirmationEvent, EscalationEvent, ReceivedNotice
from client.sync import HotlineSync
from tests.factory import report
from tests.relay_harness import PASSPHRASE, TEST_ENV, RelayProcess

ROOT = Path(__file__).resolve().parents[2]


def open_desk(federation: dict[str, Path], relay: RelayProcess, name: str) -> HotlineClient:
    return HotlineClient.from_home(federation[name], PASSPHRASE, relays=[relay.url])


async def _login_all(federation: dict[str, Path], relay: RelayProcess) -> None:
    for name in federation:
        async with open_desk(federation, relay, name) as c:
            await c.fetch()  # logs in: the relay learns the desk's card


async def test_send_push_receipt_ack_status(federation: dict[str, Path],
                                            relay: RelayProcess) -> None:
    """A notice to two desks is pushed live to both; receipts and acks reach the sender,
    and its status shows every step verified."""
    await _login_all(federation, relay)
    async with open_desk(federation, relay, "us.caisi") as us, \
            open_desk(federation, relay, "cn.cac") as cn, \
            open_desk(federation, relay, "cn.mss") as mss:
        sent = await us.send(to=["cn.cac", "cn.mss"], severity="high", notice=report())

        async def first_notice(client: HotlineClient) -> ReceivedNotice:
            async with aclosing(client.notices()) as live:
                async for n in live:
                    return n
            raise AssertionError("stream ended")

        got = await asyncio.wait_for(asyncio.gather(first_notice(cn), first_notice(mss)), 20)
        assert {n.notice_id for n in got} == {sent.notice_id}
        assert got[0].report == report()
        await cn.ack(sent.notice_id, message="seen")
        await mss.ack(sent.notice_id)
        items = await us.fetch()
        kinds = sorted((i.kind, i.recipient) for i in items if isinstance(i, ConfirmationEvent))
        assert kinds == [("ack", "cn.cac"), ("ack", "cn.mss"),
                         ("receipt", "cn.cac"), ("receipt", "cn.mss")]
        assert [i.message for i in items
                if isinstance(i, ConfirmationEvent) and i.kind == "ack"
                and i.recipient == "cn.cac"] == ["seen"]
        view = await us.status(sent.notice_id)
        assert view.verified and view.digest_matches
        assert all(r.acknowledged is not None for r in view.recipients)
        assert view.policy is not None and set(view.policy) == {"cn.cac", "cn.mss"}


async def test_reconnect_with_backlog_and_dedup_across_restart(
        federation: dict[str, Path], relay: RelayProcess) -> None:
    """Notices sent while the recipient was offline arrive in order when it comes back; a
    restarted client yields each notice once (the unprocessed one again, once)."""
    await _login_all(federation, relay)
    async with open_desk(federation, relay, "us.caisi") as us:
        ids = [(await us.send(to=["cn.cac"], severity="medium", notice=report())).notice_id
               for _ in range(5)]
    async with open_desk(federation, relay, "cn.cac") as cn:
        seen = []
        async with aclosing(cn.notices(follow=False)) as notices:
            async for n in notices:
                seen.append(n.notice_id)
                if len(seen) == 3:
                    break  # stops mid-way: the third was handed over but not processed
    assert seen == ids[:3]
    relay.restart()
    async with open_desk(federation, relay, "cn.cac") as cn:
        again = [(n.notice_id, n.redelivered) async for n in cn.notices(follow=False)]
    assert again == [(ids[2], True), (ids[3], False), (ids[4], False)]
    async with open_desk(federation, relay, "cn.cac") as cn:
        assert [n async for n in cn.notices(follow=False)] == []


async def test_idempotent_resend_and_reply(federation: dict[str, Path],
                                           relay: RelayProcess) -> None:
    """Sending again with the same notice id returns the first acceptance; a reply meets
    the response deadline, and the original sender sees it as a notice in reply."""
    await _login_all(federation, relay)
    nid = os.urandom(16)
    async with open_desk(federation, relay, "us.caisi") as us:
        first = await us.send(to=["cn.cac"], severity="critical", notice=report(),
                              notice_id=nid)
        second = await us.send(to=["cn.cac"], severity="critical", notice=report(),
                               notice_id=nid)
        assert second.notice_id == first.notice_id == nid
        assert second.accepted_at == first.accepted_at
    async with open_desk(federation, relay, "cn.cac") as cn:
        await cn.fetch()
        answer = await cn.reply(nid, report(title="Mirrors blocked"))
    async with open_desk(federation, relay, "us.caisi") as us:
        items = await us.fetch()
        replies = [i for i in items if isinstance(i, ReceivedNotice)]
        assert [(r.notice_id, r.notice.in_reply_to) for r in replies] == [
            (answer.notice_id, nid)]
        assert not [i for i in items if isinstance(i, EscalationEvent)]
    assert relay.events("notice.responded")[0]["notice_id"] == nid.hex()


def test_sync_facade(federation: dict[str, Path], relay: RelayProcess) -> None:
    """HotlineSync sends, lists the inbox and acknowledges without async code."""
    with HotlineSync.from_home(federation["cn.cac"], PASSPHRASE, relays=[relay.url]) as cn:
        cn.fetch()
    with HotlineSync.from_home(federation["us.caisi"], PASSPHRASE, relays=[relay.url]) as us:
        sent = us.send(to=["cn.cac"], severity="low", notice=report())
    with HotlineSync.from_home(federation["cn.cac"], PASSPHRASE, relays=[relay.url]) as cn:
        (n,) = cn.inbox()
        assert n.notice_id == sent.notice_id
        cn.ack(n.notice_id)
        assert cn.inbox() == []


def _cli(federation: dict[str, Path], relay: RelayProcess, desk: str, *argv: str
         ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ) | TEST_ENV | {"HOTLINE_RELAY": relay.url}
    return subprocess.run([sys.executable, "-m", "client.cli.main", *argv,
                           "--home", str(federation[desk])], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_cli_send_inbox_show_ack_status(federation: dict[str, Path],
                                        relay: RelayProcess, tmp_path: Path) -> None:
    """A desk's day on the CLI: send with an attachment, inbox, show (saving it), ack with
    a message, status; bad input is one line on stderr, no traceback."""
    assert _cli(federation, relay, "cn.cac", "inbox").returncode == 0  # logs in
    evidence = tmp_path / "hashes.txt"
    evidence.write_text("sha256 0123...\n")
    sent = _cli(federation, relay, "us.caisi", "send", "--to", "cn.cac", "--severity",
                "critical", "--title", "Weights leaked", "--body", "Mirrors spreading.",
                "--category", "model-weights-leak", "--attach", str(evidence), "--json")
    assert sent.returncode == 0, sent.stderr
    nid = json.loads(sent.stdout)["notice_id"]
    inbox = _cli(federation, relay, "cn.cac", "inbox", "--json")
    assert [json.loads(x)["notice_id"] for x in inbox.stdout.splitlines()] == [nid]
    out = tmp_path / "out"
    show = _cli(federation, relay, "cn.cac", "show", nid[:10], "--save-attachments", str(out))
    assert show.returncode == 0 and "Weights leaked" in show.stdout
    assert (out / "hashes.txt").read_text() == "sha256 0123...\n"
    assert _cli(federation, relay, "cn.cac", "ack", nid, "--message", "seen").returncode == 0
    status = _cli(federation, relay, "us.caisi", "status", nid, "--json")
    assert status.returncode == 0, status.stderr
    (line,) = [json.loads(x) for x in status.stdout.splitlines()]
    assert line["recipient"] == "cn.cac" and line["verified"] is True
    assert line["acknowledged"] is not None
    bad = _cli(federation, relay, "us.caisi", "send", "--to", "nobody", "--severity", "high",
               "--title", "x", "--body", "y")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("hotline:")


@pytest.mark.parametrize("desk", ["us.caisi"])
def test_cli_watch_is_bounded(federation: dict[str, Path], relay: RelayProcess,
                              desk: str) -> None:
    """`hotline watch --timeout` ends by itself with status 0."""
    done = _cli(federation, relay, desk, "watch", "--timeout", "1")
    assert done.returncode == 0, done.stderr


async def test_notices_and_confirmations_travel_on_the_open_stream(
        federation: dict[str, Path], relay: RelayProcess) -> None:
    """With a stream open, a notice, its receipt and its ack are sent on it (HTTP is not
    used); the answers are the relay's signed attestations with the same duplicate flag as
    over HTTP, and a refusal raises with the status the HTTP API gives it."""
    from keys import Attestation, Confirmation, Envelope
    from keys.ids import DeskId

    await _login_all(federation, relay)

    def forbid_http(conn: object) -> None:
        async def no_http(method: str, path: str, *args: object, **kw: object) -> object:
            if method == "POST":
                raise AssertionError(f"{path} went over HTTP")
            return await original(method, path, *args, **kw)

        original = conn.request  # type: ignore[attr-defined]
        conn.request = no_http  # type: ignore[attr-defined]

    async with open_desk(federation, relay, "us.caisi") as us, \
            open_desk(federation, relay, "cn.cac") as cn:
        await us.card_of("cn.cac")  # fetched over HTTP (GET) before HTTP POSTs are barred
        us_events = us.connection.events(lambda: 10**9)
        cn_events = cn.connection.events(lambda: 0)
        # A stream opens when its generator is first asked for an event.
        pump = asyncio.create_task(cn_events.__anext__())
        idle = asyncio.create_task(us_events.__anext__())  # no event ever comes
        for _ in range(400):
            if us.connection._stream is not None and cn.connection._stream is not None:
                break
            await asyncio.sleep(0.025)
        assert us.connection._stream is not None and cn.connection._stream is not None
        forbid_http(us.connection)
        forbid_http(cn.connection)
        sent = await us.send(to=["cn.cac"], severity="high", notice=report())
        assert not sent.duplicate
        again = await us.connection.post_notice(us.state.outbox(sent.notice_id).envelope)
        assert again.duplicate
        first = await asyncio.wait_for(pump, 20)
        assert first.notice_id == sent.notice_id and first.envelope is not None
        env = Envelope.decode(first.envelope)
        receipt = Confirmation.create("receipt", notice_id=env.notice_id, digest=env.digest,
                                      sender=DeskId("us.caisi"), me=cn.secrets, at=0)
        accepted = await asyncio.wait_for(cn.connection.send_confirmation(receipt.encode()), 10)
        att = Attestation.decode(accepted.attestation)
        att.verify(await cn.relay(), notice_id=env.notice_id, digest=env.digest)
        assert att.event == "delivered" and att.desk == "cn.cac" and not accepted.duplicate
        forged = Confirmation.create("receipt", notice_id=env.notice_id, digest=b"\x00" * 32,
                                     sender=DeskId("us.caisi"), me=cn.secrets, at=0)
        with pytest.raises(RelayError, match="digest") as refused:
            await asyncio.wait_for(cn.connection.send_confirmation(forged.encode()), 10)
        assert refused.value.status == 409 and refused.value.code == "digest_mismatch"
        ack = Confirmation.create("ack", notice_id=env.notice_id, digest=env.digest,
                                  sender=DeskId("us.caisi"), me=cn.secrets, at=0)
        first_ack = await cn.connection.send_confirmation(ack.encode())
        second_ack = await cn.connection.send_confirmation(ack.encode())
        assert not first_ack.duplicate and second_ack.duplicate
        assert second_ack.attestation == first_ack.attestation
        # A notice signed by another desk is refused on the stream as over HTTP (403).
        with pytest.raises(RelayError) as wrong_sender:
            await cn.connection.post_notice(first.envelope)
        assert wrong_sender.value.status == 403
        assert wrong_sender.value.code == "sender_mismatch"
        idle.cancel()
        await cn_events.aclose()
