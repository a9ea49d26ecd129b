"""The relay's logs (JSON lines off a terminal, readable console output on one, levels per
logger) and the escalation log file's rotation (no line lost, doubled or split)."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from pathlib import Path

from relay import logs
from relay.escalator import EscalationLog
from relay.policy import MINUTE
from tests.factory import Federation
from tests.relay.inproc import InProcessRelay

US, CN, NSC = "us.caisi", "cn.cac", "us.nsc"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_logs_are_json_lines_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    logs.configure("info", out)
    logs.get().warning("notice.escalated", level=2, recipient=CN)
    line = json.loads(out.getvalue())
    assert line["event"] == "notice.escalated" and line["level"] == 2
    assert line["log_level"] == "warning" and line["logger"] == "relay"


def test_logs_are_readable_coloured_text_on_a_terminal() -> None:
    out = Terminal()
    logs.configure("info", out)
    logs.get().info("relay.listening", port=8750)
    text = out.getvalue()
    assert "relay.listening" in text and "port" in text and "\x1b[" in text
    try:
        json.loads(text)
    except ValueError:
        pass
    else:
        raise AssertionError("console output is not JSON")


def test_levels_per_logger_override_the_default() -> None:
    out = io.StringIO()
    logs.configure("warning", out, fmt="json",
                   loggers={"relay.webhooks": "debug", "relay.http": "error"})
    logs.get().info("relay.hidden")
    logs.get("relay.webhooks").debug("webhook.shown")
    logs.get("relay.webhooks.retry").debug("webhook.retry.shown")  # a child inherits
    logs.get("relay.http").warning("http.hidden")
    logs.get("relay").warning("relay.shown")
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["webhook.shown", "webhook.retry.shown", "relay.shown"]


def _all_lines(log: EscalationLog) -> list[str]:
    lines = []
    files = sorted(log.path.parent.glob(log.path.name + ".*"),
                   key=lambda p: -int(p.suffix[1:]))
    for path in [*files, log.path]:
        data = path.read_bytes()
        assert data.endswith(b"\n"), f"{path.name} ends mid-line"
        lines.extend(data.decode().splitlines())
    return lines


def test_escalation_log_rotation_under_concurrent_writers_loses_and_splits_nothing(
        tmp_path: Path) -> None:
    """Eight threads append batches across dozens of rotations: every line is whole JSON,
    present exactly once across the files, and each writer's lines stay in order."""
    log = EscalationLog(tmp_path / "escalations.jsonl", max_bytes=4096, keep=1000)
    barrier = threading.Barrier(8)

    def writer(w: int) -> None:
        barrier.wait()
        for b in range(40):
            log.append([{"escalation_id": w * 10_000 + b * 10 + i, "pad": "x" * (37 * i)}
                        for i in range(1 + (w + b) % 5)])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = _all_lines(log)
    ids = [json.loads(line)["escalation_id"] for line in lines]
    expected = {w * 10_000 + b * 10 + i for w in range(8) for b in range(40)
                for i in range(1 + (w + b) % 5)}
    assert len(ids) == len(expected) and set(ids) == expected
    for w in range(8):
        mine = [i for i in ids if i // 10_000 == w]
        assert mine == sorted(mine)
    rotated = list(tmp_path.glob("escalations.jsonl.*"))
    assert len(rotated) > 10
    assert all(p.stat().st_size <= 4096 for p in rotated)


def test_escalation_log_keeps_only_the_configured_number_of_files(tmp_path: Path) -> None:
    log = EscalationLog(tmp_path / "e.jsonl", max_bytes=4096, keep=3)
    for n in range(200):
        log.append([{"escalation_id": n, "pad": "y" * 100}])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "e.jsonl", "e.jsonl.1", "e.jsonl.2", "e.jsonl.3"]
    ids = [json.loads(line)["escalation_id"] for line in _all_lines(log)]
    assert ids == list(range(ids[0], 200))  # the newest, contiguous, oldest dropped


async def test_concurrent_escalations_across_a_rotation_each_logged_once(
        tmp_path: Path) -> None:
    """Scheduler passes and request-path flushes run at once while the file rotates
    every few batches: each escalation the store holds is in exactly one line."""
    r = await InProcessRelay(tmp_path / "relay", Federation.create(desks=(US, CN, NSC))).open()
    try:
        r.relay.escalator.file.max_bytes = 8192
        r.relay.escalator.file.keep = 1000
        for _ in range(120):
            await r.send(US, CN, NSC, severity="critical")
        r.clock.advance(15 * MINUTE)
        await asyncio.gather(r.tick(), r.relay.escalator.flush_log(), r.tick(),
                             r.relay.escalator.flush_log())
        r.clock.advance(5 * MINUTE)
        await asyncio.gather(r.tick(), r.relay.escalator.flush_log(),
                             r.relay.escalator.flush_log(), r.tick())
        expected = r.store.last_escalation_id()
        lines = _all_lines(r.relay.escalator.file)
        ids = sorted(json.loads(line)["escalation_id"] for line in lines)
        assert expected == 480 and ids == list(range(1, expected + 1))
        assert len(list((tmp_path / "relay").glob("escalations.jsonl.*"))) >= 2
    finally:
        await r.close()
