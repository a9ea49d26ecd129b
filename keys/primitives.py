"""The libsodium primitives Hotline composes, with domain separation and typed errors.

Nothing here is new cryptography: Ed25519 (crypto_sign), BLAKE2b (crypto_generichash),
X25519 sealed boxes (crypto_box_seal's exact construction, with the ephemeral key passed in
so that test vectors are reproducible), and XChaCha20-Poly1305 (crypto_aead_xchacha20poly1305_ietf).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

import nacl.bindings as sodium
import nacl.exceptions
import nacl.public
import nacl.signing

from keys.errors import BadSignature, DecryptionFailed, MalformedInput

#: A source of random bytes: ``os.urandom`` in production, a fixed stream in vectors.
Random = Callable[[int], bytes]

system_random: Random = os.urandom

SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
AEAD_KEY_BYTES = 32
AEAD_NONCE_BYTES = 24
AEAD_TAG_BYTES = 16
#: crypto_box_seal output for a 32-byte content key: ephemeral pk (32) + key (32) + tag (16).
WRAPPED_KEY_BYTES = 80


class Domain:
    """Signature domain-separation prefixes. Each signed thing has its own."""

    ROOT = b"hotline/v1/root\x00"
    AUTHORITY_CARD = b"hotline/v1/authority-card\x00"
    CERT_REQUEST = b"hotline/v1/cert-request\x00"
    DESK_CERT = b"hotline/v1/desk-cert\x00"
    EK_CERT = b"hotline/v1/ek-cert\x00"
    REVOCATION = b"hotline/v1/revocation\x00"
    INNER = b"hotline/v1/inner\x00"
    ENVELOPE = b"hotline/v1/envelope\x00"
    RECEIPT = b"hotline/v1/receipt\x00"
    ACK = b"hotline/v1/ack\x00"
    REJECTION = b"hotline/v1/rejection\x00"
    ATTESTATION = b"hotline/v1/attestation\x00"
    ESCALATION = b"hotline/v1/escalation\x00"
    RELAY_CARD = b"hotline/v1/relay-card\x00"
    AUTH = b"hotline/v1/auth\x00"
    OPERATOR_AUTH = b"hotline/v1/operator-auth\x00"
    OPERATOR_WEB_LOGIN = b"hotline/v1/operator-web-login\x00"


def blake2b(data: bytes, *, size: int = 32, key: bytes = b"", person: bytes = b"") -> bytes:
    """BLAKE2b (RFC 7693) with an optional key and personalization, as libsodium's
    crypto_generichash_blake2b_salt_personal computes it (the person string is zero-padded
    to 16 bytes by both). Python's built-in BLAKE2b is used: the same function, without the
    per-call overhead of the libsodium binding (a tenth of the cost for short inputs)."""
    return hashlib.blake2b(data, digest_size=size, key=key, person=person).digest()


def key_id(public_key: bytes) -> bytes:
    """The 16-byte id of a public key: BLAKE2b-128(key, personal="hotline-kid-v1")."""
    return blake2b(public_key, size=16, person=b"hotline-kid-v1")


def digest(data: bytes) -> bytes:
    """BLAKE2b-256 of ``data``: notice digests and ciphertext hashes."""
    return blake2b(data, size=32)


def key_commitment(content_key: bytes) -> bytes:
    """Commitment to a content key: keyed BLAKE2b-256 of the empty string."""
    return blake2b(b"", size=32, key=content_key, person=b"hotline-kc-v1")


def sign(signing_key: nacl.signing.SigningKey, domain: bytes, message: bytes) -> bytes:
    signature: bytes = signing_key.sign(domain + message).signature
    return signature


def verify(
    verify_key: bytes | nacl.signing.VerifyKey,
    domain: bytes,
    message: bytes,
    signature: bytes,
    *,
    signer: str,
) -> None:
    """Verify an Ed25519 signature over ``domain || message``; raise BadSignature."""
    if len(signature) != SIGNATURE_BYTES:
        raise BadSignature(f"signature by {signer} is {len(signature)} bytes, not 64")
    try:
        vk = (
            verify_key
            if isinstance(verify_key, nacl.signing.VerifyKey)
            else (nacl.signing.VerifyKey(verify_key))
        )
        vk.verify(domain + message, signature)
    except (
        nacl.exceptions.BadSignatureError,
        nacl.exceptions.ValueError,
        nacl.exceptions.TypeError,
    ) as exc:
        raise BadSignature(f"signature by {signer} does not verify") from exc


def seal_to(recipient_pk: bytes, message: bytes, *, random: Random) -> bytes:
    """crypto_box_seal(message, recipient_pk) with the ephemeral key drawn from ``random``.

    Byte-identical to libsodium's crypto_box_seal, so crypto_box_seal_open opens it.
    """
    eph = nacl.public.PrivateKey(random(32))
    epk = bytes(eph.public_key)
    nonce = blake2b(epk + recipient_pk, size=24)
    boxed: bytes = sodium.crypto_box(message, nonce, recipient_pk, bytes(eph))
    return epk + boxed


def open_sealed(private_key: nacl.public.PrivateKey, wrapped: bytes, *, what: str) -> bytes:
    try:
        out: bytes = nacl.public.SealedBox(private_key).decrypt(wrapped)
    except nacl.exceptions.CryptoError as exc:
        raise DecryptionFailed(f"{what} does not open with our key") from exc
    return out


def aead_encrypt(plaintext: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes:
    out: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
    return out


def aead_decrypt(ciphertext: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes:
    try:
        out: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, key)
    except nacl.exceptions.CryptoError as exc:
        raise DecryptionFailed("the notice ciphertext does not authenticate") from exc
    return out


def check_public_key(value: bytes, what: str) -> bytes:
    """Refuse a 32-byte public key that is all zeros."""
    if len(value) != PUBLIC_KEY_BYTES:
        raise MalformedInput(f"{what} must be 32 bytes", code="bad_value")
    if not any(value):
        raise MalformedInput(f"{what} is the all-zero key", code="bad_value")
    return value


def check_x25519_public_key(value: bytes, what: str) -> bytes:
    """Refuse an X25519 public key of small order (a shared secret with it is all zeros,
    which libsodium's crypto_scalarmult reports as an error)."""
    check_public_key(value, what)
    try:
        sodium.crypto_scalarmult(b"\x01" * 31 + b"\x40", value)
    except nacl.exceptions.RuntimeError as exc:
        raise MalformedInput(f"{what} is a small-order point", code="bad_value") from exc
    return value


def equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two equal-length byte strings."""
    return len(a) == len(b) and hmac.compare_digest(a, b)
