"""Attacks on the envelope (S1-S5, DESIGN.md; SECURITY.md 1.2 and threat rows 1, 5-9, 18).

Each test plays one adversary (the relay, a malicious peer, a malicious sender, a thief of
an old key) and checks that the attack is refused with the exact error class and code.
"""

from __future__ import annotations

import os

import msgpack
import nacl.public
import nacl.signing
import pytest

from keys import (
    Attachment,
    BadSignature,
    DecryptionFailed,
    DeskCard,
    DeskSecrets,
    EkCertificate,
    EncryptionKeyPair,
    Envelope,
    FederationRoot,
    KeyCertInvalid,
    KeyCommitmentMismatch,
    MalformedInput,
    NotIntendedRecipient,
    Revocation,
    StaleOrFuture,
    Translation,
    TrustStore,
    UntrustedKey,
    check_fresh,
    check_submission,
    open_envelope,
    seal,
)
from keys.envelope import MAX_AGE_MS, MAX_FUTURE_MS
from keys.primitives import Domain
from keys.signed import make
from tests.factory import DAY, NOW, Federation, report
from tests.keys._helpers import (
    assemble,
    b2b,
    commit,
    flip,
    fresh_header,
    header_of,
    pack,
    unpack,
    unseal,
    wrap_for,
)

A, B, C = "us.caisi", "cn.cac", "cn.mss"


@pytest.fixture
def fed() -> Federation:
    return Federation.create(desks=(A, B, C))


def send(fed: Federation, to: tuple[str, ...] = (B, C), **kw: object) -> Envelope:
    kw.setdefault("severity", "high")
    return seal(kw.pop("report", report()), sender=fed.desks[A].secrets,  # type: ignore[arg-type]
                recipients=[fed.verified(d) for d in to], now=NOW, **kw)  # type: ignore[arg-type]


def open_as(fed: Federation, data: bytes | Envelope, me: str, sender: str = A):
    env = data if isinstance(data, Envelope) else Envelope.decode(data)
    return open_envelope(env, me=fed.desks[me].secrets, sender=fed.verified(sender))


def submit(fed: Federation, data: bytes, sender: str = A, now: int = NOW) -> None:
    check_submission(Envelope.decode(data), sender=fed.verified(sender), now=now)


# ------------------------------------------------------------------ baseline


def test_honest_notice_opens_for_every_recipient(fed: Federation) -> None:
    """An untouched notice passes the relay's checks and opens identically for B and C."""
    env = send(fed)
    submit(fed, env.raw)
    nb, nc = open_as(fed, env.raw, B), open_as(fed, env.raw, C)
    assert nb.report == nc.report == report()
    assert nb.recipients == (B, C) and nb.sender == A and nb.severity == "high"
    assert nb.digest == nc.digest == env.digest


# ------------------------------------------------------------------ bit flips (S2, S3)


def test_flipped_bit_in_header_is_rejected(fed: Federation) -> None:
    """A relay flipping one bit of the header (inside the notice id) gets bad_signature."""
    env = send(fed)
    at = env.header.raw.index(env.notice_id) + 3
    forged = pack([flip(env.header.raw, at), env.ciphertext, env.signature])
    assert Envelope.decode(forged).notice_id != env.notice_id  # still well formed
    with pytest.raises(BadSignature) as exc:
        submit(fed, forged)
    assert exc.value.code == "bad_signature"
    with pytest.raises(BadSignature) as exc:
        open_as(fed, forged, B)
    assert exc.value.code == "bad_signature"


@pytest.mark.parametrize("where", [0, "middle", -1])
def test_flipped_bit_in_ciphertext_is_rejected(fed: Federation, where: int | str) -> None:
    """One flipped ciphertext bit fails the outer signature at the relay and the recipient."""
    env = send(fed)
    index = len(env.ciphertext) // 2 if where == "middle" else int(where)
    forged = pack([env.header.raw, flip(env.ciphertext, index, 7), env.signature])
    with pytest.raises(BadSignature) as exc:
        submit(fed, forged)
    assert exc.value.code == "bad_signature"
    with pytest.raises(BadSignature) as exc:
        open_as(fed, forged, C)
    assert exc.value.code == "bad_signature"


@pytest.mark.parametrize("index", [0, 31, 32, 63])
def test_flipped_bit_in_outer_signature_is_rejected(fed: Federation, index: int) -> None:
    """A flipped bit in R or S of the outer signature is refused with bad_signature."""
    env = send(fed)
    forged = pack([env.header.raw, env.ciphertext, flip(env.signature, index, 2)])
    with pytest.raises(BadSignature) as exc:
        submit(fed, forged)
    assert exc.value.code == "bad_signature"


def test_flipped_bit_in_inner_signature_is_rejected(fed: Federation) -> None:
    """A notice whose inner signature was altered (outer re-signed) fails at the recipient."""
    env = send(fed)
    sender = fed.desks[A].secrets
    content_key, plaintext = unseal(env, fed.desks[B].secrets)
    inner_raw, inner_sig = unpack(plaintext)
    forged = assemble(env.header.raw, pack([inner_raw, flip(inner_sig, 10)]), content_key,
                      sender.identity)
    submit(fed, forged)  # the outside is genuinely signed: the relay cannot tell
    with pytest.raises(BadSignature) as exc:
        open_as(fed, forged, B)
    assert exc.value.code == "bad_signature"
    assert "inner" in str(exc.value)


def test_rebuilt_envelope_with_untouched_parts_opens(fed: Federation) -> None:
    """Control for the rebuild helper: re-assembling the same parts gives a notice that opens."""
    env = send(fed)
    content_key, plaintext = unseal(env, fed.desks[B].secrets)
    rebuilt = assemble(env.header.raw, plaintext, content_key, fed.desks[A].secrets.identity)
    assert open_as(fed, rebuilt, C).report == report()


# ------------------------------------------------------------------ re-addressing (S3)


def test_readdressed_notice_dropping_a_recipient_is_rejected(fed: Federation) -> None:
    """A relay removing C's stanza from the header is detected by the outer signature."""
    env = send(fed)
    header = header_of(env)
    header["stanzas"] = [s for s in header["stanzas"] if s["to"] != C]
    forged = pack([pack(header), env.ciphertext, env.signature])
    assert Envelope.decode(forged).header.recipients == (B,)
    with pytest.raises(BadSignature) as exc:
        submit(fed, forged)
    assert exc.value.code == "bad_signature"
    with pytest.raises(BadSignature) as exc:
        open_as(fed, forged, B)
    assert exc.value.code == "bad_signature"


def test_readdressed_notice_adding_a_recipient_is_rejected(fed: Federation) -> None:
    """A relay adding a stanza for another desk (no sender key) gets bad_signature."""
    fed.add_desk("cn.mps")
    env = send(fed)
    header = header_of(env)
    header["stanzas"] = sorted([*header["stanzas"], wrap_for(fed.verified("cn.mps"),
                                                                 os.urandom(32))],
                               key=lambda s: s["to"])
    forged = pack([pack(header), env.ciphertext, env.signature])
    assert "cn.mps" in Envelope.decode(forged).header.recipients
    with pytest.raises(BadSignature) as exc:
        submit(fed, forged)
    assert exc.value.code == "bad_signature"
    with pytest.raises(BadSignature) as exc:
        open_as(fed, forged, B)
    assert exc.value.code == "bad_signature"


@pytest.mark.parametrize("severity", ["low", "critical"])
def test_relabelled_severity_is_rejected(fed: Federation, severity: str) -> None:
    """A relay changing the header's severity is detected (bad_signature)."""
    env = send(fed)
    header = header_of(env) | {"severity": severity}
    forged = pack([pack(header), env.ciphertext, env.signature])
    with pytest.raises(BadSignature) as exc:
        submit(fed, forged)
    assert exc.value.code == "bad_signature"
    with pytest.raises(BadSignature) as exc:
        open_as(fed, forged, C)
    assert exc.value.code == "bad_signature"


def test_relabelled_status_is_rejected(fed: Federation) -> None:
    """A relay turning an exercise notice into an actual one is detected (bad_signature)."""
    env = send(fed, status="exercise")
    forged = pack([pack(header_of(env) | {"status": "actual"}), env.ciphertext, env.signature])
    with pytest.raises(BadSignature) as exc:
        submit(fed, forged)
    assert exc.value.code == "bad_signature"


def test_spliced_ciphertext_from_another_notice_is_rejected(fed: Federation) -> None:
    """The ciphertext of another notice by the same sender, under this header, is refused."""
    first, second = send(fed), send(fed, report=report(title="A different incident"))
    forged = pack([first.header.raw, second.ciphertext, first.signature])
    with pytest.raises(BadSignature) as exc:
        submit(fed, forged)
    assert exc.value.code == "bad_signature"
    with pytest.raises(BadSignature) as exc:
        open_as(fed, forged, B)
    assert exc.value.code == "bad_signature"


def test_spliced_header_and_signature_from_another_notice_is_rejected(fed: Federation) -> None:
    """Another notice's header and outer signature over this ciphertext is refused."""
    first, second = send(fed), send(fed)
    forged = pack([second.header.raw, first.ciphertext, second.signature])
    with pytest.raises(BadSignature) as exc:
        submit(fed, forged)
    assert exc.value.code == "bad_signature"


def _bin(data: bytes, width: int) -> bytes:
    """msgpack bin with a length field of ``width`` bytes (bin8, bin16 or bin32)."""
    tag = {1: b"\xc4", 2: b"\xc5", 4: b"\xc6"}[width]
    return tag + len(data).to_bytes(width, "big") + data


@pytest.mark.parametrize("variant", ["array16", "array32", "header_bin32", "signature_bin16"])
def test_reframed_envelope_cannot_change_the_notice_digest(
        fed: Federation, variant: str) -> None:
    """Re-encoding only the outer framing is refused, or leaves the notice digest H unchanged."""
    env = send(fed)
    h, ct, sig = pack(env.header.raw), pack(env.ciphertext), pack(env.signature)
    data = {
        "array16": b"\xdc\x00\x03" + h + ct + sig,
        "array32": b"\xdd\x00\x00\x00\x03" + h + ct + sig,
        "header_bin32": b"\x93" + _bin(env.header.raw, 4) + ct + sig,
        "signature_bin16": b"\x93" + h + ct + _bin(env.signature, 2),
    }[variant]
    assert data != env.raw
    try:
        again = Envelope.decode(data)
    except MalformedInput as exc:
        assert exc.code  # refused with a stable code
    else:
        # Receipts, acks and attestations bind H: one notice must have one digest.
        assert again.digest == env.digest


# ------------------------------------------------------------------ key commitment (S4)


def test_divergent_content_key_stanza_is_rejected(fed: Federation) -> None:
    """A malicious sender wrapping K1 for B and K2 for C: C gets key_commitment_mismatch."""
    env = send(fed)
    sender = fed.desks[A].secrets
    k1, plaintext = unseal(env, fed.desks[B].secrets)
    k2 = os.urandom(32)
    header = fresh_header(header_of(env), sender=sender, content_key=k1,
                          stanzas=[wrap_for(fed.verified(B), k1),
                                   wrap_for(fed.verified(C), k2)])
    assert header["kc"] == commit(k1) != commit(k2)
    forged = assemble(header, plaintext, k1, sender.identity)
    submit(fed, forged)  # properly signed: only the recipients can tell
    assert open_as(fed, forged, B).report == report()
    with pytest.raises(KeyCommitmentMismatch) as exc:
        open_as(fed, forged, C)
    assert exc.value.code == "key_commitment_mismatch"


def test_commitment_matches_documented_construction(fed: Federation) -> None:
    """The signed kc is BLAKE2b-256(key=K, personal="hotline-kc-v1") of the empty string."""
    env = send(fed)
    content_key, _ = unseal(env, fed.desks[C].secrets)
    assert env.header.kc == commit(content_key)


# ------------------------------------------------------------------ forwarding (attribution)


def test_surreptitiously_forwarded_notice_is_rejected(fed: Federation) -> None:
    """B re-seals A's signed content to C under its own envelope: not_intended_recipient."""
    env = send(fed, to=(B,))
    b = fed.desks[B].secrets
    _, plaintext = unseal(env, b)
    new_key = os.urandom(32)
    header = fresh_header(header_of(env), sender=b, content_key=new_key,
                          stanzas=[wrap_for(fed.verified(C), new_key)])
    forged = assemble(header, plaintext, new_key, b.identity)
    submit(fed, forged, sender=B)  # a genuine notice from B as far as the relay can see
    with pytest.raises(NotIntendedRecipient) as exc:
        open_as(fed, forged, C, sender=B)
    assert exc.value.code == "not_intended_recipient"


def test_forwarded_notice_keeping_original_sender_is_rejected(fed: Federation) -> None:
    """B forwards A's notice to C keeping from=A in the header: the outer check fails."""
    env = send(fed, to=(B,))
    b = fed.desks[B].secrets
    _, plaintext = unseal(env, b)
    new_key = os.urandom(32)
    header = fresh_header(header_of(env), sender=fed.desks[A].secrets, content_key=new_key,
                          stanzas=[wrap_for(fed.verified(C), new_key)])
    assert header["from"] == A
    forged = assemble(header, plaintext, new_key, b.identity)
    with pytest.raises(BadSignature) as exc:
        submit(fed, forged, sender=A)
    assert exc.value.code == "bad_signature"
    with pytest.raises(BadSignature) as exc:
        open_as(fed, forged, C, sender=A)
    assert exc.value.code == "bad_signature"
    # Checking it against B's key instead (the real signer) fails on the named sender.
    with pytest.raises(UntrustedKey) as exc2:
        open_as(fed, forged, C, sender=B)
    assert exc2.value.code == "unknown_or_revoked_key"


def test_forwarded_copy_to_a_co_recipient_is_rejected(fed: Federation) -> None:
    """B re-sends A's notice (addressed to B and C) to C as its own: inner sender mismatch."""
    env = send(fed)
    b = fed.desks[B].secrets
    _, plaintext = unseal(env, b)
    new_key = os.urandom(32)
    header = fresh_header(header_of(env), sender=b, content_key=new_key,
                          stanzas=[wrap_for(fed.verified(C), new_key)])
    forged = assemble(header, plaintext, new_key, b.identity)
    with pytest.raises(BadSignature) as exc:
        open_as(fed, forged, C, sender=B)
    assert exc.value.code == "bad_signature"


def test_outer_signature_stripped_and_resigned_by_co_recipient_is_rejected(
        fed: Federation) -> None:
    """A co-recipient re-signing the outside as itself (from=B) fails the inner signer check."""
    env = send(fed)
    b = fed.desks[B].secrets
    content_key, plaintext = unseal(env, b)
    header = header_of(env) | {"from": B, "from_kid": b.ik_kid,
                               "stanzas": [s for s in header_of(env)["stanzas"]
                                           if s["to"] != B]}
    forged = assemble(header, plaintext, content_key, b.identity)
    submit(fed, forged, sender=B)
    with pytest.raises(BadSignature) as exc:
        open_as(fed, forged, C, sender=B)
    assert exc.value.code == "bad_signature"
    assert "from" in str(exc.value)


def test_outer_signature_stripped_and_resigned_without_content_key_is_rejected(
        fed: Federation) -> None:
    """Re-signing A's envelope as desk D (header.from=D) without K breaks the AEAD binding."""
    d = fed.add_desk("us.nsa").secrets
    env = send(fed)
    header_raw = pack(header_of(env) | {"from": d.desk, "from_kid": d.ik_kid})
    forged = pack([header_raw, env.ciphertext,
                   d.identity.sign(Domain.ENVELOPE + header_raw +
                                   b2b(env.ciphertext)).signature])
    submit(fed, forged, sender="us.nsa")
    with pytest.raises(DecryptionFailed) as exc:
        open_as(fed, forged, B, sender="us.nsa")
    assert exc.value.code == "decryption_failed"


def test_outer_signature_replaced_by_another_desks_keeping_sender_is_rejected(
        fed: Federation) -> None:
    """A signature by another desk over A's unchanged header and ciphertext is refused."""
    env = send(fed)
    other = fed.desks[B].secrets.identity
    forged = pack([env.header.raw, env.ciphertext,
                   other.sign(Domain.ENVELOPE + env.header.raw + b2b(env.ciphertext)).signature])
    with pytest.raises(BadSignature) as exc:
        submit(fed, forged)
    assert exc.value.code == "bad_signature"


# ------------------------------------------------------------------ domain separation


@pytest.mark.parametrize("domain", [
    name for name in vars(Domain) if name.isupper() and name != "ENVELOPE"])
def test_outer_signature_with_another_domain_prefix_is_rejected(
        fed: Federation, domain: str) -> None:
    """The sender's own signature made under another domain prefix is not an envelope one."""
    env = send(fed)
    sender = fed.desks[A].secrets
    content_key, plaintext = unseal(env, fed.desks[B].secrets)
    forged = assemble(env.header.raw, plaintext, content_key, sender.identity,
                      domain=getattr(Domain, domain))
    with pytest.raises(BadSignature) as exc:
        submit(fed, forged)
    assert exc.value.code == "bad_signature"
    with pytest.raises(BadSignature) as exc:
        open_as(fed, forged, B)
    assert exc.value.code == "bad_signature"


def test_domain_prefixes_are_distinct_and_none_prefixes_another() -> None:
    """No two signature domains coincide or prefix one another (else signatures could cross)."""
    domains = [v for k, v in vars(Domain).items() if k.isupper()]
    assert len(domains) == len(set(domains)) >= 13
    for a in domains:
        for b in domains:
            assert a == b or not b.startswith(a)


# ------------------------------------------------------------------ trust (S2, sovereignty)


def test_desk_certified_by_wrong_country_is_untrusted(fed: Federation) -> None:
    """A US desk certified by the CN authority is refused by verify_card (UntrustedKey)."""
    fed.add_desk("us.rogue", authority="cn")
    with pytest.raises(UntrustedKey) as exc:
        fed.trust.verify_card(fed.desks["us.rogue"].card, NOW)  # type: ignore[union-attr]
    assert exc.value.code == "unknown_or_revoked_key"


def test_revoked_sender_key_is_untrusted(fed: Federation) -> None:
    """After its authority revokes it, a desk's card and signer checks raise UntrustedKey."""
    env = send(fed)
    fed.revoke(A)
    with pytest.raises(UntrustedKey) as exc:
        fed.verified(A)
    assert exc.value.code == "unknown_or_revoked_key"
    with pytest.raises(UntrustedKey) as exc:
        fed.trust.verify_signer(fed.desks[A].card.cert, NOW)  # type: ignore[union-attr]
    assert exc.value.code == "unknown_or_revoked_key"
    assert Envelope.decode(env.raw).header.sender == A  # the notice itself still parses
    fed.verified(B)  # other desks are unaffected


def test_revocation_by_foreign_authority_is_refused(fed: Federation) -> None:
    """The CN authority cannot revoke a US desk: the revocation does not verify."""
    us = fed.desks[A]
    rev = Revocation.issue(us.desk, us.card.cert.key_id, fed.authorities["cn"], NOW, "hostile")
    with pytest.raises(BadSignature) as exc:
        fed.trust.add_revocation(rev)  # type: ignore[union-attr]
    assert exc.value.code == "bad_signature"
    assert fed.trust.revocations == []  # type: ignore[union-attr]
    assert fed.verified(A).desk == A


def test_foreign_authority_cannot_revoke_by_naming_its_own_desk(fed: Federation) -> None:
    """A US revocation naming a US desk but carrying cn.cac's key id must not revoke cn.cac."""
    cn = fed.desks[B]
    rev = Revocation.issue("us.caisi", cn.card.cert.key_id, fed.authorities["us"], NOW, "hostile")
    try:
        fed.trust.add_revocation(rev)  # type: ignore[union-attr]
    except UntrustedKey:
        pass  # refusing the mismatched revocation outright is fine too
    assert fed.verified(B).desk == B


def test_expired_desk_certificate_is_untrusted(fed: Federation) -> None:
    """A desk certificate is valid up to, not at, its not_after (unknown_or_revoked_key)."""
    fed.add_desk("us.short", not_after=NOW + 1000)
    assert fed.verified("us.short", now=NOW + 999).desk == "us.short"
    with pytest.raises(UntrustedKey) as exc:
        fed.verified("us.short", now=NOW + 1000)
    assert exc.value.code == "unknown_or_revoked_key"


def _card_with_ek(fed: Federation, name: str, ek_cert: EkCertificate) -> DeskCard:
    return DeskCard(fed.desks[name].card.cert, (ek_cert,))


@pytest.mark.parametrize(("not_before", "not_after", "now"), [
    (NOW - 40 * DAY, NOW - 10 * DAY, NOW),       # expired
    (NOW - 40 * DAY, NOW, NOW),                  # expires exactly now
    (NOW + DAY, NOW + 30 * DAY, NOW),            # not yet valid
])
def test_expired_or_future_ek_certificate_is_invalid(
        fed: Federation, not_before: int, not_after: int, now: int) -> None:
    """An encryption-key certificate outside its validity window gives key_cert_invalid."""
    d = fed.desks[B]
    ek = EkCertificate.issue(d.desk, d.secrets.identity,
                             bytes(nacl.public.PrivateKey.generate().public_key),
                             not_before, not_after)
    with pytest.raises(KeyCertInvalid) as exc:
        fed.trust.verify_card(_card_with_ek(fed, B, ek), now)  # type: ignore[union-attr]
    assert exc.value.code == "key_cert_invalid"


def test_ek_certificate_signed_by_another_identity_key_is_invalid(fed: Federation) -> None:
    """An EK certificate signed by a key other than the desk's certified one is refused."""
    d = fed.desks[B]
    other = nacl.signing.SigningKey.generate()
    ek = EkCertificate.issue(d.desk, other, bytes(nacl.public.PrivateKey.generate().public_key),
                             NOW - DAY, NOW + DAY)
    with pytest.raises(KeyCertInvalid) as exc:
        fed.trust.verify_card(_card_with_ek(fed, B, ek), NOW)  # type: ignore[union-attr]
    assert exc.value.code == "key_cert_invalid"


def test_ek_certificate_naming_the_right_key_id_but_forged_is_invalid(fed: Federation) -> None:
    """An EK certificate claiming the desk's ik_kid but signed by another key is refused."""
    d = fed.desks[B]
    other = nacl.signing.SigningKey.generate()
    ek_pub = bytes(nacl.public.PrivateKey.generate().public_key)
    body = {"v": 1, "type": "ek-cert", "desk": d.desk, "ik_kid": d.card.cert.key_id,
            "ek": ek_pub, "not_before": NOW - DAY, "not_after": NOW + DAY}
    forged = EkCertificate.decode(make(other, Domain.EK_CERT, body).encode())
    assert forged.ik_kid == d.card.cert.key_id
    with pytest.raises(KeyCertInvalid) as exc:
        fed.trust.verify_card(_card_with_ek(fed, B, forged), NOW)  # type: ignore[union-attr]
    assert exc.value.code == "key_cert_invalid"


def test_ek_certificate_of_another_desk_is_invalid(fed: Federation) -> None:
    """C's encryption-key certificate attached to B's card is not B's encryption key."""
    card = DeskCard(fed.desks[B].card.cert, fed.desks[C].card.eks)
    with pytest.raises(KeyCertInvalid) as exc:
        fed.trust.verify_card(card, NOW)  # type: ignore[union-attr]
    assert exc.value.code == "key_cert_invalid"


def test_invalid_ek_certificate_is_dropped_when_a_valid_one_remains(fed: Federation) -> None:
    """A card with one expired and one valid EK certificate yields only the valid key."""
    d = fed.desks[B]
    old = EkCertificate.issue(d.desk, d.secrets.identity,
                              bytes(nacl.public.PrivateKey.generate().public_key),
                              NOW - 40 * DAY, NOW - 10 * DAY)
    card = DeskCard(d.card.cert, (old, *d.card.eks))
    keys = fed.trust.verify_card(card, NOW).encryption_keys  # type: ignore[union-attr]
    assert list(keys) == [d.card.eks[0].key_id]


# ------------------------------------------------------------------ freshness (S5)


def test_freshness_limits_are_five_minutes_and_a_day() -> None:
    """The relay's window is 5 minutes into the future and 24 hours into the past."""
    assert MAX_FUTURE_MS == 5 * 60 * 1000
    assert MAX_AGE_MS == 24 * 60 * 60 * 1000


@pytest.mark.parametrize("relay_now", [NOW - MAX_FUTURE_MS - 1, NOW + MAX_AGE_MS + 1])
def test_stale_or_future_notice_is_rejected_by_relay(fed: Federation, relay_now: int) -> None:
    """created_at 5 min + 1 ms ahead of, or 24 h + 1 ms behind, the relay clock: stale_or_future."""
    env = send(fed)
    with pytest.raises(StaleOrFuture) as exc:
        check_submission(env, sender=fed.verified(A), now=relay_now)
    assert exc.value.code == "stale_or_future"
    with pytest.raises(StaleOrFuture):
        check_fresh(env.header, relay_now)


@pytest.mark.parametrize("relay_now", [NOW - MAX_FUTURE_MS, NOW, NOW + MAX_AGE_MS])
def test_notice_exactly_at_the_freshness_limit_is_accepted(
        fed: Federation, relay_now: int) -> None:
    """created_at exactly 5 min ahead or exactly 24 h behind the relay clock is accepted."""
    env = send(fed)
    check_submission(env, sender=fed.verified(A), now=relay_now)
    check_fresh(env.header, relay_now)
    assert env.header.created_at == NOW


# ------------------------------------------------------------------ recipients


def test_notice_not_addressed_to_me_is_rejected(fed: Federation) -> None:
    """A desk with no stanza in the header gets not_intended_recipient."""
    env = send(fed, to=(B,))
    with pytest.raises(NotIntendedRecipient) as exc:
        open_as(fed, env.raw, C)
    assert exc.value.code == "not_intended_recipient"


def test_sender_cannot_open_its_own_notice(fed: Federation) -> None:
    """The sender is never a recipient, so it holds no stanza: not_intended_recipient."""
    env = send(fed)
    with pytest.raises(NotIntendedRecipient) as exc:
        open_as(fed, env.raw, A)
    assert exc.value.code == "not_intended_recipient"


def test_recipient_with_rotated_out_encryption_key_cannot_open(fed: Federation) -> None:
    """A recipient that no longer holds the EK the stanza names gets unknown_encryption_key."""
    env = send(fed)
    b = fed.desks[B].secrets
    rotated = DeskSecrets(b.desk, b.identity, (
        EncryptionKeyPair(nacl.public.PrivateKey.generate(), NOW, NOW + 30 * DAY,
                          NOW + 60 * DAY),))
    with pytest.raises(DecryptionFailed) as exc:
        open_envelope(env, me=rotated, sender=fed.verified(A))
    assert exc.value.code == "unknown_encryption_key"


def test_stanza_wrapped_to_another_key_with_our_kid_does_not_open(fed: Federation) -> None:
    """A sender wrapping B's key to a stranger's EK under B's ek_kid: decryption_failed."""
    env = send(fed)
    sender = fed.desks[A].secrets
    content_key, plaintext = unseal(env, fed.desks[B].secrets)
    stranger = nacl.public.PrivateKey.generate().public_key
    bad = header_of(env)
    bad["stanzas"] = [
        s if s["to"] != B else s | {"wrapped": bytes(
            nacl.public.SealedBox(stranger).encrypt(content_key))}
        for s in bad["stanzas"]]
    forged = assemble(bad, plaintext, content_key, sender.identity)
    with pytest.raises(DecryptionFailed) as exc:
        open_as(fed, forged, B)
    assert exc.value.code == "decryption_failed"
    assert open_as(fed, forged, C).report == report()


def test_sender_key_other_than_the_verified_one_is_untrusted(fed: Federation) -> None:
    """Checking A's envelope against B's verified keys fails: header names another sender."""
    env = send(fed)
    with pytest.raises(UntrustedKey) as exc:
        check_submission(env, sender=fed.verified(B), now=NOW)
    assert exc.value.code == "unknown_or_revoked_key"


# ------------------------------------------------------------------ confidentiality (S1)


def test_plaintext_never_appears_in_the_envelope(fed: Federation) -> None:
    """Title, summary, body, translation and attachment bytes are absent from env.raw."""
    secret = report(
        title="CANARY-TITLE 模型权重泄露 7f3a",
        summary="CANARY-SUMMARY 1b9e",
        body="CANARY-BODY 前沿模型的权重出现在公共种子站点上 c4d2" * 20,
        translations=(Translation("zh", "CANARY-ZH 标题", "摘要", "正文"),),
        attachments=(Attachment("hashes.txt", "text/plain",
                                                   b"CANARY-ATTACHMENT-BYTES" * 8),),
    )
    env = send(fed, report=secret)
    for needle in ("CANARY", "模型权重", "前沿模型", "标题", "摘要", "正文"):
        assert needle.encode() not in env.raw
    assert b"CANARY-ATTACHMENT-BYTES" not in env.raw
    assert open_as(fed, env.raw, B).report == secret


def test_header_carries_routing_metadata_only(fed: Federation) -> None:
    """The cleartext header has exactly the routing fields of the design, nothing else."""
    env = send(fed)
    assert set(header_of(env)) == {"v", "notice_id", "from", "from_kid", "created_at",
                                   "severity", "status", "in_reply_to", "nonce", "kc",
                                   "stanzas"}
    for stanza in header_of(env)["stanzas"]:
        assert set(stanza) == {"to", "ek_kid", "wrapped"}
        assert len(stanza["wrapped"]) == 80


def test_relay_checks_submission_with_public_data_only(fed: Federation) -> None:
    """check_submission works from wire bytes, the pinned root and the sender's public card."""
    env = send(fed)
    assert fed.root is not None
    trust = TrustStore(FederationRoot.decode(fed.root.encode()))
    sender = trust.verify_card(DeskCard.decode(fed.desks[A].card.encode()), NOW)
    wire = Envelope.decode(bytes(env.raw))
    check_submission(wire, sender=sender, now=NOW)
    assert wire.header.recipients == (B, C) and wire.header.severity == "high"
    assert wire.digest == env.digest
    with pytest.raises(BadSignature):
        check_submission(Envelope.decode(
            msgpack.packb([env.header.raw, env.ciphertext + b"\x00", env.signature],
                          use_bin_type=True)), sender=sender, now=NOW)
