"""The reliability scenarios of SECURITY.md (b), each one coroutine that returns its JSON
summary. The pytest files run them small; ``run_long`` runs them large.

Every summary names its ``must_be_zero`` fields (and ``must_be_positive`` for a negative
control); ``harness.nonzero`` lists the ones that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.home import Home
from client.record import log_verifier
from keys import Attestation, Confirmation, Envelope, RelayCard
from keys.frames import Accepted, InboxPage
from relay.store.sqlite import SqliteStore
from tests.faults.checker import (
    ESCALATION_MUST_BE_ZERO,
    NOTICE_MUST_BE_ZERO,
    RECORD_MUST_BE_ZERO,
    check_escalations,
    check_notices,
    check_record,
    read_escalation_log,
    read_escalation_state,
    sent_notices,
)
from tests.faults.harness import (
    DESKS,
    TRANSPORT_ERRORS,
    GaveUp,
    Journal,
    LoadClient,
    Rig,
    error_code,
    fetch_public,
    final_checkpoint,
    login,
    merge_counters,
    query,
    random_killer,
    read_inbox,
    request,
    watch_checkpoints,
)
from tests.faults.powerloss import PowerLoss
from tests.relay_harness import RawDesk, now_ms

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def _login_all(rig: Rig, stop_at: float, desks: tuple[str, ...] = DESKS
                     ) -> dict[str, RawDesk]:
    """Log every desk in once: the relay only addresses desks whose card it has seen."""
    out = {}
    for name in desks:
        out[name] = rig.desk(name)
        await login(out[name], stop_at=stop_at)
    return out


async def _inboxes(rig: Rig, desks: tuple[str, ...], stop_at: float) -> dict[str, list[Any]]:
    out = {}
    for name in desks:
        d = rig.desk(name)
        await login(d, stop_at=stop_at)
        out[name] = await read_inbox(d, stop_at=stop_at)
    return out


async def _gather_bounded(tasks: list[asyncio.Task[Any]], stop_at: float) -> None:
    """Wait for the tasks until ``stop_at``; cancel what is left; re-raise a failure."""
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), max(1.0, stop_at - time.monotonic()))
    except TimeoutError:
        pass
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


# =========================================================================== T1


@dataclass
class T1Config:
    notices: int = 300
    clients: int = 6
    senders: tuple[str, ...] = ("us.caisi", "us.nsc", "cn.cac")
    fanout: tuple[int, int] = (2, 3)
    kills: int = 8
    kill_interval: tuple[float, float] = (0.2, 1.0)
    #: pre_commit:1 is the escalator's first (empty) pass at start-up, so start at 2.
    crash_points: tuple[str, ...] = ("pre_commit:2", "pre_commit:3",
                                     "post_commit_pre_response:1", "post_commit_pre_response:2")
    #: The load is paced to last about this long, so the kills land while it runs.
    load_s: float = 8.0
    time_limit_s: float = 100.0
    #: Negative control: the relay answers "accepted" before it commits, and the killer
    #: strikes right after each answer. The checker must then see losses.
    negative_control: bool = False
    seed: int = 1


async def _answer_killer(rig: Rig, answered: asyncio.Event, *, kills: int,
                         busy: Callable[[], bool], stop_at: float) -> None:
    """Kill the relay right after it answered "accepted" to some notice."""
    for _ in range(kills):
        answered.clear()
        while busy() and time.monotonic() < stop_at and not answered.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answered.wait(), 0.05)
        if not busy() or time.monotonic() > stop_at:
            return
        await rig.restart()


async def run_t1(base: Path, cfg: T1Config) -> dict[str, Any]:
    """T1: no acknowledged notice is lost across SIGKILLs and crash points."""
    started = time.monotonic()
    stop_at = started + cfg.time_limit_s
    env = ({"HOTLINE_RELAY_TEST_ONLY_ANSWER_BEFORE_COMMIT": "true"}
           if cfg.negative_control else {})
    rng = random.Random(cfg.seed)
    # Checkpoints signed often, so that kills land around them too.
    rig = await Rig.create(base, env=env, relay_toml=LOG_TOML)
    try:
        await _login_all(rig, stop_at)
        answered = asyncio.Event()

        def on_accepted(_env: Envelope, acc: Accepted) -> None:
            if not acc.duplicate:
                answered.set()

        clients = [
            LoadClient(rig, f"client-{i}", cfg.senders[i % len(cfg.senders)],
                       Journal(base / "journal" / f"client-{i}.jsonl"),
                       random.Random(rng.random()), recipients=DESKS, fanout=cfg.fanout,
                       severities=("critical", "high", "medium"), on_accepted=on_accepted)
            for i in range(cfg.clients)]
        pace = cfg.load_s * cfg.clients / max(1, cfg.notices)
        load_stop = stop_at - 20  # leave time for the final restart and the check
        load = [asyncio.create_task(c.run(n, pace_s=pace, stop_at=load_stop))
                for c, n in zip(clients, _split(cfg.notices, cfg.clients), strict=True)]

        def busy() -> bool:
            return not all(t.done() for t in load)

        if cfg.negative_control:
            killer = asyncio.create_task(_answer_killer(rig, answered, kills=cfg.kills,
                                                        busy=busy, stop_at=load_stop))
        else:
            killer = asyncio.create_task(random_killer(
                rig, rng, kills=cfg.kills, interval=cfg.kill_interval,
                crash_points=cfg.crash_points, busy=busy, stop_at=load_stop))
        checkpoints = Journal(base / "journal" / "checkpoints.jsonl")
        watcher = asyncio.create_task(watch_checkpoints(rig, checkpoints, busy=busy,
                                                        stop_at=load_stop))
        await _gather_bounded([*load, killer, watcher], stop_at - 15)
        load_elapsed = time.monotonic() - started
        for c in clients:
            c.journal.close()
        checkpoints.close()
        # The last restart, then what the relay has against what the clients were told.
        await rig.restart(count=False)
        inboxes = await _inboxes(rig, DESKS, stop_at)
        records = Journal.read_dir(base / "journal", "client-*.jsonl")
        record = await _check_record(rig, records, stop_at)
        await rig.kill(count=False)
        await rig.check_integrity()
        summary: dict[str, Any] = {
            "scenario": "T1-negative-control" if cfg.negative_control else "T1",
            "config": dataclasses.asdict(cfg),
            **merge_counters(clients), **rig.stats_dict(), **check_notices(records, inboxes),
            **record,
            "load_elapsed_s": round(load_elapsed, 2),
            "elapsed_s": round(time.monotonic() - started, 2),
        }
        if cfg.negative_control:
            summary["must_be_zero"] = ["stored_duplicates", "content_mismatch",
                                       "integrity_check_failures", "unknown_stored"]
            # What was answered and lost is not in the log either: the log check sees it.
            summary["must_be_positive"] = ["receipted_but_missing", "inclusion_proof_failures"]
        else:
            summary["must_be_zero"] = [*NOTICE_MUST_BE_ZERO, *RECORD_MUST_BE_ZERO]
        return summary
    finally:
        await rig.close()


#: The relay's log in the crash runs: a checkpoint pass every 0.2 s (no witnesses).
LOG_TOML = "[log]\ncheckpoint_interval_s = 0.2\n"


async def _check_record(rig: Rig, records: list[dict[str, Any]], stop_at: float
                        ) -> dict[str, Any]:
    """Every checkpoint journaled during the run against the final one, and every
    statement a client was answered with included in it (checker.check_record)."""
    card = RelayCard.decode((rig.relay.home / "relay.card").read_bytes())
    final = await final_checkpoint(rig, stop_at=stop_at)
    seen = [bytes.fromhex(r["note"]) for r in
            Journal.read(rig.base / "journal" / "checkpoints.jsonl") if r["k"] == "checkpoint"]
    statements = sorted({bytes.fromhex(r["att"]) for r in records
                         if r["k"] == "answer" and "att" in r})
    return await check_record(lambda path: fetch_public(rig, path),
                              log_verifier(card.relay_id, card.key), final, seen, statements)


# =========================================================================== T2


@dataclass
class T2Config:
    """T2: power cuts. ``synchronous`` is the relay's SQLite level: FULL (the relay's own,
    must lose nothing) or NORMAL (the negative control, must lose receipted notices)."""

    synchronous: str = "FULL"
    notices: int = 80
    clients: int = 4
    senders: tuple[str, ...] = ("us.caisi", "us.nsc", "cn.cac")
    fanout: tuple[int, int] = (2, 3)
    #: Each restart costs a relay start-up (seconds on a loaded machine): few, but each
    #: one a power cut.
    kills: int = 3
    kill_interval: tuple[float, float] = (0.3, 1.0)
    load_s: float = 4.0
    time_limit_s: float = 80.0
    seed: int = 2


async def run_t2(base: Path, cfg: T2Config, shim: Path) -> dict[str, Any]:
    """T2: no receipted notice is lost when the relay is SIGKILLed at random moments and
    each kill is a power cut: before the restart, the database directory is rebuilt with
    only what was fsynced (``tests/faults/powerloss.py``, the LD_PRELOAD ``shim``)."""
    started = time.monotonic()
    stop_at = started + cfg.time_limit_s
    db_dir = base / "db"
    db_dir.mkdir(parents=True)
    env = {"HOTLINE_RELAY_DATABASE": str(db_dir / "relay.db"),
           "HOTLINE_RELAY_TEST_ONLY_SQLITE_SYNCHRONOUS": cfg.synchronous}
    rng = random.Random(cfg.seed)
    rig = await Rig.create(base, env=env, start=False)
    try:
        # The baseline, taken as durable: the relay's database with every desk's card, as
        # a relay leaves it after each desk logged in once (without a relay start-up,
        # which costs seconds on a loaded machine).
        store = SqliteStore(env["HOTLINE_RELAY_DATABASE"])
        await store.open()
        now = now_ms()
        for name in DESKS:
            card = Home(rig.homes[name]).card(now).encode()
            await store.put_card(name, card, rig.verified(name, name, now).not_after, now)
        await store.close()
        power = PowerLoss(db_dir, base / "powerloss", shim)
        power.baseline()
        rig.relay.env.update(power.env())
        rig.on_kill = power.cut
        await rig.start()
        clients = [
            LoadClient(rig, f"client-{i}", cfg.senders[i % len(cfg.senders)],
                       Journal(base / "journal" / f"client-{i}.jsonl"),
                       random.Random(rng.random()), recipients=DESKS, fanout=cfg.fanout,
                       severities=("critical", "high", "medium"))
            for i in range(cfg.clients)]
        pace = cfg.load_s * cfg.clients / max(1, cfg.notices)
        load_stop = stop_at - 20
        load = [asyncio.create_task(c.run(n, pace_s=pace, stop_at=load_stop))
                for c, n in zip(clients, _split(cfg.notices, cfg.clients), strict=True)]

        def busy() -> bool:
            return not all(t.done() for t in load)

        killer = asyncio.create_task(random_killer(
            rig, rng, kills=cfg.kills, interval=cfg.kill_interval, crash_points=(),
            busy=busy, stop_at=load_stop))
        await _gather_bounded([*load, killer], stop_at - 15)
        load_elapsed = time.monotonic() - started
        for c in clients:
            c.journal.close()
        await rig.restart(count=False)  # a last power cut, then what survived
        inboxes = await _inboxes(rig, DESKS, stop_at)
        await rig.kill(count=False)
        await rig.check_integrity()
        records = Journal.read_dir(base / "journal", "client-*.jsonl")
        negative = cfg.synchronous not in ("FULL", "EXTRA")
        ps = power.stats
        summary: dict[str, Any] = {
            "scenario": "T2-negative-control" if negative else "T2",
            "config": dataclasses.asdict(cfg),
            **merge_counters(clients), **rig.stats_dict(), **check_notices(records, inboxes),
            "power_cuts": ps.cuts, "power_cut_files_rolled_back": ps.files_rolled_back,
            "power_cut_files_dropped": ps.files_dropped,
            "power_cut_bytes_dropped": ps.bytes_dropped,
            "durable_entries": sorted(power.durable_names()),
            "load_elapsed_s": round(load_elapsed, 2),
            "elapsed_s": round(time.monotonic() - started, 2),
        }
        if negative:
            summary["must_be_zero"] = ["stored_duplicates", "content_mismatch",
                                       "integrity_check_failures", "unknown_stored"]
            # T2 does not run the log check (T1 does): its negative control is the loss.
            summary["must_be_positive"] = ["receipted_but_missing"]
        else:
            summary["must_be_zero"] = NOTICE_MUST_BE_ZERO
        return summary
    finally:
        await rig.close()


# =========================================================================== T3


class AppCrash(Exception):
    """The recipient application dies here: everything but its journal is lost."""


class Backend:
    """A desk's raw API with bounded retries: the relay may be down, or restarted (401)."""

    def __init__(self, rig: Rig, desk: str) -> None:
        self.desk = rig.desk(desk)

    async def call(self, method: str, path: str, body: bytes | None = None, *,
                   stop_at: float, attempts: int = 2000) -> Any:
        for attempt in range(1, attempts + 1):
            if time.monotonic() > stop_at:
                break
            try:
                r = await request(self.desk, method, path, body)
            except TRANSPORT_ERRORS:
                await asyncio.sleep(min(0.3, 0.02 * attempt))
                continue
            if r.status == 401:
                await login(self.desk, stop_at=stop_at)
                continue
            if r.status in (429, 503):
                await asyncio.sleep(0.1)
                continue
            return r
        raise GaveUp(f"{method} {path} for {self.desk.desk}: no answer in time")

    async def confirm(self, kind: str, env: Envelope, *, stop_at: float) -> Accepted:
        c = Confirmation.create(kind, notice_id=env.notice_id, digest=env.digest,
                                sender=env.header.sender, me=self.desk.secrets, at=now_ms())
        body = c.encode()  # a retry resends the same bytes
        r = await self.call("POST", "/v1/confirmations", body, stop_at=stop_at)
        if r.status != 200:
            raise GaveUp(f"{kind} of {env.notice_id.hex()} answered {r.status} {error_code(r)}")
        return Accepted.decode(r.body)


CRASH_SPOTS = ("before_receipt", "after_receipt", "after_process_before_ack",
               "after_ack_before_cursor")


class RecipientApp:
    """A recipient "application": reads its inbox from a durable cursor, receipts, processes
    each notice once (dedup by notice id against its own fsynced journal), acks.

    It may be crashed at random at any of ``CRASH_SPOTS``; a new incarnation starts from
    the journal alone (cursor, processed ids, acked ids)."""

    def __init__(self, rig: Rig, desk: str, journal_path: Path, rng: random.Random, *,
                 crash_probability: float, crashes_left: list[int], page: int) -> None:
        records = Journal.read(journal_path) if journal_path.exists() else []
        self.cursor = max((r["seq"] for r in records if r["k"] == "cursor"), default=0)
        self.processed = {r["id"] for r in records if r["k"] == "processed"}
        self.acked = {r["id"] for r in records if r["k"] == "acked"}
        self.journal = Journal(journal_path)
        self.api = Backend(rig, desk)
        self.rng = rng
        self.p = crash_probability
        self.crashes_left = crashes_left
        self.page = page

    def maybe_crash(self, spot: str) -> None:
        if self.crashes_left[0] > 0 and self.rng.random() < self.p:
            self.crashes_left[0] -= 1
            self.journal.append("crash", spot=spot)
            raise AppCrash(spot)

    async def run(self, done: Callable[[set[str]], bool], *, stop_at: float) -> None:
        await login(self.api.desk, stop_at=stop_at)
        while time.monotonic() < stop_at:
            r = await self.api.call("GET", f"/v1/inbox?after={self.cursor}&limit={self.page}",
                                    stop_at=stop_at)
            if r.status != 200:
                raise GaveUp(f"inbox answered {r.status} {error_code(r)}")
            page = InboxPage.decode(r.body)
            for ev in page.events:
                if ev.kind != "notice" or ev.envelope is None:
                    continue
                nid = ev.notice_id.hex()
                self.journal.append("delivered", id=nid, seq=ev.seq)
                env = Envelope.decode(ev.envelope)
                self.maybe_crash("before_receipt")
                acc = await self.api.confirm("receipt", env, stop_at=stop_at)
                self.journal.append("receipt", id=nid, duplicate=acc.duplicate)
                self.maybe_crash("after_receipt")
                if nid in self.processed:
                    self.journal.append("dedup", id=nid)
                else:
                    # The application's effect: durable before anything else happens.
                    self.journal.append("processed", id=nid)
                    self.processed.add(nid)
                self.maybe_crash("after_process_before_ack")
                if nid not in self.acked:
                    acc = await self.api.confirm("ack", env, stop_at=stop_at)
                    self.journal.append("acked", id=nid, duplicate=acc.duplicate,
                                        at=Attestation.decode(acc.attestation).at)
                    self.acked.add(nid)
                self.maybe_crash("after_ack_before_cursor")
            if page.events:
                self.cursor = page.next_cursor
                self.journal.append("cursor", seq=self.cursor)
            if not page.more:
                if done(self.acked):
                    return
                await asyncio.sleep(0.05)
        raise GaveUp("the recipient application ran out of time")


@dataclass
class T3Config:
    notices: int = 80
    senders: tuple[str, ...] = ("us.caisi", "us.nsc")
    recipients: tuple[str, ...] = ("cn.cac", "cn.mss", "fr.anssi")
    fanout: tuple[int, int] = (2, 3)
    crash_probability: float = 0.06
    max_app_crashes: int = 25
    relay_kills: int = 2
    kill_interval: tuple[float, float] = (0.5, 1.5)
    crash_points: tuple[str, ...] = ("post_deliver_pre_mark:1", "post_deliver_pre_mark:2",
                                     "post_ack_commit_pre_response:1",
                                     "post_ack_commit_pre_response:2")
    load_s: float = 5.0
    page: int = 20
    time_limit_s: float = 90.0
    seed: int = 3


async def run_t3(base: Path, cfg: T3Config) -> dict[str, Any]:
    """T3: at-least-once delivery, processed once, with recipients crashing between
    processing and acknowledging (and the relay crashing around receipts and acks)."""
    started = time.monotonic()
    stop_at = started + cfg.time_limit_s
    work_stop = stop_at - 15
    rng = random.Random(cfg.seed)
    rig = await Rig.create(base)
    jdir = base / "journal"
    try:
        await _login_all(rig, stop_at)
        senders = [LoadClient(rig, f"sender-{i}", s, Journal(jdir / f"client-{i}.jsonl"),
                              random.Random(rng.random()), recipients=cfg.recipients,
                              fanout=cfg.fanout)
                   for i, s in enumerate(cfg.senders)]
        pace = cfg.load_s * len(senders) / max(1, cfg.notices)
        load = [asyncio.create_task(c.run(n, pace_s=pace, stop_at=work_stop))
                for c, n in zip(senders, _split(cfg.notices, len(senders)), strict=True)]
        expected: dict[str, set[str]] = {}

        def done_for(desk: str) -> Callable[[set[str]], bool]:
            def done(acked: set[str]) -> bool:
                if not all(t.done() for t in load):
                    return False
                if not expected:
                    for c in senders:
                        c.journal.close()
                    expected.update(_expected(jdir, cfg.recipients))
                return expected[desk] <= acked
            return done

        app_crashes: dict[str, int] = {}

        async def supervise(desk: str) -> None:
            crashes_left = [cfg.max_app_crashes]
            app_rng = random.Random(rng.random())
            for _ in range(cfg.max_app_crashes + 2):
                app = RecipientApp(rig, desk, jdir / f"app-{desk}.jsonl", app_rng,
                                   crash_probability=cfg.crash_probability,
                                   crashes_left=crashes_left, page=cfg.page)
                try:
                    await app.run(done_for(desk), stop_at=work_stop)
                    return
                except AppCrash:
                    app_crashes[desk] = app_crashes.get(desk, 0) + 1
                    await asyncio.sleep(app_rng.uniform(0, 0.1))
                finally:
                    app.journal.close()
            raise GaveUp(f"{desk}'s application crashed too often")

        apps = [asyncio.create_task(supervise(d)) for d in cfg.recipients]

        def busy() -> bool:
            return not all(t.done() for t in apps)

        killer = asyncio.create_task(random_killer(
            rig, rng, kills=cfg.relay_kills, interval=cfg.kill_interval,
            crash_points=cfg.crash_points, busy=busy, stop_at=work_stop))
        await _gather_bounded([*load, *apps, killer], stop_at - 10)
        await rig.restart(count=False)
        inboxes = await _inboxes(rig, cfg.recipients, stop_at)
        await rig.kill(count=False)
        await rig.check_integrity()
        deliveries = {(bytes(n).hex(), r): (d, a) for n, r, d, a in query(
            rig.db_path, "SELECT notice_id, recipient, delivered_at, acked_at FROM deliveries")}
        records = Journal.read_dir(jdir, "client-*.jsonl")
        notices = check_notices(records, inboxes)
        summary: dict[str, Any] = {"scenario": "T3", "config": dataclasses.asdict(cfg),
                                   **merge_counters(senders), **rig.stats_dict(), **notices}
        for c in senders:
            c.journal.close()
        summary.update(_t3_counts(jdir, cfg.recipients, _expected(jdir, cfg.recipients),
                                  deliveries))
        summary["app_crashes"] = sum(app_crashes.values())
        summary["elapsed_s"] = round(time.monotonic() - started, 2)
        summary["must_be_zero"] = ["processed_twice", "never_delivered", "unacked_at_end",
                                   "receipted_but_missing", "stored_duplicates",
                                   "integrity_check_failures", "unanswered"]
        return summary
    finally:
        await rig.close()


def _expected(jdir: Path, recipients: tuple[str, ...]) -> dict[str, set[str]]:
    """Recipient -> the notices the relay accepted for it, from the senders' journals."""
    out: dict[str, set[str]] = {r: set() for r in recipients}
    for nid, n in sent_notices(Journal.read_dir(jdir, "client-*.jsonl")).items():
        if n.accepted:
            for r in n.to:
                out.setdefault(r, set()).add(nid)
    return out


def _t3_counts(jdir: Path, recipients: tuple[str, ...], expected: dict[str, set[str]],
               deliveries: dict[tuple[str, str], tuple[int | None, int | None]]
               ) -> dict[str, Any]:
    out: dict[str, Any] = {"deliveries_total": 0, "redeliveries": 0,
                           "recipient_dedup_hits": 0, "processed_total": 0,
                           "processed_twice": 0, "never_delivered": 0, "unacked_at_end": 0,
                           "receipt_replays": 0, "ack_replays": 0,
                           "app_crash_spots": {s: 0 for s in CRASH_SPOTS}}
    for desk in recipients:
        path = jdir / f"app-{desk}.jsonl"
        records = Journal.read(path) if path.exists() else []
        delivered = [r["id"] for r in records if r["k"] == "delivered"]
        processed = [r["id"] for r in records if r["k"] == "processed"]
        out["deliveries_total"] += len(delivered)
        out["redeliveries"] += len(delivered) - len(set(delivered))
        out["recipient_dedup_hits"] += sum(1 for r in records if r["k"] == "dedup")
        out["processed_total"] += len(processed)
        out["processed_twice"] += len(processed) - len(set(processed))
        out["receipt_replays"] += sum(1 for r in records
                                      if r["k"] == "receipt" and r["duplicate"])
        out["ack_replays"] += sum(1 for r in records if r["k"] == "acked" and r["duplicate"])
        for r in records:
            if r["k"] == "crash":
                out["app_crash_spots"][r["spot"]] += 1
        want = expected.get(desk, set())
        out["never_delivered"] += len(want - set(processed))
        out["unacked_at_end"] += sum(1 for nid in want
                                     if deliveries.get((nid, desk), (None, None))[1] is None)
    return out


# =========================================================================== T4

#: Short ladders so deadlines fall due within seconds (DESIGN.md: the relay's clock decides).
T4_POLICY = """
[policy.critical]
ack_window = "2s"
repeat_every = "1s"
max_level = 3
response_window = "none"

[policy.high]
ack_window = "3s"
repeat_every = "1s"
max_level = 2
response_window = "none"
"""
T4_WINDOWS_MS = {"critical": 2000, "high": 3000}
T4_LADDER_END_MS = {"critical": 2000 + 2 * 1000, "high": 3000 + 1 * 1000}


@dataclass
class T4Config:
    notices: int = 60
    senders: tuple[str, ...] = ("us.caisi", "cn.cac")
    fanout: tuple[int, int] = (2, 2)
    send_s: float = 3.0
    #: Shares of (notice, recipient) pairs: never acked, acked within +-0.4 s of the
    #: deadline, acked after it (during the ladder); the rest are acked well before.
    never: float = 0.30
    near_deadline: float = 0.15
    late: float = 0.20
    kills: int = 4
    kill_interval: tuple[float, float] = (0.3, 1.0)
    crash_point: str = "post_escalation_commit_pre_notify:1"
    time_limit_s: float = 90.0
    seed: int = 4


class Acker:
    """Acknowledges (notice, recipient) pairs at planned times; journals the relay-attested
    time of each acknowledgement."""

    def __init__(self, rig: Rig, desks: tuple[str, ...], journal: Journal) -> None:
        self.api = {d: Backend(rig, d) for d in desks}
        self.journal = journal
        self.tasks: list[asyncio.Task[None]] = []
        self.retries = 0

    def plan(self, env: Envelope, recipient: str, at_ms: int, *, stop_at: float) -> None:
        self.tasks.append(asyncio.create_task(self._ack(env, recipient, at_ms, stop_at)))

    async def _ack(self, env: Envelope, recipient: str, at_ms: int, stop_at: float) -> None:
        await asyncio.sleep(max(0.0, (at_ms - now_ms()) / 1000))
        nid = env.notice_id.hex()
        self.journal.append("ack_send", id=nid, recipient=recipient, planned=at_ms)
        acc = await self.api[recipient].confirm("ack", env, stop_at=stop_at)
        self.journal.append("ack_answer", id=nid, recipient=recipient, duplicate=acc.duplicate,
                            at=Attestation.decode(acc.attestation).at)


async def _wait_for_log(rig: Rig, *, timeout: float) -> None:
    """Wait (bounded) until the escalation log file holds every escalation in the DB."""
    end = time.monotonic() + timeout
    log_path = rig.relay.home / "escalations.jsonl"
    while time.monotonic() < end:
        ids = {r[0] for r in query(rig.db_path, "SELECT id FROM escalations")}
        logged = {int(x["escalation_id"]) for x in read_escalation_log(log_path)}
        if ids <= logged:
            return
        await asyncio.sleep(0.1)


def _escalation_summary(rig: Rig, jdir: Path, *, complete: set[tuple[str, str]] | None = None,
                        windows: dict[str, int]) -> dict[str, Any]:
    rows, ladders = read_escalation_state(rig.db_path)
    records = Journal.read_dir(jdir, "client-*.jsonl")
    sent = sent_notices(records)
    accepted_at = {nid: Attestation.decode(bytes.fromhex(n.attestations[0])).at
                   for nid, n in sent.items() if n.accepted}
    severity = {nid: n.severity for nid, n in sent.items()}
    acks = {(r["id"], r["recipient"]): int(r["at"])
            for r in Journal.read_dir(jdir, "acks*.jsonl") if r["k"] == "ack_answer"}
    db_acked = {(bytes(n).hex(), r): a for n, r, a in query(
        rig.db_path, "SELECT notice_id, recipient, acked_at FROM deliveries")}
    stored = {bytes(r[0]).hex() for r in query(rig.db_path, "SELECT notice_id FROM notices")}
    out = check_escalations(rows, ladders, acks=acks, accepted_at=accepted_at,
                            windows_ms=windows, severity=severity, db_acked_at=db_acked,
                            log=read_escalation_log(rig.relay.home / "escalations.jsonl"),
                            complete=complete)
    out["receipts_issued"] = len(accepted_at)
    out["receipted_but_missing"] = len(set(accepted_at) - stored)
    return out


async def run_t4(base: Path, cfg: T4Config) -> dict[str, Any]:
    """T4 on SQLite, one node: every overdue ladder escalates exactly once per level, across
    SIGKILLs while deadlines fall due and a crash right after an escalation commit."""
    started = time.monotonic()
    stop_at = started + cfg.time_limit_s
    work_stop = stop_at - 15
    rng = random.Random(cfg.seed)
    rig = await Rig.create(base, relay_toml=T4_POLICY)
    jdir = base / "journal"
    acker = Acker(rig, DESKS, Journal(jdir / "acks.jsonl"))
    plans = {"never": 0, "early": 0, "near_deadline": 0, "late": 0}
    last_end = [0]
    first_deadline: list[int] = []
    try:
        await _login_all(rig, stop_at)

        def on_accepted(env: Envelope, acc: Accepted) -> None:
            accepted = Attestation.decode(acc.attestation).at
            sev = env.header.severity
            deadline = accepted + T4_WINDOWS_MS[sev]
            end = accepted + T4_LADDER_END_MS[sev]
            first_deadline.append(deadline)
            for r in env.header.recipients:
                x = rng.random()
                if x < cfg.never:
                    plans["never"] += 1
                    last_end[0] = max(last_end[0], end)
                    continue
                if x < cfg.never + cfg.near_deadline:
                    plans["near_deadline"] += 1
                    at = deadline + rng.randint(-400, 400)
                elif x < cfg.never + cfg.near_deadline + cfg.late:
                    plans["late"] += 1
                    at = deadline + rng.randint(200, end - deadline + 800)
                else:
                    plans["early"] += 1
                    at = accepted + rng.randint(200, T4_WINDOWS_MS[sev] - 600)
                last_end[0] = max(last_end[0], end, at)
                acker.plan(env, r, at, stop_at=work_stop)

        senders = [LoadClient(rig, f"sender-{i}", s, Journal(jdir / f"client-{i}.jsonl"),
                              random.Random(rng.random()), recipients=DESKS,
                              fanout=cfg.fanout, severities=("critical", "high"),
                              on_accepted=on_accepted)
                   for i, s in enumerate(cfg.senders)]
        pace = cfg.send_s * len(senders) / max(1, cfg.notices)
        load = [asyncio.create_task(c.run(n, pace_s=pace, stop_at=work_stop))
                for c, n in zip(senders, _split(cfg.notices, len(senders)), strict=True)]

        async def killer() -> None:
            # Start when the first deadlines fall due; kill while the ladders run.
            while not first_deadline and time.monotonic() < work_stop:
                await asyncio.sleep(0.05)
            if first_deadline:
                await asyncio.sleep(max(0.0, (min(first_deadline) - now_ms()) / 1000))
            for _ in range(cfg.kills):
                await asyncio.sleep(rng.uniform(*cfg.kill_interval))
                await rig.restart()
            # Down while deadlines pass, then up with the crash point: the first pass claims
            # the overdue levels, commits, and dies before logging or pushing them.
            await rig.kill()
            await asyncio.sleep(0.6)
            await rig.check_integrity()
            await rig.start({"HOTLINE_CRASH_AT": cfg.crash_point})
            end = time.monotonic() + 10
            while time.monotonic() < end and rig.alive:
                await asyncio.sleep(0.02)
            if rig.alive:
                rig.stats.crash_points_not_reached += 1
            else:
                rig.stats.crash_point_exits += 1
                assert rig.relay.proc is not None
                rig.stats.crash_exit_codes[int(rig.relay.proc.returncode)] += 1
            escalations_before = len(query(rig.db_path, "SELECT id FROM escalations"))
            rig.events.append("crash_point", spec=cfg.crash_point,
                              escalations_committed=escalations_before)
            await rig.restart()

        kill_task = asyncio.create_task(killer())
        await _gather_bounded([*load, kill_task], work_stop)
        # Every ack lands; then wait past the last level of every ladder.
        await _gather_bounded(acker.tasks, work_stop)
        await asyncio.sleep(max(0.0, min(work_stop - time.monotonic(),
                                         (last_end[0] + 1500 - now_ms()) / 1000)))
        await rig.restart(count=False)
        await _wait_for_log(rig, timeout=5)
        await rig.kill(count=False)
        await rig.check_integrity()
        for c in senders:
            c.journal.close()
        acker.journal.close()
        summary: dict[str, Any] = {"scenario": "T4", "config": dataclasses.asdict(cfg),
                                   **merge_counters(senders), **rig.stats_dict(),
                                   "planned": plans}
        summary.update(_escalation_summary(rig, jdir, windows=T4_WINDOWS_MS))
        summary["elapsed_s"] = round(time.monotonic() - started, 2)
        summary["must_be_zero"] = [*ESCALATION_MUST_BE_ZERO, "receipted_but_missing",
                                   "unanswered"]
        return summary
    finally:
        for t in acker.tasks:
            t.cancel()
        await rig.close()


# =========================================================================== T5

T5_POLICY = """
[policy.critical]
ack_window = "2s"
repeat_every = "1s"
max_level = 3
response_window = "none"

[policy.high]
ack_window = "2s"
repeat_every = "1s"
max_level = 20
response_window = "none"
"""
T5_WINDOWS_MS = {"critical": 2000, "high": 2000}
HOUR_MS = 3_600_000


def faketime_problem() -> str | None:
    """Why libfaketime cannot be used here, or None if it can."""
    if not FAKETIME_LIB.exists():
        return (f"libfaketime is not installed ({FAKETIME_LIB} missing; "
                "'apt-get install -y faketime' provides it)")
    probe = subprocess.run(
        [sys.executable, "-c", "import time; print(int(time.time()))"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
             "LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": "+1d"},
        capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0 or not probe.stdout.strip().isdigit():
        return f"libfaketime does not load: {probe.stderr.strip()[:200]}"
    if abs(int(probe.stdout) - time.time() - 86_400) > 60:
        return "libfaketime loads but does not move time.time() in a child process"
    return None


@dataclass
class T5Config:
    never_acked: int = 6
    acked_in_time: int = 3
    keepalive: int = 2
    skew_probes: int = 4
    settle_s: float = 3.5
    time_limit_s: float = 90.0
    seed: int = 5


async def run_t5(base: Path, cfg: T5Config) -> dict[str, Any]:
    """T5: the relay's clock jumps -1 h and +1 h (libfaketime, read from a file the harness
    rewrites) while ladders run. No level twice, nothing before its time by the relay's own
    attested clock; clients 10 min ahead are refused, 10 min behind accepted."""
    started = time.monotonic()
    stop_at = started + cfg.time_limit_s
    rng = random.Random(cfg.seed)
    ts_file = base / "faketime.rc"
    base.mkdir(parents=True, exist_ok=True)

    def set_offset(ms: int) -> None:
        tmp = ts_file.with_suffix(".tmp")
        tmp.write_text(f"{ms // 1000:+d}\n")
        tmp.replace(ts_file)

    set_offset(HOUR_MS)  # begin at +1 h, so that -1 h lands on real time (certificates
    # issued a moment ago are not valid an hour before now)
    env = {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME_TIMESTAMP_FILE": str(ts_file),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    rig = await Rig.create(base, env=env, relay_toml=T5_POLICY)
    jdir = base / "journal"
    acker = Acker(rig, DESKS, Journal(jdir / "acks.jsonl"))
    phase = ["start"]
    by_phase: dict[str, list[tuple[str, str, int]]] = {}
    jumps: list[dict[str, Any]] = []
    offset = [HOUR_MS]

    def on_accepted(env: Envelope, acc: Accepted) -> None:
        at = Attestation.decode(acc.attestation).at
        for r in env.header.recipients:
            by_phase.setdefault(phase[0], []).append((env.notice_id.hex(), r, at))
            if phase[0] == "acked_in_time":
                acker.plan(env, r, now_ms(), stop_at=stop_at - 10)

    client = LoadClient(rig, "client-0", "us.caisi", Journal(jdir / "client-0.jsonl"),
                        random.Random(rng.random()), recipients=DESKS, fanout=(2, 2),
                        on_accepted=on_accepted)

    async def send(name: str, n: int, severity: str, skew_ms: int = 0) -> list[int]:
        phase[0] = name
        client.severities = (severity,)
        statuses = []
        for _ in range(n):
            acc = await client.send(client.make(skew_ms=skew_ms), stop_at=stop_at - 10)
            statuses.append(0 if acc is None else 201)
        return statuses

    async def jump(to_ms: int) -> None:
        set_offset(to_ms)
        jumps.append({"from_h": offset[0] / HOUR_MS, "to_h": to_ms / HOUR_MS,
                      "t": round(time.monotonic() - started, 2)})
        offset[0] = to_ms
        client.offset_ms = to_ms  # its next login signs with the relay's new time

    try:
        for name in DESKS:
            await login(rig.desk(name), offset_ms=HOUR_MS, stop_at=stop_at)
        client.offset_ms = HOUR_MS
        await login(client.desk, offset_ms=HOUR_MS, stop_at=stop_at)
        for a in acker.api.values():
            await login(a.desk, offset_ms=HOUR_MS, stop_at=stop_at)
        skew_future = await send("skew_future", cfg.skew_probes, "medium", 10 * 60_000)
        skew_past = await send("skew_past", cfg.skew_probes, "medium", -10 * 60_000)
        # A: due 2 s after acceptance at +1 h; the clock goes back 1 h before that.
        await send("pending_across_backward_jump", cfg.never_acked, "critical")
        await send("acked_in_time", cfg.acked_in_time, "critical")
        await _gather_bounded(list(acker.tasks), stop_at - 10)
        await jump(0)
        # B: long ladders at real time that keep the scheduler busy across the next jump.
        await login(client.desk, offset_ms=0, stop_at=stop_at)
        await send("ladder_across_forward_jump", cfg.keepalive, "high")
        await asyncio.sleep(cfg.settle_s)
        await jump(HOUR_MS)
        await asyncio.sleep(cfg.settle_s)
        # C: accepted at +1 h, then the clock jumps to +2 h before the deadline.
        await login(client.desk, offset_ms=HOUR_MS, stop_at=stop_at)
        await send("due_after_forward_jump", cfg.never_acked, "critical")
        await asyncio.sleep(0.3)
        await jump(2 * HOUR_MS)
        await asyncio.sleep(cfg.settle_s)
        # D: accepted at +2 h, then back to +1 h: its deadline is an hour away again.
        await login(client.desk, offset_ms=2 * HOUR_MS, stop_at=stop_at)
        await send("pending_after_backward_jump", cfg.never_acked, "critical")
        await asyncio.sleep(0.3)
        await jump(HOUR_MS)
        await asyncio.sleep(cfg.settle_s)
        await _wait_for_log(rig, timeout=5)
        await rig.kill(count=False)
        await rig.check_integrity()
        client.journal.close()
        acker.journal.close()
        must_finish = {(nid, r) for name in ("pending_across_backward_jump",
                                             "ladder_across_forward_jump",
                                             "due_after_forward_jump")
                       for nid, r, _at in by_phase.get(name, [])}
        esc = _escalation_summary(rig, jdir, complete=must_finish, windows=T5_WINDOWS_MS)
        rows, _ladders = read_escalation_state(rig.db_path)
        pending_d = {nid for nid, _r, _at in by_phase.get("pending_after_backward_jump", [])}
        accepted = {name: [at for _n, _r, at in v] for name, v in by_phase.items()}
        a_at = accepted.get("pending_across_backward_jump", [0])
        b_at = accepted.get("ladder_across_forward_jump", [0])
        summary: dict[str, Any] = {
            "scenario": "T5", "config": dataclasses.asdict(cfg), "faketime": str(FAKETIME_LIB),
            "jumps": jumps, **rig.stats_dict(), **merge_counters([client]),
            "duplicate_escalations": esc["duplicate_rows"] + esc["level_accounting_mismatch"],
            **esc,
            "escalated_while_deadline_an_hour_away": sum(1 for r in rows
                                                        if r.notice_id in pending_d),
            # Evidence that the jumps happened: the relay attested acceptance times an hour
            # apart within seconds, and escalated C an hour overdue.
            "backward_jump_seen_ms": min(a_at) - max(b_at),
            "escalations_over_30min_overdue": sum(
                1 for r in rows if r.kind == "escalated" and r.at - r.deadline > 1_800_000),
            "skew_plus_10min_rejected": skew_future.count(0),
            "skew_minus_10min_accepted": skew_past.count(201),
            "skew_probes_each": cfg.skew_probes,
            "skew_rejected_fraction": round(
                (skew_future.count(0) + skew_past.count(0)) / max(1, 2 * cfg.skew_probes), 3),
            "elapsed_s": round(time.monotonic() - started, 2),
        }
        summary["must_be_zero"] = ["duplicate_escalations", "premature_escalations",
                                   "escalated_while_deadline_an_hour_away", "missed",
                                   "acked_before_deadline_but_escalated", "log_missing_ids",
                                   "log_duplicate_ids",
                                   "integrity_check_failures", "unanswered"]
        return summary
    finally:
        for t in acker.tasks:
            t.cancel()
        await rig.close()


# =========================================================================== T6


@dataclass
class T6Config:
    before: int = 15
    during: int = 10
    tmpfs_size: str = "4m"
    time_limit_s: float = 60.0
    seed: int = 6


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which(tool) or f"/usr/bin/{tool}"
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=30,
                          check=False)


def _fill(folder: Path) -> int:
    """Write a filler file until the file system answers ENOSPC; returns bytes written."""
    written = 0
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            for _ in range(1 << 16):
                try:
                    written += os.write(fd, b"\0" * chunk)
                except OSError:
                    break
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
    return written


async def run_t6(base: Path, cfg: T6Config) -> dict[str, Any]:
    """T6: the database on a 4 MiB tmpfs that fills up (ENOSPC while the relay runs), then
    mounted read-only (at a restart: the kernel refuses to remount a file system read-only
    while the relay holds its database open for writing). No "accepted" during a fault,
    nothing accepted before lost after recovery."""
    started = time.monotonic()
    stop_at = started + cfg.time_limit_s
    base.mkdir(parents=True, exist_ok=True)
    dbfs = base / "dbfs"
    dbfs.mkdir()
    mounted = _run("mount", "-t", "tmpfs", "-o", f"size={cfg.tmpfs_size},mode=0700", "tmpfs",
                   str(dbfs))
    if mounted.returncode != 0:
        return {"scenario": "T6", "skipped": "cannot mount a tmpfs for the database: "
                + (mounted.stderr.strip() or f"exit {mounted.returncode}")[:300]}
    rig: Rig | None = None
    try:
        rig = await Rig.create(base, env={"HOTLINE_RELAY_DATABASE": str(dbfs / "relay.db")})
        jdir = base / "journal"
        await _login_all(rig, stop_at)
        # Three recipients each: every notice needs the same number of database pages, so
        # one cannot fit in the slack that a larger one's failed commit left in the WAL.
        client = LoadClient(rig, "client-0", "us.caisi", Journal(jdir / "client-0.jsonl"),
                            random.Random(cfg.seed), recipients=DESKS, fanout=(3, 3))
        await login(client.desk, stop_at=stop_at)
        probe = rig.desk("cn.cac")
        await login(probe, stop_at=stop_at)
        out: dict[str, Any] = {"scenario": "T6", "config": dataclasses.asdict(cfg),
                               "injected": []}
        before = []
        for _ in range(cfg.before):
            env = client.make()
            before.append(env)
            await client.send(env, stop_at=stop_at)

        async def ready() -> int:
            try:
                async with rig.http.get(rig.relay.url + "/readyz") as r:  # type: ignore[union-attr]
                    return r.status
            except TRANSPORT_ERRORS:
                return 0

        async def once(envs: list[Envelope], label: str) -> dict[str, int]:
            """Send each notice once; tally the answers."""
            tally: dict[str, int] = {}
            for env in envs:
                try:
                    r = await request(client.desk, "POST", "/v1/notices", env.raw)
                    key = f"{r.status} {error_code(r) if r.status >= 400 else 'accepted'}"
                except TRANSPORT_ERRORS as exc:
                    key = type(exc).__name__
                client.journal.append("answer_during_fault", id=env.notice_id.hex(),
                                      phase=label, answer=key)
                tally[key] = tally.get(key, 0) + 1
            return tally

        def accepted_in(tally: dict[str, int]) -> int:
            return sum(v for k, v in tally.items() if k.startswith(("200", "201")))

        def unexpected_in(tally: dict[str, int]) -> int:
            return sum(v for k, v in tally.items() if not k.startswith(
                ("200", "201", "503 storage_unavailable", "401 unauthorized")))

        # ---- fault 1: the file system fills up while the relay runs
        filled = await asyncio.to_thread(_fill, dbfs)
        out["injected"].append(f"ENOSPC: tmpfs {cfg.tmpfs_size} filled ({filled} bytes filler)")
        enospc = [client.make() for _ in range(cfg.during)]
        for env in enospc:  # journal them as sent: they are checked after recovery
            client.journal.append("send", id=env.notice_id.hex(), sender=client.desk.desk,
                                  to=list(env.header.recipients), digest=env.digest.hex(),
                                  severity=env.header.severity, attempt=0)
        tally_enospc = await once(enospc, "enospc")
        ack = Confirmation.create("ack", notice_id=before[0].notice_id,
                                  digest=before[0].digest, sender=before[0].header.sender,
                                  me=probe.secrets, at=now_ms())
        r = await request(probe, "POST", "/v1/confirmations", ack.encode())
        out["ack_during_enospc"] = f"{r.status} {error_code(r) if r.status >= 400 else 'ok'}"
        out["readyz_during_enospc"] = await ready()
        out["answers_during_enospc"] = tally_enospc
        (dbfs / "filler").unlink()
        end = time.monotonic() + 10
        while await ready() != 200 and time.monotonic() < end:
            await asyncio.sleep(0.1)
        out["readyz_after_enospc"] = await ready()
        # The same bytes again: accepted now (200 duplicate would mean stored despite 503).
        recovered = [await client.send(env, stop_at=stop_at) for env in enospc]

        # ---- fault 2: the file system is read-only when the relay starts
        await rig.kill(count=False)
        ro = _run("mount", "-o", "remount,ro", str(dbfs))
        tally_ro: dict[str, int] = {}
        readonly_envs: list[Envelope] = []
        if ro.returncode != 0:
            out["readonly"] = f"remount ro failed: {ro.stderr.strip()[:200]}"
        else:
            out["injected"].append("read-only: tmpfs remounted ro, relay restarted on it")
            try:
                await rig.start()
                out["readonly_relay_started"] = True
                # Sessions live in the relay's memory; a login stores the desk's card, so
                # on read-only storage it cannot succeed: submissions then meet 401.
                try:
                    await login(client.desk, stop_at=time.monotonic() + 3, attempts=5)
                    out["login_during_readonly"] = "ok"
                except GaveUp as exc:
                    out["login_during_readonly"] = str(exc)
                readonly_envs = [client.make() for _ in range(cfg.during)]
                for env in readonly_envs:
                    client.journal.append("send", id=env.notice_id.hex(),
                                          sender=client.desk.desk,
                                          to=list(env.header.recipients),
                                          digest=env.digest.hex(),
                                          severity=env.header.severity, attempt=0)
                tally_ro = await once(readonly_envs, "readonly")
                out["readyz_during_readonly"] = await ready()
            except RuntimeError as exc:
                out["readonly_relay_started"] = False
                out["readonly_start_failure"] = str(exc).splitlines()[0][:200]
                out["readonly_last_log"] = [x.get("event", "") + " " + str(
                    x.get("error", x.get("line", "")))[:160] for x in rig.relay.lines[-3:]]
            await rig.kill(count=False)
            back = _run("mount", "-o", "remount,rw", str(dbfs))
            assert back.returncode == 0, back.stderr
        out["answers_during_readonly"] = tally_ro
        await rig.start()
        await login(client.desk, stop_at=stop_at)
        recovered += [await client.send(env, stop_at=stop_at) for env in readonly_envs]

        # ---- the last restart and the check
        await rig.restart(count=False)
        inboxes = await _inboxes(rig, DESKS, stop_at)
        await rig.kill(count=False)
        await rig.check_integrity()
        client.journal.close()
        check = check_notices(Journal.read_dir(jdir, "client-*.jsonl"), inboxes)
        out.update(rig.stats_dict())
        out.update({
            "receipts_before_fault": sum(1 for e in before if e is not None),
            "receipts_during_fault": accepted_in(tally_enospc) + accepted_in(tally_ro),
            "unexpected_answers_during_fault": unexpected_in(tally_enospc)
                                               + unexpected_in(tally_ro),
            "stored_despite_503": sum(1 for a in recovered if a is not None and a.duplicate),
            "not_recovered": sum(1 for a in recovered if a is None),
            "readyz_ready_during_fault": sum(1 for k in ("readyz_during_enospc",
                                                         "readyz_during_readonly")
                                             if out.get(k) == 200),
            "lost_after_recovery": check["receipted_but_missing"],
            "stored_duplicates": check["stored_duplicates"],
            "receipts_issued": check["receipts_issued"],
            "elapsed_s": round(time.monotonic() - started, 2),
        })
        out["must_be_zero"] = ["receipts_during_fault", "lost_after_recovery",
                               "stored_duplicates", "unexpected_answers_during_fault",
                               "not_recovered", "integrity_check_failures",
                               "readyz_ready_during_fault"]
        return out
    finally:
        if rig is not None:
            await rig.close()
        _run("mount", "-o", "remount,rw", str(dbfs))
        if _run("umount", str(dbfs)).returncode != 0:
            _run("umount", "-l", str(dbfs))
        with contextlib.suppress(OSError):
            shutil.rmtree(dbfs)
