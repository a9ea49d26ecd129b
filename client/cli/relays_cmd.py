"""``hotline relays add|list|remove``: the relays a desk uses, each pinned by its own key.

A relay is an identity (the id and key of its card, pinned at first contact) with one or
more URLs (failover between them). With several relays every notice, receipt and ack goes
over each (:mod:`client.circuits`). A home of the one-relay layout (``relays`` URLs in
config.toml, ``relay.card``) becomes the first entry of the list at the first ``add``.
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
from client.client import HomePin, relay_urls
from client.connection import RelayIdentityError, normalize_relay_url
from client.items import RelayAcceptance
from client.verify import NoticeStatusView
from keys.errors import HotlineError, UsageError
from keys.fingerprint import fingerprint
from keys.receipts import RelayCard

MAX_CARD_BYTES = 64 * 1024


def register(groups: Any) -> None:
    p = groups.add_parser("relays", help="the relays this desk uses (add, list, remove)")
    sub = p.add_subparsers(dest="relays_cmd", required=True, metavar="COMMAND")
    a = sub.add_parser("add", parents=[COMMON],
                       help="add a relay (or another URL of one): contact it, pin its key")
    a.add_argument("url")
    a.set_defaults(run=cmd_add)
    ls = sub.add_parser("list", parents=[COMMON], help="the relays, their keys and URLs")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=cmd_list)
    r = sub.add_parser("remove", parents=[COMMON],
                       help="remove a relay (by id, with its pin) or one of its URLs")
    r.add_argument("relay", metavar="ID|URL")
    r.set_defaults(run=cmd_remove)


async def fetch_card(url: str) -> RelayCard:
    """The relay card served at ``url`` (unauthenticated ``GET /v1/relay``)."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http, \
                http.get(url + "/v1/relay", allow_redirects=False) as resp:
            body = await resp.content.read(MAX_CARD_BYTES + 1)
            if resp.status != 200 or len(body) > MAX_CARD_BYTES:
                raise UsageError(f"{url} answered {resp.status} to GET /v1/relay: not a relay")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UsageError(f"cannot reach the relay at {url}: {exc or type(exc).__name__}") from exc
    return RelayCard.decode(body)


def _fpr(card: RelayCard) -> str:
    return fingerprint("relay", card.relay_id, card.key)


def cmd_add(args: argparse.Namespace) -> int:
    home = home_of(args)
    url = normalize_relay_url(args.url)
    book = RelayBook(home)
    book.migrate(relay_urls(home))
    card = asyncio.run(fetch_card(url))
    pinned = book.pin(card.relay_id).load()
    if pinned is not None and pinned.key != card.key:
        raise RelayIdentityError(
            f"the relay at {url} presents key {_fpr(card)} as {card.relay_id}, not the pinned "
            f"{_fpr(pinned)}; compare the new fingerprint out of band, then "
            f"'hotline relays remove {card.relay_id}' and add it again")
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
    rows: list[tuple[str, str | None, tuple[str, ...]]] = []
    if book.exists():
        for s in book.load():
            card = IdentityPin(home, s.relay_id).load()
            rows.append((s.relay_id, _fpr(card) if card else None, s.urls))
    else:  # the one-relay layout
        card = HomePin(home).load()
        urls = tuple(relay_urls(home))
        if card is not None or urls:
            rows.append((card.relay_id if card else "(not contacted yet)",
                         _fpr(card) if card else None, urls))
    for rid, fpr, urls in rows:
        if args.json:
            print_json({"relay": rid, "fingerprint": fpr, "urls": list(urls)})
        else:
            print(f"{line(rid)}  {fpr or '(not pinned yet)'}")
            for u in urls:
                print(f"    {line(u)}")
    if not rows and not args.json:
        print("no relay: add one with 'hotline relays add URL'", file=sys.stderr)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    home = home_of(args)
    book = RelayBook(home)
    book.migrate(relay_urls(home))
    what = args.relay
    if "://" in what:
        what = normalize_relay_url(what)
    left = book.remove(what)
    if what == left.relay_id or what in left.urls:
        print(f"removed relay {line(left.relay_id)} and its pinned key")
    else:
        print(f"removed {what} from relay {line(left.relay_id)} ({len(left.urls)} URLs left)")
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
