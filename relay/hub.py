"""Wakes the open streams of a desk when its stream has new committed events, and keeps
the last events committed for desks with an open stream.

Events are committed before anyone is woken, so a stream can never skip one, whatever
order commits finish in. A woken stream reads what is new after its own cursor: from the
recent events kept here when they reach back to its cursor, else from the store.

The recent events are complete by construction: a store that sees every commit (the
SQLite store's single writer) hands each batch's events over in seq order, before the
writes that made them return. For a desk, ``base`` is the seq after which every one of its
committed events is kept (events at or below it were committed before its keeping began,
or were let go): a stream whose cursor is at or above ``base`` can be served from memory.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from dataclasses import dataclass, field

from keys.frames import Event
from relay.store.base import cut_by_bytes

#: Recent events kept per desk with an open stream, at most (count and bytes).
RECENT_EVENTS = 256
RECENT_BYTES = 4 * 1024 * 1024


def _size(event: Event) -> int:
    return (len(event.envelope or b"") + len(event.confirmation or b"")
            + len(event.attestation or b"") + len(event.signer_cert or b"") + 64)


@dataclass
class _Recent:
    base: int
    events: deque[Event] = field(default_factory=deque)
    size: int = 0

    def add(self, event: Event) -> None:
        self.events.append(event)
        self.size += _size(event)
        while self.events and (len(self.events) > RECENT_EVENTS or self.size > RECENT_BYTES):
            old = self.events.popleft()
            self.size -= _size(old)
            self.base = old.seq


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
            self.hub._recent.pop(self.desk, None)


class Hub:
    def __init__(self) -> None:
        self._subs: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._recent: dict[str, _Recent] = {}

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

    def publish_all(self) -> None:
        """Wake every open stream (something all of them carry, e.g. a new revocation)."""
        for subs in self._subs.values():
            for sub in subs:
                sub.wake.set()

    def close_key(self, desk: str, key_id: bytes, reason: str) -> None:
        """End the streams of one desk key (a revocation)."""
        for sub in list(self._subs.get(desk, ())):
            if sub.key_id == key_id:
                sub.close(reason)

    # ------------------------------------------------------------------ recent events
    def committed(self, events: list[tuple[str, Event | None]] | None) -> None:
        """Events just committed, in seq order (the store's ``on_events``). An event None
        was not handed over: the desk's kept events are no longer complete, so they are
        dropped (keeping starts again with its next event). The list None: some events
        could not be read, so nothing kept can be trusted to be complete any more."""
        if events is None:
            self._recent.clear()
            return
        for desk, event in events:
            if event is None:
                self._recent.pop(desk, None)
                continue
            if desk not in self._subs:
                continue  # nobody would read it from memory
            recent = self._recent.get(desk)
            if recent is None:
                recent = self._recent[desk] = _Recent(base=event.seq - 1)
            recent.add(event)

    def recent_page(self, desk: str, after: int, limit: int, max_bytes: int
                    ) -> tuple[list[Event], bool] | None:
        """As :meth:`recent`, cut by bytes like a store page (at least one event), with
        whether more kept events follow; None when memory does not reach back."""
        events = self.recent(desk, after, limit + 1)
        if events is None:
            return None
        _last, count = cut_by_bytes([(e.seq, _size(e) - 64) for e in events[:limit]],
                                    max_bytes)
        return events[:count], count < len(events)

    def recent(self, desk: str, after: int, limit: int) -> list[Event] | None:
        """The desk's events after ``after`` from memory (at most ``limit``), or None when
        memory does not reach back to ``after``: read the store."""
        recent = self._recent.get(desk)
        if recent is None or after < recent.base:
            return None
        out = []
        for event in recent.events:
            if event.seq > after:
                out.append(event)
                if len(out) == limit:
                    break
        return out
