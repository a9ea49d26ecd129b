"""``hotline evidence export|verify`` and ``hotline federation pin-policy|make-policy``:
the relay log's evidence bundles and the witness policy desks pin (PROTOCOL.md 20)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from client.cli.common import COMMON, home_of
from client.cli.safe_text import line
from client.home import now_ms, read_document
from client.record import DB_NAME, POLICY_NAME, RecordState
from keys.errors import UsageError
from keys.keyfile import atomic_write
from keys.tlog_policy import hotline_policy, parse_policy


def register(groups: Any) -> None:
    relay_parent = argparse.ArgumentParser(add_help=False)
    relay_parent.add_argument("--relay", action="append", default=[], metavar="URL",
                              help="relay URL (default $HOTLINE_RELAY, else config.toml)")
    relay_parent.add_argument("-v", "--verbose", action="store_true",
                              help="log each relay exchange")
    ev = groups.add_parser("evidence", help="evidence bundles of the relay's log").add_subparsers(
        dest="cmd", metavar="ACTION", required=True)
    p = ev.add_parser("export", parents=[COMMON, relay_parent],
                      help="write one file proving what the relay attested about a notice")
    p.add_argument("id", help="the notice id (hex, or a unique prefix)")
    p.add_argument("-o", "--output", required=True, help="the bundle file to write")
    p.add_argument("--include-content", action="store_true",
                   help="also include the sealed notice (left out by default)")
    p.add_argument("--wait", type=float, default=30.0,
                   help="seconds to wait for a witnessed checkpoint covering every statement")
    p.set_defaults(run=cmd_export)
    p = ev.add_parser("verify", help="check a bundle offline; print its timeline")
    p.add_argument("bundle", help="the evidence bundle file")
    p.set_defaults(run=cmd_verify)


def register_federation(fed: Any) -> None:
    p = fed.add_parser("pin-policy", parents=[COMMON],
                       help="pin the witness policy the relay's checkpoints must satisfy")
    p.add_argument("policy", help="a C2SP tlog-policy file (see make-policy)")
    p.set_defaults(run=cmd_pin_policy)
    p = fed.add_parser("make-policy", help="write the default witness policy: every "
                       "member country's witnesses must cosign")
    p.add_argument("--witness", action="append", required=True, metavar="COUNTRY=VKEY",
                   help="a witness of a member country (repeat; countries as in the root)")
    p.add_argument("--per-country", default="any",
                   help="how many of a country's witnesses must cosign (any, all or N)")
    p.add_argument("-o", "--output", required=True, help="the policy file to write")
    p.set_defaults(run=cmd_make_policy)


def cmd_make_policy(args: argparse.Namespace) -> int:
    witnesses: dict[str, list[str]] = {}
    for item in args.witness:
        country, sep, vkey = item.partition("=")
        if not sep or not country or not vkey:
            raise UsageError(f"--witness {item[:60]!r}: expected COUNTRY=VKEY")
        witnesses.setdefault(country, []).append(vkey)
    data = hotline_policy([], witnesses, per_country=args.per_country)
    atomic_write(Path(args.output), data)
    print(f"wrote {args.output}: {', '.join(sorted(witnesses))} must each cosign")
    return 0


def cmd_pin_policy(args: argparse.Namespace) -> int:
    home = home_of(args)
    data = read_document(args.policy, "witness policy")
    policy = parse_policy(data)
    if home.exists("root"):
        countries = {str(c) for c in home.root().members}
        groups = set(policy.groups)
        missing = sorted(c for c in countries if c not in groups)
        if missing:
            print(f"hotline: warning: the policy has no group for member(s) {', '.join(missing)}"
                  ": their witnesses are not required", file=sys.stderr)
    home.write(POLICY_NAME, data)
    print(f"pinned the witness policy ({len(policy.witnesses)} witnesses)")
    return 0


def record_warning(args: argparse.Namespace) -> bool:
    """Print, loudly, every log inconsistency on file in the home; True if there is one."""
    path = home_of(args).path / DB_NAME
    if not path.exists():
        return False
    state = RecordState(path)
    try:
        conflicts = state.conflicts()
    finally:
        state.close()
    for _id, kind, detail, _at in conflicts:
        print(f"hotline: WARNING: THE RELAY'S LOG IS INCONSISTENT ({kind}): {line(detail)}; "
              f"evidence in {path.parent / 'record'}", file=sys.stderr)
    return bool(conflicts)


def cmd_export(args: argparse.Namespace) -> int:
    from client.cli.desk_cmd import _client
    from client.evidence import export

    client = _client(args)

    async def main() -> tuple[bytes, list[str]]:
        async with client:
            nid = client.resolve_id(args.id)
            return await export(client, nid, include_content=args.include_content,
                                wait_s=args.wait)

    bundle, missing = asyncio.run(main())
    atomic_write(Path(args.output), bundle)
    print(f"wrote {args.output}")
    for m in missing:
        print(f"hotline: warning: statement {m} is not yet in a witnessed checkpoint; "
              "it is left out", file=sys.stderr)
    return 1 if missing else 0


def cmd_verify(args: argparse.Namespace) -> int:
    from client.evidence import MAX_BUNDLE_BYTES, verify_bundle

    data = read_document(args.bundle, "evidence bundle", max_bytes=MAX_BUNDLE_BYTES)
    rep = verify_bundle(data, now=now_ms())
    for entry in rep.timeline:
        print(line(entry))
    for failure in rep.failures:
        print(f"FAILED: {line(failure)}")
    if rep.ok:
        print(f"verified: {rep.checked} signatures and proofs hold")
        return 0
    print(f"NOT VERIFIED: {len(rep.failures)} check(s) failed", file=sys.stderr)
    return 1
