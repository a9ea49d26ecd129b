"""The pure parts of the drills: durations, plans, windows, schedules, the link monitor,
percentiles and the scorecard (table-driven)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from client.drills import (
    DrillPlan,
    LinkMonitor,
    Observation,
    Spread,
    link_test_body,
    parse_duration,
    parse_link_test_body,
    percentile,
    render_text,
    schedule,
    scorecard,
)
from keys.errors import UsageError

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000


@pytest.mark.parametrize(("text", "ms"), [
    ("90d", 90 * DAY), ("1h", HOUR), ("30m", 30 * MIN), ("45s", 45_000), ("2w", 14 * DAY),
    ("1h30m", 90 * MIN), (" 5M ", 5 * MIN),
])
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "0h", "h", "1x", "1h 2m", "-1h", "1.5h", "30"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("values", "p", "expected"), [
    ([], 50, None), ([7], 50, 7), ([7], 95, 7), ([1, 2, 3, 4], 50, 2), ([4, 3, 2, 1], 95, 4),
    (list(range(1, 21)), 95, 19), (list(range(1, 21)), 50, 10), (list(range(1, 101)), 95, 95),
    ([5, 1, 3], 100, 5), ([5, 1, 3], 0, 1),
])
def test_percentile_nearest_rank(values: list[int], p: float, expected: int | None) -> None:
    assert percentile(values, p) == expected


def plan_toml(**over: str) -> bytes:
    parts = {
        "drill": 'name = "t"\nseed = 7\nstart = 2026-03-23\ndays = 14\nper_desk = 40\n'
                 'severity = "high"',
        "window": 'days = "weekdays"\nstart = "09:00"\nend = "17:00"',
        "participants": '[[participant]]\ndesk = "cn.cac"\ntimezone = "Asia/Shanghai"\n'
                        '[[participant]]\ndesk = "us.caisi"\ntimezone = "America/New_York"\n'
                        '[[participant]]\ndesk = "de.bsi"\ntimezone = "Europe/Berlin"',
    }
    parts.update(over)
    return (f"[drill]\n{parts['drill']}\n[window]\n{parts['window']}\n"
            f"{parts['participants']}\n").encode()


def test_schedule_stays_inside_each_recipients_window_across_dst() -> None:
    # 2026-03-23 .. 04-05 spans Europe's DST change (03-29); New York changed on 03-08.
    plan = DrillPlan.from_toml(plan_toml())
    slots = schedule(plan)
    assert len(slots) == 3 * 40
    zones = {p.desk: ZoneInfo(p.timezone) for p in plan.participants}
    for s in slots:
        local = dt.datetime.fromtimestamp(s.at / 1000, tz=zones[s.desk])
        assert local.weekday() < 5, (s, local)
        assert dt.time(9, 0) <= local.time() < dt.time(17, 0), (s, local)
        assert dt.date(2026, 3, 23) <= local.date() <= dt.date(2026, 4, 5)
        assert plan.window.contains(s.at, zones[s.desk])
    # Spread over the period, not bunched on one day.
    days = {dt.datetime.fromtimestamp(s.at / 1000, tz=zones["cn.cac"]).date()
            for s in slots if s.desk == "cn.cac"}
    assert len(days) >= 6


def test_schedule_reproducible_from_seed_and_changes_with_it() -> None:
    a = schedule(DrillPlan.from_toml(plan_toml()))
    b = schedule(DrillPlan.from_toml(plan_toml()))
    assert a == b
    c = schedule(DrillPlan.from_toml(plan_toml(
        drill='name = "t"\nseed = 8\nstart = 2026-03-23\ndays = 14\nper_desk = 40')))
    assert [s.at for s in a] != [s.at for s in c]
    ids = {s.notice_id(DrillPlan.from_toml(plan_toml())) for s in a}
    assert len(ids) == len(a) and all(any(i) for i in ids)


@pytest.mark.parametrize(("over", "message"), [
    ({"drill": 'name = "t"\nstart = 2026-03-23'}, "drill.seed is required"),
    ({"drill": 'name = "t"\nseed = 1\nstart = "monday"'}, "drill.start must be a date"),
    ({"drill": 'name = "t"\nseed = 1\nstart = 2026-03-23\nseverity = "urgent"'},
     "drill.severity"),
    ({"drill": 'name = "t"\nseed = 1\nstart = 2026-03-23\ncolour = 1'}, "unknown key 'colour'"),
    ({"window": 'days = "weekdays"\nstart = "17:00"\nend = "09:00"'}, "must be after start"),
    ({"window": 'days = "weekdays"\nstart = "9am"\nend = "17:00"'}, "like \"09:00\""),
    ({"window": 'days = "someday"\nstart = "09:00"\nend = "17:00"'}, "use weekdays"),
    ({"participants": '[[participant]]\ndesk = "cn.cac"\ntimezone = "Mars/Olympus"'},
     "not a known IANA time zone"),
    ({"participants": '[[participant]]\ndesk = "CN CAC"\ntimezone = "UTC"'}, "desk id"),
    ({"participants": ""}, "names no participants"),
    ({"drill": 'name = "t"\nseed = 1\nstart = 2026-03-28\ndays = 2'}, "falls on none"),
])
def test_plan_errors_name_what_is_wrong(over: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        schedule(DrillPlan.from_toml(plan_toml(**over)))


def test_plan_not_toml() -> None:
    with pytest.raises(UsageError, match="not valid TOML"):
        DrillPlan.from_toml(b"[drill\n")


@pytest.mark.parametrize(("steps", "expected"), [
    # (action, notice, time) ... -> events from the final check
    ([("sent", 1, 0), ("check", 0, 299_999)], []),
    ([("sent", 1, 0), ("receipt", 1, 300_000), ("check", 0, 400_000)], []),
    ([("sent", 1, 0), ("check", 0, 300_001)], [("link_down", 300_000)]),
    ([("sent", 1, 0), ("check", 0, 300_001), ("sent", 2, 600_000), ("check", 0, 900_001)],
     []),  # already down: not raised again
    ([("sent", 1, 0), ("check", 0, 300_001), ("receipt", 1, 310_000), ("check", 0, 320_000)],
     []),  # a late receipt does not restore
    ([("sent", 1, 0), ("receipt", 1, 310_000), ("check", 0, 320_000)],
     [("link_down", 300_000)]),  # a receipt after the window, seen before any check
    ([("sent", 1, 0), ("check", 0, 300_001), ("sent", 2, 600_000), ("receipt", 2, 601_000),
      ("check", 0, 602_000)], [("link_restored", 601_000)]),
])
def test_link_monitor(steps: list[tuple[str, int, int]], expected: list[tuple[str, int]]) -> None:
    m = LinkMonitor(window_ms=300_000)
    events = []
    for action, n, at in steps:
        nid = bytes([n]) * 16
        if action == "sent":
            m.sent("cn.cac", nid, at)
        elif action == "receipt":
            m.receipt(nid, at)
        else:
            events = m.check(at)
    assert [(e.kind, e.at) for e in events] == expected


def test_link_test_body_round_trip_and_strictness() -> None:
    assert parse_link_test_body(link_test_body(3_600_000, 300_000)) == (3_600_000, 300_000)
    assert parse_link_test_body("hotline link test\nevery_ms=x\nwindow_ms=1\n") is None
    assert parse_link_test_body("an ordinary body") is None


def obs(desk: str, status: str, accepted: int, delivered: int | None = None,
        acked: int | None = None, *, automatic: bool = False, responded: int | None = None,
        escalated: bool = False, window: int | None = None) -> Observation:
    return Observation(bytes(16), "us.caisi", desk, status, "high", accepted, delivered, acked,
                       automatic, responded, escalated, window)


def test_scorecard_figures_by_hand() -> None:
    rows = [
        obs("cn.cac", "exercise", 0, 1_000, 60_000, responded=600_000),
        obs("cn.cac", "exercise", 0, 3_000, 120_000),
        obs("cn.cac", "exercise", 0, 2_000, 4_000_000, escalated=True),  # late
        obs("cn.cac", "exercise", 0, 5_000),  # missed (delivered, never acked)
        obs("cn.cac", "exercise", 0, None, 30_000, automatic=True),  # auto: not a person's
        obs("cn.cac", "test", 0, 500, 600, automatic=True, window=300_000),
        obs("cn.cac", "test", 0, 400_000, window=300_000),  # receipted after its window
        obs("cn.cac", "test", 0, None, window=300_000),
        obs("cn.cac", "test", 0, 1_000, window=300_000),
        obs("de.bsi", "exercise", 0, 10, 20),
    ]
    cac, bsi = scorecard(rows)
    assert cac.desk == "cn.cac" and cac.exercises == 5
    assert cac.deliver == Spread(4, 2_000, 5_000, 5_000)  # 1000, 2000, 3000, 5000
    assert cac.acknowledge == Spread(3, 120_000, 4_000_000, 4_000_000)
    assert cac.respond == Spread(1, 600_000, 600_000, 600_000)
    assert (cac.in_time, cac.late, cac.missed) == (2, 1, 2)
    assert cac.in_time_share == 2 / 5
    assert (cac.link_tests, cac.link_tests_answered, cac.uptime) == (4, 2, 0.5)
    assert bsi.acknowledge == Spread(1, 10 * 2, 20, 20) and bsi.uptime is None
    text = render_text([cac, bsi])
    assert "cn.cac" in text and "50.0% (2/4)" in text and "40%" in text


def test_scorecard_by_month() -> None:
    jan, feb = 1_767_225_600_000, 1_769_904_000_000  # 2026-01-01, 2026-02-01 UTC
    rows = [obs("cn.cac", "exercise", jan, jan + 5, jan + 9),
            obs("cn.cac", "exercise", feb, feb + 7, feb + 11)]
    assert [(s.period, s.exercises) for s in scorecard(rows, by_month=True)] == [
        ("2026-01", 1), ("2026-02", 1)]


def test_cli_dry_run_prints_the_seeded_schedule(
        tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from client.cli.main import main

    plan_file = Path(str(tmp_path)) / "plan.toml"
    plan_file.write_bytes(plan_toml())
    assert main(["drill", "run", str(plan_file), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    plan = DrillPlan.from_toml(plan_toml())
    assert out[0].startswith(f"drill t: seed 7, plan sha256 {plan.digest}")
    assert [line.split()[-1] for line in out[1:]] == [
        s.notice_id(plan).hex() for s in schedule(plan)]
    plan_file.write_bytes(plan_toml(window='days = "weekdays"\nstart = "9"\nend = "17:00"'))
    assert main(["drill", "run", str(plan_file), "--dry-run"]) == 2
    assert "[window].start must be a time like" in capsys.readouterr().err
