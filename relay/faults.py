"""Named crash points for the fault-injection harness, and the split-view attack.

A no-op unless ``HOTLINE_CRASH_AT=<point>:<n>`` is set in the relay's environment: then the
process exits with status 137 at the n-th pass through that point, as if SIGKILLed.
"""

from __future__ import annotations

import hashlib
import os
import weakref

from keys import tlog

POINTS = (
    "pre_commit",
    "post_commit_pre_response",
    "post_deliver_pre_mark",
    "post_ack_commit_pre_response",
    "post_escalation_commit_pre_notify",
)

_target: tuple[str, int] | None = None
_hits: dict[str, int] = {}


def _configure() -> None:
    global _target
    spec = os.environ.get("HOTLINE_CRASH_AT", "")
    if not spec:
        return
    name, _, n = spec.partition(":")
    if name not in POINTS or not n.isdigit() or int(n) < 1:
        raise SystemExit(
            f"HOTLINE_CRASH_AT={spec!r}: expected <point>:<n> with point one of {', '.join(POINTS)}"
        )
    _target = (name, int(n))


def crash_point(name: str) -> None:
    if _target is None or _target[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == _target[1]:
        os._exit(137)


_configure()


# --------------------------------------------------------------------------- split view


class SplitView:
    """The split-view attack, for tests only: the relay shows one country's desks another
    tree than everyone else (``HOTLINE_RELAY_TEST_ONLY_SPLIT_VIEW=<country>:<leaf>``; the
    configuration refuses it in relay.toml).

    From leaf ``fork_at`` on, the forked tree has that leaf's entry replaced (the relay tells
    that country a statement it tells no one else) and is otherwise the honest tree, so
    every statement those desks hold is still at its leaf in it. A desk is recognised by
    the connection it last authenticated on (what a real relay could do: the log's public
    resources are fetched without a session); its ``/checkpoint`` and ``/tile/...`` reads
    on that connection get the fork, signed with the relay's key at the honest size, and
    the relay offers each forked checkpoint to its witnesses too. What must catch it: the
    witnesses refuse the fork (it does not extend what they cosigned), a desk's witness
    policy refuses a checkpoint without their cosignatures, and a desk that kept an honest
    checkpoint past ``fork_at`` finds the fork inconsistent with it.
    """

    def __init__(self, country: str, fork_at: int) -> None:
        self.country = country
        self.fork_at = fork_at
        self.tree = tlog.MemoryTree()
        #: The forked checkpoint (signed note, with any cosignatures the witnesses gave).
        self.note: bytes | None = None
        self.size = 0
        self._connections: weakref.WeakKeyDictionary[object, bool] = (
            weakref.WeakKeyDictionary())

    @classmethod
    def parse(cls, spec: str) -> SplitView:
        country, _, leaf = spec.partition(":")
        if not country or not leaf.isdigit():
            raise SystemExit(f"HOTLINE_RELAY_TEST_ONLY_SPLIT_VIEW={spec!r}: expected "
                             "<country>:<leaf index>, e.g. cn:5")
        return cls(country, int(leaf))

    def identify(self, connection: object, desk: str) -> None:
        """``connection`` carried a request authenticated as ``desk``."""
        self._connections[connection] = desk.split(".", 1)[0] == self.country

    def shows_fork(self, connection: object) -> bool:
        return self.note is not None and self._connections.get(connection, False)

    def extend(self, entries: list[bytes]) -> bool:
        """Append the honest entries past the fork's size (``entries`` start at
        ``self.tree.size``); whether the fork has new leaves to sign."""
        for entry in entries:
            if self.tree.size == self.fork_at:
                entry = hashlib.sha256(b"split view: " + entry).digest()
            self.tree.append(entry)
        return bool(entries) and self.tree.size > self.fork_at

    def tile(self, t: tlog.Tile) -> bytes | None:
        if t.is_entries:
            return None  # the fork's entry bundles are not served (not needed by desks)
        level = t.level * tlog.TILE_HEIGHT
        if (t.index * tlog.TILE_WIDTH + t.width) << level > self.size:
            return None
        return tlog.tile_bytes(t, self.tree.read)
