"""Small helpers shared by the CLI command modules."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from client.cli.safe_text import inert_json
from client.home import Home, resolve_home
from keys.errors import UsageError
from keys.keyfile import TEST_ONLY_MINIMUM, KdfLimits


def home_of(args: argparse.Namespace) -> Home:
    return Home(resolve_home(getattr(args, "home", None)))


def need(home: Home, name: str, what: str, hint: str) -> None:
    """Refuse at once, before any passphrase is asked, if ``name`` is not in ``home``."""
    if not home.exists(name):
        where = home.path if home.path.is_dir() else f"{home.path} (no such folder)"
        raise UsageError(f"no {what} in {where}: {hint}")


def iso(ms: int) -> str:
    """The one way every human-readable view prints a time: UTC, to the second, with
    the zone. (``--json`` output uses ISO 8601 with milliseconds instead.)"""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_text(value: object) -> str:
    """A time the relay sent as ISO 8601 text (or milliseconds), printed as :func:`iso`
    does; anything else is returned as it came (for the safe-text layer to escape)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return iso(value)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return iso(int(when.timestamp() * 1000))
    return str(value)


def kdf_progress(limits: KdfLimits, what: str) -> None:
    """Say on stderr that a passphrase is being stretched, when that takes seconds
    (an authority key's Argon2id parameters take 6-8 s on a small machine)."""
    if limits.opslimit > TEST_ONLY_MINIMUM.opslimit or limits.memlimit > TEST_ONLY_MINIMUM.memlimit:
        print(f"hotline: {what} (Argon2id, this takes several seconds)...", file=sys.stderr,
              flush=True)


COLOURS = {"critical": "\033[1;31m", "high": "\033[33m", "medium": "\033[36m",
           "low": "\033[37m", "resolved": "\033[32m"}
RESET = "\033[0m"


def colour(text: str, key: str) -> str:
    """``text`` in the colour of ``key`` (a severity, or "resolved") on a terminal; plain
    when stdout is not one or NO_COLOR is set. ``text`` must be safe already."""
    if not sys.stdout.isatty() or os.environ.get("NO_COLOR"):
        return text
    return f"{COLOURS.get(key, '')}{text}{RESET}"


def tag(status: str) -> str:
    """`` [EXERCISE]`` / `` [TEST]`` for drills, nothing for real notices."""
    return "" if status == "actual" else f" [{status.upper()}]"


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
