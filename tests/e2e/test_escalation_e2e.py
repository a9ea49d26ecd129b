"""Escalation on a real relay process, in real (short) time, and the operators' views of it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import nacl.signing
import pytest
from prometheus_client.parser import text_string_to_metric_families

from keys import Confirmation, Envelope, seal
from keys.frames import (
    Challenge,
    InboxPage,
    OperatorChallengeRequest,
    OperatorSessionRequest,
    Session,
    operator_auth_message,
)
from keys.receipts import EscalationStatement
from tests.factory import report
from tests.relay_harness import MSGPACK, RawDesk, RelayProcess, now_ms

T = TypeVar("T")
CANARY_TITLE = "CANARY-TITLE-7f3a9 reactor telemetry leak"
CANARY_BODY = "CANARY-BODY-51c2e the weights are on a public bucket"
FAST_POLICY = '[policy.critical]\nack_window = "2s"\nrepeat_every = "1s"\nmax_level = 2\n'
#: Upper bound on any wait for the relay to act (bounded polling, never a fixed sleep).
WAIT_S = 10.0


@pytest.fixture
def start_relay(tmp_path: Path, federation: dict[str, Path]
                ) -> Iterator[Callable[[str], RelayProcess]]:
    """Start a relay whose relay.toml gets ``toml`` appended before it starts."""
    procs: list[RelayProcess] = []

    def start(toml: str) -> RelayProcess:
        proc = RelayProcess.create(tmp_path)
        with open(proc.home / "relay.toml", "a") as fh:
            fh.write("\n" + toml)
        proc.start()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll ``probe`` every 50 ms until it returns something truthy, at most WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")
        await asyncio.sleep(0.05)


def sealed(sender: RawDesk, *to: RawDesk, severity: str = "critical") -> Envelope:
    now = now_ms()
    trust = sender.home.trust(now)
    return seal(report(title=CANARY_TITLE, body=CANARY_BODY), sender=sender.secrets,
                recipients=[trust.verify_card(r.home.card(now), now) for r in to],
                severity=severity, now=now)


async def statements_in_inbox(desk: RawDesk, notice_id: bytes, kind: str
                              ) -> list[EscalationStatement]:
    reply = await desk.get("/v1/inbox?after=0&limit=500")
    assert reply.status == 200
    out = []
    for e in InboxPage.decode(reply.body).events:
        if e.kind == kind and e.notice_id == notice_id:
            assert e.attestation is not None and e.envelope is None
            out.append(EscalationStatement.decode(e.attestation))
    return out


def escalation_level(line: dict[str, Any]) -> Any:
    return line["escalation_level"] if "escalation_level" in line else line.get("level")


def log_file(relay: RelayProcess) -> list[dict[str, Any]]:
    path = relay.home / "escalations.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines()]


async def test_critical_notice_escalates_twice_then_resolves_on_a_real_relay(
        start_relay: Callable[[str], RelayProcess], federation: dict[str, Path],
        http: aiohttp.ClientSession) -> None:
    """With a 2 s window and 1 s repeats, an unacknowledged notice escalates at levels 1 and 2
    (sender's inbox, escalation log file, JSON log), and the late ack resolves it."""
    relay = start_relay(FAST_POLICY)
    us = await RawDesk(http, relay.url, federation["us.caisi"]).login()
    cn = await RawDesk(http, relay.url, federation["cn.cac"]).login()
    env = sealed(us, cn)
    sent_at = now_ms()
    assert (await us.post("/v1/notices", env.raw)).status == 201

    async def both_levels() -> list[EscalationStatement] | None:
        found = await statements_in_inbox(us, env.notice_id, "escalation")
        return found if {s.level for s in found} >= {1, 2} else None

    found = await eventually(both_levels, "escalation events for levels 1 and 2")
    assert [s.level for s in found] == [1, 2]
    assert us.relay_card is not None
    for st in found:
        st.verify(us.relay_card)
        assert (st.kind, st.sender, st.recipient, st.severity, st.track, st.delivered) == (
            "escalated", "us.caisi", "cn.cac", "critical", "ack", False)
    first, second = found
    assert first.deadline == second.deadline
    assert sent_at - 1000 <= first.deadline - 2000 <= now_ms()   # accepted_at + 2 s
    assert first.at >= first.deadline and second.at >= first.deadline + 1000
    assert (first.final, second.final) == (False, True)
    assert first.overdue_ms < 3000  # the scheduler woke for the deadline, not minutes later

    async def logged() -> list[dict[str, Any]] | None:
        lines = [x for x in log_file(relay) if x["notice_id"] == env.notice_id.hex()]
        return lines if len(lines) >= 2 else None

    lines = await eventually(logged, "two lines in escalations.jsonl")
    assert [(x["event"], x["level"], x["recipient"]) for x in lines] == [
        ("notice.escalated", 1, "cn.cac"), ("notice.escalated", 2, "cn.cac")]
    json_logs = [x for x in relay.events("notice.escalated")
                 if x.get("notice_id") == env.notice_id.hex()]
    assert len(json_logs) == 2
    assert all(x["severity"] == "critical" and x["track"] == "ack" and x["recipient"] == "cn.cac"
               for x in json_logs)

    ack = Confirmation.create("ack", notice_id=env.notice_id, digest=env.digest,
                              sender=us.desk, me=cn.secrets, at=now_ms())
    assert (await cn.post("/v1/confirmations", ack.encode())).status == 200

    async def resolved() -> list[EscalationStatement] | None:
        return await statements_in_inbox(us, env.notice_id, "resolved") or None

    (res,) = await eventually(resolved, "the 'resolved' event")
    res.verify(us.relay_card)
    assert (res.kind, res.level, res.deadline) == ("resolved", 2, first.deadline)

    async def resolution_logged() -> list[dict[str, Any]] | None:
        lines = [x for x in log_file(relay) if x["event"] == "escalation.resolved"]
        return lines or None

    (line,) = await eventually(resolution_logged, "the resolution in escalations.jsonl")
    assert (line["notice_id"], line["level"]) == (env.notice_id.hex(), 2)
    # Nothing in any log line carries the notice's content.
    dumped = json.dumps(relay.lines) + (relay.home / "escalations.jsonl").read_text()
    assert "CANARY" not in dumped
    # The escalation level must survive into the relay's JSON log lines (not be replaced by
    # the log level, "warning" / "info"); it may be named "level" or "escalation_level".
    assert [escalation_level(x) for x in json_logs] == [1, 2]
    assert [escalation_level(x) for x in relay.events("escalation.resolved")] == [2]


# --------------------------------------------------------------------------- operators


async def operator_login(http: aiohttp.ClientSession, url: str, name: str,
                         key: nacl.signing.SigningKey) -> tuple[int, bytes]:
    async with http.post(url + "/v1/ops/challenge", headers=MSGPACK,
                         data=OperatorChallengeRequest(name).encode()) as r:
        assert r.status == 200
        ch = Challenge.decode(await r.read())
    ts = now_ms()
    sig = key.sign(operator_auth_message(ch.origin, name, ch.nonce, ts)).signature
    async with http.post(url + "/v1/ops/session", headers=MSGPACK,
                         data=OperatorSessionRequest(name, ch.nonce, ts, sig).encode()) as r:
        body = await r.read()
        return r.status, (Session.decode(body).token if r.status == 200 else b"")


def all_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in all_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in all_keys(v)}
    return set()


async def test_operators_see_metadata_only_and_tokens_do_not_cross(
        start_relay: Callable[[str], RelayProcess], federation: dict[str, Path],
        http: aiohttp.ClientSession) -> None:
    """An operator logs in with its configured key and sees overdue notices and escalations
    as metadata only; desk and operator tokens are refused on each other's routes; /metrics
    exposes hotline_escalations_total."""
    op_key = nacl.signing.SigningKey.generate()
    relay = start_relay('[policy.critical]\nack_window = "1s"\nrepeat_every = "1s"\n'
                        'max_level = 1\n\n[operators]\n'
                        f'"ops.test" = "{bytes(op_key.verify_key).hex()}"\n')
    us = await RawDesk(http, relay.url, federation["us.caisi"]).login()
    cn = await RawDesk(http, relay.url, federation["cn.cac"]).login()
    env = sealed(us, cn)
    assert (await us.post("/v1/notices", env.raw)).status == 201

    status, token = await operator_login(http, relay.url, "ops.test", op_key)
    assert status == 200
    op_auth = {"Authorization": "Hotline " + token.hex()}
    # A key that is not the configured one, or a name that is not an operator, gets nothing.
    bad_status, _ = await operator_login(http, relay.url, "ops.test",
                                         nacl.signing.SigningKey.generate())
    assert bad_status == 401
    stranger_status, _ = await operator_login(http, relay.url, "ops.stranger", op_key)
    assert stranger_status == 403

    async def get_json(path: str) -> tuple[int, str]:
        async with http.get(relay.url + path, headers=op_auth) as r:
            return r.status, await r.text()

    async def escalated() -> list[dict[str, Any]] | None:
        status, text = await get_json("/v1/ops/escalations?since=0")
        assert status == 200
        rows = [x for x in json.loads(text)["escalations"]
                if x["notice_id"] == env.notice_id.hex()]
        return rows or None

    (row,) = await eventually(escalated, "the escalation in /v1/ops/escalations")
    assert (row["event"], row["sender"], row["recipient"], row["severity"], row["level"],
            row["track"], row["exercise"]) == (
        "notice.escalated", "us.caisi", "cn.cac", "critical", 1, "ack", False)
    status, esc_text = await get_json("/v1/ops/escalations?since=0")
    assert status == 200
    status, overdue_text = await get_json("/v1/ops/overdue")
    assert status == 200
    overdue = json.loads(overdue_text)["overdue"]
    (item,) = [x for x in overdue if x["notice_id"] == env.notice_id.hex()]
    assert (item["recipient"], item["track"], item["level"], item["delivered"]) == (
        "cn.cac", "ack", 1, False)
    assert item["overdue_ms"] >= 0
    for text in (esc_text, overdue_text):
        assert "CANARY" not in text
        assert env.raw.hex() not in text
        keys = all_keys(json.loads(text))
        assert not keys & {"envelope", "ciphertext", "report", "title", "body", "summary",
                           "stanzas", "confirmation"}

    # A desk token is not an operator token, and the other way round.
    for path in ("/v1/ops/overdue", "/v1/ops/escalations"):
        assert (await us.get(path)).status == 401
    for path in ("/v1/inbox", f"/v1/notices/{env.notice_id.hex()}",
                 f"/v1/notices/{env.notice_id.hex()}/status"):
        async with http.get(relay.url + path, headers=op_auth) as r:
            assert r.status == 401, path
    async with http.get(relay.url + "/v1/ops/overdue") as r:
        assert r.status == 401

    async with http.get(relay.url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        metrics_text = await r.text()
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(metrics_text)
               for s in family.samples}
    assert samples[("hotline_escalations_total", frozenset({
        "severity": "critical", "level": "1", "track": "ack", "status": "actual"}.items()))] == 1
    assert samples[("hotline_pending", frozenset({"severity": "critical"}.items()))] == 1
    assert samples[("hotline_overdue", frozenset({"severity": "critical"}.items()))] == 1
