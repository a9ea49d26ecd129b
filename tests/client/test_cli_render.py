"""Relay-supplied text (error details, operator records) and peer-chosen file names are
rendered safely by the CLI."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from client.cli.desk_cmd import _save_attachments
from client.cli.main import main
from client.cli.ops_cmd import escalation_line, overdue_table
from keys import codec
from keys.errors import MalformedInput
from keys.frames import ErrorFrame
from keys.report import Attachment, from_wire
from tests.client.test_safe_text import dangerous
from tests.factory import report

FAKE_OK = "\x1b[2K\rhotline: notice accepted\u202e"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOTLINE_TEST_FAST_KDF", "1")
    monkeypatch.setenv("HOTLINE_PASSPHRASE", "render test passphrase")
    for name in ("HOTLINE_RELAY", "HOTLINE_HOME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def lying_relay() -> Iterator[str]:
    """A relay on loopback that refuses every request with an error frame whose code, detail
    and request id carry cursor codes and a bidi override. Its first answer to a desk is a
    503 to be retried at once (which the desk's ``-v`` log reports, with the code)."""
    answers = 0

    async def refuse(request: web.Request) -> web.Response:
        nonlocal answers
        if not request.path.startswith("/v1/ops/"):
            answers += 1
        if answers == 1:
            frame = ErrorFrame("busy\x1b[2K\r", "", "")
            return web.Response(status=503, body=frame.encode(), headers={"Retry-After": "0"},
                                content_type="application/msgpack")
        frame = ErrorFrame("forbidden\x1b[8m", FAKE_OK, "req\x9b1")
        return web.Response(status=403, body=frame.encode(),
                            content_type="application/msgpack")

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def _assert_one_safe_error(err: str) -> str:
    assert dangerous(err) == [], [hex(ord(c)) for c in dangerous(err)]
    assert "\x1b" not in err and "\r" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hotline: "), err
    return lines[0]


def test_relay_error_detail_cannot_drive_the_desk_terminal(
    lying_relay: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A relay's error code and detail are printed as visible escapes on one line."""
    from tests.client.test_cli_desk import PASSPHRASE, _write_home
    from tests.factory import Federation

    fed = Federation.create()
    home = _write_home(tmp_path / "cn.cac", fed, "cn.cac")
    pw = tmp_path / "pw"
    pw.write_text(PASSPHRASE + "\n")
    code = main(["inbox", "-v", "--home", str(home.path), "--passphrase-file", str(pw),
                 "--relay", lying_relay])
    assert code != 0
    err = capsys.readouterr().err
    # -v logs each exchange: those lines (relay data in them too) must be safe as well.
    assert dangerous(err) == [] and "\x1b" not in err, err
    assert "503 busy\\x1b[2K\\r" in err  # the retry was logged, safely
    last = err.strip().splitlines()[-1]
    assert last.startswith("hotline: ") and "\\x1b[2K\\rhotline: notice accepted\\u202e" in last


def test_relay_error_detail_cannot_drive_the_operator_terminal(
    lying_relay: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``hotline ops overdue`` prints a lying relay's refusal as one safe line."""
    home = tmp_path / "ops"
    assert main(["ops", "init", "--name", "ops.alice", "--home", str(home)]) == 0
    capsys.readouterr()
    assert main(["ops", "overdue", "--home", str(home), "--relay", lying_relay]) == 1
    line = _assert_one_safe_error(capsys.readouterr().err)
    assert "\\x1b[2K\\rhotline: notice accepted\\u202e" in line
    assert line.endswith("[forbidden\\x1b[8m]")


HOSTILE_RECORD: dict[str, Any] = {
    "event": "escalation.raised", "severity": "critical", "notice_id": "ab" * 16,
    "sender": "cn.cac\x1b[2K\r", "recipient": "us.nsc\u202e", "track": "ack\x9b",
    "overdue_ms": 600_000, "level": 2, "delivered": True, "at": "2026-01-01T00:00:00Z\x1b]0;x\x07",
}


def test_relay_records_cannot_drive_the_operator_views() -> None:
    """``ops overdue`` and ``ops escalations/watch`` lines escape every relay string."""
    table = overdue_table([HOSTILE_RECORD])
    assert dangerous(table) == [] and "cn.cac\\x1b[2K\\r" in table and "us.nsc\\u202e" in table
    assert len(table.splitlines()) == 2
    for event in ("escalation.raised", "escalation.resolved"):
        shown = escalation_line(HOSTILE_RECORD | {"event": event})
        assert dangerous(shown) == [] and "\n" not in shown
        assert "cn.cac\\x1b[2K\\r -> us.nsc\\u202e" in shown


TRAVERSING = ["../escape.txt", "../../escape2.txt", "sub/../../escape3.txt",
              "..\\escape4.txt", "..", ".", ""]


def test_peer_chosen_attachment_names_cannot_escape_the_target_folder(tmp_path: Path) -> None:
    """Names with separators, absolute paths, ``.`` and ``..`` are saved inside the folder
    as ``attachment``; nothing is written anywhere else."""
    target = tmp_path / "a" / "saved"
    absolute = str(tmp_path / "absolute-escape.txt")
    names = [*TRAVERSING, absolute]
    notice = SimpleNamespace(report=SimpleNamespace(
        attachments=tuple(Attachment(n, "text/plain", b"x") for n in names)))
    written = _save_attachments(notice, str(target))  # type: ignore[arg-type]
    assert len(written) == len(names)
    assert all(Path(p).parent == target for p in written)
    assert sorted(p.name for p in target.iterdir())[:2] == ["attachment", "attachment (1)"]
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and target not in p.parents]
    assert outside == []


def test_attachment_names_with_bidi_or_controls_are_saved_under_visible_names(
    tmp_path: Path,
) -> None:
    """A right-to-left override cannot make ``gpj.exe`` list as ``exe.jpg``; a Chinese name
    is kept, shortened to what the file system allows."""
    long_chinese = "证据" * 100 + ".txt"  # 200 characters, 604 bytes of UTF-8
    notice = SimpleNamespace(report=SimpleNamespace(attachments=(
        Attachment("\u202egpj.exe", "image/jpeg", b"x"),
        Attachment("a\x9bb\u200b.txt", "text/plain", b"y"),
        Attachment(long_chinese, "text/plain", b"z"))))
    written = [Path(p).name for p in _save_attachments(notice, str(tmp_path))]  # type: ignore[arg-type]
    assert written[:2] == ["\\u202egpj.exe", "a\\x9bb\\u200b.txt"]
    assert written[2].startswith("证据证据") and written[2].endswith(".txt")
    assert len(written[2].encode()) <= 240


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/passwd", "a\\b", "nul\x00", "esc\x1b"])
def test_report_with_a_traversing_attachment_name_is_refused(name: str) -> None:
    """The report schema refuses attachment names with separators or C0 controls."""
    wire = report(attachments=(Attachment(name, "text/plain", b"x"),)).to_wire()
    with pytest.raises(MalformedInput, match="attachments"):
        from_wire(codec.unpack(codec.pack(wire), what="report", max_bytes=2**20))
