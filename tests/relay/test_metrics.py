"""Prometheus metrics after a scripted deadline scenario, read from the /metrics text format."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from relay.policy import MINUTE, SECOND
from tests.factory import NOW, Federation
from tests.relay.inproc import InProcessRelay

US, CN = "us.caisi", "cn.cac"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(r: InProcessRelay) -> Samples:
    """Every sample of the relay's registry, as exposed in the Prometheus text format."""
    text = generate_latest(r.relay.metrics.registry).decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    r = await InProcessRelay(tmp_path / "relay", Federation.create()).open()
    r.relay.metrics.watch_pending(lambda: r.store.counts(r.clock.now_ms()))  # as server.py
    try:
        yield r
    finally:
        await r.close()


async def test_counters_after_a_scripted_scenario(relay: InProcessRelay) -> None:
    """Three notices of different severities, one acked in 10 s, one escalated twice: the
    accepted, acknowledged, escalation and time-to-ack series say exactly that."""
    r = relay
    crit = await r.send(US, CN, severity="critical")
    high = await r.send(US, CN, severity="high")
    await r.send(US, CN, severity="low")
    r.clock.advance(10 * SECOND)
    await r.ack(CN, high)
    await r.advance(15 * MINUTE - 10 * SECOND)
    await r.advance(5 * MINUTE)
    m = scrape(r)

    for severity in ("critical", "high", "low"):
        assert value(m, "hotline_notices_accepted_total", severity=severity,
                     status="actual") == 1
    assert value(m, "hotline_notices_accepted_total", severity="medium", status="actual") is None
    assert total(m, "hotline_notices_accepted_total") == 3
    assert value(m, "hotline_notices_acknowledged_total", severity="high", status="actual") == 1
    assert total(m, "hotline_notices_acknowledged_total") == 1

    # The high notice was acked in time; the low one's 72 h window is still open.
    for level in ("1", "2"):
        assert value(m, "hotline_escalations_total", severity="critical", level=level,
                     track="ack", status="actual") == 1
    assert total(m, "hotline_escalations_total") == 2
    assert total(m, "hotline_escalations_resolved_total") == 0

    assert value(m, "hotline_time_to_acknowledge_seconds_count", severity="high",
                 status="actual") == 1
    assert value(m, "hotline_time_to_acknowledge_seconds_sum", severity="high",
                 status="actual") == 10.0
    assert value(m, "hotline_time_to_acknowledge_seconds_bucket", severity="high",
                 status="actual", le="5.0") == 0
    assert value(m, "hotline_time_to_acknowledge_seconds_bucket", severity="high",
                 status="actual", le="15.0") == 1
    assert value(m, "hotline_time_to_acknowledge_seconds_count", severity="critical",
                 status="actual") is None

    # The scheduler's self-audit: it ran at the current relay time and is not behind.
    assert value(m, "hotline_scheduler_last_pass_timestamp_seconds") == r.clock.now_ms() / 1000
    assert value(m, "hotline_scheduler_late_deadlines") == 0

    # The late ack of the critical notice resolves its ladder and counts its time to ack.
    r.clock.advance(MINUTE)
    await r.ack(CN, crit)
    m = scrape(r)
    assert value(m, "hotline_escalations_resolved_total", severity="critical", track="ack",
                 status="actual") == 1
    assert value(m, "hotline_time_to_acknowledge_seconds_sum", severity="critical",
                 status="actual") == 21 * 60.0
    assert value(m, "hotline_notices_acknowledged_total", severity="critical",
                 status="actual") == 1


async def test_pending_and_overdue_gauges_per_severity(relay: InProcessRelay) -> None:
    """hotline_pending / hotline_overdue count unacknowledged (notice, recipient) pairs per
    severity, and those past their deadline, at scrape time."""
    r = relay
    crit = await r.send(US, CN, severity="critical")
    high = await r.send(US, CN, severity="high")
    await r.send(US, CN, severity="low")
    m = scrape(r)
    assert {s: value(m, "hotline_pending", severity=s) for s in
            ("critical", "high", "medium", "low")} == {
        "critical": 1, "high": 1, "medium": 0, "low": 1}
    assert total(m, "hotline_overdue") == 0

    r.clock.advance(10 * SECOND)
    await r.ack(CN, high)
    await r.advance(20 * MINUTE)
    m = scrape(r)
    assert {s: value(m, "hotline_pending", severity=s) for s in
            ("critical", "high", "medium", "low")} == {
        "critical": 1, "high": 0, "medium": 0, "low": 1}
    assert {s: value(m, "hotline_overdue", severity=s) for s in
            ("critical", "high", "medium", "low")} == {
        "critical": 1, "high": 0, "medium": 0, "low": 0}

    await r.ack(CN, crit)
    m = scrape(r)
    assert value(m, "hotline_pending", severity="critical") == 0
    assert value(m, "hotline_overdue", severity="critical") == 0
    assert value(m, "hotline_pending", severity="low") == 1


async def test_exercise_notices_are_counted_under_their_own_status(
        relay: InProcessRelay) -> None:
    """Exercise and test notices are measured the same way, labelled with their status."""
    r = relay
    drill = await r.send(US, CN, severity="critical", status="exercise")
    await r.send(US, CN, severity="critical", status="test")
    await r.advance(15 * MINUTE)
    r.clock.advance(30 * SECOND)
    await r.ack(CN, drill)
    m = scrape(r)
    for status in ("exercise", "test"):
        assert value(m, "hotline_notices_accepted_total", severity="critical",
                     status=status) == 1
        assert value(m, "hotline_escalations_total", severity="critical", level="1",
                     track="ack", status=status) == 1
    assert value(m, "hotline_notices_accepted_total", severity="critical",
                 status="actual") is None
    assert value(m, "hotline_escalations_resolved_total", severity="critical", track="ack",
                 status="exercise") == 1
    assert value(m, "hotline_time_to_acknowledge_seconds_sum", severity="critical",
                 status="exercise") == 15 * 60.0 + 30


async def test_escalation_lateness_measures_from_each_level_s_own_scheduled_time(
        relay: InProcessRelay) -> None:
    """Levels that fire exactly when scheduled (level 1 at the deadline, level k at
    deadline + (k-1) * repeat) are observed with zero lateness."""
    r = relay
    await r.send(US, CN, severity="critical")
    for step in (15 * MINUTE, 5 * MINUTE, 5 * MINUTE):
        (row,) = await r.advance(step)
        assert row.missed_levels == 0
    assert r.clock.now_ms() == NOW + 25 * MINUTE
    m = scrape(r)
    assert value(m, "hotline_escalation_lateness_seconds_count") == 3
    assert value(m, "hotline_escalation_lateness_seconds_sum") == 0.0
    assert value(m, "hotline_escalation_lateness_seconds_bucket", le="0.005") == 3
