"""Named crash points and hostile behaviours for the fault-injection harness. Tests only.

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
