"""C2SP tlog-checkpoint (c2sp.org/tlog-checkpoint) and cosignature/v1
(c2sp.org/tlog-cosignature), on top of ``keys.note``.

Checkpoint note text ("Note text")::

    <origin>\\n<tree size, decimal, no leading zeroes>\\n<base64 RFC 6962 root>\\n[<ext>\\n]*

Cosignature/v1 ("Ed25519 signed message"): key type 0x04, key ID
``SHA-256(name || 0x0A || 0x04 || key)[:4]``; the signature is
``u64 big-endian timestamp || Ed25519(message)`` with ::

    message = "cosignature/v1\\n" + "time <timestamp>\\n" + <checkpoint note text>

A Hotline relay's log origin is ``hotline.relay/<relay id>`` (``relay_origin``); the log
signs with its Ed25519 key under the origin as key name (tlog-checkpoint "Signatures").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from keys import note
from keys.errors import UntrustedKey, UsageError
from keys.note import SIG_COSIGNATURE_V1, NoteError, Signature, Verifier, VerifyFn, b64
from keys.tlog import EMPTY_ROOT, HASH_SIZE

ORIGIN_PREFIX = "hotline.relay/"
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
MAX_EXTENSION_LINES = 8
MAX_TIMESTAMP = (1 << 63) - 1


def relay_origin(relay_id: str) -> str:
    """The checkpoint origin (and log key name) of the relay ``relay_id``."""
    origin = ORIGIN_PREFIX + relay_id
    note.check_name(origin)
    return origin


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        note.check_name(self.origin)
        if not 0 <= self.size < 1 << 63:
            raise UsageError(f"checkpoint size {self.size} is outside 0..2**63-1")
        if len(self.root) != HASH_SIZE:
            raise UsageError(f"checkpoint root is {len(self.root)} bytes, not {HASH_SIZE}")
        for ext in self.extensions:
            if not ext or "\n" in ext:
                raise UsageError("checkpoint extension lines must be non-empty single lines")

    def text(self) -> bytes:
        """The note text (tlog-checkpoint "Note text")."""
        lines = [self.origin, str(self.size), b64(self.root), *self.extensions]
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def parse(cls, text: bytes) -> Checkpoint:
        """Parse a checkpoint note text (without signatures). Raises ``NoteError``."""
        note.check_text(text)
        lines = text.decode()[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError(f"checkpoint has {len(lines)} lines; at least 3 are required")
        origin, size_s, root_s, *ext = lines
        if not origin:
            raise NoteError("checkpoint origin line is empty")
        try:
            note.check_name(origin)
        except NoteError as exc:
            # The spec only says SHOULD for the origin; a key name (= origin) must hold it.
            raise NoteError(f"checkpoint origin {origin[:80]!r} contains a space or '+'") \
                from exc
        if not _DECIMAL.fullmatch(size_s) or int(size_s) >= 1 << 63:
            raise NoteError(f"checkpoint size {size_s[:30]!r} is not a decimal without "
                            "leading zeroes")
        root = note.b64decode(root_s, "checkpoint root hash")
        if len(root) != HASH_SIZE:
            raise NoteError(f"checkpoint root hash is {len(root)} bytes, not {HASH_SIZE}")
        if len(ext) > MAX_EXTENSION_LINES:
            raise NoteError(f"checkpoint has {len(ext)} extension lines; the limit is "
                            f"{MAX_EXTENSION_LINES}")
        if any(not e for e in ext):
            raise NoteError("checkpoint extension lines must be non-empty")
        return cls(origin, int(size_s), root, tuple(ext))

    @property
    def root_is_valid_for_empty(self) -> bool:
        """False for a size-0 checkpoint whose root is not MTH({}) (tlog-witness: 422)."""
        return self.size != 0 or self.root == EMPTY_ROOT


def sign_checkpoint(cp: Checkpoint, log: note.Signer) -> bytes:
    """The signed checkpoint note."""
    return note.sign(cp.text(), [log])


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: note.Note


def open_checkpoint(
    msg: bytes, log_keys: Iterable[Verifier], *, witnesses: Iterable[Verifier] = ()
) -> SignedCheckpoint:
    """Verify a signed checkpoint: at least one of ``log_keys`` must have signed it and no
    signature by a known key (log or witness) may fail. The note's ``verified`` lines
    then hold the log's signature and the valid cosignatures of ``witnesses``."""
    logs = list(log_keys)
    wits = list(witnesses)
    n = note.open_note(msg, logs + wits)
    if not any(n.verified_by(v.name, v.key_id) for v in logs):
        raise UntrustedKey("the checkpoint is cosigned but not signed by its log")
    return SignedCheckpoint(Checkpoint.parse(n.text), n)


# ------------------------------------------------------------------------ cosignature/v1


def cosigned_message(checkpoint_text: bytes, timestamp: int) -> bytes:
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise UsageError(f"cosignature timestamp {timestamp} is outside 0..2**63-1")
    return b"cosignature/v1\ntime %d\n" % timestamp + checkpoint_text


def cosignature_verify_fn(public_key: bytes) -> VerifyFn:
    vk = nacl.signing.VerifyKey(public_key)

    def verify(text: bytes, sig: bytes) -> bool:
        if len(sig) != 8 + 64:
            return False
        ts = int.from_bytes(sig[:8], "big")
        if ts > MAX_TIMESTAMP:
            return False
        try:
            vk.verify(cosigned_message(text, ts), sig[8:])
        except nacl.exceptions.BadSignatureError:
            return False
        return True

    return verify


def cosignature_time(sig: Signature) -> int:
    """The POSIX timestamp (seconds) of a cosignature/v1 signature."""
    if len(sig.sig) != 72:
        raise NoteError(f"cosignature by {sig.name} is {len(sig.sig)} bytes, not 72")
    return int.from_bytes(sig.sig[:8], "big")


@dataclass(frozen=True, slots=True)
class Cosigner:
    """A witness key producing cosignature/v1 signatures (type 0x04)."""

    name: str
    key: nacl.signing.SigningKey

    def __post_init__(self) -> None:
        note.check_name(self.name)

    @property
    def public_key(self) -> bytes:
        return bytes(self.key.verify_key)

    @property
    def key_id(self) -> int:
        return note.key_id(self.name, SIG_COSIGNATURE_V1, self.public_key)

    def vkey(self) -> str:
        return note.encode_vkey(self.name, SIG_COSIGNATURE_V1, self.public_key)

    def verifier(self) -> Verifier:
        return note.parse_vkey(self.vkey(), types=(SIG_COSIGNATURE_V1,))

    def cosign(self, checkpoint_text: bytes, timestamp: int) -> Signature:
        """Cosign a checkpoint's note text at ``timestamp`` (POSIX seconds, > 0)."""
        if timestamp <= 0:
            raise UsageError("a witness cosignature must carry a non-zero timestamp")
        sig = self.key.sign(cosigned_message(checkpoint_text, timestamp)).signature
        return Signature(self.name, self.key_id, timestamp.to_bytes(8, "big") + sig)


def parse_witness_vkey(vkey: str) -> Verifier:
    return note.parse_vkey(vkey, types=(SIG_COSIGNATURE_V1,))


def parse_log_vkey(vkey: str) -> Verifier:
    return note.parse_vkey(vkey, types=(note.SIG_ED25519,))


__all__ = [
    "ORIGIN_PREFIX",
    "Checkpoint",
    "Cosigner",
    "SignedCheckpoint",
    "cosignature_time",
    "cosignature_verify_fn",
    "cosigned_message",
    "open_checkpoint",
    "parse_log_vkey",
    "parse_witness_vkey",
    "relay_origin",
    "sign_checkpoint",
]
