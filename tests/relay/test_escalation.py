"""Deadlines and the escalation ladder, in-process on a manual clock (DESIGN.md,
"Acknowledgements, deadlines and escalation").

Every test runs the real Relay, SqliteStore and Escalator; time moves only by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from keys import Envelope, NotIntendedRecipient, RelayCard, open_envelope
from keys.errors import BadSignature, HotlineError
from keys.frames import Event
from keys.receipts import EscalationStatement
from relay.errors import RelayError
from relay.escalator import iso
from relay.policy import DEFAULTS, HOUR, MINUTE, Policy, levels_due
from relay.store.base import EscalationRow
from tests.factory import DAY, NOW, Federation
from tests.relay.inproc import InProcessRelay

US, CN, MSS, DUTY, NSC = "us.caisi", "cn.cac", "cn.mss", "cn.duty", "us.nsc"
ALL_DESKS = (US, CN, MSS, DUTY, NSC)
#: The relay id the in-process harness signs its card with; the configuration must agree,
#: or the relay's statements would not verify against its own card.
RELAY_HEADER = '[relay]\nid = "test-relay"\n'
SECRET = "0123456789abcdef0123"
CRIT_ACK = 15 * MINUTE
CRIT_REPEAT = 5 * MINUTE
#: For tests that watch the acknowledgement ladder over days: no response ladder beside it.
NO_RESPONSE = '[policy.critical]\nresponse_window = "none"\n'

LOG_FIELDS = {"event", "escalation_id", "relay", "notice_id", "sender", "recipient",
              "severity", "status", "exercise", "track", "level", "missed_levels", "deadline",
              "at", "overdue_ms", "delivered", "final", "contacts", "webhooks",
              "rejected_by_recipient"}

Factory = Callable[..., Awaitable[InProcessRelay]]


@pytest.fixture
async def relays(tmp_path: Path) -> AsyncIterator[Factory]:
    """Open in-process relays (closed at the end): ``await relays(toml, desks=...)``."""
    opened: list[InProcessRelay] = []

    async def make(toml: str = "", *, desks: tuple[str, ...] = ALL_DESKS,
                   name: str = "relay") -> InProcessRelay:
        fed = Federation.create(desks=desks)
        r = await InProcessRelay(tmp_path / name, fed, RELAY_HEADER + toml).open()
        opened.append(r)
        return r

    yield make
    for r in opened:
        await r.close()


# --------------------------------------------------------------------------- helpers


async def restart(r: InProcessRelay, toml: str | None = None, *, down_ms: int = 0) -> None:
    """Stop the relay, keep it down ``down_ms`` of relay time, start it on the same database.

    (The harness's restart makes a new ManualClock at NOW; the time is carried over here.)
    """
    now = r.clock.now_ms()
    await r.close()
    await r.restart(None if toml is None else RELAY_HEADER + toml)
    r.clock.set(now + down_ms)


def db(r: InProcessRelay, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the relay's SQLite database from outside, as an operator would."""
    with contextlib.closing(sqlite3.connect(r.home / "relay.db")) as conn:
        return conn.execute(sql, args).fetchall()


def escalation_rows(r: InProcessRelay, notice_id: bytes | None = None
                    ) -> list[tuple[str, str, int, str, int]]:
    """(recipient, track, level, kind, at) of the escalations table, in id order."""
    sql = "SELECT recipient, track, level, kind, at FROM escalations"
    args: tuple[Any, ...] = ()
    if notice_id is not None:
        sql += " WHERE notice_id = ?"
        args = (notice_id,)
    return [(x[0], x[1], x[2], x[3], x[4]) for x in db(r, sql + " ORDER BY id", args)]


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


def stream(r: InProcessRelay, desk: str, notice_id: bytes | None = None) -> list[Event]:
    events = r.relay.store.events_after(desk, 0, 10_000)
    return [e for e in events if notice_id is None or e.notice_id == notice_id]


def statements(events: list[Event], kind: str = "escalation") -> list[EscalationStatement]:
    return [EscalationStatement.decode(e.attestation) for e in events
            if e.kind == kind and e.attestation is not None]


def log_lines(r: InProcessRelay) -> list[dict[str, Any]]:
    path = r.home / "escalations.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def summary(rows: list[EscalationRow]) -> list[tuple[str, str, int, int]]:
    """(recipient, kind, level, missed_levels) of escalation rows, sorted."""
    return sorted((x.recipient, x.kind, x.level, x.missed_levels) for x in rows)


# --------------------------------------------------------------------------- window boundaries


async def test_ack_one_ms_before_deadline_never_escalates(relays: Factory) -> None:
    """An acknowledgement one millisecond before the deadline meets it: no escalation, ever."""
    r = await relays(NO_RESPONSE)
    env = await r.send(US, CN)
    assert await r.advance(CRIT_ACK - 1) == []
    await r.ack(CN, env)
    assert await r.advance(1) == []
    for _ in range(12):
        assert await r.advance(CRIT_REPEAT) == []
    assert await r.advance(DAY) == []
    assert escalation_rows(r) == []
    assert db(r, "SELECT track, met_at, next_at FROM deadlines WHERE track = 'ack'") == [
        ("ack", NOW + CRIT_ACK - 1, None)]
    assert kinds(stream(r, US)) == ["ack"]
    assert log_lines(r) == []


@pytest.mark.parametrize("tick_first", [False, True])
async def test_ack_exactly_at_deadline_escalation_stands_then_resolves(
        relays: Factory, tick_first: bool) -> None:
    """An ack at exactly the deadline is late: level 1 stands and the ack resolves it."""
    r = await relays()
    env = await r.send(US, CN)
    r.clock.advance(CRIT_ACK)
    if tick_first:
        assert [x.level for x in await r.tick()] == [1]
    await r.ack(CN, env)
    due = NOW + CRIT_ACK
    assert escalation_rows(r) == [(CN, "ack", 1, "escalated", due), (CN, "ack", 1, "resolved", due)]
    for _ in range(4):
        assert await r.advance(CRIT_REPEAT) == []
    assert len(escalation_rows(r)) == 2
    assert sorted(kinds(stream(r, US))) == ["ack", "escalation", "resolved"]
    (resolution,) = statements(stream(r, US), "resolved")
    assert (resolution.level, resolution.at, resolution.deadline) == (1, due, due)


async def test_ack_after_escalations_resolves_at_the_level_reached(relays: Factory) -> None:
    """A late ack after levels 1 and 2 writes one 'resolved' at level 2 and stops the ladder."""
    r = await relays()
    env = await r.send(US, CN)
    assert [x.level for x in await r.advance(CRIT_ACK)] == [1]
    assert [x.level for x in await r.advance(CRIT_REPEAT)] == [2]
    r.clock.advance(3 * MINUTE)
    await r.ack(CN, env)
    acked_at = NOW + CRIT_ACK + CRIT_REPEAT + 3 * MINUTE
    (resolved,) = [x for x in r.store.escalations_of(env.notice_id) if x.kind == "resolved"]
    assert (resolved.level, resolved.at, resolved.deadline, resolved.track, resolved.final) == (
        2, acked_at, NOW + CRIT_ACK, "ack", True)
    assert await r.advance(HOUR) == []
    assert [(x[2], x[3]) for x in escalation_rows(r)] == [
        (1, "escalated"), (2, "escalated"), (2, "resolved")]
    assert db(r, "SELECT met_at, next_at, level FROM deadlines WHERE track = 'ack'") == [
        (acked_at, None, 2)]


async def test_ack_after_last_level_still_resolves(relays: Factory) -> None:
    """An ack after the ladder reached max_level still resolves it, at that level."""
    r = await relays('[policy.critical]\nmax_level = 2\n')
    env = await r.send(US, CN)
    await r.advance(CRIT_ACK)
    await r.advance(CRIT_REPEAT)
    assert await r.advance(HOUR) == []
    await r.ack(CN, env)
    assert [(x[2], x[3]) for x in escalation_rows(r)] == [
        (1, "escalated"), (2, "escalated"), (2, "resolved")]


# --------------------------------------------------------------------------- the ladder


async def test_repeats_every_interval_up_to_max_level_and_never_beyond(relays: Factory) -> None:
    """Level k fires exactly at deadline + (k-1) * repeat, up to max_level, then never again."""
    r = await relays(NO_RESPONSE + 'max_level = 3\n')
    env = await r.send(US, CN)
    due = NOW + CRIT_ACK
    for level in (1, 2, 3):
        at = due + (level - 1) * CRIT_REPEAT
        r.clock.set(at - 1)
        assert await r.tick() == []
        r.clock.set(at)
        (row,) = await r.tick()
        assert (row.kind, row.level, row.missed_levels, row.at, row.deadline, row.final) == (
            "escalated", level, 0, at, due, level == 3)
        assert await r.tick() == []
    for _ in range(5):
        assert await r.advance(CRIT_REPEAT) == []
    assert await r.advance(30 * DAY) == []
    assert [x[2] for x in escalation_rows(r, env.notice_id)] == [1, 2, 3]
    assert db(r, "SELECT level, next_at FROM deadlines WHERE track = 'ack'") == [(3, None)]
    assert [s.level for s in statements(stream(r, US))] == [1, 2, 3]


async def test_per_desk_override_escalates_recipients_at_different_times(
        relays: Factory) -> None:
    """Two recipients of one notice, one with a per-desk override, escalate on their own ladders."""
    r = await relays('[policy.overrides."cn.mss".critical]\n'
                     'ack_window = "30m"\nrepeat_every = "10m"\n')
    env = await r.send(US, CN, MSS)
    seen: dict[int, list[tuple[str, int]]] = {}
    for minute in range(1, 41):
        r.clock.set(NOW + minute * MINUTE - 1)
        assert await r.tick() == [], minute
        r.clock.set(NOW + minute * MINUTE)
        rows = await r.tick()
        if rows:
            seen[minute] = sorted((x.recipient, x.level) for x in rows)
    assert seen == {
        15: [(CN, 1)], 20: [(CN, 2)], 25: [(CN, 3)], 30: [(CN, 4), (MSS, 1)],
        35: [(CN, 5)], 40: [(CN, 6), (MSS, 2)],
    }
    status = r.relay.status(r.session(US), env.notice_id)
    assert status.policy == {
        CN: DEFAULTS["critical"].to_wire(),
        MSS: Policy(30 * MINUTE, 10 * MINUTE, 10, 4 * HOUR).to_wire(),
    }
    # The override is for critical only: a high notice to cn.mss uses the default 1 h window.
    high = await r.send(US, MSS, severity="high")
    assert db(r, "SELECT due_at, repeat_ms FROM deadlines WHERE notice_id = ? AND track = 'ack'",
              (high.notice_id,)) == [(r.clock.now_ms() + HOUR, 30 * MINUTE)]


async def test_delivery_receipt_alone_does_not_stop_the_deadline(relays: Factory) -> None:
    """A delivery receipt without an acknowledgement still escalates, marked delivered."""
    r = await relays()
    env = await r.send(US, CN, MSS)
    r.clock.advance(MINUTE)
    await r.confirm("receipt", CN, env)
    assert await r.advance(CRIT_ACK - MINUTE - 1) == []
    rows = await r.advance(1)
    assert sorted((x.recipient, x.level, x.delivered) for x in rows) == [
        (CN, 1, True), (MSS, 1, False)]
    rows = await r.advance(CRIT_REPEAT)
    assert sorted((x.recipient, x.level, x.delivered) for x in rows) == [
        (CN, 2, True), (MSS, 2, False)]
    (line,) = [x for x in log_lines(r) if x["recipient"] == CN and x["level"] == 1]
    assert line["delivered"] is True


async def test_one_recipient_s_ack_stops_only_its_own_ladder(relays: Factory) -> None:
    """With two recipients, the one that acknowledged stops escalating; the other goes on."""
    r = await relays()
    env = await r.send(US, CN, MSS)
    r.clock.advance(MINUTE)
    await r.ack(CN, env)
    rows = await r.advance(CRIT_ACK - MINUTE)
    assert [(x.recipient, x.level) for x in rows] == [(MSS, 1)]
    rows = await r.advance(CRIT_REPEAT)
    assert [(x.recipient, x.level) for x in rows] == [(MSS, 2)]
    assert {x[0] for x in escalation_rows(r)} == {MSS}


async def test_receipt_after_the_ack_is_not_an_error(relays: Factory) -> None:
    """A delivery receipt that arrives after the acknowledgement (which already proved
    delivery) is answered, not failed, and changes no deadline."""
    r = await relays()
    env = await r.send(US, CN)
    await r.advance(CRIT_ACK)
    r.clock.advance(MINUTE)
    await r.ack(CN, env)
    before = escalation_rows(r)
    r.clock.advance(MINUTE)
    answer = await r.confirm("receipt", CN, env)
    assert answer.attestation
    assert escalation_rows(r) == before
    (delivery,) = r.store.deliveries(env.notice_id)
    assert delivery.acked_at == NOW + CRIT_ACK + MINUTE
    assert delivery.delivered_at is not None and delivery.delivered_at <= delivery.acked_at + MINUTE
    assert await r.advance(HOUR) == []


# --------------------------------------------------------------------------- frozen policy


async def test_policy_in_force_at_acceptance_is_frozen_across_restart(relays: Factory) -> None:
    """After a restart with new windows, a running ladder keeps its old ones; new notices
    use the new ones; each notice's status shows the policy frozen with it."""
    r = await relays('[policy.critical]\nack_window = "15m"\nrepeat_every = "5m"\n')
    old = await r.send(US, CN)
    r.clock.advance(MINUTE)
    await restart(r, '[policy.critical]\nack_window = "1h"\nrepeat_every = "20m"\n'
                     'max_level = 2\nresponse_window = "none"\n')
    new = await r.send(US, CN)
    old_policy = Policy(15 * MINUTE, 5 * MINUTE, 10, 4 * HOUR)
    new_policy = Policy(HOUR, 20 * MINUTE, 2, None)
    assert r.relay.status(r.session(US), old.notice_id).policy == {CN: old_policy.to_wire()}
    assert r.relay.status(r.session(CN), new.notice_id).policy == {CN: new_policy.to_wire()}

    fired: dict[bytes, list[tuple[int, int]]] = {old.notice_id: [], new.notice_id: []}
    for minute in range(2, 180):
        r.clock.set(NOW + minute * MINUTE)
        for row in await r.tick():
            fired[row.notice_id].append((row.level, (row.at - NOW) // MINUTE))
    assert fired[old.notice_id] == [(k, 15 + 5 * (k - 1)) for k in range(1, 11)]
    assert fired[new.notice_id] == [(1, 61), (2, 81)]
    # The old notice's response ladder (4 h, frozen) still runs; the new one has none.
    tracks = db(r, "SELECT notice_id, track FROM deadlines ORDER BY track")
    assert sorted((bytes(n) == old.notice_id, t) for n, t in tracks) == [
        (False, "ack"), (True, "ack"), (True, "response")]
    # A second restart with yet another policy changes nothing for either.
    await restart(r, '[policy.critical]\nack_window = "1s"\nrepeat_every = "1s"\n')
    assert r.relay.status(r.session(US), old.notice_id).policy == {CN: old_policy.to_wire()}
    assert r.relay.status(r.session(US), new.notice_id).policy == {CN: new_policy.to_wire()}


# --------------------------------------------------------------------------- restarts


async def test_restart_catch_up_escalates_once_at_the_current_level(relays: Factory) -> None:
    """After an hour down, one tick writes ONE escalation at the current level with the
    number of levels skipped, and nothing more until the next repeat."""
    r = await relays('[policy.critical]\nmax_level = 20\n')
    env = await r.send(US, CN)
    assert [x.level for x in await r.advance(CRIT_ACK)] == [1]
    r.clock.advance(MINUTE)                       # NOW + 16 min
    await restart(r, down_ms=HOUR)                # up again at NOW + 76 min
    now = NOW + 76 * MINUTE
    expected = levels_due(NOW + CRIT_ACK, CRIT_REPEAT, 20, now)
    assert expected == 13
    (row,) = await r.tick()
    assert (row.kind, row.level, row.missed_levels, row.at, row.deadline, row.final) == (
        "escalated", 13, 11, now, NOW + CRIT_ACK, False)
    assert await r.tick() == []
    next_due = NOW + CRIT_ACK + 13 * CRIT_REPEAT  # NOW + 80 min
    r.clock.set(next_due - 1)
    assert await r.tick() == []
    r.clock.set(next_due)
    (row,) = await r.tick()
    assert (row.level, row.missed_levels) == (14, 0)
    assert [x[2] for x in escalation_rows(r, env.notice_id)] == [1, 13, 14]
    assert [(s.level, s.missed_levels) for s in statements(stream(r, US))] == [
        (1, 0), (13, 11), (14, 0)]
    assert [(x["level"], x["missed_levels"]) for x in log_lines(r)] == [
        (1, 0), (13, 11), (14, 0)]


async def test_restart_after_a_long_outage_fires_the_final_level_once(relays: Factory) -> None:
    """Down for a day before the first level: one catch-up escalation at max_level, then none."""
    r = await relays(NO_RESPONSE)
    env = await r.send(US, CN)
    r.clock.advance(MINUTE)
    await restart(r, down_ms=DAY)
    (row,) = await r.tick()
    assert (row.level, row.missed_levels, row.final) == (10, 9, True)
    for _ in range(3):
        assert await r.advance(HOUR) == []
    await restart(r, down_ms=DAY)
    assert await r.tick() == []
    assert [x[2] for x in escalation_rows(r, env.notice_id)] == [10]


async def test_no_duplicate_level_across_repeated_restarts_and_ticks(relays: Factory) -> None:
    """Restarting and ticking again at the same instants never writes or pushes a level twice."""
    r = await relays('[policy.critical]\nmax_level = 30\n')
    a = await r.send(US, CN, MSS)
    r.clock.advance(2 * MINUTE)
    b = await r.send(US, CN, severity="critical")
    steps = [3 * MINUTE, 12 * MINUTE, 0, 2 * MINUTE, 7 * MINUTE, 0, 11 * MINUTE, 1, 30 * MINUTE,
             0, 5 * MINUTE - 1, 1]
    for i, step in enumerate(steps):
        r.clock.advance(step)
        await r.tick()
        await r.tick()
        if i % 2 == 0:
            await restart(r)
            await r.tick()
    final = r.clock.now_ms()
    dups = db(r, "SELECT notice_id, recipient, track, level, kind, count(*) FROM escalations"
                 " GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1")
    assert dups == []
    for env, sent_at in ((a, NOW), (b, NOW + 2 * MINUTE)):
        for desk in env.header.recipients:
            levels = [x[2] for x in escalation_rows(r, env.notice_id) if x[0] == desk]
            assert levels == sorted(set(levels)), (desk, levels)
            assert levels[-1] == levels_due(sent_at + CRIT_ACK, CRIT_REPEAT, 30, final)
    total = len(escalation_rows(r))
    # Every committed escalation was pushed to the sender once and logged once.
    pushed = statements(stream(r, US))
    assert len(pushed) == total
    assert len({(s.notice_id, s.recipient, s.level) for s in pushed}) == total
    ids = [x["escalation_id"] for x in log_lines(r)]
    assert len(ids) == total == len(set(ids))


async def test_a_level_claimed_twice_is_written_and_pushed_once(relays: Factory) -> None:
    """If a ladder's stored level lags behind its escalations (two nodes racing on one
    deadline), claiming the same level again writes, pushes and logs nothing."""
    r = await relays()
    env = await r.send(US, CN)
    (first,) = await r.advance(CRIT_ACK)
    pushed = len(stream(r, US)) + len(stream(r, CN))
    lines = log_lines(r)
    with contextlib.closing(sqlite3.connect(r.home / "relay.db")) as conn:
        conn.execute("UPDATE deadlines SET level = 0, next_at = due_at WHERE track = 'ack'")
        conn.commit()
    assert await r.tick() == []
    assert len(stream(r, US)) + len(stream(r, CN)) == pushed
    assert log_lines(r) == lines
    assert [x[2:4] for x in escalation_rows(r, env.notice_id)] == [(1, "escalated")]
    # The ladder carries on from the level that was written.
    (second,) = await r.advance(CRIT_REPEAT)
    assert (second.level, second.missed_levels) == (2, 0)
    assert first.id != second.id


# --------------------------------------------------------------------------- the ack race


def _check_race(r: InProcessRelay, env: Envelope) -> bool:
    """The race invariant; returns whether the escalation stood."""
    (delivery,) = r.store.deliveries(env.notice_id)
    acked = delivery.acked_at
    assert acked is not None
    due = r.store.get_notice(env.notice_id).accepted_at + CRIT_ACK  # type: ignore[union-attr]
    rows = r.store.escalations_of(env.notice_id)
    escalated = [x for x in rows if x.kind == "escalated"]
    resolved = [x for x in rows if x.kind == "resolved"]
    if not escalated:
        assert acked < due and resolved == []
        return False
    (esc,) = escalated
    (res,) = resolved
    assert esc.level == res.level == 1
    assert due <= esc.at <= acked, "an escalation after the ack was recorded"
    assert res.at == acked
    return True


@pytest.mark.parametrize("offset", [-1, 0, 1])
@pytest.mark.parametrize("ack_first", [True, False])
async def test_ack_and_tick_race_at_the_deadline(relays: Factory, offset: int,
                                                 ack_first: bool) -> None:
    """Ack and tick issued together near the deadline: either the ack was in time (no
    escalation) or the escalation stands and a resolution follows, never the reverse."""
    r = await relays()
    env = await r.send(US, CN)
    r.clock.set(NOW + CRIT_ACK + offset)
    calls = [r.ack(CN, env), r.tick()]
    await asyncio.gather(*(calls if ack_first else calls[::-1]))
    stood = _check_race(r, env)
    assert stood == (offset >= 0)
    assert await r.advance(HOUR) == []
    assert len(r.store.escalations_of(env.notice_id)) == (2 if stood else 0)


@pytest.mark.parametrize("start", range(-6, 3))
async def test_ack_and_tick_race_on_a_moving_clock(relays: Factory, start: int) -> None:
    """With time moving at every read, concurrent acks and ticks still keep the invariant."""
    r = await relays()
    env = await r.send(US, CN)
    counter = itertools.count()
    base = NOW + CRIT_ACK + start
    r.clock.now_ms = lambda: base + next(counter)  # type: ignore[method-assign]
    await asyncio.gather(r.tick(), r.ack(CN, env), r.tick())
    _check_race(r, env)
    r.clock.now_ms = lambda: base + HOUR  # type: ignore[method-assign]
    assert await r.tick() == []


# --------------------------------------------------------------------------- exercise and test


EXERCISE_ROUTING = f"""
[[escalation.contacts]]
recipient = "cn.cac"
notify = ["cn.mss"]
real_only = true

[[escalation.contacts]]
recipient = "cn.cac"
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


async def test_exercise_and_test_notices_escalate_alike_but_never_page_as_real(
        relays: Factory) -> None:
    """Exercise/test notices escalate on the same ladder, say so in statements and log lines,
    and skip real_only webhooks and contacts; actual notices reach all of them."""
    r = await relays(EXERCISE_ROUTING)
    envs = {status: await r.send(US, CN, status=status) for status in ("actual", "exercise",
                                                                       "test")}
    by_id = {env.notice_id: status for status, env in envs.items()}
    for level in (1, 2):
        rows = await r.advance(CRIT_ACK if level == 1 else CRIT_REPEAT)
        assert sorted((by_id[x.notice_id], x.level) for x in rows) == [
            ("actual", level), ("exercise", level), ("test", level)]
        for row in rows:
            real = row.status == "actual"
            assert row.status == by_id[row.notice_id]
            assert row.contacts == ((MSS, DUTY) if real else (DUTY,))
            assert row.webhooks == (("pager", "audit") if real else ("audit",))
    for status, env in envs.items():
        r.clock.advance(1)
        await r.ack(CN, env)
        (st,) = statements(stream(r, US, env.notice_id), "resolved")
        assert st.status == status

    outbox = db(r, "SELECT x.notice_id, x.kind, x.level, o.webhook FROM outbox o"
                   " JOIN escalations x ON x.id = o.escalation_id")
    for status, env in envs.items():
        hooks = sorted((k, lvl, w) for n, k, lvl, w in outbox if bytes(n) == env.notice_id)
        names = ["audit", "pager"] if status == "actual" else ["audit"]
        assert hooks == sorted([(k, lvl, w) for k, lvl in (("escalated", 1), ("escalated", 2),
                                                            ("resolved", 2)) for w in names])
        sts = statements(stream(r, US, env.notice_id))
        assert [(s.status, s.level) for s in sts] == [(status, 1), (status, 2)]
        lines = [x for x in log_lines(r) if x["notice_id"] == env.notice_id.hex()]
        assert [(x["event"], x["status"], x["exercise"]) for x in lines] == [
            (e, status, status != "actual") for e in ("notice.escalated", "notice.escalated",
                                                      "escalation.resolved")]
    mss = stream(r, MSS)
    assert {e.notice_id for e in mss} == {envs["actual"].notice_id}
    assert kinds(mss) == ["escalation", "escalation", "resolved"]
    duty = stream(r, DUTY)
    assert sorted(kinds(duty)) == ["escalation"] * 6 + ["resolved"] * 3


# --------------------------------------------------------------------------- who hears of it


CONTACTS = '[[escalation.contacts]]\nrecipient = "cn.cac"\nnotify = ["cn.mss"]\n'


async def test_escalation_contact_gets_metadata_only_and_cannot_open_the_notice(
        relays: Factory) -> None:
    """A configured contact gets an 'escalation' event carrying only the relay's statement,
    and can neither decrypt nor fetch the notice."""
    r = await relays(CONTACTS)
    env = await r.send(US, CN)
    other = await r.send(US, NSC)  # not covered by the rule
    assert stream(r, MSS) == []
    await r.advance(CRIT_ACK)
    (event,) = stream(r, MSS)
    assert (event.kind, event.notice_id) == ("escalation", env.notice_id)
    assert event.envelope is None and event.signer_cert is None and event.confirmation is None
    assert event.attestation is not None
    st = EscalationStatement.decode(event.attestation)
    st.verify(r.card)
    assert (st.kind, st.sender, st.recipient, st.level, st.notice_id) == (
        "escalated", US, CN, 1, env.notice_id)
    assert other.notice_id not in {e.notice_id for e in stream(r, MSS)}
    with pytest.raises(NotIntendedRecipient):
        open_envelope(env, me=r.fed.desks[MSS].secrets, sender=r.fed.verified(US))
    with pytest.raises(RelayError) as info:
        r.relay.envelope(r.session(MSS), env.notice_id)
    assert info.value.status == 404
    with pytest.raises(RelayError) as info:
        r.relay.status(r.session(MSS), env.notice_id)
    assert info.value.status == 404
    # The late ack's resolution reaches the contact too, again as metadata only.
    await r.ack(CN, env)
    assert kinds(stream(r, MSS)) == ["escalation", "resolved"]
    assert all(e.envelope is None for e in stream(r, MSS))


async def test_contacts_and_webhooks_from_level(relays: Factory) -> None:
    """A contact or webhook with from_level = 2 hears nothing of level 1, and hears level 2."""
    r = await relays('[[escalation.contacts]]\nrecipient = "*"\nnotify = ["cn.mss"]\n'
                     f'from_level = 2\n[[webhooks]]\nname = "late"\n'
                     f'url = "http://127.0.0.1:9/x"\nsecret = "{SECRET}"\nfrom_level = 2\n')
    env = await r.send(US, CN)
    (first,) = await r.advance(CRIT_ACK)
    assert (first.contacts, first.webhooks) == ((), ())
    assert stream(r, MSS) == []
    (second,) = await r.advance(CRIT_REPEAT)
    assert (second.contacts, second.webhooks) == ((MSS,), ("late",))
    assert [(e.kind, e.notice_id) for e in stream(r, MSS)] == [("escalation", env.notice_id)]
    assert db(r, "SELECT x.level, o.webhook FROM outbox o JOIN escalations x"
                 " ON x.id = o.escalation_id") == [(2, "late")]


async def test_recipient_escalation_event_re_pushes_the_notice(relays: Factory) -> None:
    """The recipient's 'escalation' event carries the notice again, and it still opens."""
    r = await relays()
    env = await r.send(US, CN, title="Re-pushed notice canary")
    await r.advance(CRIT_ACK)
    notice_event, escalation = stream(r, CN)
    assert (notice_event.kind, escalation.kind) == ("notice", "escalation")
    assert escalation.envelope == env.raw
    assert escalation.signer_cert == notice_event.signer_cert is not None
    assert escalation.attestation is not None
    st = EscalationStatement.decode(escalation.attestation)
    st.verify(r.card)
    assert (st.recipient, st.level) == (CN, 1)
    opened = open_envelope(Envelope.decode(escalation.envelope), me=r.fed.desks[CN].secrets,
                           sender=r.fed.verified(US))
    assert opened.report.title == "Re-pushed notice canary"


async def test_sender_gets_a_statement_that_verifies_with_the_relay_card(
        relays: Factory) -> None:
    """The sender's stream gets the relay-signed statement (no envelope), which verifies with
    the relay's card and not with another relay's."""
    r = await relays()
    env = await r.send(US, CN)
    await r.advance(CRIT_ACK + CRIT_REPEAT + 7)
    (event,) = stream(r, US)
    assert event.kind == "escalation" and event.envelope is None
    assert event.attestation is not None
    st = EscalationStatement.decode(event.attestation)
    st.verify(r.card)
    assert (st.kind, st.notice_id, st.digest, st.sender, st.recipient, st.severity, st.status,
            st.track, st.level, st.missed_levels, st.deadline, st.at, st.delivered) == (
        "escalated", env.notice_id, env.digest, US, CN, "critical", "actual", "ack", 2, 1,
        NOW + CRIT_ACK, NOW + CRIT_ACK + CRIT_REPEAT + 7, False)
    impostor = RelayCard.create("test-relay", nacl.signing.SigningKey.generate(), NOW)
    with pytest.raises(BadSignature):
        st.verify(impostor)
    tampered = bytearray(event.attestation)
    tampered[-1] ^= 1
    with pytest.raises(HotlineError):
        EscalationStatement.decode(bytes(tampered)).verify(r.card)


# --------------------------------------------------------------------------- response track


async def test_reply_within_response_window_meets_the_response_deadline(
        relays: Factory) -> None:
    """A reply from the recipient to the sender in time means no response escalation ever."""
    r = await relays()
    env = await r.send(US, CN)
    r.clock.advance(MINUTE)
    await r.ack(CN, env)
    r.clock.advance(HOUR)
    reply = await r.send(CN, US, in_reply_to=env.notice_id)
    replied_at = NOW + MINUTE + HOUR
    assert db(r, "SELECT met_at, next_at FROM deadlines WHERE notice_id = ?"
                 " AND track = 'response'", (env.notice_id,)) == [(replied_at, None)]
    r.clock.set(NOW + 4 * HOUR - 1)
    await r.tick()
    r.clock.set(NOW + 4 * HOUR)
    await r.tick()
    r.clock.set(NOW + 2 * DAY)
    await r.tick()
    assert escalation_rows(r, env.notice_id) == []
    # The reply itself is a notice with its own deadlines (us.caisi never acked it).
    assert escalation_rows(r, reply.notice_id) != []


@pytest.mark.parametrize("tick_first", [True, False])
async def test_late_reply_resolves_the_running_response_ladder(relays: Factory,
                                                               tick_first: bool) -> None:
    """A reply after the response deadline ends its ladder with 'resolved' at the level reached."""
    r = await relays()
    env = await r.send(US, CN)
    r.clock.advance(MINUTE)
    await r.ack(CN, env)
    r.clock.set(NOW + 4 * HOUR - 1)
    assert await r.tick() == []
    r.clock.set(NOW + 4 * HOUR)
    (row,) = await r.tick()
    assert (row.track, row.level, row.deadline) == ("response", 1, NOW + 4 * HOUR)
    r.clock.set(NOW + 4 * HOUR + CRIT_REPEAT)
    if tick_first:
        (row,) = await r.tick()
        assert (row.track, row.level) == ("response", 2)
        r.clock.advance(2 * MINUTE)
    # Without a tick, the reply at the instant level 2 falls due makes level 2 stand first.
    replied_at = r.clock.now_ms()
    await r.send(CN, US, in_reply_to=env.notice_id)
    assert escalation_rows(r, env.notice_id) == [
        (CN, "response", 1, "escalated", NOW + 4 * HOUR),
        (CN, "response", 2, "escalated", NOW + 4 * HOUR + CRIT_REPEAT),
        (CN, "response", 2, "resolved", replied_at)]
    later = await r.advance(DAY)  # the reply's own ladder may run; the original's does not
    assert [x for x in later if x.notice_id == env.notice_id] == []
    assert len(escalation_rows(r, env.notice_id)) == 3
    (st,) = statements(stream(r, US, env.notice_id), "resolved")
    assert (st.track, st.level, st.at) == ("response", 2, replied_at)
    line = [x for x in log_lines(r) if x["notice_id"] == env.notice_id.hex()][-1]
    assert (line["event"], line["track"], line["level"]) == ("escalation.resolved", "response",
                                                             2)


async def test_reply_by_a_non_recipient_or_to_someone_else_touches_nothing(
        relays: Factory) -> None:
    """A reply from a desk that was not a recipient, or not addressed to the sender, meets no
    deadline: the recipient's response ladder runs on."""
    r = await relays()
    env = await r.send(US, CN)
    r.clock.advance(MINUTE)
    await r.ack(CN, env)
    r.clock.advance(HOUR)
    await r.send(MSS, US, in_reply_to=env.notice_id)   # not a recipient of the original
    await r.send(CN, MSS, in_reply_to=env.notice_id)   # a recipient, but not to the sender
    assert db(r, "SELECT recipient, track, met_at FROM deadlines WHERE notice_id = ?"
                 " ORDER BY track", (env.notice_id,)) == [
        (CN, "ack", NOW + MINUTE), (CN, "response", None)]
    r.clock.set(NOW + 4 * HOUR)
    rows = [x for x in await r.tick() if x.notice_id == env.notice_id]
    assert [(x.recipient, x.track, x.level) for x in rows] == [(CN, "response", 1)]
    assert [x for x in escalation_rows(r, env.notice_id) if x[3] == "resolved"] == []


# --------------------------------------------------------------------------- the log file


async def test_escalation_log_file_lines_in_order_and_never_duplicated(
        relays: Factory) -> None:
    """escalations.jsonl holds one JSON line per escalation and resolution, in order, with the
    documented fields; flushing again (even after rows were marked unlogged) adds nothing."""
    r = await relays()
    env = await r.send(US, CN)
    await r.advance(CRIT_ACK)
    await r.advance(CRIT_REPEAT + 2000)
    r.clock.advance(1000)
    await r.ack(CN, env)
    path = r.home / "escalations.jsonl"
    text = path.read_text()
    lines = [json.loads(x) for x in text.splitlines()]
    due = NOW + CRIT_ACK
    expected = [
        ("notice.escalated", 1, 0, due, 0, False),
        ("notice.escalated", 2, 0, due + CRIT_REPEAT + 2000, CRIT_REPEAT + 2000, False),
        ("escalation.resolved", 2, 0, due + CRIT_REPEAT + 3000, CRIT_REPEAT + 3000, True),
    ]
    assert len(lines) == 3
    for line, (event, level, missed, at, overdue, final) in zip(lines, expected, strict=True):
        assert set(line) == LOG_FIELDS
        assert (line["event"], line["level"], line["missed_levels"], line["at"],
                line["overdue_ms"], line["final"]) == (event, level, missed, iso(at), overdue,
                                                       final)
        assert (line["relay"], line["notice_id"], line["sender"], line["recipient"],
                line["severity"], line["status"], line["exercise"], line["track"],
                line["deadline"], line["delivered"], line["contacts"], line["webhooks"]) == (
            "test-relay", env.notice_id.hex(), US, CN, "critical", "actual", False, "ack",
            iso(due), True if event == "escalation.resolved" else False, [], [])
    ids = [x["escalation_id"] for x in lines]
    assert ids == sorted(ids) and len(set(ids)) == 3

    await r.relay.escalator.flush_log()
    await r.relay.escalator.flush_log()
    assert path.read_text() == text
    # A crash after the commit but before rows were marked logged: after the restart,
    # nothing is written twice.
    with contextlib.closing(sqlite3.connect(r.home / "relay.db")) as conn:
        conn.execute("UPDATE escalations SET logged = 0")
        conn.commit()
    await r.restart()
    await r.relay.escalator.flush_log()
    assert path.read_text() == text
    assert db(r, "SELECT count(*) FROM escalations WHERE logged = 0") == [(0,)]
    # A crash before the lines were written: the missing lines are appended once, in order.
    path.write_text(text.splitlines(keepends=True)[0])
    with contextlib.closing(sqlite3.connect(r.home / "relay.db")) as conn:
        conn.execute("UPDATE escalations SET logged = 0 WHERE id > ?", (ids[0],))
        conn.commit()
    await r.restart()
    await r.relay.escalator.flush_log()
    assert path.read_text() == text
