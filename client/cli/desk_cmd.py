"""``hotline send|inbox|show|ack|watch|status``: a desk's daily work."""

from __future__ import annotations

from typing import Any


def register(groups: Any) -> None:
    """Register the desk commands (filled in with the client library)."""
