"""``hotline relay init|serve``: the relay's composition root (imports ``relay`` lazily)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
    p.add_argument("--db", default=os.environ.get("HOTLINE_DB") or None,
                   help="database: a SQLite file path (default relay.db in the home) or a "
                        "postgresql:// URL; default $HOTLINE_DB")
    p.add_argument("--origin", help="the URL desks reach this relay at")
    p.set_defaults(run=cmd_serve)
    p = relay.add_parser("check-config", parents=[COMMON],
                         help="validate relay.toml and the environment as 'serve' would")
    p.set_defaults(run=cmd_check_config)
    p = relay.add_parser("backup", parents=[COMMON],
                         help="online, consistent copy of the SQLite database (while serving)")
    p.add_argument("dest", help="the backup file to create (must not exist)")
    p.set_defaults(run=cmd_backup)
    p = relay.add_parser("restore", parents=[COMMON],
                         help="replace the SQLite database with a backup (relay stopped)")
    p.add_argument("source", help="a file made by 'hotline relay backup'")
    p.set_defaults(run=cmd_restore)
    p = relay.add_parser("stats", parents=[COMMON],
                         help="deliveries by state, severity and desk (read-only)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_stats)
    p = relay.add_parser("pin-root", parents=[COMMON],
                         help="accept a federation root update (served after a restart)")
    p.add_argument("root", help="the new root, signed by every old and new member")
    p.set_defaults(run=cmd_pin_root)
    p = relay.add_parser("replace-key", parents=[COMMON],
                         help="a new relay signing key (relay stopped); desks re-pin it")
    p.set_defaults(run=cmd_replace_key)
    p = relay.add_parser("show", parents=[COMMON], help="relay id, fingerprint and root")
    p.set_defaults(run=cmd_show)


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
        passphrase = read_passphrase(_passphrase_file(args), what="relay key")
        asyncio.run(server.serve(cfg, passphrase, database_locked=True))
    except KeyboardInterrupt:
        pass
    finally:
        if lock is not None:
            lock.close()
    return 0


#: The credential name the systemd unit passes the key passphrase as (LoadCredential=).
CREDENTIAL = "relay-passphrase"


def _passphrase_file(args: argparse.Namespace) -> str | None:
    """--passphrase-file, else the systemd credential when the unit supplies one and no
    $HOTLINE_PASSPHRASE is set."""
    explicit: str | None = getattr(args, "passphrase_file", None)
    if explicit or os.environ.get("HOTLINE_PASSPHRASE"):
        return explicit
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / CREDENTIAL).is_file():
        return str(Path(creds) / CREDENTIAL)
    return None


def cmd_check_config(args: argparse.Namespace) -> int:
    from relay import admin

    home = _home(args)
    cfg = admin.check_config(home)
    print(f"{home / 'relay.toml'}: ok (relay {cfg.relay_id}, listen {cfg.listen}, "
          f"{'TLS' if cfg.tls else 'plain HTTP'}, database {cfg.database_path})")
    return 0


def _config(args: argparse.Namespace) -> Any:
    from relay import config

    return config.load(_home(args), {"database": os.environ.get("HOTLINE_DB") or None})


def cmd_backup(args: argparse.Namespace) -> int:
    from relay import admin

    size = admin.backup(_config(args), Path(args.dest))
    print(f"backup written to {args.dest} ({size} bytes, integrity check ok)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from relay import admin

    cfg = _config(args)
    admin.restore(cfg, Path(args.source))
    print(f"restored {cfg.database_path} from {args.source} "
          f"(the previous database is kept as {cfg.database_path}.before-restore)")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from relay import admin

    stats = admin.stats(_config(args))
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    print(f"notices: {stats['notices']}")
    print("deliveries by state: " + ", ".join(
        f"{k} {v}" for k, v in stats["deliveries_by_state"].items()))
    print("deliveries by severity: " + (", ".join(
        f"{k} {v}" for k, v in stats["deliveries_by_severity"].items()) or "none"))
    print("escalations by severity: " + (", ".join(
        f"{k} {v}" for k, v in stats["escalations_by_severity"].items()) or "none"))
    print(f"{'recipient':<30} " + " ".join(f"{s:>12}" for s in admin.STATES))
    for desk, counts in stats["deliveries_by_recipient"].items():
        print(f"{desk:<30} " + " ".join(f"{counts[s]:>12}" for s in admin.STATES))
    return 0


def cmd_pin_root(args: argparse.Namespace) -> int:
    from relay import home_admin

    home = _home(args)
    old, new = home_admin.update_root(home, read_document(args.root, "root"), now_ms())
    print(f"{home}: federation root v{new.version} pinned (v{old.version} kept as "
          f"root.v{old.version}); members: {', '.join(sorted(new.members))}")
    print("restart the relay to serve it (systemctl restart hotline-relay)")
    return 0


def cmd_replace_key(args: argparse.Namespace) -> int:
    from relay import home_admin

    home = _home(args)
    passphrase = read_passphrase(_passphrase_file(args), what="relay key")
    old, new = home_admin.replace_key(home, passphrase, now_ms(), limits=kdf_limits())
    print(f"relay {new.relay_id}: new key; old fingerprint "
          f"{fingerprint('relay', old.relay_id, old.key)}")
    print(f"new relay fingerprint: {fingerprint('relay', new.relay_id, new.key)}")
    print("tell every desk this fingerprint out of band; each runs "
          "'hotline keys pin-relay --fingerprint \"...\"' once the relay is back")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from keys import FederationRoot, RelayCard

    home = _home(args)
    card = RelayCard.decode((home / "relay.card").read_bytes())
    root = FederationRoot.decode((home / "root").read_bytes())
    print(f"relay {card.relay_id}")
    print(f"relay fingerprint: {fingerprint('relay', card.relay_id, card.key)}")
    print(f"federation root v{root.version}: {', '.join(sorted(root.members))}")
    return 0
