"""The ``hotline`` command: desks, authorities, operators, the relay and log witnesses.

Every command takes ``--home DIR`` (default ``$HOTLINE_HOME`` or ``~/.hotline``) and
prints a one-line error, never a traceback, for anything the user or a peer got wrong.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import ClassVar, NoReturn

from client.cli import (
    authority_cmd,
    cap_cmd,
    desk_cmd,
    drill_cmd,
    evidence_cmd,
    keys_cmd,
    ops_cmd,
    relay_cmd,
    relays_cmd,
    witness_cmd,
)
from client.cli.safe_text import line
from keys.errors import HotlineError, UsageError

_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class HotlineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors suggest the nearest option or command for a typo.

    Options a sub-command does not know are reported by the top-level parser, which
    does not know the sub-command's options: every parser records itself once it parsed
    its part, so the error names the options of the innermost one."""

    #: Parsers that finished parsing, innermost first (reset by build_parser).
    parsed: ClassVar[list[HotlineParser]] = []

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        self._words = list(sys.argv[1:] if args is None else args)
        result = super().parse_known_args(args, namespace)
        HotlineParser.parsed.append(self)
        return result

    def error(self, message: str) -> NoReturn:
        parser = HotlineParser.parsed[0] if HotlineParser.parsed else self
        parser.print_usage(sys.stderr)
        words = getattr(self, "_words", [])
        self.exit(2, f"{parser.prog}: error: {suggest(message, parser, words)}\n")


def suggest(message: str, parser: argparse.ArgumentParser, words: Sequence[str] = ()) -> str:
    """``message`` with a "did you mean" for each unknown option or invalid choice.

    ``words`` are the arguments the failing parser was given: a missing required option
    is often a misspelt one."""
    unknown: list[str] = []
    if message.startswith("unrecognized arguments: "):
        unknown = message.removeprefix("unrecognized arguments: ").split()
    elif message.startswith("the following arguments are required"):
        unknown = [w for w in words if w.split("=", 1)[0] not in parser._option_string_actions]
    if unknown:
        known = list(parser._option_string_actions)
        notes = []
        for word in unknown:
            if not word.startswith("-") or word == "--":
                continue
            close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1, cutoff=0.6)
            if close:
                notes.append(f"{word}: did you mean {close[0]}?")
        return message + ("; " + "; ".join(notes) if notes else "")
    m = _CHOICE.search(message)
    if m:
        choices = re.findall(r"'([^']*)'", m.group(2))
        close = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.5)
        if close:
            return f"{message}; did you mean {close[0]!r}?"
    return message


def version() -> str:
    try:
        return metadata.version("hotline")
    except metadata.PackageNotFoundError:  # run from a checkout without installing
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    HotlineParser.parsed = []
    parser = HotlineParser(
        prog="hotline",
        description="Hotline: secure cross-border incident notices with acknowledgement "
        "deadlines and escalation.",
    )
    parser.add_argument("--version", action="version", version=f"hotline {version()}",
                        help="print the version and exit")
    parser.add_argument("--home", help="home folder (default: $HOTLINE_HOME or ~/.hotline)")
    parser.add_argument(
        "--passphrase-file",
        help="read the key passphrase from this file (else $HOTLINE_PASSPHRASE or a prompt)",
    )
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    desk_cmd.register(groups)
    keys_cmd.register(groups)
    relays_cmd.register(groups)
    authority_cmd.register(groups)
    relay_cmd.register(groups)
    witness_cmd.register(groups)
    evidence_cmd.register(groups)
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
