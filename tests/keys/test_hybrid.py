"""Hybrid post-quantum key wrapping (X-Wing: ML-KEM-768 + X25519), and attacks on it.

The X-Wing vectors are Appendix C of draft-connolly-cfrg-xwing-kem-10 (identical to
spec/test-vectors.json in the draft's repository), kept in tests/vectors/xwing_draft.json.
Attacks play a malicious sender (who signs what it sends) or a relay (who cannot), and check
the exact error class and code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nacl.bindings as sodium
import nacl.public
import nacl.signing
import pytest

from keys import (
    BadSignature,
    Confirmation,
    DecryptionFailed,
    DeskCard,
    DeskSecrets,
    Downgrade,
    EkCertificate,
    EncryptionKeyPair,
    Envelope,
    FederationRoot,
    KeyCertInvalid,
    MalformedInput,
    check_submission,
    open_envelope,
    seal,
    xwing,
)
from keys.envelope import MAX_HEADER_BYTES, MAX_RECIPIENTS, stanza_context
from keys.keyfile import decode_desk_secrets, encode_desk_secrets
from keys.xwing import XWingPrivateKey
from tests.factory import DAY, NOW, Federation, report
from tests.keys._helpers import (
    assemble,
    commit,
    header_of,
    pack,
    unpack,
)

A, B, C = "us.caisi", "cn.cac", "cn.mss"
VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "xwing_draft.json").read_text())


# ------------------------------------------------------------------ X-Wing itself


@pytest.mark.parametrize("v", VECTORS, ids=[v["ss"][:8] for v in VECTORS])
def test_xwing_draft_vector_keygen_and_decapsulation(v: dict[str, str]) -> None:
    """Keys from the seed and the shared secret of the draft's ciphertext, byte for byte.
    (Encapsulation with the draft's fixed randomness is checked by the Node test: the
    OpenSSL ML-KEM API takes no outside randomness.)"""
    sk = XWingPrivateKey(bytes.fromhex(v["seed"]))
    assert sk.public_key.hex() == v["pk"]
    assert sk.decapsulate(bytes.fromhex(v["ct"])).hex() == v["ss"]


@pytest.mark.parametrize("v", VECTORS, ids=[v["ss"][:8] for v in VECTORS])
def test_xwing_draft_vector_x25519_half_of_encapsulation(v: dict[str, str]) -> None:
    """The X25519 half of the draft's encapsulation: ct_X from eseed[32:] is the last 32
    bytes of the draft's ciphertext, so our combiner inputs are the draft's."""
    eseed = bytes.fromhex(v["eseed"])
    assert sodium.crypto_scalarmult_base(eseed[32:]).hex() == v["ct"][-64:]


def test_xwing_encapsulation_round_trips_and_binds_the_key() -> None:
    a, b = XWingPrivateKey(os.urandom(32)), XWingPrivateKey(os.urandom(32))
    ss, ct = xwing.encapsulate(a.public_key, random=os.urandom)
    assert len(ct) == xwing.CIPHERTEXT_BYTES and a.decapsulate(ct) == ss
    assert b.decapsulate(ct) != ss  # implicit rejection: another key, another secret


def test_xwing_refuses_ciphertext_of_wrong_length() -> None:
    sk = XWingPrivateKey(os.urandom(32))
    _, ct = xwing.encapsulate(sk.public_key, random=os.urandom)
    for bad in (ct[:-1], ct + b"\x00", b""):
        with pytest.raises(MalformedInput) as exc:
            sk.decapsulate(bad)
        assert exc.value.code == "bad_stanza"


def test_xwing_refuses_public_key_with_invalid_mlkem_half() -> None:
    """FIPS 203's encapsulation-key check: coefficients >= q are refused."""
    pk = XWingPrivateKey(os.urandom(32)).public_key
    with pytest.raises(MalformedInput):
        xwing.check_public_key(b"\xff" * 1184 + pk[1184:], "key")
    with pytest.raises(MalformedInput):
        xwing.check_public_key(pk[:1184] + bytes(32), "key")


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def fed() -> Federation:
    """A sends; B and C have hybrid keys; D (us.nist) is still classical."""
    return Federation.create(desks=(A, B, C, "us.nist"), hybrid=(B, C))


def send(fed: Federation, to: tuple[str, ...] = (B, C), **kw: object) -> Envelope:
    kw.setdefault("severity", "high")
    return seal(report(), sender=fed.desks[A].secrets,  # type: ignore[arg-type]
                recipients=[fed.verified(d) for d in to], now=kw.pop("now", NOW), **kw)  # type: ignore[arg-type]


def open_as(fed: Federation, data: bytes | Envelope, me: str, **kw: object):  # type: ignore[no-untyped-def]
    env = data if isinstance(data, Envelope) else Envelope.decode(data)
    return open_envelope(env, me=fed.desks[me].secrets, sender=fed.verified(A), **kw)  # type: ignore[arg-type]


def resealed(fed: Federation, env: Envelope, stanzas: list[dict[str, object]],
             **changes: object) -> bytes:
    """``env`` with new stanzas, re-encrypted and signed by its sender A (a malicious
    sender, or one with a broken client). The content key is recovered through B."""
    content_key, plaintext = unseal_hybrid(env, fed.desks[B].secrets)
    header = header_of(env) | {"stanzas": stanzas, "nonce": os.urandom(24),
                               "kc": commit(content_key)} | changes
    return assemble(header, plaintext, content_key, fed.desks[A].secrets.identity)


def unseal_hybrid(env: Envelope, me: DeskSecrets) -> tuple[bytes, bytes]:
    stanza = next(s for s in env.header.stanzas if s.to == me.desk)
    sk = me.encryption_key(stanza.ek_kid)
    assert isinstance(sk, XWingPrivateKey)
    key = xwing.open_sealed(sk, stanza.kem_ct, stanza.wrapped,
                            stanza_context(env.notice_id, stanza.ek_kid, me.desk), what="t")
    plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        env.ciphertext, env.header.raw, env.header.nonce, key)
    return key, plain


# ------------------------------------------------------------------ the honest path


def test_hybrid_notice_opens_and_stanzas_have_exact_sizes(fed: Federation) -> None:
    env = send(fed, (B, C, "us.nist"))
    assert env.header.version == 2
    kinds = {s.to: (s.kem, len(s.kem_ct), len(s.wrapped)) for s in env.header.stanzas}
    assert kinds == {B: ("x-wing", 1120, 48), C: ("x-wing", 1120, 48),
                     "us.nist": ("x25519", 0, 80)}
    check_submission(env, sender=fed.verified(A), now=NOW)
    for d in (B, C, "us.nist"):
        assert open_as(fed, env.raw, d).report == report()


def test_classical_only_notice_stays_version_1(fed: Federation) -> None:
    env = send(fed, ("us.nist",))
    assert env.header.version == 1 and "kem" not in unpack(env.header.raw)["stanzas"][0]


def test_header_with_the_most_hybrid_stanzas_fits_the_header_limit() -> None:
    """32 hybrid stanzas to 43-character desk ids stay under MAX_HEADER_BYTES."""
    stanza = {"to": "xx." + "a" * 40, "ek_kid": bytes(16), "kem": "x-wing",
              "kem_ct": bytes(1120), "wrapped": bytes(48)}
    header = {"v": 2, "notice_id": b"\x01" * 16, "from": "yy." + "b" * 40,
              "from_kid": bytes(16), "created_at": NOW, "severity": "critical",
              "status": "exercise", "in_reply_to": b"\x01" * 16, "nonce": bytes(24),
              "kc": bytes(32), "stanzas": [stanza] * MAX_RECIPIENTS}
    assert len(pack(header)) <= MAX_HEADER_BYTES


# ------------------------------------------------------------------ attacks


@pytest.mark.parametrize("field,size", [("kem_ct", 1119), ("kem_ct", 1121), ("kem_ct", 0),
                                        ("wrapped", 47), ("wrapped", 80)])
def test_hybrid_stanza_of_wrong_length_is_refused_before_decapsulation(
        fed: Federation, field: str, size: int) -> None:
    env = send(fed)
    stanzas = header_of(env)["stanzas"]
    stanzas[0][field] = os.urandom(size)
    forged = resealed(fed, env, stanzas)
    with pytest.raises(MalformedInput) as exc:
        Envelope.decode(forged)
    assert exc.value.code == "bad_stanza"


def test_kem_ciphertext_from_another_recipients_key_is_refused(fed: Federation) -> None:
    """A sender gives B the KEM ciphertext made for C's key (with C's wrap): B's
    decapsulation yields another secret, and the wrap does not open."""
    env = send(fed)
    stanzas = header_of(env)["stanzas"]
    by = {s["to"]: s for s in stanzas}
    by[B]["kem_ct"], by[B]["wrapped"] = by[C]["kem_ct"], by[C]["wrapped"]
    forged = resealed(fed, env, [by[B], by[C]])
    with pytest.raises(DecryptionFailed) as exc:
        open_as(fed, forged, B)
    assert exc.value.code == "decryption_failed"
    assert exc.value.sender_fault == "stanza_unwrap_failed"
    assert open_as(fed, forged, C).report == report()


@pytest.mark.parametrize("how", ["truncated", "halves_swapped", "mlkem_bit", "x25519_bit"])
def test_truncated_or_swapped_kem_ciphertext_is_refused(fed: Federation, how: str) -> None:
    env = send(fed)
    stanzas = header_of(env)["stanzas"]
    ct = stanzas[0]["kem_ct"]
    stanzas[0]["kem_ct"] = {
        "truncated": ct[:1088],
        "halves_swapped": ct[1088:] + ct[:1088],
        "mlkem_bit": bytes([ct[0] ^ 1]) + ct[1:],
        "x25519_bit": ct[:-1] + bytes([ct[-1] ^ 1]),
    }[how]
    forged = resealed(fed, env, stanzas)
    if how == "truncated":
        with pytest.raises(MalformedInput) as exc:
            Envelope.decode(forged)
        assert exc.value.code == "bad_stanza"
        return
    with pytest.raises(DecryptionFailed) as dexc:
        open_as(fed, forged, stanzas[0]["to"])
    assert dexc.value.code == "decryption_failed"


def test_relay_swapping_kem_ciphertexts_breaks_the_outer_signature(fed: Federation) -> None:
    env = send(fed)
    h = header_of(env)
    h["stanzas"][0]["kem_ct"], h["stanzas"][1]["kem_ct"] = (h["stanzas"][1]["kem_ct"],
                                                           h["stanzas"][0]["kem_ct"])
    forged = pack([pack(h), env.ciphertext, env.signature])
    with pytest.raises(BadSignature):
        check_submission(Envelope.decode(forged), sender=fed.verified(A), now=NOW)
    with pytest.raises(BadSignature):
        open_as(fed, forged, B)


def _with_old_classical_key(fed: Federation, name: str, *,
                            since: int = NOW - 20 * DAY) -> tuple[DeskSecrets, bytes]:
    """``name`` also holds (and still publishes) a classical key valid from ``since``."""
    d = fed.desks[name]
    old = nacl.public.PrivateKey.generate()
    pair = EncryptionKeyPair(old, since, NOW + 10 * DAY, NOW + 40 * DAY)
    secrets = DeskSecrets(d.secrets.desk, d.secrets.identity, (*d.secrets.encryption_keys, pair))
    cert = EkCertificate.issue(d.secrets.desk, d.secrets.identity, bytes(old.public_key),
                               since, NOW + 10 * DAY)
    d.secrets, d.card = secrets, DeskCard(d.card.cert, (*d.card.eks, cert))
    return secrets, bytes(old.public_key)


def test_sender_refuses_to_seal_classically_to_hybrid_recipient(fed: Federation) -> None:
    """B's card carries a classical key newer than its hybrid one: the sender still picks
    the hybrid key, and refuses when asked to seal classically."""
    _with_old_classical_key(fed, B, since=NOW - DAY // 2)
    v = fed.verified(B)
    assert len(next(iter(v.encryption_keys.values()))) == 32  # the newest is classical
    assert len(v.current_encryption_key[1]) == 1216  # the hybrid key wins all the same
    assert {s.kem for s in send(fed, (B,)).header.stanzas} == {"x-wing"}
    with pytest.raises(Downgrade) as exc:
        send(fed, (B,), kem="x25519")
    assert exc.value.code == "downgrade_refused"


def test_classical_stanza_to_hybrid_recipient_is_refused(fed: Federation) -> None:
    """B holds an old classical key next to its hybrid one. A sender wraps B's key
    classically to that old key in a notice created after B's hybrid key began: refused,
    nothing shown. The same stanza naming B's hybrid key id is refused too."""
    _, old_pk = _with_old_classical_key(fed, B)
    env = send(fed)
    content_key, _ = unseal_hybrid(env, fed.desks[B].secrets)
    stanzas = header_of(env)["stanzas"]
    by = {s["to"]: s for s in stanzas}
    old_kid = next(k for k, pk in fed.verified(B).encryption_keys.items() if pk == old_pk)
    wrapped = bytes(nacl.public.SealedBox(nacl.public.PublicKey(old_pk)).encrypt(content_key))
    for kid in (old_kid, by[B]["ek_kid"]):
        by[B] = {"to": B, "ek_kid": kid, "kem": "x25519", "wrapped": wrapped}
        forged = resealed(fed, env, [by[B], by[C]])
        with pytest.raises(Downgrade) as exc:
            open_as(fed, forged, B)
        assert exc.value.code == "downgrade_refused"


def test_classical_notice_from_before_the_rotation_still_opens(fed: Federation) -> None:
    """A notice sealed to B's classical key before B's hybrid key began opens."""
    _, old_pk = _with_old_classical_key(fed, B)
    v = fed.verified(B)
    classical = type(v)(v.desk, v.identity_key, v.ik_kid, v.not_after,
                        {k: pk for k, pk in v.encryption_keys.items() if pk == old_pk})
    env = seal(report(), sender=fed.desks[A].secrets, recipients=[classical], severity="high",
               now=NOW - 2 * DAY)
    assert env.header.version == 1
    assert open_envelope(env, me=fed.desks[B].secrets,
                         sender=fed.verified(A)).report == report()


def test_version_1_envelope_to_hybrid_only_federation_is_refused() -> None:
    """The root requires hybrid keys from NOW - 1 h: the classical desk's card no longer
    verifies, and a v1 notice (sealed from a stale card) is refused by relay and client;
    one created before the date still opens."""
    fed = Federation.create(desks=(A, B, "us.nist"), hybrid=(A, B),
                            hybrid_required_from=NOW - 3_600_000)
    assert fed.root is not None and fed.root.hybrid_required_from == NOW - 3_600_000
    with pytest.raises(KeyCertInvalid):
        fed.verified("us.nist")
    stale = fed.trust.verify_card(fed.desks["us.nist"].card, NOW - 7_200_000)  # type: ignore[union-attr]
    rule = fed.root.hybrid_required_from
    for created, refused in ((NOW, True), (NOW - 7_200_000, False)):
        env = seal(report(), sender=fed.desks[A].secrets, recipients=[stale], severity="high",
                   now=created)
        assert env.header.version == 1
        if refused:
            with pytest.raises(Downgrade) as exc:
                check_submission(env, sender=fed.verified(A), now=NOW, hybrid_required_from=rule)
            assert exc.value.code == "hybrid_required"
            with pytest.raises(Downgrade) as exc:
                open_envelope(env, me=fed.desks["us.nist"].secrets, sender=fed.verified(A),
                              hybrid_required_from=rule)
            assert exc.value.code == "hybrid_required"
        else:
            assert open_envelope(env, me=fed.desks["us.nist"].secrets, sender=fed.verified(A),
                                 hybrid_required_from=rule).report == report()


def test_backdated_classical_notice_is_refused_by_the_relay_after_the_date() -> None:
    """A sender stamping created_at before the date gains nothing at the relay: it judges
    the rule at its own clock too."""
    fed = Federation.create(desks=(A, "us.nist"), hybrid=(A,), hybrid_required_from=NOW - 1000)
    stale = fed.trust.verify_card(fed.desks["us.nist"].card, NOW - 7_200_000)  # type: ignore[union-attr]
    env = seal(report(), sender=fed.desks[A].secrets, recipients=[stale], severity="high",
               now=NOW - 3_600_000)
    with pytest.raises(Downgrade):
        check_submission(env, sender=fed.verified(A), now=NOW, hybrid_required_from=NOW - 1000)


def test_hybrid_key_certificate_signed_by_another_desk_is_refused(fed: Federation) -> None:
    """C's identity key certifies a hybrid key naming B (and B's identity key id)."""
    d, other = fed.desks[B], fed.desks[C]
    sk = XWingPrivateKey(os.urandom(32))
    forged = EkCertificate.issue(d.desk, other.secrets.identity, sk.public_key, NOW - DAY,
                                 NOW + DAY)
    body = unpack(forged.signed.body) | {"ik_kid": d.card.cert.key_id}
    raw = pack([pack(body), [other.secrets.identity.sign(
        b"hotline/v1/ek-cert\x00" + pack(body)).signature]])
    cert = EkCertificate.decode(raw)
    assert cert.kem == "x-wing"
    with pytest.raises(KeyCertInvalid) as exc:
        fed.trust.verify_card(DeskCard(d.card.cert, (cert,)), NOW)  # type: ignore[union-attr]
    assert exc.value.code == "key_cert_invalid" and "does not verify" in str(exc.value)


@pytest.mark.parametrize("bad", ["mlkem_half", "x25519_half"])
def test_hybrid_key_certificate_with_an_invalid_key_is_refused(fed: Federation,
                                                               bad: str) -> None:
    """A validly signed certificate of a key whose ML-KEM half fails FIPS 203's check, or
    whose X25519 half is the zero point, does not count."""
    d = fed.desks[B]
    pk = XWingPrivateKey(os.urandom(32)).public_key
    pk = b"\xff" * 1184 + pk[1184:] if bad == "mlkem_half" else pk[:1184] + bytes(32)
    cert = EkCertificate.issue(d.desk, d.secrets.identity, pk, NOW - DAY, NOW + DAY)
    with pytest.raises(KeyCertInvalid, match="hybrid encryption key"):
        fed.trust.verify_card(DeskCard(d.card.cert, (cert,)), NOW)  # type: ignore[union-attr]


def test_hybrid_certificate_signature_list_must_match_its_algorithms(fed: Federation) -> None:
    cert = fed.desks[B].card.eks[0]
    assert EkCertificate.decode(cert.encode()) == cert
    body, sigs = unpack(cert.encode())
    for bad in (pack([body, []]), pack([body, sigs * 2]),
                pack([pack(unpack(body) | {"sig_algs": ["ed25519", "ed25519"]}), sigs * 2])):
        with pytest.raises(MalformedInput):
            EkCertificate.decode(bad)
    with pytest.raises(MalformedInput):
        EkCertificate.decode(pack([pack(unpack(body) | {"sig_algs": ["ml-dsa-65"]}), sigs]))


# ------------------------------------------------------------------ keys at rest, acks, root


def test_hybrid_key_file_payload_round_trips_and_old_payloads_still_read(
        fed: Federation) -> None:
    s = fed.desks[B].secrets
    back = decode_desk_secrets(encode_desk_secrets(s))
    assert [p.public_key for p in back.encryption_keys] == [p.public_key
                                                            for p in s.encryption_keys]
    assert back.encryption_keys[0].kem == "x-wing"
    old = fed.desks["us.nist"].secrets
    raw = encode_desk_secrets(old)
    assert b"kem" not in raw  # classical payloads keep their old form
    assert decode_desk_secrets(raw).encryption_keys[0].kem == "x25519"


def test_ack_message_to_hybrid_sender_is_sealed_with_xwing() -> None:
    fed = Federation.create(desks=(A, B), hybrid=(A,))
    c = Confirmation.create("ack", notice_id=b"\x01" * 16, digest=bytes(32), sender=A,  # type: ignore[arg-type]
                            me=fed.desks[B].secrets, at=NOW, message="on it",
                            sender_keys=fed.verified(A))
    assert c.message is not None and len(c.message["sealed"]) > 1120
    back = Confirmation.decode(c.encode())
    assert back.open_message(fed.desks[A].secrets) == "on it"


def test_root_hybrid_rule_is_signed_and_optional() -> None:
    """A root without the rule keeps its v1 bytes; with it, the field is in the signed body
    (changing it breaks every signature)."""
    k = nacl.signing.SigningKey.generate()
    plain = FederationRoot.create(1, {"us": bytes(k.verify_key)}, NOW, NOW + DAY)  # type: ignore[dict-item]
    ruled = FederationRoot.create(1, {"us": bytes(k.verify_key)}, NOW, NOW + DAY,  # type: ignore[dict-item]
                                  hybrid_required_from=NOW + 5).signed_by("us", k)  # type: ignore[arg-type]
    assert b"hybrid_required_from" not in plain.body
    assert FederationRoot.decode(ruled.encode()).hybrid_required_from == NOW + 5
    assert ruled.requires_hybrid(NOW + 5) and not ruled.requires_hybrid(NOW + 4)
    ruled.check_initial(NOW)
    body = unpack(ruled.body) | {"hybrid_required_from": NOW + DAY}
    tampered = FederationRoot.decode(pack([pack(body), [["us", ruled.signatures["us"][0]]]]))
    with pytest.raises(Exception, match="lacks a valid signature"):
        tampered.check_initial(NOW)


def test_key_ids_of_hybrid_keys_are_their_own(fed: Federation) -> None:
    v = fed.verified(B)
    kid, pk = v.current_encryption_key
    assert kid == hashlib.blake2b(pk, digest_size=16, person=b"hotline-kid-v1").digest()
