"""Small helpers shared by the CLI command modules."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from client.cli.safe_text import inert_json
from client.home import Home, resolve_home


def home_of(args: argparse.Namespace) -> Home:
    return Home(resolve_home(args.home))


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def emit(text: str, out: str | None) -> None:
    """Write ``text`` to the file ``out``, or to stdout when ``out`` is None or '-'."""
    if out and out != "-":
        Path(out).write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def print_json(obj: dict[str, Any]) -> None:
    print(inert_json(json.dumps(obj, ensure_ascii=False, sort_keys=True)))


def _common_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--home",
        default=argparse.SUPPRESS,
        help="home folder (default: $HOTLINE_HOME or ~/.hotline)",
    )
    p.add_argument(
        "--passphrase-file",
        default=argparse.SUPPRESS,
        help="read the key passphrase from this file (else $HOTLINE_PASSPHRASE or a prompt)",
    )
    return p


#: Options every command accepts after its name (``hotline keys show --home DIR``).
COMMON = _common_options()
