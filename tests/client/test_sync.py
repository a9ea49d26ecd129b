"""The synchronous facade: the same client, driven from plain scripts."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.client import HotlineClient
from client.home import Home
from client.sync import HotlineSync
from keys.errors import UsageError
from tests.client.fakes import FakeConnection, FakeRelay
from tests.factory import NOW, Federation, report


def _sync(tmp_path: Path, fed: Federation, relay: FakeRelay, desk: str) -> HotlineSync:
    return HotlineSync(HotlineClient(
        fed.desks[desk].secrets, Home(tmp_path / desk), trust=fed.trust,
        connection=FakeConnection(relay, desk), clock=lambda: NOW))  # type: ignore[arg-type]


def test_script_sends_reads_and_acknowledges(tmp_path: Path) -> None:
    """A notice stays in the inbox until acknowledged, then the sender sees it acked."""
    fed = Federation.create()
    relay = FakeRelay(fed)
    with _sync(tmp_path, fed, relay, "us.caisi") as us, _sync(tmp_path, fed, relay,
                                                               "cn.cac") as cn:
        sent = us.send(to=["cn.cac"], severity="high", notice=report(title="sync title"))
        assert [n.report.title for n in cn.inbox()] == ["sync title"]
        assert [n.notice_id for n in cn.inbox(fetch=False)] == [sent.notice_id]
        cn.ack(sent.notice_id, "thanks")
        assert cn.inbox() == [] and len(cn.inbox(include_acked=True)) == 1
        view = us.status(sent.notice_id)
        (r,) = view.recipients
        assert view.verified and r.acknowledged is not None and r.acknowledged.message == "thanks"
    with pytest.raises(UsageError, match="closed"):
        us.status(sent.notice_id)


async def test_refuses_to_run_inside_an_event_loop(tmp_path: Path) -> None:
    fed = Federation.create()
    client = HotlineClient(fed.desks["us.caisi"].secrets, Home(tmp_path / "us"),
                           trust=fed.trust, connection=FakeConnection(FakeRelay(fed), "us.caisi"),  # type: ignore[arg-type]
                           clock=lambda: NOW)
    with pytest.raises(UsageError, match="HotlineClient"):
        HotlineSync(client)
    await client.close()
