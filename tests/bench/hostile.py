"""Hostile-input bench: what one desk or one unauthenticated address costs the relay.

Runs a real relay (the code of the repository this file is run from) on 127.0.0.1 and,
in bounded loops:

* ``decode``: one desk sends ``--bodies`` 8 MiB bodies of empty msgpack maps (the
  worst case for a decoder) as notices over HTTP, then the same on its stream, while
  another client asks ``/healthz`` every 20 ms: /healthz p50/p99/max, the relay's peak
  and final RSS.
* ``pages``: a peer sends ten notices of nearly 8 MiB; the recipient reads its inbox
  (every page) ``--polls`` times and replays its stream from 0 four times: relay peak
  and final RSS, the largest page, whether every notice was read.
* ``bodies``: ``--connections`` unauthenticated connections each send a chunked body of
  up to 8 MiB to /v1/auth/challenge and then hold it open: relay RSS while held.

Prints one JSON object. Run from a repository root (for a before/after comparison, run
the same file from a checkout of the old code)::

    python -m tests.bench.hostile [--only decode,pages,bodies] [--out result.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from keys import seal
from keys.frames import InboxPage
from keys.report import Attachment
from tests.factory import report
from tests.relay_harness import RawDesk, RelayProcess, make_federation, now_ms

MIB = 1024 * 1024
NOTICE = 8 * MIB
MSGPACK = {"Content-Type": "application/msgpack"}


def _status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(key)


def rss(relay: RelayProcess) -> float:
    assert relay.proc is not None
    return _status(relay.proc.pid, "VmRSS")


def peak(relay: RelayProcess) -> float:
    assert relay.proc is not None
    return _status(relay.proc.pid, "VmHWM")


def reset_peak(relay: RelayProcess) -> None:
    assert relay.proc is not None
    Path(f"/proc/{relay.proc.pid}/clear_refs").write_text("5")


def empty_maps(size: int) -> bytes:
    inner = b"\xdd" + (4096).to_bytes(4, "big") + b"\x80" * 4096
    count = size // len(inner)
    return b"\xdd" + count.to_bytes(4, "big") + inner * count


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


async def _poll_health(url: str, stop: asyncio.Event, out: list[float]) -> None:
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            t0 = time.perf_counter()
            async with http.get(url + "/healthz") as r:
                await r.read()
            out.append(time.perf_counter() - t0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)


async def _post(http: aiohttp.ClientSession, desk: RawDesk, path: str, body: bytes) -> int:
    async with http.post(desk.url + path, data=io.BytesIO(body),
                         headers=MSGPACK | desk.auth) as r:
        await r.read()
        return r.status


async def bench_decode(relay: RelayProcess, base: Path, bodies: int) -> dict[str, Any]:
    body = empty_maps(NOTICE - 64 * 1024)
    out: dict[str, Any] = {"body_bytes": len(body), "bodies": bodies}
    async with aiohttp.ClientSession() as http:
        us = await RawDesk(http, relay.url, base / "us.caisi").login()
        idle: list[float] = []
        for _ in range(50):
            t0 = time.perf_counter()
            async with http.get(relay.url + "/healthz") as r:
                await r.read()
            idle.append(time.perf_counter() - t0)
        out["healthz_idle_ms"] = {"p50": pct(idle, 0.5), "p99": pct(idle, 0.99)}
        for transport in ("http", "stream"):
            reset_peak(relay)
            before = rss(relay)
            lat: list[float] = []
            stop = asyncio.Event()
            poller = asyncio.create_task(_poll_health(relay.url, stop, lat))
            statuses: dict[str, int] = {}
            t0 = time.perf_counter()
            if transport == "http":
                for _ in range(bodies):
                    s = str(await _post(http, us, "/v1/notices", body))
                    statuses[s] = statuses.get(s, 0) + 1
            else:
                async with http.ws_connect(relay.url.replace("http", "ws")
                                           + "/v1/stream?after=999999999", headers=us.auth,
                                           max_msg_size=0) as ws:
                    for _ in range(bodies):
                        await ws.send_bytes(body)
                        msg = await ws.receive(timeout=120)
                        s = "answered" if msg.type == aiohttp.WSMsgType.BINARY else str(msg.type)
                        statuses[s] = statuses.get(s, 0) + 1
            elapsed = time.perf_counter() - t0
            stop.set()
            await poller
            out[transport] = {
                "statuses": statuses, "seconds": round(elapsed, 2),
                "healthz_ms": {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
                               "max": round(max(lat) * 1000, 1), "samples": len(lat)},
                "rss_before_mib": before, "rss_peak_mib": peak(relay), "rss_after_mib": rss(relay),
            }
    return out


async def bench_pages(relay: RelayProcess, base: Path, polls: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        us = await RawDesk(http, relay.url, base / "us.caisi").login()
        cn = await RawDesk(http, relay.url, base / "cn.cac").login()
        trust = us.home.trust(now_ms())
        card = trust.verify_card(cn.home.card(now_ms()), now_ms())
        for i in range(10):
            data = os.urandom(NOTICE - 256 * 1024)
            env = seal(report(title=f"large {i}", attachments=(
                Attachment("dump.bin", "application/octet-stream", data),)),
                sender=us.secrets, recipients=[card], severity="high", now=now_ms())
            status = await _post(http, us, "/v1/notices", env.raw)
            assert status == 201, status
            del env, data
        out["rss_after_sending_mib"] = rss(relay)
        reset_peak(relay)
        largest, pages, errors, read = 0, 0, [], 0
        for _ in range(polls):
            after = 0
            for _ in range(20):  # bounded: ten notices need at most ten pages
                async with http.get(relay.url + f"/v1/inbox?after={after}&limit=500",
                                    headers=cn.auth) as r:
                    raw = await r.read()
                pages += 1
                largest = max(largest, len(raw))
                if r.status != 200 or len(raw) > 64 * MIB:
                    errors.append(f"{r.status} {len(raw)}")
                    break
                page = InboxPage.decode(raw)
                read += len(page.events)
                after = page.next_cursor
                if not page.more:
                    break
        out["inbox"] = {"polls": polls, "pages": pages, "largest_page_mib":
                        round(largest / MIB, 1), "events_read": read,
                        "problems": errors[:3], "rss_peak_mib": peak(relay),
                        "rss_after_mib": rss(relay)}
        reset_peak(relay)
        for _ in range(4):
            async with http.ws_connect(relay.url.replace("http", "ws") + "/v1/stream?after=0",
                                       headers=cn.auth, max_msg_size=0) as ws:
                seen = 0
                while seen < 10:
                    msg = await ws.receive(timeout=120)
                    if msg.type != aiohttp.WSMsgType.BINARY:
                        break
                    seen += 1
        out["stream_replays"] = {"replays": 4, "rss_peak_mib": peak(relay),
                                 "rss_after_mib": rss(relay)}
    return out


async def _hold_body(port: int, size: int, hold: asyncio.Event) -> str:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/auth/challenge HTTP/1.1\r\nHost: relay\r\n"
                     b"Content-Type: application/msgpack\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % 65536 + b"\x00" * 65536 + b"\r\n"
        for _ in range(size // 65536):
            writer.write(chunk)
            await writer.drain()
        await hold.wait()
        return "held"
    except (ConnectionError, OSError):
        return "cut"
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def bench_bodies(relay: RelayProcess, connections: int) -> dict[str, Any]:
    reset_peak(relay)
    before = rss(relay)
    hold = asyncio.Event()
    tasks = [asyncio.create_task(_hold_body(relay.port, NOTICE - 128 * 1024, hold))
             for _ in range(connections)]
    await asyncio.sleep(5)
    held = rss(relay)
    hold.set()
    results = await asyncio.gather(*tasks)
    return {"connections": connections, "rss_before_mib": before, "rss_held_mib": held,
            "rss_peak_mib": peak(relay),
            "outcomes": {k: results.count(k) for k in set(results)}}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    only = set(args.only.split(","))
    out: dict[str, Any] = {"code": str(Path.cwd())}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        make_federation(base, ("us.caisi", "cn.cac"))
        relay = RelayProcess.create(base)
        relay.start()
        try:
            out["rss_idle_mib"] = rss(relay)
            if "decode" in only:
                out["decode"] = await bench_decode(relay, base, args.bodies)
            if "bodies" in only:
                out["bodies"] = await bench_bodies(relay, args.connections)
            if "pages" in only:
                out["pages"] = await bench_pages(relay, base, args.polls)
        finally:
            relay.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--only", default="decode,bodies,pages")
    p.add_argument("--bodies", type=int, default=8, help="worst-case bodies per transport")
    p.add_argument("--polls", type=int, default=3)
    p.add_argument("--connections", type=int, default=60)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
