"""Setting up a relay home and running the relay process."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import sys
from pathlib import Path
from typing import IO, Any

import nacl.signing
from aiohttp import web

from keys import FederationRoot, RelayCard, Revocation, TrustStore
from keys.armor import dearmor_all
from keys.errors import HotlineError, UsageError
from keys.fingerprint import fingerprint
from keys.keyfile import (
    MODERATE,
    KdfLimits,
    atomic_write,
    decode_signing_key,
    encode_signing_key,
    ensure_private_dir,
    read_key_file,
    write_key_file,
)
from relay import config as config_mod
from relay import logs, tls
from relay.app import make_app
from relay.auth import Authenticator
from relay.clock import Clock, SystemClock
from relay.core import Relay
from relay.faults import SplitView
from relay.guard import start_site
from relay.hub import Hub
from relay.store import open_store
from relay.webhooks import WebhookSender


def init(
    home: Path,
    root_bytes: bytes,
    passphrase: bytes,
    *,
    relay_id: str,
    now: int,
    limits: KdfLimits = MODERATE,
    force: bool = False,
) -> RelayCard:
    """Create a relay home: signing key, card, pinned root and a default configuration."""
    root = FederationRoot.decode(root_bytes)
    root.check_initial(now)
    ensure_private_dir(home)
    if (home / "relay.key").exists() and not force:
        raise UsageError(f"{home / 'relay.key'} exists; this home is already set up")
    sk = nacl.signing.SigningKey.generate()
    write_key_file(
        home / "relay.key", "relay", encode_signing_key(relay_id, sk), passphrase, limits=limits
    )
    card = RelayCard.create(relay_id, sk, now)
    atomic_write(home / "relay.card", card.encode())
    atomic_write(home / "root", root.encode())
    (home / "revocations").mkdir(mode=0o700, exist_ok=True)
    if not (home / config_mod.CONFIG_NAME).exists():
        atomic_write(
            home / config_mod.CONFIG_NAME,
            config_mod.DEFAULT_FILE.format(relay_id=relay_id).encode(),
        )
    return card


def load_trust(home: Path, now: int) -> TrustStore:
    """The pinned root (every member's signature checked, not expired) and the
    revocations kept in the home's revocations/ folder (a file that does not decode or
    verify stops the start, naming the file)."""
    try:
        root = FederationRoot.decode((home / "root").read_bytes())
    except FileNotFoundError as exc:
        raise UsageError(f"{home} has no pinned root: run 'hotline relay init'") from exc
    root.check_initial(now)
    trust = TrustStore(root)
    for path, rev in read_revocation_folder(home):
        try:
            trust.add_revocation(rev)
        except HotlineError as exc:
            raise UsageError(f"{path}: {exc}") from exc
    return trust


def read_revocation_folder(home: Path) -> list[tuple[Path, Revocation]]:
    """The revocations in the home's revocations/ folder: raw or armoured files (as
    ``hotline authority revoke`` writes them, several to a file), hidden files skipped.
    Raises UsageError naming the first file that does not decode."""
    rev_dir = home / "revocations"
    out: list[tuple[Path, Revocation]] = []
    if not rev_dir.is_dir():
        return out
    for path in sorted(rev_dir.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            data = path.read_bytes()
            out += [(path, Revocation.decode(doc)) for doc in dearmor_all("revocation", data)]
        except (OSError, HotlineError) as exc:
            raise UsageError(f"{path}: not a revocation: {exc}") from exc
    return out


def folder_state(home: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a file in revocations/ is added, replaced or removed."""
    rev_dir = home / "revocations"
    try:
        entries = sorted(rev_dir.iterdir())
    except OSError:
        return ()
    state = []
    for path in entries:
        with contextlib.suppress(OSError):
            st = path.stat()
            state.append((path.name, st.st_mtime_ns, st.st_size))
    return tuple(state)


async def reload_revocations(home: Path, relay: Relay, auth: Authenticator, log: Any) -> int:
    """Apply the revocations in the home's folder to the running relay: each new one ends
    the key's sessions and streams and is pushed to the streams that asked. A file that
    does not decode or verify is logged by name and skipped; the others apply.
    Returns how many were new."""
    rev_dir = home / "revocations"
    paths = sorted(p for p in rev_dir.iterdir()
                   if not p.name.startswith(".") and p.is_file()) if rev_dir.is_dir() else []
    new = 0
    for path in paths:
        try:
            docs = dearmor_all("revocation", path.read_bytes())
            for doc in docs:
                rev, added = await relay.add_revocation(doc, keep=False)
                auth.revoke_sessions(rev.desk, rev.ik_kid)
                new += added
        except (OSError, HotlineError) as exc:
            log.error("revocation.file_refused", file=str(path), error=str(exc)[:300])
    log.info("revocations.reloaded", folder=str(rev_dir), new=new,
             known=relay.trust.revocation_count)
    return new


def add_stored_revocations(trust: TrustStore, bodies: list[bytes], log: Any) -> None:
    """Apply revocations received earlier. One signed by an authority key the current root
    no longer lists cannot be re-verified: it is reported, not fatal (its desk's
    certificate, from the same retired key, no longer verifies either)."""
    for body in bodies:
        try:
            trust.add_revocation(Revocation.decode(body))
        except HotlineError as exc:
            log.warning("revocation.unverifiable", error=str(exc)[:200])


def lock_database(path: str) -> IO[bytes] | None:
    """Take the exclusive lock ``PATH.lock`` beside the database, or refuse: two relays on
    one database would each escalate every deadline (and hand out sequence numbers
    from the same table). The lock is the open file itself; it ends with the process
    (also on SIGKILL), so a crashed relay never leaves a stale one."""
    if path == ":memory:" or path.startswith("file::memory:") or "://" in path:
        return None  # in memory, or a database server (several nodes share it by design)
    lock_path = f"{path}.lock"
    handle = open(lock_path, "a+b")  # held for the process lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise UsageError(f"another relay is already running on the database {path} (it holds "
                         f"{lock_path}); stop it first, or give this relay its own --db") from exc
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n".encode())
    handle.flush()
    return handle


async def serve(
    cfg: config_mod.RelayConfig,
    passphrase: bytes,
    *,
    clock: Clock | None = None,
    ready: asyncio.Event | None = None,
    database_locked: bool = False,
) -> None:
    """Run the relay until SIGINT/SIGTERM. Refuses to start if another relay runs on the
    same database (``database_locked``: the caller holds :func:`lock_database` already)
    or the address is taken."""
    lock = None if database_locked else lock_database(cfg.database_path)
    try:
        await _serve(cfg, passphrase, clock=clock, ready=ready)
    finally:
        if lock is not None:
            lock.close()


async def _serve(
    cfg: config_mod.RelayConfig,
    passphrase: bytes,
    *,
    clock: Clock | None,
    ready: asyncio.Event | None,
) -> None:
    logs.configure(cfg.log_level, fmt=cfg.log_format, loggers=cfg.log_levels)
    log = logs.get()
    lock = hold_home_lock(cfg.home)
    from aiohttp import http_parser

    if http_parser.HttpRequestParser.__module__ != "aiohttp._http_parser":
        # Several request-smuggling bugs affected only the pure-Python parser.
        raise UsageError("aiohttp runs without its C HTTP parser (AIOHTTP_NO_EXTENSIONS set, "
                         "or no compiled wheel); the relay refuses to run on the Python one")
    clock = clock or SystemClock()
    now = clock.now_ms()
    name, key = decode_signing_key(read_key_file(cfg.home / "relay.key", passphrase, kind="relay"))
    card = RelayCard.decode((cfg.home / "relay.card").read_bytes())
    if card.key != bytes(key.verify_key):
        raise UsageError("relay.card does not match relay.key")
    if card.relay_id != cfg.relay_id:
        raise UsageError(f"relay.id is {cfg.relay_id!r} in the configuration but the relay card "
                         f"was made for {card.relay_id!r}; clients could not verify its "
                         "statements. Set id to match, or run 'hotline relay init' again")
    trust = load_trust(cfg.home, now)
    store = open_store(cfg.database_path, sqlite_synchronous=cfg.test_only_sqlite_synchronous)
    if cfg.test_only_sqlite_synchronous != "FULL":
        log.warning("relay.durability_weakened", synchronous=cfg.test_only_sqlite_synchronous,
                    note="test-only setting: accepted notices may be lost on power loss")
    if cfg.test_only_answer_before_commit:
        log.warning("relay.durability_weakened", answer_before_commit=True,
                    note="test-only setting: accepted notices are lost on any crash")
    await store.open()
    add_stored_revocations(trust, store.revocations(), log)
    relay = Relay(config=cfg, store=store, trust=trust, key=key, card=card, clock=clock,
                  hub=Hub(), log=log)
    if cfg.test_only_split_view:
        relay.tlog.split = SplitView.parse(cfg.test_only_split_view)
        log.warning("relay.split_view", spec=cfg.test_only_split_view,
                    note="test-only setting: one country's desks are shown a forked log")
    await relay.tlog.start()  # logs the relay's key if it changed
    relay.escalator.file.max_bytes = cfg.escalation_log_max_bytes
    relay.escalator.file.keep = cfg.escalation_log_keep
    relay.metrics.watch_pending(lambda: store.counts(clock.now_ms()))
    relay.metrics.watch_disk(cfg.home, None if "://" in cfg.database_path
                             else Path(cfg.database_path))
    relay.metrics.root_expiry.set(trust.root.expires_at / 1000)
    ssl_context = None
    if cfg.tls is not None:
        ssl_context = tls.server_context(*cfg.tls)
        relay.metrics.tls_expiry.set(tls.not_after(cfg.tls[0]) or 0)
    auth = Authenticator(relay_id=card.relay_id, origin=cfg.effective_origin, trust=trust,
                         challenge_ttl_ms=cfg.limits.challenge_ttl_s * 1000,
                         session_ttl_ms=cfg.limits.session_ttl_s * 1000,
                         operators=cfg.operators)
    webhooks = WebhookSender(store=store, clock=clock, webhooks=cfg.webhooks,
                             relay_id=card.relay_id, origin=cfg.effective_origin,
                             log=logs.get("relay.webhooks"), metrics=relay.metrics)
    relay.escalator.on_webhooks = webhooks.poke
    app = make_app(relay, auth)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        listener = await start_site(runner, cfg.host, cfg.port,
                                    header_timeout=cfg.limits.header_timeout_s,
                                    log=logs.get("relay.http"), ssl_context=ssl_context)
    except OSError as exc:
        await runner.cleanup()
        await store.close()
        raise UsageError(f"cannot listen on {cfg.listen}: {exc.strerror or exc} (is another "
                         "relay or program using it? choose another with --listen)") from exc
    port = listener.sockets[0].getsockname()[1]
    if not cfg.origin:
        # Logins are bound to the origin desks signed for: with no origin configured it is
        # the address actually bound (port 0 picks a free one), never a shared placeholder.
        auth.origin = f"{'https' if ssl_context else 'http'}://{cfg.host}:{port}"
        webhooks.origin = auth.origin
    log.info(
        "relay.listening",
        host=cfg.host,
        port=port,
        relay_id=card.relay_id,
        origin=auth.origin,
        database=cfg.database_path,
        fingerprint=fingerprint("relay", card.relay_id, card.key),
        root_version=trust.root.version,
        tls=ssl_context is not None,
    )
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    # SIGHUP: re-read the TLS certificate (if served) and the revocations/ folder.
    reload_now = asyncio.Event()
    reload_tls: Any = None
    if ssl_context is not None and cfg.tls is not None:
        cert, cert_key = cfg.tls

        def reload_tls() -> None:
            try:
                tls.reload(ssl_context, cert, cert_key)
            except UsageError as exc:
                log.error("tls.reload_failed", error=str(exc)[:300], note="still serving "
                          "the previous certificate")
                return
            expiry = tls.not_after(cert) or 0
            relay.metrics.tls_expiry.set(expiry)
            log.info("tls.reloaded", cert=str(cert), not_after=expiry)

    def on_sighup() -> None:
        reload_now.set()
        if reload_tls is not None:
            reload_tls()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    if ready is not None:
        ready.set()
    sweeper = asyncio.create_task(_sweep(auth, clock, stop))
    prober = asyncio.create_task(_probe_readiness(relay, stop, log))
    escalator = asyncio.create_task(relay.escalator.run())
    sender = asyncio.create_task(webhooks.run())
    watcher = asyncio.create_task(_watch_revocations(cfg.home, relay, auth, reload_now, log))
    checkpointer = asyncio.create_task(relay.tlog.run())
    try:
        await stop.wait()
    finally:
        log.info("relay.stopping")
        sweeper.cancel()
        prober.cancel()
        watcher.cancel()
        relay.escalator.stop()
        webhooks.stop()
        relay.tlog.stop()
        listener.close()
        for task in (escalator, sender, checkpointer):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=5)
        await runner.cleanup()
        await relay.tlog.close()
        await store.close()
        log.info("relay.stopped")
        lock.close()
        del name


async def _sweep(auth: Authenticator, clock: Clock, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(30)
        auth.sweep(clock.now_ms())


#: Seconds between the readiness checks behind the hotline_ready gauge.
READY_EVERY_S = 15.0


async def _probe_readiness(relay: Relay, stop: asyncio.Event, log: Any) -> None:
    """The /readyz checks, run periodically for the hotline_ready gauge (alerts need a
    series; a scrape must not write to the database)."""
    while not stop.is_set():
        ok = relay.trust.root.expires_at > relay.clock.now_ms()
        try:
            await relay.store.check_writable()
        except Exception as exc:  # any failure means not ready; the reason is logged
            ok = False
            log.warning("relay.not_ready", error=str(exc)[:200])
        relay.metrics.ready.set(1 if ok else 0)
        relay.metrics.ready_checked.set(relay.clock.now_ms() / 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=READY_EVERY_S)


LOCK_NAME = "relay.lock"


def hold_home_lock(home: Path) -> Any:
    """An exclusive lock on the home while the relay serves: a second relay on the same
    home, or a restore under a running relay, is refused instead of corrupting it."""
    import fcntl

    fh = open(home / LOCK_NAME, "a+b")  # held for the process's lifetime
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        fh.close()
        raise UsageError(f"{home} is in use by a running relay ({home / LOCK_NAME} is "
                         "locked)") from exc
    return fh


#: How often the relay looks at its revocations/ folder for changes (SIGHUP: at once).
REVOCATION_POLL_S = 2.0


async def _watch_revocations(home: Path, relay: Relay, auth: Authenticator,
                             now: asyncio.Event, log: Any) -> None:
    seen = folder_state(home)
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REVOCATION_POLL_S):
                await now.wait()
        forced = now.is_set()
        now.clear()
        state = folder_state(home)
        if forced or state != seen:
            seen = state
            try:
                await reload_revocations(home, relay, auth, log)
            except Exception:  # the watcher must outlive any one failure
                log.exception("revocations.reload_failed")
