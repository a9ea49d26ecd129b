"""The relay's view of the drill scorecards: a metric family for exercise and test notices
only, per recipient desk and step, automatic acknowledgements apart."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from keys import Confirmation
from tests.factory import Federation
from tests.relay.inproc import InProcessRelay

US, CN = "us.caisi", "cn.cac"
MINUTE, HOUR = 60_000, 3_600_000


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = ",".join(sorted(line[len(name) + 1:line.index("}")].split(",")))
            if got == want:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_drill_metrics_count_drills_only_and_keep_automatic_acks_apart(
        tmp_path: Path) -> None:
    fed = Federation.create(desks=(US, CN))
    r = await InProcessRelay(tmp_path, fed).open()
    try:
        actual = await r.send(US, CN, severity="high", status="actual")
        exercise = await r.send(US, CN, severity="high", status="exercise")
        test = await r.send(US, CN, severity="low", status="test")
        r.clock.advance(2 * MINUTE)
        for env in (actual, exercise, test):
            await r.confirm("receipt", CN, env)
        auto = Confirmation.create("ack", notice_id=test.notice_id, digest=test.digest,
                                   sender=test.header.sender, me=fed.desks[CN].secrets,
                                   at=r.clock.now_ms(), automatic=True)
        await r.relay.confirm(r.session(CN), auto.encode())
        await r.advance(HOUR + MINUTE)  # the exercise's 1 h ack deadline passes
        await r.ack(CN, exercise)
        await r.ack(CN, actual)
        text = generate_latest(r.relay.metrics.registry).decode()
    finally:
        await r.close()
    h = "hotline_drill_time_seconds"
    assert sample(text, h + "_count", recipient=CN, status="exercise", step="deliver") == 1
    assert sample(text, h + "_sum", recipient=CN, status="exercise", step="deliver") == 120
    assert sample(text, h + "_count", recipient=CN, status="exercise", step="acknowledge") == 1
    assert sample(text, h + "_count", recipient=CN, status="test",
                  step="auto_acknowledge") == 1
    assert sample(text, h + "_count", recipient=CN, status="test", step="acknowledge") == 0
    assert sample(text, h + "_count", recipient=CN, status="actual", step="deliver") == 0
    assert sample(text, "hotline_drill_late_acknowledgements_total", recipient=CN,
                  status="exercise") == 1
