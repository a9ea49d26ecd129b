"""``hotline relays add|list|remove``: the relays a desk uses, each pinned by its own key.

A relay is an identity (the id and key of its relay card, pinned at first contact) with
one or more URLs (failover between them). A desk that lists one relay keeps its URLs in
config.toml (``relays = [...]``, the pin in ``relay.card``): ``add`` of a URL of that
relay (same key, or not reachable now: its key is checked at first use) adds it there,
and removing the last URL forgets the pin, so a desk moves to another relay by adding the
new URL and removing the old one. ``add`` of a URL that presents another relay's key
makes the desk use both (two circuits, :mod:`client.circuits`): the list moves to
``relays.json`` with one pin per relay (``relays/<id>.card``, the old pin kept), and from
then on every notice, receipt and ack goes over each relay. ``remove ID`` drops a relay
and its pin; ``remove URL`` one of its URLs (the relay with its last one).
Also here: how ``send`` and ``status`` show each relay's part.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import aiohttp

from client.circuits import IdentityPin, RelayBook, describe
from client.cli.common import COMMON, home_of, print_json
from client.cli.safe_text import line
from client.connection import RelayIdentityError, normalize_relay_url
from client.home import Home
from client.items import RelayAcceptance
from client.verify import NoticeStatusView
from keys.errors import HotlineError, UsageError
from keys.fingerprint import fingerprint
from keys.receipts import RelayCard

MAX_CARD_BYTES = 64 * 1024
PIN = "relay.card"


def register(groups: Any) -> None:
    relays = groups.add_parser(
        "relays", help="the relays this desk uses (each pinned; several: two circuits)"
    ).add_subparsers(dest="cmd", metavar="ACTION", required=True)
    p = relays.add_parser("list", parents=[COMMON], help="the relays, their keys and URLs")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=cmd_list)
    p = relays.add_parser("add", parents=[COMMON], help="add relay URLs: another URL of a "
                          "relay, or (another key) one more relay, pinned")
    p.add_argument("urls", nargs="+", metavar="URL", help="http(s)://host[:port]")
    p.set_defaults(run=cmd_add)
    p = relays.add_parser("remove", parents=[COMMON],
                          help="remove a relay (by id, with its pin) or relay URLs")
    p.add_argument("urls", nargs="+", metavar="ID|URL", help="as 'relays list' shows it")
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


async def fetch_card(url: str, timeout: float = 20.0) -> RelayCard:
    """The relay card served at ``url`` (unauthenticated ``GET /v1/relay``)."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http, \
                http.get(url + "/v1/relay", allow_redirects=False) as resp:
            body = await resp.content.read(MAX_CARD_BYTES + 1)
            if resp.status != 200 or len(body) > MAX_CARD_BYTES:
                raise UsageError(f"{url} answered {resp.status} to GET /v1/relay: not a relay")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UsageError(f"cannot reach the relay at {url}: {exc or type(exc).__name__}") from exc
    return RelayCard.decode(body)


def _fpr(card: RelayCard) -> str:
    return fingerprint("relay", card.relay_id, card.key)


def _pinned_one(home: Home) -> RelayCard | None:
    try:
        return RelayCard.decode(home.read(PIN, "pinned relay card")) if home.exists(PIN) else None
    except HotlineError:
        return None


def cmd_add(args: argparse.Namespace) -> int:
    home = home_of(args)
    config, relays = _config(home)
    book = RelayBook(home)
    for url in dict.fromkeys(normalize_relay_url(u) for u in args.urls):
        try:
            card: RelayCard | None = asyncio.run(fetch_card(url, timeout=10.0))
        except UsageError as exc:
            if book.exists():
                raise UsageError(f"{exc}; a relay is added to a list of several once its "
                                 "key can be pinned") from exc
            card = None
        one = _pinned_one(home)
        if card is not None and one is None and not book.exists() and not home.exists(PIN):
            # First contact with this desk's relay: pin it, as its first use would.
            first = card
            if relays:
                try:
                    first = asyncio.run(fetch_card(normalize_relay_url(relays[0]), 10.0))
                except UsageError:
                    first = None  # type: ignore[assignment]
            if first is not None:
                home.write(PIN, first.encode())
                one = first
        if not book.exists() and (card is None or one is None or one.key == card.key):
            # The one-relay layout: another URL of this desk's relay (checked at first use).
            if url in relays:
                print(f"{line(url)} is listed already")
                continue
            relays.append(url)
            config["relays"] = relays
            home.write_config(config)
            print(f"added {line(url)}" + ("" if card is not None else
                  " (not reachable now: its key is checked against the pin at first use)"))
            continue
        assert card is not None
        pinned = (book.pin(card.relay_id).load() if book.exists()
                  else one if one is not None and one.relay_id == card.relay_id else None)
        if pinned is not None and pinned.key != card.key:
            raise RelayIdentityError(
                f"the relay at {url} presents key {_fpr(card)} as {card.relay_id}, not the "
                f"pinned {_fpr(pinned)}; compare the new fingerprint out of band, then "
                f"'hotline relays remove {card.relay_id}' and add it again")
        book.migrate(relays)
        spec, new = book.add(card, url)
        if new:
            print(f"added relay {line(card.relay_id)} at {url}")
            print(f"pinned its key {_fpr(card)}: compare this fingerprint with the one its "
                  "operator gives you out of band")
        else:
            print(f"added {url} as another URL of relay {line(card.relay_id)} "
                  f"({len(spec.urls)} URLs)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    home = home_of(args)
    book = RelayBook(home)
    if not book.exists():  # the one-relay layout: its URLs
        _, relays = _config(home)
        for url in relays:
            if args.json:
                print_json({"url": url})
            else:
                print(line(url))
        if not relays and not args.json:
            print("no relay URL set: add one with 'hotline relays add URL'")
        return 0
    for s in book.load():
        card = IdentityPin(home, s.relay_id).load()
        fpr = _fpr(card) if card else None
        if args.json:
            print_json({"relay": s.relay_id, "fingerprint": fpr, "urls": list(s.urls)})
        else:
            print(f"{line(s.relay_id)}  {fpr or '(not pinned yet)'}")
            for u in s.urls:
                print(f"    {line(u)}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    home = home_of(args)
    book = RelayBook(home)
    if not book.exists():
        return _remove_one_relay_urls(home, args.urls)
    for what in args.urls:
        if "://" in what:
            what = normalize_relay_url(what)
        left = book.remove(what)
        if what == left.relay_id or what in left.urls:
            print(f"removed relay {line(left.relay_id)} and its pinned key")
        else:
            print(f"removed {line(what)} from relay {line(left.relay_id)} "
                  f"({len(left.urls)} URLs left)")
    return 0


def _remove_one_relay_urls(home: Home, urls: list[str]) -> int:
    config, relays = _config(home)
    gone = []
    for url in urls:
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


# ----------------------------------------------------------------------------- rendering


def send_text(relays: tuple[RelayAcceptance, ...]) -> str:
    """``accepted by us-relay, cn-relay; 2 of 2``."""
    return describe(relays)


def relays_json(relays: tuple[RelayAcceptance, ...]) -> list[dict[str, Any]]:
    return [{"relay": r.relay, "state": r.state, "error": r.error,
             "accepted_at": r.attestation.at if r.attestation else None} for r in relays]


def print_merged(view: NoticeStatusView) -> bool:
    """Each relay's part of a notice's status (``view.merged``); True if a relay is
    flagged for a lie (a lag or an unreachable relay is shown, not failed)."""
    m = view.merged
    if m is None:
        return False
    print(f"  relays:       accepted by {', '.join(m.accepted_by) or 'none'} "
          f"({len(m.accepted_by)} of {len(m.views)})")
    for r in m.recipients:
        for what, p in (("delivered", r.delivered), ("acknowledged", r.acknowledged)):
            via = ", ".join(p.relays) if p else "no relay"
            print(f"    {line(r.desk)} {what}: signed by {line(r.desk)}, via {line(via)}")
        for e in r.escalations:
            print(f"    {line(r.desk)} {e.kind} (level {e.level}) by {', '.join(e.relays)}")
    for f in m.flags:
        print(f"  WARNING: relay {line(f.relay)} {f.kind.replace('_', ' ')}: {line(f.detail)}",
              file=sys.stderr)
    return any(f.kind not in ("lags", "unreachable") for f in m.flags)


def merged_json(view: NoticeStatusView) -> dict[str, Any] | None:
    m = view.merged
    if m is None:
        return None
    return {
        "accepted_by": list(m.accepted_by),
        "flags": [{"relay": f.relay, "kind": f.kind, "desk": f.desk, "detail": f.detail}
                  for f in m.flags],
        "recipients": {r.desk: {
            "delivered_via": list(r.delivered.relays) if r.delivered else [],
            "acknowledged_via": list(r.acknowledged.relays) if r.acknowledged else [],
            "escalations": [{"kind": e.kind, "level": e.level, "relays": list(e.relays)}
                            for e in r.escalations]} for r in m.recipients},
    }


__all__ = ["HotlineError", "fetch_card", "merged_json", "print_merged", "register",
           "send_text"]
