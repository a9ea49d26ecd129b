"""``hotline witness init|serve|show``: a C2SP tlog-witness for relay logs (imports
``relay.witness`` lazily, like ``hotline relay``)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from client.cli.common import COMMON
from client.home import kdf_limits, read_passphrase


def register(groups: Any) -> None:
    witness = groups.add_parser("witness", help="run a log witness").add_subparsers(
        dest="cmd", metavar="ACTION", required=True)
    p = witness.add_parser("init", parents=[COMMON],
                           help="create a witness home: cosigning key and configuration")
    p.add_argument("--name", required=True,
                   help="the witness's key name, a schema-less URL (e.g. witness.us/w1)")
    p.add_argument("--log", action="append", default=[], metavar="VKEY",
                   help="a log verifier key to witness (its name is the log origin); "
                   "repeatable, or edit witness.toml later")
    p.add_argument("--force", action="store_true", help="replace an existing witness key")
    p.set_defaults(run=cmd_init)
    p = witness.add_parser("serve", parents=[COMMON], help="run the witness")
    p.add_argument("--listen", help="HOST:PORT (default from witness.toml: 127.0.0.1:8760)")
    p.add_argument("--db", help="state file (default witness.db in the home)")
    p.set_defaults(run=cmd_serve)
    p = witness.add_parser("show", parents=[COMMON], help="print the witness's verifier key")
    p.set_defaults(run=cmd_show)


def _home(args: argparse.Namespace) -> Path:
    from client.home import resolve_home

    home = getattr(args, "home", None)
    return resolve_home(home) if home else resolve_home(None).with_name(".hotline-witness")


def cmd_init(args: argparse.Namespace) -> int:
    from relay import witness

    home = _home(args)
    passphrase = read_passphrase(getattr(args, "passphrase_file", None), confirm=True,
                                 what="witness key")
    cosigner = witness.init(home, args.name, passphrase, logs_=args.log,
                            limits=kdf_limits(), force=args.force)
    print(f"witness {cosigner.name}: home {home}")
    print(f"witness verifier key: {cosigner.vkey()}")
    print(f"start it with: hotline witness serve --home {home}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from relay import witness

    home = _home(args)
    passphrase = read_passphrase(getattr(args, "passphrase_file", None), what="witness key")
    print(witness.load_cosigner(home, passphrase).vkey())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from relay import witness

    home = _home(args)
    cfg = witness.load_config(home, {"listen": args.listen, "database": args.db})
    passphrase = read_passphrase(getattr(args, "passphrase_file", None), what="witness key")
    try:
        asyncio.run(witness.serve(cfg, passphrase))
    except KeyboardInterrupt:
        pass
    return 0
