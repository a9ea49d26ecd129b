"""A desk's private keys in memory: identity (Ed25519) and encryption keys (X25519, or
hybrid X-Wing: ML-KEM-768 + X25519)."""

from __future__ import annotations

from dataclasses import dataclass, field

import nacl.public
import nacl.signing

from keys.errors import DecryptionFailed
from keys.ids import DeskId
from keys.primitives import key_id
from keys.xwing import XWingPrivateKey

#: The encryption key kinds: classical crypto_box_seal keys and hybrid X-Wing keys.
CLASSICAL = "x25519"
HYBRID = "x-wing"
EncryptionPrivateKey = nacl.public.PrivateKey | XWingPrivateKey


@dataclass(frozen=True, slots=True)
class EncryptionKeyPair:
    private_key: EncryptionPrivateKey
    not_before: int
    not_after: int
    #: After ``not_after`` the key still opens notices sealed to it until this time.
    keep_until: int

    @property
    def kem(self) -> str:
        return HYBRID if isinstance(self.private_key, XWingPrivateKey) else CLASSICAL

    @property
    def public_key(self) -> bytes:
        if isinstance(self.private_key, XWingPrivateKey):
            return self.private_key.public_key
        return bytes(self.private_key.public_key)

    @property
    def key_id(self) -> bytes:
        return key_id(self.public_key)


@dataclass(frozen=True, slots=True)
class DeskSecrets:
    desk: DeskId
    identity: nacl.signing.SigningKey
    encryption_keys: tuple[EncryptionKeyPair, ...] = field(default=())

    @property
    def ik_kid(self) -> bytes:
        return key_id(bytes(self.identity.verify_key))

    def hybrid_since(self) -> int | None:
        """When this desk's first hybrid key became valid (None: it has none). A classical
        stanza for a notice created from then on is a downgrade, and refused."""
        starts = [p.not_before for p in self.encryption_keys if p.kem == HYBRID]
        return min(starts) if starts else None

    def encryption_key(self, ek_kid: bytes) -> EncryptionPrivateKey:
        for pair in self.encryption_keys:
            if pair.key_id == ek_kid:
                return pair.private_key
        raise DecryptionFailed(
            f"notice is sealed to encryption key {ek_kid.hex()[:16]}, which {self.desk} "
            "does not hold (rotated out of its grace period, or never ours)",
            code="unknown_encryption_key",
        )
