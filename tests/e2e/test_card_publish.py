"""A desk set up today can receive today: its card reaches the relay before its first login.

A card is self-certifying (its country's authority signed the desk certificate, the desk's
identity key signed its encryption key), so the relay takes it from any logged-in desk:
the desk itself (``hotline keys publish``) or a sender, from its verified contacts. A
published card never replaces a newer one, and one that does not verify is refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from client.client import HotlineClient, UnknownDesk
from client.home import Home, now_ms
from keys import DeskCard, EkCertificate
from tests.e2e.test_relay_attacks import revocation
from tests.factory import report
from tests.relay_harness import PASSPHRASE, TEST_ENV, RawDesk, RelayProcess
from tests.relay_harness import test_env as fast_kdf

ROOT = Path(__file__).resolve().parents[2]
MSGPACK = {"Content-Type": "application/msgpack"}
ENV = {**os.environ, **TEST_ENV}


def open_desk(federation: dict[str, Path], relay: RelayProcess, name: str) -> HotlineClient:
    return HotlineClient.from_home(federation[name], PASSPHRASE, relays=[relay.url])


def home_card(path: Path) -> bytes:
    with fast_kdf():
        return Home(path).card(now_ms()).encode()


async def test_notice_to_a_desk_that_never_connected_waits_for_it(
        federation: dict[str, Path], relay: RelayProcess) -> None:
    """The sender offers the recipient's card from its contacts; the notice is accepted,
    waits at the relay, and reaches the desk when it first connects."""
    async with open_desk(federation, relay, "us.caisi") as us:
        sent = await us.send(to=["cn.cac"], severity="critical", notice=report())
    assert [e["desk"] for e in relay.events("card.published")] == ["cn.cac"]
    assert relay.events("notice.accepted")
    async with open_desk(federation, relay, "cn.cac") as cn:
        got = await cn.fetch()
    assert [n.notice_id for n in got if hasattr(n, "report")] == [sent.notice_id]


async def test_desk_unknown_to_relay_and_contacts_is_refused_with_what_to_do(
        federation: dict[str, Path], relay: RelayProcess) -> None:
    """Without a contact card the send fails before sealing, saying how to fix it."""
    (federation["us.caisi"] / "contacts" / "cn.cac.card").unlink()
    async with open_desk(federation, relay, "us.caisi") as us:
        with pytest.raises(UnknownDesk, match="hotline contacts add"):
            await us.send(to=["cn.cac"], severity="high", notice=report())
    assert relay.events("notice.accepted") == []


def test_keys_publish_lets_others_send_before_first_connect(
        federation: dict[str, Path], relay: RelayProcess) -> None:
    """``hotline keys publish`` puts the desk's card at the relay; a sender without that
    desk among its contacts can then send to it."""
    out = subprocess.run(
        [sys.executable, "-m", "client.cli.main", "keys", "publish", "--home",
         str(federation["cn.cac"]), "--relay", relay.url],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "holds the card of cn.cac" in out.stdout
    (federation["us.caisi"] / "contacts" / "cn.cac.card").unlink()
    send = subprocess.run(
        [sys.executable, "-m", "client.cli.main", "send", "--home",
         str(federation["us.caisi"]), "--relay", relay.url, "--to", "cn.cac",
         "--severity", "low", "--title", "t", "--body", "b"],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert send.returncode == 0, send.stderr


async def test_card_whose_key_certificate_is_signed_by_another_desk_is_refused(
        federation: dict[str, Path], relay: RelayProcess, http: aiohttp.ClientSession) -> None:
    """A peer publishing cn.cac's certificate with an encryption key that us.caisi
    certified (so that us.caisi could read cn.cac's notices) gets 400 bad_card."""
    us = await RawDesk(http, relay.url, federation["us.caisi"]).login()
    cn_card = DeskCard.decode(home_card(federation["cn.cac"]))
    now = now_ms()
    us_ek = bytes(us.secrets.encryption_keys[0].private_key.public_key)
    forged_ek = EkCertificate.issue(cn_card.desk, us.secrets.identity, us_ek, now,
                                    now + 86_400_000)
    forged = DeskCard(cn_card.cert, (forged_ek,)).encode()
    r = await http.put(relay.url + "/v1/cards/cn.cac", data=forged, headers=MSGPACK | us.auth)
    assert r.status == 400
    assert (await http.get(relay.url + "/v1/cards/cn.cac", headers=us.auth)).status == 404


async def test_card_published_under_another_desks_name_is_refused(
        federation: dict[str, Path], relay: RelayProcess, http: aiohttp.ClientSession) -> None:
    """us.caisi's own valid card put at cn.cac's address is refused (400 bad_card)."""
    us = await RawDesk(http, relay.url, federation["us.caisi"]).login()
    r = await http.put(relay.url + "/v1/cards/cn.cac", data=home_card(federation["us.caisi"]),
                       headers=MSGPACK | us.auth)
    assert r.status == 400
    assert (await http.get(relay.url + "/v1/cards/cn.cac", headers=us.auth)).status == 404


async def test_publishing_needs_a_session(
        federation: dict[str, Path], relay: RelayProcess, http: aiohttp.ClientSession) -> None:
    """An unauthenticated PUT is refused (401): the card store is not open to anyone."""
    r = await http.put(relay.url + "/v1/cards/cn.cac", data=home_card(federation["cn.cac"]),
                       headers=MSGPACK)
    assert r.status == 401


async def test_older_card_published_by_a_peer_does_not_bring_back_a_retired_key(
        federation: dict[str, Path], relay: RelayProcess, http: aiohttp.ClientSession) -> None:
    """After cn.cac rotates its encryption key and logs in, a peer that publishes cn.cac's
    older card gets 409 stale_card, and the relay keeps serving the newer card."""
    old_card = home_card(federation["cn.cac"])
    rotate = subprocess.run(
        [sys.executable, "-m", "client.cli.main", "keys", "rotate", "--home",
         str(federation["cn.cac"])],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert rotate.returncode == 0, rotate.stderr
    new_card = home_card(federation["cn.cac"])
    assert new_card != old_card
    await RawDesk(http, relay.url, federation["cn.cac"]).login()
    us = await RawDesk(http, relay.url, federation["us.caisi"]).login()
    r = await http.put(relay.url + "/v1/cards/cn.cac", data=old_card, headers=MSGPACK | us.auth)
    assert r.status == 409
    served = await http.get(relay.url + "/v1/cards/cn.cac", headers=us.auth)
    assert await served.read() == new_card
    again = await http.put(relay.url + "/v1/cards/cn.cac", data=new_card,
                           headers=MSGPACK | us.auth)
    assert again.status == 200


async def test_card_with_a_revoked_key_is_refused(
        tmp_path: Path, federation: dict[str, Path], relay: RelayProcess,
        http: aiohttp.ClientSession) -> None:
    """Once cn.cac's identity key is revoked, publishing its (otherwise valid) card is 400."""
    us = await RawDesk(http, relay.url, federation["us.caisi"]).login()
    cn = RawDesk(http, relay.url, federation["cn.cac"])
    r = await us.post("/v1/revocations", revocation(tmp_path, "cn", cn.desk, cn.secrets.ik_kid))
    assert r.status == 200
    r2 = await http.put(relay.url + "/v1/cards/cn.cac", data=home_card(federation["cn.cac"]),
                        headers=MSGPACK | us.auth)
    assert r2.status == 400
    assert b"revoked" in await r2.read()
