"""``hotline relays list|add|remove``: the relay URLs in a desk home's config.toml.

All URLs listed are URLs of one relay (they share its key, checked against the pin in
``relay.card``); a desk moves to another relay by adding the new URL and removing the old
one. Removing the last URL also forgets the pinned relay key, so the next relay is pinned
on first use (and its fingerprint printed, to compare with its operator's).
"""

from __future__ import annotations

import argparse
from typing import Any

from client.cli.common import COMMON, home_of, print_json
from client.cli.safe_text import line
from client.connection import normalize_relay_url
from client.home import Home
from keys.errors import UsageError

PIN = "relay.card"


def register(groups: Any) -> None:
    relays = groups.add_parser(
        "relays", help="the relay URLs this desk uses (in its config.toml)").add_subparsers(
        dest="cmd", metavar="ACTION", required=True)
    p = relays.add_parser("list", parents=[COMMON], help="list this desk's relay URLs")
    p.add_argument("--json", action="store_true", help="one JSON object per URL")
    p.set_defaults(run=cmd_list)
    p = relays.add_parser("add", parents=[COMMON], help="add relay URLs (another URL of the "
                          "same relay, or the new relay when moving)")
    p.add_argument("urls", nargs="+", metavar="URL", help="http(s)://host[:port]")
    p.set_defaults(run=cmd_add)
    p = relays.add_parser("remove", parents=[COMMON], help="remove relay URLs")
    p.add_argument("urls", nargs="+", metavar="URL", help="a URL as 'relays list' shows it")
    p.set_defaults(run=cmd_remove)


def _config(home: Home) -> tuple[dict[str, object], list[str]]:
    if not home.exists("config.toml"):
        raise UsageError(f"{home.path} holds no desk: run 'hotline keys init --id cc.name'")
    config = home.config()
    if any(isinstance(v, dict) for v in config.values()):
        raise UsageError(f"{home.file('config.toml')} has tables; edit its relays by hand")
    relays = config.get("relays", [])
    if isinstance(relays, str):
        relays = [relays]
    if not isinstance(relays, list):
        raise UsageError(f"{home.file('config.toml')}: relays must be a list of URLs")
    return config, [str(u) for u in relays]


def cmd_list(args: argparse.Namespace) -> int:
    home = home_of(args)
    _, relays = _config(home)
    for url in relays:
        if args.json:
            print_json({"url": url})
        else:
            print(line(url))
    if not relays and not args.json:
        print("no relay URL set: add one with 'hotline relays add URL'")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    home = home_of(args)
    config, relays = _config(home)
    new = [normalize_relay_url(u) for u in args.urls]
    added = [u for u in dict.fromkeys(new) if u not in relays]
    config["relays"] = relays + added
    home.write_config(config)
    for url in new:
        print(f"added {line(url)}" if url in added else f"{line(url)} is listed already")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    home = home_of(args)
    config, relays = _config(home)
    gone = []
    for url in args.urls:
        key = normalize_relay_url(url)
        match = [u for u in relays if u == key or u.rstrip("/") == key]
        if not match:
            raise UsageError(f"{url} is not among this desk's relays "
                             f"({', '.join(relays) or 'none'}); nothing was removed")
        gone.extend(match)
    config["relays"] = [u for u in relays if u not in gone]
    home.write_config(config)
    for url in dict.fromkeys(gone):
        print(f"removed {line(url)}")
    if not config["relays"] and home.exists(PIN):
        home.file(PIN).unlink()
        print("no relay URL left: the pinned relay key is forgotten; the next relay added "
              "is pinned on first use (compare its fingerprint with its operator's)")
    return 0
