"""A model-based test of the notice lifecycle: notices, receipts, acks, replies, time,
escalation ticks and restarts, in every order (SECURITY.md 4.3 and plan T8).

A Hypothesis ``RuleBasedStateMachine`` drives the real Relay, SqliteStore and Escalator
in-process on a manual clock (:class:`tests.relay.inproc.InProcessRelay`) and keeps its own
model of what must exist. Short policies (minutes, not hours) make the ladders run within
the explored time, and a restart may switch to another policy table, so that "frozen at
acceptance" is tested too. After every step the relay's database (read with sqlite3 from
outside) must agree with the model:

* each (notice, recipient) only moves forward: accepted -> delivered -> acknowledged, and
  exactly as the model says; an ack is recorded only for a recipient, by that recipient,
  and verifies with ``Confirmation.verify``; refused acks (another desk, someone else's
  signature, an unknown notice, another digest) change nothing;
* per (notice, recipient, track) the escalation levels run 1..n with no gap except those
  counted in ``missed_levels``, never above the frozen ``max_level``, never twice; the last
  is marked final exactly at ``max_level``;
* no escalation of a ladder met before its deadline; none after it was met; each at or
  after its scheduled time ``deadline + (level - 1) * repeat``; each ladder stands at the
  level due at the last tick (or, once met, at the moment it was met); a met ladder that had
  escalated is resolved once, at the moment it was met;
* every escalation statement verifies with the relay key of its time and reaches the
  sender's and the recipient's streams;
* after a clock advance past every ladder and a tick, every open ladder is at its maximum.

CI runs ``HOTLINE_MODEL_EXAMPLES`` (default 100) examples of up to ``HOTLINE_MODEL_STEPS``
(default 30) steps, about 25 s. A longer run, for example the plan's 10,000::

    HOTLINE_MODEL_EXAMPLES=10000 HOTLINE_MODEL_STEPS=50 \\
        python -m pytest tests/relay/test_lifecycle_model.py -q -p no:cacheprovider

The default run is derandomized (the same sequences every time); with
``HOTLINE_MODEL_RANDOM=1`` each run explores new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import sys
import tempfile
import tomllib
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from keys import Confirmation, Envelope, RelayCard
from keys.ids import SEVERITIES, STATUSES
from keys.receipts import EscalationStatement
from relay.errors import RelayError
from relay.policy import HOUR, MINUTE, Policy, PolicyTable, levels_due
from tests.factory import DAY, NOW, Federation
from tests.relay.inproc import InProcessRelay

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    # Keep Hypothesis's caches out of the repository (see tests/keys/conftest.py).
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / f"hotline-hypothesis-{os.getuid()}")

T = TypeVar("T")

DESKS = ("us.caisi", "us.nsc", "cn.cac", "cn.mss")
#: Keys are made once; each example gets a fresh relay and database.
FED = Federation.create(desks=DESKS)

#: Short ladders: escalations happen within minutes of relay time. cn.mss has its own
#: critical ladder; low has a single level.
POLICY_A = """\
[relay]
id = "test-relay"

[policy.critical]
ack_window = "1m"
repeat_every = "30s"
max_level = 3
response_window = "5m"

[policy.high]
ack_window = "5m"
repeat_every = "2m"
max_level = 4
response_window = "20m"

[policy.medium]
ack_window = "30m"
repeat_every = "10m"
max_level = 2
response_window = "none"

[policy.low]
ack_window = "1h"
repeat_every = "1h"
max_level = 1
response_window = "none"

[policy.overrides."cn.mss".critical]
ack_window = "2m"
repeat_every = "20s"
max_level = 5
"""
#: What a restart may switch to: other windows, other maxima (notices accepted before keep
#: the ladders frozen when they were accepted).
POLICY_B = """\
[relay]
id = "test-relay"

[policy.critical]
ack_window = "90s"
repeat_every = "45s"
max_level = 2
response_window = "3m"

[policy.high]
ack_window = "3m"
repeat_every = "1m"
max_level = 6
response_window = "none"

[policy.medium]
ack_window = "20m"
repeat_every = "5m"
max_level = 3
response_window = "1h"

[policy.low]
ack_window = "2h"
repeat_every = "30m"
max_level = 2
response_window = "none"

[policy.overrides."us.nsc".high]
ack_window = "1m"
repeat_every = "15s"
max_level = 8
"""
POLICIES = {"A": POLICY_A, "B": POLICY_B}


def policy_table(toml: str) -> PolicyTable:
    return PolicyTable.parse(tomllib.loads(toml).get("policy"))


def longest_ladder(tables: list[PolicyTable]) -> int:
    """Relay time from acceptance to the last level of the longest ladder of any table."""
    policies: list[Policy] = []
    for t in tables:
        policies.extend(t.by_severity.values())
        for per_severity in t.overrides.values():
            policies.extend(per_severity.values())
    return max(max(p.ack_window_ms, p.response_window_ms or 0) + (p.max_level - 1) * p.repeat_ms
               for p in policies)


DRAIN_MS = longest_ladder([policy_table(t) for t in POLICIES.values()]) + MINUTE
#: EK certificates of the test federation last 30 days: stay well inside them.
MAX_RELAY_TIME = NOW + 20 * DAY

EXAMPLES = int(os.environ.get("HOTLINE_MODEL_EXAMPLES", "100"))
STEPS = int(os.environ.get("HOTLINE_MODEL_STEPS", "30"))
RANDOM = os.environ.get("HOTLINE_MODEL_RANDOM", "") == "1"

#: Mostly steps within a ladder (seconds to minutes), sometimes hours past whole ladders.
advance_ms = st.integers(0, 9).flatmap(lambda n: (
    st.sampled_from([0, 1, 999, 1000, 15_000, 20_000, 30_000, 45_000, 60_000, 90_000])
    if n < 3 else st.integers(0, 3 * MINUTE) if n < 8 else st.integers(0, 4 * HOUR)))


# --------------------------------------------------------------------------- the model


@dataclass
class Ladder:
    """One deadline ladder, frozen at acceptance."""

    due_at: int
    repeat_ms: int
    max_level: int
    met_at: int | None = None


@dataclass
class Notice:
    env: Envelope
    sender: str
    recipients: tuple[str, ...]
    accepted_at: int
    receipts: set[str] = field(default_factory=set)
    acks: dict[str, int] = field(default_factory=dict)  # recipient -> when acknowledged

    @property
    def notice_id(self) -> bytes:
        return self.env.notice_id


Key = tuple[bytes, str, str]  # (notice id, recipient, track)
RANK = {"accepted": 0, "delivered": 1, "acknowledged": 2}


class LifecycleModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="hotline-model-"))
        self.policy_name = "A"
        self.table = policy_table(POLICY_A)
        self.r = InProcessRelay(self.dir / "relay", FED, POLICY_A)
        self.run(self.r.open())
        #: Every relay card this relay has had (a restart makes a new relay key).
        self.cards: dict[bytes, RelayCard] = {self.r.card.key_id: self.r.card}
        self.notices: dict[bytes, Notice] = {}
        self.ladders: dict[Key, Ladder] = {}
        self.ranks: dict[tuple[bytes, str], int] = {}
        self.last_tick: int | None = None
        self.verified_statements: set[int] = set()
        self.refused = 0
        self.open = True

    # ------------------------------------------------------------------ plumbing
    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def now(self) -> int:
        return self.r.clock.now_ms()

    def db(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.dir / "relay" / "relay.db")) as conn:
            return conn.execute(sql, args).fetchall()

    def teardown(self) -> None:
        try:
            if self.open and sys.exc_info()[1] is None:
                # However the sequence ended (and unless it already failed): past every
                # ladder, one tick leaves every open ladder at its maximum.
                self.drain()
        finally:
            self.open = False
            with contextlib.suppress(Exception):
                self.run(self.r.close())
            self.run(self.loop.shutdown_default_executor())
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def pick_notice(self, data: st.DataObject) -> Notice:
        # In the order they were sent: notice ids are random, so sorting by them would make
        # the same draws pick different notices from one run to the next.
        nid = data.draw(st.sampled_from(list(self.notices)), label="notice")
        return self.notices[nid]

    def accept(self, env: Envelope, sender: str, recipients: tuple[str, ...]) -> None:
        """Record a notice the relay just accepted, with the ladders frozen now."""
        now = self.now()
        n = Notice(env, sender, tuple(sorted(recipients)), now)
        self.notices[env.notice_id] = n
        for r in n.recipients:
            self.ranks[(env.notice_id, r)] = 0
            p = self.table.for_recipient(r, env.header.severity)
            self.ladders[(env.notice_id, r, "ack")] = Ladder(now + p.ack_window_ms, p.repeat_ms,
                                                            p.max_level)
            if p.response_window_ms is not None:
                self.ladders[(env.notice_id, r, "response")] = Ladder(
                    now + p.response_window_ms, p.repeat_ms, p.max_level)

    # ------------------------------------------------------------------ rules
    @initialize(first=st.lists(st.tuples(st.sampled_from(DESKS), st.sampled_from(DESKS),
                                         st.sampled_from(SEVERITIES)), min_size=1, max_size=3))
    def first_notices(self, first: list[tuple[str, str, str]]) -> None:
        for sender, to, severity in first:
            self.send(sender, [to], severity, "actual")

    @rule(sender=st.sampled_from(DESKS),
          to=st.lists(st.sampled_from(DESKS), min_size=1, max_size=3, unique=True),
          severity=st.sampled_from(SEVERITIES), status=st.sampled_from(STATUSES))
    def send(self, sender: str, to: list[str], severity: str, status: str) -> None:
        recipients = tuple(d for d in to if d != sender) or (
            next(d for d in DESKS if d != sender),)
        env = self.run(self.r.send(sender, *recipients, severity=severity, status=status))
        self.accept(env, sender, recipients)

    @precondition(lambda self: self.notices)
    @rule(data=st.data(), severity=st.sampled_from(SEVERITIES), to_sender=st.booleans(),
          from_recipient=st.booleans())
    def reply(self, data: st.DataObject, severity: str, to_sender: bool,
              from_recipient: bool) -> None:
        """A reply to a notice: it meets the responder's response deadline only if the
        responder is a recipient and the reply goes to the original sender."""
        n = self.pick_notice(data)
        pool = n.recipients if from_recipient else DESKS
        responder = data.draw(st.sampled_from(pool), label="responder")
        others = [d for d in DESKS if d not in (responder, n.sender)]
        to = [n.sender] if to_sender and responder != n.sender else []
        to += data.draw(st.lists(st.sampled_from(others), max_size=2, unique=True,
                                 min_size=0 if to else 1), label="also to")
        env = self.run(self.r.send(responder, *to, severity=severity,
                                   in_reply_to=n.notice_id))
        self.accept(env, responder, tuple(to))
        ladder = self.ladders.get((n.notice_id, responder, "response"))
        if ladder is not None and ladder.met_at is None and n.sender in to:
            ladder.met_at = self.now()

    @precondition(lambda self: self.notices)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        n = self.pick_notice(data)
        r = data.draw(st.sampled_from(n.recipients), label="recipient")
        accepted = self.run(self.r.confirm("receipt", r, n.env))
        assert accepted.duplicate == (r in n.receipts)
        n.receipts.add(r)

    @precondition(lambda self: self.notices)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        n = self.pick_notice(data)
        r = data.draw(st.sampled_from(n.recipients), label="recipient")
        accepted = self.run(self.r.ack(r, n.env))
        assert accepted.duplicate == (r in n.acks)
        if r not in n.acks:
            n.acks[r] = self.now()
            ladder = self.ladders[(n.notice_id, r, "ack")]
            assert ladder.met_at is None
            ladder.met_at = self.now()

    @precondition(lambda self: self.notices)
    @rule(data=st.data(), how=st.sampled_from(["not_a_recipient", "signed_by_another",
                                               "unknown_notice", "other_digest"]),
          kind=st.sampled_from(["ack", "receipt"]))
    def wrong_confirmation(self, data: st.DataObject, how: str, kind: str) -> None:
        """A confirmation the relay must refuse; it records nothing."""
        n = self.pick_notice(data)
        nid, digest = n.notice_id, n.env.digest
        if how == "not_a_recipient":  # the sender, or a desk the notice is not addressed to
            signer = caller = data.draw(st.sampled_from(
                [d for d in DESKS if d not in n.recipients]), label="desk")
            expected = {403}
        elif how == "signed_by_another":  # a recipient's signature, another desk's session
            signer = data.draw(st.sampled_from(n.recipients), label="signer")
            caller = data.draw(st.sampled_from([d for d in DESKS if d != signer]), label="caller")
            expected = {403}
        elif how == "unknown_notice":
            signer = caller = data.draw(st.sampled_from(DESKS), label="desk")
            nid = data.draw(st.binary(min_size=16, max_size=16).filter(
                lambda b: any(b) and b not in self.notices), label="notice id")
            expected = {404}
        else:
            signer = caller = data.draw(st.sampled_from(n.recipients), label="recipient")
            digest = bytes([digest[0] ^ 1]) + digest[1:]
            expected = {409}
        c = Confirmation.create(kind, notice_id=nid, digest=digest, sender=n.env.header.sender,
                                me=FED.desks[signer].secrets, at=self.now())
        try:
            self.run(self.r.relay.confirm(self.r.session(caller), c.encode()))
        except RelayError as exc:
            assert exc.status in expected, (how, exc.status, exc.code)
        else:
            raise AssertionError(f"the relay accepted a {kind} it must refuse ({how})")
        self.refused += 1

    @precondition(lambda self: self.now() < MAX_RELAY_TIME)
    @rule(ms=advance_ms, then_tick=st.booleans())
    def advance(self, ms: int, then_tick: bool) -> None:
        self.r.clock.advance(ms)
        if then_tick:
            self.tick()

    @precondition(lambda self: any(x.met_at is None for x in self.ladders.values()))
    @rule(data=st.data(), offset=st.sampled_from([-1000, -1, 0, 1]), then_tick=st.booleans())
    def advance_to_a_deadline(self, data: st.DataObject, offset: int, then_tick: bool) -> None:
        """Move the clock to just before, exactly at or just after a level's due time: the
        races between an ack and an escalation happen at these instants."""
        key = data.draw(st.sampled_from([k for k, x in self.ladders.items()
                                         if x.met_at is None]), label="ladder")
        ladder = self.ladders[key]
        level = data.draw(st.integers(1, ladder.max_level), label="level")
        target = ladder.due_at + (level - 1) * ladder.repeat_ms + offset
        if target > self.now():
            self.r.clock.set(target)
        if then_tick:
            self.tick()

    @rule()
    def tick(self) -> None:
        rows = self.run(self.r.tick())
        self.last_tick = self.now()
        for row in rows:
            assert row.kind == "escalated" and row.at == self.now()

    @rule(policy=st.sampled_from(sorted(POLICIES)))
    def restart(self, policy: str) -> None:
        now = self.now()
        self.run(self.r.restart(POLICIES[policy]))
        assert self.now() == now
        self.policy_name, self.table = policy, policy_table(POLICIES[policy])
        self.cards[self.r.card.key_id] = self.r.card

    def drain(self) -> None:
        """Past the end of every ladder, then a tick."""
        self.r.clock.advance(DRAIN_MS)
        self.tick()
        open_ladders = {k: x for k, x in self.ladders.items() if x.met_at is None}
        levels = self.top_levels()
        for key, ladder in open_ladders.items():
            assert levels.get(key, 0) == ladder.max_level, (key, levels.get(key), ladder)
        finals = {(bytes(r[0]), r[1], r[2]) for r in self.db(
            "SELECT notice_id, recipient, track FROM escalations e JOIN deadlines d"
            " USING (notice_id, recipient, track) WHERE e.kind = 'escalated'"
            " AND e.level = d.max_level")}
        assert set(open_ladders) <= finals

    # ------------------------------------------------------------------ invariants
    def top_levels(self) -> dict[Key, int]:
        return {(bytes(r[0]), r[1], r[2]): r[3] for r in self.db(
            "SELECT notice_id, recipient, track, max(level) FROM escalations"
            " WHERE kind = 'escalated' GROUP BY notice_id, recipient, track")}

    @invariant()
    def deliveries_agree_with_the_model(self) -> None:
        rows = self.db("SELECT notice_id, recipient, sender, delivered_at, acked_at, receipt, ack"
                       " FROM deliveries")
        assert {(bytes(r[0]), r[1]) for r in rows} == set(self.ranks)
        assert {bytes(r[0]) for r in self.db("SELECT notice_id FROM notices")} == set(
            self.notices)
        for nid_b, recipient, sender, delivered_at, acked_at, receipt, ack in rows:
            nid = bytes(nid_b)
            n = self.notices[nid]
            assert sender == n.sender and recipient in n.recipients
            state = ("acknowledged" if acked_at is not None
                     else "delivered" if delivered_at is not None else "accepted")
            expected = ("acknowledged" if recipient in n.acks
                        else "delivered" if recipient in n.receipts else "accepted")
            assert state == expected, (nid.hex(), recipient, state, expected)
            assert RANK[state] >= self.ranks[(nid, recipient)], "a delivery went backwards"
            self.ranks[(nid, recipient)] = RANK[state]
            if acked_at is not None:
                assert acked_at == n.acks[recipient]
                assert delivered_at is not None and delivered_at <= acked_at
            signer = FED.verified(recipient, NOW)
            for kind, blob in (("ack", ack), ("receipt", receipt)):
                assert (blob is not None) == (
                    recipient in (n.acks if kind == "ack" else n.receipts))
                if blob is not None:
                    c = Confirmation.decode(bytes(blob))
                    assert c.kind == kind
                    c.verify(signer, notice_id=nid, digest=n.env.digest,
                             sender=n.sender, recipient=recipient)  # type: ignore[arg-type]

    @invariant()
    def ladders_agree_with_the_model(self) -> None:
        now = self.now()
        rows = self.db("SELECT notice_id, recipient, track, due_at, repeat_ms, max_level, level,"
                       " met_at FROM deadlines")
        assert {(bytes(r[0]), r[1], r[2]) for r in rows} == set(self.ladders)
        escalations: dict[Key, list[tuple[Any, ...]]] = {}
        for row in self.db("SELECT id, notice_id, recipient, track, level, kind, at, statement"
                           " FROM escalations ORDER BY id"):
            escalations.setdefault((bytes(row[1]), row[2], row[3]), []).append(row)
        assert set(escalations) <= set(self.ladders)
        for nid_b, recipient, track, due_at, repeat_ms, max_level, level, met_at in rows:
            key = (bytes(nid_b), recipient, track)
            x = self.ladders[key]
            # Frozen at acceptance, whatever the policy in force now.
            assert (due_at, repeat_ms, max_level) == (x.due_at, x.repeat_ms, x.max_level), key
            assert met_at == x.met_at, (key, met_at, x.met_at)
            history = escalations.get(key, [])
            escalated = [r for r in history if r[5] == "escalated"]
            resolved = [r for r in history if r[5] == "resolved"]
            top = 0
            for esc_id, _n, _r, _t, lvl, _kind, at, statement in escalated:
                st_ = EscalationStatement.decode(bytes(statement))
                assert (st_.kind, st_.level, st_.at, st_.track) == ("escalated", lvl, at, track)
                assert (st_.notice_id, st_.recipient, st_.deadline) == (key[0], recipient,
                                                                         due_at)
                assert lvl == top + st_.missed_levels + 1, (key, top, lvl, st_.missed_levels)
                assert lvl <= max_level, (key, lvl, max_level)
                assert st_.final == (lvl == max_level)
                assert at >= due_at + (lvl - 1) * repeat_ms, ("premature", key, lvl, at)
                assert at <= now
                if met_at is not None:
                    assert at <= met_at, ("escalated after the deadline was met", key)
                self.check_statement(esc_id, st_)
                top = lvl
            assert level == top, (key, level, top)
            if met_at is not None and met_at < due_at:
                assert not escalated, ("met in time yet escalated", key)
            if met_at is not None:
                # Met: the ladder stands at the level due when it was met, and an escalated
                # ladder was resolved once, at that moment, at that level.
                assert top == levels_due(due_at, repeat_ms, max_level, met_at), key
                if top:
                    assert [(r[4], r[6]) for r in resolved] == [(top, met_at)], key
                else:
                    assert not resolved
            else:
                assert not resolved
                floor = 0 if self.last_tick is None else levels_due(
                    due_at, repeat_ms, max_level, self.last_tick)
                assert floor <= top <= levels_due(due_at, repeat_ms, max_level, now), (
                    key, floor, top)

    @invariant()
    def escalations_are_never_duplicated(self) -> None:
        assert not self.db("SELECT notice_id, recipient, track, level, kind FROM escalations"
                           " GROUP BY notice_id, recipient, track, level, kind"
                           " HAVING count(*) > 1")
        # Each escalation reached the sender's and the recipient's streams.
        missing = self.db(
            "SELECT x.id FROM escalations x JOIN notices n USING (notice_id) WHERE"
            " (SELECT count(DISTINCT e.desk) FROM events e WHERE e.escalation_id = x.id"
            "  AND e.desk IN (n.sender, x.recipient)) < 2")
        assert not missing, missing

    def check_statement(self, esc_id: int, statement: EscalationStatement) -> None:
        if esc_id in self.verified_statements:
            return
        card = self.cards.get(statement.relay_kid)
        assert card is not None, "an escalation signed by a key this relay never had"
        statement.verify(card)
        self.verified_statements.add(esc_id)


LifecycleModel.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
    derandomize=not RANDOM,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much])
TestLifecycleModel = LifecycleModel.TestCase


def test_model_policies_escalate_within_the_explored_time() -> None:
    """The model's policies are short enough that the explored time runs ladders through."""
    assert DRAIN_MS <= 5 * HOUR
    for t in POLICIES.values():
        table = policy_table(t)
        assert table.for_recipient("cn.cac", "critical").ack_window_ms <= 2 * MINUTE
