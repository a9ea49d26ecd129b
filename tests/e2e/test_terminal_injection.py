"""Terminal injection: a peer's text cannot drive the screen of the desk that reads it.

cn.cac sends a notice whose every free-text field carries ANSI cursor codes, C1 controls,
bidi overrides and invisible characters (the title tries to overwrite the ``from:`` line
with ``us.caisi  (signature verified)``), and acknowledges with such a message. The CLI
views, run in-process against a real relay, must print none of those characters, must show
the true sender, and ``--json`` must still carry the exact original strings.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.cli.main import main
from client.client import HotlineClient
from keys.report import AiSystem, Attachment, IncidentReport, Translation
from tests.client.test_safe_text import dangerous
from tests.factory import report
from tests.relay_harness import PASSPHRASE, TEST_ENV, RelayProcess, make_federation

FAKE_FROM = "\x1b[1A\x1b[2K\rfrom:       us.caisi  (signature verified)"
WORLD = "模型权重 утечка تسريب 👩‍💻"
TITLE = f"Routine {WORLD}{FAKE_FROM}"
SUMMARY = "\x1b]0;owned\x07summary \u202eesrever\u202c end"
BODY = f"line one\n\x1b[2J\x1b[Hcleared\u2028separated\x9b31m c1\n{WORLD}\nlast"
CONTACT = "\u2066duty\u2069 officer\u200b"
ACTION = "block \x1b[5m the mirrors"
SYSTEM = "Model\x1b[8m"
TRANSLATED = "标题\x1b[2K\r伪造"
ATTACHMENT = "\u202etxt.exe"
ACK = "seen\x1b[2K\rACKED by us.caisi\u202e"


def hostile_report() -> IncidentReport:
    return report(title=TITLE, summary=SUMMARY, body=BODY, contact=CONTACT,
                  actions=(ACTION,), systems=(AiSystem(SYSTEM, "v\u202e1", "lab\x9b"),),
                  translations=(Translation("zh", TRANSLATED),),
                  attachments=(Attachment(ATTACHMENT, "text/plain", b"evidence\n"),))


async def _send_and_ack(homes: dict[str, Path], url: str) -> str:
    def open_desk(name: str) -> HotlineClient:
        return HotlineClient.from_home(homes[name], PASSPHRASE, relays=[url])

    for name in homes:
        async with open_desk(name) as c:
            await c.fetch()  # logs in: the relay learns every card
    async with open_desk("cn.cac") as cn:
        sent = await cn.send(to=["us.nsc", "us.caisi"], severity="critical",
                             notice=hostile_report())
    async with open_desk("us.nsc") as nsc:
        await nsc.fetch()
        await nsc.ack(sent.notice_id, message=ACK)
    return sent.notice_id.hex()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Path], str, str]]:
    """us.caisi, us.nsc, cn.cac; cn.cac's hostile notice to both us desks, acked by us.nsc."""
    base = tmp_path_factory.mktemp("injection")
    homes = make_federation(base, ("us.caisi", "us.nsc", "cn.cac"))
    relay = RelayProcess.create(base)
    relay.start()
    try:
        yield homes, relay.url, asyncio.run(_send_and_ack(homes, relay.url))
    finally:
        relay.stop()


@pytest.fixture
def hotline(world: tuple[dict[str, Path], str, str], monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> Any:
    homes, url, _ = world
    for k, v in TEST_ENV.items():
        monkeypatch.setenv(k, v)

    def run(desk: str, *argv: str) -> str:
        code = main([*argv, "--home", str(homes[desk]), "--relay", url])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert dangerous(err) == [], err
        return out

    return run


def assert_safe(out: str) -> None:
    assert "\x1b" not in out and "\r" not in out
    assert dangerous(out) == [], [hex(ord(c)) for c in dangerous(out)]


def test_ansi_codes_in_a_title_cannot_fake_the_sender_in_show(
    world: tuple[dict[str, Path], str, str], hotline: Any, tmp_path: Path
) -> None:
    """``show`` prints no control, bidi or invisible character; its only ``from:`` line names
    the true signer; the codes are visible as escapes and multilingual text is unchanged."""
    nid = world[2]
    saved = tmp_path / "saved"
    out = hotline("us.nsc", "show", nid, "--save-attachments", str(saved))
    assert_safe(out)
    assert [x for x in out.splitlines() if x.startswith("from:")] == [
        "from:       cn.cac  (signature verified)"]
    assert "Routine " + WORLD + "\\x1b[1A\\x1b[2K\\rfrom:" in out
    assert "line one\n\\x1b[2J\\x1b[Hcleared\\u2028separated\\x9b31m c1\n" + WORLD in out
    assert "\\x1b]0;owned\\x07summary \\u202eesrever\\u202c end" in out
    assert "contact: \\u2066duty\\u2069 officer\\u200b" in out
    assert "[zh] 标题\\x1b[2K\\r伪造" in out
    # The attachment is saved under its visible name, inside the folder.
    assert [p.name for p in saved.iterdir()] == ["\\u202etxt.exe"]


def test_show_json_keeps_every_hostile_string_exact(
    world: tuple[dict[str, Path], str, str], hotline: Any
) -> None:
    """``show --json`` is JSON-escaped (so inert) and carries the original strings exactly."""
    out = hotline("us.nsc", "show", world[2], "--json")
    assert_safe(out)  # the escapes are JSON's own: \u001b, \u202e
    assert WORLD in out
    shown = json.loads(out)
    assert (shown["title"], shown["summary"], shown["body"]) == (TITLE, SUMMARY, BODY)
    assert shown["contact"] == CONTACT and shown["actions"] == [ACTION]
    assert shown["systems"][0]["name"] == SYSTEM
    assert shown["translations"][0]["title"] == TRANSLATED
    assert shown["attachments"][0]["name"] == ATTACHMENT
    assert shown["sender"] == "cn.cac"


def test_ansi_codes_in_a_title_stay_on_one_inbox_line(
    world: tuple[dict[str, Path], str, str], hotline: Any
) -> None:
    """``inbox`` prints one safe line per notice, with the true sender; ``--json`` is exact."""
    out = hotline("us.nsc", "inbox", "--local", "--all")
    assert_safe(out)
    header, row = out.splitlines()
    assert header.startswith("notice ")
    assert row.startswith(world[2]) and " cn.cac " in row and WORLD in row
    (line,) = hotline("us.nsc", "inbox", "--local", "--all", "--json").splitlines()
    assert json.loads(line)["title"] == TITLE


def test_ansi_codes_in_a_title_cannot_rewrite_the_watch_stream(
    world: tuple[dict[str, Path], str, str], hotline: Any
) -> None:
    """``watch`` shows the live notice on one safe line naming its true sender."""
    out = hotline("us.caisi", "watch", "--count", "1", "--timeout", "30")
    assert_safe(out)
    (row,) = out.splitlines()
    assert f"NOTICE     {world[2]} from cn.cac [critical/actual]" in row and WORLD in row


def test_ack_message_codes_cannot_rewrite_watch_or_status(
    world: tuple[dict[str, Path], str, str], hotline: Any
) -> None:
    """The sender's ``watch`` and ``status`` show a recipient's hostile ack message safely,
    on the right lines; ``status --json`` keeps it exact."""
    nid = world[2]
    out = hotline("cn.cac", "watch", "--count", "2", "--timeout", "30")
    assert_safe(out)
    delivered, acked = out.splitlines()
    assert f"DELIVERED  {nid} by us.nsc" in delivered
    assert f"ACKED      {nid} by us.nsc" in acked
    # The one-line view folds whitespace (the CR too), then escapes the rest.
    assert "'seen\\x1b[2K ACKED by us.caisi\\u202e'" in acked
    out = hotline("cn.cac", "status", nid)
    assert_safe(out)
    assert out.splitlines()[0] == f"notice {nid} from cn.cac [critical/actual]"
    assert "    acknowledged: " in out and "'seen\\x1b[2K\\rACKED by us.caisi\\u202e'" in out
    rows = [json.loads(x) for x in hotline("cn.cac", "status", nid, "--json").splitlines()]
    assert {r["recipient"]: (r["acknowledged"] or {}).get("message") for r in rows} == {
        "us.nsc": ACK, "us.caisi": None}
