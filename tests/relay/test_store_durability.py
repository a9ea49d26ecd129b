"""The SQLite store reads its durability settings back on every connection and refuses to
run without them (WAL, synchronous FULL or EXTRA, syncs compiled in): a relay that answers
"accepted" must have the notice on disk, not in the page cache.

The weakened settings are simulated by a connection that rewrites the store's pragmas, as
a different SQLite build, a changed default or a mistaken edit would."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keys.errors import UsageError
from relay import config as config_mod
from relay.errors import StorageUnavailable
from relay.store.sqlite import SqliteStore


def _rewriting(rewrite: Callable[[str, int], str]) -> type[sqlite3.Connection]:
    """A connection class whose n-th connection (from 1) runs ``rewrite(sql, n)``."""
    opened = [0]

    class Rewriting(sqlite3.Connection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            opened[0] += 1
            self.n = opened[0]

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            return super().execute(rewrite(sql, self.n), *args)

    return Rewriting


@pytest.fixture
def weaken(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[[str, int], str]],
                                                                   None]]:
    real = sqlite3.connect

    def install(rewrite: Callable[[str, int], str]) -> None:
        factory = _rewriting(rewrite)

        def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            return real(*args, factory=factory, **kwargs)

        monkeypatch.setattr("relay.store.sqlite.sqlite3.connect", connect)

    yield install


async def _refused(path: Path, *, synchronous: str = "FULL") -> str:
    store = SqliteStore(str(path), synchronous=synchronous)
    with pytest.raises(StorageUnavailable) as info:
        await store.open()
    await store.close()
    return str(info.value)


async def test_store_refuses_to_run_when_synchronous_is_silently_off(
        tmp_path: Path, weaken: Callable[[Callable[[str, int], str]], None]) -> None:
    weaken(lambda sql, _n: sql.replace("synchronous=FULL", "synchronous=OFF"))
    msg = await _refused(tmp_path / "relay.db")
    assert "PRAGMA synchronous=0 (OFF)" in msg and "refusing to run" in msg, msg


async def test_store_refuses_to_run_with_synchronous_normal_which_a_power_cut_defeats(
        tmp_path: Path, weaken: Callable[[Callable[[str, int], str]], None]) -> None:
    weaken(lambda sql, _n: sql.replace("synchronous=FULL", "synchronous=NORMAL"))
    msg = await _refused(tmp_path / "relay.db")
    assert "PRAGMA synchronous=1 (NORMAL)" in msg and "needs synchronous=2 (FULL)" in msg, msg


async def test_store_refuses_to_run_outside_wal_mode(
        tmp_path: Path, weaken: Callable[[Callable[[str, int], str]], None]) -> None:
    weaken(lambda sql, _n: sql.replace("journal_mode=WAL", "journal_mode=MEMORY"))
    msg = await _refused(tmp_path / "relay.db")
    assert "PRAGMA journal_mode=memory" in msg and "journal_mode=wal" in msg, msg


async def test_store_refuses_an_sqlite_whose_syncs_are_compiled_out(
        tmp_path: Path, weaken: Callable[[Callable[[str, int], str]], None]) -> None:
    weaken(lambda sql, _n: "SELECT 'NO_SYNC'" if sql == "PRAGMA compile_options" else sql)
    msg = await _refused(tmp_path / "relay.db")
    assert "SQLITE_NO_SYNC" in msg, msg


async def test_store_checks_every_connection_not_only_the_first(
        tmp_path: Path, weaken: Callable[[Callable[[str, int], str]], None]) -> None:
    """The store's second connection (the reader) comes up weakened: refused as well."""
    weaken(lambda sql, n: sql.replace("synchronous=FULL", "synchronous=OFF") if n == 2
           else sql)
    msg = await _refused(tmp_path / "relay.db")
    assert "PRAGMA synchronous=0 (OFF)" in msg, msg


async def test_store_runs_durable_by_default_on_both_connections(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "relay.db"))
    await store.open()
    try:
        for conn in (store._read, store._write):
            assert conn is not None
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    finally:
        await store.close()


async def test_negative_control_weakens_synchronous_only_when_asked(tmp_path: Path) -> None:
    """The fault harness's negative control asks for NORMAL and gets exactly NORMAL."""
    store = SqliteStore(str(tmp_path / "relay.db"), synchronous="NORMAL")
    await store.open()
    try:
        assert store._write is not None
        assert store._write.execute("PRAGMA synchronous").fetchone() == (1,)
    finally:
        await store.close()


@pytest.mark.parametrize("setting", ['test_only_sqlite_synchronous = "OFF"',
                                     "test_only_answer_before_commit = true"])
def test_relay_toml_cannot_weaken_durability(tmp_path: Path, setting: str) -> None:
    (tmp_path / "relay.toml").write_text(f'[relay]\nid = "r"\n{setting}\n')
    with pytest.raises(UsageError, match=r"test-only setting .* cannot be set in relay\.toml"):
        config_mod.load(tmp_path, env={})


def test_the_fault_harness_weakens_durability_through_the_environment(tmp_path: Path) -> None:
    cfg = config_mod.load(tmp_path, env={"HOTLINE_RELAY_TEST_ONLY_SQLITE_SYNCHRONOUS": "NORMAL"})
    assert cfg.test_only_sqlite_synchronous == "NORMAL"
    assert config_mod.load(tmp_path, env={}).test_only_sqlite_synchronous == "FULL"
