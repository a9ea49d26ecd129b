"""Evidence bundles (PROTOCOL.md section 20.6): what a third party needs to check, offline,
what the relay attested about one notice and when.

A bundle is one JSON document: the federation root, the relay card, the witness policy,
every relay statement about the notice with its leaf index, inclusion proof and the size
of the checkpoint it is proven against, the recipients' signed confirmations with their
certificates, and the cosigned checkpoints. The notice's content is left out unless the
exporting desk asks for it.

:func:`verify_bundle` checks every signature and proof and returns the timeline and the
list of what failed (empty: the bundle holds).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from client.record import Proven, entry_of, log_verifier
from keys import tlog
from keys.checkpoint import open_checkpoint
from keys.errors import HotlineError
from keys.receipts import Attestation, Confirmation, EscalationStatement, RelayCard
from keys.tlog_policy import check_checkpoint, parse_policy
from keys.trust import DeskCertificate, FederationRoot, TrustStore

FORMAT = "hotline-evidence/v1"
#: The largest bundle read (statements are small; content may be included).
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
ATTESTED = ("accepted", "delivered", "acknowledged", "rejected")


def _b(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise ValueError(f"{what} is not valid base64") from exc


def build_bundle(*, notice_id: bytes, root: bytes, relay_card: bytes, policy: bytes | None,
                 proven: list[Proven], checkpoints: dict[int, bytes],
                 confirmations: list[tuple[bytes, bytes]], content: bytes | None) -> bytes:
    """The bundle's bytes. ``confirmations``: (signed confirmation, signer certificate)."""
    doc = {
        "format": FORMAT,
        "notice_id": notice_id.hex(),
        "root": _b(root),
        "relay_card": _b(relay_card),
        "policy": None if policy is None else policy.decode(),
        "statements": [{"kind": p.kind, "statement": _b(p.statement), "leaf": p.leaf,
                        "checkpoint": p.size, "proof": [_b(h) for h in p.proof]}
                       for p in proven],
        "confirmations": [{"confirmation": _b(c), "signer_cert": _b(cert)}
                          for c, cert in confirmations],
        "checkpoints": {str(size): note.decode() for size, note in sorted(checkpoints.items())},
        "content": None if content is None else _b(content),
    }
    return (json.dumps(doc, indent=1) + "\n").encode()


@dataclass
class Report:
    timeline: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures and self.checked > 0


def _t(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _late(at: int, deadline: int | None) -> str:
    if deadline is None:
        return ""
    d = at - deadline
    if d <= 0:
        return ", in time"
    minutes = d // 60_000
    return f", {minutes} min late" if minutes else f", {d // 1000} s late"


def verify_bundle(data: bytes, *, now: int) -> Report:
    """Check a bundle offline. Every failure is named; nothing is trusted that did not
    verify (the timeline lists verified statements only)."""
    rep = Report()
    try:
        doc = json.loads(data.decode())
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        notice_id = bytes.fromhex(str(doc["notice_id"]))
        root = FederationRoot.decode(_unb(doc["root"], "root"))
        relay = RelayCard.decode(_unb(doc["relay_card"], "relay_card"))
        policy = None if doc.get("policy") is None else parse_policy(str(doc["policy"]).encode())
        statements = list(doc["statements"])
        confirmations = list(doc.get("confirmations") or [])
        notes = {int(k): str(v).encode() for k, v in dict(doc["checkpoints"]).items()}
    except (ValueError, KeyError, TypeError, HotlineError) as exc:
        rep.failures.append(f"bundle: unreadable: {exc}")
        return rep
    # Checkpoints: signed by the relay's log key, and cosigned as the policy requires.
    key = log_verifier(relay.relay_id, relay.key)
    roots: dict[int, bytes] = {}
    for size, msg in sorted(notes.items()):
        try:
            if policy is not None:
                cp = check_checkpoint(policy, msg, log_keys=[key]).signed.checkpoint
            else:
                cp = open_checkpoint(msg, [key]).checkpoint
                rep.failures.append(f"checkpoint {size}: no witness policy in the bundle: "
                                    "only the relay vouches for it")
            if cp.size != size:
                raise ValueError(f"the note is of size {cp.size}")
            roots[size] = cp.root
            rep.checked += 1
        except (HotlineError, ValueError) as exc:
            rep.failures.append(f"checkpoint {size}: {exc}")
    events: list[tuple[int, str]] = []
    deadlines: dict[str, int] = {}
    acks: list[tuple[int, str]] = []
    for i, st in enumerate(statements):
        what = f"statement {i} ({st.get('kind', '?') if isinstance(st, dict) else '?'})"
        try:
            raw = _unb(st["statement"], what)
            leaf, size = int(st["leaf"]), int(st["checkpoint"])
            proof = [_unb(h, f"{what} proof") for h in st["proof"]]
        except (KeyError, TypeError, ValueError) as exc:
            rep.failures.append(f"{what}: unreadable: {exc}")
            continue
        try:
            if st["kind"] in ATTESTED:
                att = Attestation.decode(raw)
                att.verify(relay, notice_id=notice_id)
                at, text = att.at, ""
                if att.event == "accepted":
                    text = f"accepted {_t(at)} by {relay.relay_id}"
                elif att.event == "delivered":
                    text = f"delivered to {att.desk} {_t(at)}"
                elif att.event == "acknowledged":
                    acks.append((at, att.desk))
                    text = f"acknowledged by {att.desk} {_t(at)}"
                else:
                    text = f"rejected by {att.desk} (could not open it) {_t(at)}"
            else:
                es = EscalationStatement.decode(raw)
                es.verify(relay)
                if es.notice_id != notice_id:
                    raise ValueError("it is about another notice")
                at = es.at
                if es.track == "ack":
                    deadlines[es.recipient] = es.deadline
                text = (f"escalated level {es.level} ({es.recipient}, {es.track}) {_t(at)}"
                        if es.kind == "escalated" else
                        f"resolved ({es.recipient}, {es.track}) {_t(at)}")
        except (HotlineError, ValueError) as exc:
            rep.failures.append(f"{what}: signature: {exc}")
            continue
        if size not in roots:
            rep.failures.append(f"{what}: no valid checkpoint of size {size} in the bundle")
            continue
        try:
            tlog.verify_inclusion(tlog.leaf_hash(entry_of(raw)), leaf, size, proof, roots[size])
        except tlog.ProofError as exc:
            rep.failures.append(f"{what}: inclusion proof for leaf {leaf} in checkpoint "
                                f"{size}: {exc.message}")
            continue
        rep.checked += 1
        events.append((at, text))
    # Recipients' own signatures on their receipts and acknowledgements.
    trust = TrustStore(root)
    for i, c in enumerate(confirmations):
        what = f"confirmation {i}"
        try:
            conf = Confirmation.decode(_unb(c["confirmation"], what))
            cert = DeskCertificate.decode(_unb(c["signer_cert"], f"{what} certificate"))
            signer = trust.verify_signer(cert, conf.at)
            conf.verify(signer, notice_id=notice_id, digest=conf.digest, sender=conf.sender,
                        recipient=conf.recipient)
            rep.checked += 1
        except (HotlineError, KeyError, TypeError, ValueError) as exc:
            rep.failures.append(f"{what}: {exc}")
    # Lateness of each acknowledgement against the deadline its escalations name.
    out = []
    for at, text in sorted(events):
        for ack_at, desk in acks:
            if ack_at == at and text.startswith("acknowledged") and desk in deadlines:
                text += _late(at, deadlines[desk])
        out.append(text)
    rep.timeline = out
    _ = now
    return rep


async def export(client: Any, notice_id: bytes, *, include_content: bool = False,
                 wait_s: float = 30.0, sleep: Any = None) -> tuple[bytes, list[str]]:
    """Gather a notice's statements from the relay's status (and what this desk received),
    prove each included in a witnessed checkpoint (waiting up to ``wait_s`` for one to
    cover them), and build the bundle. Returns it and the statements left unproven."""
    import asyncio

    sleep = sleep or asyncio.sleep
    status = await client.connection.get_status(notice_id)
    wanted: list[bytes] = [status.accepted]
    confirmations: list[tuple[bytes, bytes]] = []
    record = client.record
    record.saw(status.accepted, "accepted", notice_id, None)
    for r in status.recipients:
        for raw, kind in ((r.receipt_attestation, "delivered"), (r.ack_attestation,
                          "acknowledged"), (r.rejection_attestation, "rejected")):
            if raw is not None:
                wanted.append(raw)
                record.saw(raw, kind, notice_id, None)
        for conf in (r.receipt, r.ack):
            if conf is not None and r.signer_cert is not None:
                confirmations.append((conf, r.signer_cert))
        for raw in r.escalations:
            wanted.append(raw)
            record.saw(raw, EscalationStatement.decode(raw).kind, notice_id, None)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    delay = 0.5
    while True:
        await client.check_record(force=True)
        have = {p.statement for p in record.state.of_notice(notice_id) if isinstance(p, Proven)}
        missing = [w for w in wanted if w not in have]
        if not missing or loop.time() >= deadline:
            break
        await sleep(delay)
        delay = min(delay * 2, 5.0)
    proven = [p for p in record.state.of_notice(notice_id) if isinstance(p, Proven)]
    checkpoints = {}
    for p in proven:
        note = record.state.checkpoint(p.size)
        if note is not None:
            checkpoints[p.size] = note
    policy_path = client.home.path / "log-policy"
    content = await client.connection.get_notice(notice_id) if include_content else None
    bundle = build_bundle(notice_id=notice_id, root=client.trust.root.encode(),
                          relay_card=(await client.relay()).encode(),
                          policy=policy_path.read_bytes() if policy_path.exists() else None,
                          proven=proven, checkpoints=checkpoints,
                          confirmations=confirmations, content=content)
    return bundle, [entry_of(m).hex()[:16] for m in missing]
