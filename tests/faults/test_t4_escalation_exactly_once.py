"""T4 (SECURITY.md (b)), SQLite single node: every overdue notice escalates exactly once per
level across SIGKILLs and a crash right after an escalation commit. Bounded for CI; the long
variant needs ``HOTLINE_SLOW=1 pytest -m slow`` (see test_t1_no_receipted_notice_lost)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from relay.policy import MINUTE
from tests.factory import Federation
from tests.faults.harness import verdict, write_summary, xfail_known
from tests.faults.scenarios import T4Config, run_t4
from tests.relay.inproc import InProcessRelay

needs_slow = pytest.mark.skipif(not os.environ.get("HOTLINE_SLOW"),
                                reason="long fault run: set HOTLINE_SLOW=1 and pass -m slow")


async def test_t4_escalations_exactly_once_across_kills(tmp_path: Path) -> None:
    """2-3 s ack windows, 30% never acked, some acked around the deadline; the relay is
    SIGKILLed while deadlines fall due and crashes after an escalation commit once."""
    summary = await run_t4(tmp_path, T4Config())
    print(write_summary(summary, tmp_path / "summary-t4.json"))
    known = verdict(summary)
    assert summary["never_acked"] > 0, summary
    assert summary["ladders_completed"] >= summary["never_acked"], summary
    assert summary["escalation_rows"] > 0 and summary["crash_point_exits"] == 1, summary
    assert summary["acked_after_deadline"] > 0 and summary["acked_before_deadline"] > 0
    xfail_known(known)


@pytest.mark.slow
@needs_slow
async def test_t4_long(tmp_path: Path) -> None:
    summary = await run_t4(tmp_path, T4Config(notices=600, send_s=30.0, kills=20,
                                              time_limit_s=240.0, seed=14))
    print(write_summary(summary, tmp_path / "summary-t4-long.json"))
    xfail_known(verdict(summary))


async def test_escalation_log_holds_each_id_once_under_concurrent_acks(tmp_path: Path) -> None:
    """Late acks at once (six per round, five rounds) resolve escalations from concurrent
    requests; each escalation id is written to escalations.jsonl exactly once."""
    r = await InProcessRelay(tmp_path, Federation.create()).open()
    try:
        for _ in range(5):
            envs = [await r.send("us.caisi", "cn.cac") for _ in range(6)]
            assert len(await r.advance(15 * MINUTE)) == 6
            await asyncio.gather(*(r.ack("cn.cac", e) for e in envs))
            ids = [json.loads(x)["escalation_id"]
                   for x in (tmp_path / "escalations.jsonl").read_text().splitlines()]
            if len(ids) != len(set(ids)):
                break
        assert len(ids) == len(set(ids)), "escalation ids written twice to escalations.jsonl"
    finally:
        await r.close()
