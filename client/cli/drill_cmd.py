"""``hotline drill link-test|run|report|link-status``: readiness drills.

* ``link-test --to DESK --every 1h``: send link tests (status ``test``) on a schedule and
  report the link going down (a test without a receipt in its window) and coming back.
* ``run PLAN``: send a drill plan's exercise notices at their seeded random times.
* ``report [--since 90d] [--desk D] [--json] [--html FILE]``: the scorecard, from the
  verified signed statements of the drill notices this desk sent or received.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from client.cli.common import COMMON, print_json
from client.cli.desk_cmd import _client, _run
from client.cli.safe_text import line
from client.client import HotlineClient
from client.drill_runner import DrillLog, HeartbeatWatch, LinkTester, observations, run_plan
from client.drills import (
    DrillPlan,
    LinkEvent,
    Slot,
    format_duration,
    parse_duration,
    render_text,
    schedule,
    scorecard,
)
from keys.errors import UsageError
from keys.ids import desk_id


def register(groups: Any) -> None:
    relay = argparse.ArgumentParser(add_help=False)
    relay.add_argument("--relay", action="append", default=[], metavar="URL",
                       help="relay URL (repeatable; default $HOTLINE_RELAY, else config)")
    relay.add_argument("-v", "--verbose", action="store_true", help="log each step")
    parents = [COMMON, relay]
    drill = groups.add_parser("drill", help="readiness drills: link tests, exercises, scores")
    sub = drill.add_subparsers(dest="drill_cmd", metavar="ACTION", required=True)

    p = sub.add_parser("link-test", parents=parents,
                       help="send link tests on a schedule; report link down / restored")
    p.add_argument("--to", action="append", required=True, metavar="DESK",
                   help="counterpart desk (repeatable)")
    p.add_argument("--every", default="1h", help="interval between tests (default 1h)")
    p.add_argument("--window", default=None,
                   help="how long a receipt may take (default: a tenth of --every, >= 1m)")
    p.add_argument("--rounds", type=int, default=None, help="stop after this many steps")
    p.add_argument("--metrics-file", default=None,
                   help="write Prometheus metrics here after each step (textfile collector)")
    p.set_defaults(run=cmd_link_test)

    p = sub.add_parser("run", parents=parents, help="run an exercise plan (TOML)")
    p.add_argument("plan", help="the drill plan file")
    p.add_argument("--dry-run", action="store_true",
                   help="print the schedule (and record nothing, send nothing)")
    p.set_defaults(run=cmd_run)

    p = sub.add_parser("report", parents=parents, help="the drill scorecard per desk")
    p.add_argument("--since", default="90d", help="period to cover, e.g. 90d, 4w (default 90d)")
    p.add_argument("--desk", default=None, help="only this recipient desk")
    p.add_argument("--by-month", action="store_true", help="one row per desk and month")
    p.add_argument("--json", action="store_true", help="one JSON object per desk")
    p.add_argument("--html", default=None, metavar="FILE",
                   help="also write a self-contained HTML page with charts")
    p.set_defaults(run=cmd_report)

    p = sub.add_parser("link-status", parents=[COMMON],
                       help="link events so far, and counterparts whose link test is overdue")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=cmd_link_status)


def link_event_line(e: LinkEvent | dict[str, Any]) -> str:
    if isinstance(e, LinkEvent):
        e = {"event": e.kind, "peer": e.peer, "at": e.at, "down_ms": e.down_ms}
    when = dt.datetime.fromtimestamp(int(e["at"]) / 1000, tz=dt.UTC).isoformat(
        timespec="seconds")
    if e["event"] == "link_down":
        return f"LINK DOWN      {line(str(e['peer']))} since {when} (no receipt in the window)"
    return (f"LINK RESTORED  {line(str(e['peer']))} at {when} after "
            f"{format_duration(e.get('down_ms'))}")


def cmd_link_test(args: argparse.Namespace) -> int:
    peers = tuple(desk_id(d) for d in args.to)
    every = parse_duration(args.every, "--every")
    window = parse_duration(args.window, "--window") if args.window else 0
    if args.rounds is not None and args.rounds < 1:
        raise UsageError("--rounds must be at least 1")

    async def body(client: HotlineClient) -> int:
        tester = LinkTester(client, peers, every, window, sleep=asyncio.sleep,
                            metrics_file=args.metrics_file)
        print(f"link tests to {', '.join(peers)} every {format_duration(every)}, receipt "
              f"window {format_duration(tester.window_ms)}", file=sys.stderr)
        await tester.run(args.rounds, on_event=lambda e: print(link_event_line(e), flush=True))
        return 0

    return _run(args, body)


def _slot_line(s: Slot, plan: DrillPlan) -> str:
    tz = next(p.tz for p in plan.participants if p.desk == s.desk)
    local = dt.datetime.fromtimestamp(s.at / 1000, tz=tz)
    return (f"{dt.datetime.fromtimestamp(s.at / 1000, tz=dt.UTC).isoformat(timespec='seconds')}"
            f"  {s.desk:<12} #{s.index + 1}  local {local.strftime('%a %Y-%m-%d %H:%M %Z')}"
            f"  {s.notice_id(plan).hex()}")


def _plan(path: str) -> DrillPlan:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read drill plan {path}: {exc.strerror}") from exc
    return DrillPlan.from_toml(data, what=f"drill plan {path}")


def cmd_run(args: argparse.Namespace) -> int:
    plan = _plan(args.plan)
    if args.dry_run:
        print(f"drill {plan.name}: seed {plan.seed}, plan sha256 {plan.digest}, window "
              f"{plan.window.describe()} (recipient's time zone), severity {plan.severity}, "
              f"{'announced' if plan.announced else 'unannounced'}")
        for s in schedule(plan):
            print(_slot_line(s, plan))
        return 0

    async def body(client: HotlineClient) -> int:
        sent = await run_plan(client, plan, sleep=asyncio.sleep,
                              on_sent=lambda s, n: print("sent     " + _slot_line(s, plan),
                                                         flush=True))
        print(f"drill {plan.name}: {len(sent)} exercise notice(s) sent; schedule in "
              f"{DrillLog(client.home.path).dir / (plan.name + '.schedule.json')}",
              file=sys.stderr)
        return 0

    return _run(args, body)


def cmd_report(args: argparse.Namespace) -> int:
    since_ms = parse_duration(args.since, "--since")
    desk = desk_id(args.desk) if args.desk else None

    async def body(client: HotlineClient) -> int:
        now = client._clock()
        obs = await observations(client, since=now - since_ms, desk=desk)
        scores = scorecard(obs, by_month=args.by_month, period=f"{args.since}")
        if args.json:
            for s in scores:
                print_json(s.to_json())
        else:
            print(render_text(scores) if scores else "no drill notices in the period")
        if args.html:
            from client.drill_html import render_html

            page = render_html(scores, obs, desk=client.desk, since=now - since_ms, now=now)
            Path(args.html).write_text(page, encoding="utf-8")
            print(f"wrote {args.html}", file=sys.stderr)
        return 0

    return _run(args, body)


def cmd_link_status(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        overdue = HeartbeatWatch(client.home.path).check(client._clock())
        events = DrillLog(client.home.path).events()
        links = [e for e in events if e.get("event") in ("link_down", "link_restored")]
        for e in links:
            if args.json:
                print_json(e)
            else:
                print(link_event_line(e))
        if args.json and not links:
            print(json.dumps({"event": "none"}))
    finally:
        asyncio.run(client.close())
    return 1 if overdue else 0
