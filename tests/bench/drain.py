"""Backlog drain: a desk that comes back to N waiting notices, over its stream.

A sender (``HotlineClient``) seals N notices to a recipient that is offline; then the
recipient connects (``events()``: every notice verified, decrypted, stored, its delivery
receipt answered on the stream) and the time until the N-th notice is yielded, receipt
answered, is its drain time. Beside it, the steady rate of the same pair live: the
recipient connected, the sender keeping ``window`` notices in flight, the time from the
first send until the recipient has yielded the last one (receipts answered). A drain
rate below the live rate means the backlog is slowed down by something a live flow
does not meet (e.g. answers stuck behind events). Also reported: the connection's stream
answer timeouts and HTTP fallbacks during the drain (``stream_stats``; None on a client
without it).
"""

from __future__ import annotations

import asyncio
import os
from contextlib import aclosing
from pathlib import Path
from typing import Any

from tests.bench.common import BenchRelay, make_desks, mono, sample_report, say

PASSPHRASE = "test passphrase"
DESKS = ("us.d0", "cn.d0")


def _open(home: Path, url: str) -> Any:
    from client.client import HotlineClient

    return HotlineClient.from_home(home, PASSPHRASE, relays=[url],
                                   on_relay_pinned=lambda card, fpr: None)


def _stats(client: Any) -> dict[str, int] | None:
    s = getattr(client.connection, "stream_stats", None)
    if s is None:
        return None
    return {"answered": s.answered, "answer_timeouts": s.answer_timeouts,
            "http_fallbacks": s.http_fallbacks}


async def _send(sender: Any, to: str, ids: list[bytes], window: int) -> None:
    report = sample_report()
    gate = asyncio.Semaphore(window)

    async def one(nid: bytes) -> None:
        async with gate:
            await sender.send(to=[to], severity="high", notice=report, notice_id=nid)

    await asyncio.gather(*(one(nid) for nid in ids))


async def _receive(recipient: Any, ids: set[bytes], bound_s: float, got: set[bytes]) -> float:
    """Until every notice of ``ids`` was yielded (into ``got``); the time it was done."""
    from client.items import ReceivedNotice

    async with aclosing(recipient.events()) as items, asyncio.timeout(bound_s):
        async for item in items:
            # A notice yielded before and not processed comes again first: not counted.
            if isinstance(item, ReceivedNotice) and item.notice_id in ids:
                got.add(item.notice_id)
                if len(got) == len(ids):
                    break
    return mono()


def _ids(n: int) -> list[bytes]:
    return [os.urandom(16) for _ in range(n)]


async def _live(sender: Any, recipient: Any, n: int, window: int, bound_s: float
                ) -> dict[str, Any]:
    """The recipient connected, the sender keeping ``window`` notices in flight: the time
    from the first send until the recipient yielded the last notice (receipt answered)."""
    ids = _ids(n)
    seen: set[bytes] = set()
    receiving = asyncio.create_task(_receive(recipient, set(ids), bound_s, seen))
    await asyncio.sleep(0.5)  # the stream is open
    t0 = mono()
    await _send(sender, "cn.d0", ids, window)
    try:
        t1 = await receiving
    except TimeoutError:
        t1 = mono()
    got = len(seen)
    say(f"drain: live {got} of {n} notices in {t1 - t0:.1f} s: {got / (t1 - t0):.1f} "
        f"notices/s (sender window {window})")
    return {"notices": n, "received": got, "seconds": t1 - t0,
            "notices_per_s": got / (t1 - t0) if got == n else None}


async def _run(homes: dict[str, Path], url: str, sizes: list[int], live_n: int,
               window: int, bound_s: float) -> dict[str, Any]:
    sender, recipient = _open(homes["us.d0"], url), _open(homes["cn.d0"], url)
    await sender.start()
    await recipient.start()
    await sender.fetch()
    await recipient.fetch()  # both logged in: the relay knows their cards
    out: dict[str, Any] = {"window": window, "drains": []}
    try:
        # Live first: the steady rate of this pair on this relay (live_n 0: not measured).
        live = await _live(sender, recipient, live_n, window, bound_s) if live_n else None
        out["live"] = live
        live_rate = live["notices_per_s"] if live else None
        for n in sizes:
            f0 = mono()
            ids = _ids(n)
            await _send(sender, "cn.d0", ids, 32)
            fill_s = mono() - f0
            before = _stats(recipient)
            drained: set[bytes] = set()
            d0 = mono()
            try:
                d1 = await _receive(recipient, set(ids), bound_s, drained)
            except TimeoutError:
                d1 = mono()
            got = len(drained)
            seconds = d1 - d0
            after = _stats(recipient)
            stream = ({k: after[k] - before[k] for k in after}
                      if after is not None and before is not None else None)
            row = {"notices": n, "fill_s": fill_s, "received": got, "seconds": seconds,
                   "received_per_s": got / seconds if seconds > 0 else None,
                   "notices_per_s": n / seconds if got == n else None,
                   "vs_live": (n / seconds / live_rate) if got == n and live_rate else None,
                   "stream": stream}
            out["drains"].append(row)
            say(f"drain: {n} waiting notices (filled in {fill_s:.0f} s) drained in "
                f"{seconds:.1f} s: {row['notices_per_s'] or 0:.1f} notices/s "
                f"({row['vs_live'] or 0:.2f} x live); stream {row['stream']}"
                if got == n else f"drain: {n} waiting notices: only {got} received in "
                f"{bound_s:.0f} s (the bound): {got / seconds:.2f} notices/s; stream "
                f"{row['stream']}")
    finally:
        for c in (sender, recipient):
            await c.close()
    return out


def drain(base: Path, sizes: list[int], *, live_n: int = 1000, window: int = 8,
          bound_s: float = 600.0) -> dict[str, Any]:
    """Drain rates of ``sizes`` waiting notices beside the live rate of the same pair."""
    say(f"drain: backlogs of {', '.join(map(str, sizes))} notices to one desk over its "
        f"stream, beside {live_n} live")
    homes = make_desks(base / "drain", DESKS)
    relay = BenchRelay(base / "drain").init().start()
    try:
        return asyncio.run(_run(homes, relay.url, sizes, live_n, window, bound_s))
    finally:
        relay.stop()
