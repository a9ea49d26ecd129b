"""Many idle desk WebSockets: the relay's memory, and the push latency to one of them.

Creating 1,000 certified desks is slow (every desk home learns every other desk's card),
so the 1,000 streams belong to a few desks: the relay runs with
``HOTLINE_RELAY_LIMITS_MAX_STREAMS_PER_DESK=1000``. One stream belongs to a desk of its
own (``cn.target``) with 999 idle streams of other desks beside it; a sender posts
notices to ``cn.target`` one at a time and the time from the post to the event frame on
that stream is the push latency. Every socket has a reader (answering the relay's
heartbeat pings); all must still be open at the end.
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.common import BenchRelay, bench_env, mono, percentiles, proc_cpu_s, say

TARGET = "cn.target"
SENDER = "us.push"


def idle_desks(n: int) -> tuple[str, ...]:
    return tuple(f"cn.idle{i}" for i in range(n))


@dataclass(frozen=True)
class SockSpec:
    relay_url: str
    homes: dict[str, str]
    streams: dict[str, int]  # desk -> streams to open
    with_sender: bool
    pushes: int
    push_interval_s: float
    hold_s: float


async def _open_streams(spec: SockSpec, ready: Any, go: Any, results: Any) -> None:
    import aiohttp

    from client.home import Home
    from keys import seal
    from keys.frames import decode_relay_message
    from tests.bench.common import sample_report, wait_mp_event
    from tests.relay_harness import RawDesk, now_ms

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        desks = {d: await RawDesk(http, spec.relay_url, Path(spec.homes[d])).login()
                 for d in spec.streams}
        arrivals: dict[bytes, float] = {}
        closed: list[str] = []
        socks: list[Any] = []
        for d, n in spec.streams.items():
            for _ in range(n):
                ws = await http.ws_connect(spec.relay_url + "/v1/stream",
                                           params={"after": "0"}, headers=desks[d].auth,
                                           heartbeat=None, autoping=True)
                socks.append((d, ws))

        async def read(d: str, ws: Any) -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY and d == TARGET:
                    frame = decode_relay_message(msg.data)
                    if frame["type"] == "event" and frame["event"] is not None:
                        arrivals.setdefault(frame["event"].notice_id, mono())
            closed.append(f"{d}: closed with {ws.close_code}")

        readers = [asyncio.create_task(read(d, ws)) for d, ws in socks]
        assert len(readers) == len(socks)
        ready.put(len(socks))
        pushes: list[tuple[float, float, float | None]] = []
        if not await wait_mp_event(go, 300):
            raise RuntimeError("no go signal")
        if spec.with_sender:
            now = now_ms()
            sender = await RawDesk(http, spec.relay_url, Path(spec.homes[SENDER])).login()
            trust = Home(Path(spec.homes[SENDER])).trust(now)
            target = trust.verify_card(Home(Path(spec.homes[TARGET])).card(now), now)
            report = sample_report()
            bodies = [seal(report, sender=sender.secrets, recipients=[target], severity="high",
                           now=now_ms()) for _ in range(spec.pushes)]
            for env in bodies:
                await asyncio.sleep(spec.push_interval_s)
                t0 = mono()
                r = await sender.post("/v1/notices", env.raw)
                t1 = mono()
                if r.status not in (200, 201):
                    raise RuntimeError(f"post answered {r.status}")
                for _ in range(200):
                    if env.notice_id in arrivals:
                        break
                    await asyncio.sleep(0.001)
                got = arrivals.get(env.notice_id)
                pushes.append((t0, t1, got))
        else:
            await asyncio.sleep(spec.hold_s)
        still_open = sum(1 for _d, ws in socks if not ws.closed)
        results.put({"sockets": len(socks), "still_open": still_open, "closed": closed[:5],
                     "pushes": pushes})
        results.close()
        results.join_thread()
        os._exit(0)


def sock_main(spec: SockSpec, ready: Any, go: Any, results: Any) -> None:
    import faulthandler

    faulthandler.dump_traceback_later(900, exit=True)
    os.environ.update(bench_env())
    try:
        asyncio.run(_open_streams(spec, ready, go, results))
    except BaseException:
        fatal = {"fatal": traceback.format_exc()}
        ready.put(fatal)
        results.put(fatal)


def run(base: Path, homes: dict[str, Path], *, sockets: int, idle_desk_count: int,
        pushes: int, push_interval_s: float, idle_measure_s: float = 20.0,
        processes: int = 2) -> dict[str, Any]:
    import multiprocessing as mp
    import queue as queue_mod

    say(f"sockets: {sockets} WebSocket streams ({sockets - 1} idle, of {idle_desk_count} desks, "
        f"and 1 of {TARGET}); push latency of {pushes} notices to {TARGET}")
    relay = BenchRelay(base, "relay-sockets",
                       env={"HOTLINE_RELAY_LIMITS_MAX_STREAMS_PER_DESK": str(sockets)}
                       ).init().start()
    try:
        time.sleep(1.0)
        rss_idle = relay.rss_mb()
        # Idle streams spread over processes and desks; the target stream and the sender
        # in the first process.
        idle = sockets - 1
        desks = idle_desks(idle_desk_count)
        per_desk = {d: idle // idle_desk_count + (1 if i < idle % idle_desk_count else 0)
                    for i, d in enumerate(desks)}
        groups: list[dict[str, int]] = [{} for _ in range(processes)]
        for i, (d, n) in enumerate(per_desk.items()):
            groups[i % processes][d] = n
        groups[0] = {TARGET: 1, **groups[0]}
        str_homes = {k: str(v) for k, v in homes.items()}
        specs = [SockSpec(relay.url, str_homes, g, with_sender=(i == 0), pushes=pushes,
                          push_interval_s=push_interval_s, hold_s=0.0)
                 for i, g in enumerate(groups)]
        ctx = mp.get_context("spawn")
        ready, results = ctx.Queue(), ctx.Queue()
        go = ctx.Event()
        procs = [ctx.Process(target=sock_main, args=(s, ready, go, results), daemon=True)
                 for s in specs]
        t_open = mono()
        for p in procs:
            p.start()
        out: list[dict[str, Any]] = []
        try:
            opened = 0
            for _ in specs:
                got = ready.get(timeout=300)
                if isinstance(got, dict):
                    raise RuntimeError("a socket process failed:\n" + got["fatal"])
                opened += got
            open_s = mono() - t_open
            time.sleep(3.0)  # settle
            rss_open = relay.rss_mb()
            # Idle for a while (the relay pings every stream every 20 s by default).
            c0 = proc_cpu_s(relay.pid)
            time.sleep(idle_measure_s)
            idle_cpu = (proc_cpu_s(relay.pid) - c0) / idle_measure_s
            rss_idle_end = relay.rss_mb()
            go.set()
            for _ in specs:
                try:
                    out.append(results.get(timeout=pushes * (push_interval_s + 1) + 120))
                except queue_mod.Empty:
                    break
            rss_end = relay.rss_mb()
        finally:
            for p in procs:
                p.join(15)
                if p.is_alive():
                    p.terminate()
                    p.join(5)
    finally:
        relay.stop()
    fatal = [r["fatal"] for r in out if "fatal" in r]
    if fatal:
        raise RuntimeError("a socket process failed:\n" + fatal[0])
    pushes_done = [p for r in out for p in r["pushes"]]
    push_ms = [(got - t0) * 1000 for t0, _t1, got in pushes_done if got is not None]
    accept_ms = [(t1 - t0) * 1000 for t0, t1, _got in pushes_done]
    missing = sum(1 for *_x, got in pushes_done if got is None)
    still_open = sum(r["still_open"] for r in out)
    res = {
        "sockets": opened, "desks": idle_desk_count + 1, "open_s": open_s,
        "still_open_at_end": still_open, "closed_samples": [c for r in out for c in r["closed"]],
        "relay_rss_mb_before": rss_idle, "relay_rss_mb_with_sockets": rss_open,
        "relay_rss_mb_after_idle": rss_idle_end, "relay_rss_mb_end": rss_end,
        "relay_rss_mb_per_1000_sockets": (rss_open - rss_idle) / max(1, opened) * 1000,
        "relay_idle_cpu_util_with_sockets": idle_cpu,
        "push_ms": percentiles(push_ms), "post_answer_ms": percentiles(accept_ms),
        "push_missing": missing,
    }
    pm = res["push_ms"]
    say(f"  {opened} streams open in {open_s:.1f} s; relay RSS {rss_idle:.1f} -> "
        f"{rss_open:.1f} MB; idle CPU {idle_cpu:.1%} of a core; push p50 {pm['p50']} ms, "
        f"p99 {pm['p99']} ms; {still_open} still open at the end")
    return res


def desk_names(idle_desk_count: int) -> tuple[str, ...]:
    return (SENDER, TARGET, *idle_desks(idle_desk_count))

