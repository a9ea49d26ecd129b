"""Two circuits: every notice, receipt and ack goes over two relays, each a real process
with its own key, configuration and database; the desks' clients multiplex."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing
from pathlib import Path

import aiohttp
import pytest

from client.circuits import RelaySpec
from client.client import HotlineClient
from client.connection import RetryPolicy
from client.items import ReceivedNotice
from keys import Revocation
from keys.armor import dearmor
from keys.errors import UntrustedKey
from keys.frames import RevocationList
from tests.factory import report
from tests.relay_harness import PASSPHRASE, RelayProcess
from tests.relay_harness import test_env as harness_env

MSGPACK = {"Content-Type": "application/msgpack"}
FAST = RetryPolicy(attempts=2, base_delay=0.05, max_delay=0.5)


@pytest.fixture
def relays(tmp_path: Path, federation: dict[str, Path],
           request: pytest.FixtureRequest) -> Iterator[tuple[RelayProcess, RelayProcess]]:
    """us-relay (honest) and cn-relay (hostile as the test's ``hostile`` mark says)."""
    mark = request.node.get_closest_marker("hostile")
    env = {"HOTLINE_TEST_HOSTILE": mark.args[0]} if mark else {}
    us = RelayProcess.create(tmp_path, name="relay-us", relay_id="us-relay")
    cn = RelayProcess.create(tmp_path, name="relay-cn", relay_id="cn-relay", env=env)
    us.start()
    cn.start()
    try:
        yield us, cn
    finally:
        us.stop()
        cn.stop()


def open_desk(federation: dict[str, Path], relays: tuple[RelayProcess, RelayProcess],
              name: str, *, hostile_first: bool = False) -> HotlineClient:
    us, cn = relays
    specs = [RelaySpec("us-relay", (us.url,)), RelaySpec("cn-relay", (cn.url,))]
    client = HotlineClient.from_home(federation[name], PASSPHRASE, policy=FAST,
                                     relay_specs=specs[::-1] if hostile_first else specs)
    client.retry_interval_s = 0.2
    client.circuits.ask_timeout_s = 2.0
    return client


@pytest.fixture
async def login_all(federation: dict[str, Path], relays: tuple[RelayProcess, RelayProcess]
                    ) -> Callable[[], AsyncIterator[None]]:
    for name in ("us.caisi", "cn.cac", "cn.mss"):
        async with open_desk(federation, relays, name) as c:
            await c.fetch()  # logs in to both: each relay learns the desk's card
    return lambda: None  # type: ignore[return-value]


async def until(check: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check() if asyncio.iscoroutinefunction(check) else not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def collect(client: HotlineClient, n: int, timeout: float = 60.0) -> list[ReceivedNotice]:
    got: list[ReceivedNotice] = []

    async def run() -> None:
        async with aclosing(client.notices()) as live:
            async for notice in live:
                got.append(notice)
                await client.ack(notice.notice_id)
                if len(got) == n:
                    return

    await asyncio.wait_for(run(), timeout)
    return got


async def test_every_notice_once_and_both_relays_hold_signed_receipts_and_acks(
        federation: dict[str, Path], relays: tuple[RelayProcess, RelayProcess],
        login_all: object) -> None:
    async with open_desk(federation, relays, "us.caisi") as us, \
            open_desk(federation, relays, "cn.cac") as cn:
        sent = [await us.send(to=["cn.cac"], severity="high", notice=report()) for _ in range(3)]
        assert all(len(s.relays) == 2 for s in sent)
        got = await collect(cn, 3)
        assert sorted(n.notice_id for n in got) == sorted(s.notice_id for s in sent)
        # No more arrive: each notice came by both relays, and was shown once.
        assert [n for n in await cn.fetch() if isinstance(n, ReceivedNotice)] == []

        async def both_relays_agree() -> bool:
            view = await us.status(sent[-1].notice_id)
            m = view.merged
            r = m.recipient("cn.cac")
            return (m.verified and not m.flags and r.acknowledged is not None
                    and set(r.acknowledged.relays) == {"us-relay", "cn-relay"}
                    and r.delivered is not None
                    and set(r.delivered.relays) == {"us-relay", "cn-relay"})

        await until(both_relays_agree, "receipts and acks on both relays")
        view = await us.status(sent[-1].notice_id)
        assert {v.relay for v in view.merged.views if v.view and v.view.verified} == {
            "us-relay", "cn-relay"}


@pytest.mark.parametrize("how", ["sigstop", "sigkill"])
async def test_one_relay_down_notices_arrive_through_the_other_and_it_catches_up(
        federation: dict[str, Path], relays: tuple[RelayProcess, RelayProcess],
        login_all: object, how: str) -> None:
    _, cn_relay = relays
    async with open_desk(federation, relays, "us.caisi") as us, \
            open_desk(federation, relays, "cn.cac") as cn:
        # Both clients connect to both relays first; then cn-relay goes down.
        await cn.fetch()
        if how == "sigstop":
            cn_relay.pause()
        else:
            cn_relay.kill()
        sent = [await us.send(to=["cn.cac"], severity="high", notice=report()) for _ in range(3)]
        for s in sent:
            states = {r.relay: r.state for r in s.relays}
            assert states["us-relay"] == "accepted" and states["cn-relay"] == "pending"
        got = await collect(cn, 3)
        assert sorted(n.notice_id for n in got) == sorted(s.notice_id for s in sent)
        if how == "sigstop":
            cn_relay.resume()
        else:
            cn_relay.start()

        async def caught_up() -> bool:
            view = await us.status(sent[-1].notice_id)
            r = view.merged.recipient("cn.cac")
            return ("cn-relay" in view.merged.accepted_by and r.acknowledged is not None
                    and "cn-relay" in r.acknowledged.relays)

        await until(caught_up, "the stopped relay catching up from the outboxes", 90)
        results = us.circuits.results(sent[0].notice_id, "notice")
        assert {r.relay: r.state for r in results} == {"us-relay": "accepted",
                                                       "cn-relay": "accepted"}


@pytest.mark.hostile("drop_notices_to=cn.cac,deny_delivery")
async def test_hostile_relay_drops_and_denies_delivery_is_flagged(
        federation: dict[str, Path], relays: tuple[RelayProcess, RelayProcess],
        login_all: object) -> None:
    """cn-relay (the first relay cn.cac lists) accepts the notice, never delivers it to
    cn.cac and says it was not
    delivered: the notice arrives through us-relay, and the recipient's signed receipt
    (through us-relay) proves delivery; the sender's status flags cn-relay."""
    async with open_desk(federation, relays, "us.caisi") as us, \
            open_desk(federation, relays, "cn.cac", hostile_first=True) as cn:
        sent = await us.send(to=["cn.cac"], severity="high", notice=report())
        assert {r.relay for r in sent.relays if r.accepted} == {"us-relay", "cn-relay"}
        (got,) = await collect(cn, 1)
        assert got.notice_id == sent.notice_id
        us.circuits.lag_ms = 0  # a missing receipt is a lie at once, not a lag

        async def flagged() -> bool:
            m = (await us.status(sent.notice_id)).merged
            return {(f.relay, f.kind) for f in m.flags} == {
                ("cn-relay", "not_delivered"), ("cn-relay", "not_acknowledged")}

        await until(flagged, "cn-relay flagged")
        m = (await us.status(sent.notice_id)).merged
        r = m.recipient("cn.cac")
        assert r.delivered is not None and r.delivered.relays == ("us-relay",)
        assert r.delivered.step.verified and m.accepted_by == ("us-relay", "cn-relay")


@pytest.mark.hostile("delay_push_ms=120000")
async def test_relay_delaying_pushes_by_minutes_does_not_delay_the_notice(
        federation: dict[str, Path], relays: tuple[RelayProcess, RelayProcess],
        login_all: object) -> None:
    async with open_desk(federation, relays, "us.caisi") as us, \
            open_desk(federation, relays, "cn.cac", hostile_first=True) as cn:
        sent = await us.send(to=["cn.cac"], severity="high", notice=report())
        (got,) = await collect(cn, 1, timeout=60)
        assert got.notice_id == sent.notice_id


@pytest.mark.hostile("withhold_revocations")
async def test_revocation_withheld_by_one_relay_still_applies(
        tmp_path: Path, federation: dict[str, Path],
        relays: tuple[RelayProcess, RelayProcess], login_all: object) -> None:
    from client.cli.main import main

    out = tmp_path / "mss.rev"
    with harness_env():
        assert main(["authority", "revoke", "cn.mss", "--home", str(tmp_path / "cn-authority"),
                     "--reason", "key compromised", "-o", str(out)]) == 0
    body = Revocation.decode(dearmor("revocation", out.read_bytes())).encode()
    async with aiohttp.ClientSession() as http:
        for relay in relays:
            async with http.post(relay.url + "/v1/revocations", headers=MSGPACK,
                                 data=body) as r:
                assert r.status == 200, await r.read()
        async with http.get(relays[1].url + "/v1/revocations") as r:
            assert r.status == 200
            assert RevocationList.decode(await r.read()).revocations == ()  # withheld
    # The withholding relay is the first one asked: the other's revocation applies anyway.
    async with open_desk(federation, relays, "us.caisi", hostile_first=True) as us:
        with pytest.raises(UntrustedKey):
            await us.send(to=["cn.mss"], severity="high", notice=report())
        assert [r.desk for _, r in us.home.revocations()] == ["cn.mss"]
