"""Merging several relays' views of one notice: table-driven, pure."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from client.status_merge import RelayView, merge_status
from client.verify import NoticeStatusView, RecipientView, Step

NID = bytes(16)
NOW = 1_000_000_000
OK = Step(None, NOW - 1000, True)


def receipt(age_ms: int = 1000) -> Step:
    return Step(NOW - age_ms - 5, NOW - age_ms, True)


BAD = Step(None, None, False, "bad signature [bad_signature]")


def esc(level: int, at: int = NOW - 500, kind: str = "escalated") -> Step:
    return Step(None, at, True, level=level, kind=kind, track="ack")


def view(*recipients: RecipientView, accepted: Step = OK,
         digest_matches: bool | None = True) -> NoticeStatusView:
    return NoticeStatusView(NID, "us.caisi", "high", "actual", b"d" * 32, accepted,
                            digest_matches, tuple(recipients))


def rcpt(delivered: Step | None = None, acked: Step | None = None,
         escalations: tuple[Step, ...] = (), desk: str = "cn.cac") -> RecipientView:
    return RecipientView(desk, delivered, acked, escalations)


@dataclass(frozen=True)
class Case:
    name: str
    views: tuple[RelayView, ...]
    #: (relay, kind, desk) of every flag, sorted
    flags: tuple[tuple[str, str, str | None], ...]
    delivered_via: tuple[str, ...] | None
    acked_via: tuple[str, ...] | None
    verified: bool
    escalations: tuple[tuple[str, int, tuple[str, ...]], ...] = ()


CASES = (
    Case("both agree", (RelayView("us", view(rcpt(receipt(), receipt()))),
                        RelayView("cn", view(rcpt(receipt(), receipt())))),
         (), ("us", "cn"), ("us", "cn"), True),
    Case("one unreachable", (RelayView("us", view(rcpt(receipt()))),
                             RelayView("cn", error="timed out")),
         (("cn", "unreachable", None),), ("us",), None, True),
    Case("one never accepted", (RelayView("us", view(rcpt(receipt()))),
                                RelayView("cn", missing=True)),
         (("cn", "never_accepted", None),), ("us",), None, True),
    Case("one says not delivered long after a signed receipt",
         (RelayView("us", view(rcpt(receipt(age_ms=120_000)))), RelayView("cn", view(rcpt()))),
         (("cn", "not_delivered", "cn.cac"),), ("us",), None, True),
    Case("one is a second behind: a lag, not a lie",
         (RelayView("us", view(rcpt(receipt(age_ms=1000)))), RelayView("cn", view(rcpt()))),
         (("cn", "lags", "cn.cac"),), ("us",), None, True),
    Case("ack missing on one relay long after",
         (RelayView("us", view(rcpt(receipt(), receipt(age_ms=90_000)))),
          RelayView("cn", view(rcpt(receipt())))),
         (("cn", "not_acknowledged", "cn.cac"),), ("us", "cn"), ("us",), True),
    Case("a forged receipt on one relay proves nothing and is flagged",
         (RelayView("us", view(rcpt(BAD))), RelayView("cn", view(rcpt()))),
         (("us", "unverified", "cn.cac"),), None, None, False),
    Case("acceptance that does not verify",
         (RelayView("us", view(rcpt(), accepted=BAD)), RelayView("cn", view(rcpt(receipt())))),
         (("us", "never_accepted", None), ("us", "unverified", None)), ("cn",), None, False),
    Case("digest of another notice",
         (RelayView("us", view(rcpt(), digest_matches=False)),
          RelayView("cn", view(rcpt()))),
         (("us", "never_accepted", None), ("us", "unverified", None)), None, None, False),
    Case("same escalation on both relays is one item naming both",
         (RelayView("us", view(rcpt(escalations=(esc(1), esc(2))))),
          RelayView("cn", view(rcpt(escalations=(esc(1, at=NOW - 400),))))),
         (), None, None, True, (("escalated", 1, ("us", "cn")), ("escalated", 2, ("us",)))),
    Case("an escalation that does not verify names no relay and is flagged",
         (RelayView("us", view(rcpt(escalations=(esc(1),)))),
          RelayView("cn", view(rcpt(escalations=(
              Step(None, NOW, False, "bad signature", level=1, kind="escalated"),))))),
         (("cn", "unverified", "cn.cac"),), None, None, False,
         (("escalated", 1, ("us",)),)),
    Case("nobody reachable", (RelayView("us", error="down"), RelayView("cn", error="down")),
         (("cn", "unreachable", None), ("us", "unreachable", None)), None, None, False),
)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_merge_status(case: Case) -> None:
    merged = merge_status(NID, case.views, now=NOW)
    assert sorted((f.relay, f.kind, f.desk) for f in merged.flags) == sorted(case.flags)
    assert merged.verified is case.verified
    if not merged.recipients:
        assert case.delivered_via is None and case.acked_via is None
        return
    r = merged.recipient("cn.cac")
    assert (r.delivered.relays if r.delivered else None) == case.delivered_via
    assert (r.acknowledged.relays if r.acknowledged else None) == case.acked_via
    assert tuple((e.kind, e.level, e.relays) for e in r.escalations) == case.escalations


def test_merged_escalation_takes_the_earliest_signed_time() -> None:
    merged = merge_status(NID, (RelayView("us", view(rcpt(escalations=(esc(1, at=NOW - 9),)))),
                                RelayView("cn", view(rcpt(escalations=(esc(1, at=NOW - 90),))))),
                          now=NOW)
    (e,) = merged.recipient("cn.cac").escalations
    assert e.at == NOW - 90 and e.relays == ("us", "cn")


def test_delivery_proven_by_the_earliest_receipt() -> None:
    early, late = receipt(age_ms=5000), receipt(age_ms=10)
    merged = merge_status(NID, (RelayView("us", view(rcpt(late))),
                                RelayView("cn", view(rcpt(early)))), now=NOW)
    d = merged.recipient("cn.cac").delivered
    assert d is not None and d.step is early and d.relays == ("us", "cn")
