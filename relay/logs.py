"""Structured logs: stable event names, never notice content or keys.

JSON lines (one object per line, for collectors) when the output is not a terminal;
structlog's readable, coloured console renderer when it is. The level applies to every
logger; ``loggers`` sets levels per logger name (``relay``, ``relay.webhooks``, ...: the
most specific configured prefix wins).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import structlog
import structlog.tracebacks

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("auto", "json", "console")


def _log_level(logger: Any, method: str, event_dict: Any) -> Any:
    event_dict["log_level"] = "warning" if method == "warn" else method
    return event_dict


def _number(level: str) -> int:
    return logging.getLevelNamesMapping()[level.upper()]


class _PerLogger:
    """Drops events below the level configured for their logger (by name prefix)."""

    def __init__(self, default: int, loggers: Mapping[str, str]) -> None:
        self.default = default
        # Longest prefix first: "relay.webhooks" before "relay".
        self.rules = sorted(((name, _number(lvl)) for name, lvl in loggers.items()),
                            key=lambda rule: -len(rule[0]))

    def level_of(self, name: str) -> int:
        for prefix, level in self.rules:
            if name == prefix or name.startswith(prefix + "."):
                return level
        return self.default

    def __call__(self, logger: Any, method: str, event_dict: Any) -> Any:
        name = event_dict.get("logger", "")
        if _number("warning" if method == "warn" else method) < self.level_of(name):
            raise structlog.DropEvent
        return event_dict


def configure(level: str = "info", stream: Any = None, *, fmt: str = "auto",
              loggers: Mapping[str, str] | None = None) -> None:
    """Set up structlog for the relay process. ``fmt`` "auto": console on a terminal."""
    out = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and _isatty(out))
    per_logger = _PerLogger(_number(level), loggers or {})
    floor = min([per_logger.default, *(lvl for _, lvl in per_logger.rules)])
    renderer: Any
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=True, sort_keys=True,
                                                 level_styles=None)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            per_logger,
            _log_level,  # as "log_level": "level" is an escalation's level
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            # Tracebacks without local variables: locals hold request bodies and sessions.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
            if not console else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(floor),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def get(name: str = "relay") -> Any:
    """A logger whose events carry ``"logger": name`` (per-logger levels match on it)."""
    return structlog.get_logger().bind(logger=name)
