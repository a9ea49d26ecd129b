"""What the verifiable log costs (part 9 of ``python -m tests.bench.run``).

* Relay CPU per end-to-end notice with the log and without it, in one run: the same
  closed loop as part 1 (``e2e.throughput``) against two fresh relays. "With": the log as
  production runs it (checkpoint every 2 s, two witness processes). "Without": ``[log]
  enabled = false`` and the schema's leaf triggers dropped from that relay's own fresh
  database, so it does none of the log's work. A relay without its log is not what
  production runs: it exists here only to price the log.
* Checkpoint latency: a statement signed (its "accepted" answer received) until a
  checkpoint that includes it and carries both witnesses' cosignatures is served at
  ``/checkpoint`` (polled every 20 ms), p50/p99, notices paced at 20/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
import time
from pathlib import Path
from typing import Any

from tests.bench import e2e
from tests.bench.common import BenchRelay, make_desks, percentiles, say

POLL_S = 0.02


def _witnesses(base: Path, relay: BenchRelay) -> list[Any]:
    from client.cli.main import main
    from client.record import log_verifier
    from keys.receipts import RelayCard
    from tests.e2e.test_witness import WitnessProcess
    from tests.relay_harness import test_env

    card = RelayCard.decode((relay.home / "relay.card").read_bytes())
    vkey = log_verifier(card.relay_id, card.key).vkey()
    out = []
    for country in ("us", "cn"):
        home = base / f"witness-{country}"
        with test_env(), contextlib.redirect_stdout(io.StringIO()):
            assert main(["witness", "init", "--home", str(home), "--name",
                         f"witness.{country}/w1", "--log", vkey]) == 0
        out.append(WitnessProcess(home))
    with open(relay.home / "relay.toml", "a") as fh:
        for w in out:
            fh.write(f'\n[[log.witnesses]]\nurl = "{w.url}"\nvkey = "{w.vkey}"\n')
    return out


def _drop_log_triggers(relay: BenchRelay) -> None:
    """Start once (the schema is applied), stop, drop the leaf triggers (this bench
    relay's own fresh database only)."""
    relay.start()
    relay.stop()
    relay.log_path.unlink()  # start() reads the port from the log's first listening line
    with sqlite3.connect(relay.home / "relay.db") as conn:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'tlog_%'")]
        for name in names:
            conn.execute(f'DROP TRIGGER "{name}"')


async def _latency(relay: BenchRelay, homes: dict[str, Path], notices: int, rate: float
                   ) -> dict[str, Any]:
    import aiohttp

    from keys.frames import Accepted
    from tests.e2e.test_escalation_e2e import sealed
    from tests.relay_harness import RawDesk

    seen: list[tuple[float, int]] = []  # (first seen, size) of fully cosigned checkpoints
    done = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        us = await RawDesk(http, relay.url, homes["us.s0"]).login()
        cn = await RawDesk(http, relay.url, homes["cn.r0"]).login()

        async def poll() -> None:
            last = -1
            for _ in range(int(600 / POLL_S)):
                async with http.get(relay.url + "/checkpoint") as r:
                    body = await r.read() if r.status == 200 else b""
                if body:
                    size = int(body.split(b"\n")[1])
                    if size > last and body.count(b"\n\xe2\x80\x94 witness.") >= 2:
                        seen.append((time.monotonic(), size))
                        last = size
                if done.is_set():
                    return
                await asyncio.sleep(POLL_S)

        poller = asyncio.create_task(poll())
        signed: list[tuple[float, int]] = []
        for _ in range(notices):
            r = await us.post("/v1/notices", sealed(us, cn, severity="low").raw)
            a = Accepted.decode(r.body)
            if r.status == 201 and a.leaf is not None:
                signed.append((time.monotonic(), a.leaf))
            await asyncio.sleep(1 / rate)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                seen and seen[-1][1] > max(leaf for _, leaf in signed)):
            await asyncio.sleep(0.1)
        done.set()
        await poller
    waits = []
    for at, leaf in signed:
        first = next((t for t, size in seen if size > leaf), None)
        if first is not None:
            waits.append((first - at) * 1000)
    return {"notices": len(signed), "included": len(waits), "rate_per_s": rate,
            "poll_ms": POLL_S * 1000, "checkpoint_interval_s": 2.0, "witnesses": 2,
            "signed_to_cosigned_ms": percentiles(waits)}


def run(base: Path, *, workers: int, window: int, warmup_s: float, measure_s: float,
        latency_notices: int) -> dict[str, Any]:
    names = e2e.desk_names(workers)
    out: dict[str, Any] = {}
    for arm in ("with_log", "without_log"):
        folder = base / arm
        homes = make_desks(folder, names)
        relay = BenchRelay(folder, toml_extra="" if arm == "with_log"
                           else "[log]\nenabled = false").init()
        witnesses = _witnesses(folder, relay) if arm == "with_log" else []
        try:
            if arm == "without_log":
                _drop_log_triggers(relay)
            relay.start()
            say(f"record: relay {arm.replace('_', ' ')}")
            tput = e2e.throughput(relay, homes, workers=workers, window=window,
                                  warmup_s=warmup_s, measure_s=measure_s)
            out[arm] = {k: tput.get(k) for k in ("notices_per_s", "relay_cpu_ms_per_notice",
                                                  "relay_cpu_util", "completed", "errors")}
            if arm == "with_log":
                say(f"record: checkpoint latency ({latency_notices} notices at 20/s)")
                out["checkpoint_latency"] = asyncio.run(
                    _latency(relay, homes, latency_notices, 20.0))
                out["witness_failures"] = relay.count_events("log.witness_failed")
        finally:
            relay.stop()
            for w in witnesses:
                w.stop()
    w, wo = (out[a].get("relay_cpu_ms_per_notice") for a in ("with_log", "without_log"))
    out["log_cpu_ms_per_notice"] = w - wo if w is not None and wo is not None else None
    p = out["checkpoint_latency"]["signed_to_cosigned_ms"]
    say(f"  relay CPU per notice: {w or 0:.2f} ms with the log, {wo or 0:.2f} ms without; "
        f"checkpoint latency p50 {p.get('p50') or 0:.0f} ms, p99 {p.get('p99') or 0:.0f} ms")
    return out
