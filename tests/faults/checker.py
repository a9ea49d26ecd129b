"""Compare the clients' journals (ground truth) with what the relay finally holds.

``check_notices``: every notice the relay answered "accepted" for (201, or 200 with
``duplicate=true``) must be in each recipient's inbox exactly once, with the bytes that
were sent and the attestation the client was given.

``check_escalations``: every ladder that was never acknowledged reached its last level;
no (notice, recipient, track, level, kind) twice; nothing acknowledged before its deadline
escalated; no escalation before its time by the relay's own attested clock; the
operators' escalation log holds each escalation exactly once.

``check_record``: the relay's log proves what it answered: every checkpoint seen during
the run is consistent with the final one, every receipted statement included in it.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keys import tlog
from keys.checkpoint import open_checkpoint
from keys.errors import HotlineError
from keys.frames import Event
from keys.note import Verifier
from keys.primitives import digest
from keys.receipts import EscalationStatement
from relay.policy import levels_due
from tests.faults.harness import Journal, percentile, query

NOTICE_MUST_BE_ZERO = ["receipted_but_missing", "missing_deliveries", "stored_duplicates",
                       "content_mismatch", "attestation_mismatch", "replay_receipt_mismatch",
                       "unknown_stored", "unanswered", "integrity_check_failures"]


@dataclass
class SentNotice:
    sender: str
    to: tuple[str, ...]
    digest: str
    severity: str
    attestations: list[str] = field(default_factory=list)
    #: The attestations of answers with ``duplicate=true`` (idempotent replays).
    replays: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return bool(self.attestations)


def sent_notices(records: list[dict[str, Any]]) -> dict[str, SentNotice]:
    """Notice id -> what the journals say was sent and answered."""
    out: dict[str, SentNotice] = {}
    for rec in records:
        if rec["k"] == "send" and rec["id"] not in out:
            out[rec["id"]] = SentNotice(rec["sender"], tuple(rec["to"]), rec["digest"],
                                        rec.get("severity", ""))
        elif rec["k"] == "answer" and rec["id"] in out:
            n = out[rec["id"]]
            n.statuses.append(int(rec["status"]))
            if rec["status"] in (200, 201) and "att" in rec:
                n.attestations.append(rec["att"])
                if rec.get("duplicate"):
                    n.replays.append(rec["att"])
    return out


def check_notices(records: list[dict[str, Any]],
                  inboxes: dict[str, list[Event]]) -> dict[str, Any]:
    notices = sent_notices(records)
    stored: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for desk, events in inboxes.items():
        for ev in events:
            if ev.kind == "notice":
                stored[(desk, ev.notice_id.hex())].append(ev)
    accepted = {nid: n for nid, n in notices.items() if n.accepted}
    missing_notices: set[str] = set()
    missing_pairs = 0
    content_mismatch = attestation_mismatch = 0
    for nid, n in accepted.items():
        for r in n.to:
            evs = stored.get((r, nid), [])
            if not evs:
                missing_notices.add(nid)
                missing_pairs += 1
                continue
            for ev in evs:
                if ev.envelope is None or digest(ev.envelope).hex() != n.digest:
                    content_mismatch += 1
                if ev.attestation is None or ev.attestation.hex() != n.attestations[0]:
                    attestation_mismatch += 1
    stored_ids = {nid for (_desk, nid) in stored}
    # A replay is idempotent when it hands back the very attestation the relay stored.
    stored_att = {nid: evs[0].attestation for (_d, nid), evs in stored.items() if evs}
    same_receipt = sum(1 for nid, n in accepted.items() for att in n.replays
                       if stored_att.get(nid) is not None
                       and stored_att[nid].hex() == att)  # type: ignore[union-attr]
    return {
        "notices_journaled": len(notices),
        "receipts_issued": len(accepted),
        "receipted_but_missing": len(missing_notices),
        "missing_deliveries": missing_pairs,
        "stored_duplicates": sum(1 for evs in stored.values() if len(evs) > 1),
        "content_mismatch": content_mismatch,
        "attestation_mismatch": attestation_mismatch,
        "replay_receipt_mismatch": sum(1 for n in accepted.values()
                                       if len(set(n.attestations)) > 1),
        "idempotent_replays_same_receipt": same_receipt,
        "unknown_stored": len(stored_ids - set(notices)),
        "stored_without_receipt": len({nid for nid in stored_ids
                                       if nid in notices and nid not in accepted}),
        "examples_missing": sorted(missing_notices)[:5],
    }


# --------------------------------------------------------------------------- escalations


@dataclass(frozen=True)
class EscRow:
    id: int
    notice_id: str
    recipient: str
    track: str
    level: int
    kind: str
    at: int
    missed_levels: int
    deadline: int
    final: bool


@dataclass(frozen=True)
class Ladder:
    notice_id: str
    recipient: str
    track: str
    due_at: int
    repeat_ms: int
    max_level: int
    level: int
    met_at: int | None


def read_escalation_state(db_path: Path) -> tuple[list[EscRow], dict[tuple[str, str, str],
                                                                    Ladder]]:
    rows = []
    for (esc_id, nid, recipient, track, level, kind, at, statement) in query(
            db_path, "SELECT id, notice_id, recipient, track, level, kind, at, statement"
                     " FROM escalations ORDER BY id"):
        st = EscalationStatement.decode(bytes(statement))
        rows.append(EscRow(int(esc_id), bytes(nid).hex(), recipient, track, int(level), kind,
                           int(at), st.missed_levels, st.deadline, st.final))
    ladders = {}
    for (nid, recipient, track, due_at, repeat_ms, max_level, level, met_at) in query(
            db_path, "SELECT notice_id, recipient, track, due_at, repeat_ms, max_level, level,"
                     " met_at FROM deadlines"):
        key = (bytes(nid).hex(), recipient, track)
        ladders[key] = Ladder(key[0], recipient, track, int(due_at), int(repeat_ms),
                              int(max_level), int(level), met_at)
    return rows, ladders


def read_escalation_log(path: Path) -> list[dict[str, Any]]:
    return Journal.read(path) if path.exists() else []


ESCALATION_MUST_BE_ZERO = ["missed", "duplicate_rows", "log_duplicate_ids", "log_missing_ids",
                           "acked_before_deadline_but_escalated", "escalated_after_ack",
                           "late_ack_level_mismatch", "level_accounting_mismatch",
                           "premature_escalations", "deadline_mismatch", "resolved_missing",
                           "resolved_unexpected", "ack_time_mismatch",
                           "integrity_check_failures"]


def check_escalations(rows: list[EscRow], ladders: dict[tuple[str, str, str], Ladder], *,
                      acks: dict[tuple[str, str], int],
                      accepted_at: dict[str, int],
                      windows_ms: dict[str, int],
                      severity: dict[str, str],
                      db_acked_at: dict[tuple[str, str], int | None],
                      log: list[dict[str, Any]],
                      complete: set[tuple[str, str]] | None = None) -> dict[str, Any]:
    """``acks``: (notice, recipient) -> relay-attested ack time, from the ackers' journals.
    ``complete``: the ack-track ladders that must have reached their last level (default:
    every ladder never acknowledged)."""
    by_ladder: dict[tuple[str, str, str], list[EscRow]] = defaultdict(list)
    for row in rows:
        by_ladder[(row.notice_id, row.recipient, row.track)].append(row)
    keys = Counter((r.notice_id, r.recipient, r.track, r.level, r.kind) for r in rows)
    out: Counter[str] = Counter()
    lateness: list[float] = []
    catch_up: list[float] = []
    ack_ladders = {k: v for k, v in ladders.items() if k[2] == "ack"}
    for key, lad in ack_ladders.items():
        nid, rcpt, _track = key
        esc = sorted((r for r in by_ladder.get(key, []) if r.kind == "escalated"),
                     key=lambda r: r.level)
        resolved = [r for r in by_ladder.get(key, []) if r.kind == "resolved"]
        top = esc[-1].level if esc else 0
        ack_at = acks.get((nid, rcpt))
        window = windows_ms.get(severity.get(nid, ""))
        if nid in accepted_at and window is not None and lad.due_at != accepted_at[nid] + window:
            out["deadline_mismatch"] += 1  # the frozen policy is not the one configured
        if ack_at is not None and db_acked_at.get((nid, rcpt)) != ack_at:
            out["ack_time_mismatch"] += 1
        # The levels must climb with no level twice, and account for every level passed.
        if [r.level for r in esc] != sorted({r.level for r in esc}) or (
                esc and sum(1 + r.missed_levels for r in esc) != top):
            out["level_accounting_mismatch"] += 1
        if ack_at is None:
            out["never_acked"] += 1
            must_finish = complete is None or (nid, rcpt) in complete
            if must_finish and top < lad.max_level:
                out["missed"] += 1
            if resolved:
                out["resolved_unexpected"] += 1
        elif ack_at < lad.due_at:
            out["acked_before_deadline"] += 1
            if esc:
                out["acked_before_deadline_but_escalated"] += 1
            if resolved:
                out["resolved_unexpected"] += 1
        else:
            out["acked_after_deadline"] += 1
            if top != levels_due(lad.due_at, lad.repeat_ms, lad.max_level, ack_at):
                out["late_ack_level_mismatch"] += 1
            if top > 0 and len(resolved) != 1:
                out["resolved_missing"] += 1
        for r in esc:
            if ack_at is not None and r.at > ack_at:
                out["escalated_after_ack"] += 1
            scheduled = r.deadline + (r.level - 1) * lad.repeat_ms
            if r.at < scheduled or r.deadline != lad.due_at:
                out["premature_escalations"] += 1
            (lateness if r.missed_levels == 0 else catch_up).append(r.at - scheduled)
        if top == lad.max_level:
            out["ladders_completed"] += 1
    db_ids = Counter(r.id for r in rows)
    log_ids = Counter(int(x["escalation_id"]) for x in log if "escalation_id" in x)
    summary: dict[str, Any] = {
        "ladders": len(ack_ladders),
        "escalation_rows": sum(1 for r in rows if r.kind == "escalated"),
        "resolved_rows": sum(1 for r in rows if r.kind == "resolved"),
        "catch_up_rows": len(catch_up),
        "duplicate_rows": sum(c - 1 for c in keys.values() if c > 1),
        "log_lines": sum(log_ids.values()),
        "log_duplicate_ids": sum(c - 1 for c in log_ids.values() if c > 1),
        "log_missing_ids": len(set(db_ids) - set(log_ids)),
        "log_unknown_ids": len(set(log_ids) - set(db_ids)),
        "lateness_ms_p50": percentile(lateness, 50),
        "lateness_ms_p99": percentile(lateness, 99),
        "lateness_ms_max": max(lateness) if lateness else None,
        "catch_up_lateness_ms_max": max(catch_up) if catch_up else None,
    }
    for name in ("never_acked", "acked_before_deadline", "acked_after_deadline",
                 "ladders_completed", *ESCALATION_MUST_BE_ZERO):
        if name != "integrity_check_failures":
            summary.setdefault(name, out[name])
    return summary


# --------------------------------------------------------------------------- the log

RECORD_MUST_BE_ZERO = ["inclusion_proof_failures", "consistency_proof_failures"]


def _consistency(old: int, new: int, read: tlog.HashReader) -> list[bytes]:
    return tlog.consistency_proof(read, old, new)


def _inclusion(leaf: int, size: int, read: tlog.HashReader) -> list[bytes]:
    return tlog.inclusion_proof(read, leaf, size)


async def check_record(fetch: Callable[[str], Awaitable[bytes | None]], log_key: Verifier,
                       final_note: bytes, seen: list[bytes], statements: list[bytes]
                       ) -> dict[str, Any]:
    """The relay's log after the run, as a desk checks it (client/record.py), against the
    final checkpoint ``final_note``: every checkpoint ``seen`` during the run must be
    consistent with it (a proof from the final tiles), and every receipted statement
    included in it (its leaf from ``/v1/log/index``, the proof from the tiles)."""
    final = open_checkpoint(final_note, [log_key]).checkpoint
    tiles: dict[tlog.Tile, bytes] = {}

    async def tiles_for(compute: Callable[[tlog.HashReader], object]
                        ) -> dict[tlog.Tile, bytes]:
        out = {}
        for t in tlog.tiles_needed(tlog.needed_hashes(compute), final.size):
            if t not in tiles:
                data = await fetch("/" + t.path())
                if data is None:
                    raise tlog.ProofError(f"the relay does not serve {t.path()}")
                tiles[t] = data
            out[t] = tiles[t]
        return out

    consistency: list[str] = []
    for note in seen:
        try:
            old = open_checkpoint(note, [log_key]).checkpoint
            if old.size > final.size:
                raise tlog.ProofError(f"size {old.size} is beyond the final {final.size}")
            if old.size == final.size or old.size == 0:
                if old.size and old.root != final.root:
                    raise tlog.ProofError(f"another tree of size {old.size}")
                continue
            t = await tiles_for(functools.partial(_consistency, old.size, final.size))
            tlog.prove_consistency_from_tiles(t, old.size, old.root, final.size, final.root)
        except HotlineError as exc:
            consistency.append(f"{note[:60]!r}: {exc.message}")
    inclusion: list[str] = []
    for st in statements:
        h = hashlib.sha256(st).digest()
        try:
            body = await fetch(f"/v1/log/index/{h.hex()}")
            if body is None:
                raise tlog.ProofError("no leaf records it")
            leaf = int(body.decode().strip())
            if leaf >= final.size:
                raise tlog.ProofError(f"leaf {leaf} is beyond the final size {final.size}")
            t = await tiles_for(functools.partial(_inclusion, leaf, final.size))
            tlog.prove_inclusion_from_tiles(t, tlog.leaf_hash(h), leaf, final.size, final.root)
        except HotlineError as exc:
            inclusion.append(f"{h.hex()[:16]}: {exc.message}")
    return {"log_final_size": final.size, "checkpoints_seen": len(seen),
            "statements_proven": len(statements) - len(inclusion),
            "inclusion_proof_failures": len(inclusion),
            "consistency_proof_failures": len(consistency),
            "record_details": (inclusion + consistency)[:5]}
