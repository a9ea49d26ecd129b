"""The CLI is careful with people's time and mistakes: cheap checks first, typos answered
with the nearest option, every option explained, no silent reuse of a notice id."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest
from nacl.pwhash import argon2id

from client.cli.main import build_parser, main
from client.client import HotlineClient
from client.home import Home
from keys import codec
from keys.armor import armor, dearmor
from keys.errors import MalformedInput, UsageError
from keys.keyfile import KdfLimits
from tests.client.fakes import FakeConnection, FakeRelay
from tests.factory import NOW, Federation, report


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_TEST_FAST_KDF", "1")
    for name in ("HOTLINE_RELAY", "HOTLINE_PASSPHRASE", "HOTLINE_HOME"):
        monkeypatch.delenv(name, raising=False)


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("hotline 0.")


@pytest.mark.parametrize(("argv", "nearest"), [
    (["send", "--to", "cn.cac", "--sevrity", "high", "--title", "t", "--body", "b"],
     "did you mean --severity?"),
    (["ops", "watch", "--jsn"], "did you mean --json?"),
    (["inbox", "--lcoal"], "did you mean --local?"),
    (["sned"], "did you mean 'send'?"),
    (["keys", "roate"], "did you mean 'rotate'?"),
])
def test_misspelt_flag_or_command_suggests_the_nearest(
        argv: list[str], nearest: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert nearest in _err(capsys)


def walk(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """Every (command, option) of ``parser`` and of its sub-commands."""
    out: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out.extend(walk(sub))
        else:
            out.append((parser.prog, action))
    return out


def test_every_option_and_argument_has_help_text() -> None:
    missing = [f"{prog} {a.option_strings or a.dest}" for prog, a in walk(build_parser())
               if not a.help and not isinstance(a, argparse._HelpAction)]
    assert missing == []


@pytest.mark.parametrize(("argv", "what"), [
    (["inbox", "--local"], "no desk key in"),
    (["keys", "rotate"], "no desk key in"),
    (["keys", "install", "whatever.cert"], "no desk key in"),
    (["ops", "overdue", "--relay", "http://127.0.0.1:9"], "no operator key in"),
    (["authority", "revoke", "us.caisi"], "no authority key in"),
    (["relay", "serve"], "no relay key in"),
])
def test_missing_home_is_said_before_any_passphrase_is_asked(
        argv: list[str], what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def asked(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("the passphrase was asked for a home that does not exist")

    for module in ("desk_cmd", "keys_cmd", "ops_cmd", "authority_cmd", "relay_cmd"):
        monkeypatch.setattr(f"client.cli.{module}.read_passphrase", asked, raising=False)
    monkeypatch.setattr("client.client.read_passphrase", asked)
    assert main([*argv, "--home", str(tmp_path / "nowhere")]) == 2
    assert what in _err(capsys)


def _authority(tmp_path: Path, country: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / f"{country}-authority"
    monkeypatch.setenv("HOTLINE_PASSPHRASE", "a long authority passphrase")
    assert main(["authority", "init", "--country", country, "--home", str(home)]) == 0
    return home


def test_wrong_country_certify_is_refused_before_the_authority_key_is_opened(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    us = _authority(tmp_path, "us", monkeypatch)
    assert main(["keys", "init", "--id", "cn.cac", "--home", str(tmp_path / "cn.cac")]) == 0
    capsys.readouterr()

    def opened(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("the authority key was decrypted before the country check")

    monkeypatch.setattr("client.cli.authority_cmd.read_key_file", opened)
    monkeypatch.setattr("client.cli.authority_cmd.read_passphrase", opened)
    assert main(["authority", "certify", str(tmp_path / "cn.cac" / "desk.request"),
                 "--home", str(us)]) == 2
    assert "the us authority can certify only us desks, not cn.cac" in _err(capsys)
    assert main(["authority", "revoke", "cn.cac", "--home", str(us)]) == 2
    assert "can revoke only us desks" in _err(capsys)


def test_authority_key_needs_a_passphrase_of_twelve_characters(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_PASSPHRASE", "12345")
    home = tmp_path / "us-authority"
    assert main(["authority", "init", "--country", "us", "--home", str(home)]) == 2
    assert "at least 12 characters" in _err(capsys)
    assert not (home / "authority.key").exists()


def test_slow_key_derivation_prints_a_progress_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Costlier than the test minimum (so the line is due) yet cheap enough for a test.
    monkeypatch.setattr(Home, "authority_limits", lambda self: KdfLimits(
        argon2id.OPSLIMIT_MIN + 1, argon2id.MEMLIMIT_MIN))
    _authority(tmp_path, "us", monkeypatch)
    assert "protecting the authority key (Argon2id" in _err(capsys)
    assert main(["authority", "revoke", "us.nobody", "--home",
                 str(tmp_path / "us-authority")]) == 2
    assert "opening the authority key (Argon2id" in _err(capsys)


def test_messages_use_the_right_article_and_plural() -> None:
    text = armor("authority-card", b"x")
    with pytest.raises(MalformedInput, match="expected a desk card, got an authority card"):
        dearmor("desk-card", text.encode())
    with pytest.raises(MalformedInput, match=r"at least 1 character$"):
        codec.text(10, min_chars=1)("", "title")


def test_pinning_the_same_root_again_says_it_is_unchanged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fed = Federation.create(desks=("us.caisi",))
    assert fed.root is not None
    (tmp_path / "root").write_bytes(fed.root.encode())
    home = str(tmp_path / "desk")
    assert main(["federation", "pin", str(tmp_path / "root"), "--home", home]) == 0
    assert main(["federation", "pin", str(tmp_path / "root"), "--home", home]) == 0
    out = capsys.readouterr().out
    assert "is pinned already (unchanged)" in out and "from v1 to v1" not in out


@pytest.mark.parametrize(("argv", "complaint"), [
    (["ops", "overdue", "--severity", "urgent"], "invalid choice: 'urgent'"),
    (["ops", "watch", "--desk", "Not A Desk"], "is not a desk id"),
])
def test_ops_filters_are_validated(argv: list[str], complaint: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert complaint in _err(capsys)


def _pair(tmp_path: Path) -> tuple[HotlineClient, HotlineClient]:
    fed = Federation.create(desks=("us.caisi", "cn.cac"))
    relay = FakeRelay(fed)
    us = HotlineClient(fed.desks["us.caisi"].secrets, tmp_path / "us.caisi",
                       connection=FakeConnection(relay, "us.caisi"), trust=fed.trust,  # type: ignore[arg-type]
                       clock=lambda: NOW)
    cn = HotlineClient(fed.desks["cn.cac"].secrets, tmp_path / "cn.cac",
                       connection=FakeConnection(relay, "cn.cac"), trust=fed.trust,  # type: ignore[arg-type]
                       clock=lambda: NOW)
    return us, cn


def test_reusing_a_notice_id_for_other_content_is_refused(tmp_path: Path) -> None:
    async def run() -> None:
        us, cn = _pair(tmp_path)
        nid = "ab" * 16
        first = await us.send(to=["cn.cac"], severity="high", notice=report(), notice_id=nid)
        again = await us.send(to=["cn.cac"], severity="high",
                              notice=report(aware_at=NOW - 5), notice_id=nid)
        assert again.duplicate and again.notice_id == first.notice_id
        with pytest.raises(UsageError, match="content differ"):
            await us.send(to=["cn.cac"], severity="high", notice=report(title="Another"),
                          notice_id=nid)
        with pytest.raises(UsageError, match="severity differ"):
            await us.send(to=["cn.cac"], severity="low", notice=report(), notice_id=nid)
        await us.close()
        await cn.close()

    asyncio.run(run())


def test_acknowledging_a_notice_this_desk_sent_says_so(tmp_path: Path) -> None:
    async def run() -> None:
        us, cn = _pair(tmp_path)
        sent = await us.send(to=["cn.cac"], severity="high", notice=report())
        with pytest.raises(UsageError, match=r"one this desk sent .*only its recipients"):
            await us.ack(sent.notice_id)
        await us.close()
        await cn.close()

    asyncio.run(run())


def test_relays_list_add_remove_change_a_desks_relay(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = Home(tmp_path / "desk")
    home.write_config({"desk": "us.caisi", "relays": ["http://old.example:8750"],
                       "max_clock_skew_seconds": 2.5})
    home.write("relay.card", b"pinned")
    h = ["--home", str(home.path)]
    assert main(["relays", "add", "https://new.example:8443/", *h]) == 0
    assert main(["relays", "list", *h]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "http://old.example:8750", "https://new.example:8443"]
    assert home.exists("relay.card")  # the same relay's other URL: the pin stays
    assert main(["relays", "remove", "http://nowhere.example", *h]) == 2
    assert "nothing was removed" in _err(capsys)
    assert main(["relays", "remove", "http://old.example:8750", *h]) == 0
    assert home.config()["relays"] == ["https://new.example:8443"]
    assert home.config()["max_clock_skew_seconds"] == 2.5  # other settings kept
    assert main(["relays", "remove", "https://new.example:8443", *h]) == 0
    assert "pinned relay key is forgotten" in capsys.readouterr().out
    assert not home.exists("relay.card") and home.config()["relays"] == []
    assert main(["relays", "add", "ftp://x", *h]) == 2
    assert "must start with http:// or https://" in _err(capsys)
