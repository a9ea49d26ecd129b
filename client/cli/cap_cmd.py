"""``hotline cap export NOTICE_ID``: a notice's metadata as a CAP 1.2 alert (XML)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from client.cap import export_cap
from client.cli.common import COMMON, emit
from client.cli.desk_cmd import _client


def register(groups: Any) -> None:
    cap = groups.add_parser("cap", help="CAP 1.2 interoperability")
    sub = cap.add_subparsers(dest="cap_cmd", metavar="ACTION", required=True)
    p = sub.add_parser("export", parents=[COMMON],
                       help="write a notice's metadata as a CAP 1.2 alert")
    p.add_argument("id", help="notice id (32 hex digits, or a unique prefix of 6+)")
    p.add_argument("--content", action="store_true",
                   help="include title, summary and category (a notice this desk received)")
    p.add_argument("--ack", action="store_true",
                   help="this desk's acknowledgement of the notice (msgType Ack)")
    p.add_argument("-o", "--output", default=None, help="write to this file (default stdout)")
    p.set_defaults(run=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        xml = export_cap(client, args.id, content=args.content, ack=args.ack)
    finally:
        asyncio.run(client.close())
    emit(xml, args.output)
    return 0
