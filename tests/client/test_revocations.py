"""Revocations a relay serves reach the client's trust only with the right authority's
signature: a relay can withhold a revocation (the home keeps what it learned) but never
make one up."""

from __future__ import annotations

from pathlib import Path

from client.client import HotlineClient, NoticeRejected, ReceivedNotice
from client.home import Home
from keys import Revocation, TrustStore
from tests.client.fakes import FakeConnection, FakeRelay
from tests.client.test_receive import _push_notice, _seal
from tests.factory import NOW, Federation


def _client(fed: Federation, relay: FakeRelay, desk: str, home: Path) -> HotlineClient:
    assert fed.root is not None
    return HotlineClient(fed.desks[desk].secrets, Home(home),
                         connection=FakeConnection(relay, desk),  # type: ignore[arg-type]
                         trust=TrustStore(fed.root), card=fed.desks[desk].card,
                         clock=lambda: NOW)


async def test_hostile_relay_serving_a_revocation_of_cn_cac_signed_by_the_us_authority_is_refused(
        tmp_path: Path, fed: Federation, fake_relay: FakeRelay) -> None:
    """A relay serves a revocation of cn.cac signed by the us authority next to a genuine
    one of cn.mss (signed by cn): the genuine one applies and is kept, the forged one is
    dropped, so cn.cac's notices are still shown and cn.mss's refused."""
    cac, mss = fed.desks["cn.cac"], fed.desks["cn.mss"]
    forged = Revocation.issue(cac.desk, cac.card.cert.key_id, fed.authorities["us"],  # type: ignore[index]
                              NOW, "says the us authority")
    genuine = Revocation.issue(mss.desk, mss.card.cert.key_id, fed.authorities["cn"],  # type: ignore[index]
                               NOW, "key compromised")
    fake_relay.revocations = [forged.encode(), genuine.encode()]
    us = _client(fed, fake_relay, "us.caisi", tmp_path / "us.caisi")
    try:
        from_cac = _seal(fed, "cn.cac", "us.caisi")
        from_mss = _seal(fed, "cn.mss", "us.caisi")
        _push_notice(fake_relay, "us.caisi", from_cac)
        _push_notice(fake_relay, "us.caisi", from_mss)
        items = await us.fetch()

        assert us.trust.is_revoked(mss.desk, mss.card.cert.key_id)
        assert not us.trust.is_revoked(cac.desk, cac.card.cert.key_id)
        kept = [rev for _, rev in us.home.revocations()]
        assert [(r.desk, r.ik_kid) for r in kept] == [(mss.desk, mss.card.cert.key_id)]
        shown = [i.notice_id for i in items if isinstance(i, ReceivedNotice)]
        refused = [i.notice_id for i in items if isinstance(i, NoticeRejected)]
        assert shown == [from_cac.notice_id]
        assert refused == [from_mss.notice_id]
    finally:
        await us.close()
    # A later process of the same home holds the kept revocation, and only that one.
    trust = Home(tmp_path / "us.caisi").revocations()
    assert [r.desk for _, r in trust] == ["cn.mss"]
