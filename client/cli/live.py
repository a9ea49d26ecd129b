"""Connectivity lines of the live views (``hotline watch``, ``hotline ops watch``).

A live view says where it stands: ``connected``, ``lost``, ``retrying in N s``,
``reconnected`` and, once the events that waited meanwhile have arrived, ``caught up on N
events``. Lines go to stderr (``hotline: ...``), or with ``--json`` to stdout as items
``{"event": "connection", "state": ..., ...}`` between the other items.

"Caught up" is decided by the view: the relay's stream has no end-of-backlog marker, so
the backlog counts as delivered when no event came for :data:`QUIET_S` seconds after a
(re)connection (the relay sends what waited at once, in one burst).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from client.cli.common import print_json
from client.cli.safe_text import line

#: A (re)connected stream is caught up once no event came for this long.
QUIET_S = 2.0


def _short(url: str, reason: str) -> str:
    """The reason without the URL the line names already."""
    return reason.removeprefix(f"{url}: ")


def wait_text(seconds: float) -> str:
    """``"0.3 s"`` below ten seconds, whole seconds above."""
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


class LinkView:
    """Prints connectivity changes and counts the events of a catch-up."""

    def __init__(self, *, json_mode: bool, monotonic: Callable[[], float] = time.monotonic
                 ) -> None:
        self.json = json_mode
        self._monotonic = monotonic
        #: Events since the last (re)connection, while catching up; None when caught up.
        self.catching_up: int | None = None
        self._last = monotonic()

    def say(self, state: str, text: str, **details: Any) -> None:
        if self.json:
            print_json({"event": "connection", "state": state, **details})
            sys.stdout.flush()
        else:
            print(f"hotline: {line(text)}", file=sys.stderr, flush=True)

    def connected(self, url: str, *, again: bool) -> None:
        state = "reconnected" if again else "connected"
        self.say(state, f"{state} to {url}", url=url)
        self.catching_up, self._last = 0, self._monotonic()

    def lost(self, url: str, reason: str) -> None:
        reason = _short(url, reason)
        self.catching_up = None
        self.say("lost", f"lost the connection to {url}: {reason}", url=url, reason=reason)

    def retrying(self, url: str, wait_s: float, reason: str, failures: int) -> None:
        reason = _short(url, reason)
        self.catching_up = None
        self.say("retrying", f"cannot reach {url} ({reason}); retrying in {wait_text(wait_s)}",
                 url=url, reason=reason, wait_s=round(wait_s, 3), failures=failures)

    def event(self) -> None:
        """Count one event shown."""
        self._last = self._monotonic()
        if self.catching_up is not None:
            self.catching_up += 1

    def check_caught_up(self, force: bool = False) -> None:
        """Say "caught up" once the stream has been quiet for QUIET_S (or now: ``force``)."""
        if self.catching_up is None:
            return
        if force or self._monotonic() - self._last >= QUIET_S:
            n, self.catching_up = self.catching_up, None
            self.say("caught_up", f"caught up on {n} event{'' if n == 1 else 's'}", events=n)

    async def watch_quiet(self) -> None:
        """Run alongside a view: say "caught up" when the backlog has stopped coming."""
        while True:
            await asyncio.sleep(0.2)
            self.check_caught_up()
