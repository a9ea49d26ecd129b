"""Named crash points for the fault-injection harness.

A no-op unless ``HOTLINE_CRASH_AT=<point>:<n>`` is set in the relay's environment: then the
process exits with status 137 at the n-th pass through that point, as if SIGKILLed.
"""

from __future__ import annotations

import os

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
