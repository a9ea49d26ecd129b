"""``hotline relay check-config | backup | restore | stats`` and the passphrase passed as a
systemd credential."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client.cli.main import main
from keys.errors import UsageError
from relay import admin, config
from relay.policy import MINUTE
from relay.server import hold_home_lock
from tests.factory import Federation
from tests.relay.inproc import InProcessRelay
from tests.relay_harness import RelayProcess, make_federation

US, CN, NSC = "us.caisi", "cn.cac", "us.nsc"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


# --------------------------------------------------------------------------- check-config

@pytest.mark.parametrize(("toml", "named"), [
    ('[relay]\nlisten_addr = "127.0.0.1:1"\n', "relay.listen_addr"),
    ("[limits]\nnotices_per_minit = 5\n", "limits.notices_per_minit"),
    ('[relay]\nlisten = "nowhere"\n', "relay.listen"),
    ("[limits]\nheartbeat_s = -1\n", "limits.heartbeat_s"),
    ('[policy.critical]\nack_windw = "5m"\n', "ack_windw"),
    ('[logging]\nlevl = "debug"\n', "'levl'"),
    ('[logging.loggers]\n"relay.webhooks" = "loud"\n', "logging.loggers.relay.webhooks"),
    ('[logging]\nformat = "xml"\n', "logging.format"),
    ('[relay]\ntls_cert = "tls.crt"\n', "relay.tls_key"),
    ('[relay]\ntls_cert = "missing.crt"\ntls_key = "missing.key"\n', "relay.tls_cert"),
    ("[relays]\n", "[relays]"),
])
def test_check_config_names_the_wrong_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          toml: str, named: str) -> None:
    (tmp_path / "relay.toml").write_text(toml)
    code, out, err = cli(capsys, "relay", "check-config", "--home", str(tmp_path))
    assert code == 2 and out == ""
    assert named in err, err


def test_check_config_accepts_the_example_and_says_what_it_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "relay.toml").write_text((root / "deploy/relay.toml.example").read_text())
    monkeypatch.setenv("HOTLINE_WEBHOOK_SECRET", "s" * 32)
    code, out, err = cli(capsys, "relay", "check-config", "--home", str(tmp_path))
    assert code == 0, err
    assert "ok (relay hotline-relay-1, listen 127.0.0.1:8750, plain HTTP" in out


def test_logging_section_sets_levels_per_logger(tmp_path: Path) -> None:
    (tmp_path / "relay.toml").write_text(
        '[logging]\nlevel = "warning"\nformat = "json"\n'
        '[logging.loggers]\n"relay.webhooks" = "DEBUG"\n')
    cfg = config.load(tmp_path, env={})
    assert (cfg.log_level, cfg.log_format) == ("warning", "json")
    assert cfg.log_levels == {"relay.webhooks": "debug"}
    (tmp_path / "relay.toml").write_text(
        '[relay]\nlog_level = "info"\n[logging]\nlevel = "debug"\n')
    with pytest.raises(UsageError, match=r"logging.level and relay.log_level"):
        config.load(tmp_path, env={})


# --------------------------------------------------------------------------- backup/stats

@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    r = await InProcessRelay(tmp_path / "relay", Federation.create(desks=(US, CN, NSC))).open()
    try:
        yield r
    finally:
        await r.close()


async def test_stats_count_deliveries_by_state_severity_and_desk(relay: InProcessRelay) -> None:
    r = relay
    a = await r.send(US, CN, NSC, severity="critical")
    b = await r.send(US, CN, severity="high")
    await r.send(CN, US, severity="low")
    await r.confirm("receipt", CN, b)
    await r.ack(NSC, a)
    await r.advance(15 * MINUTE)  # a's ack window closes for cn.cac: one escalation
    stats = admin.stats(r.config)
    assert stats["notices"] == 3
    assert stats["deliveries_by_state"] == {"accepted": 2, "delivered": 1, "acknowledged": 1}
    assert stats["deliveries_by_severity"] == {"critical": 2, "high": 1, "low": 1}
    assert stats["deliveries_by_recipient"] == {
        CN: {"accepted": 1, "delivered": 1, "acknowledged": 0},
        NSC: {"accepted": 0, "delivered": 0, "acknowledged": 1},
        US: {"accepted": 1, "delivered": 0, "acknowledged": 0}}
    assert stats["escalations_by_severity"] == {"critical": 1}


async def test_stats_open_the_database_read_only(relay: InProcessRelay) -> None:
    await relay.send(US, CN)
    db = Path(relay.config.database_path)
    before = db.stat().st_mtime_ns, db.with_name(db.name + "-wal").stat().st_size
    admin.stats(relay.config)
    assert (db.stat().st_mtime_ns, db.with_name(db.name + "-wal").stat().st_size) == before


async def test_backup_while_serving_is_consistent_and_passes_integrity_check(
        relay: InProcessRelay, tmp_path: Path) -> None:
    """Notices keep being accepted while the backup runs; the copy is one snapshot: every
    delivery has its notice, and it holds at least what was committed before it began."""
    r = relay
    for _ in range(20):
        await r.send(US, CN, NSC)
    done: list[int] = []
    dest = tmp_path / "backup.db"
    thread = threading.Thread(target=lambda: done.append(admin.backup(r.config, dest)))
    thread.start()
    while thread.is_alive():
        await r.send(US, CN)
        await asyncio.sleep(0)
    thread.join()
    assert done and done[0] == dest.stat().st_size
    conn = sqlite3.connect(dest)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        notices = conn.execute("SELECT count(*) FROM notices").fetchone()[0]
        orphans = conn.execute("SELECT count(*) FROM deliveries d LEFT JOIN notices n"
                               " ON n.notice_id = d.notice_id WHERE n.notice_id IS NULL"
                               ).fetchone()[0]
    finally:
        conn.close()
    assert notices >= 20 and orphans == 0
    assert not dest.with_name("backup.db.partial").exists()
    with pytest.raises(UsageError, match="exists"):
        admin.backup(r.config, dest)


async def test_restore_brings_back_the_backup_and_keeps_the_replaced_database(
        relay: InProcessRelay, tmp_path: Path) -> None:
    r = relay
    kept = await r.send(US, CN)
    admin.backup(r.config, tmp_path / "b.db")
    await r.send(US, CN)
    await r.close()
    admin.restore(r.config, tmp_path / "b.db")
    assert admin.stats(r.config)["notices"] == 1
    db = Path(r.config.database_path)
    before = sqlite3.connect(db.with_name(db.name + ".before-restore"))
    assert before.execute("SELECT count(*) FROM notices").fetchone()[0] == 2
    before.close()
    await r.store.open()
    assert r.store.get_notice(kept.notice_id) is not None


def test_restore_is_refused_under_a_running_relay(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "relay.db").write_bytes(b"")
    cfg = config.load(home, env={})
    src = tmp_path / "b.db"
    conn = sqlite3.connect(src)
    conn.execute("CREATE TABLE notices (x)")
    conn.commit()
    conn.close()
    lock = hold_home_lock(home)
    try:
        with pytest.raises(UsageError, match="stop it before restoring"):
            admin.restore(cfg, src)
        assert (home / "relay.db").read_bytes() == b""
    finally:
        lock.close()


def test_restore_refuses_a_file_that_is_not_a_relay_database(tmp_path: Path) -> None:
    cfg = config.load(tmp_path, env={})
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(UsageError, match="not a relay database"):
        admin.restore(cfg, tmp_path / "junk.db")


def test_backup_restore_and_stats_refuse_postgresql(tmp_path: Path) -> None:
    cfg = config.load(tmp_path, {"database": "postgresql://h@db/hotline"}, env={})
    for op in (lambda: admin.backup(cfg, tmp_path / "x"), lambda: admin.stats(cfg)):
        with pytest.raises(UsageError, match="pg_dump"):
            op()


# --------------------------------------------------------------------------- live relay

def test_backup_and_stats_commands_beside_a_serving_relay(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_federation(tmp_path, (US, CN))
    relay = RelayProcess.create(tmp_path)
    relay.start()
    try:
        capsys.readouterr()
        home = str(relay.home)
        code, out, err = cli(capsys, "relay", "backup", "--home", home, str(tmp_path / "b.db"))
        assert code == 0 and "integrity check ok" in out, err
        code, out, err = cli(capsys, "relay", "stats", "--home", home, "--json")
        assert code == 0, err
        assert json.loads(out)["deliveries_by_state"] == {
            "accepted": 0, "delivered": 0, "acknowledged": 0}
        code, out, err = cli(capsys, "relay", "restore", "--home", home, str(tmp_path / "b.db"))
        assert code == 2 and "stop it before restoring" in err
        # A second relay on the same home (so the same database) is refused too.
        second = RelayProcess(relay.home)
        with pytest.raises(RuntimeError, match="another relay is already running on the "
                           "database"):
            second.start()
    finally:
        relay.stop()
    code, out, err = cli(capsys, "relay", "restore", "--home", home, str(tmp_path / "b.db"))
    assert code == 0, err


def test_relay_reads_its_passphrase_from_the_systemd_credential(tmp_path: Path) -> None:
    """As under the unit's LoadCredential=: no --passphrase-file, no $HOTLINE_PASSPHRASE,
    the passphrase in $CREDENTIALS_DIRECTORY/relay-passphrase."""
    make_federation(tmp_path, (US, CN))
    relay = RelayProcess.create(tmp_path)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "relay-passphrase").write_text("wrong passphrase")
    env = {"HOTLINE_PASSPHRASE": "", "CREDENTIALS_DIRECTORY": str(creds)}
    with pytest.raises(RuntimeError, match="relay did not start"):
        relay.start(extra_env=env)
    (creds / "relay-passphrase").write_text("test passphrase")
    relay.lines.clear()
    relay.start(extra_env=env)
    relay.stop()
    assert relay.events("relay.listening")
