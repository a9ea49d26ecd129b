"""``hotline ops ...``: what operators watch (overdue notices, escalations); metadata only."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from typing import Any

import nacl.signing

from client.cli.common import COMMON, home_of
from client.cli.safe_text import line as safe_line
from client.home import now_ms, read_passphrase
from client.ops import OpsClient
from keys import weblogin
from keys.errors import UsageError
from keys.fingerprint import fingerprint
from keys.keyfile import decode_signing_key, encode_signing_key, read_key_file, write_key_file
from keys.weblogin import DEFAULT_LINK_TTL_MS, MAX_LINK_TTL_MS

COLOURS = {"critical": "\033[1;31m", "high": "\033[33m", "medium": "\033[36m", "low": "\033[37m",
           "resolved": "\033[32m"}
RESET = "\033[0m"
_NAME_RE = re.compile(r"[a-z0-9._-]{1,40}")


def register(groups: Any) -> None:
    ops = groups.add_parser(
        "ops", help="operators: overdue notices and escalations").add_subparsers(
        dest="cmd", metavar="ACTION", required=True)
    p = ops.add_parser("init", parents=[COMMON], help="create an operator key")
    p.add_argument("--name", required=True, help="operator name, e.g. ops.alice")
    p.set_defaults(run=cmd_init)
    for name, run, text in (("overdue", cmd_overdue, "what is overdue now (a table)"),
                            ("escalations", cmd_escalations, "escalations since a time"),
                            ("watch", cmd_watch, "live escalations and resolutions")):
        p = ops.add_parser(name, parents=[COMMON], help=text)
        p.add_argument("--relay", help="relay URL (default: $HOTLINE_RELAY or the home config)")
        p.add_argument("--json", action="store_true", help="one JSON object per line")
        p.add_argument("--severity", action="append", help="only these severities")
        p.add_argument("--desk", action="append", help="only notices from or to these desks")
        if name == "escalations":
            p.add_argument("--since", default="24h",
                           help="how far back: 30m, 24h, 7d, or UTC milliseconds")
        if name == "watch":
            p.add_argument("--count", type=int, help="stop after this many events")
            p.add_argument("--timeout", type=float, help="stop after this many seconds")
        p.set_defaults(run=run)
    p = ops.add_parser("web", parents=[COMMON],
                       help="mint a single-use login link for the relay's web view (/ops/)")
    p.add_argument("--relay", help="relay URL (default: $HOTLINE_RELAY or the home config); "
                   "the link is bound to it, as the relay's relay.origin")
    p.add_argument("--ttl", type=int, default=DEFAULT_LINK_TTL_MS // 1000,
                   help="seconds the link stays valid (default 300, at most 900)")
    p.set_defaults(run=cmd_web)


def cmd_init(args: argparse.Namespace) -> int:
    home = home_of(args)
    if not _NAME_RE.fullmatch(args.name):
        raise UsageError("--name must be 1-40 of a-z 0-9 . _ -")
    if home.exists("operator.key"):
        raise UsageError(f"{home.file('operator.key')} exists")
    passphrase = read_passphrase(getattr(args, "passphrase_file", None), confirm=True,
                                 what="operator key")
    sk = nacl.signing.SigningKey.generate()
    write_key_file(home.file("operator.key"), "operator", encode_signing_key(args.name, sk),
                   passphrase, limits=_limits())
    pub = bytes(sk.verify_key).hex()
    print(f"operator {args.name}: key created in {home.path}")
    print(f"fingerprint: {fingerprint('operator', args.name, bytes(sk.verify_key))}")
    print("add this line to the [operators] section of the relay's relay.toml:")
    print(f'"{args.name}" = "{pub}"')
    return 0


def _limits() -> Any:
    from client.home import kdf_limits

    return kdf_limits()


def _operator(args: argparse.Namespace) -> tuple[str, nacl.signing.SigningKey, str]:
    """The operator's name, key and the relay URL to use."""
    home = home_of(args)
    passphrase = read_passphrase(getattr(args, "passphrase_file", None), what="operator key")
    name, sk = decode_signing_key(read_key_file(home.file("operator.key"), passphrase,
                                                kind="operator"))
    url = args.relay or os.environ.get("HOTLINE_RELAY", "").split(",")[0]
    if not url:
        relays = home.config().get("relays") or []
        url = relays[0] if isinstance(relays, list) and relays else ""
    if not url:
        raise UsageError("no relay URL: use --relay URL or set HOTLINE_RELAY")
    return name, sk, str(url)


def _client(args: argparse.Namespace) -> OpsClient:
    name, sk, url = _operator(args)
    return OpsClient(url, name, sk)


def cmd_web(args: argparse.Namespace) -> int:
    """Print a login link for the web view: signed, for this relay only, usable once."""
    if not 10 <= args.ttl <= MAX_LINK_TTL_MS // 1000:
        raise UsageError(f"--ttl must be 10 to {MAX_LINK_TTL_MS // 1000} seconds")
    name, sk, url = _operator(args)
    if not re.fullmatch(r"https?://[^\s/?#]+", url.rstrip("/")):
        raise UsageError(f"--relay must be the relay's origin, http(s)://host[:port], not {url!r}")
    expires = now_ms() + args.ttl * 1000
    token = weblogin.mint(sk, operator=name, origin=url, expires_at=expires,
                          nonce=os.urandom(weblogin.LOGIN_NONCE_BYTES))
    print(weblogin.link(url, token))
    print(f"single use, valid {args.ttl} s; open it in a browser (it logs {name} in)",
          file=sys.stderr)
    return 0


def _keep(record: dict[str, Any], args: argparse.Namespace) -> bool:
    if args.severity and record.get("severity") not in args.severity:
        return False
    return not (args.desk and record.get("sender") not in args.desk
                and record.get("recipient") not in args.desk)


def _minutes(ms: int) -> str:
    s = ms // 1000
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _colour(text: str, key: str) -> str:
    if not sys.stdout.isatty() or os.environ.get("NO_COLOR"):
        return text
    return f"{COLOURS.get(key, '')}{text}{RESET}"


def _safe(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with every string the relay sent made safe to print (see safe_text)."""
    return {k: safe_line(v) if isinstance(v, str) else v for k, v in record.items()}


def overdue_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "nothing is overdue"
    lines = [f"{'severity':9} {'notice':16} {'sender':14} {'recipient':14} {'track':8} "
             f"{'overdue':>8} {'level':>5}  delivered"]
    for r in map(_safe, rows):
        tag = " [EXERCISE]" if r.get("exercise") else ""
        line = (f"{r['severity']:9} {r['notice_id'][:16]:16} {r['sender']:14} "
                f"{r['recipient']:14} {r['track']:8} {_minutes(r['overdue_ms']):>8} "
                f"{r['level']:>5}  {'yes' if r['delivered'] else 'NO'}{tag}")
        lines.append(_colour(line, r["severity"]))
    return "\n".join(lines)


def escalation_line(r: dict[str, Any]) -> str:
    r = _safe(r)
    tag = " [EXERCISE]" if r.get("exercise") else ""
    if r["event"] == "escalation.resolved":
        what = "acknowledged" if r["track"] == "ack" else "answered"
        return _colour(f"{r['at']}  RESOLVED  {r['severity']:8} {r['notice_id'][:16]} "
                       f"{r['sender']} -> {r['recipient']} {what} "
                       f"{_minutes(r['overdue_ms'])} late (level {r['level']}){tag}", "resolved")
    missed = f", {r['missed_levels']} missed" if r.get("missed_levels") else ""
    final = " FINAL" if r.get("final") else ""
    return _colour(f"{r['at']}  ESCALATED {r['severity']:8} {r['notice_id'][:16]} "
                   f"{r['sender']} -> {r['recipient']} level {r['level']}{missed}{final}: "
                   f"no {'ack' if r['track'] == 'ack' else 'reply'} for "
                   f"{_minutes(r['overdue_ms'])} past deadline, "
                   f"{'delivered' if r['delivered'] else 'NOT delivered'}{tag}", r["severity"])


def _since(value: str) -> int:
    m = re.fullmatch(r"(\d+)([mhd])", value)
    if m:
        return now_ms() - int(m.group(1)) * {"m": 60_000, "h": 3_600_000,
                                             "d": 86_400_000}[m.group(2)]
    if value.isdigit():
        return int(value)
    raise UsageError("--since takes 30m, 24h, 7d or UTC milliseconds")


def cmd_overdue(args: argparse.Namespace) -> int:
    async def run() -> int:
        async with _client(args) as ops:
            rows = [r for r in await ops.overdue() if _keep(r, args)]
        if args.json:
            for r in rows:
                print(json.dumps(r, sort_keys=True))
        else:
            print(overdue_table(rows))
        return 0

    return asyncio.run(run())


def cmd_escalations(args: argparse.Namespace) -> int:
    since = _since(args.since)

    async def run() -> int:
        async with _client(args) as ops:
            rows = [r for r in await ops.escalations(since) if _keep(r, args)]
        for r in rows:
            print(json.dumps(r, sort_keys=True) if args.json else escalation_line(r))
        if not rows and not args.json:
            print("no escalations in that time")
        return 0

    return asyncio.run(run())


def cmd_watch(args: argparse.Namespace) -> int:
    async def run() -> int:
        seen = 0
        async with _client(args) as ops:
            rows = [r for r in await ops.overdue() if _keep(r, args)]
            if args.json:
                for r in rows:
                    print(json.dumps({"event": "overdue"} | r, sort_keys=True), flush=True)
            else:
                print(overdue_table(rows), flush=True)
                print("-- watching for escalations (Ctrl-C to stop) --", flush=True)
            async for record in ops.watch():
                if not _keep(record, args):
                    continue
                print(json.dumps(record, sort_keys=True) if args.json
                      else escalation_line(record), flush=True)
                seen += 1
                if args.count is not None and seen >= args.count:
                    break
        return 0

    try:
        return asyncio.run(asyncio.wait_for(run(), timeout=args.timeout) if args.timeout
                           else run())
    except TimeoutError:
        return 0
