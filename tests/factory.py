"""Build federations, desks and notices for tests, with a fixed clock and fresh keys."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import nacl.public
import nacl.signing

from keys import (
    CertRequest,
    DeskCard,
    DeskCertificate,
    DeskSecrets,
    EkCertificate,
    EncryptionKeyPair,
    FederationRoot,
    IncidentReport,
    Revocation,
    TrustStore,
    VerifiedDesk,
)
from keys.ids import Country, DeskId, country_of
from keys.xwing import XWingPrivateKey

NOW = 1_790_000_000_000  # a fixed "now" in UTC milliseconds (2026-09-21)
DAY = 86_400_000
YEAR = 365 * DAY


@dataclass
class Desk:
    secrets: DeskSecrets
    card: DeskCard

    @property
    def desk(self) -> DeskId:
        return self.secrets.desk


@dataclass
class Federation:
    """Countries with authority keys, a root signed by all, and desks certified by them."""

    authorities: dict[Country, nacl.signing.SigningKey] = field(default_factory=dict)
    root: FederationRoot | None = None
    desks: dict[str, Desk] = field(default_factory=dict)
    trust: TrustStore | None = None

    @classmethod
    def create(cls, countries: tuple[str, ...] = ("cn", "us"), *,
               desks: tuple[str, ...] = ("us.caisi", "cn.cac"),
               hybrid: tuple[str, ...] = (),
               hybrid_required_from: int | None = None) -> Federation:
        """``hybrid`` names the desks given an X-Wing key instead of an X25519 one."""
        fed = cls()
        for c in countries:
            fed.authorities[Country(c)] = nacl.signing.SigningKey.generate()
        root = FederationRoot.create(
            1, {c: bytes(k.verify_key) for c, k in fed.authorities.items()}, NOW - DAY,
            NOW + YEAR, hybrid_required_from=hybrid_required_from)
        for c, k in fed.authorities.items():
            root = root.signed_by(c, k)
        root.check_initial(NOW)
        fed.root = root
        fed.trust = TrustStore(root)
        for d in desks:
            fed.add_desk(d, hybrid=d in hybrid)
        return fed

    def add_desk(self, name: str, *, authority: str | None = None,
                 not_after: int = NOW + YEAR, not_before: int = NOW - DAY,
                 hybrid: bool = False) -> Desk:
        desk = DeskId(name)
        ik = nacl.signing.SigningKey.generate()
        ek: nacl.public.PrivateKey | XWingPrivateKey = (
            XWingPrivateKey(os.urandom(32)) if hybrid else nacl.public.PrivateKey.generate())
        request = CertRequest.create(desk, ik, NOW - DAY)
        country = Country(authority or country_of(desk))
        cert = DeskCertificate.issue(
            request, country_of(desk), self.authorities[country], not_before, not_after)
        pk = ek.public_key if isinstance(ek, XWingPrivateKey) else bytes(ek.public_key)
        ek_cert = EkCertificate.issue(desk, ik, pk, NOW - DAY, NOW + 30 * DAY)
        secrets = DeskSecrets(desk, ik, (EncryptionKeyPair(ek, NOW - DAY, NOW + 30 * DAY,
                                                           NOW + 60 * DAY),))
        d = Desk(secrets, DeskCard(cert, (ek_cert,)))
        self.desks[name] = d
        return d

    def verified(self, name: str, now: int = NOW) -> VerifiedDesk:
        assert self.trust is not None
        return self.trust.verify_card(self.desks[name].card, now)

    def revoke(self, name: str) -> Revocation:
        d = self.desks[name]
        country = country_of(d.desk)
        rev = Revocation.issue(d.desk, d.card.cert.key_id, self.authorities[country], NOW,
                               "key compromised")
        assert self.trust is not None
        self.trust.add_revocation(rev)
        return rev


def report(**overrides: object) -> IncidentReport:
    base: dict[str, object] = dict(
        title="Model weights of FrontierX-3 posted on a public tracker",
        summary="Weights for a frontier model appeared on a torrent tracker at 02:10 UTC.",
        body="Hashes match the lab's release candidate. Mirrors are spreading.",
        category="model-weights-leak", aware_at=NOW - 3_600_000,
    )
    base.update(overrides)
    return IncidentReport(**base)  # type: ignore[arg-type]
