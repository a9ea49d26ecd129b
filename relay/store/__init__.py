"""Storage backends behind one interface (:class:`relay.store.base.Store`)."""

from __future__ import annotations

from relay.store.base import Store


def open_store(database: str, *, sqlite_synchronous: str = "FULL") -> Store:
    """The store for a database setting: a file path (SQLite) or a postgresql:// URL.

    ``sqlite_synchronous`` other than FULL exists only for the fault harness's negative
    control, which must show that weakened durability loses notices."""
    if database.startswith(("postgres://", "postgresql://")):
        from keys.errors import UsageError

        raise UsageError(
            "the PostgreSQL backend is not available in this version; use a file path for SQLite"
        )
    from relay.store.sqlite import SqliteStore

    return SqliteStore(database, synchronous=sqlite_synchronous)


__all__ = ["Store", "open_store"]
