"""Two circuits: notices/s and send->deliver latency with one relay, two relays, and two
relays of which one is SIGSTOPped, in one run.

One process, one sender desk and one recipient desk (``HotlineClient``), real relay
processes on loopback (tests.relay_harness.RelayProcess). The sender keeps ``window``
notices in flight; a notice counts as delivered when the recipient's ``notices()`` yields
it (verified, decrypted, stored, receipt posted), and it is acknowledged there. Latency is
from the start of ``send`` to that yield (CLOCK_MONOTONIC).

    python -m tests.bench.circuits [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

from client.circuits import RelaySpec
from client.client import HotlineClient
from client.connection import RetryPolicy
from tests.bench.common import percentiles, say
from tests.factory import report
from tests.relay_harness import PASSPHRASE, RelayProcess, make_federation


def _open(home: Path, relays: list[RelayProcess]) -> HotlineClient:
    if len(relays) == 1:
        return HotlineClient.from_home(home, PASSPHRASE, relays=[relays[0].url])
    specs = [RelaySpec(f"r{i}", (r.url,)) for i, r in enumerate(relays)]
    client = HotlineClient.from_home(home, PASSPHRASE, relay_specs=specs,
                                     policy=RetryPolicy(attempts=2, max_delay=1.0))
    client.circuits.ask_timeout_s = 2.0
    return client


async def _measure(homes: dict[str, Path], relays: list[RelayProcess], seconds: float,
                   window: int) -> dict[str, Any]:
    async with _open(homes["us.caisi"], relays) as us, _open(homes["cn.cac"], relays) as cn:
        await cn.fetch()
        started: dict[bytes, float] = {}
        latencies: list[float] = []
        done = asyncio.Event()
        slots = asyncio.Semaphore(window)

        async def receive() -> None:
            async with aclosing(cn.notices()) as live:
                async for n in live:
                    t0 = started.pop(n.notice_id, None)
                    if t0 is not None:
                        latencies.append((time.monotonic() - t0) * 1000)
                        slots.release()
                    await cn.ack(n.notice_id)
                    if done.is_set() and not started:
                        return

        async def send_one() -> None:
            nid = os.urandom(16)  # known before the send: it may arrive before send returns
            started[nid] = time.monotonic()
            await us.send(to=["cn.cac"], severity="high", notice=report(), notice_id=nid)

        receiver = asyncio.create_task(receive())
        t_start = time.monotonic()
        sends = []
        while time.monotonic() - t_start < seconds:
            await slots.acquire()
            sends.append(asyncio.create_task(send_one()))
        done.set()
        await asyncio.gather(*sends)
        try:
            await asyncio.wait_for(receiver, 60)
        except TimeoutError:
            say(f"  {len(started)} notices not delivered within 60 s")
        elapsed = time.monotonic() - t_start
        return {"notices": len(latencies), "seconds": round(elapsed, 2),
                "notices_per_s": round(len(latencies) / elapsed, 1),
                "send_to_deliver_ms": {k: (round(v, 1) if isinstance(v, float) else v)
                                       for k, v in percentiles(latencies).items()}}


def run(seconds: float = 20.0, window: int = 4, workdir: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hotline-circuits-", dir=workdir) as tmp:
        base = Path(tmp)
        homes = make_federation(base, ("us.caisi", "cn.cac"))
        a = RelayProcess.create(base, name="relay-a", relay_id="r0")
        b = RelayProcess.create(base, name="relay-b", relay_id="r1")
        a.start()
        b.start()
        out: dict[str, Any] = {"window": window}
        try:
            for name, relays, stop in (("one_relay", [a], False), ("two_relays", [a, b], False),
                                       ("two_relays_one_stopped", [a, b], True)):
                # Each desk logs in to every relay first (each learns the cards).
                for h in homes.values():
                    async def login(h: Path = h, relays: list[RelayProcess] = relays) -> None:
                        async with _open(h, relays) as c:
                            await c.fetch()
                    asyncio.run(login())
                if stop:
                    b.pause()
                say(f"circuits: {name} ({seconds:g} s, {window} in flight)")
                out[name] = asyncio.run(_measure(homes, relays, seconds, window))
                say(f"  {json.dumps(out[name])}")
                if stop:
                    b.resume()
        finally:
            a.stop()
            b.stop()
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--window", type=int, default=4)
    args = ap.parse_args()
    print(json.dumps(run(args.seconds, args.window), indent=1))


if __name__ == "__main__":
    main()
