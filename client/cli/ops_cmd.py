"""``hotline ops ...``: what operators watch (overdue notices, escalations); metadata only."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
from typing import Any

import aiohttp
import nacl.signing

from client.cli.common import COMMON, colour, home_of, iso_text, need
from client.cli.live import LinkView
from client.cli.safe_text import line as safe_line
from client.connection import RetryPolicy
from client.home import now_ms, read_passphrase
from client.ops import OpsClient, OpsError
from keys import weblogin
from keys.errors import MalformedInput, UsageError
from keys.fingerprint import fingerprint
from keys.ids import SEVERITIES, desk_id
from keys.keyfile import decode_signing_key, encode_signing_key, read_key_file, write_key_file
from keys.weblogin import DEFAULT_LINK_TTL_MS, MAX_LINK_TTL_MS

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
        p.add_argument("--severity", action="append", choices=SEVERITIES,
                       help="only this severity (repeatable)")
        p.add_argument("--desk", action="append", type=_desk,
                       help="only notices from or to this desk, e.g. cn.cac (repeatable)")
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


def _desk(value: str) -> str:
    try:
        return str(desk_id(value))
    except MalformedInput as exc:
        raise argparse.ArgumentTypeError(
            f"{value[:60]!r} is not a desk id (cc.name, e.g. cn.cac)") from exc


def _limits() -> Any:
    from client.home import kdf_limits

    return kdf_limits()


def _operator(args: argparse.Namespace) -> tuple[str, nacl.signing.SigningKey, str]:
    """The operator's name, key and the relay URL to use."""
    home = home_of(args)
    need(home, "operator.key", "operator key", "run 'hotline ops init --name NAME' or pass "
         "the operator's --home")
    url = args.relay or os.environ.get("HOTLINE_RELAY", "").split(",")[0]
    if not url:
        relays = home.config().get("relays") or []
        url = relays[0] if isinstance(relays, list) and relays else ""
    if not url:
        raise UsageError("no relay URL: use --relay URL or set HOTLINE_RELAY")
    passphrase = read_passphrase(getattr(args, "passphrase_file", None), what="operator key")
    name, sk = decode_signing_key(read_key_file(home.file("operator.key"), passphrase,
                                                kind="operator"))
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


_colour = colour


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
        return _colour(f"{iso_text(r['at'])}  RESOLVED  {r['severity']:8} {r['notice_id'][:16]} "
                       f"{r['sender']} -> {r['recipient']} {what} "
                       f"{_minutes(r['overdue_ms'])} late (level {r['level']}){tag}", "resolved")
    missed = f", {r['missed_levels']} missed" if r.get("missed_levels") else ""
    final = " FINAL" if r.get("final") else ""
    return _colour(f"{iso_text(r['at'])}  ESCALATED {r['severity']:8} {r['notice_id'][:16]} "
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


def _escalation_ms(record: dict[str, Any]) -> int | None:
    at = record.get("at")
    if not isinstance(at, str):
        return None
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


class _Follower:
    """``ops watch``: the overdue table, then live escalations; reconnects with backoff
    after any failure a retry may cure, and after a reconnection prints the escalations
    recorded meanwhile (from the history, without repeating one: escalation ids)."""

    def __init__(self, args: argparse.Namespace, ops: OpsClient) -> None:
        self.args = args
        self.ops = ops
        self.view = LinkView(json_mode=args.json)
        self.policy = RetryPolicy()
        self.seen = 0
        self.last_id = 0
        self.since = now_ms()

    def show(self, record: dict[str, Any]) -> bool:
        """Print one record (unless filtered or printed before); True when --count is
        reached."""
        rid = record.get("escalation_id")
        if isinstance(rid, int):
            if rid <= self.last_id:
                return False
            self.last_id = rid
        at = _escalation_ms(record)
        if at is not None:
            self.since = max(self.since, at)
        if not _keep(record, self.args):
            return False
        print(json.dumps(record, sort_keys=True) if self.args.json
              else escalation_line(record), flush=True)
        self.view.event()
        self.seen += 1
        return self.args.count is not None and self.seen >= self.args.count

    async def run(self) -> int:
        failures = 0
        first = True
        while True:
            opened = False
            try:
                await self.ops.login()
                ws = await self.ops.open_watch()
                opened = True
                if first:
                    self._table(await self.ops.overdue())
                self.view.connected(self.ops.url, again=not first)
                if not first:
                    # What was recorded while this view was away (ids not shown yet).
                    missed = await self.ops.escalations(max(0, self.since - 1000))
                    for record in sorted(missed, key=lambda r: r.get("escalation_id", 0)):
                        if self.show(record):
                            await ws.close()
                            return 0
                    self.view.check_caught_up(force=True)
                first, failures = False, 0
                async for record in self.ops.records(ws):
                    if self.show(record):
                        return 0
                    self.view.check_caught_up()
                reason = "the relay closed the watch stream"
            except OpsError as exc:
                if not exc.transient:
                    raise
                reason = exc.message
            except aiohttp.ClientError as exc:  # the link broke while reading
                reason = f"{type(exc).__name__}: {exc}"
            if opened:
                self.view.lost(self.ops.url, reason)
            failures += 1
            wait = self.policy.delay(failures, random.random())  # noqa: S311 - jitter only
            self.view.retrying(self.ops.url, wait, reason, failures)
            await asyncio.sleep(wait)

    def _table(self, overdue: list[dict[str, Any]]) -> None:
        rows = [r for r in overdue if _keep(r, self.args)]
        if self.args.json:
            for r in rows:
                print(json.dumps({"event": "overdue"} | r, sort_keys=True), flush=True)
        else:
            print(overdue_table(rows), flush=True)
            print("-- watching for escalations (Ctrl-C to stop) --", flush=True)


def cmd_watch(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be more than 0 seconds")
    ops = _client(args)

    async def run() -> int:
        ops.open_session()
        try:
            async with asyncio.timeout(args.timeout):
                return await _Follower(args, ops).run()
        finally:
            await ops.close()

    try:
        return asyncio.run(run())
    except TimeoutError:
        return 0  # --timeout reached: a normal end
