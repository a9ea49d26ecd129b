"""Streams read new events from the hub's memory: it must always answer exactly what the
store answers, or say it does not know.

The real Relay, SqliteStore and Escalator in this process (a manual clock): notices,
receipts, acks, replies, escalations and resolutions are committed in random orders and
batches while streams subscribe and leave, and after every step each desk's events are
read both ways from many cursors.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keys.frames import Event
from keys.report import Attachment
from relay import hub as hub_mod
from relay.hub import Hub
from relay.policy import MINUTE
from tests.factory import Federation
from tests.relay.inproc import InProcessRelay

US, CN, MSS, NSC = "us.caisi", "cn.cac", "cn.mss", "us.nsc"
DESKS = (US, CN, MSS, NSC)
TOML = """
[relay]
id = "test-relay"
[limits]
notices_per_minute = 100000
confirmations_per_minute = 100000
[policy.critical]
ack_window = "1m"
response_window = "3m"
repeat_every = "1m"
max_level = 3
"""


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    r = await InProcessRelay(tmp_path / "relay", Federation.create(desks=DESKS), TOML).open()
    yield r
    await r.close()


def _ev(seq: int) -> Event:
    return Event(seq, "notice", bytes(16), envelope=b"x" * 10, attestation=b"a",
                 signer_cert=b"c")


def test_memory_answers_only_from_where_it_is_complete() -> None:
    """Events of a desk with no stream are not kept; keeping starts with the first event
    after a stream opens; a cursor before that (or before what was let go) gets None."""
    hub = Hub()
    hub.committed([(US, _ev(5))])
    assert hub.recent(US, 0, 10) is None
    with hub.subscribe(US):
        hub.committed([(CN, _ev(6)), (US, _ev(9)), (US, _ev(12))])
        assert hub.recent(US, 4, 10) is None  # seq 5 was committed before keeping began
        assert [e.seq for e in hub.recent(US, 8, 10) or []] == [9, 12]
        assert [e.seq for e in hub.recent(US, 9, 10) or []] == [12]
        assert hub.recent(US, 12, 10) == []
        assert [e.seq for e in hub.recent(US, 8, 1) or []] == [9]
        assert hub.recent(CN, 0, 10) is None  # no stream: nothing kept
        hub.committed([(US, _ev(13)), (US, None)])  # an event not handed over (large)
        assert hub.recent(US, 13, 10) is None
        hub.committed([(US, _ev(15))])
        assert hub.recent(US, 13, 10) is None  # seq 14 was not handed over
        assert [e.seq for e in hub.recent(US, 14, 10) or []] == [15]
        hub.committed(None)  # the store could not read a batch back: forget everything
        assert hub.recent(US, 15, 10) is None
        hub.committed([(US, _ev(20))])
        assert [e.seq for e in hub.recent(US, 19, 10) or []] == [20]
    assert hub.recent(US, 19, 10) is None  # the last stream left: dropped


def test_memory_lets_old_events_go_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the count or byte bound the oldest events are let go, and a cursor before
    them gets None (the store answers) rather than a stream with a hole."""
    monkeypatch.setattr(hub_mod, "RECENT_EVENTS", 3)
    hub = Hub()
    with hub.subscribe(US):
        hub.committed([(US, _ev(s)) for s in range(10, 15)])  # 10 and 11 let go
        assert hub.recent(US, 10, 10) is None
        assert [e.seq for e in hub.recent(US, 11, 10) or []] == [12, 13, 14]
        assert [e.seq for e in hub.recent(US, 12, 10) or []] == [13, 14]
        monkeypatch.setattr(hub_mod, "RECENT_BYTES", 1)
        hub.committed([(US, _ev(15))])
        assert hub.recent(US, 14, 10) is None
        assert hub.recent(US, 15, 10) == []


async def test_streams_from_memory_match_the_store(relay: InProcessRelay) -> None:
    """Random traffic (notices to one or two desks, receipts, acks, replies, escalations
    and their resolution, commits in batches) with streams opening and closing: after
    every step, every desk's events after many cursors are the same from memory as from
    the store."""
    rng = random.Random(20261127)
    core = relay.relay
    subs: dict[str, object] = {}
    sent: list[tuple[object, tuple[str, ...]]] = []
    from_memory = 0
    reads = 0

    def check() -> None:
        nonlocal from_memory, reads
        for desk in DESKS:
            # As the relay serves them: with their statements' log leaf indices.
            stored = core.tlog.annotate(relay.store.events_after(desk, 0, 10_000))
            cursors = [0] + [e.seq for e in stored] + [e.seq - 1 for e in stored]
            for cursor in rng.sample(cursors, min(12, len(cursors))):
                after = [e for e in stored if e.seq > cursor]
                got, more = core.events_after(desk, cursor)
                assert (got, more) == (after[:200], len(after) > 200), (desk, cursor)
                reads += 1
                if core.hub.recent(desk, cursor, 200) is not None:
                    from_memory += 1

    for _ in range(120):
        step = rng.random()
        if step < 0.15:
            desk = rng.choice(DESKS)
            if desk in subs:
                subs.pop(desk).__exit__(None, None, None)  # type: ignore[attr-defined]
            else:
                subs[desk] = core.hub.subscribe(desk)
        elif step < 0.5:
            sender = rng.choice(DESKS)
            to = tuple(rng.sample([d for d in DESKS if d != sender], rng.choice((1, 2))))
            # Now and then a notice too large to be handed over (its streams read it
            # from the store).
            big = (Attachment("dump.bin", "application/octet-stream", bytes(70_000)),)
            batch = [relay.send(sender, *to, attachments=big if rng.random() < 0.1 else ())
                     for _ in range(rng.choice((1, 1, 3)))]
            for env in await asyncio.gather(*batch):
                sent.append((env, to))
        elif step < 0.85 and sent:
            env, to = rng.choice(sent)
            kinds = rng.choice((["receipt"], ["ack"], ["receipt", "ack"]))
            jobs = [relay.confirm(kind, desk, env) for desk in to for kind in kinds]
            for result in await asyncio.gather(*jobs, return_exceptions=True):
                # A receipt after the same desk's ack is refused; that is not this test.
                assert not isinstance(result, AssertionError)
        elif step < 0.92 and sent:
            env, to = rng.choice(sent)
            await relay.send(to[0], env.header.sender, in_reply_to=env.notice_id)
        else:
            await relay.advance(rng.choice((1, 2)) * MINUTE)
        check()
    # Both ways were compared many times (most cursors drawn lie before what is kept).
    assert reads > 1000 and from_memory > 200, (reads, from_memory)
    for sub in subs.values():
        sub.__exit__(None, None, None)  # type: ignore[attr-defined]


def test_memory_pages_are_cut_by_bytes_like_store_pages() -> None:
    """A read from memory stops before the page byte budget (at least one event), and says
    whether more kept events follow, exactly as the store's pages do."""
    hub = Hub()
    with hub.subscribe(US):
        big = [Event(seq, "notice", bytes(16), envelope=b"x" * 40_000, attestation=b"a",
                     signer_cert=b"c") for seq in (1, 2, 3)]
        hub.committed([(US, e) for e in big])
        page = hub.recent_page(US, 0, 10, 100_000)
        assert page is not None
        assert ([e.seq for e in page[0]], page[1]) == ([1, 2], True)
        page = hub.recent_page(US, 0, 10, 1_000)  # smaller than one event: it comes alone
        assert page is not None
        assert ([e.seq for e in page[0]], page[1]) == ([1], True)
        page = hub.recent_page(US, 2, 10, 100_000)
        assert page is not None
        assert ([e.seq for e in page[0]], page[1]) == ([3], False)


async def test_store_pages_are_cut_by_bytes_and_never_stall(relay: InProcessRelay) -> None:
    """An inbox of notices larger than the page budget is read one notice per page, each
    page's cursor moving on; a budget of several notices takes several at once."""
    envs = [await relay.send(US, CN, attachments=(
        Attachment("a.bin", "application/octet-stream", b"\x01" * 30_000),)) for _ in range(3)]
    store = relay.relay.store
    cursor, pages = 0, []
    while True:
        events, more = store.events_page(CN, cursor, 500, 10_000)
        pages.append([e.notice_id for e in events])
        cursor = events[-1].seq
        if not more:
            break
    assert pages == [[e.notice_id] for e in envs]
    events, more = store.events_page(CN, 0, 500, 1 << 20)
    assert [e.notice_id for e in events] == [e.notice_id for e in envs] and not more
