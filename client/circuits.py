"""Several relays at once ("circuits"): each notice, receipt and ack goes over every one.

A desk may list several relays, each an identity (its own key, pinned on first contact)
reachable at one or more URLs (failover between the URLs of one relay is
:class:`client.connection.RelayConnection`'s). This module owns one connection per relay
identity and:

* **fans out**: the very same envelope bytes (or signed confirmation bytes) go to every
  relay in parallel; each relay's acceptance is checked against that relay's own pinned
  key; a call returns once ``require`` relays accepted (the others go on in the
  background), and what a relay missed is kept in ``circuits.db`` and posted again, the
  same bytes, until it is accepted or its window ends (:meth:`Circuits.retry_missed`);
* **merges the streams**: one stream per relay, read at once; each event is handed over
  with the circuit it came by (so it is verified against that relay's key) and each
  relay's cursor moves on its own. Dropping the copies that arrived by another relay is
  the caller's (:class:`client.client.HotlineClient`: by notice id, and by kind, notice and
  recipient for confirmations and escalations);
* asks "any one" (a card, our own notice: both verified end to end, so whichever relay
  answers first will do) or "every one" (our card, revocations, a notice's status).

With one relay and no relay list in the home (the layout before several relays) nothing
changes: the stream cursor is the client state's and seq numbers are the relay's. With a
relay list, each relay's cursor is kept here and a relay's seq ``s`` is known locally as
``slot << 48 | s`` (``slot`` fixed per relay identity), so the client's records of events
from different relays never collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from client.connection import RelayConnection, RelayError, RelayIdentityError, RelayUnavailable
from client.home import Home
from client.items import RelayAcceptance
from client.status_merge import DEFAULT_LAG_MS
from client.verify import check_attestation
from keys.errors import HotlineError, MalformedInput, UsageError
from keys.frames import Event
from keys.keyfile import ensure_private_dir
from keys.receipts import Attestation, RelayCard

log = logging.getLogger("hotline.client.circuits")

T = TypeVar("T")

#: The relay attestation each kind of fanned-out message is answered with.
ATTESTS = {"notice": "accepted", "receipt": "delivered", "ack": "acknowledged",
           "rejection": "rejected"}
SLOT_SHIFT = 48
#: What a relay missed is posted again until this long after it was first sent.
DEFAULT_RETRY_WINDOW_MS = 24 * 3600_000
#: HTTP statuses that refuse for good (resending the same bytes cannot help).
_FINAL = frozenset(range(400, 500)) - {401, 404, 408, 409, 425, 429}

RELAYS_FILE = "relays.json"
PIN_DIR = "relays"


# ----------------------------------------------------------------------------- the list


@dataclass(frozen=True, slots=True)
class RelaySpec:
    """One relay identity of a desk home: its id (the pinned card's) and its URLs."""

    relay_id: str
    urls: tuple[str, ...]


class IdentityPin:
    """The pinned card of one relay identity, ``relays/<relay_id>.card`` in the home."""

    def __init__(self, home: Home, relay_id: str) -> None:
        self.home = home
        self.relay_id = relay_id
        self.name = f"{PIN_DIR}/{relay_id}.card"

    def load(self) -> RelayCard | None:
        if not self.home.exists(self.name):
            return None
        return RelayCard.decode(self.home.read(self.name, "pinned relay card"))

    def save(self, card: RelayCard) -> None:
        if card.relay_id != self.relay_id:
            raise RelayIdentityError(
                f"the relay listed as {self.relay_id} presents itself as {card.relay_id}")
        self.home.write(self.name, card.encode())


class RelayBook:
    """The home's relay list (``relays.json``) with one pin per relay identity.

    A home of the one-relay layout (``relay.card`` and ``relays`` URLs in config.toml) is
    migrated when a relay is first added: its relay becomes the first entry, its pin
    moves to ``relays/<id>.card``."""

    def __init__(self, home: Home) -> None:
        self.home = home

    def exists(self) -> bool:
        return self.home.exists(RELAYS_FILE)

    def load(self) -> list[RelaySpec]:
        if not self.exists():
            return []
        try:
            data = json.loads(self.home.read(RELAYS_FILE, "relay list"))
            return [RelaySpec(str(r["id"]), tuple(str(u) for u in r["urls"]))
                    for r in data["relays"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{self.home.file(RELAYS_FILE)} is not a relay list: {exc}") from exc

    def save(self, specs: Sequence[RelaySpec]) -> None:
        data = {"relays": [{"id": s.relay_id, "urls": list(s.urls)} for s in specs]}
        self.home.write(RELAYS_FILE, json.dumps(data, indent=2).encode() + b"\n")

    def pin(self, relay_id: str) -> IdentityPin:
        return IdentityPin(self.home, relay_id)

    def migrate(self, legacy_urls: Sequence[str]) -> list[RelaySpec]:
        """The list, made from the one-relay layout if there is none yet."""
        if self.exists():
            return self.load()
        legacy = self.home.file("relay.card")
        if not legacy.exists():
            return []
        card = RelayCard.decode(self.home.read("relay.card", "pinned relay card"))
        self.pin(card.relay_id).save(card)
        specs = [RelaySpec(card.relay_id, tuple(legacy_urls))] if legacy_urls else []
        self.save(specs)
        return specs

    def add(self, card: RelayCard, url: str) -> tuple[RelaySpec, bool]:
        """Add ``url`` as a URL of the relay that presented ``card`` (already checked
        against this relay's pin if there is one). Returns the entry and whether the relay
        is new to the list."""
        specs = self.load()
        for i, s in enumerate(specs):
            if s.relay_id == card.relay_id:
                urls = tuple(dict.fromkeys((*s.urls, url)))
                specs[i] = RelaySpec(s.relay_id, urls)
                self.save(specs)
                return specs[i], False
        pinned = self.pin(card.relay_id).load()
        if pinned is None:
            self.pin(card.relay_id).save(card)
        spec = RelaySpec(card.relay_id, (url,))
        self.save([*specs, spec])
        return spec, True

    def remove(self, what: str) -> RelaySpec:
        """Remove a relay by id (with its pin), or one URL of it."""
        specs = self.load()
        for i, s in enumerate(specs):
            if s.relay_id == what or (what in s.urls and len(s.urls) == 1):
                del specs[i]
                self.save(specs)
                pin = self.home.file(self.pin(s.relay_id).name)
                pin.unlink(missing_ok=True)
                return s
            if what in s.urls:
                specs[i] = RelaySpec(s.relay_id, tuple(u for u in s.urls if u != what))
                self.save(specs)
                return specs[i]
        raise UsageError(f"no relay {what!r} in {self.home.file(RELAYS_FILE)}")


# ----------------------------------------------------------------------------- bookkeeping


_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (
    relay TEXT PRIMARY KEY,
    slot  INTEGER NOT NULL UNIQUE,
    seq   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sends (
    notice_id   BLOB NOT NULL,
    relay       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    body        BLOB NOT NULL,
    digest      BLOB NOT NULL,
    desk        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    until       INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'accepted', 'refused')),
    attestation BLOB,
    error       TEXT,
    PRIMARY KEY (notice_id, relay, kind)
);
CREATE INDEX IF NOT EXISTS sends_pending ON sends (state, relay, created_at);
"""


@dataclass(frozen=True, slots=True)
class SendRow:
    notice_id: bytes
    relay: str
    kind: str
    body: bytes
    digest: bytes
    desk: str
    created_at: int
    until: int
    state: str
    attestation: bytes | None
    error: str | None


class CircuitBook:
    """``circuits.db`` in the desk home: each relay's cursor and what each relay took."""

    def __init__(self, path: str | Path) -> None:
        ensure_private_dir(Path(path).parent)
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def slot(self, relay: str, initial: int = 0) -> int:
        row = self._db.execute("SELECT slot FROM cursors WHERE relay = ?", (relay,)).fetchone()
        if row is not None:
            return int(row[0])
        (top,) = self._db.execute("SELECT COALESCE(MAX(slot), 0) FROM cursors").fetchone()
        self._db.execute("INSERT INTO cursors (relay, slot, seq) VALUES (?, ?, ?)",
                         (relay, int(top) + 1, initial))
        return int(top) + 1

    def cursor(self, relay: str) -> int:
        row = self._db.execute("SELECT seq FROM cursors WHERE relay = ?", (relay,)).fetchone()
        return int(row[0]) if row is not None else 0

    def advance(self, relay: str, seq: int) -> None:
        self._db.execute("UPDATE cursors SET seq = MAX(seq, ?) WHERE relay = ?", (seq, relay))

    def add(self, rows: Sequence[SendRow]) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO sends VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(r.notice_id, r.relay, r.kind, r.body, r.digest, r.desk, r.created_at, r.until,
              r.state, r.attestation, r.error) for r in rows])

    def settle(self, notice_id: bytes, relay: str, kind: str, state: str,
               attestation: bytes | None, error: str | None) -> None:
        self._db.execute(
            "UPDATE sends SET state = ?, attestation = ?, error = ? WHERE notice_id = ? AND "
            "relay = ? AND kind = ? AND state = 'pending'",
            (state, attestation, error, notice_id, relay, kind))

    def note_error(self, row: SendRow, error: str) -> None:
        self._db.execute("UPDATE sends SET error = ? WHERE notice_id = ? AND relay = ? AND "
                         "kind = ?", (error, row.notice_id, row.relay, row.kind))

    _SELECT = ("SELECT notice_id, relay, kind, body, digest, desk, created_at, until, state, "
               "attestation, error FROM sends WHERE ")
    #: The only filters _rows takes (constants: no caller text reaches the SQL).
    _WHERE: ClassVar[dict[str, str]] = {
        "pending": "state = 'pending' AND until > ? ORDER BY created_at",
        "of": "notice_id = ? AND kind = ? ORDER BY created_at",
    }

    def _rows(self, which: str, args: tuple[Any, ...]) -> list[SendRow]:
        rows = self._db.execute(self._SELECT + self._WHERE[which], args)
        return [SendRow(bytes(r[0]), r[1], r[2], bytes(r[3]), bytes(r[4]), r[5], r[6], r[7],
                        r[8], bytes(r[9]) if r[9] is not None else None, r[10]) for r in rows]

    def pending(self, now: int) -> list[SendRow]:
        return self._rows("pending", (now,))

    def of(self, notice_id: bytes, kind: str) -> list[SendRow]:
        return self._rows("of", (notice_id, kind))


# ----------------------------------------------------------------------------- results


class NotEnoughRelays(RelayUnavailable):
    """Fewer relays accepted than required; the rest stays in the outbox and is posted
    again. ``results``: each relay's answer."""

    code = "not_enough_relays"

    def __init__(self, detail: str, results: Sequence[RelayAcceptance]) -> None:
        super().__init__(detail)
        self.results = tuple(results)


def describe(results: Sequence[RelayAcceptance]) -> str:
    """``accepted by us-relay, cn-relay; 2 of 2`` (and what the others said)."""
    ok = [r.relay for r in results if r.accepted]
    text = f"accepted by {', '.join(ok) if ok else 'none'}; {len(ok)} of {len(results)}"
    rest = [f"{r.relay}: {r.state}" + (f" ({r.error})" if r.error else "")
            for r in results if not r.accepted]
    return text + (f" ({'; '.join(rest)})" if rest else "")


# ----------------------------------------------------------------------------- circuits


class Circuit:
    """One relay identity: its connection and its own cursor."""

    def __init__(self, connection: RelayConnection, *, name: str | None = None,
                 cursor: Callable[[], int], advance: Callable[[int], None],
                 slot: int = 0) -> None:
        self.connection = connection
        self._name = name
        self.cursor = cursor
        self.advance = advance
        self.slot = slot

    @property
    def name(self) -> str:
        """The relay's id (from its pin), else its URL (not contacted yet)."""
        if self._name is not None:
            return self._name
        card = self.connection.relay_card
        return card.relay_id if card is not None else self.connection.url

    async def card(self) -> RelayCard:
        return await self.connection.ensure_relay()

    def local(self, event: Event) -> Event:
        """The event with its seq as this client knows it (see the module docstring)."""
        return event if self.slot == 0 else replace(event, seq=self.slot << SLOT_SHIFT | event.seq)


class Circuits:
    """The desk's relays: fan-out, merged streams, and retries of what a relay missed."""

    def __init__(self, circuits: Sequence[Circuit], book: CircuitBook | None, *,
                 clock: Callable[[], int], retry_window_ms: int = DEFAULT_RETRY_WINDOW_MS,
                 ask_timeout_s: float = 10.0) -> None:
        if not circuits:
            raise UsageError("no relay")
        self.circuits = tuple(circuits)
        self.book = book
        self._clock = clock
        self.retry_window_ms = retry_window_ms
        #: How long a question put to every relay waits for the slow ones.
        self.ask_timeout_s = ask_timeout_s
        #: A step one relay got longer ago than this, missing on another, flags that one
        #: as lying rather than lagging (client.status_merge).
        self.lag_ms = DEFAULT_LAG_MS
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def primary(self) -> Circuit:
        return self.circuits[0]

    @property
    def multi(self) -> bool:
        return self.book is not None

    def by_card(self, card: RelayCard) -> Circuit:
        for c in self.circuits:
            rc = c.connection.relay_card
            if rc is not None and rc.key == card.key:
                return c
        return self.primary

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for c in self.circuits:
            await c.connection.close()
        if self.book is not None:
            self.book.close()

    def _spawn(self, coro: Awaitable[T]) -> asyncio.Task[T]:
        task: asyncio.Task[T] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # ------------------------------------------------------------------ fan-out
    async def _post(self, c: Circuit, kind: str, body: bytes, notice_id: bytes,
                    digest: bytes, desk: str) -> RelayAcceptance:
        try:
            if kind == "notice":
                accepted = await c.connection.post_notice(body)
            else:
                accepted = await c.connection.send_confirmation(body)
            att = check_attestation(accepted.attestation, await c.card(), event=ATTESTS[kind],
                                    notice_id=notice_id, digest=digest, desk=desk)
        except RelayIdentityError:
            raise
        except RelayError as exc:
            final = not isinstance(exc, RelayUnavailable) and exc.status in _FINAL
            result = RelayAcceptance(c.name, "refused" if final else "pending",
                                     error=exc.message)
        except HotlineError as exc:  # a bad attestation: this relay did not accept it
            result = RelayAcceptance(c.name, "pending", error=exc.message)
        else:
            result = RelayAcceptance(c.name, "accepted", att, accepted.attestation,
                                     accepted.duplicate, leaf=accepted.leaf)
        if self.book is not None and result.state != "pending":
            self.book.settle(notice_id, c.name, kind, result.state, result.raw, result.error)
        elif self.book is not None and result.error:
            self.book.note_error(SendRow(notice_id, c.name, kind, b"", b"", "", 0, 0, "", None,
                                         None), result.error)
        return result

    async def fan_out(self, kind: str, body: bytes, *, notice_id: bytes, digest: bytes,
                      desk: str, require: int = 1, grace_s: float = 0.0,
                      until: int | None = None) -> tuple[RelayAcceptance, ...]:
        """Post ``body`` (a notice, or a receipt/ack/rejection) to every relay at once.

        Returns each relay's answer once ``require`` relays accepted (then waits up to
        ``grace_s`` more for the others), or once every relay answered. A relay that has
        not accepted by then is kept (``circuits.db``) and posted again by
        :meth:`retry_missed` until ``until``. With one relay and no relay list, its error
        is raised as it is."""
        if self.book is None:
            return (await self._post_single(kind, body, notice_id, digest, desk),)
        now = self._clock()
        deadline = until if until is not None else now + self.retry_window_ms
        self.book.add([SendRow(notice_id, c.name, kind, body, digest, desk, now, deadline,
                               "pending", None, None) for c in self.circuits])
        tasks = {self._spawn(self._post(c, kind, body, notice_id, digest, desk)): c
                 for c in self.circuits}
        pending = set(tasks)
        done_ok = 0
        while pending and done_ok < require:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            done_ok += sum(1 for t in finished if not t.exception() and t.result().accepted)
        if pending and grace_s > 0:
            _, pending = await asyncio.wait(pending, timeout=grace_s)
        results = []
        for task, c in tasks.items():
            if task.done() and task.exception() is None:
                results.append(task.result())
            elif task.done():
                exc = task.exception()
                results.append(RelayAcceptance(c.name, "pending", error=str(exc)))
            else:
                results.append(RelayAcceptance(c.name, "pending", error="no answer yet"))
        return tuple(results)

    async def _post_single(self, kind: str, body: bytes, notice_id: bytes, digest: bytes,
                           desk: str) -> RelayAcceptance:
        c = self.primary
        if kind == "notice":
            accepted = await c.connection.post_notice(body)
        else:
            accepted = await c.connection.send_confirmation(body)
        att = check_attestation(accepted.attestation, await c.card(), event=ATTESTS[kind],
                                notice_id=notice_id, digest=digest, desk=desk)
        return RelayAcceptance(c.name, "accepted", att, accepted.attestation, accepted.duplicate,
                               leaf=accepted.leaf)

    def results(self, notice_id: bytes, kind: str) -> tuple[RelayAcceptance, ...]:
        """What each relay answered to ``kind`` of ``notice_id``, as kept."""
        if self.book is None:
            return ()
        return tuple(RelayAcceptance(r.relay, r.state,
                                     Attestation.decode(r.attestation) if r.attestation else None,
                                     r.attestation, error=r.error)
                     for r in self.book.of(notice_id, kind))

    async def retry_missed(self) -> int:
        """Post again what a relay missed (the same bytes), relay by relay in parallel; a
        relay that fails one is left for the next round. Returns how many it took."""
        if self.book is None:
            return 0
        rows = self.book.pending(self._clock())
        by_relay: dict[str, list[SendRow]] = {}
        for r in rows:
            by_relay.setdefault(r.relay, []).append(r)
        names = {c.name: c for c in self.circuits}

        async def one_relay(c: Circuit, todo: list[SendRow]) -> int:
            took = 0
            for r in todo:
                result = await self._post(c, r.kind, r.body, r.notice_id, r.digest, r.desk)
                if result.state == "pending":
                    return took
                took += result.accepted
                log.info("circuits.caught_up relay=%s kind=%s notice_id=%s state=%s",
                         c.name, r.kind, r.notice_id.hex(), result.state)
            return took

        counts = await asyncio.gather(*(one_relay(names[n], todo) for n, todo in by_relay.items()
                                        if n in names), return_exceptions=True)
        return sum(n for n in counts if isinstance(n, int))

    def keep_retrying(self, interval_s: float, sleep: Callable[[float], Awaitable[None]]) -> None:
        """Run :meth:`retry_missed` every ``interval_s`` until :meth:`close`."""
        if self.book is None:
            return

        async def loop() -> None:
            while True:
                try:
                    await self.retry_missed()
                except Exception as exc:
                    log.warning("circuits.retry_failed reason=%s", exc)
                await sleep(interval_s)

        self._spawn(loop())

    # ------------------------------------------------------------------ questions
    async def any_of(self, ask: Callable[[RelayConnection], Awaitable[T]],
                     accept: Callable[[T], bool] = lambda _: True) -> T:
        """The first answer ``accept`` takes, asked of every relay at once (for what is
        verified end to end, so any relay's answer will do). Raises the primary relay's
        error if none answers so."""
        if len(self.circuits) == 1:
            return await ask(self.primary.connection)
        tasks = [asyncio.ensure_future(ask(c.connection)) for c in self.circuits]
        fallback: T | None = None
        have_fallback = False
        try:
            for next_done in asyncio.as_completed(tasks):
                try:
                    value = await next_done
                except (RelayError, MalformedInput) as exc:
                    log.info("circuits.ask_failed reason=%s", exc)
                    continue
                if accept(value):
                    return value
                if not have_fallback:
                    fallback, have_fallback = value, True
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if have_fallback:
            return fallback  # type: ignore[return-value]
        return await tasks[0]  # raises the primary's error

    async def every(self, ask: Callable[[Circuit], Awaitable[T]]
                    ) -> list[tuple[Circuit, T | BaseException]]:
        """Each relay's answer (or error), asked at once; a relay that has not answered
        within ``ask_timeout_s`` counts as unavailable (with one relay: no time limit)."""
        if len(self.circuits) == 1:
            c = self.primary
            try:
                return [(c, await ask(c))]
            except (RelayError, MalformedInput) as exc:
                return [(c, exc)]
        tasks = [asyncio.ensure_future(ask(c)) for c in self.circuits]
        await asyncio.wait(tasks, timeout=self.ask_timeout_s)
        out: list[tuple[Circuit, T | BaseException]] = []
        for c, t in zip(self.circuits, tasks, strict=True):
            if not t.done():
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
                out.append((c, RelayUnavailable(f"{c.name} did not answer within "
                                                f"{self.ask_timeout_s:g}s")))
            elif (failure := t.exception()) is not None:
                if isinstance(failure, RelayIdentityError):
                    raise failure
                out.append((c, failure))
            else:
                out.append((c, t.result()))
        return out

    # ------------------------------------------------------------------ streams
    async def live(self) -> AsyncGenerator[tuple[Circuit, Event], None]:
        """Every relay's stream at once, merged as events arrive; each event comes with
        its circuit and its local seq. A relay that refuses its stream (or is not the one
        pinned) is dropped with a warning while another goes on; when none is left, the
        last error is raised."""
        queue: asyncio.Queue[tuple[Circuit, Event] | tuple[Circuit, BaseException]] = (
            asyncio.Queue(maxsize=64))

        async def pump(c: Circuit) -> None:
            try:
                async for event in c.connection.events(c.cursor):
                    await queue.put((c, event))
                await queue.put((c, RelayUnavailable(f"{c.name}: the stream ended")))
            except Exception as exc:  # handed to the consumer
                await queue.put((c, exc))

        tasks = [asyncio.create_task(pump(c)) for c in self.circuits]
        alive = len(tasks)
        try:
            while True:
                c, got = await queue.get()
                if isinstance(got, BaseException):
                    alive -= 1
                    if alive == 0 or self.book is None:
                        raise got
                    log.warning("circuits.stream_dropped relay=%s reason=%s", c.name, got)
                    continue
                yield c, got
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def pages(self) -> list[tuple[Circuit, list[Event]]]:
        """Every event available now on each relay (inbox pages); a relay that cannot be
        reached within ``ask_timeout_s`` is skipped (with one relay its error is raised)."""

        async def all_pages(c: Circuit) -> list[Event]:
            events: list[Event] = []
            after = c.cursor()
            while True:
                page = await c.connection.inbox(after)
                events.extend(page.events)
                if not page.more or page.next_cursor <= after:
                    return events
                after = page.next_cursor

        if self.book is None:
            return [(self.primary, await all_pages(self.primary))]
        out = []
        for c, got in await self.every(all_pages):
            if isinstance(got, BaseException):
                log.warning("circuits.inbox_failed relay=%s reason=%s", c.name, got)
                continue
            out.append((c, got))
        return out


__all__ = [
    "ATTESTS",
    "Circuit",
    "CircuitBook",
    "Circuits",
    "IdentityPin",
    "NotEnoughRelays",
    "RelayAcceptance",
    "RelayBook",
    "RelaySpec",
    "describe",
    "open_circuits",
]


def open_circuits(
    home: Home,
    specs: Sequence[RelaySpec],
    *,
    make: Callable[[Sequence[str], Any, Callable[[bytes], None]], RelayConnection],
    learn: Callable[[bytes, str], None],
    state_cursor: Callable[[], int],
    clock: Callable[[], int],
) -> Circuits:
    """The circuits of a home's relay list: one connection per relay identity (``make(urls,
    pin, on_revocation)``), each pinned in ``relays/<id>.card``, its cursor in
    ``circuits.db``. A relay that was this home's only one before (``relay.card``) keeps its
    stream position (``state_cursor``)."""
    book = CircuitBook(home.file("circuits.db"))
    legacy = None
    if home.exists("relay.card"):
        legacy = RelayCard.decode(home.read("relay.card", "pinned relay card")).relay_id
    circuits = []
    for spec in specs:
        initial = state_cursor() if spec.relay_id == legacy else 0
        slot = book.slot(spec.relay_id, initial if initial < 1 << SLOT_SHIFT else 0)
        rid = spec.relay_id

        def on_revocation(body: bytes, rid: str = rid) -> None:
            learn(body, rid)

        conn = make(spec.urls, IdentityPin(home, rid), on_revocation)
        circuits.append(Circuit(
            conn, name=rid, slot=slot,
            cursor=lambda rid=rid: book.cursor(rid),  # type: ignore[misc]
            advance=lambda seq, rid=rid: book.advance(rid, seq),  # type: ignore[misc]
        ))
    return Circuits(circuits, book, clock=clock)
