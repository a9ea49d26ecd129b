"""Revocations reach every client, and every running process, with a real relay.

The relay serves every revocation it knows (``GET /v1/revocations``, pushed on streams
that ask); clients verify each against the revoked desk's own authority, keep it in their
home and apply it at once, so a relay that later withholds it (here: the same relay with
its record deleted) cannot make them accept the revoked key. The relay's revocations/
folder takes what ``hotline authority revoke`` writes and is applied while it runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path

import aiohttp
import pytest

from client.cli.main import main
from client.client import HotlineClient
from client.home import Home
from client.items import Item, NoticeRejected, ReceivedNotice
from keys import Revocation
from keys.frames import RevocationList
from tests.factory import report
from tests.relay_harness import PASSPHRASE, RawDesk, RelayProcess
from tests.relay_harness import test_env as harness_env

MSGPACK = {"Content-Type": "application/msgpack"}


def open_desk(federation: dict[str, Path], relay: RelayProcess, name: str) -> HotlineClient:
    return HotlineClient.from_home(federation[name], PASSPHRASE, relays=[relay.url])


def revoke_file(base: Path, desk: str) -> Path:
    """What the desk's authority hands out: ``hotline authority revoke`` (armoured)."""
    country = desk.split(".")[0]
    out = base / f"{desk}.rev"
    with harness_env():
        code = main(["authority", "revoke", desk, "--home", str(base / f"{country}-authority"),
                     "--reason", "key compromised", "-o", str(out)])
    assert code == 0
    return out


def kid_of(federation: dict[str, Path], desk: str) -> bytes:
    return Home(federation[desk]).desk_cert().key_id


async def until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def login_all(federation: dict[str, Path], relay: RelayProcess) -> None:
    for name in federation:
        async with open_desk(federation, relay, name) as c:
            await c.fetch()


def forget_revocations(relay: RelayProcess) -> None:
    """The relay turns hostile: it restarts having dropped every revocation it held."""
    relay.stop()
    with sqlite3.connect(relay.home / "relay.db") as db:
        db.execute("DELETE FROM revocations")
    for path in (relay.home / "revocations").iterdir():
        path.unlink()
    relay.start()


async def served(http: aiohttp.ClientSession, relay: RelayProcess) -> list[Revocation]:
    async with http.get(relay.url + "/v1/revocations") as r:
        assert r.status == 200 and r.content_type == "application/msgpack"
        return [Revocation.decode(b) for b in RevocationList.decode(await r.read()).revocations]


async def test_relay_withholding_a_revocation_cannot_make_a_fresh_client_accept_the_key(
        tmp_path: Path, federation: dict[str, Path], relay: RelayProcess,
        http: aiohttp.ClientSession) -> None:
    """A desk process fetches the relay's revocations (GET /v1/revocations) and keeps them;
    after the relay forgets the revocation of us.nsc and accepts its notice again, cn.cac
    refuses that notice and sends no receipt for it."""
    await login_all(federation, relay)
    rev_file = revoke_file(tmp_path, "us.nsc")
    with harness_env():
        assert await asyncio.to_thread(main, [
            "revocations", "post", str(rev_file), "--relay", relay.url,
            "--home", str(federation["cn.cac"])]) == 0
    relay.restart()  # what the relay accepted it keeps, and serves
    assert [(r.desk, r.ik_kid) for r in await served(http, relay)] == [
        ("us.nsc", kid_of(federation, "us.nsc"))]

    async with open_desk(federation, relay, "cn.cac") as cn:
        await cn.fetch()
        assert cn.trust.is_revoked("us.nsc", kid_of(federation, "us.nsc"))
    assert [r.desk for _, r in Home(federation["cn.cac"]).revocations()] == ["us.nsc"]

    forget_revocations(relay)
    assert await served(http, relay) == []
    async with open_desk(federation, relay, "us.nsc") as nsc:
        sent = await nsc.send(to=["cn.cac"], severity="critical", notice=report())
    async with open_desk(federation, relay, "cn.cac") as cn:
        items = await cn.fetch()
        assert [i.notice_id for i in items if isinstance(i, ReceivedNotice)] == []
        assert [(i.notice_id, i.code) for i in items if isinstance(i, NoticeRejected)] == [
            (sent.notice_id, "unknown_or_revoked_key")]
    async with open_desk(federation, relay, "us.nsc") as nsc:
        view = await nsc.status(sent.notice_id)
        assert [r.delivered for r in view.recipients] == [None]


async def test_relay_withholding_a_revocation_cannot_make_a_running_client_accept_the_key(
        tmp_path: Path, federation: dict[str, Path], relay: RelayProcess,
        http: aiohttp.ClientSession) -> None:
    """A running desk process gets the revocation pushed on its stream and applies it at
    once; when the relay restarts without it and delivers the revoked desk's notice, the
    same process refuses it, and so does a fresh one."""
    await login_all(federation, relay)
    got: asyncio.Queue[Item] = asyncio.Queue()
    async with open_desk(federation, relay, "cn.cac") as cn:

        async def watch() -> None:
            async with aclosing(cn.events()) as items:
                async for item in items:
                    await got.put(item)

        watcher = asyncio.create_task(watch())
        try:
            async with open_desk(federation, relay, "us.nsc") as nsc:
                before = await nsc.send(to=["cn.cac"], severity="high", notice=report())
            first = await asyncio.wait_for(got.get(), 30)
            assert isinstance(first, ReceivedNotice) and first.notice_id == before.notice_id

            async with http.post(relay.url + "/v1/revocations", headers=MSGPACK,
                                 data=Revocation.decode(
                                     _dearmor(revoke_file(tmp_path, "us.nsc"))).encode()) as r:
                assert r.status == 200, await r.read()
            kid = kid_of(federation, "us.nsc")
            await until(lambda: cn.trust.is_revoked("us.nsc", kid), "the pushed revocation")
            assert [r.desk for _, r in cn.home.revocations()] == ["us.nsc"]

            forget_revocations(relay)
            async with open_desk(federation, relay, "us.nsc") as nsc:
                after = await nsc.send(to=["cn.cac"], severity="critical", notice=report())
            item = await asyncio.wait_for(got.get(), 60)
            assert isinstance(item, NoticeRejected), item
            assert (item.notice_id, item.code) == (after.notice_id, "unknown_or_revoked_key")
            assert cn.state.received(after.notice_id) is None
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    async with open_desk(federation, relay, "cn.cac") as cn:
        assert cn.trust.is_revoked("us.nsc", kid_of(federation, "us.nsc"))


def _dearmor(path: Path) -> bytes:
    from keys.armor import dearmor

    return dearmor("revocation", path.read_bytes())


async def test_running_client_refuses_a_desk_revoked_in_its_home_while_it_runs(
        tmp_path: Path, federation: dict[str, Path], relay: RelayProcess) -> None:
    """``hotline revocations add`` in a desk's home while its watch runs: the running
    process refuses the revoked desk's next notice (the relay was never told) and does not
    receipt it."""
    await login_all(federation, relay)
    got: asyncio.Queue[Item] = asyncio.Queue()
    async with open_desk(federation, relay, "cn.cac") as cn:

        async def watch() -> None:
            async with aclosing(cn.events()) as items:
                async for item in items:
                    await got.put(item)

        watcher = asyncio.create_task(watch())
        try:
            async with open_desk(federation, relay, "us.nsc") as nsc:
                before = await nsc.send(to=["cn.cac"], severity="high", notice=report())
                first = await asyncio.wait_for(got.get(), 30)
                assert isinstance(first, ReceivedNotice) and first.notice_id == before.notice_id

                with harness_env():
                    assert main(["revocations", "add", str(revoke_file(tmp_path, "us.nsc")),
                                 "--home", str(federation["cn.cac"])]) == 0
                after = await nsc.send(to=["cn.cac"], severity="critical", notice=report())
                item = await asyncio.wait_for(got.get(), 30)
                assert isinstance(item, NoticeRejected), item
                assert (item.notice_id, item.code) == (after.notice_id,
                                                       "unknown_or_revoked_key")
                view = await nsc.status(after.notice_id)
                assert [r.delivered for r in view.recipients] == [None]
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


async def test_relay_revocations_folder_takes_armoured_files_and_names_a_bad_one(
        tmp_path: Path, federation: dict[str, Path], relay: RelayProcess,
        http: aiohttp.ClientSession) -> None:
    """What ``hotline authority revoke`` writes, put in the relay's revocations/, applies at
    start; a file that is not a revocation stops the start with its name."""
    relay.stop()
    rev_file = revoke_file(tmp_path, "us.nsc")
    (relay.home / "revocations" / "us.nsc.rev").write_bytes(rev_file.read_bytes())
    relay.start()
    assert [r.desk for r in await served(http, relay)] == ["us.nsc"]
    nsc = RawDesk(http, relay.url, federation["us.nsc"])
    with pytest.raises(AssertionError, match="unknown_or_revoked_key"):
        await nsc.login()

    relay.stop()
    bad = relay.home / "revocations" / "typo.rev"
    bad.write_bytes(b"-----BEGIN HOTLINE REVOCATION-----\nnot base64!\n"
                    b"-----END HOTLINE REVOCATION-----\n")
    with pytest.raises(RuntimeError) as exc:
        relay.start(timeout=30)
    assert str(bad) in str(exc.value)


@pytest.mark.parametrize("how", ["folder_watch", "sighup"])
async def test_relay_applies_a_revocation_file_added_while_running(
        tmp_path: Path, federation: dict[str, Path], relay: RelayProcess,
        http: aiohttp.ClientSession, how: str) -> None:
    """A revocation file added to the running relay's revocations/ (noticed by the folder
    watch, or at once on SIGHUP) ends the key's stream and session, and is served; a bad
    file next to it is logged by name and does not stop the relay."""
    nsc = await RawDesk(http, relay.url, federation["us.nsc"]).login()
    ws = await http.ws_connect(relay.url + "/v1/stream?after=0", headers=nsc.auth)
    (relay.home / "revocations" / "bad.rev").write_bytes(b"\x93garbage")
    (relay.home / "revocations" / "us.nsc.rev").write_bytes(
        revoke_file(tmp_path, "us.nsc").read_bytes())
    if how == "sighup":
        assert relay.proc is not None
        os.kill(relay.proc.pid, signal.SIGHUP)
    msg = await asyncio.wait_for(ws.receive(), 30)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4403)
    r = await nsc.get("/v1/inbox")
    assert r.status == 401
    assert [r.desk for r in await served(http, relay)] == ["us.nsc"]
    await until(lambda: bool(relay.events("revocation.file_refused")), "the log line")
    assert relay.events("revocation.file_refused")[0]["file"].endswith("bad.rev")
    await ws.close()


async def test_revocations_post_names_a_forged_file_and_list_shows_what_a_home_keeps(
        tmp_path: Path, federation: dict[str, Path], relay: RelayProcess,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``hotline revocations post`` of cn.cac's revocation signed by the us authority is
    refused, naming the file (by the home's pinned root, and by the relay for a home
    without one); ``hotline revocations list`` shows what ``add`` kept."""
    from keys.armor import armor
    from tests.e2e.test_relay_attacks import revocation

    forged = tmp_path / "forged.rev"
    forged.write_text(armor("revocation", revocation(tmp_path, "us", "cn.cac",
                                                     kid_of(federation, "cn.cac"))))
    empty = tmp_path / "no-root-home"
    for home in (federation["us.caisi"], empty):
        capsys.readouterr()
        with harness_env():
            code = await asyncio.to_thread(main, [
                "revocations", "post", str(forged), "--relay", relay.url, "--home", str(home)])
        err = capsys.readouterr().err
        assert code != 0 and str(forged) in err, err
    assert "bad_signature" in err
    async with open_desk(federation, relay, "cn.cac") as cn:
        await cn.fetch()  # the relay still lets cn.cac in
        assert not cn.trust.is_revoked("cn.cac", kid_of(federation, "cn.cac"))

    with harness_env():
        assert main(["revocations", "add", str(revoke_file(tmp_path, "us.nsc")),
                     "--home", str(federation["cn.mss"])]) == 0
        capsys.readouterr()
        assert main(["revocations", "list", "--json", "--home", str(federation["cn.mss"])]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    entry = json.loads(line)
    assert (entry["desk"], entry["key_id"], entry["reason"]) == (
        "us.nsc", kid_of(federation, "us.nsc").hex(), "key compromised")
