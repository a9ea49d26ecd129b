"""Readiness drills against a relay: link tests, exercise runs, the scorecard's evidence.

* :func:`answer_link_test` is the hook :class:`~client.client.HotlineClient` calls for a
  received notice of status ``test``: the delivery receipt is already sent; it adds an
  acknowledgement signed as ``automatic`` and marks the notice processed. Nobody is paged.
* :class:`LinkTester` sends link tests to one desk every ``every_ms`` and raises
  ``link_down`` / ``link_restored`` (once each) from the receipts it sees, as a log event,
  a metric and an operator item in the desk home's ``drills/events.jsonl``. The recipient
  side's :class:`HeartbeatWatch` raises the same for a counterpart whose next link test
  is overdue.
* :func:`run_plan` sends a drill plan's exercise notices at their scheduled times, the
  schedule recorded (seed, plan digest, every slot) before the first one is sent.
* :func:`observations` reads the verified relay status of this desk's drill notices into
  :class:`client.drills.Observation` rows for :func:`client.drills.scorecard`.

Every wait goes through the injected ``clock``/``sleep`` (tests move time by hand).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile

from client.drills import (
    LINK_TEST_MARK,
    DrillPlan,
    LinkEvent,
    LinkMonitor,
    Observation,
    Slot,
    label,
    link_test_body,
    parse_link_test_body,
    schedule,
)
from keys.envelope import Envelope, Notice
from keys.errors import HotlineError
from keys.keyfile import ensure_private_dir
from keys.receipts import Confirmation
from keys.report import IncidentReport

if TYPE_CHECKING:
    from client.client import HotlineClient

log = logging.getLogger("hotline.drills")

DRILL_DIR = "drills"
EVENTS_FILE = "events.jsonl"
LINKS_FILE = "links.json"
Sleep = Callable[[float], Awaitable[None]]


# ----------------------------------------------------------------------------- records


class DrillLog:
    """The desk home's ``drills/`` folder: ``events.jsonl`` (append-only, fsynced: link
    events, schedules, exercise sends), one ``<plan>.schedule.json`` per drill run and
    ``links.json`` (the recipient side's heartbeat state)."""

    def __init__(self, home: Path) -> None:
        self.dir = home / DRILL_DIR

    def _ready(self) -> Path:
        ensure_private_dir(self.dir)
        return self.dir

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, sort_keys=True) + "\n").encode()
        fd = os.open(self._ready() / EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        path = self.dir / EVENTS_FILE
        if not path.exists():
            return []
        out = []
        for n, raw in enumerate(path.read_text().splitlines(), 1):
            try:
                rec = json.loads(raw)
            except ValueError:
                log.warning("drills.bad_line file=%s line=%d", path, n)
                continue
            if kind is None or rec.get("event") == kind:
                out.append(rec)
        return out

    def write_json(self, name: str, value: Any) -> Path:
        path = self._ready() / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return path

    def read_json(self, name: str) -> Any:
        path = self.dir / name
        return json.loads(path.read_text()) if path.exists() else None


def _record(event: LinkEvent, me: str, side: str) -> dict[str, Any]:
    return {"event": event.kind, "desk": me, "peer": event.peer, "at": event.at,
            "notice_id": event.notice_id.hex(), "down_ms": event.down_ms, "side": side}


# ----------------------------------------------------------------------------- link tests


def link_test_report(to: str, every_ms: int, window_ms: int, now: int) -> IncidentReport:
    return IncidentReport(
        title=f"{label('test')} link test to {to}", summary="Automatic link test: answered "
        "by the recipient's client; no action needed.", category="other", aware_at=now,
        body=link_test_body(every_ms, window_ms), tlp="clear")


async def answer_link_test(client: HotlineClient, notice: Notice) -> bool:
    """Acknowledge a received link test automatically (signed ``automatic``), record its
    arrival for the heartbeat watch; False if the acknowledgement could not be sent now
    (the receipt, already sent, is what the link test measures)."""
    schedule_ = parse_link_test_body(notice.report.body)
    if schedule_ is not None:
        watch = HeartbeatWatch(client.home.path)
        for event in watch.arrived(notice.sender, client._clock(), *schedule_):
            _announce(client, event, "recipient")
    try:
        await client.ack(notice.notice_id, automatic=True)
    except (HotlineError, OSError) as exc:
        log.warning("linktest.ack_failed notice_id=%s sender=%s reason=%s",
                    notice.notice_id.hex(), notice.sender, exc)
        client.state.mark_processed(notice.notice_id)
        return False
    log.info("linktest.answered notice_id=%s sender=%s", notice.notice_id.hex(), notice.sender)
    return True


def _announce(client: HotlineClient, event: LinkEvent, side: str) -> None:
    DrillLog(client.home.path).append(_record(event, client.desk, side))
    if event.kind == "link_down":
        log.warning("link.down desk=%s peer=%s since=%d notice_id=%s side=%s", client.desk,
                    event.peer, event.at, event.notice_id.hex(), side)
    else:
        log.warning("link.restored desk=%s peer=%s at=%d down_ms=%s side=%s", client.desk,
                    event.peer, event.at, event.down_ms, side)


class HeartbeatWatch:
    """The recipient side: when each counterpart's next link test is due (from the last
    one's signed body), and whether it is overdue. Kept in ``drills/links.json``."""

    def __init__(self, home: Path) -> None:
        self.log = DrillLog(home)

    def _load(self) -> dict[str, dict[str, Any]]:
        value = self.log.read_json(LINKS_FILE)
        return value if isinstance(value, dict) else {}

    def arrived(self, sender: str, at: int, every_ms: int, window_ms: int) -> list[LinkEvent]:
        peers = self._load()
        prev = peers.get(sender, {})
        out = []
        if prev.get("down_since") is not None:
            out.append(LinkEvent("link_restored", sender, at, b"\0" * 16,
                                 at - int(prev["down_since"])))
        peers[sender] = {"last_at": at, "every_ms": every_ms, "window_ms": window_ms,
                         "down_since": None}
        self.log.write_json(LINKS_FILE, peers)
        return out

    def check(self, now: int) -> list[LinkEvent]:
        """Counterparts whose next link test has not come by ``last + every + window``
        (each reported once until one arrives again)."""
        peers = self._load()
        out = []
        for sender, p in sorted(peers.items()):
            due = int(p["last_at"]) + int(p["every_ms"]) + int(p["window_ms"])
            if p.get("down_since") is None and now > due:
                p["down_since"] = due
                out.append(LinkEvent("link_down", sender, due, b"\0" * 16))
        if out:
            self.log.write_json(LINKS_FILE, peers)
        return out


#: Beside a stream, how often (at most) the link tester looks at the receipts it got.
STREAM_CHECK_S = 30.0


@dataclass
class LinkTester:
    """Sends a link test to each of ``peers`` every ``every_ms`` and watches the receipts.

    Drive it with :meth:`tick` (one step at the client's clock, returns the link events)
    or :meth:`run` (for ever, or ``rounds`` times). ``window_ms`` is how long a receipt
    may take (default: a tenth of the interval, at least a minute, at most the interval).
    """

    client: HotlineClient
    peers: tuple[str, ...]
    every_ms: int
    window_ms: int = 0
    sleep: Sleep | None = None
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    metrics_file: str | None = None
    _next: int | None = None
    _monitor: LinkMonitor = field(init=False)

    def __post_init__(self) -> None:
        if not self.window_ms:
            self.window_ms = min(self.every_ms, max(60_000, self.every_ms // 10))
        self._monitor = LinkMonitor(self.window_ms)
        r = self.registry
        self.m_sent = Counter("hotline_link_tests_sent", "link tests sent", ["peer"],
                              registry=r)
        self.m_answered = Counter("hotline_link_tests_answered",
                                  "link tests receipted within their window", ["peer"],
                                  registry=r)
        self.m_down = Counter("hotline_link_down_events", "links that went down", ["peer"],
                              registry=r)
        self.m_up = Gauge("hotline_link_up", "1 while the link to the peer is up", ["peer"],
                          registry=r)
        for p in self.peers:
            self.m_up.labels(p).set(1)
        self._watch = HeartbeatWatch(self.client.home.path)

    def _now(self) -> int:
        return self.client._clock()

    async def send_one(self, peer: str) -> bytes | None:
        now = self._now()
        report = link_test_report(peer, self.every_ms, self.window_ms, now)
        try:
            sent = await self.client.send([peer], "low", report, status="test")
        except HotlineError as exc:
            # Not accepted: counts as a link test without a receipt.
            log.warning("linktest.not_sent peer=%s reason=%s", peer, exc)
            self._monitor.sent(peer, os.urandom(16), now)  # a test no receipt can answer
            return None
        self._monitor.sent(peer, sent.notice_id, now)
        DrillLog(self.client.home.path).append(
            {"event": "link_test_window", "notice_id": sent.notice_id.hex(), "peer": peer,
             "window_ms": self.window_ms, "at": now})
        self.m_sent.labels(peer).inc()
        log.info("linktest.sent peer=%s notice_id=%s", peer, sent.notice_id.hex())
        return sent.notice_id

    async def tick(self, *, fetch: bool = True) -> list[LinkEvent]:
        """Fetch what arrived (receipts, link tests from peers), send due tests, report.
        ``fetch=False`` beside a running stream (``hotline watch``), which already takes
        in the receipts."""
        if fetch:
            try:
                await self.client.fetch()
            except HotlineError as exc:
                log.warning("linktest.fetch_failed reason=%s", exc)
        for nid, (_peer, _at) in list(self._monitor._waiting.items()):
            for c in self.client.state.confirmations(nid):
                if c.kind == "receipt":
                    self._monitor.receipt(nid, c.received_at or c.attested_at)
                    if not self._monitor._waiting.get(nid):
                        self.m_answered.labels(c.recipient).inc()
        now = self._now()
        if self._next is None or now >= self._next:
            for peer in self.peers:
                await self.send_one(peer)
            self._next = now + self.every_ms
        events = self._monitor.check(self._now())
        for e in events:
            _announce(self.client, e, "sender")
            if e.kind == "link_down":
                self.m_down.labels(e.peer).inc()
            self.m_up.labels(e.peer).set(0 if e.kind == "link_down" else 1)
        heartbeat = await self._watch_check()
        if self.metrics_file:
            write_to_textfile(self.metrics_file, self.registry)
        return events + heartbeat

    async def _watch_check(self) -> list[LinkEvent]:
        """The recipient side: counterparts whose next link test is overdue."""
        events = self._watch.check(self._now())
        for e in events:
            _announce(self.client, e, "recipient")
        return events

    def next_wake(self) -> int:
        """When :meth:`tick` has something to do next (a send, or a window closing)."""
        due = [self._next or self._now()]
        due += [at + self.window_ms + 1 for _p, at in self._monitor._waiting.values()]
        return min(due)

    async def run(self, rounds: int | None = None,
                  on_event: Callable[[LinkEvent], None] = lambda e: None, *,
                  beside_stream: bool = False) -> None:
        """Tick until ``rounds`` steps are done (None: for ever). ``beside_stream``: a
        stream of this client's (``hotline watch``) takes in the receipts, so nothing is
        fetched, and the step is at least every ``STREAM_CHECK_S`` seconds."""
        sleep = self.sleep
        assert sleep is not None, "LinkTester.run needs a sleep"
        done = 0
        while rounds is None or done < rounds:
            for e in await self.tick(fetch=not beside_stream):
                on_event(e)
            done += 1
            wait = max(0.0, (self.next_wake() - self._now()) / 1000)
            await sleep(min(wait, STREAM_CHECK_S) if beside_stream else wait)


# ----------------------------------------------------------------------------- exercises


def exercise_report(plan: DrillPlan, slot: Slot, now: int) -> IncidentReport:
    tag = label("exercise")
    return IncidentReport(
        title=f"{tag} {plan.title}"[:200],
        summary=(f"{tag} This is an exercise ({plan.name}, {slot.index + 1} of "
                 f"{plan.per_desk} for {slot.desk}). Acknowledge it as you would a real "
                 "notice." + (" Please answer the question with a reply notice."
                              if plan.question else "")),
        category="other", aware_at=now, tlp="clear", question=plan.question,
        body=f"Drill plan {plan.name}, plan digest {plan.digest}, seed {plan.seed}.")


def record_schedule(log_: DrillLog, plan: DrillPlan, slots: list[Slot], now: int) -> Path:
    """Write the schedule (and its seed and plan digest) before anything is sent, so it
    can be audited against the plan file afterwards."""
    doc = {"plan": plan.name, "plan_sha256": plan.digest, "seed": plan.seed,
           "window": plan.window.describe(), "first_day": plan.first_day.isoformat(),
           "days": plan.days, "severity": plan.severity, "announced": plan.announced,
           "recorded_at": now,
           "slots": [{"desk": s.desk, "index": s.index, "at": s.at,
                      "notice_id": s.notice_id(plan).hex()} for s in slots]}
    path = log_.write_json(f"{plan.name}.schedule.json", doc)
    log_.append({"event": "drill_scheduled", "plan": plan.name, "plan_sha256": plan.digest,
                 "seed": plan.seed, "slots": len(slots), "at": now})
    log.info("drill.scheduled plan=%s seed=%s slots=%d file=%s", plan.name, plan.seed,
             len(slots), path)
    return path


async def run_plan(client: HotlineClient, plan: DrillPlan, *, sleep: Sleep,
                   on_sent: Callable[[Slot, bytes], None] = lambda s, n: None) -> list[bytes]:
    """Send the plan's exercise notices at their scheduled times (a slot already past is
    sent at once; a notice already sent is not sent again: its id is fixed by the slot)."""
    slots = schedule(plan)
    dlog = DrillLog(client.home.path)
    record_schedule(dlog, plan, slots, client._clock())
    if plan.announced:
        for p in plan.participants:
            first, last = slots[0].at, slots[-1].at
            note = IncidentReport(
                title=f"{label('exercise')} announced: {plan.title}"[:200],
                summary=(f"{label('exercise')} {plan.per_desk} exercise notice(s) will come "
                         f"{plan.window.describe()} ({p.timezone}) between "
                         f"{plan.first_day} and {plan.days} days later."),
                category="other", aware_at=client._clock(), tlp="clear",
                body=f"Drill plan {plan.name}; first slot {first}, last slot {last}.")
            await client.send([p.desk], "low", note, status="exercise")
    sent = []
    for slot in slots:
        wait = slot.at - client._clock()
        if wait > 0:
            await sleep(wait / 1000)
        nid = slot.notice_id(plan)
        result = await client.send([slot.desk], plan.severity,
                                   exercise_report(plan, slot, client._clock()),
                                   status="exercise", notice_id=nid)
        dlog.append({"event": "exercise_sent", "plan": plan.name, "desk": slot.desk,
                     "index": slot.index, "scheduled_at": slot.at,
                     "accepted_at": result.accepted_at, "notice_id": nid.hex()})
        log.info("drill.sent plan=%s desk=%s index=%d notice_id=%s", plan.name, slot.desk,
                 slot.index, nid.hex())
        on_sent(slot, nid)
        sent.append(nid)
    return sent


# ----------------------------------------------------------------------------- evidence


async def observations(client: HotlineClient, *, since: int,
                       desk: str | None = None) -> list[Observation]:
    """Drill notices (exercise and test) this desk sent or received since ``since``
    (its own clock), each recipient's times read from the relay's status with every
    signature verified; an item that did not verify counts as absent."""
    out: list[Observation] = []
    replies = _replies(client)
    # A reply to a drill notice is that notice's response, not a drill of its own.
    nids = [(r.notice_id, r.created_at) for r in client.state.outbox_list()
            if r.status in ("exercise", "test") and not _is_reply(r.envelope)]
    nids += [(r.notice_id, r.created_at) for r in client.state.received_list()
             if r.status in ("exercise", "test") and not _is_reply(r.envelope)]
    for nid, created in nids:
        if created < since:
            continue
        view = await client.status(nid)
        if not view.accepted.verified or view.accepted.attested_at is None:
            continue
        window = _link_window(client, nid) if view.status == "test" else None
        for r in view.recipients:
            if desk is not None and r.desk != desk:
                continue
            d, a = r.delivered, r.acknowledged
            out.append(Observation(
                nid, view.sender, r.desk, view.status, view.severity,
                view.accepted.attested_at,
                d.attested_at if d is not None and d.verified else None,
                a.attested_at if a is not None and a.verified else None,
                bool(a is not None and a.verified and a.automatic),
                replies.get((nid, r.desk)),
                any(e.verified and e.kind == "escalated" and e.track == "ack"
                    for e in r.escalations),
                window))
    return out


def _is_reply(envelope: bytes) -> bool:
    return Envelope.decode(envelope).header.in_reply_to is not None


def _replies(client: HotlineClient) -> dict[tuple[bytes, str], int]:
    """(original notice, replying desk) -> the relay-signed acceptance time of the first
    reply: from replies this desk received (verified on arrival) and sent (its outbox)."""
    out: dict[tuple[bytes, str], int] = {}

    def note(env_raw: bytes, at: int | None) -> None:
        h = Envelope.decode(env_raw).header
        if h.in_reply_to is not None and at is not None:
            key = (h.in_reply_to, h.sender)
            out[key] = min(at, out.get(key, at))

    for r in client.state.received_list():
        note(r.envelope, r.accepted_at)
    for o in client.state.outbox_list():
        note(o.envelope, o.accepted_at)
    return out


def _link_window(client: HotlineClient, nid: bytes) -> int | None:
    """A link test's receipt window: from its body (received: we can read it) or, for
    one we sent, from the body we sealed (kept in the drill log when sent)."""
    got = client.state.received(nid)
    if got is not None:
        try:
            parsed = parse_link_test_body(client.received(nid).report.body)
        except HotlineError:
            return None
        return parsed[1] if parsed else None
    # A link test this desk sealed: the same window it is running with, recorded.
    for rec in DrillLog(client.home.path).events("link_test_window"):
        if rec.get("notice_id") == nid.hex():
            return int(rec["window_ms"])
    return None


def ack_is_automatic(raw_ack: bytes) -> bool:
    return Confirmation.decode(raw_ack).automatic


__all__ = [
    "LINK_TEST_MARK",
    "DrillLog",
    "HeartbeatWatch",
    "LinkTester",
    "answer_link_test",
    "exercise_report",
    "observations",
    "record_schedule",
    "run_plan",
]
