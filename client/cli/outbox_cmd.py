"""``hotline outbox``, and what ``send``, ``reply`` and ``ack`` say when the relay is away.

A notice sealed, or an acknowledgement signed, while the relay cannot be reached is kept
in the desk's outbox (client.db) and posted, the same bytes, by the next hotline command
that reaches the relay or by a running ``hotline watch``. Exit codes of ``send``,
``reply`` and ``ack``: 0 done (the relay accepted it), 1 failed (nothing kept), 2 usage
error, 3 (:data:`EXIT_QUEUED`) NOT done but kept in the outbox; ``--queue-ok`` makes 3 a 0,
``--no-queue`` keeps nothing (and tries the relay briefly): then 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from client.cli.common import COMMON, print_json
from client.cli.safe_text import line
from client.connection import RelayUnavailable, RetryPolicy
from client.home import now_ms
from client.items import AckResult, OutboxItem, SendResult

#: The exit code of a send, reply or ack that was kept in the outbox, not delivered.
EXIT_QUEUED = 3
#: How hard ``--no-queue`` tries the relay before it gives up (fail fast).
NO_QUEUE_POLICY = RetryPolicy(attempts=2, base_delay=0.25)

QUEUE_HELP = (f"exit codes: 0 the relay has it; 1 failed, nothing kept; 2 usage error; "
              f"{EXIT_QUEUED} the relay could not be reached: kept in this desk's outbox and "
              "sent by the next hotline command or a running 'hotline watch' "
              "(see 'hotline outbox')")


def add_queue_options(p: argparse.ArgumentParser) -> None:
    """``--no-queue`` and ``--queue-ok`` for a command that posts something signed."""
    way = p.add_mutually_exclusive_group()
    way.add_argument("--no-queue", action="store_true",
                     help="if the relay cannot be reached, fail at once (exit 1) and keep "
                          "nothing in the outbox")
    way.add_argument("--queue-ok", action="store_true",
                     help=f"exit 0, not {EXIT_QUEUED}, when it is kept in the outbox "
                          "because the relay cannot be reached")
    p.epilog = QUEUE_HELP


def policy_for(args: argparse.Namespace) -> RetryPolicy | None:
    return NO_QUEUE_POLICY if getattr(args, "no_queue", False) else None


def queue_for(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_queue", False)


def queued_exit(args: argparse.Namespace) -> int:
    return 0 if getattr(args, "queue_ok", False) else EXIT_QUEUED


def report_queued_send(args: argparse.Namespace, result: SendResult, what: str = "notice"
                       ) -> int:
    """Say plainly that the notice was sealed but NOT sent, and where it waits."""
    if getattr(args, "json", False):
        print_json({"notice_id": result.notice_id.hex(), "queued": True,
                    "accepted_at": None, "reason": result.reason})
    else:
        print(f"{what} {result.notice_id.hex()}")
    print(f"hotline: the {what} was NOT sent: the relay could not be reached "
          f"({line(result.reason or 'unavailable')}).\nhotline: it is sealed and kept in this "
          "desk's outbox, and is sent (same id, same bytes) by the next hotline command that "
          "reaches the relay or by a running 'hotline watch'; see 'hotline outbox'",
          file=sys.stderr)
    return queued_exit(args)


def report_queued_ack(args: argparse.Namespace, result: AckResult) -> int:
    """Say plainly that the acknowledgement was signed but NOT recorded by the relay."""
    if getattr(args, "json", False):
        print_json({"notice_id": result.notice_id.hex(), "queued": True,
                    "acknowledged_at": None, "reason": result.reason})
    print(f"hotline: the acknowledgement of {result.notice_id.hex()} was NOT recorded: the "
          f"relay could not be reached ({line(result.reason or 'unavailable')}).\nhotline: it "
          "is signed and kept in this desk's outbox, and is sent by the next hotline command "
          "that reaches the relay or by a running 'hotline watch'; until then the sender "
          "and the relay do not know it (see 'hotline outbox')", file=sys.stderr)
    return queued_exit(args)


def register(groups: Any) -> None:
    p = groups.add_parser(
        "outbox", parents=[COMMON],
        help="what waits to be sent to the relay (notices, receipts, acks), with ages")
    p.add_argument("--send", action="store_true",
                   help="try to send what waits now (exit 3 if some still waits)")
    p.add_argument("--relay", action="append", default=[], metavar="URL",
                   help="relay URL for --send (repeatable; default $HOTLINE_RELAY, else "
                        "relays in config.toml)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=cmd_outbox)


def _age(ms: int) -> str:
    from client.cli.desk_cmd import duration

    return duration(ms)


def _item_json(item: OutboxItem, now: int) -> dict[str, Any]:
    from client.cli.desk_cmd import iso8601

    return {"kind": item.kind, "notice_id": item.notice_id.hex(), "peers": list(item.peers),
            "severity": item.severity, "created_at": iso8601(item.created_at),
            "age_ms": max(0, now - item.created_at), "attempts": item.attempts,
            "last_error": item.error}


def cmd_outbox(args: argparse.Namespace) -> int:
    from client.cli.desk_cmd import _client

    client = _client(args)

    async def main() -> list[OutboxItem]:
        try:
            if args.send:
                try:
                    taken = await client.retry_outbox()
                    print(f"hotline: the relay took {taken} waiting item(s)", file=sys.stderr)
                except RelayUnavailable as exc:
                    print(f"hotline: nothing more was sent: {line(exc.message)}",
                          file=sys.stderr)
            return client.outbox()
        finally:
            await client.close()

    items = asyncio.run(main())
    now = now_ms()
    for item in items:
        if args.json:
            print_json(_item_json(item, now))
            continue
        what = f"{item.kind} [{item.severity}]" if item.severity else item.kind
        peers = ("to " if item.kind == "notice" else "for ") + ", ".join(item.peers)
        error = f"  last try: {line(item.error)}" if item.error else ""
        print(f"{item.notice_id.hex()}  {line(what):<18} {line(peers):<24} waiting "
              f"{_age(now - item.created_at)}{error}")
    if not items and not args.json:
        print("the outbox is empty: everything was sent", file=sys.stderr)
    return EXIT_QUEUED if args.send and items else 0
