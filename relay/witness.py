"""``hotline witness``: a C2SP tlog-witness (c2sp.org/tlog-witness) for Hotline relay logs.

``POST /add-checkpoint`` takes ``old <size>``, up to 63 base64 consistency-proof lines, an
empty line and a signed checkpoint, and answers (section "add-checkpoint"):

    200  cosignature/v1 signature lines (text/plain)
    400  malformed body, or old size > checkpoint size
    403  no signature by a trusted key of the origin, or a trusted key's bad signature
    404  unknown origin
    409  old size differs from the stored size; body "<stored size>\\n", text/x.tlog.size
    422  bad consistency proof; non-empty proof from 0; size 0 with a non-empty root;
         equal sizes with different roots

``GET /<hex SHA-256(origin)>/checkpoint`` serves the latest cosigned checkpoint
("Monitor Retrieval Mechanism"); 404 before the first.

State: one SQLite file (``witness.db``), one row per origin. The check and the update are
one ``BEGIN IMMEDIATE`` transaction whose UPDATE is also a compare-and-swap on the stored
size, so two racing requests with the same old size cannot both win and nothing can roll
the witness back (the race the spec describes). ``synchronous=FULL``: a 200 means the new
size is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import signal
import sqlite3
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing
from aiohttp import web

from keys.checkpoint import Checkpoint, Cosigner, parse_log_vkey
from keys.errors import BadSignature, UntrustedKey, UsageError
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
from keys.note import NoteError, Verifier, b64decode, check_name, open_note, split
from keys.tlog import EMPTY_ROOT, MAX_PROOF_HASHES, ProofError, verify_consistency
from relay import logs
from relay.clock import Clock, SystemClock
from relay.guard import start_site

CONFIG_NAME = "witness.toml"
KEY_NAME = "witness.key"
DB_NAME = "witness.db"
#: The largest add-checkpoint body: 63 proof lines (~45 bytes each) and a note.
MAX_BODY_BYTES = 80 * 1024
#: Seconds a request has to deliver its body once its headers are in.
BODY_TIMEOUT_S = 10.0
HEADER_TIMEOUT_S = 10.0
KEEPALIVE_TIMEOUT_S = 30.0
_OLD = re.compile(r"old (0|[1-9][0-9]{0,18})")

DEFAULT_FILE = """\
# Hotline witness configuration.
name = "{name}"
listen = "127.0.0.1:8760"
database = "witness.db"
log_level = "info"

# One [[logs]] table per log this witness cosigns: its checkpoint origin and the log's
# Ed25519 verifier key(s) (hotline.relay/<relay id>+<key id>+<key>).
{logs}"""


@dataclass(frozen=True, slots=True)
class WitnessedLog:
    origin: str
    keys: tuple[Verifier, ...]


@dataclass(frozen=True, slots=True)
class WitnessConfig:
    home: Path
    name: str
    host: str = "127.0.0.1"
    port: int = 8760
    database: Path = Path(DB_NAME)
    log_level: str = "info"
    logs: tuple[WitnessedLog, ...] = ()

    @property
    def database_path(self) -> Path:
        return self.database if self.database.is_absolute() else self.home / self.database


def _log_table(origin: str, keys: list[str]) -> str:
    quoted = ", ".join(f'"{k}"' for k in keys)
    return f'[[logs]]\norigin = "{origin}"\nkeys = [{quoted}]\n'


def load_config(home: Path, overrides: dict[str, Any] | None = None) -> WitnessConfig:
    """Read ``witness.toml``; every error names the setting."""
    path = home / CONFIG_NAME
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UsageError(f"{path} does not exist: run 'hotline witness init'") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: {exc}") from exc
    o = {k: v for k, v in (overrides or {}).items() if v is not None}
    listen = str(o.get("listen", raw.get("listen", "127.0.0.1:8760")))
    host, _, port_s = listen.rpartition(":")
    if not host or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise UsageError(f"listen {listen!r} is not HOST:PORT")
    name = raw.get("name")
    if not isinstance(name, str):
        raise UsageError(f"{path}: name is missing")
    wlogs = []
    origins: set[str] = set()
    for i, entry in enumerate(raw.get("logs", [])):
        origin = entry.get("origin") if isinstance(entry, dict) else None
        keys = entry.get("keys") if isinstance(entry, dict) else None
        if not isinstance(origin, str) or not isinstance(keys, list) or not keys:
            raise UsageError(f"{path}: logs[{i}] needs origin and a non-empty keys list")
        try:
            check_name(origin)
            verifiers = tuple(parse_log_vkey(str(k)) for k in keys)
        except NoteError as exc:
            raise UsageError(f"{path}: logs[{i}] ({origin[:80]}): {exc.message}") from exc
        if origin in origins:
            raise UsageError(f"{path}: origin {origin!r} is listed twice")
        origins.add(origin)
        wlogs.append(WitnessedLog(origin, verifiers))
    return WitnessConfig(
        home=home, name=name, host=host, port=int(port_s),
        database=Path(str(o.get("database", raw.get("database", DB_NAME)))),
        log_level=str(raw.get("log_level", "info")), logs=tuple(wlogs))


def init(home: Path, name: str, passphrase: bytes, *, logs_: Sequence[str] = (),
         limits: KdfLimits = MODERATE, force: bool = False) -> Cosigner:
    """Create a witness home: key file and configuration. ``logs_`` are log vkeys (their
    key name is the origin). Returns the cosigner (for its vkey)."""
    check_name(name)
    ensure_private_dir(home)
    if (home / KEY_NAME).exists() and not force:
        raise UsageError(f"{home / KEY_NAME} exists; this witness is already set up")
    by_origin: dict[str, list[str]] = {}
    for vk in logs_:
        try:
            v = parse_log_vkey(vk)
        except NoteError as exc:
            raise UsageError(f"--log {vk[:80]!r}: {exc.message}") from exc
        by_origin.setdefault(v.name, []).append(vk)
    sk = nacl.signing.SigningKey.generate()
    write_key_file(home / KEY_NAME, "witness", encode_signing_key(name, sk), passphrase,
                   limits=limits)
    tables = "\n".join(_log_table(o, ks) for o, ks in by_origin.items())
    atomic_write(home / CONFIG_NAME, DEFAULT_FILE.format(name=name, logs=tables).encode())
    return Cosigner(name, sk)


def load_cosigner(home: Path, passphrase: bytes) -> Cosigner:
    name, sk = decode_signing_key(read_key_file(home / KEY_NAME, passphrase, kind="witness"))
    return Cosigner(name, sk)


# --------------------------------------------------------------------------------- state


class WitnessState:
    """The latest cosigned checkpoint per origin, in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS checkpoints ("
                " origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL,"
                " note BLOB NOT NULL, updated_at INTEGER NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def latest(self, origin: str) -> tuple[int, bytes, bytes] | None:
        with contextlib.closing(self._connect()) as db:
            row = db.execute("SELECT size, root, note FROM checkpoints WHERE origin = ?",
                             (origin,)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]))

    def latest_by_hash(self, origin_hash: str) -> bytes | None:
        with contextlib.closing(self._connect()) as db:
            for origin, note_ in db.execute("SELECT origin, note FROM checkpoints"):
                if hashlib.sha256(origin.encode()).hexdigest() == origin_hash:
                    return bytes(note_)
        return None

    def advance(self, cp: Checkpoint, old_size: int, proof: list[bytes],
                cosign: Callable[[], bytes], now_s: int) -> bytes:
        """Atomically: check ``old_size`` against the stored size (``Conflict``), check the
        proof against the *stored* root (``ProofError``), cosign and store. Returns the
        stored cosigned note. ``cosign(stored_note_text) -> note bytes``."""
        with contextlib.closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT size, root FROM checkpoints WHERE origin = ?",
                                 (cp.origin,)).fetchone()
                stored_size, stored_root = (0, EMPTY_ROOT) if row is None else (
                    int(row[0]), bytes(row[1]))
                if old_size != stored_size:
                    raise Conflict(stored_size)
                check_proof(old_size, stored_root, cp, proof)
                note_ = cosign()
                if row is None:
                    db.execute("INSERT INTO checkpoints (origin, size, root, note, updated_at)"
                               " VALUES (?, ?, ?, ?, ?)",
                               (cp.origin, cp.size, cp.root, note_, now_s))
                else:
                    cur = db.execute(
                        "UPDATE checkpoints SET size = ?, root = ?, note = ?, updated_at = ?"
                        " WHERE origin = ? AND size = ?",
                        (cp.size, cp.root, note_, now_s, cp.origin, stored_size))
                    if cur.rowcount != 1:  # cannot happen under BEGIN IMMEDIATE; refuse
                        raise Conflict(stored_size)
                db.execute("COMMIT")
                return bytes(note_)
            except BaseException:
                db.execute("ROLLBACK")
                raise


class Conflict(Exception):
    def __init__(self, stored_size: int) -> None:
        super().__init__(stored_size)
        self.stored_size = stored_size


def check_proof(old_size: int, old_root: bytes, cp: Checkpoint, proof: list[bytes]) -> None:
    """tlog-witness consistency rules; raises ``ProofError`` (answered 422)."""
    if not cp.root_is_valid_for_empty:
        raise ProofError("a checkpoint of size 0 must carry the empty tree's root")
    if old_size == 0:
        if proof:
            raise ProofError("the consistency proof from size 0 must be empty")
        return
    verify_consistency(old_size, cp.size, proof, old_root, cp.root)


# ------------------------------------------------------------------------------ requests


class BadRequest(Exception):
    pass


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], bytes]:
    """Split a request body into old size, proof hashes and the signed checkpoint note."""
    lines_end = body.find(b"\n\n")
    if lines_end < 0:
        raise BadRequest("no empty line before the checkpoint")
    head = body[:lines_end].split(b"\n")
    try:
        first = head[0].decode("ascii")
    except UnicodeDecodeError as exc:
        raise BadRequest("the old size line is not ASCII") from exc
    m = _OLD.fullmatch(first)
    if m is None:
        raise BadRequest(f"the first line is not 'old <size>': {first[:40]!r}")
    proof_lines = head[1:]
    if len(proof_lines) > MAX_PROOF_HASHES:
        raise BadRequest(f"{len(proof_lines)} consistency proof lines; at most 63")
    proof = []
    for i, raw in enumerate(proof_lines):
        try:
            h = b64decode(raw.decode("ascii"), f"proof line {i + 1}")
        except (UnicodeDecodeError, NoteError) as exc:
            raise BadRequest(f"proof line {i + 1} is not base64") from exc
        if len(h) != 32:
            raise BadRequest(f"proof line {i + 1} is {len(h)} bytes, not a SHA-256 hash")
        proof.append(h)
    return int(m[1]), proof, body[lines_end + 2:]


def _text(status: int, message: str, content_type: str = "text/plain") -> web.Response:
    # body=, not text=: aiohttp would add "; charset=utf-8" to text/x.tlog.size.
    return web.Response(status=status, body=(message + "\n").encode(), content_type=content_type)


class Witness:
    """The request handling, given a configuration, a key, a state file and a clock."""

    def __init__(self, cfg: WitnessConfig, cosigner: Cosigner, state: WitnessState,
                 clock: Clock, log: Any) -> None:
        self.cfg = cfg
        self.cosigner = cosigner
        self.state = state
        self.clock = clock
        self.log = log
        self.logs = {wl.origin: wl for wl in cfg.logs}

    async def add_checkpoint(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _text(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
        try:
            body = await asyncio.wait_for(request.read(), BODY_TIMEOUT_S)
        except TimeoutError:
            return _text(408, f"request body not received within {BODY_TIMEOUT_S:.0f}s")
        except web.HTTPRequestEntityTooLarge:
            return _text(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
        status, resp = await self._add(body)
        return resp if isinstance(resp, web.Response) else _text(status, resp)

    async def _add(self, body: bytes) -> tuple[int, str | web.Response]:
        try:
            old_size, proof, msg = parse_add_checkpoint(body)
            text, _ = split(msg)
            cp = Checkpoint.parse(text)
        except (BadRequest, NoteError) as exc:
            return 400, f"malformed request: {exc}"
        wlog = self.logs.get(cp.origin)
        if wlog is None:
            return 404, f"unknown log origin {cp.origin[:100]!r}"
        try:
            signed = open_note(msg, wlog.keys)
        except (BadSignature, UntrustedKey) as exc:
            self.log.warning("witness.bad_signature", origin=cp.origin, error=str(exc)[:200])
            return 403, "no valid signature by a trusted key of this log"
        except NoteError as exc:
            return 400, f"malformed checkpoint note: {exc}"
        if old_size > cp.size:
            return 400, f"old size {old_size} is larger than the checkpoint size {cp.size}"
        now_s = self.clock.now_ms() // 1000
        log_lines = b"".join(s.line().encode() for s in signed.verified)

        made: list[bytes] = []

        def cosign() -> bytes:
            made.append(self.cosigner.cosign(signed.text, now_s).line().encode())
            return signed.text + b"\n" + log_lines + made[-1]

        try:
            await asyncio.to_thread(self.state.advance, cp, old_size, proof,
                                             cosign, now_s)
        except Conflict as exc:
            self.log.info("witness.conflict", origin=cp.origin, old=old_size,
                          stored=exc.stored_size, size=cp.size)
            return 409, _text(409, str(exc.stored_size), content_type="text/x.tlog.size")
        except ProofError as exc:
            # Signed by the log yet inconsistent with what we cosigned: evidence of a fork.
            self.log.warning("witness.inconsistent", origin=cp.origin, old=old_size,
                             size=cp.size, error=exc.message[:200],
                             checkpoint=msg.decode(errors="replace")[:2000])
            return 422, f"consistency check failed: {exc.message}"
        self.log.info("witness.cosigned", origin=cp.origin, size=cp.size, old=old_size)
        return 200, web.Response(status=200, body=made[-1], content_type="text/plain",
                                 charset="utf-8")

    async def get_checkpoint(self, request: web.Request) -> web.Response:
        origin_hash = request.match_info["origin_hash"]
        stored = await asyncio.to_thread(self.state.latest_by_hash, origin_hash)
        if stored is None:
            return _text(404, "no checkpoint cosigned for that log")
        return web.Response(body=stored, content_type="text/plain", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})


def make_app(witness: Witness) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/add-checkpoint", witness.add_checkpoint)
    app.router.add_get(r"/{origin_hash:[0-9a-f]{64}}/checkpoint", witness.get_checkpoint)
    return app


async def serve(cfg: WitnessConfig, passphrase: bytes, *, clock: Clock | None = None,
                ready: asyncio.Event | None = None) -> None:
    """Run the witness until SIGINT/SIGTERM."""
    logs.configure(cfg.log_level)
    log = logs.get("witness")
    cosigner = load_cosigner(cfg.home, passphrase)
    if cosigner.name != cfg.name:
        raise UsageError(f"name is {cfg.name!r} in {CONFIG_NAME} but the key was made for "
                         f"{cosigner.name!r}")
    if not cfg.logs:
        log.warning("witness.no_logs", note=f"no [[logs]] in {CONFIG_NAME}: every "
                    "checkpoint will be refused as unknown (404)")
    state = WitnessState(cfg.database_path)
    witness = Witness(cfg, cosigner, state, clock or SystemClock(), log)
    runner = web.AppRunner(make_app(witness), handler_cancellation=True, access_log=None,
                           keepalive_timeout=KEEPALIVE_TIMEOUT_S)
    await runner.setup()
    listener = await start_site(runner, cfg.host, cfg.port, header_timeout=HEADER_TIMEOUT_S,
                                log=log)
    port = listener.sockets[0].getsockname()[1]
    log.info("witness.listening", host=cfg.host, port=port, name=cosigner.name,
             vkey=cosigner.vkey(), logs=[wl.origin for wl in cfg.logs])
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        listener.close()
        await runner.cleanup()
        log.info("witness.stopped")


__all__ = [
    "Witness",
    "WitnessConfig",
    "WitnessState",
    "check_proof",
    "init",
    "load_config",
    "make_app",
    "parse_add_checkpoint",
    "serve",
]
