"""``hotline relays add|list|remove`` against two real relays, and the migration of a home
of the one-relay layout."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from client.circuits import RelayBook
from client.cli.main import main
from client.home import Home
from keys.receipts import RelayCard
from tests.relay_harness import RelayProcess
from tests.relay_harness import test_env as harness_env


@pytest.fixture
def two(tmp_path: Path, federation: dict[str, Path]):  # type: ignore[no-untyped-def]
    us = RelayProcess.create(tmp_path, name="relay-us", relay_id="us-relay")
    cn = RelayProcess.create(tmp_path, name="relay-cn", relay_id="cn-relay")
    us.start()
    cn.start()
    try:
        yield us, cn
    finally:
        us.stop()
        cn.stop()


def fetch(url: str) -> RelayCard:
    with urllib.request.urlopen(url + "/v1/relay") as r:  # noqa: S310 - loopback test relay
        return RelayCard.decode(r.read())


def run(*argv: str) -> int:
    with harness_env():
        return main(list(argv))


def test_relays_add_list_remove_pin_each_relay(
        federation: dict[str, Path], two: tuple[RelayProcess, RelayProcess],
        capsys: pytest.CaptureFixture[str]) -> None:
    us, cn = two
    home = str(federation["us.caisi"])
    assert run("relays", "add", us.url, "--home", home) == 0
    assert run("relays", "add", cn.url, "--home", home) == 0
    # Another URL of the same relay (same key): a failover URL, not a third relay.
    assert run("relays", "add", us.url.replace("127.0.0.1", "localhost"), "--home", home) == 0
    capsys.readouterr()
    assert run("relays", "list", "--json", "--home", home) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["relay"], len(r["urls"])) for r in rows] == [("us-relay", 2), ("cn-relay", 1)]
    assert all(r["fingerprint"] for r in rows)
    pins = {p.name for p in (federation["us.caisi"] / "relays").iterdir()}
    assert pins == {"us-relay.card", "cn-relay.card"}
    assert run("relays", "remove", "cn-relay", "--home", home) == 0
    assert [s.relay_id for s in RelayBook(Home(federation["us.caisi"])).load()] == ["us-relay"]
    assert not (federation["us.caisi"] / "relays" / "cn-relay.card").exists()


@pytest.mark.parametrize("layout", ["one relay", "two relays"])
def test_relays_add_refuses_an_impostor_under_a_pinned_relay_id(
        tmp_path: Path, federation: dict[str, Path], two: tuple[RelayProcess, RelayProcess],
        capsys: pytest.CaptureFixture[str], layout: str) -> None:
    """A relay presenting another key under a pinned relay's id is refused (an impostor
    cannot slip in as another URL of a known relay), whichever layout the home has."""
    us, cn = two
    impostor = RelayProcess.create(tmp_path, name="relay-impostor", relay_id="us-relay")
    impostor.start()
    try:
        home = federation["us.caisi"]
        assert run("relays", "add", us.url, "--home", str(home)) == 0
        if layout == "two relays":
            assert run("relays", "add", cn.url, "--home", str(home)) == 0
        before = RelayBook(Home(home)).load() if layout == "two relays" else None
        capsys.readouterr()
        assert run("relays", "add", impostor.url, "--home", str(home)) != 0
        assert "not the pinned" in capsys.readouterr().err
        if before is not None:
            assert RelayBook(Home(home)).load() == before  # nothing added
        else:
            assert not (home / "relays.json").exists()  # nothing half-done
        assert impostor.url not in json.dumps(Home(home).config())
    finally:
        impostor.stop()


def test_one_relay_home_is_migrated_with_its_pin(
        federation: dict[str, Path], two: tuple[RelayProcess, RelayProcess]) -> None:
    us, cn = two
    home = Home(federation["us.caisi"])
    card = fetch(us.url)
    home.write("relay.card", card.encode())
    cfg = home.file("config.toml")
    cfg.write_text(cfg.read_text() + f'\nrelays = ["{us.url}"]\n')
    assert run("relays", "add", cn.url, "--home", str(home.path)) == 0
    specs = RelayBook(home).load()
    assert [(s.relay_id, s.urls) for s in specs] == [("us-relay", (us.url,)),
                                                     ("cn-relay", (cn.url,))]
    assert (home.path / "relays" / "us-relay.card").read_bytes() == card.encode()
