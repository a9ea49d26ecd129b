"""Deadlines where the desk looks: acknowledge-by times in inbox and show, overdue and
level markers, escalation lines that say who owes what, drills tagged, one time format."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.cli import common
from client.cli.desk_cmd import _line
from client.cli.main import main
from client.cli.ops_cmd import escalation_line
from client.demo import _hms as demo_times
from client.items import EscalationEvent
from tests.client import test_cli_desk as cli_desk
from tests.factory import NOW, Federation

# The desk-home fixtures of the desk command tests.
_env = cli_desk._env
desk_home = cli_desk.desk_home
_receive_one = cli_desk._receive_one


def test_inbox_has_a_header_a_deadline_and_an_overdue_marker(
        desk_home: tuple[Path, Path, Federation], capsys: pytest.CaptureFixture[str]) -> None:
    home, pw, fed = desk_home
    nid = _receive_one(home, fed, title="Weights on a tracker")  # critical, at NOW (long ago)
    assert main(["inbox", "--local", "--home", str(home), "--passphrase-file", str(pw)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["notice", "from", "severity", "status"]
    assert "acknowledge by" in header
    assert row.startswith(nid) and "NOT ACKED OVERDUE" in row
    # A critical notice is due 15 minutes after the relay accepted it.
    assert common.iso(NOW + 15 * 60_000) in row


def test_show_says_by_when_to_acknowledge(
        desk_home: tuple[Path, Path, Federation], capsys: pytest.CaptureFixture[str]) -> None:
    home, pw, fed = desk_home
    nid = _receive_one(home, fed)
    assert main(["show", nid, "--home", str(home), "--passphrase-file", str(pw)]) == 0
    acked = [x for x in capsys.readouterr().out.splitlines() if x.startswith("acked:")]
    assert acked == [f"acked:      not yet: acknowledge by {common.iso(NOW + 15 * 60_000)}"
                     f"  OVERDUE (hotline ack {nid[:8]})"]


def _escalation(status: str) -> EscalationEvent:
    return EscalationEvent("escalation", bytes(range(16)), "cn.cac", 2, NOW + 20 * 60_000, 9,
                           sender="us.caisi", severity="critical", status=status,
                           track="ack", deadline=NOW + 15 * 60_000, delivered=True)


def test_the_recipients_escalation_line_says_it_must_acknowledge() -> None:
    mine = _line(_escalation("actual"), "cn.cac")
    assert "this desk must acknowledge it now: hotline ack 00010203" in mine
    theirs = _line(_escalation("actual"), "us.caisi")
    assert "cn.cac has not acknowledged" in theirs and "must" not in theirs


@pytest.mark.parametrize(("status", "label"), [("exercise", "[EXERCISE]"), ("test", "[TEST]")])
def test_drills_are_tagged_on_escalation_lines(status: str, label: str) -> None:
    assert label in _line(_escalation(status), "cn.cac")
    assert "[" + "ACTUAL" not in _line(_escalation("actual"), "cn.cac")


def test_watch_lines_are_coloured_by_severity_on_a_terminal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert common.colour("x", "critical") == "\033[1;31mx\033[0m"
    monkeypatch.setenv("NO_COLOR", "1")
    assert common.colour("x", "critical") == "x"


def test_desk_ops_and_demo_views_print_times_in_one_format_with_the_zone() -> None:
    record = {"event": "notice.escalated", "at": "2026-12-01T21:10:43.717+00:00",
              "severity": "critical", "notice_id": "ab" * 16, "sender": "us.caisi",
              "recipient": "cn.cac", "level": 1, "track": "ack", "overdue_ms": 60_000,
              "delivered": True, "exercise": False}
    assert escalation_line(record).startswith("2026-12-01 21:10:43 UTC  ESCALATED")
    at = 1_796_159_443_717  # 2026-12-01T21:10:43.717Z
    assert common.iso(at) == "2026-12-01 21:10:43 UTC"
    assert demo_times(at) == "2026-12-01 21:10:43 UTC"
