"""Structured logs: JSON lines with stable event names, never notice content or keys."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
import structlog.tracebacks


def _log_level(logger: Any, method: str, event_dict: Any) -> Any:
    event_dict["log_level"] = "warning" if method == "warn" else method
    return event_dict


def configure(level: str = "info", stream: Any = None) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _log_level,  # as "log_level": "level" is an escalation's level
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            # Tracebacks without local variables: locals hold request bodies and sessions.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=True,
    )


def get(name: str = "relay") -> Any:
    return structlog.get_logger(name)
