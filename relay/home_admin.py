"""Changes to a relay home made while the relay is stopped: a federation root update and
a replacement of the relay's signing key. Each keeps what it replaces beside it."""

from __future__ import annotations

import os
from pathlib import Path

import nacl.signing

from keys import FederationRoot, RelayCard
from keys.errors import UsageError
from keys.keyfile import (
    MODERATE,
    KdfLimits,
    atomic_write,
    decode_signing_key,
    encode_signing_key,
    read_key_file,
    write_key_file,
)
from relay.server import hold_home_lock


def update_root(home: Path, root_bytes: bytes, now: int) -> tuple[FederationRoot, FederationRoot]:
    """Pin ``root_bytes`` as the successor of the home's root (higher version, signed by
    every member of the old one and of the new one, not expired); return (old, new). The
    old root is kept as ``root.v<N>``. A running relay serves the new root after a restart."""
    try:
        previous = FederationRoot.decode((home / "root").read_bytes())
    except FileNotFoundError as exc:
        raise UsageError(f"{home} has no pinned root: run 'hotline relay init'") from exc
    root = FederationRoot.decode(root_bytes)
    root.check_update(previous, now)
    atomic_write(home / f"root.v{previous.version}", previous.encode())
    atomic_write(home / "root", root.encode())
    return previous, root


def replace_key(home: Path, passphrase: bytes, now: int, *, limits: KdfLimits = MODERATE
                ) -> tuple[RelayCard, RelayCard]:
    """A new signing key and card for the relay (same relay id); return (old, new) cards.

    Refused while a relay serves the home. The old key file and card are kept as
    ``relay.key.replaced-<ms>`` / ``relay.card.replaced-<ms>``; nothing is deleted."""
    lock = hold_home_lock(home)
    try:
        name, old_sk = decode_signing_key(read_key_file(home / "relay.key", passphrase,
                                                        kind="relay"))
        old_card = RelayCard.decode((home / "relay.card").read_bytes())
        if bytes(old_sk.verify_key) != old_card.key:
            raise UsageError(f"{home / 'relay.card'} is not the card of {home / 'relay.key'}")
        sk = nacl.signing.SigningKey.generate()
        card = RelayCard.create(old_card.relay_id, sk, now)
        os.link(home / "relay.key", home / f"relay.key.replaced-{now}")
        os.link(home / "relay.card", home / f"relay.card.replaced-{now}")
        write_key_file(home / "relay.key", "relay", encode_signing_key(name, sk), passphrase,
                       limits=limits)
        atomic_write(home / "relay.card", card.encode())
        return old_card, card
    finally:
        lock.close()
