"""Hotline's identities and cryptography, shared by the relay and the client.

Pure code: nothing here awaits, logs, reads a clock or touches the network; the only I/O is
reading and writing key files (:mod:`keys.keyfile`). The wire format is described in
``keys/PROTOCOL.md``.
"""

from keys.envelope import (
    MAX_RECIPIENTS,
    Envelope,
    Header,
    Notice,
    check_fresh,
    check_submission,
    open_envelope,
    seal,
)
from keys.errors import (
    BadSignature,
    DecryptionFailed,
    Downgrade,
    HotlineError,
    InsecureKeyFile,
    KeyCertInvalid,
    KeyCommitmentMismatch,
    KeyFileError,
    MalformedInput,
    NotIntendedRecipient,
    ProtocolError,
    RootInvalid,
    StaleOrFuture,
    UnsupportedVersion,
    UntrustedKey,
    UsageError,
    WrongPassphrase,
)
from keys.fingerprint import fingerprint
from keys.ids import SEVERITIES, STATUSES, DeskId, country_of, desk_id
from keys.receipts import Attestation, Confirmation, RelayCard
from keys.report import AiSystem, Attachment, IncidentReport, Reference, Translation
from keys.secrets import DeskSecrets, EncryptionKeyPair
from keys.trust import (
    AuthorityCard,
    CertRequest,
    DeskCard,
    DeskCertificate,
    EkCertificate,
    FederationRoot,
    Revocation,
    TrustStore,
    VerifiedDesk,
)

__all__ = [
    "MAX_RECIPIENTS",
    "SEVERITIES",
    "STATUSES",
    "AiSystem",
    "Attachment",
    "Attestation",
    "AuthorityCard",
    "BadSignature",
    "CertRequest",
    "Confirmation",
    "DecryptionFailed",
    "DeskCard",
    "DeskCertificate",
    "DeskId",
    "DeskSecrets",
    "Downgrade",
    "EkCertificate",
    "EncryptionKeyPair",
    "Envelope",
    "FederationRoot",
    "Header",
    "HotlineError",
    "IncidentReport",
    "InsecureKeyFile",
    "KeyCertInvalid",
    "KeyCommitmentMismatch",
    "KeyFileError",
    "MalformedInput",
    "NotIntendedRecipient",
    "Notice",
    "ProtocolError",
    "Reference",
    "RelayCard",
    "Revocation",
    "RootInvalid",
    "StaleOrFuture",
    "Translation",
    "TrustStore",
    "UnsupportedVersion",
    "UntrustedKey",
    "UsageError",
    "VerifiedDesk",
    "WrongPassphrase",
    "check_fresh",
    "check_submission",
    "country_of",
    "desk_id",
    "fingerprint",
    "open_envelope",
    "seal",
]
