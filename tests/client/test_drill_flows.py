"""Drills through the relay's real core, store and escalator on a manual clock: link tests
answered automatically, link down and restored once each, exercise plans on their ladders,
and the scorecard computed from the same signed statements by both desks."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from client.client import HotlineClient
from client.drill_runner import DrillLog, LinkTester, observations, run_plan
from client.drills import DrillPlan, Observation, scorecard
from client.items import ConfirmationEvent, ReceivedNotice
from keys.receipts import Confirmation
from tests.client.drill_harness import InProcConnection, desk_client
from tests.factory import NOW, Federation
from tests.relay.inproc import InProcessRelay

US, CN, MSS = "us.caisi", "cn.cac", "cn.mss"
MINUTE, HOUR = 60_000, 3_600_000
SECRET = "s" * 32
ROUTING = f"""
[[escalation.contacts]]
recipient = "*"
notify = ["cn.mss"]
real_only = true

[[escalation.contacts]]
recipient = "*"
notify = ["cn.duty"]

[[webhooks]]
name = "pager"
url = "http://127.0.0.1:9/pager"
secret = "{SECRET}"
real_only = true

[[webhooks]]
name = "audit"
url = "http://127.0.0.1:9/audit"
secret = "{SECRET}"
"""

Desks = Callable[[str], tuple[HotlineClient, InProcConnection]]


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    fed = Federation.create(desks=(US, CN, MSS))
    r = await InProcessRelay(tmp_path / "relay", fed, ROUTING).open()
    yield r
    await r.close()


@pytest.fixture
async def desks(relay: InProcessRelay, tmp_path: Path) -> AsyncIterator[Desks]:
    made: list[HotlineClient] = []

    def make(desk: str) -> tuple[HotlineClient, InProcConnection]:
        client, conn = desk_client(relay, relay.fed, tmp_path, desk)
        made.append(client)
        return client, conn

    yield make
    for c in made:
        await c.close()


def link_events(client: HotlineClient) -> list[tuple[str, str, str]]:
    return [(e["event"], e["peer"], e["side"]) for e in DrillLog(client.home.path).events()
            if e["event"] in ("link_down", "link_restored")]


async def test_link_tests_answered_automatically_link_down_and_restored_once(
        relay: InProcessRelay, desks: Desks) -> None:
    us, _ = desks(US)
    cn, cn_conn = desks(CN)
    tester = LinkTester(us, (CN,), every_ms=HOUR, window_ms=5 * MINUTE)
    cn_tester = LinkTester(cn, (), every_ms=HOUR)  # the recipient side's heartbeat watch

    # Round 1: sent, answered by cn.cac's client by itself; nothing yielded there.
    assert await tester.tick() == []
    (first,) = [o.notice_id for o in us.state.outbox_list()]
    got = await cn.fetch()
    assert not [i for i in got if isinstance(i, ReceivedNotice)], "a link test paged someone"
    assert cn.inbox() == [], "a link test waits in the inbox for a person"
    relay.clock.advance(MINUTE)
    assert await tester.tick() == []
    confs = [i for i in await us.fetch() if isinstance(i, ConfirmationEvent)]
    kinds = {c.kind: c for c in us.state.confirmations(first)}
    assert set(kinds) == {"receipt", "ack"}
    assert Confirmation.decode(kinds["ack"].confirmation).automatic, "ack not marked automatic"
    assert confs == [] or all(c.automatic for c in confs if c.kind == "ack")
    view = await us.status(first)
    (r,) = view.recipients
    assert r.acknowledged is not None and r.acknowledged.automatic and view.verified

    # Round 2: cn.cac's client is cut off; the window closes: link down, once.
    cn_conn.down = True
    relay.clock.set(NOW + HOUR)
    assert await tester.tick() == []
    relay.clock.advance(6 * MINUTE)
    events = await tester.tick()
    assert [(e.kind, e.peer) for e in events] == [("link_down", CN)]
    relay.clock.advance(10 * MINUTE)
    assert await tester.tick() == [], "link down raised twice"
    metrics = generate_latest(tester.registry).decode()
    assert 'hotline_link_down_events_total{peer="cn.cac"} 1.0' in metrics
    assert 'hotline_link_up{peer="cn.cac"} 0.0' in metrics
    # The recipient's side sees no link test for longer than every + window: link down.
    relay.clock.set(NOW + 2 * HOUR + 6 * MINUTE)
    cn_conn.down = False
    down_cn = [e for e in await cn_tester._watch_check() if e.kind == "link_down"]
    assert [e.peer for e in down_cn] == [US]

    # Round 3: back; the next test is receipted in time: link restored, once, both sides.
    relay.clock.set(NOW + 2 * HOUR + 7 * MINUTE)
    assert await tester.tick() == []  # sends round 3
    await cn.fetch()
    relay.clock.advance(MINUTE)
    events = await tester.tick()
    assert [(e.kind, e.peer) for e in events] == [("link_restored", CN)]
    relay.clock.advance(MINUTE)
    assert await tester.tick() == []
    assert link_events(us) == [("link_down", CN, "sender"), ("link_restored", CN, "sender")]
    assert link_events(cn) == [("link_down", US, "recipient"),
                               ("link_restored", US, "recipient")]
    assert cn.inbox() == [] and not [i for i in await cn.fetch()
                                     if isinstance(i, ReceivedNotice)]

    # Nobody paged as real: a link test nobody ever answers escalates (low: 72 h) only to
    # the routes that take tests, never to real_only ones.
    await LinkTester(us, (MSS,), every_ms=HOUR, window_ms=5 * MINUTE).tick()
    rows = await relay.advance(73 * HOUR)
    test_rows = [x for x in rows if x.status == "test"]
    assert test_rows, "the unanswered link test did not escalate at all"
    for x in test_rows:
        assert MSS not in x.contacts and "pager" not in x.webhooks
        assert x.webhooks == ("audit",)


async def test_unanswered_link_test_is_not_restored_by_its_late_receipt(
        relay: InProcessRelay, desks: Desks) -> None:
    us, _ = desks(US)
    cn, cn_conn = desks(CN)
    tester = LinkTester(us, (CN,), every_ms=HOUR, window_ms=5 * MINUTE)
    cn_conn.down = True
    await tester.tick()
    relay.clock.advance(6 * MINUTE)
    assert [e.kind for e in await tester.tick()] == ["link_down"]
    cn_conn.down = False
    await cn.fetch()  # the receipt comes, after the window
    relay.clock.advance(MINUTE)
    assert await tester.tick() == [], "a late receipt restored the link"
