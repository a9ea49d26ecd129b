"""Peers: the same windowed producer/consumer pattern over other brokers, Python clients.

Same topology as the Hotline run: worker processes, each with one producer and one
consumer; producer *i* sends to the consumer of worker *i+1* and keeps ``window``
messages in flight. A message carries as many bytes as a sealed Hotline notice; for each
one the consumer sends a reply (the "ack", as many bytes as a signed Hotline ack) back to
the producer through the same broker, and acknowledges the message to the broker. A
message is *completed* when its producer has the reply.

* Mosquitto, MQTT QoS 1 both ways (paho-mqtt; PUBACK awaited before a publish counts).
* NATS JetStream: one file-storage stream; publishes wait for the PubAck; push consumers
  with explicit ack (nats-py).
* Redis Streams: XADD, XREADGROUP, XACK (redis-py asyncio).

A broker that cannot be reached is reported as absent, never replaced by a number. Keys,
streams and topics carry a random run id and are removed afterwards. None of these brokers
fsyncs each message with the settings found here (that is reported with the figures);
Hotline does (SQLite WAL, synchronous=FULL) before it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import traceback
from dataclasses import dataclass
from typing import Any

from tests.bench.common import find_pid, mono, percentiles, run_workers, say, wait_mp_event

HOST = "127.0.0.1"
PORTS = {"mosquitto": 1883, "nats": 4222, "redis": 6379}
BROKER_COMM = {"mosquitto": "mosquitto", "nats": "nats-server", "redis": "redis-server"}


@dataclass(frozen=True)
class PeerSpec:
    kind: str
    index: int
    workers: int
    run_id: str
    window: int
    payload_bytes: int
    reply_bytes: int
    max_seconds: float
    drain_s: float = 5.0
    port: int = 0  # a broker on another port than the usual one


def reachable(kind: str, timeout: float = 1.0, port: int = 0) -> str | None:
    """None if the broker answers a TCP connection, else why not."""
    port = port or PORTS[kind]
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{HOST}:{port}: {exc}"


# --------------------------------------------------------------------------- links


class Link:
    """One process's producer and consumer on one broker."""

    def __init__(self, spec: PeerSpec, on_reply: Any) -> None:
        self.spec = spec
        self.on_reply = on_reply  # called in the event loop with the message id
        self.me = spec.index
        self.dst = (spec.index + 1) % spec.workers
        self.reply_pad = os.urandom(spec.reply_bytes - 16)
        self.src = spec.index.to_bytes(2, "big")  # who to reply to

    async def open(self) -> None: ...

    async def publish(self, mid: bytes, payload: bytes) -> None: ...

    async def close(self) -> None: ...


class MqttLink(Link):
    port = PORTS["mosquitto"]

    async def open(self) -> None:
        self.port = self.spec.port or PORTS["mosquitto"]
        import paho.mqtt.client as mqtt

        loop = asyncio.get_running_loop()
        self.loop = loop
        self.pubacks: dict[int, asyncio.Future[None]] = {}
        run = self.spec.run_id
        self.topic_n = f"hotline-bench/{run}/n/%d"
        self.topic_a = f"hotline-bench/{run}/a/%d"
        connected: dict[str, asyncio.Event] = {}

        def make(name: str) -> Any:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"hb-{run}-{name}",
                            clean_session=True)
            c.max_inflight_messages_set(1000)
            c.max_queued_messages_set(0)
            ev = asyncio.Event()
            connected[name] = ev
            c.on_connect = lambda cl, ud, flags, rc, props=None: loop.call_soon_threadsafe(
                ev.set)
            return c

        self.prod = make(f"p{self.me}")
        self.cons = make(f"c{self.me}")

        def on_publish(client: Any, userdata: Any, mid: int, rc: Any = None,
                       props: Any = None) -> None:
            loop.call_soon_threadsafe(self._puback, mid)

        self.prod.on_publish = on_publish

        def on_notice(client: Any, userdata: Any, msg: Any) -> None:
            # The consumer: reply (QoS 1) to the producer; paho sends the PUBACK for the
            # notice when this callback returns.
            src = int.from_bytes(msg.payload[16:18], "big")
            client.publish(self.topic_a % src, msg.payload[:16] + self.reply_pad, qos=1)

        def on_reply(client: Any, userdata: Any, msg: Any) -> None:
            loop.call_soon_threadsafe(self.on_reply, bytes(msg.payload[:16]))

        self.cons.on_message = on_notice
        self.prod.on_message = on_reply
        for c in (self.prod, self.cons):
            c.connect(HOST, self.port, keepalive=60)
            c.loop_start()
        for ev in connected.values():
            await asyncio.wait_for(ev.wait(), 10)
        for c in (self.prod, self.cons):
            # paho leaves Nagle on; every other client here (aiohttp, nats-py, redis-py)
            # turns it off.
            sock = c.socket()
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        subscribed = [asyncio.Event(), asyncio.Event()]
        for c, topic, ev in ((self.cons, self.topic_n % self.me, subscribed[0]),
                             (self.prod, self.topic_a % self.me, subscribed[1])):
            c.on_subscribe = (lambda e: lambda cl, ud, mid, rcs, props=None:
                              loop.call_soon_threadsafe(e.set))(ev)
            c.subscribe(topic, qos=1)
        for ev in subscribed:
            await asyncio.wait_for(ev.wait(), 10)

    def _puback(self, mid: int) -> None:
        fut = self.pubacks.pop(mid, None)
        if fut is None:
            self.pubacks[mid] = self.loop.create_future()
            self.pubacks[mid].set_result(None)
        elif not fut.done():
            fut.set_result(None)

    async def publish(self, mid: bytes, payload: bytes) -> None:
        info = self.prod.publish(self.topic_n % self.dst, mid + self.src + payload, qos=1)
        fut = self.pubacks.get(info.mid)
        if fut is not None and fut.done():
            del self.pubacks[info.mid]
            return
        fut = self.loop.create_future()
        self.pubacks[info.mid] = fut
        await fut

    async def close(self) -> None:
        for c in (self.prod, self.cons):
            with contextlib.suppress(Exception):
                c.disconnect()
                c.loop_stop()


class NatsLink(Link):
    async def open(self) -> None:
        import nats

        run = self.spec.run_id
        self.subj_n = f"hbench.{run}.n.%d"
        self.subj_a = f"hbench.{run}.a.%d"
        self.stream = f"HBENCH_{run}"
        self.nc_p = await nats.connect(f"nats://{HOST}:{PORTS['nats']}", connect_timeout=5,
                                       allow_reconnect=False)
        self.nc_c = await nats.connect(f"nats://{HOST}:{PORTS['nats']}", connect_timeout=5,
                                       allow_reconnect=False)
        self.js_p = self.nc_p.jetstream()
        self.js_c = self.nc_c.jetstream()

        async def on_notice(msg: Any) -> None:
            src = int.from_bytes(msg.data[16:18], "big")
            await self.js_c.publish(self.subj_a % src, msg.data[:16] + self.reply_pad)
            await msg.ack()

        async def on_reply(msg: Any) -> None:
            self.on_reply(bytes(msg.data[:16]))
            await msg.ack()

        self.sub_c = await self.js_c.subscribe(self.subj_n % self.me, cb=on_notice,
                                               durable=f"c{self.me}", manual_ack=True,
                                               stream=self.stream)
        self.sub_p = await self.js_p.subscribe(self.subj_a % self.me, cb=on_reply,
                                               durable=f"p{self.me}", manual_ack=True,
                                               stream=self.stream)

    async def publish(self, mid: bytes, payload: bytes) -> None:
        await self.js_p.publish(self.subj_n % self.dst, mid + self.src + payload, timeout=10)

    async def close(self) -> None:
        for nc in (self.nc_p, self.nc_c):
            with contextlib.suppress(Exception):
                await nc.drain()


class RedisLink(Link):
    async def open(self) -> None:
        import redis.asyncio as aioredis

        run = self.spec.run_id
        self.key_n = f"hotline-bench:{run}:n:%d"
        self.key_a = f"hotline-bench:{run}:a:%d"
        self.r = aioredis.Redis(host=HOST, port=PORTS["redis"], max_connections=64)
        self.rc = aioredis.Redis(host=HOST, port=PORTS["redis"])  # consumer's blocking reads
        self.rp = aioredis.Redis(host=HOST, port=PORTS["redis"])  # producer's blocking reads
        for key in (self.key_n % self.me, self.key_a % self.me):
            with contextlib.suppress(Exception):  # BUSYGROUP: made by a previous phase
                await self.r.xgroup_create(key, "g", id="0", mkstream=True)
        self.tasks = [asyncio.create_task(self._consume()), asyncio.create_task(self._replies())]

    async def _consume(self) -> None:
        key = self.key_n % self.me
        while True:
            got = await self.rc.xreadgroup("g", f"c{self.me}", {key: ">"}, count=256,
                                           block=1000)
            for _stream, entries in got or ():
                ids = []
                for entry_id, fields in entries:
                    src = int(fields[b"src"])
                    await self.r.xadd(self.key_a % src, {"p": fields[b"p"][:16]
                                                         + self.reply_pad})
                    ids.append(entry_id)
                if ids:
                    await self.r.xack(key, "g", *ids)

    async def _replies(self) -> None:
        key = self.key_a % self.me
        while True:
            got = await self.rp.xreadgroup("g", f"p{self.me}", {key: ">"}, count=256,
                                           block=1000)
            for _stream, entries in got or ():
                ids = []
                for entry_id, fields in entries:
                    self.on_reply(bytes(fields[b"p"][:16]))
                    ids.append(entry_id)
                if ids:
                    await self.r.xack(key, "g", *ids)

    async def publish(self, mid: bytes, payload: bytes) -> None:
        await self.r.xadd(self.key_n % self.dst, {"src": str(self.me), "p": mid + payload})

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for c in (self.r, self.rc, self.rp):
            with contextlib.suppress(Exception):
                await c.aclose()


LINKS = {"mosquitto": MqttLink, "nats": NatsLink, "redis": RedisLink}


# --------------------------------------------------------------------------- worker


async def _worker(spec: PeerSpec, ready: Any, go: Any, stop: Any, finish: Any,
                  results: Any) -> None:
    loop = asyncio.get_running_loop()
    waiting: dict[bytes, asyncio.Future[None]] = {}
    sent: dict[bytes, list[float]] = {}
    errors: list[str] = []

    def on_reply(mid: bytes) -> None:
        rec = sent.get(mid)
        if rec is not None and not rec[2]:
            rec[2] = mono()
        fut = waiting.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    link = LINKS[spec.kind](spec, on_reply)
    await link.open()
    ready.put(spec.index)
    if not await wait_mp_event(go, 120):
        raise RuntimeError("no go signal")
    payload = os.urandom(spec.payload_bytes - 18)
    started = mono()

    async def lane() -> None:
        while not stop.is_set() and mono() - started < spec.max_seconds:
            mid = os.urandom(16)
            fut = loop.create_future()
            waiting[mid] = fut
            rec = [mono(), 0.0, 0.0]
            sent[mid] = rec
            try:
                await link.publish(mid, payload)
                rec[1] = mono()
                await asyncio.wait_for(fut, timeout=30)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                waiting.pop(mid, None)
                await asyncio.sleep(0.1)

    lanes = [asyncio.create_task(lane()) for _ in range(spec.window)]
    while not stop.is_set() and mono() - started < spec.max_seconds:
        await asyncio.sleep(0.05)
    await asyncio.wait(lanes, timeout=spec.drain_s)
    for t in lanes:
        t.cancel()
    ready.put(("drained", spec.index))
    await wait_mp_event(finish, spec.drain_s + 60)  # consumers stay up for the others
    results.put({"index": spec.index, "sent": sent, "errors": errors[:20],
                 "error_count": len(errors)})
    with contextlib.suppress(Exception):
        await asyncio.wait_for(link.close(), timeout=5)
    # Hand the results over, then leave at once (no lingering client tasks at exit).
    results.close()
    results.join_thread()
    os._exit(0)


def worker_main(spec: PeerSpec, ready: Any, go: Any, stop: Any, finish: Any,
                results: Any) -> None:
    import faulthandler

    # A worker that hangs prints where, and ends: every run is bounded in time.
    faulthandler.dump_traceback_later(spec.max_seconds + 150, exit=True)
    try:
        asyncio.run(_worker(spec, ready, go, stop, finish, results))
    except BaseException:
        fatal = {"index": spec.index, "fatal": traceback.format_exc()}
        ready.put(fatal)
        results.put(fatal)


# --------------------------------------------------------------------------- setup, cleanup


def _nats_stream(run_id: str, create: bool) -> str:
    import nats

    async def go() -> str:
        nc = await nats.connect(f"nats://{HOST}:{PORTS['nats']}", connect_timeout=5,
                                allow_reconnect=False)
        try:
            js = nc.jetstream()
            name = f"HBENCH_{run_id}"
            if create:
                from nats.js.api import StorageType, StreamConfig

                await js.add_stream(StreamConfig(name=name, subjects=[f"hbench.{run_id}.>"],
                                                 storage=StorageType.FILE))
                info = await js.account_info()
                return f"stream {name}: file storage (JetStream account {info.storage} B used)"
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
            return ""
        finally:
            await nc.close()

    return asyncio.run(go())


def _redis_setup(run_id: str, cleanup: bool) -> str:
    import redis

    r = redis.Redis(host=HOST, port=PORTS["redis"], socket_timeout=5)
    try:
        if cleanup:
            keys = list(r.scan_iter(match=f"hotline-bench:{run_id}:*", count=1000))
            if keys:
                r.delete(*keys)
            return ""
        cfg = {}
        for name in ("appendonly", "appendfsync", "save"):
            with contextlib.suppress(Exception):
                cfg.update(r.config_get(name))
        return (f"appendonly={cfg.get('appendonly')} appendfsync={cfg.get('appendfsync')} "
                f"save={cfg.get('save')!r}")
    finally:
        r.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_mosquitto(workdir: str) -> Any:
    """A Mosquitto of our own on a free loopback port, configured like the machine's
    (persistence on) but with ``set_tcp_nodelay true``: the machine's broker keeps the
    default (Nagle on), which holds small packets up to the client's 40 ms delayed ACK.
    Yields (port, pid), or None if no mosquitto binary is installed or it did not start."""
    import shutil
    import subprocess
    import time

    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if binary is None:
        yield None
        return
    port = _free_port()
    conf = os.path.join(workdir, "mosquitto.conf")
    with open(conf, "w") as fh:
        fh.write(f"listener {port} {HOST}\nallow_anonymous true\npersistence true\n"
                 f"persistence_location {workdir}/\nset_tcp_nodelay true\n"
                 + ("user root\n" if os.geteuid() == 0 else ""))
    log = open(os.path.join(workdir, "mosquitto.log"), "wb")
    proc = subprocess.Popen([binary, "-c", conf], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection((HOST, port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        yield (port, proc.pid) if proc.poll() is None else None
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


def _mosquitto_durability() -> str:
    try:
        with open("/etc/mosquitto/mosquitto.conf") as fh:
            lines = [ln.strip() for ln in fh if ln.strip().startswith(("persistence ",
                                                                       "autosave"))]
        return "; ".join(lines) + " (QoS 1 is not fsynced per message)" if lines else ""
    except OSError:
        return "configuration not readable"


# --------------------------------------------------------------------------- parent


def run_peer(kind: str, *, workers: int, window: int, payload_bytes: int, reply_bytes: int,
             warmup_s: float, measure_s: float, port: int = 0, broker_pid: int | None = None,
             label: str | None = None) -> dict[str, Any]:
    label = label or kind
    why = reachable(kind, port=port)
    if why is not None:
        say(f"peer {label}: absent ({why})")
        return {"status": "absent", "reason": why}
    run_id = os.urandom(4).hex()
    say(f"peer {label}: {workers} processes x (1 producer + 1 consumer), window {window}, "
        f"{measure_s:.0f} s measured")
    note = ""
    try:
        if kind == "nats":
            note = _nats_stream(run_id, create=True)
        elif kind == "redis":
            note = _redis_setup(run_id, cleanup=False)
        else:
            note = _mosquitto_durability() if not port else (
                "private broker: persistence true, set_tcp_nodelay true (QoS 1 is not "
                "fsynced per message)")
    except Exception as exc:
        say(f"peer {label}: absent (setup failed: {exc})")
        return {"status": "absent", "reason": f"setup failed: {type(exc).__name__}: {exc}"}
    watch = {}
    broker_pid = broker_pid or find_pid(BROKER_COMM[kind])
    if broker_pid is not None:
        watch["broker"] = broker_pid
    specs = [PeerSpec(kind, i, workers, run_id, window, payload_bytes, reply_bytes,
                      max_seconds=warmup_s + measure_s + 30, port=port)
             for i in range(workers)]
    try:
        win = run_workers(worker_main, specs, warmup_s=warmup_s, measure_s=measure_s,
                          drain_s=5.0, watch=watch, ready_timeout=60)
    except Exception as exc:
        say(f"peer {label}: failed: {str(exc)[-300:]}")
        return {"status": "failed", "reason": str(exc)[-2000:]}
    finally:
        with contextlib.suppress(Exception):
            if kind == "nats":
                _nats_stream(run_id, create=False)
            elif kind == "redis":
                _redis_setup(run_id, cleanup=True)
    completed = sum(1 for r in win.records for rec in r["sent"].values()
                    if win.t0 <= rec[2] < win.t1)
    lat_pub = [(rec[1] - rec[0]) * 1000 for r in win.records for rec in r["sent"].values()
               if win.t0 <= rec[0] < win.t1 and rec[1]]
    lat_done = [(rec[2] - rec[0]) * 1000 for r in win.records for rec in r["sent"].values()
                if win.t0 <= rec[0] < win.t1 and rec[2]]
    errors = sum(r["error_count"] for r in win.records)
    out = {
        "status": "measured", "workers": workers, "window_per_producer": window,
        "seconds": win.seconds, "completed": completed,
        "messages_per_s": completed / win.seconds,
        "broker_cpu_ms_per_message": (win.cpu["broker"] / completed * 1000
                                      if "broker" in win.cpu and completed else None),
        "clients_cpu_ms_per_message": win.workers_cpu_s / completed * 1000 if completed
        else None,
        "other_processes_cpu_util": win.other_cpu_s / win.seconds,
        "publish_confirmed_ms": percentiles(lat_pub), "reply_seen_ms": percentiles(lat_done),
        "errors": errors, "error_samples": [e for r in win.records for e in r["errors"]][:5],
        "durability": note, "loadavg_end": win.load,
    }
    say(f"  {label}: {out['messages_per_s']:.1f} messages/s completed; broker CPU "
        f"{out['broker_cpu_ms_per_message'] or 0:.3f} ms/message; errors {errors}")
    return out


def run_all(*, workers: int, window: int, payload_bytes: int, reply_bytes: int,
            warmup_s: float, measure_s: float, workdir: str) -> dict[str, Any]:
    """Every peer. Mosquitto twice: the machine's broker as configured, and a private one
    with TCP_NODELAY (the target compares with the faster of the two)."""
    args = dict(workers=workers, window=window, payload_bytes=payload_bytes,
                reply_bytes=reply_bytes, warmup_s=warmup_s, measure_s=measure_s)
    out = {"mosquitto": run_peer("mosquitto", **args)}  # type: ignore[arg-type]
    if out["mosquitto"]["status"] == "measured":
        mq_dir = os.path.join(workdir, "mosquitto")
        os.makedirs(mq_dir, exist_ok=True)
        with private_mosquitto(mq_dir) as broker:
            if broker is None:
                out["mosquitto_nodelay"] = {"status": "absent",
                                            "reason": "no mosquitto binary to start"}
            else:
                out["mosquitto_nodelay"] = run_peer(
                    "mosquitto", port=broker[0], broker_pid=broker[1],
                    label="mosquitto_nodelay", **args)  # type: ignore[arg-type]
    out["nats"] = run_peer("nats", **args)  # type: ignore[arg-type]
    out["redis"] = run_peer("redis", **args)  # type: ignore[arg-type]
    return out
