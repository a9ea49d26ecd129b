"""End to end through a real relay, with the client library, in several desk processes.

Each worker process hosts one sender desk and one recipient desk (``HotlineClient``, each
with its own home, client.db and event stream). Sender *i* sends to the recipient hosted
by worker *i+1*, so every notice crosses processes. For every notice:

sender: seal + sign (``send``: the card of the recipient fetched and verified, the sealed
notice written to the outbox, posted, the relay's signed acceptance checked) ->
relay: verify, commit (WAL, synchronous=FULL), push on the recipient's WebSocket ->
recipient (``events()``): verify, decrypt, store, signed delivery receipt posted; then
``ack`` (signed) -> relay: verify, commit, push both on the sender's stream ->
sender (``events()``): verifies the receipt and the ack and their attestations.

A notice is *completed* when its sender has seen the verified ack.

Two modes: ``closed`` (each sender keeps ``window`` notices in flight: throughput) and
``open`` (each sender sends at a fixed rate whatever happens: latency). Timestamps are
CLOCK_MONOTONIC, which is one clock for every process of the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.common import (
    BenchRelay,
    Window,
    bench_env,
    mono,
    percentiles,
    run_workers,
    sample_report,
    say,
    wait_mp_event,
)

PASSPHRASE = "test passphrase"
SEVERITY = "high"


@dataclass(frozen=True)
class Spec:
    index: int
    relay_url: str
    sender_home: str
    recipient_home: str
    to: str
    mode: str  # "closed" | "open"
    window: int
    rate: float  # open mode: notices per second from this sender
    max_notices: int
    max_seconds: float
    ack_concurrency: int = 32
    drain_s: float = 8.0


# --------------------------------------------------------------------------- worker


def _client_class() -> Any:
    from client.client import HotlineClient

    if not hasattr(HotlineClient, "_send_receipt"):
        # The client changed: "delivered" falls back to the moment events() yields it.
        class PlainClient(HotlineClient):
            delivered: dict[bytes, float]
            delivered_marker = "yielded by events()"

        return PlainClient

    class BenchClient(HotlineClient):
        """Stamps the moment a notice is verified, decrypted and stored, just before its
        delivery receipt is sent ("delivered": the recipient has it)."""

        delivered: dict[bytes, float]
        delivered_marker = "verified, decrypted and stored (before its receipt is sent)"

        async def _send_receipt(self, record: Any) -> bool:
            self.delivered.setdefault(record.notice_id, mono())
            ok: bool = await super()._send_receipt(record)
            return ok

    return BenchClient


async def _worker(spec: Spec, ready: Any, go: Any, stop: Any, finish: Any,
                  results: Any) -> None:
    from client.items import ConfirmationEvent, ReceivedNotice

    cls = _client_class()
    report = sample_report()

    def open_desk(home: str) -> Any:
        c = cls.from_home(home, PASSPHRASE, relays=[spec.relay_url],
                          on_relay_pinned=lambda card, fpr: None)
        c.delivered = {}
        return c

    sender = open_desk(spec.sender_home)
    recipient = open_desk(spec.recipient_home)
    await sender.start()
    await recipient.start()
    await sender.fetch()
    await recipient.fetch()  # both logged in: the relay knows their cards
    ready.put(spec.index)
    if not await wait_mp_event(go, 120):
        raise RuntimeError("no go signal")

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    # sender side: nid -> [send, accepted, receipt_seen, ack_seen]
    sent: dict[bytes, list[float]] = {}
    waiting: dict[bytes, asyncio.Future[None]] = {}
    # recipient side: nid -> [yielded, ack_accepted]
    got: dict[bytes, list[float]] = {}
    errors: list[str] = []
    ack_slots = asyncio.Semaphore(spec.ack_concurrency)
    ack_tasks: set[asyncio.Task[None]] = set()

    async def watch_stop() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.05)
        stopping.set()

    async def do_ack(nid: bytes) -> None:
        async with ack_slots:
            try:
                await recipient.ack(nid)
                if nid in got:
                    got[nid][1] = mono()
            except Exception as exc:  # reported, never fatal
                errors.append(f"ack: {exc}")

    async def recipient_loop() -> None:
        async for item in recipient.events():
            if isinstance(item, ReceivedNotice):
                got[item.notice_id] = [mono(), 0.0]
                recipient.delivered.setdefault(item.notice_id, got[item.notice_id][0])
                t = asyncio.create_task(do_ack(item.notice_id))
                ack_tasks.add(t)
                t.add_done_callback(ack_tasks.discard)

    async def sender_loop() -> None:
        async for item in sender.events():
            if isinstance(item, ConfirmationEvent):
                rec = sent.get(item.notice_id)
                if rec is None:
                    continue
                if item.kind == "receipt":
                    rec[2] = mono()
                elif item.kind == "ack":
                    rec[3] = mono()
                    fut = waiting.pop(item.notice_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)

    async def one(nid: bytes) -> None:
        fut = loop.create_future()
        waiting[nid] = fut
        rec = [mono(), 0.0, 0.0, 0.0]
        sent[nid] = rec
        try:
            await sender.send(to=[spec.to], severity=SEVERITY, notice=report, notice_id=nid)
            rec[1] = mono()
            await asyncio.wait_for(fut, timeout=60)
        except Exception as exc:
            errors.append(f"send: {type(exc).__name__}: {exc}")
            waiting.pop(nid, None)

    tasks = [asyncio.create_task(watch_stop()), asyncio.create_task(recipient_loop()),
             asyncio.create_task(sender_loop())]
    started = mono()
    count = 0

    def more() -> bool:
        return (not stopping.is_set() and count < spec.max_notices
                and mono() - started < spec.max_seconds)

    if spec.mode == "closed":
        async def lane() -> None:
            nonlocal count
            while more():
                count += 1
                await one(os.urandom(16))

        lanes = [asyncio.create_task(lane()) for _ in range(spec.window)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=spec.max_seconds)
        await asyncio.wait(lanes, timeout=spec.drain_s)
        for t in lanes:
            t.cancel()
    else:
        inflight: set[asyncio.Task[None]] = set()
        # Stagger the workers' schedules so their sends interleave evenly.
        first = started + (spec.index % 7) / 7 / max(spec.rate, 1e-9)
        k = 0
        while more():
            due = first + k / spec.rate
            delay = due - mono()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=delay)
                if not more():
                    break
            k += 1
            count += 1
            t = asyncio.create_task(one(os.urandom(16)))
            inflight.add(t)
            t.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.wait(inflight, timeout=spec.drain_s)
    # Let the last acks travel; then keep receiving until every worker is done.
    drain_until = mono() + spec.drain_s
    while (waiting or ack_tasks) and mono() < drain_until:
        await asyncio.sleep(0.05)
    ready.put(("drained", spec.index))
    await wait_mp_event(finish, spec.drain_s + 60)
    while ack_tasks and mono() < drain_until + 5:
        await asyncio.sleep(0.05)
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
    results.put({
        "index": spec.index, "sent": sent, "got": got,
        "delivered": recipient.delivered, "errors": errors[:20], "error_count": len(errors),
        "delivered_marker": cls.delivered_marker,
    })
    for c in (sender, recipient):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(c.close(), timeout=5)
    # Hand the results over, then leave at once (no lingering client tasks at exit).
    results.close()
    results.join_thread()
    os._exit(0)


def worker_main(spec: Spec, ready: Any, go: Any, stop: Any, finish: Any, results: Any) -> None:
    import faulthandler

    # A worker that hangs prints where, and ends: every run is bounded in time.
    faulthandler.dump_traceback_later(spec.max_seconds + 200, exit=True)
    os.environ.update(bench_env())
    try:
        asyncio.run(_worker(spec, ready, go, stop, finish, results))
    except BaseException:
        fatal = {"index": spec.index, "fatal": traceback.format_exc()}
        ready.put(fatal)
        results.put(fatal)


# --------------------------------------------------------------------------- parent


@dataclass
class PoolResult:
    mode: str
    workers: int
    window: int
    offered_rate: float
    win: Window
    relay_cpu_s: float
    completed: int
    sent_in_window: int
    errors: list[str]

    @property
    def t0(self) -> float:
        return self.win.t0

    @property
    def t1(self) -> float:
        return self.win.t1

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.win.records

    @property
    def seconds(self) -> float:
        return self.win.seconds

    @property
    def throughput(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


def run_pool(relay: BenchRelay, homes: dict[str, Path], workers: int, *, mode: str,
             window: int = 8, rate: float = 0.0, warmup_s: float = 5.0,
             measure_s: float = 30.0, drain_s: float = 8.0,
             on_window: Any = None) -> PoolResult:
    """Run ``workers`` desk processes against ``relay``; measure a window of
    ``measure_s`` seconds after ``warmup_s`` seconds."""
    total_s = warmup_s + measure_s
    specs = []
    for i in range(workers):
        specs.append(Spec(
            index=i, relay_url=relay.url, sender_home=str(homes[f"us.s{i}"]),
            recipient_home=str(homes[f"cn.r{i}"]), to=f"cn.r{(i + 1) % workers}",
            mode=mode, window=window, rate=rate / workers if rate else 0.0,
            max_notices=10_000_000 if mode == "closed" else int(rate / workers * total_s) + 10,
            max_seconds=total_s + 30, drain_s=drain_s))
    win = run_workers(worker_main, specs, warmup_s=warmup_s, measure_s=measure_s,
                      drain_s=drain_s, watch={"relay": relay.pid}, thread_pid=relay.pid,
                      on_window=on_window)
    completed = sum(1 for r in win.records for rec in r["sent"].values()
                    if win.t0 <= rec[3] < win.t1)
    sent_in_window = sum(1 for r in win.records for rec in r["sent"].values()
                         if win.t0 <= rec[0] < win.t1)
    errors = [e for r in win.records for e in r["errors"]]
    return PoolResult(mode, workers, window, rate, win, win.cpu["relay"], completed,
                      sent_in_window, errors)


def latencies(res: PoolResult) -> dict[str, Any]:
    """send->accepted, send->delivered, send->ack seen (ms) of notices sent in the window."""
    delivered: dict[bytes, float] = {}
    for r in res.records:
        delivered.update(r["delivered"])
    acc, dlv, ack = [], [], []
    incomplete = 0
    for r in res.records:
        for nid, (t_send, t_acc, _t_rcpt, t_ack) in r["sent"].items():
            if not res.t0 <= t_send < res.t1:
                continue
            if t_acc:
                acc.append((t_acc - t_send) * 1000)
            if nid in delivered:
                dlv.append((delivered[nid] - t_send) * 1000)
            if t_ack:
                ack.append((t_ack - t_send) * 1000)
            else:
                incomplete += 1
    return {"send_to_accepted_ms": percentiles(acc), "send_to_delivered_ms": percentiles(dlv),
            "send_to_ack_seen_ms": percentiles(ack), "incomplete": incomplete,
            "delivered_means": res.records[0].get("delivered_marker") if res.records else None}


def desk_names(workers: int) -> tuple[str, ...]:
    return tuple(f"us.s{i}" for i in range(workers)) + tuple(f"cn.r{i}" for i in range(workers))


def throughput(relay: BenchRelay, homes: dict[str, Path], *, workers: int, window: int,
               warmup_s: float, measure_s: float, profile_to: Path | None = None
               ) -> dict[str, Any]:
    say(f"e2e throughput: {workers} desk processes x (1 sender + 1 recipient), window "
        f"{window} per sender, {measure_s:.0f} s measured after {warmup_s:.0f} s warm-up")
    sampler: list[Any] = []

    def on_window(seconds: float) -> None:
        if profile_to is not None:
            from tests.bench.profile import Sampler

            sampler.append(Sampler(relay.pid, seconds, profile_to))

    res = run_pool(relay, homes, workers, mode="closed", window=window, warmup_s=warmup_s,
                   measure_s=measure_s, on_window=on_window)
    out = {
        "workers": workers, "window_per_sender": window, "seconds": res.seconds,
        "completed": res.completed, "notices_per_s": res.throughput,
        "relay_cpu_s": res.relay_cpu_s,
        "relay_cpu_ms_per_notice": res.relay_cpu_s / res.completed * 1000 if res.completed
        else None,
        "relay_cpu_util": res.relay_cpu_s / res.seconds,
        "relay_threads_cpu_ms_per_notice": {
            k: round(v / res.completed * 1000, 3) for k, v in res.win.threads.items()
            if v > 0} if res.completed else {},
        "relay_kernel_per_notice": {
            "read_syscalls": res.win.kernel.get("read_syscalls", 0) / res.completed,
            "write_syscalls": res.win.kernel.get("write_syscalls", 0) / res.completed,
            "kernel_cpu_ms": res.win.kernel.get("kernel_cpu_s", 0) / res.completed * 1000,
        } if res.completed and res.win.kernel else {},
        "clients_cpu_ms_per_notice": res.win.workers_cpu_s / res.completed * 1000
        if res.completed else None,
        "machine_busy_fraction": res.win.machine_busy_s / res.seconds / (os.cpu_count() or 1),
        "other_processes_cpu_util": res.win.other_cpu_s / res.seconds,
        "errors": len(res.errors),
        "error_samples": res.errors[:5], "loadavg_end": res.win.load,
        "latency_under_saturation": latencies(res),
    }
    if sampler:
        out["profile"] = sampler[0].finish()
    say(f"  {out['notices_per_s']:.1f} notices/s completed; relay CPU "
        f"{out['relay_cpu_ms_per_notice'] or 0:.2f} ms/notice ({out['relay_cpu_util']:.0%} of "
        f"a core); clients {out['clients_cpu_ms_per_notice'] or 0:.2f} ms/notice; machine "
        f"{out['machine_busy_fraction']:.0%} busy (other processes "
        f"{out['other_processes_cpu_util']:.0%} of a core)")
    return out


def latency(relay: BenchRelay, homes: dict[str, Path], *, workers: int, rate: float,
            warmup_s: float, measure_s: float) -> dict[str, Any]:
    say(f"e2e latency: open loop at {rate:.0f} notices/s over {workers} senders, "
        f"{measure_s:.0f} s measured")
    res = run_pool(relay, homes, workers, mode="open", rate=rate, warmup_s=warmup_s,
                   measure_s=measure_s, drain_s=10.0)
    lat = latencies(res)
    out = {
        "offered_rate": rate, "workers": workers, "seconds": res.seconds,
        "sent_in_window": res.sent_in_window, "sent_rate": res.sent_in_window / res.seconds,
        "completed_in_window": res.completed, "completed_rate": res.throughput,
        "relay_cpu_util": res.relay_cpu_s / res.seconds,
        "machine_busy_fraction": res.win.machine_busy_s / res.seconds / (os.cpu_count() or 1),
        "other_processes_cpu_util": res.win.other_cpu_s / res.seconds,
        "errors": len(res.errors), "error_samples": res.errors[:5],
        "loadavg_end": res.win.load, **lat,
    }
    # Sustained: everything offered was sent on time and completed within the window's
    # pace (no backlog building up), with no notice left behind.
    sustained = (lat["incomplete"] <= 0.01 * max(1, res.sent_in_window)
                 and res.sent_in_window >= 0.97 * rate * res.seconds
                 and res.completed >= 0.98 * res.sent_in_window
                 and (lat["send_to_ack_seen_ms"]["p99"] or 1e9) < 500)
    out["sustained"] = sustained
    a, d, k = (lat["send_to_accepted_ms"], lat["send_to_delivered_ms"],
               lat["send_to_ack_seen_ms"])
    say(f"  sent {out['sent_rate']:.1f}/s, completed {out['completed_rate']:.1f}/s, "
        f"sustained={sustained}; p99 accepted {a['p99']} ms, delivered {d['p99']} ms, "
        f"ack seen {k['p99']} ms")
    return out
