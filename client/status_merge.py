"""One notice's status as several relays report it, merged. Pure code: no I/O, no clock.

Each relay's status was verified on its own (:func:`client.verify.status_view`, against
that relay's pinned card); here the verified views are put side by side, per recipient:

* a step (delivered, acknowledged, rejected) counts as proven when at least one relay
  shows it with every signature verified (the recipient's own signature is the proof; the
  relay that carried it does not matter), and names every relay that shows it;
* escalations of the same kind and level for the same recipient are one item that names
  the relays that made them;
* a relay whose account differs from what the others prove is flagged, never trusted:

  ``unreachable``      it could not be asked (down, slow, refused);
  ``never_accepted``   it does not know the notice, or its acceptance did not verify,
                       while another relay accepted it;
  ``not_delivered``    it shows no receipt of a recipient that signed one (through another
                       relay) more than ``lag_ms`` ago;
  ``not_acknowledged`` the same for an acknowledgement;
  ``lags``             it lacks a receipt or ack another relay got less than ``lag_ms``
                       ago (the client is still bringing it there);
  ``unverified``       something it showed failed verification or differs from this
                       desk's own copy of the notice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from client.verify import NoticeStatusView, RecipientView, Step

#: A step another relay got longer ago than this, missing here, is a lie, not a lag.
DEFAULT_LAG_MS = 60_000

FLAG_KINDS = ("unreachable", "never_accepted", "not_delivered", "not_acknowledged", "lags",
              "unverified")


@dataclass(frozen=True, slots=True)
class RelayView:
    """What one relay answered: its verified view, or why there is none. ``missing``:
    the relay answered that it does not know the notice."""

    relay: str
    view: NoticeStatusView | None = None
    error: str | None = None
    missing: bool = False


@dataclass(frozen=True, slots=True)
class Flag:
    relay: str
    kind: str  # one of FLAG_KINDS
    desk: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class Proven:
    """A recipient's step shown, verified, by ``relays``; ``step`` is the earliest."""

    step: Step
    relays: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MergedEscalation:
    kind: str  # "escalated" | "resolved"
    level: int
    track: str | None
    #: The earliest of the relays' signed times.
    at: int | None
    relays: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MergedRecipient:
    desk: str
    delivered: Proven | None
    acknowledged: Proven | None
    rejected: Proven | None
    escalations: tuple[MergedEscalation, ...]


@dataclass(frozen=True, slots=True)
class MergedStatus:
    notice_id: bytes
    #: The relays asked, in order, and each one's own (verified) view if it gave one.
    views: tuple[RelayView, ...]
    recipients: tuple[MergedRecipient, ...]
    flags: tuple[Flag, ...]
    #: Relays whose acceptance of the notice verified.
    accepted_by: tuple[str, ...]

    @property
    def verified(self) -> bool:
        """At least one relay's acceptance verified and no relay showed anything that
        failed verification or contradicts this desk's copy."""
        return bool(self.accepted_by) and not any(f.kind == "unverified" for f in self.flags)

    def flags_of(self, relay: str) -> tuple[Flag, ...]:
        return tuple(f for f in self.flags if f.relay == relay)

    def recipient(self, desk: str) -> MergedRecipient:
        for r in self.recipients:
            if r.desk == desk:
                return r
        raise KeyError(desk)


def _earliest(steps: list[tuple[str, Step]]) -> Proven | None:
    if not steps:
        return None
    first = min(steps, key=lambda p: p[1].attested_at if p[1].attested_at is not None else 0)
    return Proven(first[1], tuple(dict.fromkeys(name for name, _ in steps)))


def _unverified_items(view: NoticeStatusView) -> list[tuple[str | None, str]]:
    found: list[tuple[str | None, str]] = []
    if not view.accepted.verified:
        found.append((None, f"acceptance: {view.accepted.problem}"))
    if view.digest_matches is False:
        found.append((None, "its digest is not the one of this desk's copy"))
    for m in view.mismatches:
        found.append((None, f"{m.field}: ours {m.ours}, the relay's {m.relay}"))
    for r in view.recipients:
        for name, step in (("receipt", r.delivered), ("ack", r.acknowledged),
                           ("rejection", r.rejected)):
            if step is not None and not step.verified:
                found.append((r.desk, f"{name}: {step.problem}"))
        for e in r.escalations:
            if not e.verified:
                found.append((r.desk, f"escalation: {e.problem}"))
    return found


def _step(r: RecipientView, what: str) -> Step | None:
    step: Step | None = getattr(r, what)
    return step if step is not None and step.verified else None


def merge_status(notice_id: bytes, views: Sequence[RelayView], *, now: int,
                 lag_ms: int = DEFAULT_LAG_MS) -> MergedStatus:
    """Merge the relays' views of notice ``notice_id`` (see the module docstring); ``now``
    is this client's clock, to tell a lag from a lie."""
    flags: list[Flag] = []
    good: list[tuple[str, NoticeStatusView]] = []
    accepted_by: list[str] = []
    for rv in views:
        if rv.view is None:
            if rv.missing:
                flags.append(Flag(rv.relay, "never_accepted", None,
                                  rv.error or "the relay does not know this notice"))
            else:
                flags.append(Flag(rv.relay, "unreachable", None, rv.error or "no answer"))
            continue
        for desk, detail in _unverified_items(rv.view):
            flags.append(Flag(rv.relay, "unverified", desk, detail))
        if rv.view.accepted.verified and rv.view.digest_matches is not False:
            accepted_by.append(rv.relay)
            good.append((rv.relay, rv.view))
        else:
            flags.append(Flag(rv.relay, "never_accepted", None,
                              "its acceptance of this notice did not verify"))
    desks = list(dict.fromkeys(r.desk for _, v in good for r in v.recipients))
    recipients: list[MergedRecipient] = []
    for desk in desks:
        per_relay = {name: r for name, v in good for r in v.recipients if r.desk == desk}
        proven: dict[str, Proven | None] = {}
        for what in ("delivered", "acknowledged", "rejected"):
            proven[what] = _earliest([(name, s) for name, r in per_relay.items()
                                      if (s := _step(r, what)) is not None])
        for what, lie in (("delivered", "not_delivered"), ("acknowledged", "not_acknowledged")):
            p = proven[what]
            if p is None:
                continue
            for name, _ in good:
                if name in p.relays:
                    continue
                age = now - p.step.attested_at if p.step.attested_at is not None else 0
                kind = lie if age > lag_ms else "lags"
                shown = "shows no receipt" if what == "delivered" else "shows no ack"
                flags.append(Flag(name, kind, desk, f"{shown} of {desk}, whose signed "
                                  f"{'receipt' if what == 'delivered' else 'ack'} came through "
                                  f"{', '.join(p.relays)} {age // 1000}s ago"))
        escalations: dict[tuple[str, int], list[tuple[str, Step]]] = {}
        for name, r in per_relay.items():
            for e in r.escalations:
                if e.verified and e.kind is not None:
                    escalations.setdefault((e.kind, e.level), []).append((name, e))
        merged = tuple(
            MergedEscalation(kind, level, next((s.track for _, s in items if s.track), None),
                             min((s.attested_at for _, s in items if s.attested_at is not None),
                                 default=None),
                             tuple(dict.fromkeys(n for n, _ in items)))
            for (kind, level), items in sorted(escalations.items(), key=lambda kv: kv[0][1]))
        recipients.append(MergedRecipient(desk, proven["delivered"], proven["acknowledged"],
                                          proven["rejected"], merged))
    return MergedStatus(notice_id, tuple(views), tuple(recipients), tuple(flags),
                        tuple(accepted_by))


__all__ = [
    "DEFAULT_LAG_MS",
    "FLAG_KINDS",
    "Flag",
    "MergedEscalation",
    "MergedRecipient",
    "MergedStatus",
    "Proven",
    "RelayView",
    "merge_status",
]
