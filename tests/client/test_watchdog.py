"""The sender's watchdog: unacknowledged notices are noticed by the client's own clock,
so a relay that stops escalating cannot keep silence quiet."""

from __future__ import annotations

from contextlib import aclosing

from client.items import WatchdogOverdue
from client.watchdog import MINUTE, WatchdogPolicy, overdue
from tests.client.conftest import MakeClient
from tests.client.fakes import FakeRelay
from tests.factory import NOW, report

POLICY = WatchdogPolicy()
CRITICAL_ALARM = NOW + 15 * MINUTE + POLICY.grace_ms


def test_overdue_fires_after_deadline_plus_grace_only() -> None:
    """One ms before deadline + grace nothing; at it, one item; the next alarm is reported."""
    nid = b"\x01" * 16
    candidates = [(nid, "cn.cac", "critical", "actual", NOW)]
    found, nxt = overdue(candidates, CRITICAL_ALARM - 1, POLICY, set())
    assert found == [] and nxt == CRITICAL_ALARM
    found, nxt = overdue(candidates, CRITICAL_ALARM, POLICY, set())
    assert found == [WatchdogOverdue(nid, "cn.cac", "critical", "actual", NOW + 15 * MINUTE,
                                     POLICY.grace_ms)]
    assert nxt is None
    assert overdue(candidates, CRITICAL_ALARM, POLICY, {(nid, "cn.cac")})[0] == []


def test_windows_follow_severity() -> None:
    """A low notice is watched on its 72 h window, not the critical one."""
    nid = b"\x02" * 16
    found, nxt = overdue([(nid, "cn.cac", "low", "actual", NOW)], CRITICAL_ALARM, POLICY, set())
    assert found == [] and nxt == NOW + 72 * 60 * MINUTE + POLICY.grace_ms



async def test_silent_relay_is_noticed_once(make_client: MakeClient) -> None:
    """A sent critical notice with no ack and no relay escalation raises one watchdog item
    per recipient after deadline + grace, and only once."""
    now = [NOW]
    us = make_client("us.caisi", clock=lambda: now[0])
    sent = await us.send(to=["cn.cac", "cn.mss"], severity="critical", notice=report())
    assert us.watchdog_check() == []
    now[0] = CRITICAL_ALARM
    found = us.watchdog_check()
    assert sorted(i.recipient for i in found) == ["cn.cac", "cn.mss"]
    assert {i.notice_id for i in found} == {sent.notice_id}
    assert us.watchdog_check() == []


async def test_acknowledged_or_escalated_recipients_are_not_flagged(
        make_client: MakeClient, fake_relay: FakeRelay) -> None:
    """A recipient that acked, or whose escalation the relay reported, is no watchdog alarm;
    the other recipient still is."""
    now = [NOW]
    us = make_client("us.caisi", clock=lambda: now[0])
    cn = make_client("cn.cac")
    sent = await us.send(to=["cn.cac", "cn.mss"], severity="critical", notice=report())
    async with aclosing(cn.notices(follow=False)) as notices:
        async for n in notices:
            await cn.ack(n.notice_id)
    env = fake_relay.notices[sent.notice_id]
    fake_relay.push("us.caisi", kind="escalation", notice_id=env.notice_id,
                    attestation=fake_relay.attest("escalated", env.notice_id, env.digest,
                                                  "cn.mss", level=1))
    now[0] = CRITICAL_ALARM
    items = [i async for i in us.events(follow=False)]
    assert not any(isinstance(i, WatchdogOverdue) for i in items)
    assert us.watchdog_check() == []


async def test_events_yield_watchdog_items(make_client: MakeClient) -> None:
    """The event iterator hands watchdog items to the caller like any other item."""
    now = [NOW]
    us = make_client("us.caisi", clock=lambda: now[0])
    await us.send(to=["cn.cac"], severity="high", notice=report())
    now[0] = NOW + 60 * MINUTE + POLICY.grace_ms
    items = [i async for i in us.events(follow=False)]
    (alarm,) = [i for i in items if isinstance(i, WatchdogOverdue)]
    assert alarm.recipient == "cn.cac" and alarm.severity == "high"
    assert alarm.overdue_ms == POLICY.grace_ms
