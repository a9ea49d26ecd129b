"""Named crash points and hostile behaviours for the fault-injection harness, and the
split-view attack. Tests only.

A no-op unless ``HOTLINE_CRASH_AT=<point>:<n>`` is set in the relay's environment: then the
process exits with status 137 at the n-th pass through that point, as if SIGKILLed.

``HOTLINE_TEST_HOSTILE=<behaviour>[,<behaviour>...]`` makes the relay lie the way a
hostile operator could (the multi-relay tests run one such relay beside an honest one):

* ``drop_notices_to=<desk>``: accepts notices but never delivers them to that desk
  (neither on its stream nor in its inbox);
* ``deny_delivery``: its status of any notice shows no receipt and no ack;
* ``delay_push_ms=<n>``: waits n ms before each event it pushes on a stream;
* ``withhold_revocations``: serves and pushes no revocation.
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


def _hostile() -> dict[str, str]:
    spec = os.environ.get("HOTLINE_TEST_HOSTILE", "")
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        if name not in ("drop_notices_to", "deny_delivery", "delay_push_ms",
                        "withhold_revocations"):
            raise SystemExit(f"HOTLINE_TEST_HOSTILE: unknown behaviour {name!r}")
        out[name] = value
    return out


#: The hostile behaviours switched on (empty: an honest relay).
HOSTILE = _hostile()


def drops(desk: str, kind: str) -> bool:
    """Whether a notice event to ``desk`` is to be dropped."""
    return kind == "notice" and HOSTILE.get("drop_notices_to") == desk


def push_delay_s() -> float:
    return int(HOSTILE.get("delay_push_ms") or 0) / 1000


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
