"""ASCII armour for documents that people move by hand (cards, certificates, roots).

    -----BEGIN HOTLINE DESK CARD-----
    base64, 64 columns
    -----END HOTLINE DESK CARD-----

Readers accept armoured text or the raw msgpack bytes.
"""

from __future__ import annotations

import base64
import binascii
import re

from keys.errors import MalformedInput

LABELS = {
    "authority-card": "AUTHORITY CARD",
    "cert-request": "CERTIFICATION REQUEST",
    "desk-cert": "DESK CERTIFICATE",
    "desk-card": "DESK CARD",
    "root": "FEDERATION ROOT",
    "revocation": "REVOCATION",
    "relay-card": "RELAY CARD",
}
_ARMOR_RE = re.compile(
    rb"-----BEGIN HOTLINE ([A-Z ]+)-----\s*(.*?)\s*-----END HOTLINE \1-----", re.S
)


def armor(kind: str, data: bytes) -> str:
    label = LABELS[kind]
    b64 = base64.b64encode(data).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (
        "\n".join([f"-----BEGIN HOTLINE {label}-----", *lines, f"-----END HOTLINE {label}-----"])
        + "\n"
    )


def dearmor(kind: str, data: bytes) -> bytes:
    """Return the document bytes from armoured text (of the expected kind) or raw bytes."""
    if not data.lstrip().startswith(b"-----BEGIN HOTLINE "):
        return data
    m = _ARMOR_RE.search(data)
    if m is None:
        raise MalformedInput("armoured text has no matching BEGIN/END lines", code="malformed")
    label = m.group(1).decode()
    if label != LABELS[kind]:
        raise MalformedInput(
            f"expected {_a(LABELS[kind].lower())}, got {_a(label.lower())}",
            code="wrong_document",
        )
    try:
        return base64.b64decode(b"".join(m.group(2).split()), validate=True)
    except binascii.Error as exc:
        raise MalformedInput("armoured text is not valid base64", code="malformed") from exc


def dearmor_all(kind: str, data: bytes) -> list[bytes]:
    """Every document in ``data``: the armoured blocks of the expected kind, in order (a file
    may hold several, e.g. one revocation per certificate of a desk), or the raw bytes."""
    if not data.lstrip().startswith(b"-----BEGIN HOTLINE "):
        return [data]
    out = []
    pos = 0
    while True:
        start = data.find(b"-----BEGIN HOTLINE ", pos)
        if start < 0:
            break
        m = _ARMOR_RE.search(data, start)
        if m is None or m.start() != start:
            raise MalformedInput("armoured text has no matching BEGIN/END lines",
                                 code="malformed")
        out.append(dearmor(kind, m.group(0)))
        pos = m.end()
    if data[pos:].strip():
        raise MalformedInput("armoured text has bytes after its last END line", code="malformed")
    return out


def _a(noun: str) -> str:
    """``noun`` with its indefinite article: "a desk card", "an authority card"."""
    return ("an " if noun[:1] in "aeiou" else "a ") + noun
