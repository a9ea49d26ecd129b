"""Private keys at rest (S8): Argon2id-derived key, XChaCha20-Poly1305, files 0600.

File format (msgpack map, all fields required)::

    {v: 1, type: "hotline-key", kdf: "argon2id13",
     kind: "desk"|"authority"|"relay"|"operator"|"witness",
     opslimit: int, memlimit: int, salt: bin(16), nonce: bin(24), ciphertext: bin}

The wrapping key is ``argon2id(32, passphrase, salt, opslimit, memlimit)``; the ciphertext
is XChaCha20-Poly1305 of the payload with the encoding of every other field as associated
data, so neither the parameters nor the kind can be altered without detection. Loading
refuses a file that group or others can read, and bounds the stored parameters so that a
crafted file cannot demand unbounded memory or time.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.pwhash.argon2id as argon2id
import nacl.signing

from keys import codec
from keys.codec import blob, fields, list_of, one_of, timestamp, uint, version
from keys.errors import (
    DecryptionFailed,
    InsecureKeyFile,
    KeyFileError,
    ProtocolError,
    WrongPassphrase,
)
from keys.ids import DeskId, check_desk
from keys.primitives import Random, aead_decrypt, aead_encrypt, system_random
from keys.secrets import CLASSICAL, HYBRID, DeskSecrets, EncryptionKeyPair
from keys.xwing import XWingPrivateKey

KINDS = ("desk", "authority", "relay", "operator", "witness")
MAX_KEY_FILE_BYTES = 64 * 1024
#: The most a stored parameter set may ask for: SENSITIVE (1 GiB) with headroom on time.
MAX_OPSLIMIT = 16
MAX_MEMLIMIT = 1 << 30


@dataclass(frozen=True, slots=True)
class KdfLimits:
    opslimit: int
    memlimit: int


#: Keys opened by every CLI call.
MODERATE = KdfLimits(argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)
#: The offline authority key.
SENSITIVE = KdfLimits(argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE)
#: Only for tests, selected explicitly (see the CLI's HOTLINE_TEST_FAST_KDF).
TEST_ONLY_MINIMUM = KdfLimits(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700; tighten it if it exists."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o700)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically and durably: temp file, fsync, rename, fsync dir."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _aad(header: dict[str, Any]) -> bytes:
    return codec.pack(
        [header[k] for k in ("v", "type", "kind", "kdf", "opslimit", "memlimit", "salt", "nonce")]
    )


def seal_key_file(
    kind: str,
    payload: bytes,
    passphrase: bytes,
    *,
    limits: KdfLimits = MODERATE,
    random: Random = system_random,
) -> bytes:
    if kind not in KINDS:
        raise ValueError(f"key file kind must be one of {', '.join(KINDS)}")
    if not passphrase:
        raise KeyFileError("an empty passphrase is not allowed", code="empty_passphrase")
    header: dict[str, Any] = {
        "v": 1,
        "type": "hotline-key",
        "kind": kind,
        "kdf": "argon2id13",
        "opslimit": limits.opslimit,
        "memlimit": limits.memlimit,
        "salt": random(argon2id.SALTBYTES),
        "nonce": random(24),
    }
    key = argon2id.kdf(
        32, passphrase, header["salt"], opslimit=limits.opslimit, memlimit=limits.memlimit
    )
    ciphertext = aead_encrypt(payload, _aad(header), header["nonce"], key)
    return codec.pack(header | {"ciphertext": ciphertext})


def open_key_file(data: bytes, passphrase: bytes, *, kind: str, name: str = "key file") -> bytes:
    try:
        f = fields(
            codec.unpack(data, what=name, max_bytes=MAX_KEY_FILE_BYTES),
            {
                "v": version(1),
                "type": codec.const("hotline-key"),
                "kind": one_of(KINDS),
                "kdf": codec.const("argon2id13"),
                "opslimit": uint(MAX_OPSLIMIT, argon2id.OPSLIMIT_MIN),
                "memlimit": uint(MAX_MEMLIMIT, argon2id.MEMLIMIT_MIN),
                "salt": blob(size=argon2id.SALTBYTES),
                "nonce": blob(size=24),
                "ciphertext": blob(max_size=MAX_KEY_FILE_BYTES),
            },
            name,
        )
    except ProtocolError as exc:
        raise KeyFileError(
            f"{name} is damaged or not a Hotline key file: {exc}", code="key_file_corrupt"
        ) from exc
    if f["kind"] != kind:
        raise KeyFileError(
            f"{name} holds a {f['kind']} key, not a {kind} key", code="wrong_key_kind"
        )
    try:
        key = argon2id.kdf(
            32, passphrase, f["salt"], opslimit=f["opslimit"], memlimit=f["memlimit"]
        )
        return aead_decrypt(f["ciphertext"], _aad(f), f["nonce"], key)
    except (DecryptionFailed, nacl.exceptions.CryptoError) as exc:
        raise WrongPassphrase(
            f"cannot open {name}: the passphrase is wrong, or the file was altered"
        ) from exc


def write_key_file(
    path: Path, kind: str, payload: bytes, passphrase: bytes, *, limits: KdfLimits = MODERATE
) -> None:
    ensure_private_dir(path.parent)
    atomic_write(path, seal_key_file(kind, payload, passphrase, limits=limits))


def read_key_file(path: Path, passphrase: bytes, *, kind: str) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise KeyFileError(f"key file {path} does not exist", code="key_file_missing") from exc
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise InsecureKeyFile(
            f"key file {path} is readable by group or others (mode {mode:04o}); "
            f"refusing to use it. Run: chmod 600 {path}"
        )
    if st.st_size > MAX_KEY_FILE_BYTES:
        raise KeyFileError(
            f"key file {path} is {st.st_size} bytes; a key file is far smaller",
            code="key_file_corrupt",
        )
    return open_key_file(path.read_bytes(), passphrase, kind=kind, name=f"key file {path}")


# ------------------------------------------------------------------------- payloads


def encode_desk_secrets(secrets: DeskSecrets) -> bytes:
    return codec.pack(
        {
            "desk": secrets.desk,
            "ik": bytes(secrets.identity),
            # A hybrid key is stored as its 32-byte X-Wing seed with "kem": "x-wing"; a
            # classical one as before (no "kem" field), so older files read unchanged.
            "eks": [
                {
                    "sk": bytes(p.private_key),
                    "not_before": p.not_before,
                    "not_after": p.not_after,
                    "keep_until": p.keep_until,
                }
                | ({"kem": HYBRID} if p.kem == HYBRID else {})
                for p in secrets.encryption_keys
            ],
        }
    )


_EK_RECORD = {
    "sk": blob(size=32),
    "not_before": timestamp,
    "not_after": timestamp,
    "keep_until": timestamp,
}


def _ek_record(value: Any, path: str) -> dict[str, Any]:
    if type(value) is dict and "kem" in value:
        spec = _EK_RECORD | {"kem": one_of((CLASSICAL, HYBRID))}
    else:
        spec = _EK_RECORD
    return fields(value, spec, path) | ({} if "kem" in spec else {"kem": CLASSICAL})


def _ek_private(e: dict[str, Any]) -> nacl.public.PrivateKey | XWingPrivateKey:
    if e["kem"] == HYBRID:
        return XWingPrivateKey(e["sk"])
    return nacl.public.PrivateKey(e["sk"])


def decode_desk_secrets(payload: bytes) -> DeskSecrets:
    f = fields(
        codec.unpack(payload, what="desk secrets", max_bytes=MAX_KEY_FILE_BYTES),
        {
            "desk": check_desk,
            "ik": blob(size=32),
            "eks": list_of(_ek_record, max_items=64),
        },
        "desk secrets",
    )
    return DeskSecrets(
        DeskId(f["desk"]),
        nacl.signing.SigningKey(f["ik"]),
        tuple(
            EncryptionKeyPair(_ek_private(e), e["not_before"], e["not_after"], e["keep_until"])
            for e in f["eks"]
        ),
    )


def encode_signing_key(name: str, sk: nacl.signing.SigningKey) -> bytes:
    return codec.pack({"name": name, "sk": bytes(sk)})


def decode_signing_key(payload: bytes) -> tuple[str, nacl.signing.SigningKey]:
    f = fields(
        codec.unpack(payload, what="signing key", max_bytes=MAX_KEY_FILE_BYTES),
        {"name": codec.text(100, min_chars=1), "sk": blob(size=32)},
        "signing key",
    )
    return f["name"], nacl.signing.SigningKey(f["sk"])
