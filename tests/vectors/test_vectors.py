"""Hotline's wire-format test vectors (tests/vectors/vectors.json, keys/PROTOCOL.md).

(a) the generator reproduces the file byte for byte, so any wire change is caught;
(b) every vector decodes and verifies through the public API;
(c) the claims of PROTOCOL.md are recomputed with raw libsodium calls (nacl.bindings) and a
    plain msgpack library, never through keys.primitives;
(d) fingerprints are recomputed by hand.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
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
    EncryptionKeyPair,
    Envelope,
    FederationRoot,
    IncidentReport,
    RelayCard,
    Revocation,
    RootInvalid,
    StaleOrFuture,
    TrustStore,
    UntrustedKey,
    VerifiedDesk,
    check_submission,
    fingerprint,
    open_envelope,
)
from keys.armor import dearmor
from keys.keyfile import decode_desk_secrets, open_key_file
from keys.primitives import Domain
from keys.receipts import Attestation
from keys.report import from_wire as report_from_wire
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
    "ATTESTATION": b"hotline/v1/attestation\x00",
    "RELAY_CARD": b"hotline/v1/relay-card\x00",
    "AUTH": b"hotline/v1/auth\x00",
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
    receipt.verify(cac, notice_id=nid, digest=dig, sender=DeskId("us.caisi"))
    ack = Confirmation.decode(h(V["ack"]["encoded"]))
    assert ack.kind == "ack"
    ack.verify(cac, notice_id=nid, digest=dig, sender=DeskId("us.caisi"))
    assert ack.open_message(secrets_of("us.caisi")) == V["ack"]["message"]["text"]
    with pytest.raises(BadSignature):
        ack.verify(
            cac, notice_id=nid, digest=h(NOTICES["notice2"]["digest"]), sender=DeskId("us.caisi")
        )


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


# ============================================================== (c) raw libsodium


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
        ("relay_card", V["relay_card"], "RELAY_CARD", relay),
        ("attestation/accepted", V["attestations"]["accepted"], "ATTESTATION", relay),
        ("attestation/escalated", V["attestations"]["escalated"], "ATTESTATION", relay),
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
