"""Private keys at rest (S8; SECURITY.md 1.3): Argon2id, AEAD over every field, mode 0600."""

from __future__ import annotations

import inspect
import os
import stat
from pathlib import Path
from typing import Any

import nacl.pwhash.argon2id as argon2id
import nacl.signing
import pytest

from keys import InsecureKeyFile, KeyFileError, WrongPassphrase, keyfile
from tests.factory import Federation
from tests.keys._helpers import flip, pack, unpack

FAST = keyfile.TEST_ONLY_MINIMUM
PASS = b"correct horse battery staple"


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "hotline" / "keys" / "us.caisi.key"


def write(path: Path, payload: bytes = b"secret payload", kind: str = "desk",
          passphrase: bytes = PASS) -> None:
    keyfile.write_key_file(path, kind, payload, passphrase, limits=FAST)


def fields_of(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = unpack(path.read_bytes())
    return out


def rewrite(path: Path, **changes: Any) -> None:
    data = pack(fields_of(path) | changes)
    path.write_bytes(data)
    path.chmod(0o600)


def forbid_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any later Argon2 call fail the test: refusals must come before key derivation."""
    def boom(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("argon2id.kdf ran on a file that should have been refused first")
    monkeypatch.setattr(keyfile.argon2id, "kdf", boom)


# ------------------------------------------------------------------ round trip and modes


def test_desk_secrets_round_trip_through_a_key_file(key_path: Path) -> None:
    """Desk secrets written with a passphrase read back identical."""
    secrets = Federation.create().desks["us.caisi"].secrets
    keyfile.write_key_file(key_path, "desk", keyfile.encode_desk_secrets(secrets), PASS,
                           limits=FAST)
    back = keyfile.decode_desk_secrets(keyfile.read_key_file(key_path, PASS, kind="desk"))
    assert back.desk == secrets.desk
    assert bytes(back.identity) == bytes(secrets.identity)
    assert [(bytes(p.private_key), p.not_before, p.not_after, p.keep_until)
            for p in back.encryption_keys] == [
        (bytes(p.private_key), p.not_before, p.not_after, p.keep_until)
        for p in secrets.encryption_keys]


@pytest.mark.parametrize("kind", ["authority", "relay"])
def test_signing_key_round_trips_through_a_key_file(key_path: Path, kind: str) -> None:
    """An authority or relay signing key written to disk reads back identical."""
    sk = nacl.signing.SigningKey.generate()
    write(key_path, keyfile.encode_signing_key("us", sk), kind=kind)
    name, back = keyfile.decode_signing_key(keyfile.read_key_file(key_path, PASS, kind=kind))
    assert name == "us" and bytes(back) == bytes(sk)


def test_key_file_never_contains_the_secret(key_path: Path) -> None:
    """The private key bytes and the passphrase do not appear in the file."""
    sk = nacl.signing.SigningKey.generate()
    write(key_path, keyfile.encode_signing_key("relay-1", sk), kind="relay")
    data = key_path.read_bytes()
    assert bytes(sk) not in data and PASS not in data
    assert fields_of(key_path)["kdf"] == "argon2id13"


def test_key_file_is_mode_0600_in_a_0700_directory(key_path: Path) -> None:
    """A new key file is 0600 and the directory created for it is 0700."""
    write(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700


def test_existing_loose_directory_is_tightened(key_path: Path) -> None:
    """Writing into an existing 0755 directory makes it 0700."""
    key_path.parent.mkdir(parents=True, mode=0o755)
    key_path.parent.chmod(0o755)
    write(key_path)
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700


def test_rewriting_a_key_file_leaves_no_temporary_files(key_path: Path) -> None:
    """Replacing a key file is atomic: only the final file remains, with the new content."""
    write(key_path, b"one")
    write(key_path, b"two")
    assert [p.name for p in key_path.parent.iterdir()] == [key_path.name]
    assert keyfile.read_key_file(key_path, PASS, kind="desk") == b"two"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_group_or_world_readable_key_file_is_refused(key_path: Path, mode: int) -> None:
    """Loading a key file others can read raises InsecureKeyFile naming chmod 600."""
    write(key_path)
    key_path.chmod(mode)
    with pytest.raises(InsecureKeyFile) as exc:
        keyfile.read_key_file(key_path, PASS, kind="desk")
    assert exc.value.code == "insecure_key_file"
    assert "chmod 600" in str(exc.value) and str(key_path) in str(exc.value)


def test_owner_read_only_key_file_is_accepted(key_path: Path) -> None:
    """A 0400 key file is private enough."""
    write(key_path)
    key_path.chmod(0o400)
    assert keyfile.read_key_file(key_path, PASS, kind="desk") == b"secret payload"


def test_missing_key_file_has_its_own_code(tmp_path: Path) -> None:
    """A path with no key file raises KeyFileError key_file_missing."""
    with pytest.raises(KeyFileError) as exc:
        keyfile.read_key_file(tmp_path / "nope.key", PASS, kind="desk")
    assert exc.value.code == "key_file_missing"


# ------------------------------------------------------------------ passphrases and tampering


@pytest.mark.parametrize("wrong", [b"correct horse battery stapl", b"", PASS + b" ", b"\x00"])
def test_wrong_passphrase_is_refused(key_path: Path, wrong: bytes) -> None:
    """A different passphrase raises WrongPassphrase."""
    write(key_path)
    with pytest.raises(WrongPassphrase) as exc:
        keyfile.read_key_file(key_path, wrong, kind="desk")
    assert exc.value.code == "wrong_passphrase"


@pytest.mark.parametrize("field", ["ciphertext", "salt", "nonce"])
@pytest.mark.parametrize("where", [0, -1])
def test_flipped_byte_in_key_file_is_refused(key_path: Path, field: str, where: int) -> None:
    """A flipped bit in the ciphertext, salt or nonce fails authentication (wrong_passphrase)."""
    write(key_path)
    value = fields_of(key_path)[field]
    rewrite(key_path, **{field: flip(value, where % len(value))})
    with pytest.raises(WrongPassphrase) as exc:
        keyfile.read_key_file(key_path, PASS, kind="desk")
    assert exc.value.code == "wrong_passphrase"


@pytest.mark.parametrize(("field", "value"), [
    ("opslimit", argon2id.OPSLIMIT_MIN + 1),
    ("memlimit", argon2id.MEMLIMIT_MIN * 2),
])
def test_altered_kdf_parameters_are_refused(key_path: Path, field: str, value: int) -> None:
    """Changing opslimit or memlimit (within bounds) is detected: wrong_passphrase."""
    write(key_path)
    rewrite(key_path, **{field: value})
    with pytest.raises(WrongPassphrase) as exc:
        keyfile.read_key_file(key_path, PASS, kind="desk")
    assert exc.value.code == "wrong_passphrase"


def test_changed_kind_is_refused(key_path: Path) -> None:
    """A desk key relabelled as a relay key is refused whichever kind the reader expects."""
    write(key_path, kind="desk")
    rewrite(key_path, kind="relay")
    with pytest.raises(KeyFileError) as exc:
        keyfile.read_key_file(key_path, PASS, kind="desk")
    assert exc.value.code == "wrong_key_kind"
    with pytest.raises(WrongPassphrase) as exc2:
        keyfile.read_key_file(key_path, PASS, kind="relay")
    assert exc2.value.code == "wrong_passphrase"


def test_key_of_another_kind_is_refused(key_path: Path) -> None:
    """Opening an authority key file where a desk key is expected raises wrong_key_kind."""
    write(key_path, kind="authority")
    with pytest.raises(KeyFileError) as exc:
        keyfile.read_key_file(key_path, PASS, kind="desk")
    assert exc.value.code == "wrong_key_kind"


@pytest.mark.parametrize(("field", "value"), [
    ("memlimit", 2**40),
    ("memlimit", keyfile.MAX_MEMLIMIT + 1),
    ("memlimit", argon2id.MEMLIMIT_MIN - 1),
    ("opslimit", 2**20),
    ("opslimit", 0),
    ("opslimit", -1),
    ("opslimit", 3.0),
    ("memlimit", True),
])
def test_crafted_kdf_parameters_are_refused_before_argon2(
        key_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: object) -> None:
    """Out-of-bounds or mistyped KDF parameters give key_file_corrupt without running Argon2."""
    write(key_path)
    rewrite(key_path, **{field: value})
    forbid_argon2(monkeypatch)
    with pytest.raises(KeyFileError) as exc:
        keyfile.read_key_file(key_path, PASS, kind="desk")
    assert exc.value.code == "key_file_corrupt"
    assert not isinstance(exc.value, WrongPassphrase)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "unknown_field", "kdf_argon2i",
                                    "oversize", "empty"])
def test_damaged_key_file_is_corrupt(key_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     damage: str) -> None:
    """A key file that is not a well-formed Hotline key file raises key_file_corrupt."""
    write(key_path)
    good = key_path.read_bytes()
    data = {
        "truncated": good[:-5],
        "garbage": b"-----BEGIN OPENSSH PRIVATE KEY-----\n",
        "unknown_field": pack(fields_of(key_path) | {"hint": "it's the dog's name"}),
        "kdf_argon2i": pack(fields_of(key_path) | {"kdf": "argon2i13"}),
        "oversize": good + b"\x00" * keyfile.MAX_KEY_FILE_BYTES,
        "empty": b"",
    }[damage]
    key_path.write_bytes(data)
    key_path.chmod(0o600)
    forbid_argon2(monkeypatch)
    with pytest.raises(KeyFileError) as exc:
        keyfile.read_key_file(key_path, PASS, kind="desk")
    assert exc.value.code == "key_file_corrupt"


@pytest.mark.parametrize("version", [0, 2])
def test_key_file_of_another_version_is_a_key_file_error(
        key_path: Path, monkeypatch: pytest.MonkeyPatch, version: int) -> None:
    """A key file with v other than 1 is a local KeyFileError, not a protocol error."""
    write(key_path)
    rewrite(key_path, v=version)
    forbid_argon2(monkeypatch)
    with pytest.raises(KeyFileError) as exc:
        keyfile.read_key_file(key_path, PASS, kind="desk")
    assert exc.value.code != KeyFileError.code  # a specific code, e.g. key_file_corrupt
    assert not isinstance(exc.value, WrongPassphrase)


def test_empty_passphrase_is_refused(key_path: Path) -> None:
    """Sealing with an empty passphrase raises empty_passphrase and writes nothing."""
    with pytest.raises(KeyFileError) as exc:
        keyfile.seal_key_file("desk", b"payload", b"", limits=FAST)
    assert exc.value.code == "empty_passphrase"
    with pytest.raises(KeyFileError):
        keyfile.write_key_file(key_path, "desk", b"payload", b"", limits=FAST)
    assert not key_path.exists()


# ------------------------------------------------------------------ KDF strength


def test_named_limits_are_at_least_libsodium_levels() -> None:
    """MODERATE and SENSITIVE are at least libsodium's MODERATE and SENSITIVE Argon2id limits."""
    assert keyfile.MODERATE.opslimit >= argon2id.OPSLIMIT_MODERATE
    assert keyfile.MODERATE.memlimit >= argon2id.MEMLIMIT_MODERATE
    assert keyfile.SENSITIVE.opslimit >= argon2id.OPSLIMIT_SENSITIVE
    assert keyfile.SENSITIVE.memlimit >= argon2id.MEMLIMIT_SENSITIVE
    assert keyfile.MAX_MEMLIMIT >= keyfile.SENSITIVE.memlimit
    assert keyfile.MAX_OPSLIMIT >= keyfile.SENSITIVE.opslimit


@pytest.mark.parametrize("func", [keyfile.seal_key_file, keyfile.write_key_file])
def test_default_limits_are_at_least_moderate(func: object) -> None:
    """Without an explicit choice, key files are sealed with at least MODERATE limits."""
    default = inspect.signature(func).parameters["limits"].default  # type: ignore[arg-type]
    assert default is not keyfile.TEST_ONLY_MINIMUM
    assert default.opslimit >= argon2id.OPSLIMIT_MODERATE
    assert default.memlimit >= argon2id.MEMLIMIT_MODERATE


def test_default_sealed_file_records_moderate_parameters(
        key_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file written with the defaults derives its key with, and stores, MODERATE limits."""
    calls: list[tuple[int, int]] = []

    def fake_kdf(size: int, password: bytes, salt: bytes, *, opslimit: int,
                 memlimit: int) -> bytes:
        calls.append((opslimit, memlimit))
        return bytes(size)

    monkeypatch.setattr(keyfile.argon2id, "kdf", fake_kdf)
    keyfile.write_key_file(key_path, "desk", b"payload", PASS)
    stored = fields_of(key_path)
    assert calls == [(stored["opslimit"], stored["memlimit"])]
    assert stored["opslimit"] >= argon2id.OPSLIMIT_MODERATE
    assert stored["memlimit"] >= argon2id.MEMLIMIT_MODERATE
    assert len(stored["salt"]) == argon2id.SALTBYTES and len(stored["nonce"]) == 24


def test_salts_and_nonces_are_fresh_per_file(tmp_path: Path) -> None:
    """Two files sealed with the same passphrase and payload differ in salt, nonce and bytes."""
    a, b = tmp_path / "a.key", tmp_path / "b.key"
    write(a)
    write(b)
    fa, fb = fields_of(a), fields_of(b)
    assert fa["salt"] != fb["salt"] and fa["nonce"] != fb["nonce"]
    assert fa["ciphertext"] != fb["ciphertext"]
    assert os.path.getsize(a) == os.path.getsize(b)
