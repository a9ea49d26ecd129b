"""The ``hotline`` command: desks, authorities, operators, the relay and log witnesses.

Every command takes ``--home DIR`` (default ``$HOTLINE_HOME`` or ``~/.hotline``) and
prints a one-line error, never a traceback, for anything the user or a peer got wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from client.cli import (
    authority_cmd,
    cap_cmd,
    desk_cmd,
    drill_cmd,
    keys_cmd,
    ops_cmd,
    relay_cmd,
    relays_cmd,
    witness_cmd,
)
from client.cli.safe_text import line
from keys.errors import HotlineError, UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hotline",
        description="Hotline: secure cross-border incident notices with acknowledgement "
        "deadlines and escalation.",
    )
    parser.add_argument("--home", help="home folder (default: $HOTLINE_HOME or ~/.hotline)")
    parser.add_argument(
        "--passphrase-file",
        help="read the key passphrase from this file (else $HOTLINE_PASSPHRASE or a prompt)",
    )
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    desk_cmd.register(groups)
    keys_cmd.register(groups)
    authority_cmd.register(groups)
    relay_cmd.register(groups)
    relays_cmd.register(groups)
    witness_cmd.register(groups)
    ops_cmd.register(groups)
    drill_cmd.register(groups)
    cap_cmd.register(groups)
    demo = groups.add_parser("demo", help="run a whole federation on this machine and show it")
    demo.set_defaults(run=_run_demo)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from client import demo

    return demo.run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except UsageError as exc:
        print(f"hotline: {line(exc.message)}", file=sys.stderr)
        return 2
    except HotlineError as exc:
        # Messages carry relay error details and peers' data: never print them raw.
        print(f"hotline: {line(exc.message)} [{line(exc.code)}]", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hotline: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
