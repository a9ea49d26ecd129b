"""``hotline relay init|serve``: the relay's composition root (imports ``relay`` lazily)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from client.cli.common import COMMON
from client.home import kdf_limits, now_ms, read_document, read_passphrase
from keys.errors import UsageError
from keys.fingerprint import fingerprint


def register(groups: Any) -> None:
    relay = groups.add_parser("relay", help="run a relay").add_subparsers(
        dest="cmd", metavar="ACTION", required=True)
    p = relay.add_parser("init", parents=[COMMON],
                         help="create a relay home: signing key, pinned root, configuration")
    p.add_argument("--root", required=True, help="the federation root to pin")
    p.add_argument("--id", default="hotline-relay", help="relay name used in attestations")
    p.add_argument("--force", action="store_true", help="replace an existing relay key")
    p.set_defaults(run=cmd_init)
    p = relay.add_parser("serve", parents=[COMMON], help="run the relay")
    p.add_argument("--listen", help="HOST:PORT (default from relay.toml: 127.0.0.1:8750)")
    p.add_argument("--db", help="database: a SQLite file path (default relay.db in the home)")
    p.add_argument("--origin", help="the URL desks reach this relay at")
    p.set_defaults(run=cmd_serve)


def _home(args: argparse.Namespace) -> Path:
    from client.home import resolve_home

    home = getattr(args, "home", None)
    return resolve_home(home) if home else resolve_home(None).with_name(".hotline-relay")


def cmd_init(args: argparse.Namespace) -> int:
    from relay import server

    home = _home(args)
    passphrase = read_passphrase(getattr(args, "passphrase_file", None), confirm=True,
                                 what="relay key")
    card = server.init(home, read_document(args.root, "root"), passphrase, relay_id=args.id,
                       now=now_ms(), limits=kdf_limits(), force=args.force)
    print(f"relay {card.relay_id}: home {home}")
    print(f"relay fingerprint: {fingerprint('relay', card.relay_id, card.key)}")
    print(f"start it with: hotline relay serve --home {home}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from relay import config, server

    home = _home(args)
    if not (home / "relay.key").exists():
        raise UsageError(f"no relay key in {home}: run 'hotline relay init' or pass the "
                         "relay's --home")
    cfg = config.load(home, {"listen": args.listen, "database": args.db,
                             "origin": args.origin})
    # Refused before the passphrase is asked or the key decrypted.
    lock = server.lock_database(cfg.database_path)
    try:
        passphrase = read_passphrase(getattr(args, "passphrase_file", None), what="relay key")
        asyncio.run(server.serve(cfg, passphrase, database_locked=True))
    except KeyboardInterrupt:
        pass
    finally:
        if lock is not None:
            lock.close()
    return 0
