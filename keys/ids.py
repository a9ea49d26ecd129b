"""Names and value types shared by every part of Hotline."""

from __future__ import annotations

import re
from typing import NewType

from keys.codec import Check, fail, text

#: A desk id: country code, dot, desk name (``us.caisi``, ``cn.cac``).
DESK_ID_RE = re.compile(r"[a-z]{2}\.[a-z0-9-]{1,40}")
#: A member country: two lower-case letters (ISO 3166-1 alpha-2 style).
COUNTRY_RE = re.compile(r"[a-z]{2}")

DeskId = NewType("DeskId", str)
Country = NewType("Country", str)
NoticeId = NewType("NoticeId", bytes)
#: UTC milliseconds since the Unix epoch.
Timestamp = NewType("Timestamp", int)

NOTICE_ID_BYTES = 16
KEY_ID_BYTES = 16

SEVERITIES = ("critical", "high", "medium", "low")
#: CAP status vocabulary: only ``actual`` notices page anyone as real.
STATUSES = ("actual", "exercise", "test")


def desk_id(value: str) -> DeskId:
    """Return ``value`` as a DeskId, or raise MalformedInput saying what is wrong."""
    if type(value) is not str or not DESK_ID_RE.fullmatch(value):
        fail("bad_value", f"desk id {str(value)[:60]!r} is not of the form cc.name (e.g. us.caisi)")
    return DeskId(value)


def country(value: str) -> Country:
    if type(value) is not str or not COUNTRY_RE.fullmatch(value):
        fail("bad_value", f"country {str(value)[:10]!r} must be two lower-case letters")
    return Country(value)


def country_of(desk: DeskId) -> Country:
    return Country(desk.split(".", 1)[0])


check_desk: Check = text(43, pattern=DESK_ID_RE)
check_country: Check = text(2, pattern=COUNTRY_RE)
