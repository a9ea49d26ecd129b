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
from client.drills import DrillPlan, Observation, render_text, scorecard
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
    cn_conn.down = True
    await LinkTester(us, (CN,), every_ms=HOUR, window_ms=5 * MINUTE).tick()
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


PLAN = b"""
[drill]
name = "convex-sept"
seed = 4242
start = 2026-09-21
days = 5
severity = "high"
announced = false
per_desk = 2
question = "Which platforms did you contact?"

[window]
days = "weekdays"
start = "09:00"
end = "17:00"

[[participant]]
desk = "cn.cac"
timezone = "Asia/Shanghai"

[[participant]]
desk = "cn.mss"
timezone = "Europe/Berlin"
"""


class Script:
    """Time moves only through ``sleep``: it runs each scripted recipient action at its
    time (the escalator ticking at each step), so that a recipient acts while the drill
    runs."""

    def __init__(self, relay: InProcessRelay) -> None:
        self.relay = relay
        self.actions: list[tuple[int, int, Callable[[], object]]] = []
        self.rows: list[object] = []

    def at(self, when: int, action: Callable[[], object]) -> None:
        self.actions.append((when, len(self.actions), action))
        self.actions.sort(key=lambda a: (a[0], a[1]))

    async def sleep(self, seconds: float) -> None:
        target = self.relay.clock.now_ms() + int(seconds * 1000)
        while self.actions and self.actions[0][0] <= target:
            when, _, action = self.actions.pop(0)
            self.relay.clock.set(max(when, self.relay.clock.now_ms()))
            self.rows += await self.relay.tick()
            result = action()
            if hasattr(result, "__await__"):
                await result  # type: ignore[misc]
        self.relay.clock.set(max(target, self.relay.clock.now_ms()))
        self.rows += await self.relay.tick()


async def test_exercise_plan_on_the_real_path_and_the_scorecard_both_sides_compute(
        relay: InProcessRelay, desks: Desks) -> None:
    from client.drills import Spread, schedule
    from tests.factory import report

    us, _ = desks(US)
    cn, _ = desks(CN)
    mss, _ = desks(MSS)
    plan = DrillPlan.from_toml(PLAN)
    slots = schedule(plan)
    script = Script(relay)
    by_nid = {s.notice_id(plan): s for s in slots}
    reply_of: dict[bytes, bytes] = {}

    async def reply(nid: bytes) -> None:
        sent = await cn.reply(nid, report(title="Answer: platforms A and B", category="other"))
        reply_of[nid] = sent.notice_id

    # What each recipient does, in minutes after its exercise is sent.
    def react(slot: object, nid: bytes) -> None:
        t = relay.clock.now_ms()
        if slot.desk == CN:  # type: ignore[attr-defined]
            script.at(t + 2 * MINUTE, cn.fetch)
            script.at(t + 10 * MINUTE, lambda: cn.ack(nid, message="seen"))
            if slot.index == 0:  # type: ignore[attr-defined]
                script.at(t + 30 * MINUTE, lambda: reply(nid))
        elif slot.index == 0:  # type: ignore[attr-defined]
            script.at(t + 1 * MINUTE, mss.fetch)  # received, never acknowledged: missed
        else:
            script.at(t + 5 * MINUTE, mss.fetch)
            script.at(t + 90 * MINUTE, lambda: mss.ack(nid))  # after the 1 h deadline: late

    sent = await run_plan(us, plan, sleep=script.sleep, on_sent=react)
    await script.sleep(3 * HOUR / 1000)
    assert relay.clock.now_ms() < NOW + 6 * 24 * HOUR
    assert sorted(sent) == sorted(by_nid)
    accepted = {o.notice_id: o.accepted_at for o in us.state.outbox_list()}
    # Each exercise was sent at its scheduled time (the clock only moves by sleep).
    assert all(accepted[nid] == by_nid[nid].at for nid in sent)

    # The schedule is recorded before the first send, with its seed and plan digest.
    recorded = json.loads((us.home.path / "drills" / "convex-sept.schedule.json").read_text())
    assert recorded["seed"] == "4242" and recorded["plan_sha256"] == plan.digest
    assert [(x["desk"], x["at"], x["notice_id"]) for x in recorded["slots"]] == [
        (s.desk, s.at, s.notice_id(plan).hex()) for s in slots]

    # Labelled in the notice itself, with the question; escalated on the ladder as an
    # exercise, never to real_only routes.
    for n in cn.inbox(include_acked=True):
        assert n.status == "exercise" and n.report.title.startswith("[EXERCISE] ")
        assert n.report.question == "Which platforms did you contact?"
    ex_rows = [x for x in script.rows if x.status == "exercise"]  # type: ignore[attr-defined]
    # The ack ladders that ran: cn.mss's (missed and late); cn.cac acknowledged in time.
    assert {x.recipient for x in ex_rows  # type: ignore[attr-defined]
            if x.track == "ack" and x.notice_id in by_nid} == {MSS}  # type: ignore[attr-defined]
    for x in ex_rows:
        assert x.track in ("ack", "response")  # type: ignore[attr-defined]
        assert MSS not in x.contacts and x.webhooks == ("audit",)  # type: ignore[attr-defined]
    lines = [json.loads(x) for x in (relay.home / "escalations.log").read_text().splitlines()] \
        if (relay.home / "escalations.log").exists() else []
    assert all(x["exercise"] for x in lines if x["status"] == "exercise")

    # The scorecard, by hand from what the recipients did (relay-signed times).
    await us.fetch()
    mss_ids = sorted((s for s in slots if s.desk == MSS), key=lambda s: s.index)
    expected = {
        CN: dict(exercises=2, deliver=Spread(2, 2 * MINUTE, 2 * MINUTE, 2 * MINUTE),
                 acknowledge=Spread(2, 10 * MINUTE, 10 * MINUTE, 10 * MINUTE),
                 respond=Spread(1, 30 * MINUTE, 30 * MINUTE, 30 * MINUTE),
                 in_time=2, late=0, missed=0),
        MSS: dict(exercises=2, deliver=Spread(2, 1 * MINUTE, 5 * MINUTE, 5 * MINUTE),
                  acknowledge=Spread(1, 90 * MINUTE, 90 * MINUTE, 90 * MINUTE),
                  respond=Spread(0, None, None, None), in_time=0, late=1, missed=1),
    }
    assert len(mss_ids) == 2
    since = NOW - 24 * HOUR
    card = scorecard(await observations(us, since=since), period="1d")
    print(render_text(card))
    scores = {s.desk: s for s in card}
    assert set(scores) == {CN, MSS}, "a reply counted as a drill of its own"
    for desk, figures in expected.items():
        got = scores[desk]
        assert {k: getattr(got, k) for k in figures} == figures, desk
    # cn.cac computes the same figures for itself from the same statements.
    (own,) = scorecard(await observations(cn, since=since, desk=CN), period="1d")
    assert own == scores[CN]


def test_observation_type_is_what_scorecards_read() -> None:
    o = Observation(b"\1" * 16, US, CN, "exercise", "high", 0, 1, 2)
    assert scorecard([o])[0].exercises == 1
    assert dt.date(2026, 9, 21).weekday() == 0
