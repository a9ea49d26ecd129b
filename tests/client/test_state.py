"""The client's durable state: cursor, de-duplication, outbox, flags, durability settings."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.state import (
    _MIGRATIONS,
    _SCHEMA,
    SCHEMA_VERSION,
    ClientState,
    OutboxRecord,
    ReceivedRecord,
    RejectedRecord,
    WarningRecord,
)
from keys.errors import UsageError


def _received(nid: int, seq: int, **kw: object) -> ReceivedRecord:
    base: dict[str, object] = dict(
        notice_id=nid.to_bytes(16, "big"), seq=seq, sender="us.caisi", severity="high",
        status="actual", created_at=1, accepted_at=2, received_at=3, digest=b"d" * 32,
        envelope=b"sealed", signer_cert=b"cert", attestation=b"att",
    )
    base.update(kw)
    return ReceivedRecord(**base)  # type: ignore[arg-type]


def _outbox(nid: int, envelope: bytes = b"env") -> OutboxRecord:
    return OutboxRecord(nid.to_bytes(16, "big"), envelope, b"d" * 32, ("cn.cac",), "high",
                        "actual", 10)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[ClientState]:
    s = ClientState.in_home(tmp_path / "home")
    yield s
    s.close()


def test_new_database_is_private_durable_and_at_cursor_zero(tmp_path: Path) -> None:
    """client.db is 0600, in WAL mode with synchronous=FULL, and starts at cursor 0."""
    with ClientState.in_home(tmp_path / "home") as s:
        assert s.cursor() == 0
        assert stat.S_IMODE(s.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(s.path.parent.stat().st_mode) == 0o700
        assert s._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert s._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


def test_a_notice_id_is_stored_once(state: ClientState) -> None:
    """The second arrival of a notice id is refused; its seq still moves the cursor."""
    assert state.add_received(_received(1, seq=5))
    assert not state.add_received(_received(1, seq=9, envelope=b"other"))
    stored = state.received((1).to_bytes(16, "big"))
    assert stored is not None and stored.seq == 5 and stored.envelope == b"sealed"
    assert state.cursor() == 9


def test_cursor_never_moves_backwards(state: ClientState) -> None:
    state.advance(7)
    state.advance(3)
    state.add_received(_received(1, seq=4))
    assert state.cursor() == 7


def test_state_survives_reopening(tmp_path: Path) -> None:
    """Flags and cursor written by one process are what the next one reads."""
    home = tmp_path / "home"
    with ClientState.in_home(home) as s:
        s.add_received(_received(1, seq=1))
        s.add_received(_received(2, seq=2))
        s.mark_yielded((1).to_bytes(16, "big"))
        s.mark_processed((2).to_bytes(16, "big"))
        s.mark_receipt_sent((2).to_bytes(16, "big"))
    with ClientState.in_home(home) as s:
        (pending,) = s.pending()
        assert pending.notice_id == (1).to_bytes(16, "big") and pending.yielded
        assert [r.seq for r in s.unreceipted()] == [1]
        assert s.cursor() == 2


def test_ack_marks_processed_and_keeps_the_first_time(state: ClientState) -> None:
    nid = (1).to_bytes(16, "big")
    state.add_received(_received(1, seq=1))
    state.mark_acked(nid, 100)
    state.mark_acked(nid, 200)
    stored = state.received(nid)
    assert stored is not None and stored.acked_at == 100 and stored.processed
    assert state.received_list(include_acked=False) == []
    assert len(state.received_list(include_acked=True)) == 1


def test_outbox_keeps_the_first_bytes_under_one_id(state: ClientState) -> None:
    """Re-adding an id returns what is stored: a resend must post the same bytes."""
    state.add_outbox(_outbox(1, b"first"))
    again = state.add_outbox(_outbox(1, b"second"))
    assert again.envelope == b"first" and again.state == "unconfirmed"
    assert [r.envelope for r in state.unconfirmed()] == [b"first"]


def test_outbox_states(state: ClientState) -> None:
    state.add_outbox(_outbox(1))
    state.add_outbox(_outbox(2))
    state.mark_accepted((1).to_bytes(16, "big"), b"att", 50)
    state.mark_failed((2).to_bytes(16, "big"), "refused")
    state.mark_failed((1).to_bytes(16, "big"), "too late")  # accepted stays accepted
    one, two = state.outbox_list()
    assert (one.state, one.attestation, one.accepted_at) == ("accepted", b"att", 50)
    assert (two.state, two.error) == ("failed", "refused")
    assert state.unconfirmed() == []


def test_rejected_events_are_recorded_and_move_the_cursor(state: ClientState) -> None:
    state.add_rejected(RejectedRecord(4, "notice", b"n" * 16, "bad_signature", "flipped", 1))
    assert state.cursor() == 4
    assert [r.code for r in state.rejected()] == ["bad_signature"]


def test_find_by_prefix(state: ClientState) -> None:
    state.add_received(_received(0xABCDEF, seq=1))
    state.add_outbox(_outbox(0xABCDE0))
    assert len(state.find("0000000000000000000000000000abcd")) == 0
    assert len(state.find("00000000000000000000000000abcd")) == 2
    assert state.find("00000000000000000000000000abcdef") == [(0xABCDEF).to_bytes(16, "big")]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer client is not touched."""
    home = tmp_path / "home"
    ClientState.in_home(home).close()
    db = sqlite3.connect(home / "client.db")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(UsageError, match="upgrade"):
        ClientState.in_home(home)


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "client.db").write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(UsageError, match="not a usable client database"):
        ClientState.in_home(home)


def test_v1_database_is_migrated_in_place(tmp_path: Path) -> None:
    """A client.db written by a schema v1 client keeps its rows; an accepted notice's
    watchdog start becomes the local time it was sealed (never the relay's time), older
    confirmations have no recorded receipt time, and warnings can be kept."""
    home = tmp_path / "home"
    home.mkdir()
    db = sqlite3.connect(home / "client.db")
    db.executescript(_SCHEMA + "PRAGMA user_version=1;")
    db.execute("INSERT INTO outbox (notice_id, envelope, digest, recipients, severity, status,"
               " created_at, state, attestation, accepted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?,"
               " ?, ?)", (b"n" * 16, b"env", b"d" * 32, '["cn.cac"]', "critical", "actual",
                          1000, "accepted", b"att", 99_999_999))
    db.execute("INSERT INTO confirmations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (b"n" * 16, "cn.cac", "receipt", 1, 2, 3, b"conf", b"att"))
    db.commit()
    db.close()
    with ClientState.in_home(home) as state:
        record = state.outbox(b"n" * 16)
        assert record is not None and record.sent_at == 1000 and record.accepted_at == 99_999_999
        assert state.watch_candidates(0) == [(b"n" * 16, "cn.cac", "critical", "actual", 1000)]
        (conf,) = state.confirmations(b"n" * 16)
        assert conf.received_at is None
        state.add_warning(WarningRecord("clock_skew", b"n" * 16, "accepted", "us.caisi", 0, 5))
        assert [w.attested_at for w in state.take_warnings()] == [0]
        assert state.take_warnings() == [] and len(state.warnings()) == 1
    version = sqlite3.connect(home / "client.db").execute("PRAGMA user_version").fetchone()
    assert version == (SCHEMA_VERSION,) == (3,)


def test_v2_database_is_migrated_in_place_with_kept_confirmations_and_unopened_notices(
        tmp_path: Path) -> None:
    """A client.db of schema v2 keeps its rows and gains the outbox of signed confirmations
    and the table of notices kept unopened."""
    home = tmp_path / "home"
    home.mkdir()
    db = sqlite3.connect(home / "client.db")
    db.executescript(_SCHEMA + _MIGRATIONS[2] + "PRAGMA user_version=2;")
    db.execute("INSERT INTO outbox (notice_id, envelope, digest, recipients, severity, status,"
               " created_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (b"n" * 16, b"env", b"d" * 32, '["cn.cac"]', "high", "actual", 10,
                "unconfirmed"))
    db.commit()
    db.close()
    with ClientState.in_home(home) as state:
        assert [r.notice_id for r in state.unconfirmed()] == [b"n" * 16]
        kept = state.queue_confirmation(b"m" * 16, "ack", b"signed", b"d" * 32, "us.caisi", 5)
        again = state.queue_confirmation(b"m" * 16, "ack", b"other", b"d" * 32, "us.caisi", 6)
        assert again == kept and kept.body == b"signed" and kept.state == "queued"
        state.confirmation_failed(kept.id, "down", final=False)
        (waiting,) = state.queued_confirmations()
        assert waiting.attempts == 1 and waiting.last_error == "down"
        state.confirmation_sent(kept.id)
        assert state.queued_confirmations() == []
        assert state.unopened() == []
    version = sqlite3.connect(home / "client.db").execute("PRAGMA user_version").fetchone()
    assert version == (3,)
