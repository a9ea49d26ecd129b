"""Who may speak for whom: the federation root, certificates, revocations and desk cards.

Sovereignty is the rule: only a country's own authority key certifies or revokes that
country's desks, and the federation root (the list of member countries and their
authority keys) changes only with the signatures of every member of the version before it.

    authority key (offline, per country) ──certifies──▶ desk identity key (Ed25519)
                                                           └──certifies──▶ encryption key (X25519,
                                                                          or hybrid X-Wing)
    federation root = {members: [(country, authority key)], version, expiry}, signed by all

Nothing here reads a clock: every check takes ``now`` (UTC milliseconds).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import nacl.signing

from keys import codec
from keys.codec import blob, fields, list_of, record, text, timestamp, uint, version
from keys.errors import HotlineError, KeyCertInvalid, RootInvalid, UntrustedKey
from keys.ids import (
    KEY_ID_BYTES,
    Country,
    DeskId,
    check_country,
    check_desk,
    country_of,
)
from keys.primitives import (
    SIGNATURE_BYTES,
    Domain,
    check_x25519_public_key,
    key_id,
    sign,
    verify,
)
from keys.secrets import CLASSICAL, HYBRID
from keys.signed import SignedBytes, make, split
from keys.xwing import PUBLIC_KEY_BYTES as HYBRID_PUBLIC_KEY_BYTES
from keys.xwing import check_public_key as check_hybrid_public_key

#: The signature algorithms a hybrid key certificate may name (in its signed body, so that
#: a second, post-quantum signature cannot be stripped once it is required). Today: one.
SIGNATURE_ALGORITHMS = ("ed25519",)

MAX_DOC_BYTES = 64 * 1024
#: A federation is a handful of countries; 64 leaves room without unbounded verification work.
MAX_MEMBERS = 64
#: A desk publishes its current encryption key and at most a few still in their grace period.
MAX_EKS_PER_CARD = 4
DAY_MS = 86_400_000
#: A root issued this far ahead of our clock is still accepted (clocks differ).
ROOT_CLOCK_SKEW_MS = 10 * 60 * 1000
MAX_SIGNATURES_PER_COUNTRY = 2
DEFAULT_EK_LIFETIME_MS = 30 * DAY_MS
DEFAULT_EK_GRACE_MS = 30 * DAY_MS

_public_key = blob(size=32, nonzero=True)
_kid = blob(size=KEY_ID_BYTES)


def _check_window(not_before: int, not_after: int, what: str) -> None:
    if not_after <= not_before:
        codec.fail("bad_value", f"{what} expires before it becomes valid")


# ------------------------------------------------------------------- authority cards


@dataclass(frozen=True, slots=True)
class AuthorityCard:
    """A country authority's public key, self-signed, exchanged to build the root."""

    country: Country
    key: bytes
    created_at: int
    signed: SignedBytes

    @classmethod
    def create(cls, country: Country, sk: nacl.signing.SigningKey, now: int) -> AuthorityCard:
        body = {
            "v": 1,
            "type": "authority-card",
            "country": country,
            "key": bytes(sk.verify_key),
            "created_at": now,
        }
        return cls(country, bytes(sk.verify_key), now, make(sk, Domain.AUTHORITY_CARD, body))

    @classmethod
    def decode(cls, data: bytes) -> AuthorityCard:
        signed, value = split(data, what="authority card", max_bytes=MAX_DOC_BYTES)
        f = fields(
            value,
            {
                "v": version(1),
                "type": codec.const("authority-card"),
                "country": check_country,
                "key": _public_key,
                "created_at": timestamp,
            },
            "authority card",
        )
        signed.verify(f["key"], Domain.AUTHORITY_CARD, signer=f"authority {f['country']}")
        return cls(Country(f["country"]), f["key"], f["created_at"], signed)

    def encode(self) -> bytes:
        return self.signed.encode()


# ------------------------------------------------------------------- federation root


@dataclass(frozen=True, slots=True)
class FederationRoot:
    """A version of the federation root: members, their authority keys, validity.

    Decoding checks shape only; trust comes from :meth:`check_initial` (a root pinned out
    of band) or :meth:`check_update` (a successor of a trusted root).
    """

    version: int
    issued_at: int
    expires_at: int
    members: dict[Country, bytes]
    body: bytes
    #: Up to two signatures per country: a country that rotates its authority key signs
    #: the successor root with the old key (required by the previous version) and the new.
    signatures: dict[Country, tuple[bytes, ...]] = field(default_factory=dict)
    #: From this time on (UTC ms) every desk must use a hybrid encryption key: classical
    #: key certificates stop counting and notices sealed classically are refused. None: no
    #: such rule. Signed by every member like the rest of the root.
    hybrid_required_from: int | None = None

    @classmethod
    def create(
        cls, version: int, members: dict[Country, bytes], issued_at: int, expires_at: int,
        *, hybrid_required_from: int | None = None,
    ) -> FederationRoot:
        if not members:
            raise RootInvalid("a federation root needs at least one member")
        _check_window(issued_at, expires_at, "federation root")
        body: dict[str, object] = {
            "v": 1,
            "type": "root",
            "version": version,
            "issued_at": issued_at,
            "expires_at": expires_at,
            "members": [{"country": c, "key": members[c]} for c in sorted(members)],
        }
        if hybrid_required_from is not None:
            # Present only when set: a root without the rule keeps its exact v1 bytes.
            body["hybrid_required_from"] = hybrid_required_from
        return cls.decode(codec.pack([codec.pack(body), []]))

    def requires_hybrid(self, at: int) -> bool:
        """Whether this root requires hybrid keys for something created at ``at``."""
        return self.hybrid_required_from is not None and at >= self.hybrid_required_from

    @classmethod
    def decode(cls, data: bytes) -> FederationRoot:
        outer = codec.array(
            codec.unpack(data, what="federation root", max_bytes=MAX_DOC_BYTES),
            2,
            "federation root",
        )
        body = blob(max_size=MAX_DOC_BYTES)(outer[0], "federation root.body")
        sig_list = list_of(lambda v, p: codec.array(v, 2, p),
                           max_items=MAX_MEMBERS * MAX_SIGNATURES_PER_COUNTRY)(
            outer[1], "federation root.signatures"
        )
        value = codec.unpack(body, what="federation root body", max_bytes=MAX_DOC_BYTES)
        hybrid_from = None
        if type(value) is dict and "hybrid_required_from" in value:
            # The one optional field of the root body (absent: no hybrid rule).
            value = dict(value)
            hybrid_from = timestamp(value.pop("hybrid_required_from"),
                                    "federation root.hybrid_required_from")
        f = fields(
            value,
            {
                "v": version(1),
                "type": codec.const("root"),
                "version": uint(2**31, 1),
                "issued_at": timestamp,
                "expires_at": timestamp,
                "members": list_of(
                    record({"country": check_country, "key": _public_key}),
                    min_items=1,
                    max_items=MAX_MEMBERS,
                ),
            },
            "federation root",
        )
        _check_window(f["issued_at"], f["expires_at"], "federation root")
        members: dict[Country, bytes] = {}
        for m in f["members"]:
            if m["country"] in members:
                codec.fail("bad_value", f"federation root lists {m['country']!r} twice")
            members[Country(m["country"])] = m["key"]
        if list(members) != sorted(members):
            codec.fail("bad_value", "federation root members must be sorted by country")
        signatures: dict[Country, tuple[bytes, ...]] = {}
        for i, (c, s) in enumerate(sig_list):
            c = check_country(c, f"federation root.signatures[{i}].country")
            s = blob(size=SIGNATURE_BYTES)(s, f"federation root.signatures[{i}].signature")
            have = signatures.get(Country(c), ())
            if s in have or len(have) >= MAX_SIGNATURES_PER_COUNTRY:
                codec.fail("bad_value", f"federation root carries more than "
                                        f"{MAX_SIGNATURES_PER_COUNTRY} signatures by {c!r}")
            signatures[Country(c)] = (*have, s)
        return cls(f["version"], f["issued_at"], f["expires_at"], members, body, signatures,
                   hybrid_from)

    def encode(self) -> bytes:
        return codec.pack([self.body, [[c, sig] for c in sorted(self.signatures)
                                       for sig in self.signatures[c]]])

    def signed_by(self, country: Country, sk: nacl.signing.SigningKey) -> FederationRoot:
        """Return this root with ``country``'s signature added."""
        sigs = dict(self.signatures)
        new = sign(sk, Domain.ROOT, self.body)
        # Keep signatures by other keys of this country (a rotation needs old and new);
        # re-signing with the same key replaces nothing (Ed25519 is deterministic).
        have = sigs.get(country, ())
        sigs[country] = have if new in have else (*have, new)[-MAX_SIGNATURES_PER_COUNTRY:]
        return FederationRoot(
            self.version, self.issued_at, self.expires_at, self.members, self.body, sigs,
            self.hybrid_required_from,
        )

    def valid_signers(self, keys: dict[Country, bytes]) -> set[Country]:
        """The countries among ``keys`` whose signature over this root verifies."""
        good: set[Country] = set()
        for c, sigs in self.signatures.items():
            if c not in keys:
                continue
            for sig in sigs:
                try:
                    verify(keys[c], Domain.ROOT, self.body, sig, signer=f"authority {c}")
                except HotlineError:  # an invalid signature just does not count
                    continue
                good.add(c)
                break
        return good

    def _require(self, keys: dict[Country, bytes], whose: str) -> None:
        missing = sorted(set(keys) - self.valid_signers(keys))
        if missing:
            raise RootInvalid(
                f"federation root v{self.version} lacks a valid signature by "
                f"{', '.join(missing)} ({whose})"
            )

    def check_fresh(self, now: int) -> None:
        if self.issued_at > now + ROOT_CLOCK_SKEW_MS:
            raise RootInvalid(f"federation root v{self.version} is issued in the future "
                              f"({self.issued_at} ms)")
        if now >= self.expires_at:
            raise RootInvalid(f"federation root v{self.version} expired at {self.expires_at} ms")

    def check_initial(self, now: int) -> None:
        """Trust this root as pinned out of band: every member signed it; it has not expired."""
        self._require(self.members, "every member must sign")
        self.check_fresh(now)

    def check_update(self, previous: FederationRoot, now: int) -> None:
        """Trust this root as the successor of the trusted ``previous`` one.

        It must have a higher version (no rollback), be signed by every member of the
        previous version (the signatures it requires) and by every member of its own.
        """
        if self.version < previous.version:
            raise RootInvalid(
                f"federation root v{self.version} would roll back the pinned v{previous.version}"
            )
        if self.version == previous.version:
            if self.body != previous.body:
                raise RootInvalid(
                    f"federation root v{self.version} differs from the pinned root of the "
                    "same version"
                )
        self._require(previous.members, f"required by v{previous.version}")
        self._require(self.members, "every member must sign")
        self.check_fresh(now)


# ------------------------------------------------------------------- desk certificates


@dataclass(frozen=True, slots=True)
class CertRequest:
    """A desk's request to be certified, signed by the new identity key (proof of possession)."""

    desk: DeskId
    identity_key: bytes
    created_at: int
    signed: SignedBytes

    @classmethod
    def create(cls, desk: DeskId, ik: nacl.signing.SigningKey, now: int) -> CertRequest:
        body = {
            "v": 1,
            "type": "cert-request",
            "desk": desk,
            "ik": bytes(ik.verify_key),
            "created_at": now,
        }
        return cls(desk, bytes(ik.verify_key), now, make(ik, Domain.CERT_REQUEST, body))

    @classmethod
    def decode(cls, data: bytes) -> CertRequest:
        signed, value = split(data, what="certification request", max_bytes=MAX_DOC_BYTES)
        f = fields(
            value,
            {
                "v": version(1),
                "type": codec.const("cert-request"),
                "desk": check_desk,
                "ik": _public_key,
                "created_at": timestamp,
            },
            "certification request",
        )
        signed.verify(f["ik"], Domain.CERT_REQUEST, signer=f"desk {f['desk']}")
        return cls(DeskId(f["desk"]), f["ik"], f["created_at"], signed)

    def encode(self) -> bytes:
        return self.signed.encode()


@dataclass(frozen=True, slots=True)
class DeskCertificate:
    """A country authority's statement that ``identity_key`` speaks for ``desk``."""

    desk: DeskId
    identity_key: bytes
    not_before: int
    not_after: int
    signed: SignedBytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.identity_key)

    @classmethod
    def issue(
        cls,
        request: CertRequest,
        authority_country: Country,
        authority: nacl.signing.SigningKey,
        not_before: int,
        not_after: int,
    ) -> DeskCertificate:
        if country_of(request.desk) != authority_country:
            raise UntrustedKey(
                f"the {authority_country} authority cannot certify {request.desk}: "
                "a country certifies only its own desks"
            )
        _check_window(not_before, not_after, "desk certificate")
        body = {
            "v": 1,
            "type": "desk-cert",
            "desk": request.desk,
            "ik": request.identity_key,
            "not_before": not_before,
            "not_after": not_after,
        }
        return cls(
            request.desk,
            request.identity_key,
            not_before,
            not_after,
            make(authority, Domain.DESK_CERT, body),
        )

    @classmethod
    def decode(cls, data: bytes) -> DeskCertificate:
        signed, value = split(data, what="desk certificate", max_bytes=MAX_DOC_BYTES)
        f = fields(
            value,
            {
                "v": version(1),
                "type": codec.const("desk-cert"),
                "desk": check_desk,
                "ik": _public_key,
                "not_before": timestamp,
                "not_after": timestamp,
            },
            "desk certificate",
        )
        _check_window(f["not_before"], f["not_after"], "desk certificate")
        return cls(DeskId(f["desk"]), f["ik"], f["not_before"], f["not_after"], signed)

    def encode(self) -> bytes:
        return self.signed.encode()


@dataclass(frozen=True, slots=True)
class EkCertificate:
    """A desk's statement, signed by its identity key, of its current encryption key.

    Classical (``kem`` "x25519", body v1, ``[body, signature]``) or hybrid (``kem``
    "x-wing", body v2 naming its signature algorithms, ``[body, [signature, ...]]``: the
    list leaves room for a second, post-quantum signature)."""

    desk: DeskId
    ik_kid: bytes
    encryption_key: bytes
    not_before: int
    not_after: int
    signed: SignedBytes
    kem: str = CLASSICAL

    @property
    def key_id(self) -> bytes:
        return key_id(self.encryption_key)

    @classmethod
    def issue(
        cls,
        desk: DeskId,
        ik: nacl.signing.SigningKey,
        encryption_key: bytes,
        not_before: int,
        not_after: int,
    ) -> EkCertificate:
        _check_window(not_before, not_after, "encryption key certificate")
        hybrid = len(encryption_key) == HYBRID_PUBLIC_KEY_BYTES
        body: dict[str, object] = {
            "v": 2 if hybrid else 1,
            "type": "ek-cert",
            "desk": desk,
            "ik_kid": key_id(bytes(ik.verify_key)),
            "ek": encryption_key,
            "not_before": not_before,
            "not_after": not_after,
        }
        if hybrid:
            body |= {"kem": HYBRID, "sig_algs": list(SIGNATURE_ALGORITHMS)}
        return cls(
            desk,
            key_id(bytes(ik.verify_key)),
            encryption_key,
            not_before,
            not_after,
            make(ik, Domain.EK_CERT, body),
            HYBRID if hybrid else CLASSICAL,
        )

    @classmethod
    def decode(cls, data: bytes) -> EkCertificate:
        what = "encryption key certificate"
        outer = codec.array(codec.unpack(data, what=what, max_bytes=MAX_DOC_BYTES), 2, what)
        if type(outer[1]) is list:
            return cls._decode_hybrid(data, outer)
        signed, value = split(data, what=what, max_bytes=MAX_DOC_BYTES)
        f = fields(
            value,
            {
                "v": version(1),
                "type": codec.const("ek-cert"),
                "desk": check_desk,
                "ik_kid": _kid,
                "ek": _public_key,
                "not_before": timestamp,
                "not_after": timestamp,
            },
            "encryption key certificate",
        )
        _check_window(f["not_before"], f["not_after"], "encryption key certificate")
        return cls(DeskId(f["desk"]), f["ik_kid"], f["ek"], f["not_before"], f["not_after"], signed)

    @classmethod
    def _decode_hybrid(cls, data: bytes, outer: list[object]) -> EkCertificate:
        what = "hybrid encryption key certificate"
        body = blob(max_size=MAX_DOC_BYTES)(outer[0], f"{what}.body")
        sigs = list_of(blob(size=SIGNATURE_BYTES), min_items=1, max_items=2)(
            outer[1], f"{what}.signatures"
        )
        f = fields(
            codec.unpack(body, what=f"{what} body", max_bytes=MAX_DOC_BYTES),
            {
                "v": version(2),
                "type": codec.const("ek-cert"),
                "desk": check_desk,
                "ik_kid": _kid,
                "kem": codec.const(HYBRID),
                "ek": blob(size=HYBRID_PUBLIC_KEY_BYTES),
                "not_before": timestamp,
                "not_after": timestamp,
                "sig_algs": list_of(codec.one_of(SIGNATURE_ALGORITHMS), min_items=1,
                                    max_items=2),
            },
            what,
        )
        if f["sig_algs"] != list(SIGNATURE_ALGORITHMS) or len(sigs) != len(f["sig_algs"]):
            codec.fail("bad_value", f"{what} must carry exactly one signature per algorithm "
                                    f"it names ({', '.join(SIGNATURE_ALGORITHMS)})")
        _check_window(f["not_before"], f["not_after"], what)
        if codec.pack([body, sigs]) != data:
            codec.fail("malformed", f"{what} is not in canonical msgpack form")
        return cls(DeskId(f["desk"]), f["ik_kid"], f["ek"], f["not_before"], f["not_after"],
                   SignedBytes(body, sigs[0]), HYBRID)

    def encode(self) -> bytes:
        if self.kem == HYBRID:
            return codec.pack([self.signed.body, [self.signed.signature]])
        return self.signed.encode()


@dataclass(frozen=True, slots=True)
class Revocation:
    """A country authority's statement that one of its desk identity keys is revoked."""

    desk: DeskId
    ik_kid: bytes
    revoked_at: int
    reason: str
    signed: SignedBytes

    @classmethod
    def issue(
        cls,
        desk: DeskId,
        ik_kid: bytes,
        authority: nacl.signing.SigningKey,
        revoked_at: int,
        reason: str,
    ) -> Revocation:
        body = {
            "v": 1,
            "type": "revocation",
            "desk": desk,
            "ik_kid": ik_kid,
            "revoked_at": revoked_at,
            "reason": reason[:200],
        }
        return cls(desk, ik_kid, revoked_at, reason[:200], make(authority, Domain.REVOCATION, body))

    @classmethod
    def decode(cls, data: bytes) -> Revocation:
        signed, value = split(data, what="revocation", max_bytes=MAX_DOC_BYTES)
        f = fields(
            value,
            {
                "v": version(1),
                "type": codec.const("revocation"),
                "desk": check_desk,
                "ik_kid": _kid,
                "revoked_at": timestamp,
                "reason": text(200),
            },
            "revocation",
        )
        return cls(DeskId(f["desk"]), f["ik_kid"], f["revoked_at"], f["reason"], signed)

    def encode(self) -> bytes:
        return self.signed.encode()


@dataclass(frozen=True, slots=True)
class DeskCard:
    """What a desk publishes: its certificate and its encryption key certificate(s)."""

    cert: DeskCertificate
    eks: tuple[EkCertificate, ...]

    def encode(self) -> bytes:
        return codec.pack(
            {
                "v": 1,
                "type": "desk-card",
                "cert": self.cert.encode(),
                "eks": [e.encode() for e in self.eks],
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> DeskCard:
        value = codec.unpack(data, what="desk card", max_bytes=MAX_DOC_BYTES)
        f = fields(
            value,
            {
                "v": version(1),
                "type": codec.const("desk-card"),
                "cert": blob(max_size=MAX_DOC_BYTES),
                "eks": list_of(
                    blob(max_size=MAX_DOC_BYTES), min_items=1, max_items=MAX_EKS_PER_CARD
                ),
            },
            "desk card",
        )
        return cls(
            DeskCertificate.decode(f["cert"]), tuple(EkCertificate.decode(e) for e in f["eks"])
        )

    @property
    def desk(self) -> DeskId:
        return self.cert.desk


@dataclass(frozen=True, slots=True)
class VerifiedDesk:
    """A desk whose certificate chain verified against the pinned root at some time."""

    desk: DeskId
    identity_key: nacl.signing.VerifyKey
    ik_kid: bytes
    not_after: int
    #: Encryption keys valid at verification time, newest first: ``{ek_kid: public key}``.
    encryption_keys: dict[bytes, bytes]

    @property
    def has_hybrid_key(self) -> bool:
        return any(kem_of(pk) == HYBRID for pk in self.encryption_keys.values())

    @property
    def current_encryption_key(self) -> tuple[bytes, bytes]:
        """``(ek_kid, public key)`` to seal new notices to: the newest hybrid key if the desk
        has one (a classical key next to it is never chosen: no downgrade), else the newest."""
        if not self.encryption_keys:
            raise KeyCertInvalid(f"desk {self.desk} has no valid encryption key")
        hybrid = [k for k, pk in self.encryption_keys.items() if kem_of(pk) == HYBRID]
        kid = hybrid[0] if hybrid else next(iter(self.encryption_keys))
        return kid, self.encryption_keys[kid]


def kem_of(public_key: bytes) -> str:
    """The kind of a certified encryption public key (its length was checked on decoding)."""
    return HYBRID if len(public_key) == HYBRID_PUBLIC_KEY_BYTES else CLASSICAL


#: Verified certificate signatures a TrustStore remembers (then it starts over).
MAX_VERIFIED_CERTS = 4096


class TrustStore:
    """The pinned federation root plus the revocations known so far.

    The single place that answers "does this key speak for this desk, now?".
    """

    def __init__(self, root: FederationRoot, revocations: Iterable[Revocation] = ()) -> None:
        self.root = root
        #: Keyed by (desk, identity key id): an authority's revocation only ever names one of
        #: its own desks, so it can never reach another country's key with the same id.
        self._revoked: dict[tuple[str, bytes], Revocation] = {}
        #: Desk certificates whose authority signature verified, as (authority key, body,
        #: signature): the same bytes under the same key verify the same way every time,
        #: so a desk's certificate, attached to each of its notices and confirmations, is
        #: verified once. Validity, revocation and the root are still checked every time.
        self._verified_certs: set[tuple[bytes, bytes, bytes]] = set()
        for rev in revocations:
            self.add_revocation(rev)

    def update_root(self, new: FederationRoot, now: int) -> None:
        new.check_update(self.root, now)
        self.root = new

    def authority_key(self, country: Country) -> bytes:
        key = self.root.members.get(country)
        if key is None:
            raise UntrustedKey(
                f"country {country!r} is not a member of federation root v{self.root.version}"
            )
        return key

    def add_revocation(self, rev: Revocation) -> None:
        """Accept a revocation signed by the authority of the desk's own country."""
        country = country_of(rev.desk)
        rev.signed.verify(
            self.authority_key(country), Domain.REVOCATION, signer=f"authority {country}"
        )
        self._revoked[(rev.desk, rev.ik_kid)] = rev

    def is_revoked(self, desk: str, ik_kid: bytes) -> bool:
        return (desk, ik_kid) in self._revoked

    @property
    def revocations(self) -> list[Revocation]:
        """Every revocation accepted, in the order first accepted (new ones only append)."""
        return list(self._revoked.values())

    @property
    def revocation_count(self) -> int:
        return len(self._revoked)

    def verify_cert(self, cert: DeskCertificate, now: int) -> None:
        """Raise UntrustedKey unless ``cert`` is valid now under the pinned root."""
        try:
            self.root.check_fresh(now)
        except RootInvalid as exc:
            raise UntrustedKey(str(exc)) from exc
        country = country_of(cert.desk)
        authority = self.authority_key(country)
        memo = (authority, cert.signed.body, cert.signed.signature)
        if memo not in self._verified_certs:
            try:
                cert.signed.verify(authority, Domain.DESK_CERT, signer=f"authority {country}")
            except Exception as exc:
                raise UntrustedKey(
                    f"the certificate of {cert.desk} is not signed by the {country} authority"
                ) from exc
            if len(self._verified_certs) >= MAX_VERIFIED_CERTS:
                self._verified_certs.clear()
            self._verified_certs.add(memo)
        if not cert.not_before <= now < cert.not_after:
            raise UntrustedKey(
                f"the certificate of {cert.desk} is valid from {cert.not_before} to "
                f"{cert.not_after} ms, not at {now}"
            )
        if self.is_revoked(cert.desk, cert.key_id):
            raise UntrustedKey(f"the identity key of {cert.desk} has been revoked")

    def verify_card(self, card: DeskCard, now: int) -> VerifiedDesk:
        """Verify a desk's whole chain; return its keys. Invalid EK certificates are dropped,
        and if none remains valid the card is refused with KeyCertInvalid."""
        self.verify_cert(card.cert, now)
        ik = nacl.signing.VerifyKey(card.cert.identity_key)
        valid: list[EkCertificate] = []
        problems: list[str] = []
        for ek in card.eks:
            try:
                if ek.desk != card.desk or ek.ik_kid != card.cert.key_id:
                    raise KeyCertInvalid("it belongs to another desk or identity key")
                ek.signed.verify(ik, Domain.EK_CERT, signer=f"desk {card.desk}")
                if not ek.not_before <= now < ek.not_after:
                    raise KeyCertInvalid(f"it is valid from {ek.not_before} to {ek.not_after}")
                if ek.kem == HYBRID:
                    check_hybrid_public_key(ek.encryption_key, "hybrid encryption key")
                elif self.root.requires_hybrid(now):
                    raise KeyCertInvalid(
                        f"it is a classical key, and federation root v{self.root.version} "
                        f"requires hybrid keys from {self.root.hybrid_required_from} ms"
                    )
                else:
                    check_x25519_public_key(ek.encryption_key, "encryption key")
            except Exception as exc:  # each EK certificate stands or falls alone
                problems.append(str(exc))
                continue
            valid.append(ek)
        if not valid:
            raise KeyCertInvalid(
                f"desk {card.desk} has no valid encryption key certificate ({'; '.join(problems)})"
            )
        valid.sort(key=lambda e: e.not_before, reverse=True)
        return VerifiedDesk(
            card.desk,
            ik,
            card.cert.key_id,
            card.cert.not_after,
            {e.key_id: e.encryption_key for e in valid},
        )

    def verify_signer(self, cert: DeskCertificate, now: int) -> VerifiedDesk:
        """Verify only the identity part of a desk (for checking its signatures)."""
        self.verify_cert(cert, now)
        return VerifiedDesk(
            cert.desk, nacl.signing.VerifyKey(cert.identity_key), cert.key_id, cert.not_after, {}
        )
