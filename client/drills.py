"""Readiness drills, the pure parts: drill plans, their seeded schedules, the link-test
state machine and the scorecard arithmetic. No I/O here (see :mod:`client.drill_runner`).

* A **drill plan** (TOML) names the participating desks with their time zones, a window
  ("weekdays 09:00-17:00 in the recipient's time zone"), the period, the severity, how many
  exercise notices each desk gets, whether the drill is announced, and an optional question
  whose answer (a reply notice) measures the time to respond.
* Its **schedule** is drawn uniformly at random over the union of the window's intervals,
  from ``random.Random`` seeded with ``"<seed>/<desk>"``: the same plan and seed give the
  same schedule anywhere, so it can be audited afterwards.
* :class:`LinkMonitor`: per peer, a link test that has no receipt when its window closes
  makes the link "down" (reported once); the next link test receipted makes it "up"
  again (reported once).
* :func:`scorecard`: per desk, from :class:`Observation` rows whose every time is taken
  from a verified relay-signed statement, so both desks compute the same figures.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from keys.errors import UsageError
from keys.ids import SEVERITIES, desk_id
from keys.report import MAX_QUESTION

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
_UNITS = {"s": SECOND, "m": MINUTE, "h": HOUR, "d": DAY, "w": 7 * DAY}
_DURATION_RE = re.compile(r"(\d{1,6})([smhdw])")
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_SETS = {"weekdays": frozenset(range(5)), "daily": frozenset(range(7)),
             "weekends": frozenset({5, 6})}
_CLOCK_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)|24:00")
#: At most this many exercise notices per desk in one plan.
MAX_PER_DESK = 100
MAX_PARTICIPANTS = 32
MAX_DAYS = 366


def parse_duration(value: str, what: str = "duration") -> int:
    """``"90d"``, ``"1h"``, ``"30m"``, ``"45s"``, ``"2w"`` (or ``"1h30m"``) in ms."""
    text = str(value).strip().lower()
    pos, total = 0, 0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text or total <= 0:
        raise UsageError(f"{what} {str(value)[:40]!r} is not a duration like 90d, 1h, 30m or "
                         "45s (greater than zero)")
    return total


def format_duration(ms: float | None) -> str:
    """A short human form: 850ms, 42s, 3m05s, 2h10m, 3d4h; "-" for None."""
    if ms is None:
        return "-"
    ms = round(ms)
    if ms < SECOND:
        return f"{ms}ms"
    s = ms // SECOND
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


# ----------------------------------------------------------------------------- plans


@dataclass(frozen=True, slots=True)
class Window:
    """Days of the week (0 = Monday) and a local time span ``start``-``end`` (minutes from
    midnight; ``end`` may be 24:00), read in each recipient's own time zone."""

    days: frozenset[int]
    start_min: int
    end_min: int

    def describe(self) -> str:
        names = next((k for k, v in _DAY_SETS.items() if v == self.days),
                     ",".join(_DAY_NAMES[d] for d in sorted(self.days)))
        return f"{names} {_clock(self.start_min)}-{_clock(self.end_min)}"

    def contains(self, at_ms: int, tz: ZoneInfo) -> bool:
        local = dt.datetime.fromtimestamp(at_ms / 1000, tz=tz)
        minute = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
        return local.weekday() in self.days and self.start_min <= minute < self.end_min

    def intervals(self, first: dt.date, days: int, tz: ZoneInfo) -> list[tuple[int, int]]:
        """The window's ``[start, end)`` spans in UTC ms on each of ``days`` local dates
        from ``first``. Local times that do not exist (a DST gap) are skipped by
        zoneinfo's fold rules; each span is measured in real elapsed time."""
        out = []
        for i in range(days):
            day = first + dt.timedelta(days=i)
            if day.weekday() not in self.days:
                continue
            start = _local_ms(day, self.start_min, tz)
            end = _local_ms(day, self.end_min, tz)
            if end > start:
                out.append((start, end))
        return out


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _local_ms(day: dt.date, minutes: int, tz: ZoneInfo) -> int:
    base = dt.datetime(day.year, day.month, day.day, tzinfo=tz)
    if minutes >= 24 * 60:
        nxt = day + dt.timedelta(days=1)
        base = dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
        minutes = 0
    local = base.replace(hour=minutes // 60, minute=minutes % 60)
    return int(local.astimezone(dt.UTC).timestamp() * 1000)


def parse_window(spec: Any, what: str = "window") -> Window:
    """``{days = "weekdays", start = "09:00", end = "17:00"}``; ``days`` is ``weekdays``,
    ``daily``, ``weekends`` or a comma list like ``"mon,wed,fri"``."""
    if not isinstance(spec, dict):
        raise UsageError(f"{what} must be a table with days, start and end")
    _keys(spec, {"days", "start", "end"}, what)
    days_text = str(spec.get("days", "weekdays")).strip().lower()
    if days_text in _DAY_SETS:
        days = _DAY_SETS[days_text]
    else:
        names = [d.strip() for d in days_text.split(",") if d.strip()]
        bad = [d for d in names if d not in _DAY_NAMES]
        if bad or not names:
            raise UsageError(f"{what}.days {days_text[:40]!r}: use weekdays, daily, weekends "
                             "or days like mon,wed,fri")
        days = frozenset(_DAY_NAMES.index(d) for d in names)
    start, end = (_parse_clock(spec.get(k), f"{what}.{k}") for k in ("start", "end"))
    if end <= start:
        raise UsageError(f"{what}: end {_clock(end)} must be after start {_clock(start)} "
                         "(a window does not cross midnight)")
    return Window(days, start, end)


def _parse_clock(value: Any, what: str) -> int:
    if not isinstance(value, str) or not _CLOCK_RE.fullmatch(value.strip()):
        raise UsageError(f"{what} must be a time like \"09:00\" (24-hour), not {value!r}")
    h, m = value.strip().split(":")
    return int(h) * 60 + int(m)


def _keys(table: dict[str, Any], allowed: set[str], what: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise UsageError(f"{what} has unknown key {extra[0]!r} (allowed: "
                         f"{', '.join(sorted(allowed))})")


def zone(name: Any, what: str) -> ZoneInfo:
    if not isinstance(name, str) or not name or len(name) > 64 or ".." in name:
        raise UsageError(f"{what} must be an IANA time zone like \"Asia/Shanghai\"")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UsageError(f"{what} {name!r} is not a known IANA time zone") from exc


@dataclass(frozen=True, slots=True)
class Participant:
    desk: str
    timezone: str

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class DrillPlan:
    """An exercise plan, as read from its TOML file (see the README for an example)."""

    name: str
    participants: tuple[Participant, ...]
    window: Window
    first_day: dt.date
    days: int
    severity: str
    announced: bool
    per_desk: int
    seed: str
    question: str = ""
    title: str = "Readiness exercise"
    #: SHA-256 of the plan file's bytes, recorded with the schedule.
    digest: str = ""

    @classmethod
    def from_toml(cls, data: bytes, what: str = "drill plan") -> DrillPlan:
        try:
            doc = tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"{what} is not valid TOML: {exc}") from exc
        _keys(doc, {"drill", "window", "participant"}, what)
        d = doc.get("drill")
        if not isinstance(d, dict):
            raise UsageError(f"{what} lacks its [drill] table")
        _keys(d, {"name", "seed", "start", "days", "severity", "announced", "per_desk",
                  "question", "title"}, f"{what} [drill]")
        name = d.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
            raise UsageError(f"{what}: drill.name must be 1-64 letters, digits, '.', '_' or '-'")
        seed = d.get("seed")
        if seed is None or isinstance(seed, bool) or not isinstance(seed, int | str):
            raise UsageError(f"{what}: drill.seed is required (an integer or a string), so "
                             "that the schedule can be reproduced and audited")
        start = d.get("start")
        if not isinstance(start, dt.date) or isinstance(start, dt.datetime):
            raise UsageError(f"{what}: drill.start must be a date like 2026-09-07")
        days = d.get("days", 5)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
            raise UsageError(f"{what}: drill.days must be 1 to {MAX_DAYS}")
        severity = d.get("severity", "high")
        if severity not in SEVERITIES:
            raise UsageError(f"{what}: drill.severity must be one of {', '.join(SEVERITIES)}")
        announced = d.get("announced", False)
        if not isinstance(announced, bool):
            raise UsageError(f"{what}: drill.announced must be true or false")
        per_desk = d.get("per_desk", 1)
        if isinstance(per_desk, bool) or not isinstance(per_desk, int) \
                or not 1 <= per_desk <= MAX_PER_DESK:
            raise UsageError(f"{what}: drill.per_desk must be 1 to {MAX_PER_DESK}")
        question = d.get("question", "")
        if not isinstance(question, str) or len(question) > MAX_QUESTION:
            raise UsageError(f"{what}: drill.question must be text of at most {MAX_QUESTION} "
                             "characters")
        title = d.get("title", "Readiness exercise")
        if not isinstance(title, str) or not 1 <= len(title) <= 150:
            raise UsageError(f"{what}: drill.title must be 1 to 150 characters")
        window = parse_window(doc.get("window"), f"{what} [window]")
        raw_parts = doc.get("participant")
        if not isinstance(raw_parts, list) or not raw_parts:
            raise UsageError(f"{what} names no participants ([[participant]] desk, timezone)")
        if len(raw_parts) > MAX_PARTICIPANTS:
            raise UsageError(f"{what} has more than {MAX_PARTICIPANTS} participants")
        parts = []
        for i, p in enumerate(raw_parts):
            where = f"{what} participant {i + 1}"
            if not isinstance(p, dict):
                raise UsageError(f"{where} must be a table")
            _keys(p, {"desk", "timezone"}, where)
            try:
                desk = desk_id(str(p.get("desk", "")))
            except Exception as exc:
                raise UsageError(f"{where}: desk must be a desk id like cn.cac") from exc
            zone(p.get("timezone"), f"{where}: timezone")
            parts.append(Participant(desk, str(p["timezone"])))
        if len({p.desk for p in parts}) != len(parts):
            raise UsageError(f"{what} names a participant twice")
        return cls(name, tuple(parts), window, start, days, severity, announced, per_desk,
                   str(seed), question, title, hashlib.sha256(data).hexdigest())


@dataclass(frozen=True, slots=True)
class Slot:
    """One scheduled exercise notice: to ``desk`` at ``at`` (UTC ms), its ``index``-th."""

    desk: str
    index: int
    at: int

    def notice_id(self, plan: DrillPlan) -> bytes:
        """A notice id fixed by the plan, its seed and this slot: a resumed run posts the
        same notice again (idempotent), never a second one."""
        h = hashlib.blake2b(f"{plan.digest}/{plan.seed}/{self.desk}/{self.index}".encode(),
                            digest_size=16, person=b"hotline-drill").digest()
        return h if any(h) else b"\x01" + h[1:]


def schedule(plan: DrillPlan) -> list[Slot]:
    """The plan's exercise times, in time order: for each participant, ``per_desk``
    instants drawn uniformly over the union of its window's spans (in its time zone),
    from ``random.Random(f"{seed}/{desk}")``."""
    slots: list[Slot] = []
    for p in plan.participants:
        spans = plan.window.intervals(plan.first_day, plan.days, p.tz)
        total = sum(end - start for start, end in spans)
        if total <= 0:
            raise UsageError(f"drill plan {plan.name}: the window {plan.window.describe()} "
                             f"falls on none of the {plan.days} days from {plan.first_day} "
                             f"for {p.desk}")
        rng = random.Random(f"{plan.seed}/{p.desk}")  # noqa: S311 - a schedule, not a secret
        times = sorted(_pick(spans, rng.randrange(total)) for _ in range(plan.per_desk))
        slots.extend(Slot(p.desk, i, t) for i, t in enumerate(times))
    return sorted(slots, key=lambda s: (s.at, s.desk, s.index))


def _pick(spans: Sequence[tuple[int, int]], offset: int) -> int:
    for start, end in spans:
        if offset < end - start:
            return start + offset
        offset -= end - start
    raise AssertionError("offset beyond the spans")  # pragma: no cover - randrange bounds it


# ----------------------------------------------------------------------------- link tests

#: The first line of a link test's body; the next lines say its schedule, so that the
#: recipient knows when to expect the next one.
LINK_TEST_MARK = "hotline link test"
_LINK_RE = re.compile(rf"{LINK_TEST_MARK}\nevery_ms=(\d{{1,12}})\nwindow_ms=(\d{{1,12}})\n?")


def link_test_body(every_ms: int, window_ms: int) -> str:
    return f"{LINK_TEST_MARK}\nevery_ms={every_ms}\nwindow_ms={window_ms}\n"


def parse_link_test_body(body: str) -> tuple[int, int] | None:
    """(every_ms, window_ms) of a link test's body, None if it is not one."""
    m = _LINK_RE.fullmatch(body)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """``kind`` is ``link_down`` (a link test got no receipt within its window) or
    ``link_restored`` (a later one did)."""

    kind: str
    peer: str
    at: int
    notice_id: bytes
    #: For link_restored: how long the link was down (from the first missed window's end).
    down_ms: int | None = None


@dataclass
class LinkMonitor:
    """Per peer: which link tests wait for their receipt, and whether the link is up.

    Feed it :meth:`sent` and :meth:`receipt`; :meth:`check` returns the transitions, each
    once. A receipt that comes after its window does not restore the link: only a test
    answered in time does."""

    window_ms: int
    _waiting: dict[bytes, tuple[str, int]] = field(default_factory=dict)
    _down_since: dict[str, int] = field(default_factory=dict)
    _answered: list[tuple[str, bytes, int]] = field(default_factory=list)

    def sent(self, peer: str, notice_id: bytes, at: int) -> None:
        self._waiting[notice_id] = (peer, at)

    def receipt(self, notice_id: bytes, at: int) -> None:
        waiting = self._waiting.get(notice_id)
        if waiting is None:
            return
        peer, sent_at = waiting
        if at - sent_at <= self.window_ms:
            del self._waiting[notice_id]
            self._answered.append((peer, notice_id, at))

    def is_down(self, peer: str) -> bool:
        return peer in self._down_since

    def check(self, now: int) -> list[LinkEvent]:
        out = []
        for peer, nid, at in self._answered:
            since = self._down_since.pop(peer, None)
            if since is not None:
                out.append(LinkEvent("link_restored", peer, at, nid, at - since))
        self._answered.clear()
        for nid, (peer, sent_at) in sorted(self._waiting.items(), key=lambda kv: kv[1][1]):
            closes = sent_at + self.window_ms
            if now > closes:
                del self._waiting[nid]
                if peer not in self._down_since:
                    self._down_since[peer] = closes
                    out.append(LinkEvent("link_down", peer, closes, nid))
        return out


# ----------------------------------------------------------------------------- scorecards


@dataclass(frozen=True, slots=True)
class Observation:
    """One drill notice to one recipient desk. Every time is a relay-signed time from a
    verified statement: the notice's ``accepted`` attestation, the recipient's receipt
    and ack (their ``delivered``/``acknowledged`` attestations), the acceptance of the
    recipient's reply notice (``in_reply_to`` it). ``escalated``: a verified escalation
    statement says the ack deadline passed."""

    notice_id: bytes
    sender: str
    desk: str
    status: str  # "exercise" or "test"
    severity: str
    accepted_at: int
    delivered_at: int | None = None
    acked_at: int | None = None
    automatic: bool = False
    responded_at: int | None = None
    escalated: bool = False
    #: A link test's receipt window (from its signed body); None for an exercise.
    window_ms: int | None = None


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least ``p`` per cent of
    the values at or below it (``p=50`` of 1..4 is 2, ``p=95`` of 1..20 is 19)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Spread:
    n: int
    p50: float | None
    p95: float | None
    max: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(len(values), percentile(values, 50), percentile(values, 95),
                   max(values) if values else None)


@dataclass(frozen=True, slots=True)
class DeskScore:
    desk: str
    period: str
    exercises: int
    deliver: Spread
    acknowledge: Spread
    respond: Spread
    #: Exercises acknowledged before their ack deadline (no escalation statement).
    in_time: int
    #: Acknowledged, but only after the ack deadline passed (escalated first).
    late: int
    #: Not acknowledged at all.
    missed: int
    link_tests: int
    link_tests_answered: int

    @property
    def in_time_share(self) -> float | None:
        return self.in_time / self.exercises if self.exercises else None

    @property
    def uptime(self) -> float | None:
        """Share of link tests receipted within their window."""
        return self.link_tests_answered / self.link_tests if self.link_tests else None

    def to_json(self) -> dict[str, Any]:
        def spread(s: Spread) -> dict[str, Any]:
            return {"n": s.n, "p50_ms": s.p50, "p95_ms": s.p95, "max_ms": s.max}

        return {"desk": self.desk, "period": self.period, "exercises": self.exercises,
                "time_to_deliver": spread(self.deliver),
                "time_to_acknowledge": spread(self.acknowledge),
                "time_to_respond": spread(self.respond), "in_time": self.in_time,
                "in_time_share": self.in_time_share, "late": self.late,
                "missed": self.missed, "link_tests": self.link_tests,
                "link_tests_answered": self.link_tests_answered, "link_uptime": self.uptime}


def month_of(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m")


def scorecard(observations: Iterable[Observation], *, by_month: bool = False,
              period: str = "all") -> list[DeskScore]:
    """Per desk (and per calendar month, UTC, if ``by_month``), in desk order. Times to
    acknowledge count only a person's acknowledgement (an automatic one is a link test's
    answer); link tests count only towards uptime."""
    groups: dict[tuple[str, str], list[Observation]] = {}
    for o in observations:
        key = (o.desk, month_of(o.accepted_at) if by_month else period)
        groups.setdefault(key, []).append(o)
    return [_score(desk, per, rows) for (desk, per), rows in sorted(groups.items())]


def _score(desk: str, period: str, rows: list[Observation]) -> DeskScore:
    ex = [o for o in rows if o.status == "exercise"]
    tests = [o for o in rows if o.status == "test"]
    human = [o for o in ex if o.acked_at is not None and not o.automatic]
    answered = [o for o in tests if o.delivered_at is not None and o.window_ms is not None
                and o.delivered_at - o.accepted_at <= o.window_ms]
    return DeskScore(
        desk, period, len(ex),
        Spread.of([o.delivered_at - o.accepted_at for o in ex if o.delivered_at is not None]),
        Spread.of([o.acked_at - o.accepted_at for o in human if o.acked_at is not None]),
        Spread.of([o.responded_at - o.accepted_at for o in ex if o.responded_at is not None]),
        sum(1 for o in human if not o.escalated),
        sum(1 for o in human if o.escalated),
        len(ex) - len(human),
        len(tests), len(answered),
    )


def render_text(scores: Sequence[DeskScore]) -> str:
    """The scorecard as a fixed-width table (desk ids are checked ids: plain ASCII)."""
    head = (f"{'desk':<14} {'period':<8} {'n':>3}  {'deliver p50/p95/max':<22} "
            f"{'ack p50/p95/max':<22} {'respond p50/p95/max':<22} {'in time':>8} "
            f"{'late':>4} {'missed':>6}  {'link uptime':>12}")
    lines = [head, "-" * len(head)]
    for s in scores:
        def trio(sp: Spread) -> str:
            return "/".join(format_duration(v) for v in (sp.p50, sp.p95, sp.max))

        share = "-" if s.in_time_share is None else f"{100 * s.in_time_share:.0f}%"
        up = ("-" if s.uptime is None
              else f"{100 * s.uptime:.1f}% ({s.link_tests_answered}/{s.link_tests})")
        lines.append(f"{s.desk:<14} {s.period:<8} {s.exercises:>3}  {trio(s.deliver):<22} "
                     f"{trio(s.acknowledge):<22} {trio(s.respond):<22} {share:>8} "
                     f"{s.late:>4} {s.missed:>6}  {up:>12}")
    return "\n".join(lines)


def label(status: str) -> str:
    """The tag every view puts before a drill notice's title."""
    return {"exercise": "[EXERCISE]", "test": "[TEST]"}.get(status, "")
