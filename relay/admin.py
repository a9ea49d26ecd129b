"""Operator commands on a relay home: check the configuration, back up and restore the
SQLite database, and count what it holds. ``stats`` and ``backup`` run beside a serving
relay; ``restore`` refuses to run under one."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from pathlib import Path
from typing import Any

from keys.errors import UsageError
from relay import config as config_mod
from relay import tls

STATES = ("accepted", "delivered", "acknowledged")


def check_config(home: Path, env: dict[str, str] | None = None) -> config_mod.RelayConfig:
    """Load the configuration as ``serve`` does, and the TLS files it names; raise
    UsageError naming the first setting that is wrong."""
    cfg = config_mod.load(home, env=env)
    if cfg.tls is not None:
        tls.server_context(*cfg.tls)
    if "://" not in cfg.database_path and not Path(cfg.database_path).parent.is_dir():
        raise UsageError(f"relay.database: the folder of {cfg.database_path} does not exist")
    return cfg


def _sqlite_path(cfg: config_mod.RelayConfig, what: str) -> Path:
    if "://" in cfg.database_path:
        raise UsageError(f"relay.database is {cfg.database_path.split('://')[0]}://...: "
                         f"'{what}' works on SQLite; use the database server's own tools "
                         "(pg_dump, pg_restore) for PostgreSQL")
    return Path(cfg.database_path)


def _integrity(path: Path) -> None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        conn.execute("SELECT count(*) FROM notices").fetchone()
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{path} is not a relay database: {exc}") from exc
    finally:
        conn.close()
    if result != "ok":
        raise UsageError(f"{path} fails its integrity check: {result}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup(cfg: config_mod.RelayConfig, dest: Path) -> int:
    """A consistent copy of the live database at ``dest`` (sqlite3's online backup, one
    snapshot while the relay keeps serving), integrity-checked; returns its size."""
    src_path = _sqlite_path(cfg, "backup")
    if not src_path.exists():
        raise UsageError(f"relay.database: {src_path} does not exist")
    if dest.exists():
        raise UsageError(f"{dest} exists; choose a new file name for the backup")
    tmp = dest.with_name(dest.name + ".partial")
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, timeout=30)
    try:
        out = sqlite3.connect(tmp)
        try:
            src.backup(out)  # all pages in one step: one consistent snapshot
            out.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
        finally:
            out.close()
    finally:
        src.close()
    try:
        _integrity(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest.stat().st_size


def restore(cfg: config_mod.RelayConfig, source: Path) -> None:
    """Replace the database with the backup ``source`` (checked first). Refused while a
    relay serves this home; the database it replaces is kept as ``NAME.before-restore``."""
    from relay.server import LOCK_NAME

    db = _sqlite_path(cfg, "restore")
    _integrity(source)
    with open(cfg.home / LOCK_NAME, "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise UsageError(f"a relay is serving {cfg.home}: stop it before restoring") from exc
        tmp = db.with_name(db.name + ".restoring")
        with open(source, "rb") as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if db.exists():
            # Checkpoint the old database's log into it first, so the kept copy is whole.
            with contextlib.closing(sqlite3.connect(db)) as old:
                old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            os.replace(db, db.with_name(db.name + ".before-restore"))
        for suffix in ("-wal", "-shm"):
            db.with_name(db.name + suffix).unlink(missing_ok=True)
        os.replace(tmp, db)
        _fsync_dir(db.parent)


def stats(cfg: config_mod.RelayConfig) -> dict[str, Any]:
    """Deliveries by state, severity and recipient desk, and escalations by severity,
    read from the database (opened read-only)."""
    path = _sqlite_path(cfg, "stats")
    if not path.exists():
        raise UsageError(f"relay.database: {path} does not exist")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute(
            "SELECT CASE WHEN d.acked_at IS NOT NULL THEN 'acknowledged'"
            " WHEN d.delivered_at IS NOT NULL THEN 'delivered' ELSE 'accepted' END,"
            " n.severity, d.recipient, count(*)"
            " FROM deliveries d JOIN notices n ON n.notice_id = d.notice_id"
            " GROUP BY 1, 2, 3").fetchall()
        notices = conn.execute("SELECT count(*) FROM notices").fetchone()[0]
        escalations = conn.execute(
            "SELECT n.severity, count(*) FROM escalations e"
            " JOIN notices n ON n.notice_id = e.notice_id WHERE e.kind = 'escalated'"
            " GROUP BY n.severity").fetchall()
    finally:
        conn.close()
    by_state: dict[str, int] = dict.fromkeys(STATES, 0)
    by_severity: dict[str, int] = {}
    by_desk: dict[str, dict[str, int]] = {}
    for state, severity, desk, n in rows:
        by_state[state] += n
        by_severity[severity] = by_severity.get(severity, 0) + n
        desk_counts = by_desk.setdefault(desk, dict.fromkeys(STATES, 0))
        desk_counts[state] += n
    return {"notices": notices, "deliveries_by_state": by_state,
            "deliveries_by_severity": dict(sorted(by_severity.items())),
            "deliveries_by_recipient": dict(sorted(by_desk.items())),
            "escalations_by_severity": dict(sorted(escalations))}
