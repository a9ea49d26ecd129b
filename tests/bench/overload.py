"""Overload bench: a long flood from one desk against honest desks; prints a JSON summary.

The longer version of tests/e2e/test_overload.py (same machinery, see there): by default a
60 s flood from 2 processes x 8 connections (invalid bodies, bodies over the notice limit,
valid notices past a 60-a-minute bucket) while 4 honest desks each send a notice a second,
after 10 s of honest traffic alone. Prints one JSON object: honest latency p50/p99 before and
during the flood, flood counts by status and kind, the relay's baseline and peak RSS, and
the ``must_be_zero`` fields. Exits 1 if any of them is not zero or another check fails.

Run from the repository root::

    python tests/bench/overload.py [--flood-seconds 60] [--flood-processes 2]
        [--connections 8] [--honest-desks 4] [--honest-interval 1.0] [--out summary.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e.test_overload import HONEST, OverloadConfig, check, run_overload


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before-seconds", type=float, default=10.0)
    p.add_argument("--flood-seconds", type=float, default=60.0)
    p.add_argument("--flood-processes", type=int, default=2)
    p.add_argument("--connections", type=int, default=8, help="per flooding process")
    p.add_argument("--honest-desks", type=int, default=4, choices=range(1, len(HONEST) + 1))
    p.add_argument("--honest-interval", type=float, default=1.0,
                   help="seconds between two notices of one honest desk")
    p.add_argument("--notices-per-minute", type=int, default=60)
    p.add_argument("--out", type=Path, help="also write the summary here")
    args = p.parse_args(argv)
    # An honest desk has the same bucket as the flooder: stay inside it.
    sent = (args.before_seconds + args.flood_seconds) / args.honest_interval + 2
    refill = args.notices_per_minute / 60 * (args.before_seconds + args.flood_seconds)
    if sent > args.notices_per_minute + refill:
        p.error("the honest desks would exceed their own rate limit; raise --honest-interval")
    cfg = OverloadConfig(before_s=args.before_seconds, flood_s=args.flood_seconds,
                         honest_desks=args.honest_desks, honest_interval_s=args.honest_interval,
                         flood_processes=args.flood_processes, flood_connections=args.connections,
                         notices_per_minute=args.notices_per_minute)
    with tempfile.TemporaryDirectory(prefix="hotline-overload-") as tmp:
        summary = run_overload(Path(tmp), cfg)
    failure = ""
    try:
        check(summary)
    except AssertionError as exc:
        failure = str(exc)[:2000] or "check failed"
    summary["ok"] = not failure
    if failure:
        summary["failure"] = failure
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0 if not failure else 1


if __name__ == "__main__":
    raise SystemExit(main())
