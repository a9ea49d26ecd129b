"""Untrusted text rendered for a terminal: dangerous characters escaped, real text unchanged."""

from __future__ import annotations

import json
import logging
import unicodedata

import pytest

from client.cli.safe_text import SafeFormatter, block, inert_json, line


def dangerous(text: str) -> list[str]:
    """The characters in ``text`` that could drive a terminal or reorder what it shows.

    Written independently of the module under test, from the Unicode categories."""
    return [ch for ch in text
            if (unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")
                and ch not in "\n\t\u200c\u200d")]


ESCAPED = [
    # C0 controls, ESC and DEL
    ("\x1b[2K\rfrom: us.caisi", "\\x1b[2K\\rfrom: us.caisi"),
    ("bell\x07", "bell\\x07"),
    ("nul\x00", "nul\\x00"),
    ("back\x08\x08space", "back\\x08\\x08space"),
    ("del\x7f", "del\\x7f"),
    ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),  # OSC: sets the window title
    # C1 controls: CSI, NEL, OSC
    ("\x9b2K", "\\x9b2K"),
    ("next\x85line", "next\\x85line"),
    ("\x9d0;t\x9c", "\\x9d0;t\\x9c"),
    # bidi embeddings, overrides, isolates and marks
    ("\u202egpj.exe", "\\u202egpj.exe"),
    ("a\u202ab\u202bc\u202cd\u202d", "a\\u202ab\\u202bc\\u202cd\\u202d"),
    ("\u2066x\u2067y\u2068z\u2069", "\\u2066x\\u2067y\\u2068z\\u2069"),
    ("\u200eltr\u200frtl\u061calm", "\\u200eltr\\u200frtl\\u061calm"),
    # zero-width and other invisible format characters
    ("us\u200b.caisi", "us\\u200b.caisi"),
    ("\ufeffbom", "\\ufeffbom"),
    ("soft\u00adhyphen", "soft\\xadhyphen"),
    ("word\u2060joiner\u2062", "word\\u2060joiner\\u2062"),
    ("hidden\U000e0041\U000e0042", "hidden\\U000e0041\\U000e0042"),  # tags, no flag
    # line and paragraph separators
    ("one\u2028two\u2029three", "one\\u2028two\\u2029three"),
    # a lone surrogate
    ("x\ud800y", "x\\ud800y"),
]


@pytest.mark.parametrize(("raw", "shown"), ESCAPED)
def test_line_escapes_each_dangerous_class_visibly(raw: str, shown: str) -> None:
    """Every control, bidi, invisible-format and separator character becomes a visible escape."""
    assert line(raw) == shown
    assert dangerous(line(raw)) == []


@pytest.mark.parametrize(("raw", "shown"), ESCAPED)
def test_block_escapes_the_same_characters(raw: str, shown: str) -> None:
    """A multi-line body gets the same escapes (none of these cases holds newline or tab)."""
    assert block(raw) == shown


def test_single_line_fields_never_contain_a_newline_or_tab() -> None:
    """A title with line breaks prints on one line: newline, tab and CR are escaped."""
    title = "Harmless\nfrom:       us.caisi  (signature verified)\r\n\tmore"
    shown = line(title)
    assert "\n" not in shown and "\t" not in shown and "\r" not in shown
    assert shown == "Harmless\\nfrom:       us.caisi  (signature verified)\\r\\n\\tmore"


def test_block_keeps_newlines_and_tabs_but_not_carriage_returns() -> None:
    """A body keeps its lines and tabs; CRLF reads as a newline, and a lone CR is escaped."""
    assert block("line 1\nline 2\r\n\tindented") == "line 1\nline 2\n\tindented"
    assert block("shown\rhidden") == "shown\\rhidden"
    assert block("a\x1b[1Ab") == "a\\x1b[1Ab"


MULTILINGUAL = [
    "模型权重在公共追踪器上被发布",  # Chinese
    "تسريب أوزان النموذج على متتبع عام",  # Arabic (right to left, no marks needed)
    "Утечка весов модели на публичном трекере",  # Cyrillic
    "मॉडल के वज़न लीक",  # Devanagari, with combining marks
    "می‌خواهم",  # Persian, with a zero-width non-joiner
    "👩‍💻 alert 🚨 👨‍👩‍👧 🇨🇳 🇺🇸 ❤️",  # emoji: ZWJ sequences, flags, variation selector
    "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # Scotland
    "Ελληνικά, עברית, 日本語, 한국어, ภาษาไทย",
    "C:\\path\\to\\file and a literal \\x1b",  # backslashes are ordinary characters
    "price: 5 €, 40 °C, 3\u00a0000, « guillemets »",
]


@pytest.mark.parametrize("text", MULTILINGUAL)
def test_multilingual_text_prints_unchanged(text: str) -> None:
    """Legitimate text in any script, and emoji, is returned exactly as it is."""
    assert line(text) == text
    assert block(text) == text
    assert block(text + "\n" + text) == text + "\n" + text


def test_tags_outside_an_emoji_flag_are_escaped_but_the_flag_is_kept() -> None:
    """Tag characters hide text (ASCII smuggling) unless they form a flag's tag sequence."""
    scotland = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
    shown = line(f"{scotland}\U000e0069\U000e0067\U000e006e")
    assert shown == scotland + "\\U000e0069\\U000e0067\\U000e006e"


def test_safe_formatter_prints_each_log_record_as_one_safe_line() -> None:
    """A relay's error detail in a client log line cannot break the line or drive the screen."""
    record = logging.LogRecord("hotline.client", logging.WARNING, __file__, 1,
                               "outbox.resend_deferred reason=%s", ("bad\n\x1b[31mred\u202e",),
                               None)
    shown = SafeFormatter("hotline: %(message)s").format(record)
    assert shown == "hotline: outbox.resend_deferred reason=bad\\n\\x1b[31mred\\u202e"


@pytest.mark.parametrize("raw", [raw for raw, _ in ESCAPED] + ["\U000e0041 tag", "\u2028"])
def test_inert_json_escapes_dangerous_characters_and_decodes_exactly(raw: str) -> None:
    """``--json`` output holds no raw control, bidi or format character, yet decodes to the
    exact original string (characters above U+FFFF as surrogate pairs)."""
    document = inert_json(json.dumps({"title": raw}, ensure_ascii=False))
    assert dangerous(document) == []
    assert json.loads(document) == {"title": raw}


@pytest.mark.parametrize("text", MULTILINGUAL)
def test_inert_json_leaves_multilingual_text_readable(text: str) -> None:
    """Text in any script stays as it is in JSON output, not \\u-escaped."""
    document = json.dumps({"title": text}, ensure_ascii=False)
    assert inert_json(document) == document
