"""The relay's schema files are applied by number, each once, whatever order they arrive
in: a database at v4 without v3 gets v3 when a relay that has it opens the database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from relay.errors import StorageUnavailable
from relay.store import sqlite as sqlite_store
from relay.store.sqlite import SqliteStore


def applied(path: Path) -> list[int]:
    db = sqlite3.connect(path)
    try:
        return [int(r[0]) for r in db.execute("SELECT version FROM schema_version ORDER BY 1")]
    finally:
        db.close()


async def test_a_schema_file_numbered_below_the_applied_ones_is_applied_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = sqlite_store._migrations()
    numbers = [v for v, _ in shipped]
    assert 3 not in numbers and 4 in numbers, "this test stands in a v3 for the gap"
    path = tmp_path / "relay.db"
    store = SqliteStore(str(path))
    await store.open()
    await store.close()
    assert applied(path) == numbers
    late = (3, "CREATE TABLE arrived_late (x INTEGER);")
    monkeypatch.setattr(sqlite_store, "_migrations", lambda: sorted([*shipped, late]))
    store = SqliteStore(str(path))
    await store.open()
    await store.close()
    assert applied(path) == sorted([*numbers, 3])
    db = sqlite3.connect(path)
    try:
        db.execute("SELECT x FROM arrived_late")  # the late file ran
        db.execute("SELECT rejection_reason FROM deliveries")  # v4 stayed
    finally:
        db.close()
    store = SqliteStore(str(path))
    await store.open()  # nothing left to apply: no file runs twice
    await store.close()
    assert applied(path) == sorted([*numbers, 3])


async def test_a_database_with_a_schema_this_relay_does_not_know_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An older relay (without v4) must not run on a database v4 was applied to."""
    path = tmp_path / "relay.db"
    store = SqliteStore(str(path))
    await store.open()
    await store.close()
    shipped = sqlite_store._migrations()
    monkeypatch.setattr(sqlite_store, "_migrations", lambda: [m for m in shipped if m[0] != 4])
    with pytest.raises(StorageUnavailable, match="schema v4"):
        await SqliteStore(str(path)).open()
