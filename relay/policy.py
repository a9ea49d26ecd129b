"""Acknowledgement and response deadlines, and the escalation ladder (pure functions).

Per severity: an acknowledgement window, a re-escalation interval, a maximum level and an
optional response window. Level 1 fires when a window closes, level k at
``deadline + (k - 1) * repeat``, up to ``max_level``. Operators may override any of these
per recipient desk. The policy in force when a notice is accepted is frozen with it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from keys.errors import UsageError
from keys.ids import DESK_ID_RE, SEVERITIES

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE


@dataclass(frozen=True, slots=True)
class Policy:
    ack_window_ms: int
    repeat_ms: int
    #: The highest level: the first escalation plus ``max_level - 1`` repeats.
    max_level: int
    response_window_ms: int | None

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, value: dict[str, Any]) -> Policy:
        return cls(int(value["ack_window_ms"]), int(value["repeat_ms"]),
                   int(value["max_level"]),
                   None if value["response_window_ms"] is None
                   else int(value["response_window_ms"]))


#: DESIGN.md defaults: critical 15 min / every 5 min / 4 h, high 1 h / 30 min / 24 h,
#: medium 24 h / 6 h / 72 h, low 72 h / 24 h / no response window; 9 repeats.
DEFAULTS: dict[str, Policy] = {
    "critical": Policy(15 * MINUTE, 5 * MINUTE, 10, 4 * HOUR),
    "high": Policy(1 * HOUR, 30 * MINUTE, 10, 24 * HOUR),
    "medium": Policy(24 * HOUR, 6 * HOUR, 10, 72 * HOUR),
    "low": Policy(72 * HOUR, 24 * HOUR, 10, None),
}


def levels_due(deadline: int, repeat_ms: int, max_level: int, now: int) -> int:
    """How many levels of a ladder starting at ``deadline`` have fallen due at ``now``."""
    if now < deadline:
        return 0
    return min(max_level, (now - deadline) // repeat_ms + 1)


def next_escalation(deadline: int, repeat_ms: int, max_level: int, level: int) -> int | None:
    """When level ``level + 1`` falls due, or None after the last level."""
    if level >= max_level:
        return None
    return deadline + level * repeat_ms


_DURATION_RE = re.compile(r"(\d+)\s*(ms|s|m|h|d)")
_UNITS = {"ms": 1, "s": SECOND, "m": MINUTE, "h": HOUR, "d": 24 * HOUR}


def parse_duration(value: Any, name: str) -> int:
    """``"15m"``, ``"1h"``, ``"90s"``, ``"500ms"`` or a number of seconds -> milliseconds."""
    if isinstance(value, bool):
        raise UsageError(f"{name} must be a duration like '15m', not {value!r}")
    if isinstance(value, int | float):
        ms = int(value * SECOND)
    elif isinstance(value, str) and _DURATION_RE.fullmatch(value.strip()):
        m = _DURATION_RE.fullmatch(value.strip())
        assert m is not None
        ms = int(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise UsageError(f"{name} must be a duration like '15m', '1h' or '90s', not {value!r}")
    if ms < SECOND:
        raise UsageError(f"{name} must be at least one second, not {value!r}")
    return ms


def _policy(raw: Any, base: Policy, name: str) -> Policy:
    if not isinstance(raw, dict):
        raise UsageError(f"{name} must be a table")
    allowed = {"ack_window", "repeat_every", "max_level", "response_window"}
    unknown = set(raw) - allowed
    if unknown:
        raise UsageError(f"{name}: unknown setting {sorted(unknown)[0]!r} "
                         f"(allowed: {', '.join(sorted(allowed))})")
    ack = parse_duration(raw["ack_window"], f"{name}.ack_window") if "ack_window" in raw \
        else base.ack_window_ms
    repeat = parse_duration(raw["repeat_every"], f"{name}.repeat_every") \
        if "repeat_every" in raw else base.repeat_ms
    max_level = raw.get("max_level", base.max_level)
    if type(max_level) is not int or not 1 <= max_level <= 100:
        raise UsageError(f"{name}.max_level must be a whole number from 1 to 100")
    response = base.response_window_ms
    if "response_window" in raw:
        r = raw["response_window"]
        response = None if r in ("none", "", 0) else parse_duration(r, f"{name}.response_window")
    return Policy(ack, repeat, max_level, response)


@dataclass(frozen=True, slots=True)
class PolicyTable:
    by_severity: dict[str, Policy]
    #: Per recipient desk, per severity.
    overrides: dict[str, dict[str, Policy]]

    def for_recipient(self, recipient: str, severity: str) -> Policy:
        return self.overrides.get(recipient, {}).get(severity) or self.by_severity[severity]

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> PolicyTable:
        """Validate the ``[policy]`` section; raise UsageError naming what is wrong."""
        raw = dict(raw or {})
        overrides_raw = raw.pop("overrides", {})
        by_severity = dict(DEFAULTS)
        for severity, section in raw.items():
            if severity not in SEVERITIES:
                raise UsageError(f"policy.{severity}: unknown severity (known: "
                                 f"{', '.join(SEVERITIES)})")
            by_severity[severity] = _policy(section, DEFAULTS[severity], f"policy.{severity}")
        overrides: dict[str, dict[str, Policy]] = {}
        if not isinstance(overrides_raw, dict):
            raise UsageError("policy.overrides must be a table of desks")
        for desk, sections in overrides_raw.items():
            if not DESK_ID_RE.fullmatch(desk):
                raise UsageError(f"policy.overrides: {desk!r} is not a desk id like cn.cac")
            if not isinstance(sections, dict):
                raise UsageError(f"policy.overrides.{desk} must be a table of severities")
            overrides[desk] = {}
            for severity, section in sections.items():
                if severity not in SEVERITIES:
                    raise UsageError(f"policy.overrides.{desk}.{severity}: unknown severity")
                overrides[desk][severity] = _policy(section, by_severity[severity],
                                                    f"policy.overrides.{desk}.{severity}")
        return cls(by_severity, overrides)
