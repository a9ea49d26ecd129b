"""Attacks on the verifiable record by the relay itself, with a real relay process, one
witness process per country and desks that pin the both-countries witness policy:

* a split view (one country's desks shown another tree than the other's), and
* the relay's database edited after the fact (a leaf changed, leaves reordered).

Each is caught at the next checkpoint exchange: the witnesses refuse the tree that does
not extend what they cosigned (422), a desk refuses a checkpoint the policy's witnesses
did not cosign, and a desk that kept a witnessed checkpoint raises LogInconsistent.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from client.client import HotlineClient
from client.record import LogInconsistent
from tests.e2e.test_record_e2e import Record, _exchange, prove_all
from tests.factory import report

US, US2, CN, CN2 = "us.caisi", "us.nsc", "cn.cac", "cn.mss"


@pytest.fixture
def record(tmp_path: Path, federation: dict[str, Path]) -> Iterator[Record]:
    r = Record(tmp_path, federation)
    try:
        yield r
    finally:
        r.stop()


async def _until(cond_pass: Callable[[], Awaitable[bool]], what: str,
                 timeout: float = 30.0) -> None:
    """Await ``cond_pass()`` (an async callable returning bool) until true, bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await cond_pass():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _refusals(record: Record) -> set[str]:
    """The witnesses the relay logged refusing a checkpoint as inconsistent (422)."""
    return {str(e.get("witness")) for e in record.relay.lines
            if e.get("event") == "log.witness_failed" and e.get("reason") == "inconsistent"}


async def _kept_size(c: HotlineClient) -> int:
    latest = c.record.state.latest()
    return 0 if latest is None else latest[0]


async def test_relay_split_view_between_countries_is_refused_by_witnesses_and_caught(
        record: Record) -> None:
    """The relay shows the Chinese desks a tree in which one statement (a notice between
    two US desks) is another, the US desks the honest one. The witnesses refuse the fork,
    a CN desk that kept a witnessed checkpoint past the forked leaf raises LogInconsistent,
    and a CN desk that had not proves nothing against the fork (it lacks the policy's
    cosignatures) while the US desks prove everything against the honest tree."""
    await _exchange(record)  # us.caisi -> cn.cac, acknowledged, proven by both
    async with record.desk(US) as us:
        await us.send(to=[US2], severity="low", notice=report())
    record.relay.stop()
    with sqlite3.connect(record.relay.home / "relay.db") as conn:
        (forked_at,) = conn.execute("SELECT max(idx) FROM tlog_leaves WHERE kind = 'accepted'"
                                    ).fetchone()
    forked = int(forked_at)
    record.relay.start()
    # cn.mss keeps a checkpoint both countries' witnesses cosigned, covering that leaf.
    async with record.desk(CN2) as cn2:
        async def covered() -> bool:
            await cn2.check_record(force=True)
            return await _kept_size(cn2) > forked
        await _until(covered, "a witnessed checkpoint covering the US-only notice")
        honest_size = await _kept_size(cn2)
    async with record.desk(CN) as cn:
        before = await _kept_size(cn)
    assert before <= forked, "cn.cac must not have seen the forked leaf yet"

    record.relay.stop()
    record.relay.start(extra_env={"HOTLINE_RELAY_TEST_ONLY_SPLIT_VIEW": f"cn:{forked}"})
    assert record.relay.events("relay.split_view")
    async with record.desk(US) as us, record.desk(CN) as cn:
        sent = await us.send(to=[CN], severity="high", notice=report())
        await cn.fetch()
        await cn.ack(sent.notice_id)
        await us.fetch()
        # The US desk: the honest tree, witnessed by both countries, proves everything.
        assert await prove_all(us) == []
        assert us.record.state.unproven_count() == 0, us.record.lagging
        # cn.cac: shown the fork, which no witness cosigned; it keeps nothing from it and
        # proves none of its statements against it.
        for _ in range(5):
            await cn.fetch()  # an authenticated request: the relay knows who asks
            assert await cn.check_record(force=True) == []
            await asyncio.sleep(0.2)
        assert cn.record.state.unproven_count() > 0
        assert "not witnessed as the policy requires" in cn.record.lagging, cn.record.lagging
        assert await _kept_size(cn) == before, "an unwitnessed fork must not be kept"
    assert _refusals(record) == {"witness.us/w1", "witness.cn/w1"}, record.relay.lines[-20:]

    # cn.mss held the witnessed tree past the forked leaf: the fork contradicts it.
    async with record.desk(CN2) as cn2:
        found: list[LogInconsistent] = []

        async def caught() -> bool:
            await cn2.fetch()
            found.extend(await cn2.check_record(force=True))
            return bool(found)
        await _until(caught, "cn.mss to find the fork")
        assert found[0].kind == "fork", found
        assert found[0].old_checkpoint is not None
        assert b"witness.us/w1" in found[0].old_checkpoint
        assert await _kept_size(cn2) == honest_size
        assert list((record.federation[CN2] / "record").glob("conflict-*-served.checkpoint"))


def _rewrite(db: Path, edit: str) -> None:
    """The operator edits the leaves (relay stopped) and rebuilds the tree from them."""
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER tlog_leaves_no_update")
        rows = conn.execute("SELECT idx, statement FROM tlog_leaves WHERE idx IN (1, 2)"
                            " ORDER BY idx").fetchall()
        assert len(rows) == 2
        if edit == "changed":
            # Leaf 1 (the notice's acceptance) replaced by another statement of the same
            # length: one byte of it changed.
            changed = bytearray(rows[0][1])
            changed[len(changed) // 2] ^= 1
            conn.execute("UPDATE tlog_leaves SET statement = ? WHERE idx = 1",
                         (bytes(changed),))
        else:
            # Leaves 1 and 2 swapped: the same statements in another order.
            conn.execute("UPDATE tlog_leaves SET statement = ? WHERE idx = 1", (rows[1][1],))
            conn.execute("UPDATE tlog_leaves SET statement = ? WHERE idx = 2", (rows[0][1],))
        conn.execute("DELETE FROM tlog_hashes")
        conn.execute("DELETE FROM tlog_checkpoints")


@pytest.mark.parametrize("edit", ["changed", "reordered"])
async def test_relay_database_leaf_changed_or_reordered_is_refused_by_witness_and_caught(
        record: Record, edit: str) -> None:
    await _exchange(record)
    record.relay.stop()
    _rewrite(record.relay.home / "relay.db", edit)
    record.relay.start()
    for name in (US, CN):
        async with record.desk(name) as c:
            if name == US:
                await c.send(to=[CN], severity="low", notice=report())
            found: list[LogInconsistent] = []

            async def caught(c: HotlineClient = c, found: list[LogInconsistent] = found
                             ) -> bool:
                found.extend(await c.check_record(force=True))
                return bool(found)
            await _until(caught, f"{name} to find the rewritten log")
            assert found[0].kind == "fork", found
            assert found[0].old_checkpoint is not None
    assert _refusals(record) == {"witness.us/w1", "witness.cn/w1"}
