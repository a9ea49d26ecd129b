"""Shared pieces of the benchmark: a relay child process measured from /proc, the bench
federation, percentiles, timing helpers.

Every relay here is a real ``hotline relay serve`` process on 127.0.0.1 (port 0: a free
one), with its log written to a file in its home (as a deployment would send it to a
journal), its durability settings untouched (WAL, synchronous=FULL) and only its rate
limits raised so that one benchmark desk may send thousands of notices a minute.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: Rate limits a benchmark relay runs with (the defaults are sized for humans: 600 notices
#: per desk per minute). Durability settings are never changed.
BENCH_LIMITS = {
    "HOTLINE_RELAY_LIMITS_NOTICES_PER_MINUTE": "10000000",
    "HOTLINE_RELAY_LIMITS_CONFIRMATIONS_PER_MINUTE": "10000000",
    "HOTLINE_RELAY_LIMITS_MAX_PENDING_PER_DESK": "10000000",
    "HOTLINE_RELAY_LIMITS_AUTH_PER_MINUTE_PER_ADDRESS": "100000",
}


def mono() -> float:
    """System-wide monotonic seconds (CLOCK_MONOTONIC): comparable across processes."""
    return time.monotonic()


def loadavg() -> tuple[float, float, float]:
    with open("/proc/loadavg") as fh:
        a, b, c = fh.read().split()[:3]
    return float(a), float(b), float(c)


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        raw = fh.read()
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of a process's main thread (its event loop) and of its other threads
    (for the relay: the SQLite writer and the default executor)."""
    out = {"main_thread": 0.0, "other_threads": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        key = "main_thread" if int(tid) == pid else "other_threads"
        out[key] += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def proc_kernel(pid: int) -> dict[str, float]:
    """A process's system-call counts (reads, writes) and kernel-mode CPU seconds."""
    out = {"read_syscalls": 0.0, "write_syscalls": 0.0, "kernel_cpu_s": 0.0}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/io") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key == "syscr":
                out["read_syscalls"] = float(value)
            elif key == "syscw":
                out["write_syscalls"] = float(value)
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as fh:
        raw = fh.read()
        out["kernel_cpu_s"] = int(raw[raw.rindex(")") + 2:].split()[12]) / CLK_TCK
    return out


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine (all cores), from /proc/stat."""
    with open("/proc/stat") as fh:
        parts = fh.readline().split()[1:]
    vals = [int(x) for x in parts]
    idle = vals[3] + vals[4]  # idle + iowait
    return (sum(vals[:8]) - idle) / CLK_TCK


def percentiles(values: Iterable[float]) -> dict[str, float | int | None]:
    xs = sorted(values)
    if not xs:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}

    def pick(q: float) -> float:  # nearest rank
        return xs[max(0, min(len(xs) - 1, math.ceil(q * len(xs)) - 1))]

    return {"n": len(xs), "p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99),
            "max": xs[-1], "mean": sum(xs) / len(xs)}


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


# --------------------------------------------------------------------------- federation


def bench_env() -> dict[str, str]:
    from tests.relay_harness import TEST_ENV

    return dict(TEST_ENV)


def make_desks(base: Path, desks: tuple[str, ...], *,
               classical: tuple[str, ...] = ()) -> dict[str, Path]:
    """Authorities, a root and certified desks (fast test KDF) under ``base``; hybrid
    encryption keys (the default for new desks) except for those in ``classical``."""
    from tests.relay_harness import make_federation

    return make_federation(base, desks, classical=classical)


# --------------------------------------------------------------------------- relay


@dataclass
class BenchRelay:
    """A relay child process; ``start()`` returns once it listens."""

    base: Path
    name: str = "relay"
    env: dict[str, str] = field(default_factory=dict)
    toml_extra: str = ""
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    home: Path = field(init=False)

    def __post_init__(self) -> None:
        self.home = self.base / self.name

    def init(self) -> BenchRelay:
        import io

        from client.cli.main import main
        from tests.relay_harness import test_env

        out, err = io.StringIO(), io.StringIO()
        with test_env(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["relay", "init", "--home", str(self.home), "--root",
                         str(self.base / "federation.root"), "--id", "bench-relay"])
        if code != 0:
            raise RuntimeError(f"relay init failed: {err.getvalue()}")
        if self.toml_extra:
            with open(self.home / "relay.toml", "a") as fh:
                fh.write("\n" + self.toml_extra + "\n")
        return self

    @property
    def log_path(self) -> Path:
        return self.home / "relay.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> BenchRelay:
        env = dict(os.environ) | bench_env() | BENCH_LIMITS | self.env
        env.pop("HOTLINE_RELAY", None)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "client.cli.main", "relay", "serve", "--home",
                 str(self.home), "--listen", "127.0.0.1:0"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=str(REPO))
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            for entry in self.log_entries():
                if entry.get("event") == "relay.listening":
                    self.port = int(entry["port"])
                    return self
            time.sleep(0.05)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"the relay did not start:\n{tail}")

    def log_entries(self) -> Iterator[dict[str, Any]]:
        with open(self.log_path, "rb") as fh:
            for line in fh:
                with contextlib.suppress(ValueError):
                    yield json.loads(line)

    def count_events(self, name: str) -> int:
        needle = f'"event": "{name}"'.encode()
        alt = f'"event":"{name}"'.encode()
        n = 0
        with open(self.log_path, "rb") as fh:
            for line in fh:
                if needle in line or alt in line:
                    n += 1
        return n

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def rss_mb(self) -> float:
        return proc_rss_mb(self.pid)

    def db_size_mb(self) -> float:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            p = self.home / f"relay.db{suffix}"
            if p.exists():
                total += p.stat().st_size
        return total / (1 << 20)

    def metric(self, name: str) -> float | None:
        """Sum of one metric's samples on the relay's /metrics page (None if absent)."""
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=10) as resp:  # noqa: S310
                text = resp.read().decode()
        except OSError:
            return None
        total, found = 0.0, False
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
                found = True
        return total if found else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> BenchRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sample_report(**overrides: Any) -> Any:
    """A typical incident report (about 0.7 kB of text): what every benchmark notice carries."""
    from keys import AiSystem, IncidentReport

    base: dict[str, Any] = dict(
        title="FrontierX-3 model weights posted on a public tracker",
        summary="Weights matching a lab release candidate appeared at 02:10 UTC on a public "
                "torrent tracker; several mirrors are up.",
        body="Hashes match the lab's release candidate rc2. Mirrors are spreading across "
             "three hosting providers; takedown requests are under way. We ask partner "
             "desks to block the listed mirrors in their regions and to report any further "
             "copies. Indicators and the list of mirrors follow in the next notice.",
        category="model-weights-leak", aware_at=int(time.time() * 1000) - 40 * 60_000,
        tlp="amber", systems=(AiSystem("FrontierX-3", "rc2", "Example Lab"),),
        countries=("us", "cn"), actions=("Block the listed mirrors",),
        contact="us.caisi duty officer")
    base.update(overrides)
    return IncidentReport(**base)


# --------------------------------------------------------------------------- worker pools


@dataclass
class Window:
    """What a pool of worker processes did during the measured window."""

    t0: float
    t1: float
    records: list[dict[str, Any]]
    cpu: dict[str, float]  # watched process name -> CPU seconds in the window
    threads: dict[str, float]  # thread name -> CPU seconds in the window (thread_pid)
    kernel: dict[str, float]  # thread_pid's system calls and kernel CPU in the window
    workers_cpu_s: float
    machine_busy_s: float
    load: tuple[float, float, float]

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0

    @property
    def other_cpu_s(self) -> float:
        """CPU the machine spent on processes outside the measurement (contention)."""
        return max(0.0, self.machine_busy_s - self.workers_cpu_s - sum(self.cpu.values()))


def _cpu_or_zero(pid: int) -> float:
    try:
        return proc_cpu_s(pid)
    except OSError:
        return 0.0


def run_workers(target: Any, specs: list[Any], *, warmup_s: float, measure_s: float,
                drain_s: float, watch: dict[str, int] | None = None,
                thread_pid: int | None = None, ready_timeout: float = 90.0,
                on_window: Any = None) -> Window:
    """Start one spawned process per spec running ``target(spec, ready, go, stop, finish,
    results)``; once all are ready, let them go, measure a window of ``measure_s`` after
    ``warmup_s``, then stop them (``stop``: send no more; each drains what it sent and
    says so on ``ready``; ``finish`` once all have: every consumer stayed up until every
    producer was done) and collect one result dict from each."""
    import multiprocessing as mp
    import queue as queue_mod

    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    go, stop, finish = ctx.Event(), ctx.Event(), ctx.Event()
    procs = [ctx.Process(target=target, args=(s, ready, go, stop, finish, results),
                         daemon=True) for s in specs]
    for p in procs:
        p.start()
    watch = dict(watch or {})
    out: list[dict[str, Any]] = []
    t_start = mono()
    try:
        for _ in specs:
            try:
                got = ready.get(timeout=ready_timeout)
            except queue_mod.Empty:
                raise RuntimeError(f"workers were not ready within {ready_timeout} s") from None
            if isinstance(got, dict) and "fatal" in got:
                raise RuntimeError("a worker failed while starting:\n" + got["fatal"])
        t_ready = mono()
        go.set()
        time.sleep(warmup_s)
        pids = [p.pid for p in procs if p.pid is not None]
        t0, m0 = mono(), machine_cpu_s()
        w0 = sum(_cpu_or_zero(pid) for pid in pids)
        c0 = {k: _cpu_or_zero(pid) for k, pid in watch.items()}
        th0 = thread_cpu_s(thread_pid) if thread_pid else {}
        k0 = proc_kernel(thread_pid) if thread_pid else {}
        if on_window is not None:
            on_window(measure_s)
        time.sleep(measure_s)
        t1, m1 = mono(), machine_cpu_s()
        w1 = sum(_cpu_or_zero(pid) for pid in pids)
        c1 = {k: _cpu_or_zero(pid) for k, pid in watch.items()}
        th1 = thread_cpu_s(thread_pid) if thread_pid else {}
        k1 = proc_kernel(thread_pid) if thread_pid else {}
        load = loadavg()
        stop.set()
        with contextlib.suppress(queue_mod.Empty):
            for _ in specs:
                ready.get(timeout=drain_s + 60)
        finish.set()
        for _ in specs:
            try:
                out.append(results.get(timeout=drain_s + 90))
            except queue_mod.Empty:
                break
        t_done = mono()
    finally:
        stop.set()
        finish.set()
        for p in procs:
            p.join(15)
            if p.is_alive():
                p.terminate()
                p.join(5)
    fatal = [r["fatal"] for r in out if "fatal" in r]
    if fatal:
        raise RuntimeError("a worker failed:\n" + fatal[0])
    if len(out) < len(specs):
        raise RuntimeError(f"only {len(out)} of {len(specs)} workers reported")
    say(f"  (workers ready in {t_ready - t_start:.1f} s, results {t_done - t1:.1f} s after "
        "the window)")
    threads = {k: v - th0.get(k, 0.0) for k, v in th1.items()}
    kernel = {k: v - k0.get(k, 0.0) for k, v in k1.items()}
    return Window(t0, t1, out, {k: c1[k] - c0[k] for k in watch}, threads, kernel, w1 - w0,
                  m1 - m0, load)


def find_pid(comm: str) -> int | None:
    """The pid of a running process whose command name is ``comm`` (read from /proc)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as fh:
                if fh.read().strip() == comm:
                    return int(entry)
        except OSError:
            continue
    return None


async def wait_mp_event(event: Any, timeout: float) -> bool:
    import asyncio

    deadline = mono() + timeout
    while mono() < deadline:
        if event.is_set():
            return True
        await asyncio.sleep(0.02)
    return False
