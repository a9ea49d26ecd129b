"""Setting up a relay home and running the relay process."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import nacl.signing
from aiohttp import web

from keys import FederationRoot, RelayCard, Revocation, TrustStore
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
    revocations kept in the home's revocations/ folder."""
    try:
        root = FederationRoot.decode((home / "root").read_bytes())
    except FileNotFoundError as exc:
        raise UsageError(f"{home} has no pinned root: run 'hotline relay init'") from exc
    root.check_initial(now)
    trust = TrustStore(root)
    rev_dir = home / "revocations"
    if rev_dir.is_dir():
        for path in sorted(rev_dir.iterdir()):
            trust.add_revocation(Revocation.decode(path.read_bytes()))
    return trust


def add_stored_revocations(trust: TrustStore, bodies: list[bytes], log: Any) -> None:
    """Apply revocations received earlier. One signed by an authority key the current root
    no longer lists cannot be re-verified: it is reported, not fatal (its desk's
    certificate, from the same retired key, no longer verifies either)."""
    for body in bodies:
        try:
            trust.add_revocation(Revocation.decode(body))
        except HotlineError as exc:
            log.warning("revocation.unverifiable", error=str(exc)[:200])


async def serve(
    cfg: config_mod.RelayConfig,
    passphrase: bytes,
    *,
    clock: Clock | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Run the relay until SIGINT/SIGTERM."""
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
    listener = await start_site(runner, cfg.host, cfg.port,
                                header_timeout=cfg.limits.header_timeout_s,
                                log=logs.get("relay.http"), ssl_context=ssl_context)
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

        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, reload_tls)
    if ready is not None:
        ready.set()
    sweeper = asyncio.create_task(_sweep(auth, clock, stop))
    prober = asyncio.create_task(_probe_readiness(relay, stop, log))
    escalator = asyncio.create_task(relay.escalator.run())
    sender = asyncio.create_task(webhooks.run())
    checkpointer = asyncio.create_task(relay.tlog.run())
    try:
        await stop.wait()
    finally:
        log.info("relay.stopping")
        sweeper.cancel()
        prober.cancel()
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
