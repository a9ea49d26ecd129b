"""The errors of the keys package, each naming who is at fault.

    HotlineError                 every error Hotline raises on purpose; has a stable ``code``
    ├── ProtocolError            the peer sent something we refuse (remote fault)
    │   ├── MalformedInput       bytes that do not decode, or break the closed schema
    │   ├── UnsupportedVersion   a version field other than the one we speak
    │   ├── BadSignature         a signature that does not verify over the bytes received
    │   ├── UntrustedKey         a key that is unknown, revoked, expired or certified by
    │   │                        the wrong authority
    │   ├── NotIntendedRecipient a notice that does not name us inside its signed content
    │   ├── KeyCommitmentMismatch a content key that does not match the signed commitment
    │   ├── DecryptionFailed     a stanza or ciphertext that does not open
    │   ├── StaleOrFuture        a timestamp outside the accepted window
    │   ├── Downgrade            a classical stanza where a hybrid one is required
    │   ├── RootInvalid          a federation root that is expired, rolled back or under-signed
    │   └── KeyCertInvalid       a desk or encryption-key certificate that does not hold
    ├── KeyFileError             a key file on disk that cannot be used (local fault)
    │   ├── InsecureKeyFile      readable by group or others
    │   └── WrongPassphrase      the passphrase is wrong, or the file was altered
    └── UsageError               the caller asked for something impossible (local fault)

Every error carries ``code`` (a stable snake_case string that goes on the wire and into
logs) and a message that says what was wrong, with the offending value where it is bounded.
"""

from __future__ import annotations


class HotlineError(Exception):
    """Base of every deliberate Hotline error."""

    code: str = "error"
    #: Set by :func:`keys.envelope.open_envelope` on a failure that the sender's own signed
    #: bytes prove to be the sender's (one of ``keys.receipts.REJECTION_REASONS``): the
    #: recipient may tell the sender with a signed rejection. None for every other error.
    sender_fault: str | None = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class ProtocolError(HotlineError):
    """The other party sent something we refuse. Answer it with an error frame."""

    code = "protocol_error"


class MalformedInput(ProtocolError):
    """Bytes that do not decode, or a value outside the closed schema.

    ``code`` narrows it: ``truncated``, ``extra_data``, ``malformed``, ``too_deep``,
    ``length_limit``, ``duplicate_key``, ``type_not_allowed``, ``bad_utf8``, ``bad_type``,
    ``unknown_field``, ``missing_field``, ``bad_value``, ``too_large``, ``bad_recipients``,
    ``bad_stanza``.
    """

    code = "malformed"


class UnsupportedVersion(ProtocolError):
    code = "unsupported_version"


class BadSignature(ProtocolError):
    code = "bad_signature"


class UntrustedKey(ProtocolError):
    code = "unknown_or_revoked_key"


class NotIntendedRecipient(ProtocolError):
    code = "not_intended_recipient"


class KeyCommitmentMismatch(ProtocolError):
    code = "key_commitment_mismatch"


class DecryptionFailed(ProtocolError):
    code = "decryption_failed"


class StaleOrFuture(ProtocolError):
    code = "stale_or_future"


class Downgrade(ProtocolError):
    """A notice wraps a key classically where the recipient or the federation requires the
    hybrid KEM (``downgrade_refused``, ``hybrid_required``), or a sender was asked to."""

    code = "downgrade_refused"


class RootInvalid(ProtocolError):
    code = "root_invalid"


class KeyCertInvalid(ProtocolError):
    code = "key_cert_invalid"


class KeyFileError(HotlineError):
    """A key file on this machine cannot be used."""

    code = "key_file_error"


class InsecureKeyFile(KeyFileError):
    code = "insecure_key_file"


class WrongPassphrase(KeyFileError):
    code = "wrong_passphrase"


class UsageError(HotlineError):
    """The caller asked for something that cannot be done (a local mistake)."""

    code = "usage_error"


__all__ = [
    "BadSignature",
    "DecryptionFailed",
    "Downgrade",
    "HotlineError",
    "InsecureKeyFile",
    "KeyCertInvalid",
    "KeyCommitmentMismatch",
    "KeyFileError",
    "MalformedInput",
    "NotIntendedRecipient",
    "ProtocolError",
    "RootInvalid",
    "StaleOrFuture",
    "UnsupportedVersion",
    "UntrustedKey",
    "UsageError",
    "WrongPassphrase",
]
