"""X-Wing: the hybrid ML-KEM-768 + X25519 KEM of draft-connolly-cfrg-xwing-kem (-10).

Composed from well-kept implementations only: ML-KEM-768 (FIPS 203) from ``cryptography``
(OpenSSL), X25519 from libsodium (crypto_scalarmult), SHAKE-256 and SHA3-256 from hashlib.

    expand(seed)  = SHAKE-256(seed, 96 bytes): d||z (64, the ML-KEM seed) || sk_X (32)
    pk            = pk_M (1184) || pk_X (32)                             1216 bytes
    ct            = ct_M (1088) || ct_X (32)                             1120 bytes
    ss            = SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel)   32 bytes
    XWingLabel    = 5c2e2f2f5e5c  ("\\./" "/^\\")

The private key is the 32-byte seed; everything else is re-derived from it.
"""

from __future__ import annotations

import hashlib

import nacl.bindings as sodium
import nacl.exceptions
from cryptography.hazmat.primitives.asymmetric import mlkem

from keys.errors import DecryptionFailed, MalformedInput
from keys.primitives import Random

LABEL = bytes.fromhex("5c2e2f2f5e5c")
SEED_BYTES = 32
PUBLIC_KEY_BYTES = 1216
CIPHERTEXT_BYTES = 1120
SHARED_SECRET_BYTES = 32
MLKEM_PUBLIC_KEY_BYTES = 1184
MLKEM_CIPHERTEXT_BYTES = 1088


def combiner(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    """The X-Wing combiner: SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel)."""
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + LABEL).digest()


def _x25519(scalar: bytes, point: bytes, what: str) -> bytes:
    try:
        out: bytes = sodium.crypto_scalarmult(scalar, point)
    except nacl.exceptions.RuntimeError as exc:
        # libsodium refuses a low-order point (the shared secret would be all zeros).
        raise DecryptionFailed(f"{what} is a low-order X25519 point") from exc
    return out


class XWingPrivateKey:
    """An X-Wing decapsulation key, held as its 32-byte seed plus the expanded halves."""

    __slots__ = ("_mlkem", "_sk_x", "public_key", "seed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise MalformedInput("an X-Wing private key is a 32-byte seed", code="bad_value")
        expanded = hashlib.shake_256(seed).digest(96)
        self.seed = bytes(seed)
        self._mlkem = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        self._sk_x = expanded[64:]
        pk_x: bytes = sodium.crypto_scalarmult_base(self._sk_x)
        #: pk_M || pk_X, 1216 bytes.
        self.public_key: bytes = self._mlkem.public_key().public_bytes_raw() + pk_x

    @classmethod
    def generate(cls, random: Random) -> XWingPrivateKey:
        return cls(random(SEED_BYTES))

    def __bytes__(self) -> bytes:
        return self.seed

    def decapsulate(self, ct: bytes) -> bytes:
        """The shared secret for ``ct``. ML-KEM rejects implicitly: a wrong ciphertext gives
        a pseudorandom secret, which the AEAD wrap under it then refuses."""
        if len(ct) != CIPHERTEXT_BYTES:
            raise MalformedInput(
                f"an X-Wing ciphertext is {CIPHERTEXT_BYTES} bytes, not {len(ct)}",
                code="bad_stanza",
            )
        ct_m, ct_x = ct[:MLKEM_CIPHERTEXT_BYTES], ct[MLKEM_CIPHERTEXT_BYTES:]
        ss_m = self._mlkem.decapsulate(ct_m)
        ss_x = _x25519(self._sk_x, ct_x, "the X25519 half of the ciphertext")
        return combiner(ss_m, ss_x, ct_x, self.public_key[MLKEM_PUBLIC_KEY_BYTES:])


def check_public_key(pk: bytes, what: str) -> bytes:
    """Refuse a public key of the wrong length, an ML-KEM key that fails FIPS 203's
    encapsulation key check, or a low-order X25519 half."""
    if len(pk) != PUBLIC_KEY_BYTES:
        raise MalformedInput(f"{what} must be {PUBLIC_KEY_BYTES} bytes", code="bad_value")
    try:
        mlkem.MLKEM768PublicKey.from_public_bytes(pk[:MLKEM_PUBLIC_KEY_BYTES])
    except ValueError as exc:
        raise MalformedInput(f"{what} has an invalid ML-KEM-768 half", code="bad_value") from exc
    try:
        sodium.crypto_scalarmult(b"\x01" * 31 + b"\x40", pk[MLKEM_PUBLIC_KEY_BYTES:])
    except nacl.exceptions.RuntimeError as exc:
        raise MalformedInput(f"{what} has a small-order X25519 half", code="bad_value") from exc
    return pk


def encapsulate(pk: bytes, *, random: Random) -> tuple[bytes, bytes]:
    """``(shared secret, ciphertext)`` to ``pk``. The X25519 ephemeral comes from ``random``;
    the ML-KEM randomness from OpenSSL's generator (its API takes none from outside)."""
    check_public_key(pk, "X-Wing public key")
    pk_m, pk_x = pk[:MLKEM_PUBLIC_KEY_BYTES], pk[MLKEM_PUBLIC_KEY_BYTES:]
    ss_m, ct_m = mlkem.MLKEM768PublicKey.from_public_bytes(pk_m).encapsulate()
    ek_x = random(32)
    ct_x: bytes = sodium.crypto_scalarmult_base(ek_x)
    ss_x = _x25519(ek_x, pk_x, "the recipient's X25519 key")
    return combiner(ss_m, ss_x, ct_x, pk_x), ct_m + ct_x


# ------------------------------------------------------------------ hybrid wrapping

#: An AEAD wrap of a 32-byte content key: the key plus the Poly1305 tag.
WRAPPED_KEY_BYTES = 32 + 16
_ZERO_NONCE = bytes(24)


def wrap_key(shared_secret: bytes, context: bytes) -> bytes:
    """The one-time AEAD key: BLAKE2b-256(key=ss, personal="hotline-xwing-v1", msg=context)."""
    return hashlib.blake2b(
        context, digest_size=32, key=shared_secret, person=b"hotline-xwing-v1"
    ).digest()


def seal(pk: bytes, plaintext: bytes, context: bytes, *, random: Random) -> tuple[bytes, bytes]:
    """``(kem ciphertext, wrapped)``: X-Wing to ``pk``, then XChaCha20-Poly1305 of
    ``plaintext`` under :func:`wrap_key` with ``context`` as associated data. The key is used
    once, so the nonce is all zeros."""
    ss, ct = encapsulate(pk, random=random)
    wrapped: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, context, _ZERO_NONCE, wrap_key(ss, context)
    )
    return ct, wrapped


def open_sealed(sk: XWingPrivateKey, ct: bytes, wrapped: bytes, context: bytes, *,
                what: str) -> bytes:
    """Decapsulate ``ct`` and open ``wrapped`` bound to ``context`` (DecryptionFailed)."""
    ss = sk.decapsulate(ct)
    try:
        out: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            wrapped, context, _ZERO_NONCE, wrap_key(ss, context)
        )
    except nacl.exceptions.CryptoError as exc:
        raise DecryptionFailed(f"{what} does not open with our key") from exc
    return out
