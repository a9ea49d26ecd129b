"""C2SP signed notes (c2sp.org/signed-note), the format of Go's golang.org/x/mod/sumdb/note.

A note is UTF-8 text ending in a newline, a blank line, then signature lines
``— <key name> base64(key ID[4] || signature)\\n`` (section "Format"). The key ID is
``SHA-256(name || 0x0A || type || public key)[:4]`` ("Signatures"); a verifier key is
``<name>+<hex key ID>+<base64(type || public key)>`` ("Verifier keys"). Type 0x01 is
Ed25519 over the note text ("Ed25519 signatures"); type 0x04, the timestamped cosignature,
is defined in ``keys.checkpoint`` (c2sp.org/tlog-cosignature).

Verification ("Signatures"): signatures from unknown keys are ignored (also one that
shares only the name or only the ID with a known key); a known key whose signature fails
rejects the whole note; a note no known key verifies is rejected. Limits: at most
``MAX_SIGNATURES`` signature lines (the spec requires accepting at least 16; Go accepts
100) and ``MAX_NOTE_BYTES`` in all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from keys.errors import BadSignature, MalformedInput, UntrustedKey, UsageError

SIG_ED25519 = 0x01
SIG_COSIGNATURE_V1 = 0x04
#: Signature lines accepted per note. The spec's floor is 16; a Hotline checkpoint carries
#: one log signature and a few witnesses per member country.
MAX_SIGNATURES = 64
#: A checkpoint is under 200 bytes of text plus ~120 per signature.
MAX_NOTE_BYTES = 64 * 1024
_DASH = "\u2014 "


class NoteError(MalformedInput):
    """A note or verifier key that does not parse (``code`` ``bad_note``)."""

    code = "bad_note"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 section 4, padded); refuses anything else."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise NoteError(f"{what} is not base64: {text[:80]!r}") from exc
    if b64(raw) != text:
        raise NoteError(f"{what} is not canonical base64: {text[:80]!r}")
    return raw


def check_name(name: str) -> None:
    """Key names are non-empty, contain no Unicode space and no '+' ("Format")."""
    if not name or "+" in name or any(c.isspace() or unicodedata.category(c) == "Zs"
                                      for c in name):
        raise NoteError(f"key name {name[:80]!r} is empty or contains a space or '+'")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise NoteError(f"key name {name[:80]!r} contains a control character")


def key_id(name: str, sig_type: int, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || type || public key)[:4] as a big-endian uint32."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line, parsed: key name, key ID, the bytes after the ID."""

    name: str
    key_id: int
    sig: bytes

    def line(self) -> str:
        return f"{_DASH}{self.name} {b64(self.key_id.to_bytes(4, 'big') + self.sig)}\n"


#: verify(text, sig) -> whether ``sig`` is a valid signature of ``text``.
VerifyFn = Callable[[bytes, bytes], bool]


@dataclass(frozen=True, slots=True)
class Verifier:
    """A known key: name, ID, type, raw public key, and how its signatures verify."""

    name: str
    key_id: int
    sig_type: int
    public_key: bytes
    verify: VerifyFn

    def vkey(self) -> str:
        return encode_vkey(self.name, self.sig_type, self.public_key)


def _ed25519_verify(public_key: bytes) -> VerifyFn:
    vk = nacl.signing.VerifyKey(public_key)

    def verify(text: bytes, sig: bytes) -> bool:
        if len(sig) != 64:
            return False
        try:
            vk.verify(text, sig)
        except nacl.exceptions.BadSignatureError:
            return False
        return True

    return verify


def encode_vkey(name: str, sig_type: int, public_key: bytes) -> str:
    """``<name>+<hex key ID>+<base64(type || key)>`` ("Verifier keys")."""
    check_name(name)
    return f"{name}+{key_id(name, sig_type, public_key):08x}+{b64(bytes([sig_type]) + public_key)}"


def parse_vkey(vkey: str, *, types: Sequence[int] = (SIG_ED25519,)) -> Verifier:
    """Parse a verifier key of one of ``types`` (Ed25519 0x01 or the cosignature 0x04, both
    32-byte Ed25519 keys); refuses a key ID that does not match the key."""
    from keys import checkpoint  # the cosignature type's verification lives there

    parts = vkey.strip().split("+", 2)  # base64 may itself contain "+"
    if len(parts) != 3:
        raise NoteError(f"verifier key {vkey[:120]!r} is not name+keyid+key")
    name, hex_id, key64 = parts
    check_name(name)
    if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
        raise NoteError(f"verifier key {name!r}: key ID {hex_id[:16]!r} is not 8 lowercase "
                        "hex digits")
    raw = b64decode(key64, f"verifier key {name!r}")
    if not raw:
        raise NoteError(f"verifier key {name!r} has no key")
    sig_type, public_key = raw[0], raw[1:]
    if sig_type not in types:
        raise NoteError(f"verifier key {name!r} is of signature type 0x{sig_type:02x}; "
                        f"expected {', '.join(f'0x{t:02x}' for t in types)}")
    if len(public_key) != 32:
        raise NoteError(f"verifier key {name!r}: an Ed25519 key is 32 bytes, not "
                        f"{len(public_key)}")
    if int(hex_id, 16) != key_id(name, sig_type, public_key):
        raise NoteError(f"verifier key {name!r}: key ID {hex_id} does not match the key")
    if sig_type == SIG_ED25519:
        fn = _ed25519_verify(public_key)
    elif sig_type == SIG_COSIGNATURE_V1:
        fn = checkpoint.cosignature_verify_fn(public_key)
    else:  # pragma: no cover - types is checked above
        raise NoteError(f"unsupported signature type 0x{sig_type:02x}")
    return Verifier(name, int(hex_id, 16), sig_type, public_key, fn)


@dataclass(frozen=True, slots=True)
class Signer:
    """An Ed25519 note signer (type 0x01)."""

    name: str
    key: nacl.signing.SigningKey

    def __post_init__(self) -> None:
        check_name(self.name)

    @property
    def public_key(self) -> bytes:
        return bytes(self.key.verify_key)

    @property
    def key_id(self) -> int:
        return key_id(self.name, SIG_ED25519, self.public_key)

    def vkey(self) -> str:
        return encode_vkey(self.name, SIG_ED25519, self.public_key)

    def verifier(self) -> Verifier:
        return parse_vkey(self.vkey())

    def sign(self, text: bytes) -> Signature:
        return Signature(self.name, self.key_id, self.key.sign(text).signature)


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed note: its text (with the final newline), the signatures that known keys
    verified, and the other signature lines (kept, unverified)."""

    text: bytes
    verified: tuple[Signature, ...]
    unverified: tuple[Signature, ...]

    def encode(self) -> bytes:
        return self.text + b"\n" + "".join(s.line() for s in self.verified +
                                           self.unverified).encode()

    def verified_by(self, name: str, key_id: int) -> Signature | None:
        for s in self.verified:
            if (s.name, s.key_id) == (name, key_id):
                return s
        return None


def check_text(text: bytes) -> None:
    """A note text: UTF-8, ends in a newline, no control character but newline."""
    if not text.endswith(b"\n"):
        raise NoteError("note text does not end in a newline")
    _check_chars(text)


def _check_chars(data: bytes) -> None:
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError(f"note is not UTF-8 (byte {exc.start})") from exc
    for i, c in enumerate(decoded):
        if ord(c) < 0x20 and c != "\n":
            raise NoteError(f"note has control character 0x{ord(c):02x} at character {i}")


def sign(text: bytes, signers: Iterable[Signer], *, extra: Iterable[Signature] = ()) -> bytes:
    """The signed note of ``text`` by ``signers`` (then any ``extra`` lines)."""
    check_text(text)
    sigs = [s.sign(text) for s in signers] + list(extra)
    if not sigs:
        raise UsageError("a note needs at least one signature")
    return text + b"\n" + "".join(s.line() for s in sigs).encode()


def split(msg: bytes) -> tuple[bytes, list[Signature]]:
    """Split a note into its text and parsed signature lines, without verifying."""
    if len(msg) > MAX_NOTE_BYTES:
        raise NoteError(f"note of {len(msg)} bytes exceeds the limit of {MAX_NOTE_BYTES}",
                        code="too_large")
    _check_chars(msg)
    cut = msg.rfind(b"\n\n")
    if cut < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = msg[: cut + 1], msg[cut + 2:]
    if not block or not block.endswith(b"\n"):
        raise NoteError("note has no signature lines, or they do not end in a newline")
    lines = block[:-1].decode().split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has {len(lines)} signatures; the limit is {MAX_SIGNATURES}",
                        code="too_large")
    return text, [parse_signature_line(line) for line in lines]


def parse_signature_line(line: str) -> Signature:
    """``— <name> <base64>`` (without the newline)."""
    if not line.startswith(_DASH):
        raise NoteError(f"signature line does not start with an em dash: {line[:80]!r}")
    name, sep, b64sig = line[len(_DASH):].partition(" ")
    if not sep:
        raise NoteError(f"signature line has no signature: {line[:80]!r}")
    check_name(name)
    raw = b64decode(b64sig, f"signature by {name!r}")
    if len(raw) < 5:
        raise NoteError(f"signature by {name!r} is {len(raw)} bytes; at least 5 expected")
    return Signature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def open_note(msg: bytes, known: Iterable[Verifier]) -> Note:
    """Parse and verify a signed note against ``known`` keys ("Signatures").

    Raises ``NoteError`` (malformed), ``BadSignature`` (a known key's signature fails:
    the whole note is refused) or ``UntrustedKey`` (no known key signed it)."""
    text, sigs = split(msg)
    by_id = {(v.name, v.key_id): v for v in known}
    verified: list[Signature] = []
    unverified: list[Signature] = []
    seen: set[tuple[str, int]] = set()
    for s in sigs:
        v = by_id.get((s.name, s.key_id))
        if v is None:
            if s not in unverified:
                unverified.append(s)
            continue
        if not v.verify(text, s.sig):
            raise BadSignature(f"the signature by {s.name} ({s.key_id:08x}) does not verify")
        if (s.name, s.key_id) not in seen:  # a repeated signature by one key counts once
            seen.add((s.name, s.key_id))
            verified.append(s)
    if not verified:
        names = ", ".join(sorted({s.name for s in sigs}))[:200]
        raise UntrustedKey(f"no known key signed this note (signed by: {names})")
    return Note(text, tuple(verified), tuple(unverified))


__all__ = [
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "SIG_COSIGNATURE_V1",
    "SIG_ED25519",
    "Note",
    "NoteError",
    "Signature",
    "Signer",
    "Verifier",
    "b64",
    "b64decode",
    "check_name",
    "check_text",
    "encode_vkey",
    "key_id",
    "open_note",
    "parse_signature_line",
    "parse_vkey",
    "sign",
    "split",
]
