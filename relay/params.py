"""Integer query parameters: ASCII digits only, within bounds, else a clear 400.

``str.isdigit`` and the regex ``\\d`` both accept non-ASCII digits ("²", "①",
Arabic-Indic ones), which ``int`` then refuses or turns into some other number; a
parameter here is 1 to 18 ASCII digits and a value within ``minimum`` and ``maximum``.
"""

from __future__ import annotations

import re

from relay.errors import RelayError

_ASCII_DIGITS = re.compile(r"[0-9]{1,18}", re.ASCII)
#: The largest value any parameter takes (a seq, a time in UTC milliseconds).
MAX_PARAM = 2**63 - 1


def whole_number(raw: str | None, name: str, default: int, *, minimum: int = 0,
                 maximum: int = MAX_PARAM) -> int:
    """``raw`` (a query parameter's text, None when absent) as an integer."""
    if raw is None:
        return default
    if not _ASCII_DIGITS.fullmatch(raw):
        raise RelayError(400, "bad_value", f"query parameter {name} must be a whole number "
                         f"of 1 to 18 ASCII digits")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise RelayError(400, "bad_value",
                         f"query parameter {name} must be between {minimum} and {maximum}")
    return value
