"""The deadline scheduler: the only part of the relay that sleeps.

Each pass claims every ladder whose next level is due, in one transaction (exactly once
per level, by the database's UNIQUE key), then tells everyone: structured log, the
escalation log file (append-only, fsynced), desk streams, webhooks, metrics. It sleeps
until the next deadline, or until a new notice brings an earlier one. After a restart
the first pass catches up every ladder that fell due meanwhile: one escalation at the
current level, saying how many levels were missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relay import faults
from relay.clock import Clock
from relay.hub import Hub
from relay.metrics import Metrics
from relay.store.base import EscalationRow, Routing, Stamper, Store

BATCH = 500
#: The hub key operators' live views subscribe to.
OPERATORS = "*operators*"
#: A deadline this far past without its escalation means the scheduler is behind: alert.
AUDIT_MARGIN_MS = 60_000
#: Sleep at most this long between passes (a heartbeat for the self-audit).
MAX_SLEEP_S = 30.0
_LOG_TAIL_BYTES = 256 * 1024
#: Escalations appended per batch: ~450 bytes a line, well inside the tail read back.
LOG_BATCH = 200


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def log_record(row: EscalationRow, relay_id: str) -> dict[str, Any]:
    """The escalation as one JSON object: the structured log and the escalation log file."""
    return {
        "event": "notice.escalated" if row.kind == "escalated" else "escalation.resolved",
        "escalation_id": row.id, "relay": relay_id, "notice_id": row.notice_id.hex(),
        "sender": row.sender, "recipient": row.recipient, "severity": row.severity,
        "status": row.status, "exercise": row.status != "actual", "track": row.track,
        "level": row.level, "missed_levels": row.missed_levels,
        "deadline": iso(row.deadline), "at": iso(row.at), "overdue_ms": row.at - row.deadline,
        "delivered": row.delivered, "final": row.final,
        "contacts": list(row.contacts), "webhooks": list(row.webhooks),
        # The recipient said, signed, that it could not open the notice (the sender's
        # fault); the deadline still runs, since nobody there has read it.
        "rejected_by_recipient": row.rejected,
    }


class EscalationLog:
    """The operators' escalation file: JSON lines, append-only, fsynced, one line per
    escalation id (after a crash, lines already written are not written again).

    Rotated by size: when the next batch would take the file past ``max_bytes`` it is
    renamed to ``NAME.1`` (``.1`` to ``.2`` ..., the oldest beyond ``keep`` deleted) and
    the batch starts a new file. Batches are written whole, so a line is never split
    across files, and rotation and appends are serialised, so none is lost or doubled."""

    def __init__(self, path: Path, *, max_bytes: int = 64 * 1024 * 1024, keep: int = 10
                 ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()

    def rotated(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def written_ids(self) -> set[int]:
        """Ids in the last ``_LOG_TAIL_BYTES`` written, across a rotation if need be."""
        ids: set[int] = set()
        budget = _LOG_TAIL_BYTES
        for path in (self.path, self.rotated(1)):
            if budget <= 0 or not path.exists():
                continue
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(max(0, size - budget))
                tail = fh.read().splitlines()
            budget -= size
            for line in tail:
                with contextlib.suppress(ValueError, AttributeError, KeyError, TypeError):
                    ids.add(int(json.loads(line)["escalation_id"]))
        return ids

    def append(self, records: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                size = self.path.stat().st_size
                if size and size + len(data) > self.max_bytes:
                    self._rotate()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                view = memoryview(data)
                while view:  # a short write (e.g. on a signal) continues, never splits
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)

    def _rotate(self) -> None:
        self.rotated(self.keep).unlink(missing_ok=True)
        for n in range(self.keep - 1, 0, -1):
            if self.rotated(n).exists():
                os.replace(self.rotated(n), self.rotated(n + 1))
        os.replace(self.path, self.rotated(1))
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the renames survive a crash before the next append's fsync
        finally:
            os.close(dir_fd)


class Escalator:
    def __init__(self, *, store: Store, clock: Clock, stamper: Stamper, routing: Routing,
                 hub: Hub, log: Any, metrics: Metrics, relay_id: str, log_path: Path,
                 on_webhooks: Callable[[], None] = lambda: None,
                 sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.clock = clock
        self.stamper = stamper
        self.routing = routing
        self.hub = hub
        self.log = log
        self.metrics = metrics
        self.relay_id = relay_id
        self.file = EscalationLog(log_path)
        self.on_webhooks = on_webhooks
        self._wake = asyncio.Event()
        self._next_at: int | None = None
        self._stop = asyncio.Event()
        # Request handlers (late acks, replies) and the scheduler both flush the log file;
        # one at a time, or both would append the same unlogged rows.
        self._flush_lock = asyncio.Lock()
        # After the first flush (which reconciles with the file's tail, for rows a crash
        # left appended but unmarked) this process is the file's only writer: no re-reads.
        self._reconciled = False

    # ------------------------------------------------------------------ driving
    def poke(self, due_at: int) -> None:
        """A new deadline exists; wake early if it is sooner than the one we sleep for."""
        if self._next_at is None or due_at < self._next_at:
            self._next_at = due_at
            self._wake.set()

    async def tick(self) -> list[EscalationRow]:
        """One pass: escalate everything due now. Tests drive time with this."""
        done: list[EscalationRow] = []
        while True:
            claimed = await self.store.claim_due(self.clock.now_ms, BATCH, self.stamper,
                                                 self.routing)
            if claimed.escalations:
                faults.crash_point("post_escalation_commit_pre_notify")
            await self.announce(claimed.escalations)
            done.extend(claimed.escalations)
            self._next_at = claimed.next_at
            if len(claimed.escalations) < BATCH:
                break
        now = self.clock.now_ms()
        self.metrics.scheduler_heartbeat.set(now / 1000)
        late = 0 if self._next_at is None or self._next_at > now - AUDIT_MARGIN_MS else 1
        self.metrics.scheduler_late.set(late)
        if late:
            self.log.warning("scheduler.late", next_due=iso(self._next_at or now))
        return done

    async def run(self) -> None:
        await self.flush_log()
        while not self._stop.is_set():
            self._wake.clear()
            try:
                await self.tick()
            except Exception:  # keep escalating whatever one pass hit; it is logged
                self.log.exception("scheduler.pass_failed")
                await asyncio.sleep(1)
                continue
            now = self.clock.now_ms()
            delay = MAX_SLEEP_S if self._next_at is None else max(
                0.0, min(MAX_SLEEP_S, (self._next_at - now) / 1000))
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    # ------------------------------------------------------------------ telling people
    async def announce(self, rows: list[EscalationRow]) -> None:
        """Log, count and push escalations and resolutions that were just committed."""
        if not rows:
            return
        desks: set[str] = set()
        for row in rows:
            record = log_record(row, self.relay_id)
            event = record.pop("event")
            if row.kind == "escalated":
                self.log.warning(event, **record)
                self.metrics.escalations.labels(row.severity, str(row.level), row.track,
                                                row.status).inc()
                if row.missed_levels == 0 and row.scheduled_at:
                    self.metrics.lateness.observe(max(0, row.at - row.scheduled_at) / 1000)
            else:
                self.log.info(event, **record)
                self.metrics.resolved.labels(row.severity, row.track, row.status).inc()
            desks.update((row.sender, row.recipient, *row.contacts))
        for desk in desks:
            self.hub.publish(desk)
        self.hub.publish(OPERATORS)
        if any(row.webhooks for row in rows):
            self.on_webhooks()
        await self.flush_log()

    async def flush_log(self) -> None:
        """Append every escalation not yet in the escalation log file, then mark them."""
        async with self._flush_lock:
            while True:
                # Batches small enough that a crash between append and mark leaves the
                # whole batch within the tail that written_ids() reads after a restart.
                rows = self.store.unlogged_escalations(LOG_BATCH)
                if not rows:
                    self._reconciled = True
                    return
                fresh = rows
                if not self._reconciled:
                    already = await asyncio.to_thread(self.file.written_ids)
                    fresh = [r for r in rows if r.id not in already]
                if fresh:
                    await asyncio.to_thread(self.file.append,
                                            [log_record(r, self.relay_id) for r in fresh])
                await self.store.mark_logged([r.id for r in rows])
                if len(rows) < LOG_BATCH:
                    self._reconciled = True
                    return
