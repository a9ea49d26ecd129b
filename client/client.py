"""``HotlineClient``: send, receive, acknowledge and follow notices, verified end to end.

::

    async with HotlineClient.from_home("~/.hotline") as client:
        result = await client.send(to=["cn.cac"], severity="critical", notice=report)
        async for n in client.notices():          # verified, decrypted, each once
            handle(n.report)
            await client.ack(n.notice_id, message="seen, investigating")

Receiving. :meth:`HotlineClient.events` yields every verified item of this desk's stream,
in order: :class:`ReceivedNotice` (a notice addressed to us), :class:`ConfirmationEvent`
(a recipient's receipt or acknowledgement of a notice we sent), :class:`EscalationEvent`
(the relay escalated or resolved a notice), :class:`NoticeRejectedByRecipient` (a
recipient could not open a notice we sent, and said so, signed) and :class:`NoticeRejected`
(an event that failed verification: it is recorded, never shown as a notice, and never
stops the loop). A notice that fails to open for a reason its sender's own signature
proves to be the sender's (``HotlineError.sender_fault``) is also answered with a signed
rejection, so the sender learns at once why this desk stays silent.
:meth:`HotlineClient.notices` yields only the notices. Run one of them at a time.

Each notice is yielded once: it is verified, stored (sealed) and its delivery receipt is
sent before it is yielded; it counts as processed when the caller asks for the next item
or acknowledges it. A notice yielded but not processed when the process stopped is yielded
again after a restart, with ``redelivered=True``; a processed one never again.

Sending. A notice is sealed to recipients' cards fetched from the relay and verified
against this desk's pinned root (a revoked, unknown or forged key is refused), written to
the outbox, then posted. A signed receipt, acknowledgement or rejection is likewise kept
before it is posted. While the relay cannot be reached, a send seals to the recipients'
cards in the home's contacts/ (verified the same way) and returns ``queued``; an ack
returns ``queued`` too: what is kept is posted, the same bytes and in order, by
:meth:`HotlineClient.retry_outbox`, which runs when the client starts, at each fetch, and
in a running event loop whenever the stream (re)connects and on a timer with backoff.
:meth:`HotlineClient.outbox` lists what waits. ``queue=False`` withdraws instead.

The home. A running client picks up what changes in its home folder (``keys rotate``,
``revocations add``, ``contacts add``, a newly pinned root) without a restart: it looks at
each event and, in an event loop, every second. New keys are read with the passphrase the
client was opened with (held in memory only, as the keys are); its new card is then
given to the relay. A notice sealed to a key it does not hold makes it read its keys
again; one that still does not open is kept unopened (:meth:`HotlineClient.unopened`),
never receipted or marked seen, and tried again whenever the keys change and at each
fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from contextlib import aclosing
from pathlib import Path

from client.circuits import (
    Circuit,
    Circuits,
    NotEnoughRelays,
    RelayBook,
    RelaySpec,
    describe,
    open_circuits,
)
from client.connection import (
    Clock,
    RelayConnection,
    RelayError,
    RelayIdentityError,
    RelayUnavailable,
    RetryPolicy,
    Sleep,
)
from client.home import Home, now_ms, read_passphrase, resolve_home
from client.items import (
    AckResult,
    ClockSkewWarning,
    ConfirmationEvent,
    EscalationEvent,
    Item,
    NoticeRejected,
    NoticeRejectedByRecipient,
    NoticeUnopened,
    OutboxItem,
    ReceivedNotice,
    RelayAcceptance,
    SendResult,
    StatusMismatch,
    UnknownDesk,
    UnknownNotice,
    UnopenedNotice,
    WatchdogOverdue,
)
from client.multi import handle_once, merged_status
from client.record import LogInconsistent, RecordChecker, log_verifier
from client.state import (
    ClientState,
    ConfirmationRecord,
    OutboxRecord,
    PendingConfirmation,
    ReceivedRecord,
    RejectedRecord,
    RelayEventRecord,
    UnopenedRecord,
    WarningRecord,
)
from client.verify import (
    DEFAULT_MAX_CLOCK_SKEW_MS,
    NoticeStatusView,
    OwnCopy,
    VerifiedNotice,
    beyond_skew,
    reopen,
    status_view,
    verify_confirmation,
    verify_notice,
    verify_rejection,
    verify_relay_event,
)
from client.watchdog import WatchdogPolicy
from client.watchdog import overdue as watchdog_overdue
from keys import codec
from keys.envelope import Envelope, seal
from keys.errors import HotlineError, MalformedInput, UntrustedKey, UsageError
from keys.frames import Event
from keys.ids import NOTICE_ID_BYTES, DeskId, desk_id
from keys.note import Verifier
from keys.primitives import Random, system_random
from keys.receipts import (
    MAX_ACK_MESSAGE_CHARS,
    REJECTION_REASONS,
    Attestation,
    Confirmation,
    Rejection,
    RelayCard,
)
from keys.report import IncidentReport
from keys.secrets import DeskSecrets
from keys.trust import DeskCard, Revocation, TrustStore, VerifiedDesk

log = logging.getLogger("hotline.client")

RELAY_ENV = "HOTLINE_RELAY"
#: The desk home's config.toml key for the allowed clock skew, in seconds.
SKEW_CONFIG = "max_clock_skew_seconds"
#: HTTP statuses that refuse a notice for good: resending the same bytes cannot help.
_FINAL = range(400, 500)
_NOT_FINAL = frozenset({401, 408, 425, 429})


# ----------------------------------------------------------------------------- helpers


class HomePin:
    """The relay card pinned on first use, in the desk home's ``relay.card``."""

    NAME = "relay.card"

    def __init__(self, home: Home) -> None:
        self.home = home

    def load(self) -> RelayCard | None:
        if not self.home.exists(self.NAME):
            return None
        return RelayCard.decode(self.home.read(self.NAME, "pinned relay card"))

    def save(self, card: RelayCard) -> None:
        self.home.write(self.NAME, card.encode())


def relay_urls(home: Home, explicit: Sequence[str] | None = None) -> list[str]:
    """Relay URLs: ``explicit`` if given, else $HOTLINE_RELAY (comma-separated), else the
    home's config ``relays``."""
    if explicit:
        return list(explicit)
    env = os.environ.get(RELAY_ENV, "")
    urls = [u.strip() for u in env.split(",") if u.strip()]
    if urls:
        return urls
    configured = home.config().get("relays", [])
    if isinstance(configured, str):
        configured = [configured]
    if not isinstance(configured, list):
        raise UsageError(f"{home.file('config.toml')}: relays must be a list of URLs")
    return [str(u) for u in configured]


def configured_skew_ms(home: Home) -> int | None:
    """The allowed clock skew set in the home's config.toml (``max_clock_skew_seconds``),
    in ms, or None if it is not set."""
    value = home.config().get(SKEW_CONFIG)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86_400:
        raise UsageError(f"{home.file('config.toml')}: {SKEW_CONFIG} must be a number of "
                         f"seconds from 0 to 86400, not {value!r}")
    return int(value * 1000)


def _recipient(value: str) -> DeskId:
    try:
        return desk_id(value)
    except MalformedInput as exc:
        raise UsageError(
            f"recipient {str(value)[:60]!r} is not a desk id (cc.name, e.g. cn.cac)"
        ) from exc


def _content_digest(reply: bytes | None, notice: IncidentReport) -> str:
    """What a notice id stands for besides its routing facts. ``aware_at`` is left out:
    it defaults to "now", so a send repeated after a failure would never match its first
    try."""
    report = dataclasses.replace(notice, aware_at=0).to_wire()
    return hashlib.sha256(codec.pack([reply, report])).hexdigest()


def _check_same_notice(existing: OutboxRecord, recipients: Sequence[str], severity: str,
                       status: str, content: str, recorded: str | None) -> None:
    """Refuse to answer a send with a notice that has the same id but other content."""
    differs = [what for what, same in (
        ("recipients", sorted(existing.recipients) == sorted(recipients)),
        ("severity", existing.severity == severity),
        ("status", existing.status == status),
        ("content", recorded is None or recorded == content)) if not same]
    if differs:
        raise UsageError(
            f"notice id {existing.notice_id.hex()} was already used for a different notice "
            f"({', '.join(differs)} differ); nothing was sent. Use a new --id, or repeat "
            "the first notice exactly")


def parse_notice_id(value: str | bytes) -> bytes:
    """A notice id from its 32 hex digits (or 16 bytes)."""
    if isinstance(value, bytes):
        if len(value) != NOTICE_ID_BYTES:
            raise UsageError(f"a notice id is {NOTICE_ID_BYTES} bytes, not {len(value)}")
        return value
    text = value.strip().lower()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != NOTICE_ID_BYTES:
        raise UsageError(f"notice id {value[:40]!r} is not {2 * NOTICE_ID_BYTES} hex digits")
    return raw


# ----------------------------------------------------------------------------- client


#: How long a recipient's verified card is reused before it is fetched again (a rotated
#: encryption key is picked up within this time; revocations known here apply at once).
CARD_CACHE_MS = 60_000
#: After connecting, the watchdog waits this long for the backlog before its first look.
WATCHDOG_SETTLE_MS = 5_000
#: How often a running event loop looks at its home folder for changes (a few stat calls).
HOME_CHECK_MS = 1_000
#: Backoff of a running event loop's outbox retries while the relay cannot be reached.
OUTBOX_RETRY_MIN_MS = 2_000
OUTBOX_RETRY_MAX_MS = 60_000
#: After the start's outbox retry or a send's card lookup found the relay unreachable, a
#: send or ack in the same process within this time does not wait for it again (one
#: command waits once): it seals from contacts and queues at once.
RELAY_DOWN_MEMORY_MS = 30_000
#: The code of a notice sealed to an encryption key this desk does not hold.
UNKNOWN_EK = "unknown_encryption_key"
#: The relay's attestation event for each kind of signed confirmation this desk posts.
_ATTESTED = {"receipt": "delivered", "ack": "acknowledged", "rejection": "rejected"}


class HotlineClient:
    """A desk's client: one relay (at one or more URLs), durable state in the desk home."""

    def __init__(
        self,
        secrets: DeskSecrets,
        home: Home | str | os.PathLike[str],
        relays: Sequence[str] = (),
        *,
        trust: TrustStore | None = None,
        card: DeskCard | None = None,
        connection: RelayConnection | None = None,
        state: ClientState | None = None,
        clock: Clock = now_ms,
        sleep: Sleep = asyncio.sleep,
        random: Random = system_random,
        policy: RetryPolicy | None = None,
        on_relay_pinned: Callable[[RelayCard, str], None] | None = None,
        watchdog: WatchdogPolicy | None = None,
        max_clock_skew_ms: int | None = None,
        reload_secrets: Callable[[], DeskSecrets] | None = None,
        relay_specs: Sequence[RelaySpec] | None = None,
    ) -> None:
        """``trust`` defaults to the home's pinned root and revocations, ``card`` to the
        home's desk card, ``state`` to ``client.db`` in the home. ``on_relay_pinned(card,
        fingerprint)`` is called when the relay is pinned on first use. ``relay_specs``:
        several relays (identities with their URLs, see :mod:`client.circuits`) instead
        of the one at ``relays``.
        ``max_clock_skew_ms`` (default 5 minutes): how far a relay-signed time may be off
        this client's clock before a :class:`ClockSkewWarning` is raised; it also bounds
        how far the relay's time can move the time certificates are judged at.
        ``reload_secrets()`` reads the desk's keys again (from_home passes one holding the
        passphrase it was given, in memory): called when the home's keys change or a
        notice is sealed to a key this client does not hold."""
        self.secrets = secrets
        self.home = home if isinstance(home, Home) else Home(Path(home).expanduser())
        self._clock = clock
        self._random = random
        #: The home's revocations/ as last read (None: not yet, e.g. ``trust`` was given).
        self._revocations_read: tuple[int, tuple[str, ...]] | None = None
        if trust is None:
            self._revocations_read = self.home.revocations_version()
        self.trust = trust if trust is not None else self.home.trust(clock())
        #: Whether ``trust`` follows the home's pinned root (it was not given).
        self._home_trust = trust is None
        self._reload_secrets = reload_secrets
        seen = self.home.version()
        self._keys_read, self._root_read, self._contacts_read = (
            seen.keys, seen.root, seen.contacts)
        self._next_home_check = 0
        self._stream_was_open = False
        self._background: asyncio.Task[None] | None = None
        self._outbox_next: int | None = None
        self._outbox_backoff = 0
        #: This desk's card changed (new keys) and the relay has not been given it yet.
        self._card_stale = False
        #: When a request last found the relay unreachable (this client's clock), and why.
        self._relay_down: tuple[int, RelayUnavailable] | None = None
        #: Whether the relay's revocations were fetched in this process.
        self._revocations_fetched = False
        self._card = card
        self.state = state if state is not None else ClientState.in_home(self.home.path)
        self._relays = tuple(relays)
        self._relay_specs = tuple(relay_specs or ())
        self._connection = connection
        self._circuits: Circuits | None = None
        #: Acceptances a send needs (None: one); "all" every relay's (``send(require=)``).
        self.retry_interval_s = 5.0
        self._connection_options = (sleep, policy, on_relay_pinned)
        self._closed = False
        self.watchdog_policy = watchdog or WatchdogPolicy()
        if max_clock_skew_ms is not None and max_clock_skew_ms < 0:
            raise UsageError("max_clock_skew_ms cannot be negative")
        self.max_clock_skew_ms = (DEFAULT_MAX_CLOCK_SKEW_MS if max_clock_skew_ms is None
                                  else max_clock_skew_ms)
        self._watchdog_reported: set[tuple[bytes, str]] = set()
        #: Recipients' verified cards, re-fetched from the relay after CARD_CACHE_MS.
        self._cards: dict[str, tuple[VerifiedDesk, int]] = {}
        self._watchdog_next: int | None = None
        #: Answer link tests (status "test") with an automatic acknowledgement, unseen.
        self.answer_link_tests = True
        #: The relay log check (client/record.py), made on first use.
        self._record: RecordChecker | None = None

    def _make_connection(self, urls: Sequence[str], pin: object,
                         on_revocation: Callable[[bytes], None]) -> RelayConnection:
        sleep, policy, on_pinned = self._connection_options
        return RelayConnection(urls, secrets=self.secrets, card=self._card_bytes,
                               pin=pin, clock=self._clock, sleep=sleep,  # type: ignore[arg-type]
                               policy=policy, on_pinned=on_pinned, on_revocation=on_revocation)

    @property
    def circuits(self) -> Circuits:
        """The relays (one, or several: :mod:`client.circuits`), made on first use."""
        if self._circuits is None:
            if self._relay_specs and self._connection is None:
                self._circuits = open_circuits(
                    self.home, self._relay_specs, make=self._make_connection,
                    learn=self._learn_pushed,
                    state_cursor=self.state.cursor, clock=self._clock)
            else:
                if self._connection is None:
                    self._connection = self._make_connection(
                        self._relays, HomePin(self.home), self._pushed_revocation)
                self._circuits = Circuits(
                    [Circuit(self._connection, cursor=self.state.cursor,
                             advance=self.state.advance)], None, clock=self._clock)
        return self._circuits

    @property
    def connection(self) -> RelayConnection:
        """The (first) relay's connection, made on first use (local reads need none)."""
        return self.circuits.primary.connection

    @classmethod
    def from_home(
        cls,
        path: str | os.PathLike[str] | None = None,
        passphrase: bytes | str | None = None,
        *,
        relays: Sequence[str] | None = None,
        passphrase_file: str | None = None,
        **kwargs: object,
    ) -> HotlineClient:
        """Open the desk in home folder ``path`` (default $HOTLINE_HOME or ~/.hotline).

        The passphrase is ``passphrase``, else read from ``passphrase_file``,
        $HOTLINE_PASSPHRASE or a prompt. Relay URLs are ``relays``, else $HOTLINE_RELAY
        (comma-separated), else ``relays`` in the home's config.toml. The allowed clock
        skew is ``max_clock_skew_ms``, else ``max_clock_skew_seconds`` in config.toml.
        """
        home = Home(resolve_home(path))
        if passphrase is None:
            passphrase = read_passphrase(passphrase_file, what="desk key")
        if isinstance(passphrase, str):
            passphrase = passphrase.encode()
        secrets = home.desk_secrets(passphrase)
        cert = home.desk_cert()
        if cert.desk != secrets.desk or cert.identity_key != bytes(secrets.identity.verify_key):
            raise UsageError(
                f"{home.file('desk.cert')} certifies {cert.desk} key {cert.key_id.hex()[:16]}, "
                "not this desk's identity key: install the certificate issued for this key"
            )
        if kwargs.get("max_clock_skew_ms") is None:
            kwargs["max_clock_skew_ms"] = configured_skew_ms(home)
        key = passphrase  # kept in memory only, like the keys it opens

        def reload_secrets() -> DeskSecrets:
            return home.desk_secrets(key)

        kwargs.setdefault("reload_secrets", reload_secrets)
        book = RelayBook(home)
        if not relays and not os.environ.get(RELAY_ENV) and book.exists():
            kwargs.setdefault("relay_specs", book.load())
        return cls(secrets, home, relay_urls(home, relays), **kwargs)  # type: ignore[arg-type]

    @property
    def desk(self) -> DeskId:
        return self.secrets.desk

    @property
    def relays(self) -> tuple[str, ...]:
        """The relay URLs this client was given (empty: local reads only)."""
        if self._circuits is not None:
            return tuple(u for c in self._circuits.circuits for u in c.connection.urls)
        return tuple(u for s in self._relay_specs for u in s.urls) or self._relays

    def _card_bytes(self) -> bytes:
        card = self._card if self._card is not None else self.home.card(self._clock())
        return card.encode()

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> HotlineClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Post what an earlier run left in the outbox (:meth:`retry_outbox`). A relay that
        cannot be reached now is logged, not raised: the outbox keeps it for the next try.
        With several relays, what one missed is posted again every ``retry_interval_s``
        until close."""
        if self._relay_specs:
            self.circuits.keep_retrying(self.retry_interval_s, self._connection_options[0])
        if not self.state.unconfirmed() and not self.state.queued_confirmations():
            return
        try:
            await self.retry_outbox()
        except RelayUnavailable as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, RelayUnavailable) else exc
            self._note_down(cause)  # a send or ack right after this does not wait again
            log.warning("outbox.resend_deferred reason=%s", exc.message)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._circuits is not None:
                await self._circuits.close()
            elif self._connection is not None:
                await self._connection.close()
            if self._record is not None:
                self._record.close()
            self.state.close()

    # ------------------------------------------------------------------ the relay's log
    @property
    def record(self) -> RecordChecker:
        """The check of the relay's log: every relay statement received, proven included in
        a witnessed checkpoint consistent with every earlier one (client/record.py)."""
        if self._record is None:
            async def log_key() -> Verifier:
                card = await self.relay()
                return log_verifier(card.relay_id, card.key)

            self._record = RecordChecker(self.home.path, fetch=self._log_fetch,
                                         log_key=log_key, clock=self._clock)
        return self._record

    async def _log_fetch(self, path: str) -> bytes | None:
        try:
            return (await self.connection.request("GET", path, auth=False)).body
        except RelayError as exc:
            if exc.status == 404:
                return None
            raise

    async def check_record(self, *, force: bool = False) -> list[LogInconsistent]:
        """A pass of the log check if one is due (or ``force``); the contradictions found.
        A relay that cannot be reached now is retried at the next pass."""
        if not (force or self.record.due()):
            return []
        try:
            found = await self.record.check()
        except (RelayUnavailable, RelayError, HotlineError) as exc:
            log.info("record.check_deferred reason=%s", exc)
            return []
        except Exception as exc:  # the log check never stops the stream; it is logged
            log.warning("record.check_failed error=%s: %s", type(exc).__name__, exc)
            return []
        for item in found:
            log.error("record.log_inconsistent kind=%s detail=%s", item.kind, item.detail)
        return found

    async def relay(self) -> RelayCard:
        """The pinned relay card (fetched and pinned on first use)."""
        return await self.connection.ensure_relay()

    def _now(self) -> int:
        return self._clock()

    def _check_skew(self, notice_id: bytes, event: str, desk: str, attested_at: int, *,
                    earliest: int, latest: int) -> ClockSkewWarning | None:
        """Record (and return) a warning if the relay's signed time of ``event`` lies
        outside this client's own bounds ``[earliest, latest]`` beyond the allowed skew."""
        if not beyond_skew(attested_at, earliest=earliest, latest=latest,
                           skew_ms=self.max_clock_skew_ms):
            return None
        local = earliest if attested_at < earliest else latest
        self.state.add_warning(
            WarningRecord("clock_skew", notice_id, event, desk, attested_at, local))
        log.warning("relay.clock_skew notice_id=%s event=%s desk=%s attested_at=%d local=%d",
                    notice_id.hex(), event, desk, attested_at, local)
        return ClockSkewWarning(notice_id, event, desk, attested_at, local)

    def _take_warnings(self) -> list[ClockSkewWarning]:
        """Recorded warnings not shown yet (each is handed out once)."""
        return [ClockSkewWarning(w.notice_id, w.event, w.desk, w.attested_at, w.local_at)
                for w in self.state.take_warnings() if w.kind == "clock_skew"]

    # ------------------------------------------------------------------ revocations
    def learn_revocations(self, bodies: Iterable[bytes], source: str) -> list[Revocation]:
        """Apply revocations from ``source`` (a relay, a file): each is verified against
        the pinned root, where only the authority of the desk's own country can revoke
        it; one that does not verify is logged and dropped, so a relay cannot revoke a
        desk. New ones apply at once in this process and are kept in the home's
        revocations/ for every later one. Returns the new ones."""
        new: list[Revocation] = []
        for body in bodies:
            try:
                rev = Revocation.decode(body)
                if self.trust.is_revoked(rev.desk, rev.ik_kid):
                    continue
                self.trust.add_revocation(rev)
            except HotlineError as exc:
                log.warning("revocation.refused source=%s code=%s reason=%s", source,
                            exc.code, exc)
                continue
            self.home.keep_revocation(rev)
            self._cards.pop(rev.desk, None)
            new.append(rev)
            log.warning("revocation.applied source=%s desk=%s key_id=%s", source, rev.desk,
                        rev.ik_kid.hex())
        return new

    def refresh_revocations(self) -> list[Revocation]:
        """Apply revocations added to the home's revocations/ since it was last read
        (``hotline revocations add`` while this process runs). Cheap when nothing changed:
        one look at the folder."""
        version = self.home.revocations_version()
        if version == self._revocations_read:
            return []
        self._revocations_read = version
        try:
            found = self.home.revocations()
        except UsageError as exc:
            log.warning("revocation.file_unreadable reason=%s", exc)
            return []
        return self.learn_revocations((rev.encode() for _, rev in found), "home")

    async def fetch_revocations(self) -> list[Revocation]:
        """Fetch and apply every revocation the relay serves (``GET /v1/revocations``).
        The new ones are returned. A relay that refuses (one without the route) or answers
        nonsense is logged and not asked again in this process (what this home knows still
        applies); RelayUnavailable is raised as by any request."""
        new: list[Revocation] = []
        for circuit, got in await self.circuits.every(lambda c: c.connection.revocations()):
            if isinstance(got, RelayUnavailable | RelayIdentityError):
                if not self.circuits.multi:
                    raise got
                log.warning("revocation.fetch_failed relay=%s reason=%s", circuit.name, got)
            elif isinstance(got, BaseException):
                log.warning("revocation.fetch_failed reason=%s", got)
            else:
                new += self.learn_revocations(got, circuit.connection.url)
        self._revocations_fetched = True
        return new

    async def _revocations_once(self) -> None:
        self.refresh_revocations()
        if not self._revocations_fetched:
            await self.fetch_revocations()

    def _learn_pushed(self, body: bytes, source: str) -> None:
        self.learn_revocations([body], source)

    def _pushed_revocation(self, body: bytes) -> None:
        self.learn_revocations([body], self.connection.url)

    # ------------------------------------------------------------------ the home
    def refresh_home(self) -> tuple[str, ...]:
        """Pick up what changed in the home folder since this client last looked: its keys
        (``keys rotate``, ``keys install``), the pinned root, revocations, contacts. Cheap
        when nothing changed (a few stat calls). Returns the parts that changed and were
        applied, e.g. ``("keys",)``."""
        changed: list[str] = []
        seen = self.home.version()
        if seen.root != self._root_read:
            self._root_read = seen.root
            if self._home_trust and self._reload_trust():
                changed.append("root")
        if self.refresh_revocations():
            changed.append("revocations")
        if seen.contacts != self._contacts_read:
            self._contacts_read = seen.contacts
            self._cards.clear()  # a contact added by hand may be newer than a cached card
            changed.append("contacts")
        if seen.keys != self._keys_read:
            self._keys_read = seen.keys
            if self.reload_keys():
                changed.append("keys")
        return tuple(changed)

    def _reload_trust(self) -> bool:
        try:
            trust = self.home.trust(self._now())
        except HotlineError as exc:  # a half-done edit of the home: keep what we have
            log.warning("home.root_unreadable reason=%s", exc)
            return False
        # Revocations learned in this process are kept in the home: the new store has them.
        self.trust = trust
        self._revocations_read = self.home.revocations_version()
        self._cards.clear()
        log.warning("home.root_reloaded version=%s", trust.root.version)
        return True

    def reload_keys(self) -> bool:
        """Read this desk's keys again from the home (with the passphrase the client was
        opened with). True if they differ from those held: the new ones apply at once (a
        notice sealed to the new encryption key opens) and the new card is given to the
        relay at the next chance. False if nothing changed or they cannot be read (a
        client given its keys directly, a home being rewritten, another desk's keys)."""
        if self._reload_secrets is None:
            return False
        try:
            secrets = self._reload_secrets()
        except (HotlineError, OSError) as exc:
            log.warning("keys.reload_failed reason=%s", exc)
            return False
        if secrets.desk != self.desk:
            log.warning("keys.reload_refused reason=the home now holds the keys of %s",
                        secrets.desk)
            return False
        held = (self.secrets.ik_kid, [p.key_id for p in self.secrets.encryption_keys])
        if (secrets.ik_kid, [p.key_id for p in secrets.encryption_keys]) == held:
            return False
        self.secrets = secrets
        connections = ([c.connection for c in self._circuits.circuits]
                       if self._circuits is not None else [])
        for connection in connections:
            connection.secrets = secrets
            forget = getattr(connection, "forget_login", None)
            if forget is not None:
                forget()  # the next login presents the new card
        self._card_stale = self._card is None
        log.warning("keys.reloaded desk=%s encryption_keys=%s", self.desk,
                    ",".join(p.key_id.hex()[:16] for p in secrets.encryption_keys))
        return True

    async def _publish_if_stale(self) -> None:
        """Give the relay this desk's new card after its keys changed, so senders get the
        new encryption key now rather than at this desk's next login."""
        if not self._card_stale:
            return
        try:
            await self.publish_card()
        except RelayUnavailable:
            return  # tried again at the next look
        except RelayError as exc:
            log.warning("card.publish_failed reason=%s", exc)
        else:
            log.warning("card.published desk=%s (new keys)", self.desk)
        self._card_stale = False

    # ------------------------------------------------------------------ peers
    async def card_of(self, desk: str) -> VerifiedDesk:
        """Another desk's keys, from the card the relay serves, verified against the pinned
        root (revocations included). A card that does not verify is refused, never
        replaced by an older one. A verified card is kept in the home's contacts/."""
        desk = _recipient(desk)
        self.refresh_home()
        now = self._now()
        cached = self._cards.get(desk)
        if cached is not None and now - cached[1] < CARD_CACHE_MS:
            v = cached[0]
            if not self.trust.is_revoked(v.desk, v.ik_kid) and v.not_after > now:
                return v
        # Only where the relay is needed anyway: a send with cached cards still works (and
        # is kept in the outbox) while the relay cannot be reached.
        await self._revocations_once()
        raw = await self.circuits.any_of(lambda c: c.get_card(desk), lambda r: r is not None)
        if raw is None:
            raw = await self._publish_contact(desk)
        card = DeskCard.decode(raw)
        if card.desk != desk:
            raise UntrustedKey(f"asked for the card of {desk}, the relay served {card.desk}'s")
        verified = self.trust.verify_card(card, now)
        name, encoded = f"contacts/{desk}.card", card.encode()
        if not self.home.exists(name) or self.home.read(name, "contact card") != encoded:
            self.home.write(name, encoded)
        self._cards[desk] = (verified, now)
        return verified

    async def _card_or_contact(self, desk: str, queue: bool = True
                               ) -> tuple[VerifiedDesk, RelayUnavailable | None]:
        """``desk``'s keys from the relay (:meth:`card_of`), or, while the relay cannot be
        reached, from this desk's contacts/, verified against the pinned root the same way
        (with the reason the relay was not asked). Without a contact card, or with
        ``queue=False``, RelayUnavailable says that nothing was sealed."""
        down = self._known_down()
        if down is None:
            try:
                return await self.card_of(desk), None
            except RelayUnavailable as exc:
                self._note_down(exc)
                down = exc
        contact = self.home.contacts().get(_recipient(desk)) if queue else None
        if contact is None:
            why = ("queuing was turned off" if not queue else
                   f"{desk}'s card is not among this desk's contacts (hotline contacts add)")
            raise RelayUnavailable(f"{down.detail}; nothing was sealed or sent, and nothing "
                                   f"is kept: {why}", status=down.status, url=down.url)
        self.refresh_home()
        return self.trust.verify_card(contact, self._now()), down

    async def _publish_contact(self, desk: DeskId) -> bytes:
        """The relay knows no card of ``desk`` (it has not connected yet): give the relay
        the card from this desk's verified contacts, so the notice waits there, its
        deadline running, until that desk connects."""
        contact = self.home.contacts().get(desk)
        if contact is None:
            raise UnknownDesk(
                f"the relay knows no desk {desk} and it is not among this desk's contacts: "
                f"check the id, or add its card with 'hotline contacts add' (or ask {desk} "
                "to run 'hotline keys publish')"
            )
        raw = contact.encode()
        self.trust.verify_card(contact, self._now())
        await self._put_card(desk, raw)
        log.info("card.published desk=%s (from contacts; it has not connected yet)", desk)
        return raw

    async def publish_card(self) -> DeskId:
        """Give the relay this desk's own card now (its login does it), so that notices to
        this desk are accepted before it first waits for them."""
        await self._put_card(self.desk, self._card_bytes())
        return self.desk

    async def _put_card(self, desk: DeskId, raw: bytes) -> None:
        """Give every relay the card (at least one must take it)."""
        answers = await self.circuits.every(lambda c: c.connection.put_card(desk, raw))
        errors = [got for _, got in answers if isinstance(got, BaseException)]
        if len(errors) == len(answers):
            raise errors[0]

    # ------------------------------------------------------------------ sending
    async def send(
        self,
        to: Iterable[str],
        severity: str,
        notice: IncidentReport,
        status: str = "actual",
        in_reply_to: bytes | str | None = None,
        *,
        notice_id: bytes | str | None = None,
        queue: bool = True,
        require: int | str = 1,
    ) -> SendResult:
        """Seal ``notice`` to the desks ``to``, record it in the outbox, post it.

        ``notice_id`` makes the send idempotent across runs: a notice already in the
        outbox under that id is not sealed again; its stored bytes are (re)posted.
        With several relays the same bytes go to each; ``require`` (a number, or "all")
        acceptances make the send succeed (else :class:`NotEnoughRelays`); the relays
        that did not accept yet are posted to again. ``result.relays``: each one's answer.

        If the relay cannot be reached, the notice is sealed to the recipients' cards in
        this desk's contacts/ and kept: the result is ``queued`` (NOT at the relay; it is
        posted by :meth:`retry_outbox`). With ``queue=False`` nothing is kept and
        RelayUnavailable is raised, saying so. Without a contact card for a recipient
        RelayUnavailable says that nothing was sealed.
        """
        nid = parse_notice_id(notice_id) if notice_id is not None else None
        reply = self.resolve_id(in_reply_to) if in_reply_to is not None else None
        recipients = list(dict.fromkeys(_recipient(d) for d in to))
        content = _content_digest(reply, notice)
        if nid is not None:
            existing = self.state.outbox(nid)
            if existing is not None:
                _check_same_notice(existing, recipients, severity, status,
                                   content, self.state.sent_content(nid))
                return await self._deliver(existing, require, queue=queue)
        if not recipients:
            raise UsageError("a notice needs at least one recipient")
        if self.desk in recipients:
            raise UsageError("a notice cannot be addressed to its own sender")
        verified = []
        for d in recipients:
            keys, _down = await self._card_or_contact(d, queue)
            verified.append(keys)
        now = self._now()
        env = seal(
            notice, sender=self.secrets, recipients=verified, severity=severity, now=now,
            status=status, in_reply_to=reply, notice_id=nid, random=self._random,
        )
        record = self.state.add_outbox(
            OutboxRecord(env.notice_id, env.raw, env.digest, tuple(env.header.recipients),
                         severity, status, now)
        )
        self.state.record_sent_content(env.notice_id, content)
        log.info("notice.sealed notice_id=%s recipients=%s severity=%s",
                 env.notice_id.hex(), ",".join(env.header.recipients), severity)
        return await self._deliver(record, require, queue=queue)

    async def reply(self, notice_id: bytes | str, notice: IncidentReport, *,
                    notice_id_of_reply: bytes | str | None = None,
                    queue: bool = True) -> SendResult:
        """Answer a received notice substantively: a notice back to its sender that
        references it (``in_reply_to``), with the same severity and status. It meets the
        response deadline; the original is acknowledged first if it was not yet (both
        are queued, or not, as in :meth:`send` and :meth:`ack`)."""
        original = self.received(notice_id)
        if original.acked_at is None:
            await self.ack(original.notice_id, queue=queue)
        return await self.send(to=[original.sender], severity=original.severity,
                               notice=notice, status=original.status,
                               in_reply_to=original.notice_id, notice_id=notice_id_of_reply,
                               queue=queue)

    async def _deliver(self, record: OutboxRecord, require: int | str = 1, *,
                       queue: bool | None = None) -> SendResult:
        """Post an outbox notice. The relay unreachable: ``queue`` True returns a queued
        result, False withdraws the notice from the outbox, None (a resend) raises."""
        nid = record.notice_id
        if record.state == "accepted" and record.attestation is not None:
            att = Attestation.decode(record.attestation)
            return SendResult(nid, att.at, att, duplicate=True,
                              relays=self.circuits.results(nid, "notice"))
        if record.state == "failed":
            raise UsageError(f"the relay refused notice {nid.hex()} for good: {record.error}")
        posted_at = self._now()
        n = len(self.circuits.circuits)
        need = n if require == "all" else int(require)
        if not 1 <= need <= n:
            raise UsageError(f"require must be 1 to {n} (the relays listed) or 'all', "
                             f"not {require!r}")
        try:
            down = self._known_down() if queue is not None else None
            if down is not None:
                raise down  # found unreachable moments ago: do not wait for it again
            results = await self.circuits.fan_out(
                "notice", record.envelope, notice_id=nid, digest=record.digest,
                desk=self.desk, require=need, grace_s=0.5 if need < n else 0.0)
            first = next((r for r in results if r.accepted), None)
            if first is None or first.attestation is None or first.raw is None:
                if all(r.state == "refused" for r in results):
                    self.state.mark_failed(nid, "; ".join(str(r.error) for r in results))
                    raise UsageError(f"every relay refused notice {nid.hex()}: "
                                     f"{describe(results)}")
                raise RelayUnavailable(describe(results))
        except RelayUnavailable as exc:
            if queue is not None:
                self._note_down(exc)
            if queue is False:
                self.state.mark_failed(nid, f"withdrawn, never accepted: {exc.message}")
                raise RelayUnavailable(
                    f"{exc.detail}; notice {nid.hex()} was NOT sent and is NOT kept "
                    "(queuing was turned off)", status=exc.status, url=exc.url) from exc
            self.state.note_attempt(nid, exc.message)
            if queue:
                log.info("notice.queued notice_id=%s reason=%s", nid.hex(), exc.message)
                return SendResult(nid, None, None, queued=True, reason=exc.message)
            raise RelayUnavailable(
                f"{exc.detail}; notice {nid.hex()} is kept in the outbox and will be resent "
                "with the same id", status=exc.status, url=exc.url,
            ) from exc
        except RelayError as exc:
            if exc.status in _FINAL and exc.status not in _NOT_FINAL:
                self.state.mark_failed(nid, f"{exc.code}: {exc.detail}")
            raise
        att, duplicate = first.attestation, first.duplicate
        # Deadlines run from this client's clock, never from the relay's signed time. A
        # duplicate was accepted by an earlier post: no later than the sealing is assumed.
        now = self._now()
        sent_at = record.created_at if duplicate else now
        skew = self._check_skew(nid, "accepted", self.desk, att.at,
                                earliest=sent_at if duplicate else posted_at, latest=now)
        self.state.mark_accepted(nid, first.raw, att.at, sent_at)
        self._relay_down = None
        self._saw(results[0], "accepted", nid)
        log.info("notice.sent notice_id=%s accepted_at=%d duplicate=%s relays=%s",
                 nid.hex(), att.at, duplicate, describe(results))
        relays = results if self.circuits.multi else ()
        if sum(r.accepted for r in results) < need:
            raise NotEnoughRelays(f"notice {nid.hex()}: {describe(results)}; the others are "
                                  "posted again from the outbox", relays)
        return SendResult(nid, att.at, att, duplicate, skew, relays)

    async def resend_unconfirmed(self) -> list[SendResult]:
        """Post again, with the same bytes, every notice not yet accepted by the relay.

        A notice the relay refuses for good is marked failed and skipped; a relay that
        cannot be reached raises RelayUnavailable (the rest stays for the next try).
        """
        results = []
        for record in self.state.unconfirmed():
            try:
                results.append(await self._deliver(record))
            except RelayUnavailable:
                raise
            except HotlineError as exc:
                log.warning("outbox.refused notice_id=%s reason=%s",
                            record.notice_id.hex(), exc.message)
        return results

    # ------------------------------------------------------------------ receiving
    async def events(self, *, follow: bool = True) -> AsyncGenerator[Item, None]:
        """Every verified item of this desk's stream, in order (see the module docstring),
        and the watchdog's :class:`WatchdogOverdue` items as they fall due.

        First the notices an earlier run left unprocessed, then new events: with
        ``follow`` from the live stream (for ever, reconnecting as needed), else from the
        inbox pages available now (then the iteration ends).
        """
        for record in self.state.pending():
            resumed = await self._resume(record)
            if resumed is None:
                continue
            self.state.mark_yielded(resumed.notice_id)
            yield resumed
            self.state.mark_processed(resumed.notice_id)
        await self._send_missing_receipts()
        for warning in self._take_warnings():
            yield warning
        with contextlib.suppress(RelayUnavailable):
            for reopened in await self.retry_unopened():
                async for item in self._yield_notice(reopened):
                    yield item
        if not follow:
            await self._revocations_once()
            # Inbox pages move the cursor page by page: consume them in step; the watchdog
            # looks once everything available was seen.
            async with aclosing(self._pages()) as pages:
                async for circuit, event in pages:
                    async for item in self._yield_event(event, circuit):
                        yield item
            for overdue_item in self.watchdog_check():
                yield overdue_item
            for warning in self._take_warnings():
                yield warning
            for inconsistent in await self.check_record():
                yield inconsistent
            return
        # The first watchdog look waits until the backlog had time to arrive, so acks and
        # escalations received while this client was stopped are counted.
        self._watchdog_next = self._now() + WATCHDOG_SETTLE_MS
        # The live stream is read by its own task so that the watchdog can speak up while
        # no event arrives.
        queue: asyncio.Queue[tuple[Circuit, Event] | BaseException | None] = asyncio.Queue(
            maxsize=64)

        async def pump() -> None:
            try:
                async with aclosing(self.circuits.live()) as source:
                    async for event in source:
                        await queue.put(event)
                await queue.put(None)
            except Exception as exc:  # handed to the caller below
                await queue.put(exc)

        reader = asyncio.create_task(pump())
        # What was kept in the outbox is posted in the background at once, then on a timer
        # with backoff, and again as soon as the stream is (re)connected.
        self._outbox_next, self._outbox_backoff = self._now(), 0
        try:
            while True:
                wake = [t for t in (self._watchdog_next, self.record.next_at()) if t]
                due = min([self._next_home_check, *wake])
                wait = max(0.0, (due - self._now()) / 1000)
                try:
                    got = await asyncio.wait_for(queue.get(), timeout=wait)
                except TimeoutError:
                    if self._watchdog_next is not None and self._now() >= self._watchdog_next:
                        for overdue_item in self.watchdog_check():
                            yield overdue_item
                    for inconsistent in await self.check_record():  # it knows if it is due
                        yield inconsistent
                    for warning in self._take_warnings():
                        yield warning
                else:
                    if got is None:
                        return
                    if isinstance(got, BaseException):
                        raise got
                    async for item in self._yield_event(got[1], got[0]):
                        yield item
                if self._now() >= self._next_home_check:
                    for reopened in await self._housekeep():
                        async for item in self._yield_notice(reopened):
                            yield item
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            background, self._background = self._background, None
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await background

    async def _yield_notice(self, notice: ReceivedNotice) -> AsyncGenerator[Item, None]:
        self.state.mark_yielded(notice.notice_id)
        yield notice
        self.state.mark_processed(notice.notice_id)

    async def _housekeep(self) -> list[ReceivedNotice]:
        """A running loop's regular look: changes in the home (new keys open the notices
        kept unopened, and are given to the relay), and the outbox, posted in the
        background when due or when the stream has just (re)connected."""
        now = self._now()
        self._next_home_check = now + HOME_CHECK_MS
        reopened: list[ReceivedNotice] = []
        if "keys" in self.refresh_home():
            try:
                reopened = await self.retry_unopened()
            except RelayUnavailable as exc:
                log.warning("notice.reopen_deferred reason=%s", exc.message)
        stream_open = bool(getattr(self.connection, "stream_open", False))
        if stream_open and not self._stream_was_open:
            self._outbox_next = now  # the relay is back: post what waits now
        self._stream_was_open = stream_open
        running = self._background is not None and not self._background.done()
        outbox_due = (self._outbox_next is not None and now >= self._outbox_next
                      and bool(self.state.unconfirmed() or self.state.queued_confirmations()))
        if not running and (self._card_stale or outbox_due):
            self._background = asyncio.create_task(self._background_work(outbox_due))
        return reopened

    async def _background_work(self, outbox: bool) -> None:
        await self._publish_if_stale()
        if not outbox:
            return
        try:
            taken = await self.retry_outbox()
        except Exception as exc:  # the relay is still away: try again later, backing off
            self._outbox_backoff = min(max(2 * self._outbox_backoff, OUTBOX_RETRY_MIN_MS),
                                       OUTBOX_RETRY_MAX_MS)
            self._outbox_next = self._now() + self._outbox_backoff
            log.warning("outbox.retry_deferred next_in_s=%d reason=%s",
                        self._outbox_backoff // 1000, exc)
            return
        self._outbox_backoff = 0
        self._outbox_next = self._now() + OUTBOX_RETRY_MIN_MS
        if taken:
            log.warning("outbox.sent count=%d (kept while the relay could not be reached)",
                        taken)

    async def _yield_event(self, event: Event, circuit: Circuit | None = None
                           ) -> AsyncGenerator[Item, None]:
        circuit = circuit or self.circuits.primary
        if event.seq <= circuit.cursor():
            return  # replayed after a reconnection; already handled
        item = await handle_once(self, circuit, event)
        if item is None:
            return
        if isinstance(item, ReceivedNotice):
            self.state.mark_yielded(item.notice_id)
            yield item
            # Processed once the caller asks for the next item.
            self.state.mark_processed(item.notice_id)
        else:
            yield item
        for warning in self._take_warnings():
            yield warning
        for inconsistent in await self.check_record():
            yield inconsistent

    def watchdog_check(self) -> list[WatchdogOverdue]:
        """Recipients of sent notices that have not acknowledged (a verified, recipient-
        signed ack) past the deadline this client counts from its own send time, whatever
        the relay says it escalated or resolved (each reported once per run)."""
        now = self._now()
        found, self._watchdog_next = watchdog_overdue(
            self.state.watch_candidates(now - self.watchdog_policy.horizon_ms), now,
            self.watchdog_policy, self._watchdog_reported)
        found = [dataclasses.replace(i, escalated=i.recipient in self.state.escalated(i.notice_id))
                 for i in found]
        for item in found:
            self._watchdog_reported.add((item.notice_id, item.recipient))
            log.warning("watchdog.overdue notice_id=%s recipient=%s severity=%s overdue_ms=%d",
                        item.notice_id.hex(), item.recipient, item.severity, item.overdue_ms)
        return found

    async def notices(self, *, follow: bool = True) -> AsyncGenerator[ReceivedNotice, None]:
        """Only the notices of :meth:`events`; rejected events are logged and skipped."""
        async with aclosing(self.events(follow=follow)) as items:
            async for item in items:
                if isinstance(item, ReceivedNotice):
                    yield item

    async def fetch(self) -> list[Item]:
        """Handle every event available now (inbox pages), without waiting for more;
        return what they brought. Notices stay unprocessed until yielded by
        :meth:`notices`, acknowledged, or marked with :meth:`mark_processed`."""
        self.refresh_home()
        await self._revocations_once()
        await self._publish_if_stale()
        await self._send_missing_receipts()
        items: list[Item] = list(await self.retry_unopened())
        async with aclosing(self._pages()) as source:
            async for circuit, event in source:
                if event.seq <= circuit.cursor():
                    continue
                item = await handle_once(self, circuit, event)
                if item is not None:
                    items.append(item)
        items.extend(self._take_warnings())
        items.extend(await self.check_record())
        return items

    async def _pages(self) -> AsyncGenerator[tuple[Circuit, Event], None]:
        if self.circuits.multi:
            for circuit, events in await self.circuits.pages():
                for event in events:
                    yield circuit, event
            return
        primary = self.circuits.primary
        while True:
            after = self.state.cursor()
            page = await self.connection.inbox(after)
            for event in page.events:
                yield primary, event
            if page.events:
                # Events this client ignores or could not store still move the cursor.
                self.state.advance(max(e.seq for e in page.events))
            if not page.more or page.next_cursor <= after:
                return

    async def handle(self, event: Event, circuit: Circuit | None = None) -> Item | None:
        """Verify and record one stream event (that came by ``circuit``, default the first
        relay); return what it means for the caller, or None for a duplicate. Never raises
        for a bad event: it becomes NoticeRejected. A verified event's relay statement is
        kept for the log check (the first relay's log: only its statements)."""
        self.refresh_home()
        circuit = circuit or self.circuits.primary
        item = await self._handle(event, circuit)
        if not isinstance(item, NoticeRejected) and circuit is self.circuits.primary:
            self.record.saw(event.attestation, event.kind, event.notice_id, event.leaf)
        return item

    def _saw(self, result: RelayAcceptance, kind: str, notice_id: bytes) -> None:
        """Keep the first relay's statement for its log check (client/record.py)."""
        if result.accepted and result.relay == self.circuits.primary.name:
            self.record.saw(result.raw, kind, notice_id, result.leaf)

    async def _handle(self, event: Event, circuit: Circuit) -> Item | None:
        relay = await circuit.card()
        try:
            if event.kind == "notice":
                return await self._on_notice(event, relay)
            if event.kind in ("receipt", "ack"):
                return await self._on_confirmation(event, relay)
            if event.kind == "rejected":
                return await self._on_rejection(event, relay)
            return await self._on_relay_event(event, relay, circuit.connection)
        except (RelayUnavailable, RelayIdentityError):
            raise  # the relay cannot be reached or is not ours: not the event's fault
        except Exception as exc:  # a bad event never stops the loop
            rejected = self._reject(event, exc)
            fault = exc.sender_fault if isinstance(exc, HotlineError) else None
        if fault is not None and fault in REJECTION_REASONS and event.envelope is not None:
            if await self._send_rejection(event.envelope, fault):
                rejected = dataclasses.replace(rejected, reported=fault)
        return rejected

    def _reject(self, event: Event, exc: Exception) -> NoticeRejected:
        code = exc.code if isinstance(exc, HotlineError) else "internal_error"
        reason = str(exc) or type(exc).__name__
        self.state.add_rejected(
            RejectedRecord(event.seq, event.kind, event.notice_id, code, reason, self._now())
        )
        log.warning("event.rejected seq=%d kind=%s notice_id=%s code=%s reason=%s",
                    event.seq, event.kind, event.notice_id.hex(), code, reason)
        return NoticeRejected(event.seq, event.kind, event.notice_id, code, reason)

    async def _send_rejection(self, envelope: bytes, reason: str) -> bool:
        """Tell a notice's sender, signed, that this desk cannot open it and why (called
        only for a failure its sender's verified signature makes the sender's). False if
        the relay did not take it now: it is kept in the outbox and posted again (and the
        relay's re-push at the next escalation level brings the notice again)."""
        env = Envelope.decode(envelope)
        pending = self.state.pending_confirmation(env.notice_id, "rejection")
        if pending is None:
            rejection = Rejection.create(
                notice_id=env.notice_id, digest=env.digest, sender=env.header.sender,
                me=self.secrets, at=self._now(), reason=reason,
            )
            pending = self.state.queue_confirmation(env.notice_id, "rejection",
                                                    rejection.encode(), env.digest,
                                                    env.header.sender, self._now())
        try:
            if pending.state == "failed":
                raise UsageError(f"the relay refused it for good: {pending.last_error}")
            await self._post_in_order(pending)
        except Exception as exc:  # the notice stays unread and its deadline runs anyway
            log.warning("rejection.not_sent notice_id=%s reason=%s error=%s",
                        env.notice_id.hex(), reason, exc)
            return False
        log.warning("notice.rejected_to_sender notice_id=%s sender=%s reason=%s",
                    env.notice_id.hex(), env.header.sender, reason)
        return True

    async def _on_rejection(self, event: Event, relay: RelayCard) -> NoticeRejectedByRecipient:
        if event.confirmation is None or event.attestation is None or event.signer_cert is None:
            raise MalformedInput("a rejected event lacks its rejection, attestation or "
                                 "certificate", code="missing_field")
        digest, recipients = await self._sent_digest(event.notice_id)
        v = verify_rejection(
            event.confirmation, event.attestation, event.signer_cert, trust=self.trust,
            relay=relay, notice_id=event.notice_id, digest=digest, sender=self.desk,
            now=self._now(), skew_ms=self.max_clock_skew_ms, recipients=recipients,
        )
        r = v.rejection
        # Nothing to keep: the relay's status shows it again (verified), and the watchdog
        # must go on watching this recipient (the notice is unread there).
        self.state.advance(event.seq)
        log.warning("notice.rejected_by_recipient notice_id=%s recipient=%s reason=%s",
                    event.notice_id.hex(), r.recipient, r.reason)
        return NoticeRejectedByRecipient(event.notice_id, r.recipient, r.reason, r.at,
                                         v.attestation.at, event.seq)

    async def _on_notice(self, event: Event, relay: RelayCard
                         ) -> ReceivedNotice | NoticeRejected | None:
        known = self.state.received(event.notice_id)
        if known is not None and event.envelope is not None and event.envelope == known.envelope:
            self.state.advance(event.seq)  # a replay or a re-push: seen already
            log.info("notice.duplicate notice_id=%s seq=%d", event.notice_id.hex(), event.seq)
            return None
        now = self._now()
        try:
            v = self._open_notice(event, relay, now)
        except HotlineError as exc:
            if exc.code != UNKNOWN_EK or known is not None:
                raise
            return self._keep_unopened(event, exc, now)
        return await self._accept_notice(event, v, known, now)

    def _open_notice(self, event: Event, relay: RelayCard, now: int) -> VerifiedNotice:
        """Verify and open a notice; sealed to a key this client does not hold, read the
        keys again (a rotation since they were read) and try once more."""
        try:
            return verify_notice(event, me=self.secrets, trust=self.trust, relay=relay,
                                 now=now, skew_ms=self.max_clock_skew_ms)
        except HotlineError as exc:
            if exc.code != UNKNOWN_EK or not self.reload_keys():
                raise
        self._keys_read = self.home.version().keys
        return verify_notice(event, me=self.secrets, trust=self.trust, relay=relay, now=now,
                             skew_ms=self.max_clock_skew_ms)

    def _keep_unopened(self, event: Event, exc: HotlineError, now: int) -> NoticeRejected:
        """A verified notice this desk cannot open (yet): keep it, with the reason, to be
        tried again; no receipt (it was not delivered to a person) and not marked seen."""
        assert event.envelope is not None and event.attestation is not None
        assert event.signer_cert is not None  # verify_notice refuses an event without them
        h = Envelope.decode(event.envelope).header
        reason = (f"{exc.message}; it is kept unopened and tried again when this desk's keys "
                  "change (restore the key, or ask the sender to send it again)")
        self.state.add_unopened(UnopenedRecord(
            event.notice_id, event.seq, h.sender, h.severity, h.status, h.created_at,
            event.envelope, event.attestation, event.signer_cert, exc.code, exc.message,
            now, now))
        log.warning("notice.unopened notice_id=%s sender=%s severity=%s reason=%s",
                    event.notice_id.hex(), h.sender, h.severity, exc.message)
        return NoticeRejected(event.seq, event.kind, event.notice_id, exc.code, reason,
                              kept=True)

    async def retry_unopened(self) -> list[ReceivedNotice]:
        """Try again to open the notices kept unopened (after new keys, or a restart with
        the key restored); those that open now are stored as received, receipted, and
        returned (they are not yet processed)."""
        records = self.state.unopened()
        if not records:
            return []
        relay = await self.relay()
        opened: list[ReceivedNotice] = []
        for rec in records:
            event = Event(rec.seq, "notice", rec.notice_id, envelope=rec.envelope,
                          attestation=rec.attestation, signer_cert=rec.signer_cert)
            now = self._now()
            try:
                v = self._open_notice(event, relay, now)
            except HotlineError as exc:
                self.state.add_unopened(dataclasses.replace(
                    rec, code=exc.code, reason=exc.message, last_at=now))
                continue
            log.warning("notice.opened_later notice_id=%s sender=%s", rec.notice_id.hex(),
                        rec.sender)
            item = await self._accept_notice(event, v, self.state.received(rec.notice_id), now)
            if item is not None:
                opened.append(item)
        return opened

    def unopened(self) -> list[UnopenedNotice]:
        """Notices to this desk kept because they could not be opened, with the reason."""
        return [UnopenedNotice(r.notice_id, r.sender, r.severity, r.status, r.created_at,
                               r.code, r.reason, r.first_at, r.last_at, r.attempts)
                for r in self.state.unopened()]

    async def _accept_notice(self, event: Event, v: VerifiedNotice,
                             known: ReceivedRecord | None, now: int) -> ReceivedNotice | None:
        """Store a verified, opened notice, send its receipt; the notice to yield, or None
        (a link test answered here, or another process stored it first)."""
        if known is not None:
            raise MalformedInput(
                f"notice {event.notice_id.hex()} arrived again with other bytes (digest "
                f"{v.envelope.digest.hex()[:16]}, first {known.digest.hex()[:16]})",
                code="id_conflict",
            )
        h = v.envelope.header
        # The relay cannot have accepted it before its sender sealed it, nor after now.
        self._check_skew(h.notice_id, "accepted", h.sender, v.attestation.at,
                         earliest=h.created_at, latest=now)
        record = ReceivedRecord(
            h.notice_id, event.seq, h.sender, h.severity, h.status, h.created_at,
            v.attestation.at, now, v.envelope.digest, v.envelope.raw, v.signer_cert,
            v.attestation.encode(),
        )
        # add_received only moves the cursor forward: a notice opened later leaves it.
        stored = self.state.add_received(record)
        self.state.opened(h.notice_id)
        if not stored:
            return None  # another process on this home stored it first
        log.info("notice.received notice_id=%s sender=%s severity=%s seq=%d",
                 h.notice_id.hex(), h.sender, h.severity, event.seq)
        await self._send_receipt(record)
        if h.status == "test" and self.answer_link_tests:
            # A link test: answered by this client itself, nobody is paged (not yielded).
            from client.drill_runner import answer_link_test

            await answer_link_test(self, v.notice)
            return None
        return ReceivedNotice(v.notice, event.seq, v.attestation.at, now)

    async def _send_receipt(self, record: ReceivedRecord) -> bool:
        """Sign the delivery receipt of a stored notice once, keep it, post it (after any
        confirmation kept before it); False if it must wait (it is posted again by
        :meth:`retry_outbox`)."""
        pending = self.state.pending_confirmation(record.notice_id, "receipt")
        if pending is None:
            receipt = Confirmation.create(
                "receipt", notice_id=record.notice_id, digest=record.digest,
                sender=DeskId(record.sender), me=self.secrets, at=self._now(),
                random=self._random,
            )
            pending = self.state.queue_confirmation(record.notice_id, "receipt",
                                                    receipt.encode(), record.digest,
                                                    record.sender, self._now())
        if pending.state != "queued":
            if pending.state == "sent":
                self.state.mark_receipt_sent(record.notice_id)
            return pending.state == "sent"
        try:
            await self._post_in_order(pending)
        except Exception as exc:  # whatever failed, the notice is verified and stored
            # The notice is verified and stored: show it anyway; the receipt is kept and
            # posted again (at the next start, fetch, or outbox retry of a running loop).
            log.warning("receipt.deferred notice_id=%s reason=%s", record.notice_id.hex(), exc)
            return False
        return True

    async def _send_missing_receipts(self) -> None:
        for record in self.state.unreceipted():
            if not await self._send_receipt(record):
                return  # the relay is not taking them now; the rest waits too

    # ------------------------------------------------------------------ the outbox
    async def _post_kept(self, pending: PendingConfirmation
                         ) -> tuple[Attestation, bool, tuple[RelayAcceptance, ...]]:
        """Post one kept confirmation (to every relay); once a relay attests it, mark it
        sent and apply it (receipt sent, notice acknowledged). Returns the first
        attestation, whether that relay had it already, and each relay's answer."""
        event = _ATTESTED[pending.kind]
        posted_at = self._now()
        try:
            results = await self.circuits.fan_out(
                pending.kind, pending.body, notice_id=pending.notice_id,
                digest=pending.digest, desk=self.desk)
            first = next((r for r in results if r.accepted and r.attestation), None)
            if first is None or first.attestation is None:
                if results and all(r.state == "refused" for r in results):
                    raise RelayError(400, "refused", describe(results))
                raise RelayUnavailable(describe(results))
        except RelayUnavailable as exc:
            self.state.confirmation_failed(pending.id, exc.message, final=False)
            raise
        except RelayError as exc:
            final = exc.status in _FINAL and exc.status not in _NOT_FINAL
            self.state.confirmation_failed(pending.id, f"{exc.code}: {exc.detail}",
                                           final=final)
            raise
        self._relay_down = None
        att, duplicate = first.attestation, first.duplicate
        if not duplicate:
            self._check_skew(pending.notice_id, event, self.desk, att.at, earliest=posted_at,
                             latest=self._now())
        self.state.confirmation_sent(pending.id)
        if pending.kind == "receipt":
            self.state.mark_receipt_sent(pending.notice_id)
        elif pending.kind == "ack":
            self.state.mark_acked(pending.notice_id, att.at)
            self._saw(results[0], "acknowledged", pending.notice_id)
        return att, duplicate, results

    async def _post_logged(self, pending: PendingConfirmation) -> bool:
        """Post a kept confirmation; a refusal is logged (and, if final, ends its tries);
        RelayUnavailable is raised (it and the rest wait)."""
        try:
            await self._post_kept(pending)
        except RelayUnavailable:
            raise
        except HotlineError as exc:
            log.warning("outbox.refused kind=%s notice_id=%s reason=%s", pending.kind,
                        pending.notice_id.hex(), exc.message)
            return False
        return True

    async def _post_in_order(self, pending: PendingConfirmation
                             ) -> tuple[Attestation, bool, tuple[RelayAcceptance, ...]]:
        """Post the confirmations kept before ``pending``, then ``pending``: a desk's
        receipts, acks and rejections reach the relay in the order it signed them."""
        for earlier in self.state.queued_confirmations():
            if earlier.id >= pending.id:
                break
            await self._post_logged(earlier)
        return await self._post_kept(pending)

    def _note_down(self, exc: RelayUnavailable) -> None:
        self._relay_down = (self._now(), exc)

    def _known_down(self) -> RelayUnavailable | None:
        """Why the relay could not be reached, if a request found so moments ago."""
        if self._relay_down is None:
            return None
        at, exc = self._relay_down
        return exc if self._now() - at < RELAY_DOWN_MEMORY_MS else None

    async def retry_outbox(self) -> int:
        """Post what waits in the outbox, the same bytes, oldest first: notices not yet
        accepted, then kept receipts, acks and rejections in the order they were signed.
        Returns how many the relay took now; RelayUnavailable if it cannot be reached
        (what was not posted waits for the next try)."""
        taken = len(await self.resend_unconfirmed())
        for pending in self.state.queued_confirmations():
            taken += await self._post_logged(pending)
        return taken

    def outbox(self) -> list[OutboxItem]:
        """What waits in this desk's outbox for the relay, oldest first (local; no relay)."""
        items = [OutboxItem("notice", r.notice_id, r.created_at, r.recipients, r.severity,
                            None, r.error) for r in self.state.unconfirmed()]
        items += [OutboxItem(p.kind, p.notice_id, p.created_at, (p.peer,), None, p.attempts,
                             p.last_error) for p in self.state.queued_confirmations()]
        return sorted(items, key=lambda i: i.created_at)

    async def _resume(self, record: ReceivedRecord) -> ReceivedNotice | None:
        try:
            notice = reopen(record.envelope, record.signer_cert, record.received_at,
                            me=self.secrets, trust=self.trust)
        except HotlineError as exc:
            log.warning("notice.unreadable notice_id=%s reason=%s",
                        record.notice_id.hex(), exc.message)
            self.state.mark_processed(record.notice_id)
            return None
        return ReceivedNotice(notice, record.seq, record.accepted_at, record.received_at,
                              redelivered=record.yielded, acked_at=record.acked_at)

    async def _sent_digest(self, notice_id: bytes) -> tuple[bytes, tuple[str, ...] | None]:
        """Digest (and recipients) of a notice this desk sent: from the outbox, else from
        the relay's copy, whose outer signature must be ours."""
        record = self.state.outbox(notice_id)
        if record is not None:
            return record.digest, record.recipients
        env = Envelope.decode(await self.circuits.any_of(lambda c: c.get_notice(notice_id)))
        if env.notice_id != notice_id:
            raise MalformedInput("the relay served another notice", code="bad_value")
        me = VerifiedDesk(self.desk, self.secrets.identity.verify_key, self.secrets.ik_kid, 0, {})
        env.verify_outer(me)
        return env.digest, tuple(env.header.recipients)

    async def _on_confirmation(self, event: Event, relay: RelayCard) -> ConfirmationEvent:
        if event.confirmation is None or event.attestation is None or event.signer_cert is None:
            raise MalformedInput(f"a {event.kind} event lacks its confirmation, attestation "
                                 "or certificate", code="missing_field")
        digest, recipients = await self._sent_digest(event.notice_id)
        now = self._now()
        v = verify_confirmation(
            event.confirmation, event.attestation, event.signer_cert, trust=self.trust,
            relay=relay, notice_id=event.notice_id, digest=digest, sender=self.desk,
            now=now, skew_ms=self.max_clock_skew_ms, recipients=recipients,
            expected_kind=event.kind,
        )
        c = v.confirmation
        message = c.open_message(self.secrets) if c.message is not None else None
        sent = self.state.outbox(event.notice_id)
        self._check_skew(event.notice_id, v.attestation.event, c.recipient, v.attestation.at,
                         earliest=sent.created_at if sent else v.attestation.at, latest=now)
        self.state.add_confirmation(
            ConfirmationRecord(event.notice_id, c.recipient, c.kind, event.seq, c.at,
                               v.attestation.at, event.confirmation, event.attestation, now)
        )
        log.info("notice.%s notice_id=%s recipient=%s",
                 "delivered" if c.kind == "receipt" else "acknowledged",
                 event.notice_id.hex(), c.recipient)
        return ConfirmationEvent(c.kind, event.notice_id, c.recipient, c.at, v.attestation.at,
                                 event.seq, message, automatic=c.automatic)

    async def _on_relay_event(self, event: Event, relay: RelayCard,
                              connection: RelayConnection) -> Item | None:
        sent = self.state.outbox(event.notice_id)
        received = self.state.received(event.notice_id)
        digest = sent.digest if sent else received.digest if received else None
        st = verify_relay_event(event, relay, digest)
        self._check_skew(event.notice_id, st.kind, st.recipient, st.at,
                         earliest=sent.created_at if sent else st.at, latest=self._now())
        item: Item | None = None
        if (event.kind == "escalation" and event.envelope is not None and received is None
                and st.recipient == self.desk):
            # The relay re-pushes a notice we never acknowledged; we never stored it (its
            # first delivery failed verification, or never came). Verify it as a notice,
            # with the relay's acceptance taken from the notice's status.
            status = await connection.get_status(event.notice_id)
            item = await self._on_notice(
                Event(event.seq, "notice", event.notice_id, envelope=event.envelope,
                      attestation=status.accepted, signer_cert=event.signer_cert),
                relay,
            )
        self.state.add_relay_event(
            RelayEventRecord(event.seq, event.kind, event.notice_id, st.recipient, st.level,
                             st.at, st.raw)
        )
        log.info("notice.%s notice_id=%s desk=%s level=%d",
                 st.kind, event.notice_id.hex(), st.recipient, st.level)
        if item is not None:
            return item
        return EscalationEvent(event.kind, event.notice_id, st.recipient, st.level, st.at,
                               event.seq, sender=st.sender, severity=st.severity,
                               status=st.status, track=st.track, deadline=st.deadline,
                               delivered=st.delivered, final=st.final)

    # ------------------------------------------------------------------ local reads
    def received(self, notice_id: bytes | str) -> ReceivedNotice:
        """A notice this desk received, opened again from the local store."""
        nid = self.resolve_id(notice_id)
        record = self.state.received(nid)
        if record is None:
            if self.state.unopened(nid):
                raise NoticeUnopened(self._unopened_text(nid))
            raise UnknownNotice(f"no notice {nid.hex()} among those this desk received")
        notice = reopen(record.envelope, record.signer_cert, record.received_at,
                        me=self.secrets, trust=self.trust)
        return ReceivedNotice(notice, record.seq, record.accepted_at, record.received_at,
                              redelivered=record.yielded, acked_at=record.acked_at)

    def inbox(self, *, include_acked: bool = False) -> list[ReceivedNotice]:
        """Received notices from the local store (unacknowledged ones unless
        ``include_acked``), opened; one that no longer opens is skipped and logged."""
        out = []
        for record in self.state.received_list(include_acked=include_acked):
            try:
                notice = reopen(record.envelope, record.signer_cert, record.received_at,
                                me=self.secrets, trust=self.trust)
            except HotlineError as exc:
                log.warning("notice.unreadable notice_id=%s reason=%s",
                            record.notice_id.hex(), exc.message)
                continue
            out.append(ReceivedNotice(notice, record.seq, record.accepted_at,
                                      record.received_at, redelivered=record.yielded,
                                      acked_at=record.acked_at))
        return out

    def _unopened_text(self, nid: bytes) -> str:
        (r,) = self.state.unopened(nid)
        return (f"notice {nid.hex()} from {r.sender} [{r.severity}/{r.status}] arrived but "
                f"cannot be opened: {r.reason}. It is kept (no receipt was sent) and tried "
                "again whenever this desk's keys change and at each fetch (hotline inbox); "
                "restore the key it was sealed to, or ask the sender to send it again")

    def mark_processed(self, notice_id: bytes | str) -> None:
        self.state.mark_processed(self.resolve_id(notice_id))

    def resolve_id(self, value: bytes | str) -> bytes:
        """A full notice id from 32 hex digits, or from a unique prefix of at least 6 of
        a notice this desk sent or received."""
        if isinstance(value, bytes) or len(value.strip()) == 2 * NOTICE_ID_BYTES:
            return parse_notice_id(value)
        prefix = value.strip().lower()
        if len(prefix) < 6 or any(c not in "0123456789abcdef" for c in prefix):
            raise UsageError(f"notice id {value[:40]!r}: give 32 hex digits or a prefix of 6+")
        matches = self.state.find(prefix)
        if not matches:
            raise UnknownNotice(f"no notice with an id starting {prefix} on this desk")
        if len(matches) > 1:
            raise UsageError(f"{len(matches)} notices have ids starting {prefix}; give more")
        return matches[0]

    # ------------------------------------------------------------------ acknowledging
    async def ack(self, notice_id: bytes | str, message: str | None = None, *,
                  automatic: bool = False, queue: bool = True) -> AckResult:
        """Acknowledge a received notice (signed, bound to its digest); ``message`` is
        sealed to the sender's current encryption key, so only the sender reads it.
        ``automatic`` marks, signed, an acknowledgement no person made (a link test's).

        The signed ack is kept before it is posted. If the relay cannot be reached, it
        stays kept and the result is ``queued`` (it is posted by :meth:`retry_outbox`);
        with ``queue=False`` it is withdrawn and RelayUnavailable raised instead. An ack
        kept from before is posted again as it was (``message`` is then not used)."""
        nid = self.resolve_id(notice_id)
        record = self.state.received(nid)
        sent = self.state.outbox(nid) if record is None else None
        if sent is not None:
            raise UsageError(
                f"notice {nid.hex()} is one this desk sent (to {', '.join(sent.recipients)}): "
                f"only its recipients acknowledge it; see their acknowledgements with "
                f"'hotline status {nid.hex()[:8]}'")
        if record is None:
            if self.state.unopened(nid):
                raise NoticeUnopened(self._unopened_text(nid))
            raise UnknownNotice(
                f"no notice {nid.hex()} among those this desk received: fetch it first "
                "(hotline inbox)"
            )
        if message is not None and len(message) > MAX_ACK_MESSAGE_CHARS:
            raise UsageError(f"the ack message is {len(message)} characters; the limit is "
                             f"{MAX_ACK_MESSAGE_CHARS}")
        pending = self.state.pending_confirmation(nid, "ack")
        if pending is not None and pending.state == "failed":
            raise UsageError(f"the relay refused this desk's acknowledgement of {nid.hex()} "
                             f"for good: {pending.last_error}")
        if pending is None:
            sender_keys = None
            if message is not None:
                sender_keys, down = await self._card_or_contact(record.sender, queue)
                if down is not None:
                    self._note_down(down)
            ack = Confirmation.create(
                "ack", notice_id=nid, digest=record.digest, sender=DeskId(record.sender),
                me=self.secrets, at=self._now(), message=message, sender_keys=sender_keys,
                random=self._random, automatic=automatic,
            )
            pending = self.state.queue_confirmation(nid, "ack", ack.encode(), record.digest,
                                                    record.sender, self._now())
        down = self._known_down()
        try:
            if down is not None:
                raise down  # found unreachable moments ago: do not wait for it again
            att, duplicate, results = await self._post_in_order(pending)
        except RelayUnavailable as exc:
            if not queue:
                self.state.drop_confirmation(pending.id)
                raise RelayUnavailable(
                    f"{exc.detail}; the acknowledgement of {nid.hex()} was NOT recorded by "
                    "the relay and NOT kept (queuing was turned off)", status=exc.status,
                    url=exc.url) from exc
            self.state.mark_processed(nid)
            log.info("ack.queued notice_id=%s reason=%s", nid.hex(), exc.message)
            return AckResult(nid, None, None, queued=True, reason=exc.message)
        log.info("notice.acknowledged notice_id=%s sender=%s", nid.hex(), record.sender)
        return AckResult(nid, att.at, att, duplicate,
                         results if self.circuits.multi else ())

    # ------------------------------------------------------------------ status
    async def status(self, notice_id: bytes | str) -> NoticeStatusView:
        """The notice's status from the relay, every signature in it verified (each item
        carries its own ``verified`` flag; ``view.verified`` sums them up), and its
        sender, recipients, severity and status compared with this desk's own copy (the
        outbox, or the envelope it received): any difference is in ``view.mismatches``
        and makes ``view.verified`` False. With several relays, each relay's view is
        verified against its own key and ``view.merged`` puts them side by side
        (:mod:`client.status_merge`: proofs from any relay, the relays that differ flagged);
        the view returned is the first relay's that accepted the notice."""
        nid = self.resolve_id(notice_id)
        sent = self.state.outbox(nid)
        got = self.state.received(nid)
        own: OwnCopy | None = None
        if sent is not None:
            own = OwnCopy(self.desk, sent.severity, sent.status, sent.recipients, sent.digest)
        elif got is not None:
            h = Envelope.decode(got.envelope).header
            own = OwnCopy(h.sender, h.severity, h.status, tuple(h.recipients), got.digest)
        stored = {c.confirmation: c.received_at for c in self.state.confirmations(nid)
                  if c.received_at is not None}

        async def one(circuit: Circuit) -> NoticeStatusView:
            status = await circuit.connection.get_status(nid)
            if status.notice_id != nid:
                raise MalformedInput("the relay answered with the status of another notice",
                                     code="bad_value")
            return status_view(status, trust=self.trust, relay=await circuit.card(),
                               me=self.secrets, now=self._now(),
                               skew_ms=self.max_clock_skew_ms, own=own, received_at=stored)

        if self.circuits.multi:
            return await merged_status(self.circuits, nid, one, now=self._now())
        view = await one(self.circuits.primary)
        for m in view.mismatches:
            log.warning("status.mismatch notice_id=%s field=%s ours=%s relay=%s",
                        nid.hex(), m.field, m.ours, m.relay)
        return view


__all__ = [
    "AckResult",
    "ClockSkewWarning",
    "ConfirmationEvent",
    "EscalationEvent",
    "HomePin",
    "HotlineClient",
    "Item",
    "NoticeRejected",
    "NoticeRejectedByRecipient",
    "ReceivedNotice",
    "SendResult",
    "StatusMismatch",
    "UnknownDesk",
    "UnknownNotice",
    "WatchdogOverdue",
    "configured_skew_ms",
    "parse_notice_id",
    "relay_urls",
]
