"""A desk's (or authority's) home folder: keys, certificates, pinned root, contacts.

Layout (folder mode 0700, every file 0600, every write atomic)::

    config.toml        desk id and relay URLs
    desk.key           the desk's private keys, encrypted (keys.keyfile)
    desk.request       the certification request to hand to the country authority
    desk.cert          the desk certificate the authority issued
    ek-certs           the desk's encryption-key certificates (msgpack list)
    root               the pinned federation root
    revocations/       revocations known to this desk
    contacts/          verified cards of other desks
    authority.key      a country authority's key (offline machines only)
    authority.card     its public card
    issued/            certificates this authority issued (for revocation by desk name)
"""

from __future__ import annotations

import getpass
import os
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from keys import (
    DeskCard,
    DeskCertificate,
    DeskSecrets,
    EkCertificate,
    FederationRoot,
    Revocation,
    TrustStore,
    UsageError,
    codec,
)
from keys.armor import dearmor, dearmor_all
from keys.errors import HotlineError, KeyFileError
from keys.keyfile import (
    MODERATE,
    SENSITIVE,
    TEST_ONLY_MINIMUM,
    KdfLimits,
    atomic_write,
    decode_desk_secrets,
    encode_desk_secrets,
    ensure_private_dir,
    read_key_file,
    write_key_file,
)

DEFAULT_HOME = Path.home() / ".hotline"
PASSPHRASE_ENV = "HOTLINE_PASSPHRASE"  # noqa: S105 - the variable name, not a secret
#: Lowers the Argon2id cost of newly written key files to libsodium's minimum. For test
#: suites only: a key file written with it is cheap to brute-force.
FAST_KDF_ENV = "HOTLINE_TEST_FAST_KDF"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    if home:
        return Path(home).expanduser()
    env = os.environ.get("HOTLINE_HOME")
    return Path(env).expanduser() if env else DEFAULT_HOME


def kdf_limits(default: KdfLimits = MODERATE) -> KdfLimits:
    return TEST_ONLY_MINIMUM if os.environ.get(FAST_KDF_ENV) == "1" else default


def read_passphrase(
    passphrase_file: str | None, *, confirm: bool = False, what: str = "key"
) -> bytes:
    """The passphrase from --passphrase-file, $HOTLINE_PASSPHRASE, or a prompt (in that order)."""
    if passphrase_file:
        try:
            data = Path(passphrase_file).read_bytes()
        except OSError as exc:
            raise UsageError(
                f"cannot read passphrase file {passphrase_file}: {exc.strerror}"
            ) from exc
        value = data.rstrip(b"\r\n")
    elif os.environ.get(PASSPHRASE_ENV):
        value = os.environ[PASSPHRASE_ENV].encode()
    elif sys.stdin.isatty():
        value = getpass.getpass(f"Passphrase for the {what}: ").encode()
        if confirm and getpass.getpass("Repeat the passphrase: ").encode() != value:
            raise UsageError("the two passphrases differ")
    else:
        raise UsageError(
            f"no passphrase for the {what}: use --passphrase-file, set "
            f"{PASSPHRASE_ENV}, or run in a terminal"
        )
    if not value:
        raise UsageError("the passphrase is empty")
    return value


def read_document(path: str | Path, kind: str, *, max_bytes: int = 256 * 1024,
                  raw: bool = False) -> bytes:
    """Read a document a person handed over (armoured or raw), or '-' for stdin; with
    ``raw`` the file's bytes as they are (armour left on)."""
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(max_bytes + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > max_bytes:
        raise UsageError(f"{path} is larger than {max_bytes} bytes; it is not a {kind}")
    return data if raw else dearmor(kind, data)


@dataclass
class Home:
    path: Path

    # ---------------------------------------------------------------- files
    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self, name: str) -> bool:
        return self.file(name).exists()

    def write(self, name: str, data: bytes) -> Path:
        target = self.file(name)
        ensure_private_dir(target.parent)
        atomic_write(target, data)
        return target

    def read(self, name: str, what: str) -> bytes:
        try:
            return self.file(name).read_bytes()
        except FileNotFoundError as exc:
            raise UsageError(f"{what} not found at {self.file(name)}") from exc

    # ---------------------------------------------------------------- config
    def config(self) -> dict[str, object]:
        path = self.file("config.toml")
        if not path.exists():
            return {}
        try:
            return tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path} is not valid TOML: {exc}") from exc

    def write_config(self, values: dict[str, object]) -> None:
        lines = []
        for key, value in values.items():
            if isinstance(value, list):
                items = ", ".join(_toml_str(str(v)) for v in value)
                lines.append(f"{key} = [{items}]")
            elif isinstance(value, bool | int | float):
                lines.append(f"{key} = {str(value).lower()}")
            else:
                lines.append(f"{key} = {_toml_str(str(value))}")
        self.write("config.toml", ("\n".join(lines) + "\n").encode())

    def desk_id(self) -> str:
        desk = self.config().get("desk")
        if not isinstance(desk, str):
            raise UsageError(f"{self.path} holds no desk: run 'hotline keys init --id cc.name'")
        return desk

    # ---------------------------------------------------------------- desk keys
    def write_desk_secrets(self, secrets: DeskSecrets, passphrase: bytes) -> None:
        ensure_private_dir(self.path)
        write_key_file(
            self.file("desk.key"),
            "desk",
            encode_desk_secrets(secrets),
            passphrase,
            limits=kdf_limits(MODERATE),
        )

    def desk_secrets(self, passphrase: bytes) -> DeskSecrets:
        return decode_desk_secrets(read_key_file(self.file("desk.key"), passphrase, kind="desk"))

    def desk_cert(self) -> DeskCertificate:
        return DeskCertificate.decode(
            self.read("desk.cert", "desk certificate (install the one your authority issued)")
        )

    def ek_certs(self) -> list[EkCertificate]:
        if not self.exists("ek-certs"):
            return []
        raw = codec.unpack(
            self.read("ek-certs", "encryption key certificates"), what="ek-certs", max_bytes=1 << 20
        )
        return [
            EkCertificate.decode(x)
            for x in codec.list_of(codec.blob(max_size=65536), max_items=64)(raw, "ek-certs")
        ]

    def write_ek_certs(self, certs: list[EkCertificate]) -> None:
        self.write("ek-certs", codec.pack([c.encode() for c in certs]))

    def card(self, now: int) -> DeskCard:
        """This desk's public card: its certificate and EK certificates still valid now."""
        eks = sorted(
            (c for c in self.ek_certs() if c.not_after > now),
            key=lambda c: c.not_before,
            reverse=True,
        )[:4]
        if not eks:
            raise UsageError("this desk has no valid encryption key: run 'hotline keys rotate'")
        return DeskCard(self.desk_cert(), tuple(eks))

    # ---------------------------------------------------------------- trust
    def root(self) -> FederationRoot:
        return FederationRoot.decode(
            self.read("root", "pinned federation root (run 'hotline federation pin ROOT')")
        )

    def trust(self, now: int) -> TrustStore:
        root = self.root()
        root.check_fresh(now)
        store = TrustStore(root)
        for path, rev in self.revocations():
            try:
                store.add_revocation(rev)
            except HotlineError as exc:
                raise UsageError(f"{path}: {exc}") from exc
        return store

    def revocations(self) -> list[tuple[Path, Revocation]]:
        """The revocations kept in revocations/ (decoded, not verified), with their files;
        raw or armoured. Raises UsageError naming a file that is not a revocation."""
        rev_dir = self.file("revocations")
        out: list[tuple[Path, Revocation]] = []
        if not rev_dir.is_dir():
            return out
        for path in sorted(rev_dir.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue  # atomic writes' temporary files
            try:
                docs = dearmor_all("revocation", path.read_bytes())
                out += [(path, Revocation.decode(doc)) for doc in docs]
            except (OSError, HotlineError) as exc:
                raise UsageError(f"{path}: not a revocation: {exc}") from exc
        return out

    def revocations_version(self) -> tuple[int, tuple[str, ...]]:
        """Changes whenever a file is added to, renamed into or removed from revocations/
        (the folder's modification time and names), so a running process reads it only
        then."""
        rev_dir = self.file("revocations")
        try:
            return rev_dir.stat().st_mtime_ns, tuple(sorted(os.listdir(rev_dir)))
        except OSError:
            return 0, ()

    def keep_revocation(self, rev: Revocation) -> None:
        self.write(f"revocations/{rev.desk}-{rev.ik_kid.hex()}.rev", rev.encode())

    def contacts(self) -> dict[str, DeskCard]:
        out: dict[str, DeskCard] = {}
        cdir = self.file("contacts")
        if cdir.is_dir():
            for path in sorted(cdir.glob("*.card")):
                card = DeskCard.decode(path.read_bytes())
                out[card.desk] = card
        return out

    # ---------------------------------------------------------------- authority
    def authority_limits(self) -> KdfLimits:
        return kdf_limits(SENSITIVE)


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


__all__ = ["Home", "KeyFileError", "now_ms", "read_document", "read_passphrase", "resolve_home"]
