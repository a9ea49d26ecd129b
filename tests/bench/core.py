"""The relay's core without the network: where the relay's CPU per notice goes.

The same :class:`relay.core.Relay` and :class:`relay.store.sqlite.SqliteStore` the server
runs (durable: WAL, synchronous=FULL, group commit in the writer thread), driven in this
process: per notice ``Relay.submit`` of a sealed envelope, then ``Relay.confirm`` of the
recipient's receipt and of its ack, with as many notices in flight as the e2e benchmark
keeps (3 senders x window 8). Everything the relay does per notice is here (decoding,
signature checks, rate and pending limits, the recipient's card, attestations, deadlines,
structured log lines, metrics) except HTTP, WebSocket frames and the pushes of events.

Comparing three figures of one run tells what costs what:

* the floor (``floor.py``): the unavoidable primitives;
* this core: the relay's own logic on top of them;
* the e2e relay CPU: the core plus the network (aiohttp, frames, pushes, event reads).

Clients' work (sealing, signing receipts and acks) is done before the clock starts.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from tests.bench.common import say

IN_FLIGHT = 24
LIMITS = """
[limits]
notices_per_minute = 100000000
confirmations_per_minute = 100000000
bytes_per_minute = 100000000000000
max_pending_per_desk = 100000000
"""


def _thread_cpu() -> dict[int, float]:
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


async def _run(n: int, workdir: Path) -> dict[str, Any]:
    from keys import Confirmation, seal
    from relay import logs
    from tests.factory import NOW, Federation, report
    from tests.relay.inproc import InProcessRelay

    log_file = open(workdir / "core-relay.log", "w")
    logs.configure("info", log_file)
    fed = Federation.create()
    relay = await InProcessRelay(workdir / "core-relay", fed, LIMITS).open()
    try:
        sender, recipient = "us.caisi", "cn.cac"
        to = [fed.verified(recipient, NOW)]
        me = fed.desks[recipient].secrets
        work = []
        for _ in range(n):
            env = seal(report(), sender=fed.desks[sender].secrets, recipients=to,
                       severity="high", now=NOW)
            receipt, ack = (Confirmation.create(kind, notice_id=env.notice_id,
                                                digest=env.digest, sender=env.header.sender,
                                                me=me, at=NOW).encode()
                            for kind in ("receipt", "ack"))
            work.append((env.raw, receipt, ack))
        s_session, r_session = relay.session(sender), relay.session(recipient)
        core = relay.relay
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def one(item: tuple[bytes, bytes, bytes]) -> None:
            async with slots:
                await core.submit(s_session, item[0])
                await core.confirm(r_session, item[1])
                await core.confirm(r_session, item[2])

        main = os.getpid()
        c0, t0 = _thread_cpu(), time.perf_counter()
        await asyncio.gather(*(one(item) for item in work))
        t1, c1 = time.perf_counter(), _thread_cpu()
    finally:
        await relay.close()
        log_file.close()
    main_s = c1.get(main, 0.0) - c0.get(main, 0.0)
    other_s = sum(v - c0.get(k, 0.0) for k, v in c1.items() if k != main)
    out = {
        "notices": n, "in_flight": IN_FLIGHT, "seconds": t1 - t0,
        "notices_per_s": n / (t1 - t0),
        "cpu_ms_per_notice": (main_s + other_s) / n * 1000,
        "main_thread_ms_per_notice": main_s / n * 1000,
        "other_threads_ms_per_notice": other_s / n * 1000,
    }
    say(f"  relay core (no network): {out['cpu_ms_per_notice']:.3f} ms CPU per notice "
        f"(event loop {out['main_thread_ms_per_notice']:.3f}, writer "
        f"{out['other_threads_ms_per_notice']:.3f}), {out['notices_per_s']:.0f} notices/s")
    return out


def run(n: int, workdir: Path) -> dict[str, Any]:
    say(f"relay core: {n} notices through Relay.submit/confirm in this process "
        f"({IN_FLIGHT} in flight)")
    workdir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_run(n, workdir))
