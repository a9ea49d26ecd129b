"""Wakes the open streams of a desk when its stream has new committed events.

The hub carries no events, only wake-ups: each stream reads what is new from the store
after its own cursor. Events are committed before anyone is woken, so a stream can never
skip one, whatever order commits finish in.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class Subscription:
    def __init__(self, hub: Hub, desk: str, key_id: bytes = b"") -> None:
        self.hub = hub
        self.desk = desk
        self.key_id = key_id
        self.wake = asyncio.Event()
        self.closed_reason: str | None = None

    def close(self, reason: str) -> None:
        self.closed_reason = reason
        self.wake.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.hub._subs[self.desk].discard(self)
        if not self.hub._subs[self.desk]:
            del self.hub._subs[self.desk]


class Hub:
    def __init__(self) -> None:
        self._subs: defaultdict[str, set[Subscription]] = defaultdict(set)

    def subscribe(self, desk: str, key_id: bytes = b"") -> Subscription:
        sub = Subscription(self, desk, key_id)
        self._subs[desk].add(sub)
        return sub

    def count(self, desk: str) -> int:
        return len(self._subs.get(desk, ()))

    def total(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def publish(self, desk: str) -> None:
        for sub in self._subs.get(desk, ()):
            sub.wake.set()

    def close_key(self, desk: str, key_id: bytes, reason: str) -> None:
        """End the streams of one desk key (a revocation)."""
        for sub in list(self._subs.get(desk, ())):
            if sub.key_id == key_id:
                sub.close(reason)
