"""The federation root and certificates: sovereignty and root updates (DESIGN trust model)."""

from __future__ import annotations

import nacl.signing
import pytest

from keys import (
    AuthorityCard,
    BadSignature,
    CertRequest,
    DeskCertificate,
    FederationRoot,
    MalformedInput,
    RootInvalid,
    TrustStore,
    UntrustedKey,
)
from keys.ids import Country, DeskId
from keys.primitives import Domain
from tests.factory import DAY, NOW, YEAR, Federation
from tests.keys._helpers import flip, pack, unpack

CN, US, EU = Country("cn"), Country("us"), Country("eu")


@pytest.fixture
def fed() -> Federation:
    return Federation.create()


def new_root(fed: Federation, version: int, members: dict[Country, bytes] | None = None, *,
             expires_at: int = NOW + YEAR, issued_at: int = NOW - DAY) -> FederationRoot:
    if members is None:
        members = {c: bytes(k.verify_key) for c, k in fed.authorities.items()}
    return FederationRoot.create(version, members, issued_at, expires_at)


def signed(root: FederationRoot, *signers: tuple[Country, nacl.signing.SigningKey]
           ) -> FederationRoot:
    for country, key in signers:
        root = root.signed_by(country, key)
    return root


def all_of(fed: Federation) -> list[tuple[Country, nacl.signing.SigningKey]]:
    return list(fed.authorities.items())


def current(fed: Federation) -> FederationRoot:
    assert fed.root is not None
    return fed.root


def store(fed: Federation) -> TrustStore:
    assert fed.trust is not None
    return fed.trust


# ------------------------------------------------------------------ initial root


def test_initial_root_signed_by_all_members_is_accepted(fed: Federation) -> None:
    """A root every member signed, within its validity, is trusted as pinned."""
    root = FederationRoot.decode(signed(new_root(fed, 1), *all_of(fed)).encode())
    root.check_initial(NOW)
    assert set(root.members) == {CN, US} and root.version == 1


@pytest.mark.parametrize("missing", [CN, US])
def test_initial_root_missing_a_member_signature_is_invalid(
        fed: Federation, missing: Country) -> None:
    """An initial root lacking one member's signature is refused (root_invalid)."""
    root = signed(new_root(fed, 1), *[(c, k) for c, k in all_of(fed) if c != missing])
    with pytest.raises(RootInvalid) as exc:
        FederationRoot.decode(root.encode()).check_initial(NOW)
    assert exc.value.code == "root_invalid"
    assert missing in str(exc.value)


def test_initial_root_with_a_corrupted_member_signature_is_invalid(fed: Federation) -> None:
    """A signature by a member that does not verify counts as missing (root_invalid)."""
    body, sigs = unpack(signed(new_root(fed, 1), *all_of(fed)).encode())
    forged = pack([body, [[c, flip(s, 0) if c == US else s] for c, s in sigs]])
    with pytest.raises(RootInvalid) as exc:
        FederationRoot.decode(forged).check_initial(NOW)
    assert exc.value.code == "root_invalid"


def test_initial_root_signed_by_a_non_member_in_place_of_a_member_is_invalid(
        fed: Federation) -> None:
    """The US signature slot filled by a non-member key does not count."""
    outsider = nacl.signing.SigningKey.generate()
    root = signed(new_root(fed, 1), (CN, fed.authorities[CN]), (US, outsider))
    with pytest.raises(RootInvalid):
        root.check_initial(NOW)


def test_expired_initial_root_is_invalid(fed: Federation) -> None:
    """A fully signed root is refused at and after its expiry time."""
    root = signed(new_root(fed, 1, expires_at=NOW + 10), *all_of(fed))
    root.check_initial(NOW + 9)
    with pytest.raises(RootInvalid) as exc:
        root.check_initial(NOW + 10)
    assert exc.value.code == "root_invalid"


def test_root_expiring_before_issue_is_malformed(fed: Federation) -> None:
    """A root whose expiry is not after its issue time does not even decode (bad_value)."""
    root = signed(new_root(fed, 1), *all_of(fed))
    body = unpack(root.body) | {"expires_at": NOW - DAY}
    with pytest.raises(MalformedInput) as exc:
        FederationRoot.decode(pack([pack(body), []]))
    assert exc.value.code == "bad_value"


# ------------------------------------------------------------------ updates


def test_update_signed_by_all_previous_members_is_accepted(fed: Federation) -> None:
    """Version 2 with the same members, signed by both, replaces version 1."""
    update = FederationRoot.decode(signed(new_root(fed, 2), *all_of(fed)).encode())
    update.check_update(current(fed), NOW)
    store(fed).update_root(update, NOW)
    assert store(fed).root.version == 2
    assert fed.verified("us.caisi").desk == "us.caisi"


@pytest.mark.parametrize("missing", [CN, US])
def test_update_missing_a_previous_member_signature_is_rejected(
        fed: Federation, missing: Country) -> None:
    """An update carrying 1 of 2 required signatures is refused and the old root stays."""
    update = signed(new_root(fed, 2), *[(c, k) for c, k in all_of(fed) if c != missing])
    with pytest.raises(RootInvalid) as exc:
        store(fed).update_root(update, NOW)
    assert exc.value.code == "root_invalid"
    assert store(fed).root.version == 1


def test_rollback_to_lower_version_is_rejected(fed: Federation) -> None:
    """A fully signed root with a lower version than the pinned one is refused."""
    v3 = signed(new_root(fed, 3), *all_of(fed))
    store(fed).update_root(v3, NOW)
    v2 = signed(new_root(fed, 2), *all_of(fed))
    with pytest.raises(RootInvalid) as exc:
        store(fed).update_root(v2, NOW)
    assert exc.value.code == "root_invalid"
    assert "roll back" in str(exc.value)
    assert store(fed).root.version == 3


def test_same_version_with_different_body_is_rejected(fed: Federation) -> None:
    """A second, fully signed root of the pinned version with another body is refused."""
    other = signed(new_root(fed, 1, expires_at=NOW + 2 * YEAR), *all_of(fed))
    assert other.body != current(fed).body
    with pytest.raises(RootInvalid) as exc:
        store(fed).update_root(other, NOW)
    assert exc.value.code == "root_invalid"
    assert store(fed).root.expires_at == NOW + YEAR


def test_same_root_again_is_accepted(fed: Federation) -> None:
    """Re-presenting the pinned root itself is a no-op, not an error."""
    again = FederationRoot.decode(current(fed).encode())
    store(fed).update_root(again, NOW)
    assert store(fed).root.body == current(fed).body


def test_expired_update_is_rejected(fed: Federation) -> None:
    """A fully signed successor that has already expired is refused."""
    update = signed(new_root(fed, 2, issued_at=NOW - 2 * DAY, expires_at=NOW - DAY),
                    *all_of(fed))
    with pytest.raises(RootInvalid) as exc:
        store(fed).update_root(update, NOW)
    assert exc.value.code == "root_invalid"
    assert store(fed).root.version == 1


def test_new_member_must_sign_its_admission(fed: Federation) -> None:
    """Adding EU needs CN's, US's and EU's own signature; without EU's it is refused."""
    eu = nacl.signing.SigningKey.generate()
    members = {c: bytes(k.verify_key) for c, k in fed.authorities.items()} | {
        EU: bytes(eu.verify_key)}
    without_eu = signed(new_root(fed, 2, members), *all_of(fed))
    with pytest.raises(RootInvalid) as exc:
        store(fed).update_root(without_eu, NOW)
    assert exc.value.code == "root_invalid"
    assert "eu" in str(exc.value)
    only_eu_and_us = signed(new_root(fed, 2, members), (EU, eu), (US, fed.authorities[US]))
    with pytest.raises(RootInvalid):
        store(fed).update_root(only_eu_and_us, NOW)
    complete = without_eu.signed_by(EU, eu)
    store(fed).update_root(complete, NOW)
    assert set(store(fed).root.members) == {CN, EU, US}


def test_removing_a_member_needs_that_members_signature(fed: Federation) -> None:
    """A successor dropping CN signed by US alone is refused: CN was a required signer."""
    members = {US: bytes(fed.authorities[US].verify_key)}
    update = signed(new_root(fed, 2, members), (US, fed.authorities[US]))
    with pytest.raises(RootInvalid) as exc:
        store(fed).update_root(update, NOW)
    assert "cn" in str(exc.value)


def test_authority_key_rotation_without_the_old_key_is_rejected(fed: Federation) -> None:
    """Replacing the US authority key with a root signed only by the new key is refused."""
    new_us = nacl.signing.SigningKey.generate()
    members = {CN: bytes(fed.authorities[CN].verify_key), US: bytes(new_us.verify_key)}
    only_new = signed(new_root(fed, 2, members), (CN, fed.authorities[CN]), (US, new_us))
    with pytest.raises(RootInvalid) as exc:
        store(fed).update_root(only_new, NOW)
    assert exc.value.code == "root_invalid"
    assert store(fed).root.members[US] == bytes(fed.authorities[US].verify_key)


def test_authority_key_rotation_signed_by_old_and_new_key_is_accepted(fed: Federation) -> None:
    """A successor replacing the US key, signed by CN and the old and new US keys, is trusted."""
    new_us = nacl.signing.SigningKey.generate()
    members = {CN: bytes(fed.authorities[CN].verify_key), US: bytes(new_us.verify_key)}
    update = signed(new_root(fed, 2, members), (CN, fed.authorities[CN]),
                    (US, fed.authorities[US]), (US, new_us))
    update = FederationRoot.decode(update.encode())
    store(fed).update_root(update, NOW)
    assert store(fed).root.members[US] == bytes(new_us.verify_key)


def test_authority_key_rotation_via_leaving_and_rejoining(fed: Federation) -> None:
    """Dropping US (signed by all) and re-adding it with a new key (signed by all) works."""
    new_us = nacl.signing.SigningKey.generate()
    cn_only = {CN: bytes(fed.authorities[CN].verify_key)}
    store(fed).update_root(signed(new_root(fed, 2, cn_only), *all_of(fed)), NOW)
    with pytest.raises(UntrustedKey):
        fed.verified("us.caisi")  # while US is not a member its desks are not trusted
    rejoined = cn_only | {US: bytes(new_us.verify_key)}
    store(fed).update_root(
        signed(new_root(fed, 3, rejoined), (CN, fed.authorities[CN]), (US, new_us)), NOW)
    assert store(fed).root.members[US] == bytes(new_us.verify_key)


def test_desk_certified_under_replaced_authority_key_is_untrusted(fed: Federation) -> None:
    """Once the root no longer lists the old CN key, cn.cac's certificate stops verifying."""
    old_card = fed.desks["cn.cac"].card
    new_cn = nacl.signing.SigningKey.generate()
    members = {CN: bytes(new_cn.verify_key), US: bytes(fed.authorities[US].verify_key)}
    root = signed(new_root(fed, 2, members), (CN, new_cn), (US, fed.authorities[US]))
    trust = TrustStore(root)
    root.check_initial(NOW)
    with pytest.raises(UntrustedKey) as exc:
        trust.verify_card(old_card, NOW)
    assert exc.value.code == "unknown_or_revoked_key"


def test_expired_root_makes_every_desk_untrusted(fed: Federation) -> None:
    """After the pinned root expires, certificates no longer verify (unknown_or_revoked_key)."""
    with pytest.raises(UntrustedKey) as exc:
        store(fed).verify_card(fed.desks["us.caisi"].card, NOW + YEAR)
    assert exc.value.code == "unknown_or_revoked_key"


def test_desk_of_non_member_country_is_untrusted(fed: Federation) -> None:
    """A certificate for a desk of a country outside the root is refused."""
    eu = nacl.signing.SigningKey.generate()
    ik = nacl.signing.SigningKey.generate()
    cert = DeskCertificate.issue(CertRequest.create(DeskId("eu.enisa"), ik, NOW), EU, eu,
                                 NOW - DAY, NOW + DAY)
    with pytest.raises(UntrustedKey) as exc:
        store(fed).verify_cert(cert, NOW)
    assert exc.value.code == "unknown_or_revoked_key"


# ------------------------------------------------------------------ self-signed documents


def test_authority_card_round_trips(fed: Federation) -> None:
    """A self-signed authority card decodes to its country and key."""
    card = AuthorityCard.decode(AuthorityCard.create(US, fed.authorities[US], NOW).encode())
    assert card.country == US and card.key == bytes(fed.authorities[US].verify_key)


@pytest.mark.parametrize("change", [{"country": "cn"}, {"created_at": NOW + 1},
                                    {"key": bytes(nacl.signing.SigningKey.generate()
                                                  .verify_key)}])
def test_tampered_authority_card_is_rejected(fed: Federation, change: dict[str, object]) -> None:
    """Editing an authority card's country, time or key after signing gives bad_signature."""
    card = AuthorityCard.create(US, fed.authorities[US], NOW)
    body = unpack(card.signed.body) | change
    with pytest.raises(BadSignature) as exc:
        AuthorityCard.decode(pack([pack(body), card.signed.signature]))
    assert exc.value.code == "bad_signature"


def test_authority_card_signed_under_another_domain_is_rejected(fed: Federation) -> None:
    """An authority card signed with the root prefix instead of its own does not verify."""
    sk = fed.authorities[US]
    body = {"v": 1, "type": "authority-card", "country": "us", "key": bytes(sk.verify_key),
            "created_at": NOW}
    raw = pack(body)
    with pytest.raises(BadSignature):
        AuthorityCard.decode(pack([raw, sk.sign(Domain.ROOT + raw).signature]))


@pytest.mark.parametrize("change", [{"desk": "us.other"}, {"created_at": NOW + 1},
                                    {"ik": bytes(nacl.signing.SigningKey.generate()
                                                 .verify_key)}])
def test_tampered_cert_request_is_rejected(change: dict[str, object]) -> None:
    """Editing a certification request after its self-signature gives bad_signature."""
    ik = nacl.signing.SigningKey.generate()
    req = CertRequest.create(DeskId("us.caisi"), ik, NOW)
    assert CertRequest.decode(req.encode()).identity_key == bytes(ik.verify_key)
    body = unpack(req.signed.body) | change
    with pytest.raises(BadSignature) as exc:
        CertRequest.decode(pack([pack(body), req.signed.signature]))
    assert exc.value.code == "bad_signature"


def test_authority_refuses_to_certify_another_countrys_desk(fed: Federation) -> None:
    """DeskCertificate.issue by the CN authority for a US desk raises UntrustedKey."""
    req = CertRequest.create(DeskId("us.caisi"), nacl.signing.SigningKey.generate(), NOW)
    with pytest.raises(UntrustedKey) as exc:
        DeskCertificate.issue(req, CN, fed.authorities[CN], NOW, NOW + DAY)
    assert exc.value.code == "unknown_or_revoked_key"


def test_desk_certificate_with_swapped_identity_key_is_untrusted(fed: Federation) -> None:
    """A genuine certificate whose ik was replaced after signing is refused by the store."""
    cert = fed.desks["us.caisi"].card.cert
    body = unpack(cert.signed.body) | {"ik": bytes(nacl.signing.SigningKey.generate()
                                                   .verify_key)}
    forged = DeskCertificate.decode(pack([pack(body), cert.signed.signature]))
    with pytest.raises(UntrustedKey) as exc:
        store(fed).verify_cert(forged, NOW)
    assert exc.value.code == "unknown_or_revoked_key"


def test_desk_certificate_moved_to_another_desk_name_is_untrusted(fed: Federation) -> None:
    """Renaming a certificate's desk (same country) after signing is refused."""
    cert = fed.desks["us.caisi"].card.cert
    body = unpack(cert.signed.body) | {"desk": "us.whitehouse"}
    forged = DeskCertificate.decode(pack([pack(body), cert.signed.signature]))
    with pytest.raises(UntrustedKey):
        store(fed).verify_cert(forged, NOW)


def test_desk_certificate_not_yet_valid_is_untrusted(fed: Federation) -> None:
    """A certificate is refused before its not_before."""
    req = CertRequest.create(DeskId("us.later"), nacl.signing.SigningKey.generate(), NOW)
    cert = DeskCertificate.issue(req, US, fed.authorities[US], NOW + 1, NOW + DAY)
    with pytest.raises(UntrustedKey):
        store(fed).verify_cert(cert, NOW)
    store(fed).verify_cert(cert, NOW + 1)


# ------------------------------------------------------------------ remembered verifications


def test_remembered_certificate_still_meets_every_other_check(fed: Federation) -> None:
    """A certificate verified once is not re-verified, but a store that has seen it still
    refuses: its forgeries (same body with another signature, another body with the same
    signature), it outside its validity, it after its key is revoked, and it once a new root
    gives its country another authority key."""
    trust = store(fed)
    cert = fed.desks["us.caisi"].card.cert
    trust.verify_cert(cert, NOW)
    trust.verify_cert(cert, NOW)  # remembered: same answer
    bad_sig = DeskCertificate.decode(pack([cert.signed.body, flip(cert.signed.signature, 5)]))
    with pytest.raises(UntrustedKey):
        trust.verify_cert(bad_sig, NOW)
    renamed = DeskCertificate.decode(pack([pack(unpack(cert.signed.body) | {"desk": "us.other"}),
                                           cert.signed.signature]))
    with pytest.raises(UntrustedKey):
        trust.verify_cert(renamed, NOW)
    with pytest.raises(UntrustedKey):
        trust.verify_cert(cert, cert.not_after)
    new_us = nacl.signing.SigningKey.generate()
    members = {c: bytes(k.verify_key) for c, k in fed.authorities.items()}
    members[US] = bytes(new_us.verify_key)
    rotated = TrustStore(signed(new_root(fed, 2, members), (US, new_us),
                                *[(c, k) for c, k in all_of(fed) if c != US]))
    rotated._verified_certs = trust._verified_certs  # what the first store remembered
    with pytest.raises(UntrustedKey):
        rotated.verify_cert(cert, NOW)  # signed by the old US key, not the new one
    fed.revoke("us.caisi")
    with pytest.raises(UntrustedKey) as exc:
        trust.verify_cert(cert, NOW)
    assert "revoked" in str(exc.value)
