"""The verifiable record end to end: a real relay process, one witness process per country,
desks that pin the default witness policy; every statement a desk receives is proven
included in a checkpoint both countries' witnesses cosigned, and an evidence bundle of a
notice verifies offline (and fails, naming what, once tampered with)."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path

import pytest

from client.client import HotlineClient
from client.evidence import verify_bundle
from client.items import ReceivedNotice
from client.record import LogInconsistent, Proven, log_verifier
from keys.receipts import RelayCard
from tests import relay_harness
from tests.e2e.test_witness import WitnessProcess
from tests.factory import report
from tests.relay_harness import PASSPHRASE, RelayProcess, now_ms

US, CN = "us.caisi", "cn.cac"


def _cli(*argv: str) -> int:
    from client.cli.main import main

    with relay_harness.test_env():
        return main(list(argv))


class Record:
    def __init__(self, base: Path, federation: dict[str, Path]) -> None:
        self.base = base
        self.federation = federation
        self.relay = RelayProcess.create(base)
        card = RelayCard.decode((self.relay.home / "relay.card").read_bytes())
        log_vkey = log_verifier(card.relay_id, card.key).vkey()
        self.witnesses: dict[str, WitnessProcess] = {}
        for country in ("us", "cn"):
            home = base / f"witness-{country}"
            assert _cli("witness", "init", "--home", str(home), "--name",
                        f"witness.{country}/w1", "--log", log_vkey) == 0
            self.witnesses[country] = WitnessProcess(home)
        toml = self.relay.home / "relay.toml"
        text = toml.read_text() if toml.exists() else ""
        text += "\n[log]\ncheckpoint_interval_s = 0.2\n"
        for w in self.witnesses.values():
            text += f'\n[[log.witnesses]]\nurl = "{w.url}"\nvkey = "{w.vkey}"\n'
        toml.write_text(text)
        self.relay.start()
        policy = base / "log.policy"
        assert _cli("federation", "make-policy", "--witness", f"us={self.witnesses['us'].vkey}",
                    "--witness", f"cn={self.witnesses['cn'].vkey}", "-o", str(policy)) == 0
        for home in federation.values():
            assert _cli("federation", "pin-policy", "--home", str(home), str(policy)) == 0

    def desk(self, name: str) -> HotlineClient:
        return HotlineClient.from_home(self.federation[name], PASSPHRASE,
                                       relays=[self.relay.url])

    def stop(self) -> None:
        self.relay.stop()
        for w in self.witnesses.values():
            w.stop()


@pytest.fixture
def record(tmp_path: Path, federation: dict[str, Path]) -> Iterator[Record]:
    r = Record(tmp_path, federation)
    try:
        yield r
    finally:
        r.stop()


async def prove_all(client: HotlineClient, timeout: float = 30.0) -> list[LogInconsistent]:
    """Log-check passes until every kept statement is proven (or a contradiction)."""
    found: list[LogInconsistent] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while client.record.state.unproven_count() and loop.time() < deadline:
        found += await client.check_record(force=True)
        if found:
            break
        await asyncio.sleep(0.2)
    return found


async def _exchange(record: Record) -> bytes:
    for name in record.federation:
        async with record.desk(name) as c:
            await c.fetch()
    async with record.desk(US) as us, record.desk(CN) as cn:
        sent = await us.send(to=[CN], severity="high", notice=report())
        async with aclosing(cn.notices(follow=False)) as notices:
            got = [n async for n in notices]
        assert [n.notice_id for n in got if isinstance(n, ReceivedNotice)] == [sent.notice_id]
        await cn.ack(sent.notice_id)
        await us.fetch()
        for c in (us, cn):
            assert c.record.state.unproven_count() >= 2
            assert await prove_all(c) == []
            assert c.record.state.unproven_count() == 0, c.record.lagging
        return sent.notice_id


async def test_statements_proven_in_checkpoints_both_countries_cosigned(
        record: Record) -> None:
    nid = await _exchange(record)
    async with record.desk(US) as us:
        latest = us.record.state.latest()
        assert latest is not None
        note = latest[2].decode()
        assert "witness.us/w1" in note and "witness.cn/w1" in note
        kinds = sorted(p.kind for p in us.record.state.of_notice(nid) if isinstance(p, Proven))
        assert kinds == ["accepted", "acknowledged", "delivered"]


def _verify_cli(path: Path, doc: dict[str, object], capsys: pytest.CaptureFixture[str]
                ) -> str:
    """``hotline evidence verify`` of ``doc``: it must exit 1; which of the known failures
    its output names."""
    path.write_text(json.dumps(doc))
    capsys.readouterr()
    assert _cli("evidence", "verify", str(path)) == 1
    out = capsys.readouterr().out
    named = [w for w in ("inclusion proof", "lacks cosignatures") if w in out]
    assert len(named) == 1 and "FAILED" in out, out
    return named[0]


async def test_evidence_bundle_verifies_offline_and_tampering_is_named(
        record: Record, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nid = await _exchange(record)
    bundle = tmp_path / "bundle.json"
    # The CLI runs its own event loop: in a thread.
    assert await asyncio.to_thread(
        _cli, "evidence", "export", "--home", str(record.federation[US]), "--relay",
        record.relay.url, nid.hex(), "-o", str(bundle), "--wait", "20") == 0
    record.stop()  # offline from here
    capsys.readouterr()
    assert _cli("evidence", "verify", str(bundle)) == 0
    out = capsys.readouterr().out
    assert "accepted" in out and "by test-relay" in out
    assert f"delivered to {CN}" in out and f"acknowledged by {CN}" in out
    assert "verified:" in out
    doc = json.loads(bundle.read_text())
    assert doc["content"] is None

    # One byte of a statement changed: its signature fails, named.
    st = doc["statements"][0]
    raw = bytearray(base64.b64decode(st["statement"]))
    raw[-1] ^= 1
    changed = dict(st, statement=base64.b64encode(bytes(raw)).decode())
    bad = dict(doc, statements=[changed, *doc["statements"][1:]])
    rep = verify_bundle(json.dumps(bad).encode(), now=now_ms())
    assert not rep.ok and any(f.startswith("statement 0") for f in rep.failures)

    # A proof missing: the inclusion check fails, named.
    bad = dict(doc, statements=[dict(st, proof=[]), *doc["statements"][1:]])
    rep = verify_bundle(json.dumps(bad).encode(), now=now_ms())
    assert not rep.ok and any("inclusion proof" in f for f in rep.failures), rep.failures
    assert _verify_cli(tmp_path / "no-proof.json", bad, capsys) == "inclusion proof"

    # A checkpoint short of the policy (one country's cosignature removed).
    notes = {k: "\n".join(ln for ln in v.split("\n") if "witness.cn/w1" not in ln)
             for k, v in doc["checkpoints"].items()}
    rep = verify_bundle(json.dumps(dict(doc, checkpoints=notes)).encode(), now=now_ms())
    assert not rep.ok and any("lacks cosignatures" in f and "cn" in f for f in rep.failures)
    assert _verify_cli(tmp_path / "short.json", dict(doc, checkpoints=notes),
                       capsys) == "lacks cosignatures"

    # Exactly one byte of the file changed anywhere in a signed statement: exit 1.
    data = bytearray(bundle.read_bytes())
    # (within the signature's base64: unique to statement 1)
    pos = data.index(doc["statements"][1]["statement"][-30:-10].encode())
    data[pos] = ord("A") if data[pos] != ord("A") else ord("B")
    bundle.write_bytes(bytes(data))
    assert _cli("evidence", "verify", str(bundle)) == 1
    assert "FAILED: statement 1" in capsys.readouterr().out


async def test_relay_database_edited_after_the_fact_is_refused_by_witness_and_caught(
        record: Record) -> None:
    """The relay's operator removes a leaf and rebuilds the tree from the edited leaves:
    the witnesses refuse the rewritten history (422) and desks raise LogInconsistent."""
    await _exchange(record)
    record.relay.stop()
    db = record.relay.home / "relay.db"
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER tlog_leaves_no_delete")
        conn.execute("DROP TRIGGER tlog_leaves_no_update")
        size = conn.execute("SELECT count(*) FROM tlog_leaves").fetchone()[0]
        # Leaf 1 (the notice's acceptance) removed, the later ones moved down; the tree
        # and checkpoints rebuilt from what is left, one more leaf added.
        conn.execute("DELETE FROM tlog_leaves WHERE idx = 1")
        conn.execute("UPDATE tlog_leaves SET idx = idx - 1 WHERE idx > 1")
        conn.execute("DELETE FROM tlog_hashes")
        conn.execute("DELETE FROM tlog_checkpoints")
    assert size >= 4
    record.relay.start()
    async with record.desk(US) as us:
        await us.send(to=[CN], severity="low", notice=report())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        found: list[LogInconsistent] = []
        while not found and loop.time() < deadline:
            found = await us.check_record(force=True)
            await asyncio.sleep(0.2)
        assert found and found[0].kind in ("fork", "rollback"), found
        assert found[0].old_checkpoint is not None
        assert list((record.federation[US] / "record").glob("conflict-*")), "evidence kept"
    refused = [e for e in record.relay.lines if e.get("event") == "log.witness_failed"
               and e.get("reason") == "inconsistent"]
    assert refused, "the witnesses must refuse the rewritten tree"
