"""Build Hotline's byte-exact test vectors (see "Test vectors" in keys/PROTOCOL.md).

Everything is deterministic: Ed25519 keys come from fixed 32-byte seeds, X25519 private
keys from fixed bytes, every timestamp is fixed, and every random draw comes from a
BLAKE2b counter-mode stream over a fixed seed. Ed25519 signatures are deterministic, so the
whole file is reproducible byte for byte.

    python tests/vectors/make_vectors.py > tests/vectors/vectors.json

All byte values in the output are lower-case hex strings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import nacl.public
import nacl.pwhash.argon2id as argon2id
import nacl.signing

from keys import codec, keyfile, weblogin, xwing
from keys.armor import armor
from keys.envelope import Envelope, seal, stanza_context
from keys.fingerprint import fingerprint
from keys.frames import (
    Challenge,
    ChallengeRequest,
    OperatorChallengeRequest,
    OperatorSessionRequest,
    RevocationList,
    Session,
    SessionRequest,
    auth_message,
    operator_auth_message,
    revocation_message,
)
from keys.ids import Country, DeskId
from keys.primitives import (
    Domain,
    aead_decrypt,
    digest,
    key_commitment,
    key_id,
)
from keys.receipts import Attestation, Confirmation, EscalationStatement, Rejection, RelayCard
from keys.report import (
    AiSystem,
    Attachment,
    IncidentReport,
    Reference,
    Translation,
)
from keys.secrets import DeskSecrets, EncryptionKeyPair
from keys.signed import SignedBytes
from keys.trust import (
    AuthorityCard,
    CertRequest,
    DeskCard,
    DeskCertificate,
    EkCertificate,
    FederationRoot,
    Revocation,
    TrustStore,
)
from relay.escalator import log_record
from relay.store.base import EscalationRow
from relay.webhooks import alert_body
from relay.webhooks import signature as webhook_signature

FORMAT = "hotline-test-vectors/1"

# ------------------------------------------------------------------------ fixed inputs

#: The vectors' "now" (UTC milliseconds, 2026-09-21T13:33:20Z).
NOW = 1_790_000_000_000
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 86_400_000
YEAR = 365 * DAY

TIMES: dict[str, int] = {
    "now": NOW,
    "authority_card_created_at": NOW - 30 * DAY,
    "root_v1_issued_at": NOW - 30 * DAY,
    "root_v1_expires_at": NOW + YEAR,
    "root_v2_issued_at": NOW - DAY,
    "root_v2_expires_at": NOW + 2 * YEAR,
    "cert_request_created_at": NOW - 10 * DAY,
    "desk_cert_not_before": NOW - 10 * DAY,
    "desk_cert_not_after": NOW + YEAR,
    "ek_not_before": NOW - 5 * DAY,
    "ek_not_after": NOW + 25 * DAY,
    "ek_keep_until": NOW + 55 * DAY,
    "revoked_at": NOW - DAY,
    "relay_card_created_at": NOW - 30 * DAY,
    "notice1_created_at": NOW,
    "notice2_created_at": NOW + 10 * MINUTE,
    "notice3_created_at": NOW + 20 * MINUTE,
    "receipt_at": NOW + 4_000,
    "ack_at": NOW + 95_000,
    "accepted_at": NOW + 1_200,
    "escalated_at": NOW + 25 * MINUTE,
    "root_v3_issued_at": NOW - HOUR,
    "root_v3_expires_at": NOW + 2 * YEAR,
    "notice2_accepted_at": NOW + 10 * MINUTE + 800,
    "notice2_ack_deadline": NOW + 25 * MINUTE + 800,
    "escalation_at": NOW + 25 * MINUTE + 1_050,
    "resolved_at": NOW + 29 * MINUTE + 10_800,
    "challenge_expires_at": NOW + 60_000,
    "login_ts": NOW + 1_500,
    "session_expires_at": NOW + 1_500 + 900_000,
    "webhook_timestamp_s": (NOW + 25 * MINUTE + 2_000) // 1000,
    "rejection_at": NOW + 10 * MINUTE + 3_000,
    "rejected_at": NOW + 10 * MINUTE + 3_100,
    "hybrid_required_from": NOW + 30 * 24 * HOUR,
}

DOMAIN_NAMES = (
    "ROOT",
    "AUTHORITY_CARD",
    "CERT_REQUEST",
    "DESK_CERT",
    "EK_CERT",
    "REVOCATION",
    "INNER",
    "ENVELOPE",
    "RECEIPT",
    "ACK",
    "REJECTION",
    "ATTESTATION",
    "ESCALATION",
    "RELAY_CARD",
    "AUTH",
    "OPERATOR_AUTH",
    "OPERATOR_WEB_LOGIN",
)
DESKS = ("us.caisi", "cn.cac", "cn.mss")
REVOKED_DESK = "us.old"
RELAY_ID = "hotline-relay-1"
PASSPHRASE = b"correct horse battery staple"
OPERATOR = "ops.alice"
ORIGIN = "https://hotline.example.org"
WEBHOOK = "pager"
WEBHOOK_SECRET = b"webhook-shared-secret-for-vectors"

NOTICE1_ID = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
NOTICE2_ID = bytes.fromhex("102030405060708090a0b0c0d0e0f001")
NOTICE3_ID = bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f90")
HYBRID_NOTICE_ID = bytes.fromhex("5eed0f7e1d2c3b4a59687786950a1b2c")
HYBRID_DESK = "cn.pq"
VECTORS_PATH = Path(__file__).with_name("vectors.json")


def seed(label: str) -> bytes:
    """A fixed 32-byte secret: BLAKE2b-256(label, personal="hotline-vectors")."""
    return hashlib.blake2b(label.encode(), digest_size=32, person=b"hotline-vectors").digest()


class CounterRandom:
    """A deterministic ``random`` callable: BLAKE2b-512 in counter mode over a fixed seed.

    The stream is block(0) || block(1) || ... with
    block(i) = BLAKE2b-512(key=seed, message=uint64_big_endian(i)); each call ``random(n)``
    takes the next ``n`` bytes of the stream. Every draw is logged.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.seed = seed(f"random/{label}")
        self._buffer = b""
        self._counter = 0
        self.draws: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        while len(self._buffer) < n:
            block = hashlib.blake2b(
                self._counter.to_bytes(8, "big"), digest_size=64, key=self.seed
            ).digest()
            self._buffer += block
            self._counter += 1
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        self.draws.append(out)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "seed": self.seed.hex(),
            "draws": [d.hex() for d in self.draws],
        }


# ------------------------------------------------------------------------------ helpers


def hexify(value: Any) -> Any:
    """JSON form of a decoded msgpack value: bytes become hex strings."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: hexify(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [hexify(v) for v in value]
    return value


def signed_doc(signed: SignedBytes, encoded: bytes) -> dict[str, Any]:
    return {
        "fields": hexify(codec.unpack(signed.body, what="vector", max_bytes=1 << 20)),
        "body": signed.body.hex(),
        "signature": signed.signature.hex(),
        "encoded": encoded.hex(),
    }


def report_1() -> IncidentReport:
    return IncidentReport(
        title="Model weights of FrontierX-3 posted on a public tracker",
        summary="Weights for a frontier model appeared on a torrent tracker at 02:10 UTC.",
        category="model-weights-leak",
        aware_at=NOW - 3 * 3_600_000,
        body="Hashes match the lab's release candidate. Mirrors are spreading.",
        tlp="amber+strict",
        lang="en",
        systems=(AiSystem("FrontierX-3", "rc2", "Example Labs"),),
        countries=("us", "cn"),
        actions=("Takedown requests sent to the tracker.", "Mirror list attached."),
        contact="duty officer +1 202 555 0100",
        references=(Reference(bytes.fromhex("00112233445566778899aabbccddeeff"), "related"),),
        translations=(
            Translation(
                "zh-Hans",
                "FrontierX-3 模型权重在公共追踪器上被发布",
                "前沿模型的权重于 UTC 02:10 出现在种子追踪器上。",
            ),
        ),
        attachments=(Attachment("mirrors.txt", "text/plain", b"tracker.example/t/123\n"),),
    )


def report_2() -> IncidentReport:
    return IncidentReport(
        title="FrontierX-3 weights: mirrors now on three platforms",
        summary="The leak spread to two more platforms; coordinated takedown requested.",
        category="model-weights-leak",
        aware_at=NOW + 5 * MINUTE,
        references=(Reference(NOTICE1_ID, "update"),),
    )


def report_3() -> IncidentReport:
    return IncidentReport(
        title="已收到：正在协调下架",
        summary="",
        category="other",
        aware_at=NOW + 15 * MINUTE,
        tlp="green",
        lang="zh",
        references=(Reference(NOTICE1_ID, "reply"),),
    )


def report_json(report: IncidentReport) -> dict[str, Any]:
    """The report's wire map in JSON form (references[].notice_id, attachments[].data: hex)."""
    out: dict[str, Any] = hexify(report.to_wire())
    return out


# -------------------------------------------------------------------------------- build


def build_vectors() -> dict[str, Any]:
    seeds: dict[str, str] = {}
    x25519: dict[str, str] = {}

    def ed25519(label: str) -> nacl.signing.SigningKey:
        s = seed(label)
        seeds[label] = s.hex()
        return nacl.signing.SigningKey(s)

    def x25519_key(label: str) -> nacl.public.PrivateKey:
        s = seed(label)
        x25519[label] = s.hex()
        return nacl.public.PrivateKey(s)

    keys_out: dict[str, dict[str, str]] = {}

    # --- authorities and the federation root
    authorities = {Country(c): ed25519(f"authority/{c}") for c in ("cn", "us")}
    authority_cards = {}
    for c, sk in authorities.items():
        acard = AuthorityCard.create(c, sk, TIMES["authority_card_created_at"])
        authority_cards[c] = signed_doc(acard.signed, acard.encode())
        pk = bytes(sk.verify_key)
        keys_out[f"authority/{c}"] = {
            "public": pk.hex(),
            "key_id": key_id(pk).hex(),
            "fingerprint": fingerprint("authority", c, pk),
        }

    members = {c: bytes(sk.verify_key) for c, sk in authorities.items()}
    root1 = FederationRoot.create(
        1, members, TIMES["root_v1_issued_at"], TIMES["root_v1_expires_at"]
    )
    for c in sorted(authorities):
        root1 = root1.signed_by(c, authorities[c])
    root1.check_initial(NOW)
    root2 = FederationRoot.create(
        2, members, TIMES["root_v2_issued_at"], TIMES["root_v2_expires_at"]
    )
    for c in sorted(authorities):
        root2 = root2.signed_by(c, authorities[c])
    root2.check_update(root1, NOW)

    # v3: the us authority rotates its key. The successor root names the new key and is
    # signed by cn, by the old us key (required by v2) and by the new one (its own member).
    us_next = ed25519("authority/us/next")
    us_next_pk = bytes(us_next.verify_key)
    keys_out["authority/us/next"] = {
        "public": us_next_pk.hex(),
        "key_id": key_id(us_next_pk).hex(),
        "fingerprint": fingerprint("authority", "us", us_next_pk),
    }
    root3 = FederationRoot.create(
        3,
        {Country("cn"): members[Country("cn")], Country("us"): us_next_pk},
        TIMES["root_v3_issued_at"],
        TIMES["root_v3_expires_at"],
    )
    root3 = root3.signed_by(Country("cn"), authorities[Country("cn")])
    root3 = root3.signed_by(Country("us"), authorities[Country("us")])
    root3 = root3.signed_by(Country("us"), us_next)
    root3.check_update(root2, NOW)
    root3.check_initial(NOW)

    def root_doc(root: FederationRoot) -> dict[str, Any]:
        return {
            "fields": hexify(codec.unpack(root.body, what="vector", max_bytes=1 << 20)),
            "body": root.body.hex(),
            "signatures": [
                [c, sig.hex()] for c in sorted(root.signatures) for sig in root.signatures[c]
            ],
            "encoded": root.encode().hex(),
        }

    trust = TrustStore(root1)

    # --- desks
    desks: dict[str, dict[str, Any]] = {}
    secrets: dict[str, DeskSecrets] = {}
    cards: dict[str, DeskCard] = {}
    for name in (*DESKS, REVOKED_DESK):
        desk = DeskId(name)
        ik = ed25519(f"desk/{name}/ik")
        request = CertRequest.create(desk, ik, TIMES["cert_request_created_at"])
        country = Country(name.split(".")[0])
        cert = DeskCertificate.issue(
            CertRequest.decode(request.encode()),
            country,
            authorities[country],
            TIMES["desk_cert_not_before"],
            TIMES["desk_cert_not_after"],
        )
        ikp = bytes(ik.verify_key)
        keys_out[f"desk/{name}/ik"] = {
            "public": ikp.hex(),
            "key_id": key_id(ikp).hex(),
            "fingerprint": fingerprint("desk", name, ikp),
        }
        entry: dict[str, Any] = {
            "cert_request": signed_doc(request.signed, request.encode()),
            "desk_cert": signed_doc(cert.signed, cert.encode()),
        }
        if name == REVOKED_DESK:
            desks[name] = entry
            continue
        ek = x25519_key(f"desk/{name}/ek")
        ekp = bytes(ek.public_key)
        keys_out[f"desk/{name}/ek"] = {"public": ekp.hex(), "key_id": key_id(ekp).hex()}
        ek_cert = EkCertificate.issue(desk, ik, ekp, TIMES["ek_not_before"], TIMES["ek_not_after"])
        card = DeskCard(cert, (ek_cert,))
        entry["ek_cert"] = signed_doc(ek_cert.signed, ek_cert.encode())
        entry["desk_card"] = {
            "encoded": card.encode().hex(),
            "armored": armor("desk-card", card.encode()),
        }
        desks[name] = entry
        cards[name] = card
        secrets[name] = DeskSecrets(
            desk,
            ik,
            (
                EncryptionKeyPair(
                    ek, TIMES["ek_not_before"], TIMES["ek_not_after"], TIMES["ek_keep_until"]
                ),
            ),
        )

    verified = {name: trust.verify_card(cards[name], NOW) for name in DESKS}

    # --- revocation of us.old by the us authority
    old_kid = key_id(bytes.fromhex(keys_out[f"desk/{REVOKED_DESK}/ik"]["public"]))
    revocation = Revocation.issue(
        DeskId(REVOKED_DESK),
        old_kid,
        authorities[Country("us")],
        TIMES["revoked_at"],
        "key retired after a staff change",
    )

    # --- notices
    def notice(
        name: str,
        report: IncidentReport,
        *,
        sender: str,
        to: list[str],
        severity: str,
        status: str,
        created_at: int,
        notice_id: bytes,
        in_reply_to: bytes | None,
    ) -> dict[str, Any]:
        rnd = CounterRandom(name)
        env = seal(
            report,
            sender=secrets[sender],
            recipients=[verified[d] for d in to],
            severity=severity,
            now=created_at,
            status=status,
            in_reply_to=in_reply_to,
            notice_id=notice_id,
            random=rnd,
        )
        env = Envelope.decode(env.raw)
        content_key, nonce = rnd.draws[0], rnd.draws[1]
        plaintext = aead_decrypt(env.ciphertext, env.header.raw, nonce, content_key)
        inner_raw, inner_sig = codec.unpack(plaintext, what="vector", max_bytes=1 << 24)
        stanzas = []
        for i, s in enumerate(env.header.stanzas):
            eph = nacl.public.PrivateKey(rnd.draws[2 + i])
            stanzas.append(
                {
                    "to": s.to,
                    "ek_kid": s.ek_kid.hex(),
                    "ephemeral_sk": bytes(eph).hex(),
                    "ephemeral_pk": bytes(eph.public_key).hex(),
                    "wrapped": s.wrapped.hex(),
                }
            )
        return {
            "name": name,
            "inputs": {
                "sender": sender,
                "recipients": sorted(to),
                "severity": severity,
                "status": status,
                "created_at": created_at,
                "notice_id": notice_id.hex(),
                "in_reply_to": None if in_reply_to is None else in_reply_to.hex(),
                "report": report_json(report),
                "random": rnd.describe(),
            },
            "content_key": content_key.hex(),
            "nonce": nonce.hex(),
            "kc": key_commitment(content_key).hex(),
            "report_msgpack": codec.pack(report.to_wire()).hex(),
            "inner": inner_raw.hex(),
            "inner_signature": inner_sig.hex(),
            "plaintext": plaintext.hex(),
            "stanzas": stanzas,
            "header_fields": hexify(codec.unpack(env.header.raw, what="vector", max_bytes=1 << 20)),
            "header": env.header.raw.hex(),
            "ciphertext": env.ciphertext.hex(),
            "ciphertext_digest": digest(env.ciphertext).hex(),
            "outer_signature": env.signature.hex(),
            "envelope": env.raw.hex(),
            "digest": env.digest.hex(),
        }

    notices = [
        notice(
            "notice1",
            report_1(),
            sender="us.caisi",
            to=["cn.cac"],
            severity="high",
            status="exercise",
            created_at=TIMES["notice1_created_at"],
            notice_id=NOTICE1_ID,
            in_reply_to=None,
        ),
        notice(
            "notice2",
            report_2(),
            sender="us.caisi",
            to=["cn.mss", "cn.cac"],
            severity="critical",
            status="actual",
            created_at=TIMES["notice2_created_at"],
            notice_id=NOTICE2_ID,
            in_reply_to=None,
        ),
        notice(
            "notice3",
            report_3(),
            sender="cn.cac",
            to=["us.caisi"],
            severity="high",
            status="exercise",
            created_at=TIMES["notice3_created_at"],
            notice_id=NOTICE3_ID,
            in_reply_to=NOTICE1_ID,
        ),
    ]
    n1_digest = bytes.fromhex(notices[0]["digest"])

    # --- confirmations of notice 1 by cn.cac
    receipt = Confirmation.create(
        "receipt",
        notice_id=NOTICE1_ID,
        digest=n1_digest,
        sender=DeskId("us.caisi"),
        me=secrets["cn.cac"],
        at=TIMES["receipt_at"],
    )
    ack_random = CounterRandom("ack")
    ack_message = "Received. Takedown coordinated with two platforms; call at 04:00 UTC."
    ack = Confirmation.create(
        "ack",
        notice_id=NOTICE1_ID,
        digest=n1_digest,
        sender=DeskId("us.caisi"),
        me=secrets["cn.cac"],
        at=TIMES["ack_at"],
        message=ack_message,
        sender_keys=verified["us.caisi"],
        random=ack_random,
    )
    eph = nacl.public.PrivateKey(ack_random.draws[0])
    ack_doc = signed_doc(ack.signed, ack.encode())
    ack_doc["message"] = {
        "text": ack_message,
        "plaintext": codec.pack([NOTICE1_ID, "cn.cac", ack_message]).hex(),
        "ephemeral_sk": bytes(eph).hex(),
        "ephemeral_pk": bytes(eph.public_key).hex(),
        "random": ack_random.describe(),
    }

    # An automatic acknowledgement (a link test's answer by the recipient's client): the
    # same body plus "automatic": true as its last key; no message.
    auto_ack = Confirmation.create(
        "ack",
        notice_id=NOTICE1_ID,
        digest=n1_digest,
        sender=DeskId("us.caisi"),
        me=secrets["cn.cac"],
        at=TIMES["ack_at"],
        automatic=True,
    )
    # A report with the optional question (an exercise's response step): the report map
    # plus "question" as its last key.
    question_report = dataclasses.replace(report_1(),
                                          question="Which platforms did you contact?")

    # --- the relay
    relay_sk = ed25519(f"relay/{RELAY_ID}")
    relay_pk = bytes(relay_sk.verify_key)
    keys_out[f"relay/{RELAY_ID}"] = {
        "public": relay_pk.hex(),
        "key_id": key_id(relay_pk).hex(),
        "fingerprint": fingerprint("relay", RELAY_ID, relay_pk),
    }
    relay_card = RelayCard.create(RELAY_ID, relay_sk, TIMES["relay_card_created_at"])
    accepted = Attestation.create(
        "accepted",
        relay_id=RELAY_ID,
        relay_key=relay_sk,
        notice_id=NOTICE1_ID,
        digest=n1_digest,
        desk=DeskId("us.caisi"),
        at=TIMES["accepted_at"],
    )
    escalated = Attestation.create(
        "escalated",
        relay_id=RELAY_ID,
        relay_key=relay_sk,
        notice_id=NOTICE2_ID,
        digest=bytes.fromhex(notices[1]["digest"]),
        desk=DeskId("cn.mss"),
        at=TIMES["escalated_at"],
        level=1,
    )

    # --- the relay's escalation statements: notice 2's ack deadline towards cn.mss passes
    # (level 1, not yet delivered), then a late acknowledgement resolves it.
    n2_digest = bytes.fromhex(notices[1]["digest"])
    escalation_fields: dict[str, Any] = {
        "notice_id": NOTICE2_ID,
        "digest": n2_digest,
        "sender": "us.caisi",
        "recipient": "cn.mss",
        "severity": "critical",
        "status": "actual",
        "track": "ack",
        "level": 1,
        "missed_levels": 0,
        "deadline": TIMES["notice2_ack_deadline"],
    }
    escalation = EscalationStatement.create(
        "escalated",
        relay_id=RELAY_ID,
        relay_key=relay_sk,
        at=TIMES["escalation_at"],
        delivered=False,
        final=False,
        **escalation_fields,
    )
    resolution = EscalationStatement.create(
        "resolved",
        relay_id=RELAY_ID,
        relay_key=relay_sk,
        at=TIMES["resolved_at"],
        delivered=True,
        final=True,
        **escalation_fields,
    )

    # --- what operators and webhooks receive for that escalation (escalation id 1)
    row = EscalationRow(
        1,
        "escalated",
        NOTICE2_ID,
        "us.caisi",
        "cn.mss",
        "ack",
        "critical",
        "actual",
        1,
        0,
        TIMES["notice2_ack_deadline"],
        TIMES["escalation_at"],
        False,
        False,
        escalation.encode(),
        ("cn.duty",),
        (WEBHOOK,),
    )
    webhook_body = json.dumps(alert_body(row, WEBHOOK, RELAY_ID, ORIGIN), sort_keys=True)
    webhook_ts = str(TIMES["webhook_timestamp_s"])
    webhook = {
        "name": WEBHOOK,
        "secret": WEBHOOK_SECRET.hex(),
        "body": webhook_body,
        "headers": {
            "Content-Type": "application/json",
            "Idempotency-Key": f"{RELAY_ID}:{row.id}:{WEBHOOK}",
            "X-Hotline-Timestamp": webhook_ts,
            "X-Hotline-Signature": webhook_signature(
                WEBHOOK_SECRET, webhook_ts, webhook_body.encode()
            ),
        },
    }
    escalation_log_line = json.dumps(log_record(row, RELAY_ID), sort_keys=True)

    # --- cn.mss could not open notice 2 (say the key wrapped for it did not match the
    # commitment): its signed rejection, the relay's attestation, and the same escalation
    # as the webhook sees it once the rejection is recorded.
    rejection = Rejection.create(
        notice_id=NOTICE2_ID,
        digest=n2_digest,
        sender=DeskId("us.caisi"),
        me=secrets["cn.mss"],
        at=TIMES["rejection_at"],
        reason="key_commitment_mismatch",
    )
    rejected = Attestation.create(
        "rejected",
        relay_id=RELAY_ID,
        relay_key=relay_sk,
        notice_id=NOTICE2_ID,
        digest=n2_digest,
        desk=DeskId("cn.mss"),
        at=TIMES["rejected_at"],
    )
    rejected_row = dataclasses.replace(row, rejected=rejection.reason)
    rejected_body = json.dumps(alert_body(rejected_row, WEBHOOK, RELAY_ID, ORIGIN),
                               sort_keys=True)
    webhook_rejected = {
        "body": rejected_body,
        "escalation_log_line": json.dumps(log_record(rejected_row, RELAY_ID), sort_keys=True),
        "X-Hotline-Signature": webhook_signature(
            WEBHOOK_SECRET, webhook_ts, rejected_body.encode()
        ),
    }

    # --- authentication: a desk and an operator answer a challenge
    desk_random = CounterRandom("desk-auth")
    desk_nonce = desk_random(32)
    desk_token = desk_random(32)
    caisi = secrets["us.caisi"]
    desk_packed = codec.pack([ORIGIN, caisi.desk, caisi.ik_kid, desk_nonce, TIMES["login_ts"]])
    desk_message = auth_message(ORIGIN, caisi.desk, caisi.ik_kid, desk_nonce, TIMES["login_ts"])
    assert desk_message == Domain.AUTH + desk_packed
    desk_sig = caisi.identity.sign(desk_message).signature
    desk_auth = {
        "origin": ORIGIN,
        "desk": caisi.desk,
        "ik_kid": caisi.ik_kid.hex(),
        "ts": TIMES["login_ts"],
        "random": desk_random.describe(),
        "challenge_request": ChallengeRequest(caisi.desk).encode().hex(),
        "challenge": Challenge(RELAY_ID, ORIGIN, desk_nonce, TIMES["challenge_expires_at"])
        .encode()
        .hex(),
        "message": desk_packed.hex(),
        "signed_bytes": desk_message.hex(),
        "signature": desk_sig.hex(),
        "session_request": SessionRequest(
            caisi.desk, cards["us.caisi"].encode(), desk_nonce, TIMES["login_ts"], desk_sig
        )
        .encode()
        .hex(),
        "session": Session(desk_token, TIMES["session_expires_at"], relay_card.encode())
        .encode()
        .hex(),
    }
    operator_sk = ed25519(f"operator/{OPERATOR}")
    operator_pk = bytes(operator_sk.verify_key)
    keys_out[f"operator/{OPERATOR}"] = {
        "public": operator_pk.hex(),
        "key_id": key_id(operator_pk).hex(),
        "fingerprint": fingerprint("operator", OPERATOR, operator_pk),
    }
    op_random = CounterRandom("operator-auth")
    op_nonce = op_random(32)
    op_packed = codec.pack([ORIGIN, OPERATOR, op_nonce, TIMES["login_ts"]])
    op_message = operator_auth_message(ORIGIN, OPERATOR, op_nonce, TIMES["login_ts"])
    assert op_message == Domain.OPERATOR_AUTH + op_packed
    op_sig = operator_sk.sign(op_message).signature
    operator_auth = {
        "origin": ORIGIN,
        "operator": OPERATOR,
        "ts": TIMES["login_ts"],
        "random": op_random.describe(),
        "challenge_request": OperatorChallengeRequest(OPERATOR).encode().hex(),
        "challenge": Challenge(RELAY_ID, ORIGIN, op_nonce, TIMES["challenge_expires_at"])
        .encode()
        .hex(),
        "message": op_packed.hex(),
        "signed_bytes": op_message.hex(),
        "signature": op_sig.hex(),
        "session_request": OperatorSessionRequest(OPERATOR, op_nonce, TIMES["login_ts"], op_sig)
        .encode()
        .hex(),
    }

    # --- the operator's web login link (hotline ops web)
    web_random = CounterRandom("operator-web-login")
    web_nonce = web_random(weblogin.LOGIN_NONCE_BYTES)
    web_token = weblogin.mint(operator_sk, operator=OPERATOR, origin=ORIGIN,
                              expires_at=TIMES["challenge_expires_at"], nonce=web_nonce)
    web_doc = weblogin.parse(web_token)
    operator_web = {
        "origin": ORIGIN,
        "operator": OPERATOR,
        "expires_at": TIMES["challenge_expires_at"],
        "random": web_random.describe(),
        "body": web_doc.signed.body.hex(),
        "signed_bytes": (Domain.OPERATOR_WEB_LOGIN + web_doc.signed.body).hex(),
        "signature": web_doc.signed.signature.hex(),
        "token": web_token,
        "link": weblogin.link(ORIGIN, web_token),
    }

    # --- a key file (fast test-only Argon2id limits) holding us.caisi's secrets
    kf_random = CounterRandom("keyfile")
    payload = keyfile.encode_desk_secrets(secrets["us.caisi"])
    kf = keyfile.seal_key_file(
        "desk", payload, PASSPHRASE, limits=keyfile.TEST_ONLY_MINIMUM, random=kf_random
    )
    kf_fields = codec.unpack(kf, what="vector", max_bytes=1 << 20)
    kf_aad = codec.pack(
        [
            kf_fields[k]
            for k in ("v", "type", "kind", "kdf", "opslimit", "memlimit", "salt", "nonce")
        ]
    )

    hybrid = build_hybrid(authorities, secrets, verified)
    return {
        "format": FORMAT,
        "description": "Hotline wire-format test vectors; see 'Test vectors' in "
        "keys/PROTOCOL.md. All byte values are lower-case hex.",
        "inputs": {
            "times": TIMES,
            "seed_derivation": "BLAKE2b-256(label, personal='hotline-vectors')",
            "ed25519_seeds": seeds,
            "x25519_private_keys": x25519,
            "random_derivation": "block(i) = BLAKE2b-512(key=seed, msg=uint64_be(i)); "
            "random(n) takes the next n bytes of block(0)||block(1)||...",
            "passphrase": PASSPHRASE.decode(),
        },
        "domains": {name: getattr(Domain, name).hex() for name in DOMAIN_NAMES},
        "keys": keys_out,
        "authority_cards": authority_cards,
        "roots": {
            "v1": root_doc(root1),
            "v2": root_doc(root2),
            "v3_rotation": root_doc(root3),
            "v1_armored": armor("root", root1.encode()),
        },
        "desks": desks,
        "revocation": signed_doc(revocation.signed, revocation.encode()),
        "revocation_frames": {
            "list": RevocationList((revocation.encode(),)).encode().hex(),
            "stream_message": revocation_message(revocation.encode()).hex(),
        },
        "notices": notices,
        "receipt": signed_doc(receipt.signed, receipt.encode()),
        "ack": ack_doc,
        "ack_automatic": signed_doc(auto_ack.signed, auto_ack.encode()),
        "report_with_question": {
            "report": report_json(question_report),
            "msgpack": codec.pack(question_report.to_wire()).hex(),
        },
        "rejection": signed_doc(rejection.signed, rejection.encode()),
        "relay_card": signed_doc(relay_card.signed, relay_card.encode()),
        "attestations": {
            "accepted": signed_doc(accepted.signed, accepted.encode()),
            "escalated": signed_doc(escalated.signed, escalated.encode()),
            "rejected": signed_doc(rejected.signed, rejected.encode()),
        },
        "escalations": {
            "escalated": signed_doc(escalation.signed, escalation.encode()),
            "resolved": signed_doc(resolution.signed, resolution.encode()),
        },
        "escalation_log_line": escalation_log_line,
        "webhook": webhook,
        "webhook_rejected": webhook_rejected,
        "auth": {"desk": desk_auth, "operator": operator_auth, "operator_web": operator_web},
        "key_file": {
            "kind": "desk",
            "payload": payload.hex(),
            "fields": hexify(kf_fields),
            "aad": kf_aad.hex(),
            "wrapping_key": argon2id.kdf(
                32,
                PASSPHRASE,
                kf_fields["salt"],
                opslimit=kf_fields["opslimit"],
                memlimit=kf_fields["memlimit"],
            ).hex(),
            "encoded": kf.hex(),
            "random": kf_random.describe(),
        },
        "hybrid": hybrid,
    }


def _pinned_kem_cts() -> dict[str, bytes]:
    """The ML-KEM ciphertexts of the hybrid vector, by recipient, as vectors.json has them.

    OpenSSL's ML-KEM encapsulation takes no outside randomness, so a fresh run would give
    new ciphertexts: the generator keeps the ones on file (they are valid encapsulations to
    the vector keys, made once) and makes new ones only where the file has none."""
    try:
        old = json.loads(VECTORS_PATH.read_text())["hybrid"]["notice"]["stanzas"]
    except (OSError, KeyError, ValueError):
        return {}
    return {st["to"]: bytes.fromhex(st["kem_ct"]) for st in old if "kem_ct" in st}


def build_hybrid(authorities: dict[Country, nacl.signing.SigningKey],
                 secrets: dict[str, DeskSecrets], verified: dict[str, Any]) -> dict[str, Any]:
    """The hybrid (X-Wing) vectors: a hybrid desk cn.pq, its key certificate and card, a
    root that requires hybrid keys, and a version-2 notice from us.caisi to cn.pq (hybrid
    stanza) and cn.cac (classical stanza)."""
    desk = DeskId(HYBRID_DESK)
    ik = nacl.signing.SigningKey(seed(f"desk/{HYBRID_DESK}/ik"))
    xw_seed = seed(f"desk/{HYBRID_DESK}/xwing")
    sk = xwing.XWingPrivateKey(xw_seed)
    request = CertRequest.create(desk, ik, TIMES["cert_request_created_at"])
    cert = DeskCertificate.issue(request, Country("cn"), authorities[Country("cn")],
                                 TIMES["desk_cert_not_before"], TIMES["desk_cert_not_after"])
    ek_cert = EkCertificate.issue(desk, ik, sk.public_key, TIMES["ek_not_before"],
                                  TIMES["ek_not_after"])
    card = DeskCard(cert, (ek_cert,))
    members = {c: bytes(k.verify_key) for c, k in authorities.items()}
    root = FederationRoot.create(1, members, TIMES["root_v1_issued_at"],
                                 TIMES["root_v1_expires_at"],
                                 hybrid_required_from=TIMES["hybrid_required_from"])
    for c in sorted(authorities):
        root = root.signed_by(c, authorities[c])
    trust = TrustStore(root)
    recipients = [trust.verify_card(card, NOW), verified["cn.cac"]]

    pinned = _pinned_kem_cts()
    used: dict[str, tuple[bytes, bytes]] = {}
    real = xwing.encapsulate

    def encapsulate(pk: bytes, *, random: Any) -> tuple[bytes, bytes]:
        assert pk == sk.public_key
        # Fresh (first run only) from the system generator, so the vector stream is unchanged.
        ct = pinned.get(HYBRID_DESK) or real(pk, random=os.urandom)[1]
        used[HYBRID_DESK] = (sk.decapsulate(ct), ct)
        return used[HYBRID_DESK]

    rnd = CounterRandom("notice_hybrid")
    xwing.encapsulate = encapsulate  # type: ignore[assignment]
    try:
        env = seal(report_1(), sender=secrets["us.caisi"], recipients=recipients,
                   severity="critical", now=TIMES["notice1_created_at"], status="exercise",
                   notice_id=HYBRID_NOTICE_ID, random=rnd)
    finally:
        xwing.encapsulate = real  # type: ignore[assignment]
    content_key, nonce = rnd.draws[0], rnd.draws[1]
    stanzas = []
    for st in env.header.stanzas:
        if st.kem == "x-wing":
            ss, ct = used[st.to]
            ctx = stanza_context(env.notice_id, st.ek_kid, st.to)
            stanzas.append({"to": st.to, "kem": st.kem, "ek_kid": st.ek_kid.hex(),
                            "kem_ct": ct.hex(), "shared_secret": ss.hex(),
                            "context": ctx.hex(), "wrap_key": xwing.wrap_key(ss, ctx).hex(),
                            "wrapped": st.wrapped.hex()})
        else:
            stanzas.append({"to": st.to, "kem": st.kem, "ek_kid": st.ek_kid.hex(),
                            "ephemeral_sk": rnd.draws[2].hex(), "wrapped": st.wrapped.hex()})
    return {
        "desk": HYBRID_DESK,
        "ik_seed": seed(f"desk/{HYBRID_DESK}/ik").hex(),
        "xwing_seed": xw_seed.hex(),
        "xwing_public_key": sk.public_key.hex(),
        "ek_kid": key_id(sk.public_key).hex(),
        "ek_cert": {"body": ek_cert.signed.body.hex(),
                    "body_fields": hexify(codec.unpack(ek_cert.signed.body, what="v",
                                                       max_bytes=1 << 16)),
                    "signatures": [ek_cert.signed.signature.hex()],
                    "encoded": ek_cert.encode().hex()},
        "desk_cert": cert.encode().hex(),
        "desk_card": card.encode().hex(),
        "root": {"body": root.body.hex(), "encoded": root.encode().hex(),
                 "hybrid_required_from": TIMES["hybrid_required_from"]},
        "notice": {
            "sender": "us.caisi",
            "random": rnd.describe(),
            "content_key": content_key.hex(),
            "nonce": nonce.hex(),
            "stanzas": stanzas,
            "header_fields": hexify(codec.unpack(env.header.raw, what="v", max_bytes=1 << 20)),
            "header": env.header.raw.hex(),
            "envelope": env.raw.hex(),
            "digest": env.digest.hex(),
        },
    }


def render(vectors: dict[str, Any]) -> str:
    """The exact text of vectors.json."""
    return json.dumps(vectors, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.buffer.write(render(build_vectors()).encode("utf-8"))


if __name__ == "__main__":
    main()
