"""The desk commands' arguments and local output: errors are one line, listings are JSON lines."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from client.cli.desk_cmd import duration, parse_time
from client.cli.main import main
from client.client import HotlineClient
from client.home import Home
from keys.report import Attachment
from tests.client.fakes import FakeConnection, FakeRelay
from tests.factory import NOW, Federation, report

PASSPHRASE = "cli test passphrase"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_TEST_FAST_KDF", "1")
    for name in ("HOTLINE_RELAY", "HOTLINE_PASSPHRASE", "HOTLINE_HOME"):
        monkeypatch.delenv(name, raising=False)


def _write_home(path: Path, fed: Federation, desk: str) -> Home:
    home = Home(path)
    d = fed.desks[desk]
    assert fed.root is not None
    home.write_config({"desk": desk})
    home.write_desk_secrets(d.secrets, PASSPHRASE.encode())
    home.write("desk.cert", d.card.cert.encode())
    home.write_ek_certs(list(d.card.eks))
    home.write("root", fed.root.encode())
    return home


@pytest.fixture
def desk_home(tmp_path: Path) -> tuple[Path, Path, Federation]:
    """cn.cac's home on disk, and a passphrase file."""
    fed = Federation.create(desks=("us.caisi", "cn.cac"))
    home = _write_home(tmp_path / "cn.cac", fed, "cn.cac")
    pw = tmp_path / "pw"
    pw.write_text(PASSPHRASE + "\n")
    return home.path, pw, fed


def _receive_one(home: Path, fed: Federation, **report_fields: object) -> str:
    """Have us.caisi send a notice to cn.cac and cn.cac fetch it into its client.db."""
    return asyncio.run(_receive(home, fed, **report_fields))


async def _receive(home: Path, fed: Federation, **report_fields: object) -> str:
    relay = FakeRelay(fed)
    us = HotlineClient(fed.desks["us.caisi"].secrets, home.parent / "us.caisi",
                       connection=FakeConnection(relay, "us.caisi"), trust=fed.trust,  # type: ignore[arg-type]
                       clock=lambda: NOW)
    cn = HotlineClient(fed.desks["cn.cac"].secrets, home,
                       connection=FakeConnection(relay, "cn.cac"), trust=fed.trust,  # type: ignore[arg-type]
                       clock=lambda: NOW)
    sent = await us.send(to=["cn.cac"], severity="critical", notice=report(**report_fields))
    await cn.fetch()
    await us.close()
    await cn.close()
    return sent.notice_id.hex()


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hotline: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["send", "--severity", "high", "--title", "t", "--body", "b"], "--to"),
        (["send", "--to", "cn.cac", "--severity", "urgent", "--title", "t", "--body", "b"],
         "invalid choice"),
        (["send", "--to", "cn.cac", "--severity", "high", "--title", "t", "--body", "b",
          "--body-file", "f"], "not allowed with"),
        (["send", "--to", "cn.cac", "--severity", "high", "--title", "t"], "--body"),
        (["send", "--to", "cn.cac", "--severity", "high", "--title", "t", "--body", "b",
          "--status", "drill"], "invalid choice"),
        (["watch", "--count", "many"], "invalid int"),
        (["ack"], "id"),
        (["status"], "id"),
    ],
)
def test_bad_arguments_are_refused_by_the_parser(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert complaint in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--aware-at", "yesterday"], "--aware-at 'yesterday' is not an ISO 8601 time"),
        (["--attach", "/nonexistent/evidence.bin"], "cannot read attachment"),
        (["--body-file", "/nonexistent/body.txt"], "cannot read body file"),
    ],
)
def test_bad_send_inputs_are_one_line_errors(
    extra: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["send", "--to", "cn.cac", "--severity", "high", "--title", "t"]
    body = [] if "--body-file" in extra else ["--body", "b"]
    assert main(base + body + extra) == 2
    assert complaint in _one_line_error(capsys)


def test_watch_count_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "--count", "0"]) == 2
    assert "--count must be at least 1" in _one_line_error(capsys)


def test_network_command_without_a_relay_says_how_to_set_one(
    desk_home: tuple[Path, Path, Federation], capsys: pytest.CaptureFixture[str]
) -> None:
    home, pw, _ = desk_home
    assert main(["inbox", "--home", str(home), "--passphrase-file", str(pw)]) == 2
    assert "no relay URL" in _one_line_error(capsys)


def test_wrong_passphrase_is_one_line(
    desk_home: tuple[Path, Path, Federation], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home, _, _ = desk_home
    wrong = tmp_path / "wrong"
    wrong.write_text("not it")
    assert main(["inbox", "--local", "--home", str(home), "--passphrase-file", str(wrong)]) == 1
    assert "wrong_passphrase" in _one_line_error(capsys)


def test_inbox_lists_received_notices_as_json_lines(
    desk_home: tuple[Path, Path, Federation], capsys: pytest.CaptureFixture[str]
) -> None:
    home, pw, fed = desk_home
    nid = _receive_one(home, fed, title="Weights on a tracker")
    assert main(["inbox", "--local", "--json", "--home", str(home),
                 "--passphrase-file", str(pw)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    row = json.loads(line)
    assert row["notice_id"] == nid and row["sender"] == "us.caisi"
    assert row["title"] == "Weights on a tracker" and row["acked"] is False
    assert row["severity"] == "critical"

    assert main(["inbox", "--local", "--home", str(home), "--passphrase-file", str(pw)]) == 0
    out = capsys.readouterr().out
    assert nid in out and "NOT ACKED" in out and "Weights on a tracker" in out


def test_show_prints_the_notice_and_saves_attachments_privately(
    desk_home: tuple[Path, Path, Federation], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home, pw, fed = desk_home
    nid = _receive_one(
        home, fed, attachments=(Attachment("hashes.txt", "text/plain", b"abc123\n"),))
    target = tmp_path / "saved"
    assert main(["show", nid[:10], "--json", "--save-attachments", str(target),
                 "--home", str(home), "--passphrase-file", str(pw)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["notice_id"] == nid and shown["body"] == report().body
    assert shown["attachments"] == [{"name": "hashes.txt", "media_type": "text/plain",
                                     "size": 7}]
    saved = target / "hashes.txt"
    assert saved.read_bytes() == b"abc123\n" and stat.S_IMODE(saved.stat().st_mode) == 0o600
    # A second save never overwrites the first file.
    assert main(["show", nid, "--save-attachments", str(target), "--home", str(home),
                 "--passphrase-file", str(pw)]) == 0
    assert (target / "hashes (1).txt").read_bytes() == b"abc123\n"


def test_show_with_a_malformed_id_is_one_line(
    desk_home: tuple[Path, Path, Federation], capsys: pytest.CaptureFixture[str]
) -> None:
    home, pw, _ = desk_home
    assert main(["show", "12z", "--home", str(home), "--passphrase-file", str(pw)]) == 2
    assert "32 hex digits or a prefix" in _one_line_error(capsys)


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0 s"), (-5, "0 s"), (59_999, "59 s"), (60_000, "1 min"), (3_599_000, "59 min"),
     (3_600_000 + 5 * 60_000, "1 h 05 min"), (2 * 86_400_000 + 4 * 3_600_000, "2 d 4 h")],
)
def test_overdue_durations_read_naturally(ms: int, text: str) -> None:
    assert duration(ms) == text


@pytest.mark.parametrize(
    ("value", "ms"),
    [("2026-09-21T00:00:00Z", 1_789_948_800_000),
     ("2026-09-21T00:00:00", 1_789_948_800_000),  # no zone: UTC
     ("2026-09-21T02:00:00+02:00", 1_789_948_800_000)],
)
def test_aware_at_parsing(value: str, ms: int) -> None:
    assert parse_time(value) == ms


@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
def test_hotline_status_fails_loudly_when_the_relay_contradicts_the_outbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    json_out: bool,
) -> None:
    """A relay that drops the recipient who never acknowledged and relabels the notice
    critical -> low: ``hotline status`` says VERIFICATION FAILED, names each difference,
    and exits 1 (it exits 0 for the same notice before the relay lies)."""
    fed = Federation.create(desks=("us.caisi", "cn.cac", "cn.mss"))
    home = _write_home(tmp_path / "us.caisi", fed, "us.caisi")
    relay = FakeRelay(fed)

    def client(args: object) -> HotlineClient:
        return HotlineClient(fed.desks["us.caisi"].secrets, home,
                             connection=FakeConnection(relay, "us.caisi"),  # type: ignore[arg-type]
                             trust=fed.trust, card=fed.desks["us.caisi"].card,
                             clock=lambda: NOW)

    async def send() -> str:
        us = client(None)
        sent = await us.send(to=["cn.cac", "cn.mss"], severity="critical", notice=report())
        await us.close()
        return sent.notice_id.hex()

    nid = asyncio.run(send())
    monkeypatch.setattr("client.cli.desk_cmd._client", client)
    argv = ["status", nid] + (["--json"] if json_out else [])
    assert main(argv) == 0
    assert "VERIFICATION FAILED" not in capsys.readouterr().err
    relay.status_drop_recipients = {"cn.mss"}
    relay.status_severity = "low"
    assert main(argv) == 1
    out = capsys.readouterr()
    assert "VERIFICATION FAILED" in out.err
    assert "severity: the relay says 'low', this desk holds 'critical'" in out.err
    assert "recipients: the relay says 'cn.cac', this desk holds 'cn.cac,cn.mss'" in out.err
    if json_out:
        (line,) = out.out.splitlines()
        assert json.loads(line)["verified"] is False


def test_hotline_watch_shows_a_relay_time_a_year_off_as_a_clock_skew_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """The relay signs an acceptance a year ahead, then one at 0: ``hotline watch`` shows
    each once, as a ``clock_skew`` JSON object or a CLOCK SKEW line."""
    fed = Federation.create(desks=("us.caisi", "cn.cac"))
    home = _write_home(tmp_path / "us.caisi", fed, "us.caisi")
    relay = FakeRelay(fed, sign_accepted_at=NOW + 365 * 86_400_000)

    def client(args: object) -> HotlineClient:
        return HotlineClient(fed.desks["us.caisi"].secrets, home,
                             connection=FakeConnection(relay, "us.caisi"),  # type: ignore[arg-type]
                             trust=fed.trust, card=fed.desks["us.caisi"].card,
                             clock=lambda: NOW)

    async def send() -> str:
        us = client(None)
        sent = await us.send(to=["cn.cac"], severity="critical", notice=report())
        await us.close()
        return sent.notice_id.hex()

    nid = asyncio.run(send())
    monkeypatch.setattr("client.cli.desk_cmd._client", client)
    assert main(["watch", "--count", "1", "--json"]) == 0
    (obj,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (obj["event"], obj["notice_id"], obj["attested_event"], obj["skew_ms"]) == (
        "clock_skew", nid, "accepted", 365 * 86_400_000)
    relay.sign_accepted_at = 0
    asyncio.run(send())
    assert main(["watch", "--count", "1"]) == 0
    (line,) = capsys.readouterr().out.splitlines()  # the first warning is not shown again
    assert "CLOCK SKEW" in line and "behind this desk's clock" in line, line


def test_desk_home_config_sets_the_allowed_clock_skew(desk_home: tuple[Path, Path, Federation]
                                                      ) -> None:
    """``max_clock_skew_seconds`` in config.toml reaches the client; the library argument
    wins over it; without either it is 5 minutes."""
    path, _, _ = desk_home
    home = Home(path)
    default = HotlineClient.from_home(path, PASSPHRASE)
    assert default.max_clock_skew_ms == 300_000
    asyncio.run(default.close())
    home.write_config({"desk": "cn.cac", "max_clock_skew_seconds": 90})
    configured = HotlineClient.from_home(path, PASSPHRASE)
    assert configured.max_clock_skew_ms == 90_000
    asyncio.run(configured.close())
    explicit = HotlineClient.from_home(path, PASSPHRASE, max_clock_skew_ms=1_000)
    assert explicit.max_clock_skew_ms == 1_000
    asyncio.run(explicit.close())
