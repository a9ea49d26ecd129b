"""The incident report: the structured, end-to-end encrypted content of a notice.

Everything here travels only inside the ciphertext; the relay never sees it. The routing
fields the relay needs (sender, recipients, severity, status) sit in the signed header and
are repeated, signed, inside the content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from keys import codec
from keys.codec import blob, fields, list_of, one_of, record, text, timestamp
from keys.ids import NOTICE_ID_BYTES, check_country

CATEGORIES = (
    "model-weights-leak",
    "dangerous-capability",  # a dangerous capability or jailbreak spreading across platforms
    "ai-cyber-operation",
    "automated-system-malfunction",
    "other",
)
#: Traffic Light Protocol 2.0 labels.
TLP_LABELS = ("red", "amber+strict", "amber", "green", "clear")
RELATIONS = ("update", "correction", "reply", "related")
#: BCP 47 language tag, kept simple: "en", "zh", "zh-Hans", "en-US".
LANG_RE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}")
MEDIA_TYPE_RE = re.compile(r"[a-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}")
FILE_NAME_RE = re.compile(r"[^/\\\x00-\x1f]{1,200}")

MAX_TITLE = 200
MAX_SUMMARY = 4000
MAX_BODY = 200_000
MAX_LIST = 32
MAX_QUESTION = 1000
MAX_ATTACHMENTS = 32
#: Default cap on a sealed notice; the relay's request limit follows this setting.
DEFAULT_MAX_NOTICE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class AiSystem:
    name: str
    version: str = ""
    developer: str = ""


@dataclass(frozen=True, slots=True)
class Reference:
    notice_id: bytes
    relation: str = "related"


@dataclass(frozen=True, slots=True)
class Translation:
    lang: str
    title: str
    summary: str = ""
    body: str = ""


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str
    media_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class IncidentReport:
    """What a desk tells another about an incident."""

    title: str
    summary: str
    category: str
    aware_at: int
    body: str = ""
    tlp: str = "amber"
    lang: str = "en"
    systems: tuple[AiSystem, ...] = ()
    countries: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    contact: str = ""
    references: tuple[Reference, ...] = ()
    translations: tuple[Translation, ...] = ()
    attachments: tuple[Attachment, ...] = field(default=(), repr=False)
    #: A question the recipient is asked to answer in a reply notice (an exercise's
    #: response step); empty: none. On the wire only when not empty.
    question: str = ""

    def to_wire(self) -> dict[str, Any]:
        wire = self._wire()
        if self.question:
            wire["question"] = self.question
        return wire

    def _wire(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "summary": self.summary,
            "body": self.body,
            "category": self.category,
            "tlp": self.tlp,
            "lang": self.lang,
            "aware_at": self.aware_at,
            "systems": [
                {"name": s.name, "version": s.version, "developer": s.developer}
                for s in self.systems
            ],
            "countries": list(self.countries),
            "actions": list(self.actions),
            "contact": self.contact,
            "references": [
                {"notice_id": r.notice_id, "relation": r.relation} for r in self.references
            ],
            "translations": [
                {"lang": t.lang, "title": t.title, "summary": t.summary, "body": t.body}
                for t in self.translations
            ],
            "attachments": [
                {"name": a.name, "media_type": a.media_type, "data": a.data}
                for a in self.attachments
            ],
        }

    def validate(self) -> IncidentReport:
        """Check this report against the schema (raises MalformedInput); return it."""
        from_wire(codec.unpack(codec.pack(self.to_wire()), what="report", max_bytes=2**31))
        return self


_SPEC: dict[str, codec.Check] = {
    "title": text(MAX_TITLE, min_chars=1),
    "summary": text(MAX_SUMMARY),
    "body": text(MAX_BODY),
    "category": one_of(CATEGORIES),
    "tlp": one_of(TLP_LABELS),
    "lang": text(35, pattern=LANG_RE),
    "aware_at": timestamp,
    "systems": list_of(
        record({"name": text(200, min_chars=1), "version": text(100), "developer": text(200)}),
        max_items=MAX_LIST,
    ),
    "countries": list_of(check_country, max_items=MAX_LIST),
    "actions": list_of(text(1000, min_chars=1), max_items=MAX_LIST),
    "contact": text(1000),
    "references": list_of(
        record(
            {"notice_id": blob(size=NOTICE_ID_BYTES, nonzero=True), "relation": one_of(RELATIONS)}
        ),
        max_items=MAX_LIST,
    ),
    "translations": list_of(
        record(
            {
                "lang": text(35, pattern=LANG_RE),
                "title": text(MAX_TITLE, min_chars=1),
                "summary": text(MAX_SUMMARY),
                "body": text(MAX_BODY),
            }
        ),
        max_items=8,
    ),
    "attachments": list_of(
        record(
            {
                "name": text(200, pattern=FILE_NAME_RE),
                "media_type": text(129, pattern=MEDIA_TYPE_RE),
                "data": blob(),
            }
        ),
        max_items=MAX_ATTACHMENTS,
    ),
}


def from_wire(value: Any) -> IncidentReport:
    question = ""
    if isinstance(value, dict) and "question" in value:
        # The one optional field: present only when not empty (one encoding per report).
        question = text(MAX_QUESTION, min_chars=1)(value["question"], "report.question")
        value = {k: v for k, v in value.items() if k != "question"}
    f = fields(value, _SPEC, "report")
    return IncidentReport(
        title=f["title"],
        summary=f["summary"],
        body=f["body"],
        category=f["category"],
        tlp=f["tlp"],
        lang=f["lang"],
        aware_at=f["aware_at"],
        systems=tuple(AiSystem(**s) for s in f["systems"]),
        countries=tuple(f["countries"]),
        actions=tuple(f["actions"]),
        contact=f["contact"],
        references=tuple(Reference(**r) for r in f["references"]),
        translations=tuple(Translation(**t) for t in f["translations"]),
        attachments=tuple(Attachment(**a) for a in f["attachments"]),
        question=question,
    )
