"""Render untrusted text for a terminal: no peer or relay can drive the screen.

Every string a peer or the relay chose (titles, bodies, names, relay ids, error details,
log reasons) passes through :func:`line` or :func:`block` before a human-readable view
prints it. ``--json`` output must carry the exact original strings: :func:`inert_json`
writes the same unsafe characters as JSON ``\\u`` escapes, which decode to the original.

The contract. A character is *unsafe* when it is

* a C0 control (U+0000-U+001F), DEL (U+007F) or a C1 control (U+0080-U+009F): ESC starts
  cursor, colour and title escape sequences, CR and BS overwrite what was printed, and C1
  CSI (U+009B) is ESC ``[`` on some terminals;
* a Unicode format character (category ``Cf``): the bidi embeddings, overrides and isolates
  (U+202A-U+202E, U+2066-U+2069) and marks (U+200E, U+200F, U+061C) that reorder what is
  shown, zero-width spaces, U+FEFF, the soft hyphen, invisible operators, tag characters;
* a line or paragraph separator (U+2028, U+2029), which some terminals break lines at;
* a lone surrogate (category ``Cs``), which cannot even be encoded for output.

Unsafe characters are shown as visible escapes in Python's notation: ``\\t``, ``\\n``,
``\\r``, ``\\xNN`` for the other controls below U+0100, ``\\uNNNN`` and ``\\UNNNNNNNN``
above. Nothing is silently dropped, so a reader sees that something was there.

Two exceptions keep legitimate text unchanged: the zero-width non-joiner and joiner
(U+200C, U+200D), which Persian, the Indic scripts and emoji sequences need, and tag
characters inside an emoji tag sequence (a black flag U+1F3F4, tags, CANCEL TAG U+E007F:
the flags of Scotland or Wales). :func:`block` also keeps newline and tab, and reads CRLF
as a newline. Everything else, including Chinese, Arabic, Cyrillic and emoji, is returned
as it is. Unassigned code points are left alone: escaping them would mangle emoji newer
than this Python's Unicode database.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable

__all__ = ["SafeFormatter", "block", "inert_json", "line"]

_KEEP = frozenset("\u200c\u200d")
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: A black flag, then tag characters, then CANCEL TAG (Unicode TR 51, emoji tag sequences).
_EMOJI_TAG_SEQUENCE = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _unsafe(ch: str) -> bool:
    return ch not in _KEEP and unicodedata.category(ch) in _UNSAFE_CATEGORIES


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    cp = ord(ch)
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def _render(text: str, keep: frozenset[str], escape: Callable[[str], str] = _escape) -> str:
    # Fast path: most text has nothing to escape.
    if not any(_unsafe(ch) and ch not in keep for ch in text):
        return text
    out: list[str] = []
    pos = 0
    for m in _EMOJI_TAG_SEQUENCE.finditer(text):
        out.extend(_escape_span(text[pos:m.start()], keep, escape))
        out.append(m.group())
        pos = m.end()
    out.extend(_escape_span(text[pos:], keep, escape))
    return "".join(out)


def _escape_span(text: str, keep: frozenset[str], escape: Callable[[str], str]) -> list[str]:
    return [escape(ch) if _unsafe(ch) and ch not in keep else ch for ch in text]


def line(text: str) -> str:
    """``text`` made safe for one line of a terminal: every unsafe character escaped,
    newline and tab included, so the result never spans lines or moves the cursor."""
    return _render(text, frozenset())


def block(text: str) -> str:
    """``text`` made safe for a multi-line view (a body, a summary): as :func:`line`, but
    newline and tab are kept, and CRLF is read as a newline (a lone CR is escaped)."""
    return _render(text.replace("\r\n", "\n"), frozenset("\n\t"))


def inert_json(document: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with every unsafe character
    written as a ``\\uXXXX`` escape, so that printing it cannot drive a terminal either.

    JSON already escapes C0 controls; this adds C1, bidi, format characters and separators.
    Outside strings JSON text is ASCII, so every such character sits inside a string, and
    decoding gives back exactly the original value. Other text, the exceptions of
    :func:`line` included, stays readable as it is."""
    return _render(document, frozenset(), _json_escape)


def _json_escape(ch: str) -> str:
    cp = ord(ch)
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    cp -= 0x10000  # a UTF-16 surrogate pair, as JSON spells characters above the BMP
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"


class SafeFormatter(logging.Formatter):
    """A log formatter whose every record prints as one safe line (see :func:`line`).

    Client log messages carry relay error details and peers' reasons."""

    def format(self, record: logging.LogRecord) -> str:
        return line(super().format(record))
