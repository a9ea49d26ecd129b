"""The sender's watchdog: unacknowledged notices are noticed by the client's own clock,
so a relay that stops escalating cannot keep silence quiet."""

from __future__ import annotations

from contextlib import aclosing
from pathlib import Path

import pytest

from client.client import configured_skew_ms
from client.home import Home
from client.items import ClockSkewWarning, EscalationEvent, WatchdogOverdue
from client.watchdog import MINUTE, WatchdogPolicy, overdue
from keys.errors import UsageError
from tests.client.conftest import MakeClient
from tests.client.fakes import FakeRelay
from tests.factory import NOW, YEAR, report

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


async def test_relay_escalation_statement_does_not_count_as_an_acknowledgement(
        make_client: MakeClient, fake_relay: FakeRelay) -> None:
    """A recipient that acked (signed) is no watchdog alarm; one whose escalation the relay
    reported still is: the relay's statement proves it escalated, not that anyone answered."""
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
    alarms = [i for i in items if isinstance(i, WatchdogOverdue)]
    assert [(a.recipient, a.escalated) for a in alarms] == [("cn.mss", True)]
    assert us.watchdog_check() == []


@pytest.mark.parametrize("forged_at", [None, NOW + YEAR, 0],
                         ids=["honest", "a_year_ahead", "zero"])
async def test_relay_dropping_a_critical_notice_and_forging_accepted_at_does_not_silence_watchdog(
        make_client: MakeClient, fake_relay: FakeRelay, forged_at: int | None) -> None:
    """The relay delivers the critical notice to nobody and signs its acceptance a year
    ahead, or at 0: the watchdog counts from this client's own send time, so it raises
    exactly the one alarm an honest relay gets, at the same moment."""
    fake_relay.drop_notices = True
    fake_relay.sign_accepted_at = forged_at
    now = [NOW]
    us = make_client("us.caisi", clock=lambda: now[0])
    sent = await us.send(to=["cn.cac"], severity="critical", notice=report())
    assert sent.accepted_at == (NOW if forged_at is None else forged_at)
    now[0] = CRITICAL_ALARM - 1
    assert [i for i in await us.fetch() if isinstance(i, WatchdogOverdue)] == []
    assert us.watchdog_check() == []
    now[0] = CRITICAL_ALARM
    items = [i async for i in us.events(follow=False)]
    alarms = [i for i in items if isinstance(i, WatchdogOverdue)]
    assert [(a.notice_id, a.recipient, a.deadline) for a in alarms] == [
        (sent.notice_id, "cn.cac", NOW + 15 * MINUTE)]


async def test_relay_resolving_without_an_ack_does_not_silence_watchdog(
        make_client: MakeClient, fake_relay: FakeRelay) -> None:
    """A relay-signed "resolved" for a recipient that never acknowledged is shown, and the
    watchdog still raises its alarm for that recipient."""
    now = [NOW]
    us = make_client("us.caisi", clock=lambda: now[0])
    sent = await us.send(to=["cn.cac"], severity="critical", notice=report())
    fake_relay.resolve(sent.notice_id, "cn.cac")
    now[0] = CRITICAL_ALARM
    items = [i async for i in us.events(follow=False)]
    assert [type(i) for i in items] == [EscalationEvent, WatchdogOverdue]
    resolved, alarm = items
    assert isinstance(resolved, EscalationEvent) and resolved.kind == "resolved"
    assert isinstance(alarm, WatchdogOverdue) and alarm.recipient == "cn.cac"


@pytest.mark.parametrize("forged_at", [NOW + YEAR, 0], ids=["a_year_ahead", "zero"])
async def test_relay_time_beyond_the_allowed_skew_is_shown_as_a_warning_item(
        make_client: MakeClient, fake_relay: FakeRelay, forged_at: int) -> None:
    """The forged acceptance time is not silently used: the send result carries a clock
    skew warning, and the event loop shows it once as an item."""
    fake_relay.sign_accepted_at = forged_at
    us = make_client("us.caisi")
    sent = await us.send(to=["cn.cac"], severity="critical", notice=report())
    expected = ClockSkewWarning(sent.notice_id, "accepted", "us.caisi", forged_at, NOW)
    assert sent.clock_skew == expected
    items = [i async for i in us.events(follow=False)]
    assert [i for i in items if isinstance(i, ClockSkewWarning)] == [expected]
    assert expected.skew_ms == forged_at - NOW
    assert [i async for i in us.events(follow=False)] == []


@pytest.mark.parametrize(("skew_ms", "offset", "warned"), [
    (None, 5 * MINUTE, False), (None, 5 * MINUTE + 1, True), (None, -5 * MINUTE - 1, True),
    (MINUTE, 2 * MINUTE, True), (60 * MINUTE, 30 * MINUTE, False)])
async def test_clock_skew_bound_is_configurable(
        make_client: MakeClient, fake_relay: FakeRelay, skew_ms: int | None, offset: int,
        warned: bool) -> None:
    """Default 5 minutes either way; the client library argument sets another bound."""
    fake_relay.sign_accepted_at = NOW + offset
    us = make_client("us.caisi", max_clock_skew_ms=skew_ms)
    sent = await us.send(to=["cn.cac"], severity="high", notice=report())
    assert (sent.clock_skew is not None) is warned
    assert len(us.state.warnings()) == int(warned)


def test_clock_skew_is_read_from_the_desk_home_config(tmp_path: Path) -> None:
    """``max_clock_skew_seconds`` in config.toml; a bad value is a clear error."""
    home = Home(tmp_path / "home")
    assert configured_skew_ms(home) is None
    home.write_config({"max_clock_skew_seconds": 90})
    assert configured_skew_ms(home) == 90_000
    home.write_config({"max_clock_skew_seconds": "lots"})
    with pytest.raises(UsageError, match="max_clock_skew_seconds"):
        configured_skew_ms(home)


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
