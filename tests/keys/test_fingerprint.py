"""Fingerprints for out-of-band verification (S9)."""

from __future__ import annotations

import hashlib
import re

import nacl.encoding
import nacl.hash
import nacl.signing
import pytest

from keys import fingerprint
from tests.factory import Federation

FORMAT = re.compile(r"\d{5}( \d{5}){5}")
KEY = bytes(range(32))


def reference(kind: str, name: str, key: bytes) -> str:
    """The construction in keys/fingerprint.py's docstring, computed with nacl directly."""
    data = kind.encode() + b"\x00" + name.encode() + b"\x00" + key
    h = nacl.hash.blake2b(data, digest_size=30, person=b"hotline-fpr-v1",
                          encoder=nacl.encoding.RawEncoder)
    return " ".join(f"{int.from_bytes(h[i:i + 5], 'big') % 100_000:05d}"
                    for i in range(0, 30, 5))


def test_fingerprint_is_six_groups_of_five_digits() -> None:
    """A fingerprint reads as six space-separated groups of five decimal digits."""
    fed = Federation.create()
    for kind, name, key in [
        ("desk", "us.caisi", fed.desks["us.caisi"].card.cert.identity_key),
        ("authority", "cn", bytes(fed.authorities["cn"].verify_key)),
        ("relay", "relay-1", bytes(nacl.signing.SigningKey.generate().verify_key)),
    ]:
        fp = fingerprint(kind, name, key)
        assert FORMAT.fullmatch(fp), fp
        assert len(fp) == 35 and len(fp.replace(" ", "")) == 30


def test_fingerprint_is_stable() -> None:
    """The same kind, name and key always give the same fingerprint."""
    assert fingerprint("desk", "us.caisi", KEY) == fingerprint("desk", "us.caisi", bytes(KEY))


def test_fingerprint_differs_for_another_key() -> None:
    """Changing one bit of the key changes the fingerprint."""
    other = bytes([KEY[0] ^ 1]) + KEY[1:]
    assert fingerprint("desk", "us.caisi", KEY) != fingerprint("desk", "us.caisi", other)


def test_fingerprint_differs_for_another_name() -> None:
    """The same key under another desk name has another fingerprint (name is bound)."""
    assert fingerprint("desk", "us.caisi", KEY) != fingerprint("desk", "us.caisj", KEY)
    assert fingerprint("desk", "us.caisi", KEY) != fingerprint("desk", "cn.caisi", KEY)


def test_fingerprint_differs_for_another_kind() -> None:
    """The same key and name as another kind of identity has another fingerprint."""
    fps = {fingerprint(kind, "us", KEY) for kind in ("desk", "authority", "relay")}
    assert len(fps) == 3


def test_fingerprint_separates_name_from_key() -> None:
    """Moving a byte between the name and the key does not give the same fingerprint."""
    assert fingerprint("desk", "us.ab", KEY) != fingerprint("desk", "us.a", b"b" + KEY[:31])


@pytest.mark.parametrize(("kind", "name", "key"), [
    ("desk", "us.caisi", KEY),
    ("authority", "cn", bytes(32)),
    ("relay", "relay-1", b"\xff" * 32),
])
def test_fingerprint_known_answer(kind: str, name: str, key: bytes) -> None:
    """The fingerprint equals BLAKE2b-240(kind||0||name||0||key, personal=hotline-fpr-v1),
    grouped as 5-byte big-endian numbers mod 100000."""
    expected = reference(kind, name, key)
    assert fingerprint(kind, name, key) == expected
    h = hashlib.blake2b(kind.encode() + b"\x00" + name.encode() + b"\x00" + key,
                        digest_size=30, person=b"hotline-fpr-v1").digest()
    assert expected.split() == [f"{int.from_bytes(h[i:i + 5], 'big') % 100_000:05d}"
                                for i in range(0, 30, 5)]


def test_fingerprint_pinned_vector() -> None:
    """A fixed vector (computed with hashlib) pins the format against silent changes."""
    assert fingerprint("desk", "us.caisi", KEY) == "82894 06068 14201 04161 87557 62855"
    assert fingerprint("authority", "cn", bytes(32)) == "74635 41993 64479 76533 87680 61174"


def test_fingerprint_rejects_unknown_kind() -> None:
    """Only authority, desk and relay fingerprints exist."""
    with pytest.raises(ValueError, match="kind"):
        fingerprint("user", "us.caisi", KEY)
