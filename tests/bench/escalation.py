"""Bulk load through the raw API: escalation timeliness and memory with many pending notices.

Senders are worker processes speaking the relay's HTTP API directly
(``tests.relay_harness.RawDesk``): each seals its share of notices first (untimed, real
signatures and encryption to the recipient's certified key), then posts them with a few
requests in flight, evenly over a given time or as fast as the relay answers. Nobody
acknowledges anything.

*Escalation*: the relay runs with ``[policy.high] ack_window = "60s"``; 10,000 notices are
posted evenly over 60 s, so their deadlines fall due evenly within one minute. Each
level-1 escalation's lateness is read from the relay's escalation log (``overdue_ms`` =
escalation time - deadline). The time each line became visible in the file (tailed every
10 ms) is reported beside it.

*Pending*: a fresh relay with the default windows takes 100,000 notices; its VmRSS is read
before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.bench.common import (
    BenchRelay,
    bench_env,
    mono,
    percentiles,
    proc_cpu_s,
    sample_report,
    say,
    wait_mp_event,
)

PASSPHRASE = "test passphrase"


@dataclass(frozen=True)
class BlastSpec:
    index: int
    relay_url: str
    sender_home: str
    recipient_homes: tuple[str, ...]
    count: int
    concurrency: int
    severity: str
    max_seconds: float
    rate: float = 0.0  # notices per second from this sender; 0: as fast as answered


def recipient_desks(n: int) -> tuple[str, ...]:
    return tuple(f"cn.p{i}" for i in range(n))


def sender_desks(n: int) -> tuple[str, ...]:
    return tuple(f"us.b{i}" for i in range(n))


# --------------------------------------------------------------------------- worker


async def _blast(spec: BlastSpec, ready: Any, go: Any, stop: Any, results: Any) -> None:
    import aiohttp

    from client.home import Home
    from keys import seal
    from tests.relay_harness import RawDesk, now_ms

    now = now_ms()
    trust = Home(Path(spec.sender_home)).trust(now)
    recipients = [trust.verify_card(Home(Path(h)).card(now), now) for h in spec.recipient_homes]
    connector = aiohttp.TCPConnector(limit=spec.concurrency + 4)
    async with aiohttp.ClientSession(connector=connector) as http:
        desk = await RawDesk(http, spec.relay_url, Path(spec.sender_home)).login()
        report = sample_report()
        bodies = []
        for i in range(spec.count):
            env = seal(report, sender=desk.secrets, recipients=[recipients[i % len(recipients)]],
                       severity=spec.severity, now=now_ms())
            bodies.append(env.raw)
        ready.put(spec.index)
        if not await wait_mp_event(go, 300):
            raise RuntimeError("no go signal")
        started = mono()
        it = iter(enumerate(bodies))
        accepted = 0
        statuses: dict[int, int] = {}
        errors: list[str] = []
        first = last = 0.0

        async def lane() -> None:
            nonlocal accepted, first, last
            for k, body in it:
                if spec.rate:
                    delay = started + k / spec.rate - mono()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if stop.is_set() or mono() - started > spec.max_seconds:
                    return
                for _attempt in range(5):
                    try:
                        r = await desk.post("/v1/notices", body)
                    except Exception as exc:
                        errors.append(f"{type(exc).__name__}: {exc}")
                        await asyncio.sleep(0.2)
                        continue
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    if r.status in (200, 201):
                        accepted += 1
                        last = mono()
                        first = first or last
                        break
                    if r.status in (429, 503):
                        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                        continue
                    errors.append(f"{r.status}: {r.body[:200]!r}")
                    break

        await asyncio.gather(*(lane() for _ in range(spec.concurrency)))
    results.put({"index": spec.index, "accepted": accepted, "statuses": statuses,
                 "errors": errors[:10], "error_count": len(errors), "first": first,
                 "last": last, "started": started})
    results.close()
    results.join_thread()
    os._exit(0)


def blast_main(spec: BlastSpec, ready: Any, go: Any, stop: Any, results: Any) -> None:
    import faulthandler

    faulthandler.dump_traceback_later(spec.max_seconds + 400, exit=True)
    os.environ.update(bench_env())
    try:
        asyncio.run(_blast(spec, ready, go, stop, results))
    except BaseException:
        fatal = {"index": spec.index, "fatal": traceback.format_exc()}
        ready.put(fatal)
        results.put(fatal)


def login_all(url: str, homes: list[Path]) -> None:
    """Log every recipient desk in once, so that the relay knows its card."""
    import aiohttp

    from tests.relay_harness import RawDesk

    async def go() -> None:
        async with aiohttp.ClientSession() as http:
            for h in homes:
                await RawDesk(http, url, h).login()

    asyncio.run(go())


def blast(relay: BenchRelay, homes: dict[str, Path], *, total: int, senders: int,
          recipients: int, concurrency: int, severity: str, max_seconds: float,
          spread_s: float = 0.0, on_go: Any = None) -> dict[str, Any]:
    """Post ``total`` pre-sealed notices from ``senders`` processes (evenly over
    ``spread_s`` seconds, or as fast as the relay answers); wait for all answers."""
    import multiprocessing as mp
    import queue as queue_mod

    login_all(relay.url, [homes[d] for d in recipient_desks(recipients)])
    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    go, stop = ctx.Event(), ctx.Event()
    rhomes = tuple(str(homes[d]) for d in recipient_desks(recipients))
    share = [total // senders + (1 if i < total % senders else 0) for i in range(senders)]
    specs = [BlastSpec(i, relay.url, str(homes[f"us.b{i}"]), rhomes[i:] + rhomes[:i], share[i],
                       concurrency, severity, max_seconds,
                       rate=share[i] / spread_s if spread_s else 0.0) for i in range(senders)]
    procs = [ctx.Process(target=blast_main, args=(s, ready, go, stop, results), daemon=True)
             for s in specs]
    t_seal = mono()
    for p in procs:
        p.start()
    out: list[dict[str, Any]] = []
    try:
        for _ in specs:
            got = ready.get(timeout=max_seconds + 120)
            if isinstance(got, dict):
                raise RuntimeError("a sender failed while sealing:\n" + got["fatal"])
        seal_s = mono() - t_seal
        cpu0, t0 = relay.cpu_s(), mono()
        go.set()
        if on_go is not None:
            on_go()
        for _ in specs:
            try:
                out.append(results.get(timeout=max_seconds + 60))
            except queue_mod.Empty:
                break
        t1, cpu1 = mono(), relay.cpu_s()
    finally:
        stop.set()
        for p in procs:
            p.join(15)
            if p.is_alive():
                p.terminate()
                p.join(5)
    fatal = [r["fatal"] for r in out if "fatal" in r]
    if fatal:
        raise RuntimeError("a sender failed:\n" + fatal[0])
    accepted = sum(r["accepted"] for r in out)
    statuses: dict[int, int] = {}
    for r in out:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    first = min((r["first"] for r in out if r["first"]), default=t0)
    last = max((r["last"] for r in out if r["last"]), default=t1)
    return {"requested": total, "accepted": accepted, "statuses": statuses,
            "errors": sum(r["error_count"] for r in out),
            "error_samples": [e for r in out for e in r["errors"]][:5],
            "seal_s": seal_s, "post_s": t1 - t0, "accept_span_s": last - first,
            "accepted_per_s": accepted / max(1e-9, t1 - t0),
            "relay_cpu_ms_per_notice": (cpu1 - cpu0) / max(1, accepted) * 1000,
            "senders": senders, "recipients": recipients, "concurrency": concurrency}


# --------------------------------------------------------------------------- escalation


def _iso_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


class Tail:
    """Reads new lines of the escalation log every 10 ms; notes (wall clock, as the relay's
    timestamps) when each appeared."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[tuple[int, dict[str, Any]]] = []  # (wall ms seen, record)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pos = 0
        buf = b""
        while not self._stop.is_set():
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(pos)
                    data = fh.read()
            except FileNotFoundError:
                data = b""
            if data:
                pos += len(data)
                buf += data
                now = time.time_ns() // 1_000_000
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    with contextlib.suppress(ValueError):
                        self.seen.append((now, json.loads(line)))
            self._stop.wait(0.01)

    def level1(self) -> int:
        return sum(1 for _, r in self.seen
                   if r.get("event") == "notice.escalated" and r.get("level") == 1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def escalation(base: Path, homes: dict[str, Path], *, total: int, window_s: int, spread_s: float,
               senders: int, recipients: int, concurrency: int) -> dict[str, Any]:
    say(f"escalation: {total} notices posted evenly over {spread_s:.0f} s by {senders} raw-API "
        f"senders, ack window {window_s} s (deadlines fall due within {spread_s:.0f} s); "
        "nobody acknowledges")
    relay = BenchRelay(base, "relay-escalation", toml_extra=(
        f'[policy.high]\nack_window = "{window_s}s"\nrepeat_every = "1h"\n')).init().start()
    try:
        log = relay.home / "escalations.jsonl"
        tail = Tail(log)
        sent = blast(relay, homes, total=total, senders=senders, recipients=recipients,
                     concurrency=concurrency, severity="high", max_seconds=spread_s + 30,
                     spread_s=spread_s)
        if sent["accept_span_s"] > spread_s + 5:
            say(f"  warning: posting took {sent['accept_span_s']:.1f} s, longer than planned")
        say(f"  {sent['accepted']} accepted in {sent['post_s']:.1f} s "
            f"({sent['accepted_per_s']:.0f}/s, relay CPU {sent['relay_cpu_ms_per_notice']:.2f} "
            f"ms/notice); sealing took {sent['seal_s']:.1f} s")
        rss_loaded = relay.rss_mb()
        # Wait for the last deadline (+ margin), bounded.
        cpu0, t0 = relay.cpu_s(), mono()
        deadline = mono() + window_s + 90
        while mono() < deadline and tail.level1() < sent["accepted"]:
            time.sleep(0.2)
        time.sleep(0.5)
        cpu1, t1 = relay.cpu_s(), mono()
        tail.stop()
        rss_after = relay.rss_mb()
    finally:
        relay.stop()
    recs = [(seen, r) for seen, r in tail.seen
            if r.get("event") == "notice.escalated" and r.get("level") == 1]
    overdue = [float(r["overdue_ms"]) for _, r in recs]
    visible = [float(seen - _iso_ms(r["deadline"])) for seen, r in recs]
    deadlines = [_iso_ms(r["deadline"]) for _, r in recs]
    span = (max(deadlines) - min(deadlines)) / 1000 if deadlines else None
    out = {
        "notices": total, "ack_window_s": window_s, "spread_s": spread_s, "posting": sent,
        "escalations_level1": len(recs), "deadline_span_s": span,
        "lateness_ms": percentiles(overdue), "visible_in_file_lateness_ms": percentiles(visible),
        "relay_cpu_s_while_escalating": cpu1 - cpu0, "escalation_phase_s": t1 - t0,
        "relay_rss_mb_loaded": rss_loaded, "relay_rss_mb_after": rss_after,
    }
    lat = out["lateness_ms"]
    say(f"  {len(recs)} level-1 escalations, deadlines spread over {span or 0:.1f} s; lateness "
        f"p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms; visible in file p99 "
        f"{out['visible_in_file_lateness_ms']['p99']} ms")
    return out


# --------------------------------------------------------------------------- pending


def pending(base: Path, homes: dict[str, Path], *, total: int, senders: int, recipients: int,
            concurrency: int, max_seconds: float) -> dict[str, Any]:
    say(f"pending: {total} unacknowledged notices into a fresh relay, {senders} raw-API "
        "senders")
    relay = BenchRelay(base, "relay-pending").init().start()
    try:
        time.sleep(1.0)
        rss_idle = relay.rss_mb()
        peak = [rss_idle]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    peak[0] = max(peak[0], relay.rss_mb())
                stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            sent = blast(relay, homes, total=total, senders=senders, recipients=recipients,
                         concurrency=concurrency, severity="high", max_seconds=max_seconds)
        finally:
            stop.set()
            sampler.join(5)
        time.sleep(2.0)
        rss = relay.rss_mb()
        pending_metric = relay.metric("hotline_pending")
        cpu_idle0 = proc_cpu_s(relay.pid)
        time.sleep(3.0)
        cpu_idle = (proc_cpu_s(relay.pid) - cpu_idle0) / 3.0
        db_mb = relay.db_size_mb()
    finally:
        relay.stop()
    out = {"requested": total, "accepted": sent["accepted"], "posting": sent,
           "relay_pending_metric": pending_metric,
           "relay_rss_mb_idle": rss_idle, "relay_rss_mb": rss, "relay_rss_mb_peak": peak[0],
           "relay_idle_cpu_util_after": cpu_idle, "database_mb": db_mb}
    say(f"  {sent['accepted']} accepted in {sent['post_s']:.1f} s "
        f"({sent['accepted_per_s']:.0f}/s, relay CPU {sent['relay_cpu_ms_per_notice']:.2f} "
        f"ms/notice); the relay counts {pending_metric} pending; relay RSS {rss_idle:.1f} MB "
        f"idle -> {rss:.1f} MB (peak {peak[0]:.1f}); database {db_mb:.0f} MB")
    return out
