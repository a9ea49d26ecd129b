"""Hotline's wire-format test vectors (tests/vectors/vectors.json, keys/PROTOCOL.md).

(a) the generator reproduces the file byte for byte, so any wire change is caught;
(b) every vector decodes and verifies through the public API;
(c) the claims of PROTOCOL.md are recomputed with raw libsodium calls (nacl.bindings) and a
    plain msgpack library, never through keys.primitives;
(d) fingerprints are recomputed by hand.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import nacl.bindings as sodium
import nacl.exceptions
import nacl.public
import nacl.signing
import pytest

from keys import (
    AuthorityCard,
    BadSignature,
    CertRequest,
    Confirmation,
    DeskCard,
    DeskCertificate,
    DeskId,
    DeskSecrets,
    EkCertificate,
    EncryptionKeyPair,
    Envelope,
    FederationRoot,
    IncidentReport,
    KeyCertInvalid,
    MalformedInput,
    RelayCard,
    Revocation,
    RootInvalid,
    StaleOrFuture,
    TrustStore,
    UnsupportedVersion,
    UntrustedKey,
    VerifiedDesk,
    check_submission,
    fingerprint,
    open_envelope,
)
from keys.armor import dearmor
from keys.frames import (
    Challenge,
    ChallengeRequest,
    OperatorChallengeRequest,
    OperatorSessionRequest,
    Session,
    SessionRequest,
    auth_message,
    operator_auth_message,
)
from keys.ids import Country
from keys.keyfile import decode_desk_secrets, open_key_file
from keys.primitives import Domain, check_x25519_public_key
from keys.receipts import MAX_STATEMENT_BYTES, Attestation, EscalationStatement, Rejection
from keys.report import from_wire as report_from_wire
from keys.trust import ROOT_CLOCK_SKEW_MS
from relay.errors import STATUS_BY_CODE
from tests.vectors.make_vectors import DOMAIN_NAMES, build_vectors, render

HERE = Path(__file__).parent
VECTORS_PATH = HERE / "vectors.json"
PROTOCOL_PATH = HERE.parents[1] / "keys" / "PROTOCOL.md"
V: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
NOW: int = V["inputs"]["times"]["now"]
TIMES: dict[str, int] = V["inputs"]["times"]
DESKS = ("us.caisi", "cn.cac", "cn.mss")
NOTICES = {n["name"]: n for n in V["notices"]}

#: The exact domain-separation prefixes PROTOCOL.md lists.
EXPECTED_DOMAINS = {
    "ROOT": b"hotline/v1/root\x00",
    "AUTHORITY_CARD": b"hotline/v1/authority-card\x00",
    "CERT_REQUEST": b"hotline/v1/cert-request\x00",
    "DESK_CERT": b"hotline/v1/desk-cert\x00",
    "EK_CERT": b"hotline/v1/ek-cert\x00",
    "REVOCATION": b"hotline/v1/revocation\x00",
    "INNER": b"hotline/v1/inner\x00",
    "ENVELOPE": b"hotline/v1/envelope\x00",
    "RECEIPT": b"hotline/v1/receipt\x00",
    "ACK": b"hotline/v1/ack\x00",
    "REJECTION": b"hotline/v1/rejection\x00",
    "ATTESTATION": b"hotline/v1/attestation\x00",
    "ESCALATION": b"hotline/v1/escalation\x00",
    "RELAY_CARD": b"hotline/v1/relay-card\x00",
    "AUTH": b"hotline/v1/auth\x00",
    "OPERATOR_AUTH": b"hotline/v1/operator-auth\x00",
    "OPERATOR_WEB_LOGIN": b"hotline/v1/operator-web-login\x00",
}


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def pub(label: str) -> bytes:
    return h(V["keys"][label]["public"])


def secrets_of(desk: str) -> DeskSecrets:
    """Rebuild a desk's private keys from the vector inputs alone."""
    ik = nacl.signing.SigningKey(h(V["inputs"]["ed25519_seeds"][f"desk/{desk}/ik"]))
    ek = nacl.public.PrivateKey(h(V["inputs"]["x25519_private_keys"][f"desk/{desk}/ek"]))
    return DeskSecrets(
        DeskId(desk),
        ik,
        (
            EncryptionKeyPair(
                ek, TIMES["ek_not_before"], TIMES["ek_not_after"], TIMES["ek_keep_until"]
            ),
        ),
    )


def trust_store() -> TrustStore:
    root = FederationRoot.decode(h(V["roots"]["v1"]["encoded"]))
    root.check_initial(NOW)
    return TrustStore(root)


def verified(desk: str, now: int = NOW) -> VerifiedDesk:
    return trust_store().verify_card(
        DeskCard.decode(h(V["desks"][desk]["desk_card"]["encoded"])), now
    )


def report_from_json(value: dict[str, Any]) -> IncidentReport:
    wire = dict(value)
    wire["references"] = [
        {"notice_id": h(r["notice_id"]), "relation": r["relation"]} for r in value["references"]
    ]
    wire["attachments"] = [
        {"name": a["name"], "media_type": a["media_type"], "data": h(a["data"])}
        for a in value["attachments"]
    ]
    return report_from_wire(wire)


# ----------------------------------------------------------- raw libsodium, no keys.*


def pad16(personal: bytes) -> bytes:
    assert len(personal) <= 16
    return personal + b"\x00" * (16 - len(personal))


def raw_blake2b(data: bytes, size: int, *, key: bytes = b"", personal: bytes = b"") -> bytes:
    """crypto_generichash_blake2b_salt_personal with a zero salt and a zero-padded personal."""
    out: bytes = sodium.crypto_generichash_blake2b_salt_personal(
        data, digest_size=size, key=key, salt=b"\x00" * 16, person=pad16(personal)
    )
    # hashlib's BLAKE2b pads salt and personal with zeros the same way.
    assert out == hashlib.blake2b(data, digest_size=size, key=key, person=personal).digest()
    return out


def raw_verify(public_key: bytes, domain: bytes, message: bytes, signature: bytes) -> None:
    """crypto_sign_verify_detached(sig, domain || message, pk), via its combined form
    crypto_sign_open(sig || domain || message, pk) (PyNaCl exposes only the latter)."""
    assert len(signature) == 64
    assert sodium.crypto_sign_open(signature + domain + message, public_key) == domain + message


def raw_unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=True)


# ============================================================== (a) reproduction


def test_generator_reproduces_vectors_json_byte_for_byte() -> None:
    assert render(build_vectors()).encode("utf-8") == VECTORS_PATH.read_bytes(), (
        "the wire format changed: if that is intended, regenerate with "
        "`python tests/vectors/make_vectors.py > tests/vectors/vectors.json` and update "
        "keys/PROTOCOL.md"
    )


def test_every_domain_is_in_the_vectors_and_in_protocol_md() -> None:
    declared = {n: v for n, v in vars(Domain).items() if n.isupper()}
    assert declared == EXPECTED_DOMAINS
    assert set(DOMAIN_NAMES) == set(declared)
    text = PROTOCOL_PATH.read_text(encoding="utf-8")
    for name, value in declared.items():
        assert h(V["domains"][name]) == value
        assert value[:-1].decode() in text, f"{value!r} is not documented in PROTOCOL.md"


# ============================================================== (b) public API


@pytest.mark.parametrize("country", ["cn", "us"])
def test_authority_card(country: str) -> None:
    card = AuthorityCard.decode(h(V["authority_cards"][country]["encoded"]))
    assert card.country == country
    assert card.key == pub(f"authority/{country}")
    assert card.created_at == TIMES["authority_card_created_at"]


def test_federation_root_v1_is_trusted_initially() -> None:
    root = FederationRoot.decode(h(V["roots"]["v1"]["encoded"]))
    root.check_initial(NOW)
    assert root.version == 1
    assert root.members == {"cn": pub("authority/cn"), "us": pub("authority/us")}
    assert root.encode() == h(V["roots"]["v1"]["encoded"])
    assert dearmor("root", V["roots"]["v1_armored"].encode()) == h(V["roots"]["v1"]["encoded"])
    with pytest.raises(RootInvalid):
        root.check_initial(TIMES["root_v1_expires_at"])


def test_federation_root_update_and_no_rollback() -> None:
    v1 = FederationRoot.decode(h(V["roots"]["v1"]["encoded"]))
    v2 = FederationRoot.decode(h(V["roots"]["v2"]["encoded"]))
    v2.check_update(v1, NOW)
    with pytest.raises(RootInvalid, match="roll back"):
        v1.check_update(v2, NOW)
    # One member's signature missing: refused.
    only_us = FederationRoot.decode(
        msgpack.packb(
            [h(V["roots"]["v2"]["body"]), [["us", h(V["roots"]["v2"]["signatures"][1][1])]]],
            use_bin_type=True,
        )
    )
    with pytest.raises(RootInvalid, match="cn"):
        only_us.check_update(v1, NOW)


@pytest.mark.parametrize("desk", DESKS)
def test_desk_card_verifies(desk: str) -> None:
    request = CertRequest.decode(h(V["desks"][desk]["cert_request"]["encoded"]))
    assert request.identity_key == pub(f"desk/{desk}/ik")
    card = DeskCard.decode(h(V["desks"][desk]["desk_card"]["encoded"]))
    assert card.cert.encode() == h(V["desks"][desk]["desk_cert"]["encoded"])
    assert card.eks[0].encode() == h(V["desks"][desk]["ek_cert"]["encoded"])
    assert dearmor("desk-card", V["desks"][desk]["desk_card"]["armored"].encode()) == (
        h(V["desks"][desk]["desk_card"]["encoded"])
    )
    v = trust_store().verify_card(card, NOW)
    assert bytes(v.identity_key) == pub(f"desk/{desk}/ik")
    assert v.ik_kid == h(V["keys"][f"desk/{desk}/ik"]["key_id"])
    assert v.current_encryption_key == (
        h(V["keys"][f"desk/{desk}/ek"]["key_id"]),
        pub(f"desk/{desk}/ek"),
    )


def test_revocation_refuses_the_revoked_desk_only() -> None:
    trust = trust_store()
    old = DeskCertificate.decode(h(V["desks"]["us.old"]["desk_cert"]["encoded"]))
    trust.verify_cert(old, NOW)
    rev = Revocation.decode(h(V["revocation"]["encoded"]))
    assert rev.ik_kid == h(V["keys"]["desk/us.old/ik"]["key_id"])
    trust.add_revocation(rev)
    with pytest.raises(UntrustedKey, match="revoked"):
        trust.verify_cert(old, NOW)
    trust.verify_card(DeskCard.decode(h(V["desks"]["us.caisi"]["desk_card"]["encoded"])), NOW)


@pytest.mark.parametrize("name", sorted(NOTICES))
def test_notice_passes_the_relay_and_opens_for_each_recipient(name: str) -> None:
    n = NOTICES[name]
    inp = n["inputs"]
    env = Envelope.decode(h(n["envelope"]))
    assert env.header.raw == h(n["header"])
    assert env.digest == h(n["digest"])
    sender = verified(inp["sender"])
    check_submission(env, sender=sender, now=inp["created_at"] + 1_000)
    expected = report_from_json(inp["report"])
    for desk in inp["recipients"]:
        notice = open_envelope(env, me=secrets_of(desk), sender=sender)
        assert notice.notice_id == h(inp["notice_id"])
        assert notice.sender == inp["sender"]
        assert list(notice.recipients) == inp["recipients"]
        assert (notice.severity, notice.status) == (inp["severity"], inp["status"])
        assert notice.in_reply_to == (None if inp["in_reply_to"] is None else h(inp["in_reply_to"]))
        assert notice.report == expected
        assert notice.digest == h(n["digest"])


def test_freshness_window_edges() -> None:
    n = NOTICES["notice1"]
    env = Envelope.decode(h(n["envelope"]))
    sender = verified("us.caisi")
    created = n["inputs"]["created_at"]
    check_submission(env, sender=sender, now=created - 5 * 60_000)  # 5 min ahead: accepted
    check_submission(env, sender=sender, now=created + 86_400_000)  # 24 h old: accepted
    with pytest.raises(StaleOrFuture):
        check_submission(env, sender=sender, now=created - 5 * 60_000 - 1)
    with pytest.raises(StaleOrFuture):
        check_submission(env, sender=sender, now=created + 86_400_000 + 1)


def test_flipped_ciphertext_bit_is_refused_by_the_relay() -> None:
    n = NOTICES["notice1"]
    ct = bytearray(h(n["ciphertext"]))
    ct[0] ^= 1
    raw = msgpack.packb([h(n["header"]), bytes(ct), h(n["outer_signature"])], use_bin_type=True)
    with pytest.raises(BadSignature):
        check_submission(Envelope.decode(raw), sender=verified("us.caisi"), now=NOW)


def test_receipt_and_ack() -> None:
    n1 = NOTICES["notice1"]
    nid, dig = h(n1["inputs"]["notice_id"]), h(n1["digest"])
    cac = verified("cn.cac")
    receipt = Confirmation.decode(h(V["receipt"]["encoded"]))
    assert (receipt.kind, receipt.at, receipt.message) == ("receipt", TIMES["receipt_at"], None)
    receipt.verify(cac, notice_id=nid, digest=dig, sender=DeskId("us.caisi"),
        recipient=DeskId("cn.cac"))
    ack = Confirmation.decode(h(V["ack"]["encoded"]))
    assert ack.kind == "ack"
    ack.verify(cac, notice_id=nid, digest=dig, sender=DeskId("us.caisi"),
        recipient=DeskId("cn.cac"))
    assert ack.open_message(secrets_of("us.caisi")) == V["ack"]["message"]["text"]
    with pytest.raises(BadSignature):
        ack.verify(
            cac, notice_id=nid, digest=h(NOTICES["notice2"]["digest"]), sender=DeskId("us.caisi"),
            recipient=DeskId("cn.cac"),
        )


def test_rejection_verifies_and_is_built_as_documented() -> None:
    """cn.mss's rejection of notice 2: through the API, then field by field."""
    n2 = NOTICES["notice2"]
    nid, dig = h(n2["inputs"]["notice_id"]), h(n2["digest"])
    r = Rejection.decode(h(V["rejection"]["encoded"]))
    r.verify(verified("cn.mss"), notice_id=nid, digest=dig, sender=DeskId("us.caisi"),
             recipient=DeskId("cn.mss"))
    with pytest.raises(BadSignature):  # not cn.cac's, whoever's key is offered
        r.verify(verified("cn.mss"), notice_id=nid, digest=dig, sender=DeskId("us.caisi"),
                 recipient=DeskId("cn.cac"))
    body = raw_unpack(h(V["rejection"]["body"]))
    assert list(body) == ["v", "type", "notice_id", "digest", "to", "from", "from_kid", "at",
                          "reason"]
    assert body == {"v": 1, "type": "rejection", "notice_id": nid, "digest": dig,
                    "to": "us.caisi", "from": "cn.mss",
                    "from_kid": raw_blake2b(pub("desk/cn.mss/ik"), 16,
                                            personal=b"hotline-kid-v1"),
                    "at": TIMES["rejection_at"], "reason": "key_commitment_mismatch"}
    att = raw_unpack(h(V["attestations"]["rejected"]["body"]))
    assert (att["event"], att["desk"], att["notice_id"], att["digest"], att["level"]) == (
        "rejected", "cn.mss", nid, dig, 0)


def test_webhook_of_an_escalation_whose_recipient_rejected_the_notice() -> None:
    """The summary and annotation name the rejection; the HMAC covers them."""
    w, base = V["webhook_rejected"], V["webhook"]
    body = w["body"].encode()
    mac = hmac.new(h(base["secret"]),
                   base["headers"]["X-Hotline-Timestamp"].encode() + b"." + body,
                   hashlib.sha256).hexdigest()
    assert w["X-Hotline-Signature"] == "sha256=" + mac
    [one] = json.loads(body)["alerts"]
    [plain] = json.loads(base["body"])["alerts"]
    assert one["annotations"] == plain["annotations"] | {
        "summary": plain["annotations"]["summary"]
        + "; rejected by recipient: key_commitment_mismatch",
        "rejected_by_recipient": "key_commitment_mismatch"}
    assert plain["annotations"]["summary"] == (
        "critical notice from us.caisi to cn.mss not acknowledged: level 1, 0 s past its "
        "deadline")
    line = json.loads(w["escalation_log_line"])
    assert line == json.loads(V["escalation_log_line"]) | {
        "rejected_by_recipient": "key_commitment_mismatch"}


def test_relay_card_and_attestations() -> None:
    card = RelayCard.decode(h(V["relay_card"]["encoded"]))
    assert card.relay_id == "hotline-relay-1"
    assert card.key_id == h(V["keys"]["relay/hotline-relay-1"]["key_id"])
    accepted = Attestation.decode(h(V["attestations"]["accepted"]["encoded"]))
    assert (accepted.event, accepted.desk, accepted.level) == ("accepted", "us.caisi", 0)
    accepted.verify(
        card,
        notice_id=h(NOTICES["notice1"]["inputs"]["notice_id"]),
        digest=h(NOTICES["notice1"]["digest"]),
    )
    escalated = Attestation.decode(h(V["attestations"]["escalated"]["encoded"]))
    assert (escalated.event, escalated.desk, escalated.level) == ("escalated", "cn.mss", 1)
    escalated.verify(
        card,
        notice_id=h(NOTICES["notice2"]["inputs"]["notice_id"]),
        digest=h(NOTICES["notice2"]["digest"]),
    )


def test_key_file_opens_with_the_passphrase() -> None:
    kf = V["key_file"]
    payload = open_key_file(h(kf["encoded"]), V["inputs"]["passphrase"].encode(), kind="desk")
    assert payload == h(kf["payload"])
    desk = decode_desk_secrets(payload)
    assert bytes(desk.identity) == h(V["inputs"]["ed25519_seeds"]["desk/us.caisi/ik"])
    assert bytes(desk.encryption_keys[0].private_key) == (
        h(V["inputs"]["x25519_private_keys"]["desk/us.caisi/ek"])
    )


# ----------------------------------------------------- (b) changes since version 1 of the page


def sk(label: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(h(V["inputs"]["ed25519_seeds"][label]))


def root_with(body: bytes, entries: list[tuple[str, bytes]]) -> FederationRoot:
    return FederationRoot.decode(
        msgpack.packb([body, [[c, s] for c, s in entries]], use_bin_type=True)
    )


def refusal(decode: Any, data: bytes) -> str:
    with pytest.raises((MalformedInput, UnsupportedVersion)) as exc:
        decode(data)
    code: str = exc.value.code
    return code


def test_decoder_refuses_non_string_keys_extensions_and_reads_v_first() -> None:
    card = raw_unpack(h(V["desks"]["us.caisi"]["desk_card"]["encoded"]))

    def pack(value: Any) -> bytes:
        out: bytes = msgpack.packb(value, use_bin_type=True)
        return out

    assert refusal(DeskCard.decode, pack({**card, b"bin-key": 1})) == "bad_type"
    assert refusal(DeskCard.decode, pack({**card, 7: 1})) == "bad_type"
    assert refusal(DeskCard.decode, pack([{b"nested": 1}])) == "bad_type"
    assert refusal(DeskCard.decode, pack({**card, "x": msgpack.ExtType(5, b"x")})) == (
        "type_not_allowed"
    )
    assert refusal(DeskCard.decode, pack({**card, "x": msgpack.ExtType(5, b"x" * 300)})) == (
        "type_not_allowed"
    )
    # The Timestamp extension (type -1) is refused too, wherever it is.
    assert refusal(DeskCard.decode, pack({**card, "v": msgpack.Timestamp(1, 0)})) == (
        "type_not_allowed"
    )
    assert refusal(DeskCard.decode, pack([[msgpack.Timestamp(1, 0)]])) == "type_not_allowed"
    # The version decides the schema: a v2 document with new fields is unsupported_version.
    assert refusal(DeskCard.decode, pack({**card, "v": 2, "new": 1})) == "unsupported_version"
    assert refusal(DeskCard.decode, pack({**card, "v": "1", "new": 1})) == "bad_type"
    assert refusal(DeskCard.decode, pack({**card, "new": 1})) == "unknown_field"
    no_v = {k: v for k, v in card.items() if k != "v"}
    assert refusal(DeskCard.decode, pack({**no_v, "new": 1})) == "unknown_field"
    assert refusal(DeskCard.decode, pack(no_v)) == "missing_field"
    # Inside a signed document the schema (and so the version) is read before the signature.
    a = V["authority_cards"]["us"]
    newer = pack({**raw_unpack(h(a["body"])), "v": 2, "new": 1})
    assert refusal(AuthorityCard.decode, pack([newer, h(a["signature"])])) == (
        "unsupported_version"
    )


def test_envelope_framing_must_be_canonical() -> None:
    n = NOTICES["notice1"]
    header, ciphertext, sig = h(n["header"]), h(n["ciphertext"]), h(n["outer_signature"])

    def pack(value: Any) -> bytes:
        out: bytes = msgpack.packb(value, use_bin_type=True)
        return out

    def bin32(value: bytes) -> bytes:
        return b"\xc6" + len(value).to_bytes(4, "big") + value

    reframed = [
        b"\xdc\x00\x03" + pack(header) + pack(ciphertext) + pack(sig),  # array16
        b"\x93" + bin32(header) + pack(ciphertext) + pack(sig),
        b"\x93" + pack(header) + bin32(ciphertext) + pack(sig),
        b"\x93" + pack(header) + pack(ciphertext) + bin32(sig),
    ]
    for raw in reframed:
        assert raw_unpack(raw) == [header, ciphertext, sig]  # same values, another digest
        assert hashlib.blake2b(raw, digest_size=32).digest() != h(n["digest"])
        assert refusal(Envelope.decode, raw) == "malformed"
    assert Envelope.decode(h(n["envelope"])).digest == h(n["digest"])


def test_federation_root_key_rotation_needs_the_old_and_the_new_signature() -> None:
    doc = V["roots"]["v3_rotation"]
    v2 = FederationRoot.decode(h(V["roots"]["v2"]["encoded"]))
    v3 = FederationRoot.decode(h(doc["encoded"]))
    assert v3.version == 3
    assert v3.members == {"cn": pub("authority/cn"), "us": pub("authority/us/next")}
    assert [c for c, _ in doc["signatures"]] == ["cn", "us", "us"]
    assert v3.encode() == h(doc["encoded"])
    v3.check_update(v2, NOW)
    v3.check_initial(NOW)
    body = h(doc["body"])
    cn, us_old, us_new = ((c, h(s)) for c, s in doc["signatures"])
    # Readers accept the entries in any order.
    root_with(body, [us_new, cn, us_old]).check_update(v2, NOW)
    # Only the new key: a valid root on its own, but v2 requires the old us key.
    only_new = root_with(body, [cn, us_new])
    only_new.check_initial(NOW)
    with pytest.raises(RootInvalid, match="us"):
        only_new.check_update(v2, NOW)
    # Only the old key: the new member key has not signed.
    only_old = root_with(body, [cn, us_old])
    with pytest.raises(RootInvalid, match="us"):
        only_old.check_update(v2, NOW)
    with pytest.raises(RootInvalid, match="us"):
        only_old.check_initial(NOW)
    # After the update the old us key certifies nobody: us desks need new certificates.
    trust = trust_store()
    trust.update_root(v2, NOW)
    trust.update_root(v3, NOW)
    with pytest.raises(UntrustedKey):
        trust.verify_card(DeskCard.decode(h(V["desks"]["us.caisi"]["desk_card"]["encoded"])), NOW)
    trust.verify_card(DeskCard.decode(h(V["desks"]["cn.cac"]["desk_card"]["encoded"])), NOW)


def test_federation_root_signature_limits() -> None:
    doc = V["roots"]["v3_rotation"]
    body = h(doc["body"])
    cn, us_old, us_new = ((c, h(s)) for c, s in doc["signatures"])
    third = ("us", sk("authority/cn").sign(Domain.ROOT + body).signature)
    for entries in ([cn, us_old, us_new, third], [cn, us_old, us_old]):
        with pytest.raises(MalformedInput) as exc:
            root_with(body, entries)
        assert exc.value.code == "bad_value"
    with pytest.raises(MalformedInput) as exc:
        root_with(body, [cn] * 129)
    assert exc.value.code == "length_limit"
    # A signature under a country that is not a member is kept but never counts.
    stranger = ("fr", sk("authority/cn").sign(Domain.ROOT + body).signature)
    root_with(body, [cn, us_old, us_new, stranger]).check_update(
        FederationRoot.decode(h(V["roots"]["v2"]["encoded"])), NOW
    )


def test_federation_root_issued_in_the_future() -> None:
    assert ROOT_CLOCK_SKEW_MS == 10 * 60_000
    members = {Country(c): pub(f"authority/{c}") for c in ("cn", "us")}

    def root(issued_at: int) -> FederationRoot:
        r = FederationRoot.create(1, members, issued_at, NOW + 86_400_000)
        return r.signed_by(Country("cn"), sk("authority/cn")).signed_by(
            Country("us"), sk("authority/us")
        )

    root(NOW + ROOT_CLOCK_SKEW_MS).check_initial(NOW)
    early = root(NOW + ROOT_CLOCK_SKEW_MS + 1)
    with pytest.raises(RootInvalid, match="future"):
        early.check_initial(NOW)
    with pytest.raises(UntrustedKey, match="future"):
        TrustStore(early).verify_cert(
            DeskCertificate.decode(h(V["desks"]["cn.cac"]["desk_cert"]["encoded"])), NOW
        )


def test_revocation_reaches_only_the_named_desk() -> None:
    trust = trust_store()
    old = DeskCertificate.decode(h(V["desks"]["us.old"]["desk_cert"]["encoded"]))
    # The cn authority certifies the very same identity key for one of its own desks.
    request = CertRequest.create(DeskId("cn.old"), sk("desk/us.old/ik"), NOW - 86_400_000)
    twin = DeskCertificate.issue(
        request,
        Country("cn"),
        sk("authority/cn"),
        NOW - 86_400_000,
        NOW + 86_400_000,
    )
    assert twin.key_id == old.key_id
    trust.add_revocation(Revocation.decode(h(V["revocation"]["encoded"])))
    with pytest.raises(UntrustedKey, match="revoked"):
        trust.verify_cert(old, NOW)
    trust.verify_cert(twin, NOW)  # the us revocation does not reach cn.old
    assert trust.is_revoked("us.old", old.key_id) and not trust.is_revoked("cn.old", old.key_id)
    # Nor can the us authority revoke a cn desk: the revocation must be signed by cn.
    forged = Revocation.issue(DeskId("cn.old"), twin.key_id, sk("authority/us"), NOW, "no")
    with pytest.raises(BadSignature):
        trust.add_revocation(Revocation.decode(forged.encode()))
    foreign = Revocation.issue(DeskId("fr.desk"), twin.key_id, sk("authority/us"), NOW, "no")
    with pytest.raises(UntrustedKey):
        trust.add_revocation(Revocation.decode(foreign.encode()))


def test_small_order_encryption_key_is_refused() -> None:
    small = (1).to_bytes(32, "little")  # u = 1 has order 4
    with pytest.raises(MalformedInput) as exc:
        check_x25519_public_key(small, "encryption key")
    assert exc.value.code == "bad_value"
    with pytest.raises(nacl.exceptions.RuntimeError):  # libsodium: the result is all zeros
        sodium.crypto_scalarmult(b"\x01" * 31 + b"\x40", small)
    bad = EkCertificate.issue(
        DeskId("us.caisi"),
        sk("desk/us.caisi/ik"),
        small,
        TIMES["ek_not_before"],
        TIMES["ek_not_after"],
    )
    bad = EkCertificate.decode(bad.encode())  # decoding checks only "not all zero"
    cert = DeskCertificate.decode(h(V["desks"]["us.caisi"]["desk_cert"]["encoded"]))
    good = EkCertificate.decode(h(V["desks"]["us.caisi"]["ek_cert"]["encoded"]))
    trust = trust_store()
    with pytest.raises(KeyCertInvalid, match="small-order"):
        trust.verify_card(DeskCard(cert, (bad,)), NOW)
    v = trust.verify_card(DeskCard(cert, (bad, good)), NOW)  # the bad one is dropped
    assert v.encryption_keys == {good.key_id: good.encryption_key}


def test_ack_message_limits() -> None:
    n1 = NOTICES["notice1"]
    nid, dig = h(n1["inputs"]["notice_id"]), h(n1["digest"])
    assert MAX_STATEMENT_BYTES == 16 * 1024

    def ack(text: str) -> Confirmation:
        return Confirmation.create(
            "ack",
            notice_id=nid,
            digest=dig,
            sender=DeskId("us.caisi"),
            me=secrets_of("cn.cac"),
            at=TIMES["ack_at"],
            message=text,
            sender_keys=verified("us.caisi"),
        )

    longest = "\U0001f6a8" * 2000  # 2000 characters of 4 UTF-8 bytes each
    encoded = ack(longest).encode()
    assert 8 * 1024 < len(encoded) <= MAX_STATEMENT_BYTES
    c = Confirmation.decode(encoded)
    c.verify(verified("cn.cac"), notice_id=nid, digest=dig, sender=DeskId("us.caisi"),
        recipient=DeskId("cn.cac"))
    assert c.open_message(secrets_of("us.caisi")) == longest
    with pytest.raises(ValueError, match="2000"):
        ack("x" * 2001)
    with pytest.raises(ValueError, match="only an acknowledgement"):
        Confirmation.create(
            "receipt",
            notice_id=nid,
            digest=dig,
            sender=DeskId("us.caisi"),
            me=secrets_of("cn.cac"),
            at=TIMES["ack_at"],
            message="hi",
        )
    too_big = msgpack.packb([b"\x00" * MAX_STATEMENT_BYTES, b"\x00" * 64], use_bin_type=True)
    assert refusal(Confirmation.decode, too_big) == "too_large"


@pytest.mark.parametrize("kind", ["escalated", "resolved"])
def test_escalation_statement(kind: str) -> None:
    card = RelayCard.decode(h(V["relay_card"]["encoded"]))
    doc = V["escalations"][kind]
    st = EscalationStatement.decode(h(doc["encoded"]))
    st.verify(card)
    assert st.encode() == h(doc["encoded"])
    n2 = NOTICES["notice2"]
    assert (st.kind, st.notice_id, st.digest) == (
        kind,
        h(n2["inputs"]["notice_id"]),
        h(n2["digest"]),
    )
    assert (st.relay_id, st.relay_kid) == (card.relay_id, card.key_id)
    assert (st.sender, st.recipient, st.severity, st.status, st.track) == (
        "us.caisi",
        "cn.mss",
        "critical",
        "actual",
        "ack",
    )
    assert (st.level, st.missed_levels, st.deadline) == (1, 0, TIMES["notice2_ack_deadline"])
    assert st.overdue_ms == st.at - st.deadline > 0
    expected = {
        "escalated": (TIMES["escalation_at"], False, False),
        "resolved": (TIMES["resolved_at"], True, True),
    }
    assert (st.at, st.delivered, st.final) == expected[kind]
    other = RelayCard.create("hotline-relay-2", sk("relay/hotline-relay-1"), NOW)
    with pytest.raises(BadSignature):
        st.verify(other)
    # Not an attestation: another schema, another signature domain.
    assert refusal(Attestation.decode, h(doc["encoded"])) == "unknown_field"


def test_escalation_statement_schema() -> None:
    doc = V["escalations"]["escalated"]
    body = raw_unpack(h(doc["body"]))

    def with_body(**changes: Any) -> bytes:
        out: bytes = msgpack.packb(
            [msgpack.packb({**body, **changes}, use_bin_type=True), h(doc["signature"])],
            use_bin_type=True,
        )
        return out

    assert refusal(EscalationStatement.decode, with_body(kind="delivered")) == "bad_value"
    assert refusal(EscalationStatement.decode, with_body(track="reply")) == "bad_value"
    assert refusal(EscalationStatement.decode, with_body(level=1001)) == "bad_value"
    assert refusal(EscalationStatement.decode, with_body(delivered=0)) == "bad_type"
    assert refusal(EscalationStatement.decode, with_body(v=2, extra=1)) == "unsupported_version"
    # Decoding does not check the signature; verify() does.
    tampered = EscalationStatement.decode(with_body(level=2))
    with pytest.raises(BadSignature):
        tampered.verify(RelayCard.decode(h(V["relay_card"]["encoded"])))


def test_desk_and_operator_authentication() -> None:
    a = V["auth"]["desk"]
    assert ChallengeRequest.decode(h(a["challenge_request"])).desk == "us.caisi"
    ch = Challenge.decode(h(a["challenge"]))
    assert (ch.relay, ch.origin, ch.nonce, ch.expires_at) == (
        "hotline-relay-1",
        a["origin"],
        h(a["random"]["draws"][0]),
        TIMES["challenge_expires_at"],
    )
    req = SessionRequest.decode(h(a["session_request"]))
    assert (req.desk, req.nonce, req.ts) == ("us.caisi", ch.nonce, a["ts"])
    desk = trust_store().verify_card(DeskCard.decode(req.card), NOW)
    signed = auth_message(ch.origin, req.desk, desk.ik_kid, req.nonce, req.ts)
    assert signed == h(a["signed_bytes"])
    desk.identity_key.verify(signed, req.signature)
    session = Session.decode(h(a["session"]))
    assert session.token == h(a["random"]["draws"][1])
    assert session.relay_card == h(V["relay_card"]["encoded"])

    o = V["auth"]["operator"]
    assert OperatorChallengeRequest.decode(h(o["challenge_request"])).operator == "ops.alice"
    och = Challenge.decode(h(o["challenge"]))
    oreq = OperatorSessionRequest.decode(h(o["session_request"]))
    assert (oreq.operator, oreq.nonce, oreq.ts) == ("ops.alice", och.nonce, o["ts"])
    osigned = operator_auth_message(och.origin, oreq.operator, oreq.nonce, oreq.ts)
    assert osigned == h(o["signed_bytes"])
    nacl.signing.VerifyKey(pub("operator/ops.alice")).verify(osigned, oreq.signature)
    # A desk's login signature is no operator's, and the other way round.
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.signing.VerifyKey(pub("operator/ops.alice")).verify(
            Domain.AUTH + osigned[len(Domain.OPERATOR_AUTH) :], oreq.signature
        )
    for name, code in (
        ("Ops.Alice", "bad_value"),
        ("", "bad_value"),
        ("a" * 41, "too_large"),
        ("ops:alice", "bad_value"),
    ):
        data = msgpack.packb({"v": 1, "operator": name}, use_bin_type=True)
        assert refusal(OperatorChallengeRequest.decode, data) == code


# ============================================================== (c) raw libsodium

def test_operator_web_login_link_from_raw_primitives() -> None:
    """The login link's token is base64url (no padding) of msgpack([body, sig]); the body a
    map in this key order; the signature Ed25519 over the domain prefix and the body."""
    import base64

    w = V["auth"]["operator_web"]
    nonce = h(w["random"]["draws"][0])
    body = msgpack.packb({"v": 1, "operator": w["operator"], "origin": w["origin"],
                          "expires_at": w["expires_at"], "nonce": nonce}, use_bin_type=True)
    assert body == h(w["body"])
    assert h(w["signed_bytes"]) == b"hotline/v1/operator-web-login\x00" + body
    raw_verify(pub("operator/ops.alice"), b"hotline/v1/operator-web-login\x00", body,
               h(w["signature"]))
    outer = msgpack.packb([body, h(w["signature"])], use_bin_type=True)
    assert w["token"] == base64.urlsafe_b64encode(outer).decode().rstrip("=")
    assert w["link"] == w["origin"] + "/ops/login?t=" + w["token"]
    # An operator's challenge answer is not a login link, and the other way round.
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.signing.VerifyKey(pub("operator/ops.alice")).verify(
            b"hotline/v1/operator-auth\x00" + body, h(w["signature"]))


def test_public_keys_and_key_ids_from_seeds() -> None:
    for label, seed in V["inputs"]["ed25519_seeds"].items():
        pk, _sk = sodium.crypto_sign_seed_keypair(h(seed))
        assert pk == pub(label)
        assert raw_blake2b(pk, 16, personal=b"hotline-kid-v1") == h(V["keys"][label]["key_id"])
    for label, sk in V["inputs"]["x25519_private_keys"].items():
        pk = sodium.crypto_scalarmult_base(h(sk))
        assert pk == pub(label)
        assert raw_blake2b(pk, 16, personal=b"hotline-kid-v1") == h(V["keys"][label]["key_id"])


def _signed_docs() -> list[tuple[str, dict[str, Any], str, str]]:
    """(name, document, domain name, signer key label) for every [body, sig] document."""
    docs = [
        (f"authority_card/{c}", V["authority_cards"][c], "AUTHORITY_CARD", f"authority/{c}")
        for c in ("cn", "us")
    ]
    for d in (*DESKS, "us.old"):
        docs.append(
            (f"{d}/cert_request", V["desks"][d]["cert_request"], "CERT_REQUEST", f"desk/{d}/ik")
        )
        docs.append(
            (f"{d}/desk_cert", V["desks"][d]["desk_cert"], "DESK_CERT", f"authority/{d[:2]}")
        )
        if d != "us.old":
            docs.append((f"{d}/ek_cert", V["desks"][d]["ek_cert"], "EK_CERT", f"desk/{d}/ik"))
    relay = "relay/hotline-relay-1"
    docs += [
        ("revocation", V["revocation"], "REVOCATION", "authority/us"),
        ("receipt", V["receipt"], "RECEIPT", "desk/cn.cac/ik"),
        ("ack", V["ack"], "ACK", "desk/cn.cac/ik"),
        ("rejection", V["rejection"], "REJECTION", "desk/cn.mss/ik"),
        ("attestation/rejected", V["attestations"]["rejected"], "ATTESTATION", relay),
        ("relay_card", V["relay_card"], "RELAY_CARD", relay),
        ("attestation/accepted", V["attestations"]["accepted"], "ATTESTATION", relay),
        ("attestation/escalated", V["attestations"]["escalated"], "ATTESTATION", relay),
        ("escalation/escalated", V["escalations"]["escalated"], "ESCALATION", relay),
        ("escalation/resolved", V["escalations"]["resolved"], "ESCALATION", relay),
    ]
    return docs


@pytest.mark.parametrize("name,doc,domain,signer", _signed_docs(), ids=lambda x: str(x)[:30])
def test_signed_document_bytes(name: str, doc: dict[str, Any], domain: str, signer: str) -> None:
    body, sig, encoded = h(doc["body"]), h(doc["signature"]), h(doc["encoded"])
    # [body: bin, signature: bin(64)], written with the smallest encodings.
    assert encoded == msgpack.packb([body, sig], use_bin_type=True)
    assert raw_unpack(encoded) == [body, sig]
    value = raw_unpack(body)
    assert msgpack.packb(value, use_bin_type=True) == body  # canonical as written
    assert value["v"] == 1
    raw_verify(pub(signer), EXPECTED_DOMAINS[domain], body, sig)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_root_signatures(version: str) -> None:
    doc = V["roots"][version]
    body = h(doc["body"])
    outer = raw_unpack(h(doc["encoded"]))
    assert outer[0] == body
    assert [c for c, _ in outer[1]] == ["cn", "us"]
    for country, sig in outer[1]:
        raw_verify(pub(f"authority/{country}"), EXPECTED_DOMAINS["ROOT"], body, sig)
    value = raw_unpack(body)
    assert list(value) == ["v", "type", "version", "issued_at", "expires_at", "members"]
    assert [m["country"] for m in value["members"]] == ["cn", "us"]


@pytest.mark.parametrize("name", sorted(NOTICES))
def test_notice_with_raw_libsodium(name: str) -> None:
    n = NOTICES[name]
    inp = n["inputs"]
    k, nonce = h(n["content_key"]), h(n["nonce"])
    header, ciphertext, outer_sig = (h(n["header"]), h(n["ciphertext"]), h(n["outer_signature"]))
    envelope = h(n["envelope"])
    # The draws of the random stream: content key, nonce, one ephemeral key per stanza.
    draws = inp["random"]["draws"]
    assert [h(d) for d in draws[:2]] == [k, nonce]
    assert draws[2:] == [s["ephemeral_sk"] for s in n["stanzas"]]

    # Envelope = [header: bin, ciphertext: bin, outer_sig: bin(64)]
    assert raw_unpack(envelope) == [header, ciphertext, outer_sig]
    assert envelope == msgpack.packb([header, ciphertext, outer_sig], use_bin_type=True)
    # Notice digest and key commitment.
    assert raw_blake2b(envelope, 32) == h(n["digest"])
    assert hashlib.blake2b(envelope, digest_size=32).digest() == h(n["digest"])  # plain
    assert raw_blake2b(b"", 32, key=k, personal=b"hotline-kc-v1") == h(n["kc"])
    # Outer signature: Ed25519 over prefix || header || BLAKE2b-256(ciphertext).
    assert raw_blake2b(ciphertext, 32) == h(n["ciphertext_digest"])
    raw_verify(
        pub(f"desk/{inp['sender']}/ik"),
        b"hotline/v1/envelope\x00",
        header + raw_blake2b(ciphertext, 32),
        outer_sig,
    )

    # The header, re-encoded independently in the documented key order, is the same bytes.
    hf = raw_unpack(header)
    assert list(hf) == [
        "v",
        "notice_id",
        "from",
        "from_kid",
        "created_at",
        "severity",
        "status",
        "in_reply_to",
        "nonce",
        "kc",
        "stanzas",
    ]
    rebuilt = {
        "v": 1,
        "notice_id": h(inp["notice_id"]),
        "from": inp["sender"],
        "from_kid": h(V["keys"][f"desk/{inp['sender']}/ik"]["key_id"]),
        "created_at": inp["created_at"],
        "severity": inp["severity"],
        "status": inp["status"],
        "in_reply_to": None if inp["in_reply_to"] is None else h(inp["in_reply_to"]),
        "nonce": nonce,
        "kc": h(n["kc"]),
        "stanzas": [
            {"to": s["to"], "ek_kid": h(s["ek_kid"]), "wrapped": h(s["wrapped"])}
            for s in n["stanzas"]
        ],
    }
    assert msgpack.packb(rebuilt, use_bin_type=True) == header

    # Each stanza: crypto_box_seal(K, EK_to) with the logged ephemeral key, and it opens.
    assert [s["to"] for s in n["stanzas"]] == inp["recipients"]
    for s in n["stanzas"]:
        ek_pk = pub(f"desk/{s['to']}/ek")
        ek_sk = h(V["inputs"]["x25519_private_keys"][f"desk/{s['to']}/ek"])
        assert h(s["ek_kid"]) == raw_blake2b(ek_pk, 16, personal=b"hotline-kid-v1")
        wrapped = h(s["wrapped"])
        assert len(wrapped) == 80
        assert sodium.crypto_box_seal_open(wrapped, ek_pk, ek_sk) == k
        epk = sodium.crypto_scalarmult_base(h(s["ephemeral_sk"]))
        assert epk == h(s["ephemeral_pk"]) == wrapped[:32]
        box_nonce = raw_blake2b(epk + ek_pk, 24)
        assert epk + sodium.crypto_box(k, box_nonce, ek_pk, h(s["ephemeral_sk"])) == wrapped

    # AEAD with the header bytes as associated data.
    plaintext = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, header, nonce, k)
    assert plaintext == h(n["plaintext"])
    assert sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, header, nonce, k) == (
        ciphertext
    )
    with pytest.raises(nacl.exceptions.CryptoError):
        sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, header + b"\x00", nonce, k)
    inner, inner_sig = raw_unpack(plaintext)
    assert (inner, inner_sig) == (h(n["inner"]), h(n["inner_signature"]))
    raw_verify(pub(f"desk/{inp['sender']}/ik"), b"hotline/v1/inner\x00", inner, inner_sig)
    report_wire = raw_unpack(h(n["report_msgpack"]))
    assert msgpack.packb(report_wire, use_bin_type=True) == h(n["report_msgpack"])
    assert list(report_wire) == [
        "title",
        "summary",
        "body",
        "category",
        "tlp",
        "lang",
        "aware_at",
        "systems",
        "countries",
        "actions",
        "contact",
        "references",
        "translations",
        "attachments",
    ]
    inner_rebuilt = {
        "v": 1,
        "notice_id": h(inp["notice_id"]),
        "from": inp["sender"],
        "to": inp["recipients"],
        "created_at": inp["created_at"],
        "severity": inp["severity"],
        "status": inp["status"],
        "in_reply_to": rebuilt["in_reply_to"],
        "report": report_wire,
    }
    assert msgpack.packb(inner_rebuilt, use_bin_type=True) == inner


def test_ack_message_with_raw_libsodium() -> None:
    ack = raw_unpack(h(V["ack"]["body"]))
    assert list(ack) == [
        "v",
        "type",
        "notice_id",
        "digest",
        "to",
        "from",
        "from_kid",
        "at",
        "message",
    ]
    assert list(ack["message"]) == ["ek_kid", "sealed"]
    us_ek = pub("desk/us.caisi/ek")
    assert ack["message"]["ek_kid"] == raw_blake2b(us_ek, 16, personal=b"hotline-kid-v1")
    sealed = ack["message"]["sealed"]
    plain = sodium.crypto_box_seal_open(
        sealed, us_ek, h(V["inputs"]["x25519_private_keys"]["desk/us.caisi/ek"])
    )
    assert plain == h(V["ack"]["message"]["plaintext"])
    assert raw_unpack(plain) == [
        h(NOTICES["notice1"]["inputs"]["notice_id"]),
        "cn.cac",
        V["ack"]["message"]["text"],
    ]
    assert len(sealed) == len(plain) + 48
    assert sealed[:32] == sodium.crypto_scalarmult_base(h(V["ack"]["message"]["ephemeral_sk"]))
    receipt = raw_unpack(h(V["receipt"]["body"]))
    assert receipt["type"] == "receipt" and receipt["message"] is None


def test_key_file_with_raw_libsodium() -> None:
    kf = V["key_file"]
    f = raw_unpack(h(kf["encoded"]))
    assert list(f) == [
        "v",
        "type",
        "kind",
        "kdf",
        "opslimit",
        "memlimit",
        "salt",
        "nonce",
        "ciphertext",
    ]
    assert (f["v"], f["type"], f["kind"], f["kdf"]) == (1, "hotline-key", "desk", "argon2id13")
    key = sodium.crypto_pwhash_alg(
        32,
        V["inputs"]["passphrase"].encode(),
        f["salt"],
        f["opslimit"],
        f["memlimit"],
        sodium.crypto_pwhash_ALG_ARGON2ID13,
    )
    assert key == h(kf["wrapping_key"])
    aad = msgpack.packb(
        [f[k] for k in ("v", "type", "kind", "kdf", "opslimit", "memlimit", "salt", "nonce")],
        use_bin_type=True,
    )
    assert aad == h(kf["aad"])
    payload = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        f["ciphertext"], aad, f["nonce"], key
    )
    assert payload == h(kf["payload"])
    p = raw_unpack(payload)
    assert list(p) == ["desk", "ik", "eks"]
    assert list(p["eks"][0]) == ["sk", "not_before", "not_after", "keep_until"]


def test_root_rotation_with_raw_libsodium() -> None:
    doc = V["roots"]["v3_rotation"]
    body = h(doc["body"])
    outer = raw_unpack(h(doc["encoded"]))
    assert outer[0] == body
    assert h(doc["encoded"]) == msgpack.packb(outer, use_bin_type=True)
    # Sorted by country; a country's signatures in the order they were added (old key first).
    assert [c for c, _ in outer[1]] == ["cn", "us", "us"]
    signers = ["authority/cn", "authority/us", "authority/us/next"]
    for (_country, sig), signer in zip(outer[1], signers, strict=True):
        raw_verify(pub(signer), EXPECTED_DOMAINS["ROOT"], body, sig)
    value = raw_unpack(body)
    assert value["members"] == [
        {"country": "cn", "key": pub("authority/cn")},
        {"country": "us", "key": pub("authority/us/next")},
    ]


def test_escalation_statement_body_layout() -> None:
    for kind in ("escalated", "resolved"):
        body = raw_unpack(h(V["escalations"][kind]["body"]))
        assert list(body) == [
            "v",
            "type",
            "kind",
            "relay",
            "relay_kid",
            "notice_id",
            "digest",
            "sender",
            "recipient",
            "severity",
            "status",
            "track",
            "level",
            "missed_levels",
            "deadline",
            "at",
            "delivered",
            "final",
        ]
        assert (body["type"], body["kind"]) == ("escalation", kind)
        assert body["relay_kid"] == raw_blake2b(
            pub("relay/hotline-relay-1"), 16, personal=b"hotline-kid-v1"
        )
        assert type(body["delivered"]) is bool and type(body["final"]) is bool
        # booleans are msgpack true/false (0xc3/0xc2)
        assert h(V["escalations"][kind]["body"]).endswith(
            b"\xa9delivered"
            + (b"\xc3" if body["delivered"] else b"\xc2")
            + b"\xa5final"
            + (b"\xc3" if body["final"] else b"\xc2")
        )


def test_auth_messages_with_raw_msgpack() -> None:
    a = V["auth"]["desk"]
    nonce = h(a["random"]["draws"][0])
    packed = msgpack.packb(
        [a["origin"], a["desk"], h(a["ik_kid"]), nonce, a["ts"]], use_bin_type=True
    )
    assert packed == h(a["message"])
    assert h(a["signed_bytes"]) == b"hotline/v1/auth\x00" + packed
    assert h(a["ik_kid"]) == raw_blake2b(pub("desk/us.caisi/ik"), 16, personal=b"hotline-kid-v1")
    raw_verify(pub("desk/us.caisi/ik"), b"hotline/v1/auth\x00", packed, h(a["signature"]))
    frames = {
        "challenge_request": ["v", "desk"],
        "challenge": ["v", "relay", "origin", "nonce", "expires_at"],
        "session_request": ["v", "desk", "card", "nonce", "ts", "sig"],
        "session": ["v", "token", "expires_at", "relay_card"],
    }
    for name, keys in frames.items():
        value = raw_unpack(h(a[name]))
        assert list(value) == keys and value["v"] == 1
        assert msgpack.packb(value, use_bin_type=True) == h(a[name])
    assert raw_unpack(h(a["session_request"]))["card"] == h(
        V["desks"]["us.caisi"]["desk_card"]["encoded"]
    )

    o = V["auth"]["operator"]
    ononce = h(o["random"]["draws"][0])
    opacked = msgpack.packb([o["origin"], o["operator"], ononce, o["ts"]], use_bin_type=True)
    assert opacked == h(o["message"])
    assert h(o["signed_bytes"]) == b"hotline/v1/operator-auth\x00" + opacked
    raw_verify(
        pub("operator/ops.alice"), b"hotline/v1/operator-auth\x00", opacked, h(o["signature"])
    )
    assert list(raw_unpack(h(o["challenge_request"]))) == ["v", "operator"]
    assert list(raw_unpack(h(o["session_request"]))) == ["v", "operator", "nonce", "ts", "sig"]
    assert raw_unpack(h(o["challenge"]))["nonce"] == ononce


def test_revocation_list_and_stream_message_with_raw_msgpack() -> None:
    """``GET /v1/revocations`` and the stream's ``revocation`` message, byte for byte."""
    from keys.frames import RevocationList, decode_relay_message, revocation_message

    rev = h(V["revocation"]["encoded"])
    listed = h(V["revocation_frames"]["list"])
    value = raw_unpack(listed)
    assert list(value) == ["v", "revocations"] and value == {"v": 1, "revocations": [rev]}
    assert msgpack.packb(value, use_bin_type=True) == listed
    assert RevocationList.decode(listed).revocations == (rev,)
    pushed = h(V["revocation_frames"]["stream_message"])
    value = raw_unpack(pushed)
    assert list(value) == ["v", "type", "ref", "revocation"]
    assert value == {"v": 1, "type": "revocation", "ref": 0, "revocation": rev}
    assert revocation_message(rev) == pushed
    assert decode_relay_message(pushed)["revocation"] == rev


def test_webhook_signature_with_hmac() -> None:
    w = V["webhook"]
    body = w["body"].encode()
    headers = w["headers"]
    mac = hmac.new(
        h(w["secret"]), headers["X-Hotline-Timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert headers["X-Hotline-Signature"] == "sha256=" + mac
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == "hotline-relay-1:1:pager"
    assert re.fullmatch(r"\d{10}", headers["X-Hotline-Timestamp"])
    alert = json.loads(body)
    assert json.dumps(alert, sort_keys=True).encode() == body  # sorted keys, default separators
    assert list(alert) == sorted(alert)
    assert (alert["version"], alert["status"], alert["receiver"]) == ("4", "firing", "pager")
    assert alert["groupKey"] == '{}:{notice_id="102030405060708090a0b0c0d0e0f001"}'
    assert alert["groupLabels"] == {"notice_id": "102030405060708090a0b0c0d0e0f001"}
    assert alert["truncatedAlerts"] == 0
    [one] = alert["alerts"]
    assert (
        one["labels"]
        == alert["commonLabels"]
        == {
            "alertname": "HotlineNoticeUnacknowledged",
            "notice_id": "102030405060708090a0b0c0d0e0f001",
            "sender": "us.caisi",
            "recipient": "cn.mss",
            "severity": "critical",
            "status": "actual",
            "track": "ack",
            "relay": "hotline-relay-1",
        }
    )
    assert one["annotations"] == alert["commonAnnotations"]
    assert set(one["annotations"]) == {"summary", "level", "delivered", "missed_levels", "exercise"}
    assert one["startsAt"] == "2026-09-21T14:38:20.800+00:00"
    assert one["endsAt"] == "0001-01-01T00:00:00Z"
    assert one["fingerprint"] == "102030405060708090a0b0c0d0e0f001-cn.mss-ack"
    assert one["generatorURL"] == alert["externalURL"] == "https://hotline.example.org"


def test_escalation_log_line() -> None:
    line = V["escalation_log_line"]
    record = json.loads(line)
    assert json.dumps(record, sort_keys=True) == line
    st = raw_unpack(h(V["escalations"]["escalated"]["body"]))
    assert record == {
        "event": "notice.escalated",
        "escalation_id": 1,
        "relay": "hotline-relay-1",
        "notice_id": st["notice_id"].hex(),
        "sender": st["sender"],
        "recipient": st["recipient"],
        "severity": st["severity"],
        "status": st["status"],
        "exercise": False,
        "track": st["track"],
        "level": st["level"],
        "missed_levels": st["missed_levels"],
        "deadline": "2026-09-21T14:38:20.800+00:00",
        "at": "2026-09-21T14:38:21.050+00:00",
        "overdue_ms": st["at"] - st["deadline"],
        "delivered": st["delivered"],
        "final": st["final"],
        "contacts": ["cn.duty"],
        "webhooks": ["pager"],
        "rejected_by_recipient": None,
    }


# ============================================================== (d) fingerprints


@pytest.mark.parametrize("label", sorted(k for k in V["keys"] if "fingerprint" in V["keys"][k]))
def test_fingerprint_by_hand(label: str) -> None:
    kind, name = label.split("/")[:2]
    key = pub(label)
    digest = hashlib.blake2b(
        kind.encode() + b"\x00" + name.encode() + b"\x00" + key,
        digest_size=30,
        person=b"hotline-fpr-v1",
    ).digest()
    groups = []
    for i in range(6):
        number = 0
        for byte in digest[5 * i : 5 * i + 5]:
            number = number * 256 + byte
        groups.append(f"{number % 100000:05d}")
    by_hand = " ".join(groups)
    assert by_hand == V["keys"][label]["fingerprint"]
    assert fingerprint(kind, name, key) == by_hand
    assert len(by_hand) == 35


# ============================================================== (e) the page and the relay


def _relay_routes() -> set[tuple[str, str]]:
    from relay.app import make_app
    from relay.config import Limits

    fake = SimpleNamespace(config=SimpleNamespace(limits=Limits()))
    app = make_app(fake, SimpleNamespace())  # type: ignore[arg-type]
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


def test_protocol_md_documents_every_http_route() -> None:
    text = PROTOCOL_PATH.read_text(encoding="utf-8")
    routes = _relay_routes()
    assert ("GET", "/v1/stream") in routes and ("GET", "/v1/ops/watch") in routes
    for method, path in sorted(routes):
        assert f"`{method} {path}`" in text, f"{method} {path} is not in PROTOCOL.md"


def test_protocol_md_documents_every_error_status() -> None:
    text = PROTOCOL_PATH.read_text(encoding="utf-8")
    for code, status in STATUS_BY_CODE.items():
        assert re.search(rf"\| `{code}` \| {status} \|", text), (
            f"{code} -> {status} is not in the status table of PROTOCOL.md"
        )


def test_automatic_ack_vector() -> None:
    n1 = NOTICES["notice1"]
    doc = V["ack_automatic"]
    ack = Confirmation.decode(h(doc["encoded"]))
    assert ack.kind == "ack" and ack.automatic and ack.message is None
    ack.verify(verified("cn.cac"), notice_id=h(n1["inputs"]["notice_id"]),
               digest=h(n1["digest"]), sender=DeskId("us.caisi"), recipient=DeskId("cn.cac"))
    body = raw_unpack(h(doc["body"]))
    assert list(body)[-1] == "automatic" and body["automatic"] is True
    # A plain ack has no such key (its bytes are as before this field existed).
    assert "automatic" not in raw_unpack(h(V["ack"]["body"]))
    assert h(doc["body"]).endswith(b"\xa9automatic\xc3")


def test_report_with_question_vector() -> None:
    doc = V["report_with_question"]
    raw = h(doc["msgpack"])
    decoded = raw_unpack(raw)
    assert list(decoded)[-1] == "question"
    got = report_from_wire(decoded)
    assert got.question == "Which platforms did you contact?"
    assert msgpack.packb(got.to_wire(), use_bin_type=True) == raw


# --------------------------------------------------------------------------- hybrid (v2)

HY = V["hybrid"]


def test_hybrid_key_from_its_seed_by_the_draft_construction() -> None:
    """X-Wing keygen recomputed from raw parts: SHAKE-256 expansion, ML-KEM-768 from the
    64-byte seed (cryptography, not keys.xwing), X25519 base point multiplication."""
    from cryptography.hazmat.primitives.asymmetric import mlkem

    expanded = hashlib.shake_256(h(HY["xwing_seed"])).digest(96)
    pk_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]).public_key()
    pk = pk_m.public_bytes_raw() + sodium.crypto_scalarmult_base(expanded[64:])
    assert pk == h(HY["xwing_public_key"])
    assert raw_blake2b(pk, 16, personal=b"hotline-kid-v1") == h(HY["ek_kid"])


def test_hybrid_key_certificate_layout_and_signature() -> None:
    """[body, [signature]] with body v2 naming kem and sig_algs; Ed25519 over the EK_CERT
    domain and the body, by the desk's identity key."""
    cert = HY["ek_cert"]
    assert msgpack.unpackb(h(cert["encoded"]), raw=False) == [h(cert["body"]),
                                                             [h(s) for s in cert["signatures"]]]
    body = msgpack.unpackb(h(cert["body"]), raw=False)
    assert body["v"] == 2 and body["kem"] == "x-wing" and body["sig_algs"] == ["ed25519"]
    assert body["ek"] == h(HY["xwing_public_key"])
    ik_pk, _ = sodium.crypto_sign_seed_keypair(h(HY["ik_seed"]))
    sodium.crypto_sign_open(h(cert["signatures"][0]) + b"hotline/v1/ek-cert\x00" + h(cert["body"]),
                            ik_pk)
    assert EkCertificate.decode(h(cert["encoded"])).kem == "x-wing"


def test_hybrid_root_carries_its_rule_in_the_signed_body() -> None:
    root = FederationRoot.decode(h(HY["root"]["encoded"]))
    assert root.hybrid_required_from == HY["root"]["hybrid_required_from"]
    body = msgpack.unpackb(root.body, raw=False)
    assert body["hybrid_required_from"] == root.hybrid_required_from
    root.check_initial(NOW)


def test_hybrid_stanza_recomputed_from_raw_primitives() -> None:
    """ss = X-Wing decapsulation by hand (ML-KEM from cryptography, X25519 from libsodium,
    SHA3-256 from hashlib), the wrap key by BLAKE2b, the wrap by XChaCha20-Poly1305: it
    yields the notice's content key, which decrypts the ciphertext."""
    from cryptography.hazmat.primitives.asymmetric import mlkem

    n = HY["notice"]
    st = next(s for s in n["stanzas"] if s["kem"] == "x-wing")
    ct = h(st["kem_ct"])
    assert len(ct) == 1120 and len(h(st["wrapped"])) == 48
    expanded = hashlib.shake_256(h(HY["xwing_seed"])).digest(96)
    ss_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]).decapsulate(ct[:1088])
    ss_x = sodium.crypto_scalarmult(expanded[64:], ct[1088:])
    pk_x = h(HY["xwing_public_key"])[1184:]
    ss = hashlib.sha3_256(ss_m + ss_x + ct[1088:] + pk_x + bytes.fromhex("5c2e2f2f5e5c")).digest()
    assert ss == h(st["shared_secret"])
    ctx = (b"hotline/v2/stanza\x00" + h(n["header_fields"]["notice_id"]) + h(st["ek_kid"])
           + st["to"].encode())
    assert ctx == h(st["context"])
    wrap_key = hashlib.blake2b(ctx, digest_size=32, key=ss, person=b"hotline-xwing-v1").digest()
    assert wrap_key == h(st["wrap_key"])
    content_key = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        h(st["wrapped"]), ctx, bytes(24), wrap_key)
    assert content_key == h(n["content_key"])
    header = msgpack.unpackb(h(n["header"]), raw=False)
    assert header["v"] == 2
    assert [s["kem"] for s in header["stanzas"]] == [s["kem"] for s in n["stanzas"]]
    env = msgpack.unpackb(h(n["envelope"]), raw=False)
    sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(env[1], env[0], h(n["nonce"]), content_key)


def test_hybrid_notice_opens_through_the_api_for_both_kinds_of_recipient() -> None:
    """The v2 envelope opens for cn.pq (hybrid stanza) and cn.cac (classical stanza)."""
    from keys.xwing import XWingPrivateKey

    n = HY["notice"]
    env = Envelope.decode(h(n["envelope"]))
    assert env.header.version == 2 and env.digest == h(n["digest"])
    trust = TrustStore(FederationRoot.decode(h(HY["root"]["encoded"])))
    sender = trust.verify_card(DeskCard.decode(h(V["desks"]["us.caisi"]["desk_card"]["encoded"])),
                               NOW)
    pq = DeskSecrets(DeskId(HY["desk"]),
                     nacl.signing.SigningKey(h(HY["ik_seed"])),
                     (EncryptionKeyPair(XWingPrivateKey(h(HY["xwing_seed"])), NOW - 1, NOW + 1,
                                        NOW + 2),))
    got = open_envelope(env, me=pq, sender=sender)
    ik = nacl.signing.SigningKey(h(V["inputs"]["ed25519_seeds"]["desk/cn.cac/ik"]))
    ek = nacl.public.PrivateKey(h(V["inputs"]["x25519_private_keys"]["desk/cn.cac/ek"]))
    cac = DeskSecrets(DeskId("cn.cac"), ik, (EncryptionKeyPair(ek, NOW - 1, NOW + 1, NOW + 2),))
    assert open_envelope(env, me=cac, sender=sender).report == got.report
