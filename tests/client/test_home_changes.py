"""A running client follows its home folder: a key rotated under it opens the next notice
and the new card reaches the relay; a notice sealed to a key it does not hold is kept,
shown with the reason, never receipted, and opened once the key is there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nacl.public
import pytest

from client.client import HotlineClient
from client.home import FAST_KDF_ENV, Home
from client.items import NoticeRejected, NoticeUnopened, ReceivedNotice
from keys import DeskCard, DeskSecrets, EkCertificate, EncryptionKeyPair, seal
from keys.trust import FederationRoot
from tests.client.fakes import FakeConnection, FakeRelay
from tests.client.test_receive import _push_notice
from tests.factory import DAY, NOW, Federation, report

PASSPHRASE = b"test passphrase"


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(FAST_KDF_ENV, "1")
    yield


def _desk_home(fed: Federation, desk: str, path: Path) -> Home:
    """A desk's home on disk, as 'keys init' + 'keys install' + 'federation pin' leave it."""
    home = Home(path)
    d = fed.desks[desk]
    assert fed.root is not None
    home.write_desk_secrets(d.secrets, PASSPHRASE)
    home.write_ek_certs(list(d.card.eks))
    home.write("desk.cert", d.card.cert.encode())
    home.write("root", fed.root.encode())
    home.write_config({"desk": desk})
    return home


def _client(home: Home, relay: FakeRelay, desk: str) -> HotlineClient:
    """Opened from the home as from_home does: keys from desk.key, trust from root."""
    return HotlineClient(home.desk_secrets(PASSPHRASE), home,
                         connection=FakeConnection(relay, desk),  # type: ignore[arg-type]
                         clock=lambda: NOW,
                         reload_secrets=lambda: home.desk_secrets(PASSPHRASE))


def _new_key(fed: Federation, desk: str) -> tuple[EncryptionKeyPair, EkCertificate]:
    sk = nacl.public.PrivateKey.generate()
    cert = EkCertificate.issue(fed.desks[desk].desk, fed.desks[desk].secrets.identity,
                               bytes(sk.public_key), NOW - 1000, NOW + 30 * DAY)
    return EncryptionKeyPair(sk, NOW - 1000, NOW + 30 * DAY, NOW + 60 * DAY), cert


def _rotate(home: Home, pair: EncryptionKeyPair, cert: EkCertificate) -> None:
    """What 'hotline keys rotate' writes: the new key first, the old ones kept."""
    old = home.desk_secrets(PASSPHRASE)
    home.write_desk_secrets(DeskSecrets(old.desk, old.identity, (pair, *old.encryption_keys)),
                            PASSPHRASE)
    home.write_ek_certs([cert])


def _seal_to(fed: Federation, card: DeskCard, sender: str = "us.caisi") -> bytes:
    assert fed.trust is not None
    env = seal(report(), sender=fed.desks[sender].secrets,
               recipients=[fed.trust.verify_card(card, NOW)], severity="critical", now=NOW)
    return env.raw


async def test_key_rotated_while_running_opens_the_next_notice_and_reaches_the_relay(
        tmp_path: Path, fed: Federation, fake_relay: FakeRelay) -> None:
    """'keys rotate' under a running client: the next notice, sealed to the new key,
    opens and is receipted (no restart), and the relay is given the new card."""
    home = _desk_home(fed, "cn.cac", tmp_path / "cn.cac")
    cn = _client(home, fake_relay, "cn.cac")
    try:
        assert await cn.fetch() == []
        pair, cert = _new_key(fed, "cn.cac")
        _rotate(home, pair, cert)
        new_card = DeskCard(fed.desks["cn.cac"].card.cert, (cert,))
        from keys import Envelope

        env = Envelope.decode(_seal_to(fed, new_card))
        _push_notice(fake_relay, "cn.cac", env)
        items = await cn.fetch()
        assert [i.notice_id for i in items if isinstance(i, ReceivedNotice)] == [env.notice_id]
        assert (env.notice_id, "cn.cac", "receipt") in fake_relay.confirmations
        await cn.fetch()  # the next look gives the relay the new card
        assert cn.connection.published == [new_card.encode()]  # type: ignore[attr-defined]
        assert fake_relay.cards["cn.cac"] == new_card.encode()
    finally:
        await cn.close()


async def test_notice_sealed_to_a_key_not_held_is_kept_shown_unreceipted_then_opened(
        tmp_path: Path, fed: Federation, fake_relay: FakeRelay) -> None:
    """The relay delivers a notice sealed to a key this desk does not hold (yet): it is
    kept with the reason, listed, refused by 'show' with the reason, not receipted, and
    the stream goes on; a restarted client still holds it; once the key is in the home it
    opens, is receipted and leaves the unopened list."""
    from keys import Envelope

    home = _desk_home(fed, "cn.cac", tmp_path / "cn.cac")
    pair, cert = _new_key(fed, "cn.cac")
    env = Envelope.decode(_seal_to(fed, DeskCard(fed.desks["cn.cac"].card.cert, (cert,))))
    _push_notice(fake_relay, "cn.cac", env)
    cn = _client(home, fake_relay, "cn.cac")
    try:
        (item,) = await cn.fetch()
        assert isinstance(item, NoticeRejected) and item.kept
        assert item.code == "unknown_encryption_key"
        (kept,) = cn.unopened()
        assert kept.notice_id == env.notice_id and kept.sender == "us.caisi"
        assert kept.severity == "critical" and "does not hold" in kept.reason
        with pytest.raises(NoticeUnopened, match=r"cannot be opened: .*does not hold"):
            cn.received(env.notice_id.hex())
        assert fake_relay.confirmations == {}  # no receipt: nobody has read it
        assert cn.state.cursor() == fake_relay.seq  # the stream is not stalled
    finally:
        await cn.close()

    cn = _client(home, fake_relay, "cn.cac")  # a restart: still kept, still unopened
    try:
        assert [u.notice_id for u in cn.unopened()] == [env.notice_id]
        assert await cn.fetch() == []
        assert fake_relay.confirmations == {}
        _rotate(home, pair, cert)  # the key arrives (restored, or rotated in)
        items = await cn.fetch()
        assert [i.notice_id for i in items if isinstance(i, ReceivedNotice)] == [env.notice_id]
        assert cn.unopened() == []
        assert cn.received(env.notice_id).report == report()
        assert (env.notice_id, "cn.cac", "receipt") in fake_relay.confirmations
    finally:
        await cn.close()


async def test_running_client_picks_up_a_newly_pinned_root_and_new_contacts(
        tmp_path: Path, fed: Federation, fake_relay: FakeRelay) -> None:
    """A root pinned (and a contact added) under a running client applies without a
    restart: a desk whose country the new root no longer lists is refused at once."""
    home = _desk_home(fed, "cn.cac", tmp_path / "cn.cac")
    cn = _client(home, fake_relay, "cn.cac")
    try:
        assert fed.root is not None
        assert cn.refresh_home() == ()
        assert (await cn.card_of("us.caisi")).desk == "us.caisi"
        cn_key = fed.authorities["cn"]  # type: ignore[index]
        only_cn = FederationRoot.create(
            2, {"cn": bytes(cn_key.verify_key)}, NOW - DAY, NOW + 300 * DAY,  # type: ignore[dict-item]
        ).signed_by("cn", cn_key)  # type: ignore[arg-type]
        home.write("root", only_cn.encode())
        home.write("contacts/cn.mss.card", fed.desks["cn.mss"].card.encode())
        assert set(cn.refresh_home()) == {"root", "contacts"}
        assert cn.trust.root.version == 2
        from keys.errors import HotlineError

        with pytest.raises(HotlineError):
            await cn.card_of("us.caisi")
    finally:
        await cn.close()


async def test_notice_sealed_to_a_key_not_held_makes_the_client_read_its_keys_again(
        tmp_path: Path, fed: Federation, fake_relay: FakeRelay) -> None:
    """The home's change went unnoticed (a copy that kept the files' times, a coarse
    clock): a notice sealed to a key the client does not hold makes it read its keys
    again, and the notice opens."""
    from keys import Envelope

    home = _desk_home(fed, "cn.cac", tmp_path / "cn.cac")
    cn = _client(home, fake_relay, "cn.cac")
    try:
        pair, cert = _new_key(fed, "cn.cac")
        _rotate(home, pair, cert)
        cn._keys_read = home.version().keys  # as if the change had been seen already
        env = Envelope.decode(_seal_to(fed, DeskCard(fed.desks["cn.cac"].card.cert, (cert,))))
        _push_notice(fake_relay, "cn.cac", env)
        items = await cn.fetch()
        assert [i.notice_id for i in items if isinstance(i, ReceivedNotice)] == [env.notice_id]
        assert cn.unopened() == []
    finally:
        await cn.close()
