"""The escalation ladder on a manual clock: the basic path, end to end in-process."""

from __future__ import annotations

import json
from pathlib import Path

from relay.policy import MINUTE
from tests.factory import Federation
from tests.relay.inproc import InProcessRelay


async def test_unacknowledged_critical_notice_escalates_then_resolves(tmp_path: Path) -> None:
    """No ack within 15 min escalates at level 1, again 5 min later, and a late ack resolves."""
    r = await InProcessRelay(tmp_path, Federation.create()).open()
    try:
        env = await r.send("us.caisi", "cn.cac")
        assert await r.advance(15 * MINUTE - 1) == []
        (first,) = await r.advance(1)
        assert (first.kind, first.level, first.recipient, first.delivered) == (
            "escalated", 1, "cn.cac", False)
        assert await r.advance(5 * MINUTE - 1) == []
        (second,) = await r.advance(1)
        assert second.level == 2 and second.missed_levels == 0
        await r.ack("cn.cac", env)
        assert await r.advance(60 * MINUTE) == []
        lines = [json.loads(x) for x in (tmp_path / "escalations.jsonl").read_text().splitlines()]
        assert [(x["event"], x["level"]) for x in lines] == [
            ("notice.escalated", 1), ("notice.escalated", 2), ("escalation.resolved", 2)]
    finally:
        await r.close()
