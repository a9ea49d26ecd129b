"""CAP 1.2 export: a notice's metadata as an OASIS Common Alerting Protocol ``alert``.

For the alerting systems desks already run. The export carries the routing metadata both
desks and the relay know (identifier, sender, time, status, severity, recipients as the
restriction, the notice it answers) and, only if the exporting desk asks for it and can
read the notice, its title, summary and category. Mapping:

========================  =====================================================
Hotline                   CAP 1.2
========================  =====================================================
notice id (hex)           ``identifier``
sender desk               ``sender``
created_at                ``sent`` (``YYYY-MM-DDThh:mm:ss+00:00``)
status actual/exercise/   ``status`` Actual / Exercise / Test
test
a new notice; a reply     ``msgType`` Alert; Update (``references`` the original);
(``in_reply_to``); an     Ack (``references`` the acknowledged notice)
acknowledgement
recipients                ``scope`` Restricted, ``restriction`` names them
severity critical/high/   ``info/severity`` Extreme / Severe / Moderate / Minor
medium/low
report title / summary    ``info/headline`` / ``info/description`` (content only)
========================  =====================================================
"""

from __future__ import annotations

import datetime as dt
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keys.envelope import Envelope
from keys.errors import UsageError
from keys.report import IncidentReport

if TYPE_CHECKING:
    from client.client import HotlineClient

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
STATUS = {"actual": "Actual", "exercise": "Exercise", "test": "Test"}
SEVERITY = {"critical": "Extreme", "high": "Severe", "medium": "Moderate", "low": "Minor"}
URGENCY = {"critical": "Immediate", "high": "Immediate", "medium": "Expected", "low": "Future"}
EVENT = {
    "model-weights-leak": "AI model weights leak",
    "dangerous-capability": "Dangerous AI capability",
    "ai-cyber-operation": "AI-enabled cyber operation",
    "automated-system-malfunction": "Automated system malfunction",
    "other": "AI incident",
}


@dataclass(frozen=True, slots=True)
class CapMeta:
    """What a CAP message says of one notice (metadata both desks hold, signed)."""

    notice_id: bytes
    sender: str
    created_at: int
    status: str
    severity: str
    recipients: tuple[str, ...]
    in_reply_to: bytes | None = None
    #: ``in_reply_to``'s sender and time, for the CAP ``references`` triple.
    reply_ref: tuple[str, int] | None = None


def cap_time(ms: int) -> str:
    """CAP's dateTime form: seconds, an explicit ``+00:00`` offset (never ``Z``)."""
    return dt.datetime.fromtimestamp(ms // 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _ref(sender: str, notice_id: bytes, at: int) -> str:
    return f"{sender},{notice_id.hex()},{cap_time(at)}"


def cap_alert(meta: CapMeta, *, content: IncidentReport | None = None,
              ack_by: str | None = None, ack_at: int | None = None) -> str:
    """The CAP 1.2 ``alert`` document (UTF-8 XML text). ``content``: the report, if the
    exporting desk chooses to include it (it must be able to read it). ``ack_by``: an
    acknowledgement by that desk at ``ack_at`` (msgType Ack) instead of the notice."""
    if meta.status not in STATUS or meta.severity not in SEVERITY:
        raise ValueError(f"no CAP mapping for status {meta.status!r} or severity "
                         f"{meta.severity!r}")
    ET.register_namespace("", CAP_NS)

    def sub(parent: ET.Element, tag: str, text: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
        el.text = text
        return el

    alert = ET.Element(f"{{{CAP_NS}}}alert")
    if ack_by is not None:
        if ack_at is None:
            raise ValueError("an Ack needs its time")
        sub(alert, "identifier", f"{meta.notice_id.hex()}-ack-{ack_by}")
        sub(alert, "sender", ack_by)
        sub(alert, "sent", cap_time(ack_at))
    else:
        sub(alert, "identifier", meta.notice_id.hex())
        sub(alert, "sender", meta.sender)
        sub(alert, "sent", cap_time(meta.created_at))
    sub(alert, "status", STATUS[meta.status])
    refs: list[str] = []
    if ack_by is not None:
        msg_type = "Ack"
        refs.append(_ref(meta.sender, meta.notice_id, meta.created_at))
    elif meta.in_reply_to is not None:
        msg_type = "Update"
        if meta.reply_ref is not None:
            refs.append(_ref(meta.reply_ref[0], meta.in_reply_to, meta.reply_ref[1]))
    else:
        msg_type = "Alert"
    sub(alert, "msgType", msg_type)
    sub(alert, "source", "hotline")
    sub(alert, "scope", "Restricted")
    sub(alert, "restriction", "Hotline desks " + " ".join(sorted(meta.recipients))
        + f" and {meta.sender}; TLP " + (content.tlp.upper() if content else "AMBER"))
    if meta.status != "actual":
        sub(alert, "note", f"{STATUS[meta.status]} notice: not a real incident")
    if refs:
        sub(alert, "references", " ".join(refs))
    if ack_by is None:
        info = ET.SubElement(alert, f"{{{CAP_NS}}}info")
        if content is not None:
            sub(info, "language", content.lang)
        sub(info, "category", "Security")
        sub(info, "event", EVENT[content.category] if content else "Hotline incident notice")
        sub(info, "urgency", URGENCY[meta.severity])
        sub(info, "severity", SEVERITY[meta.severity])
        sub(info, "certainty", "Unknown")
        sub(info, "senderName", meta.sender)
        if content is not None:
            sub(info, "headline", content.title[:160])
            if content.summary:
                sub(info, "description", content.summary)
            if content.contact:
                sub(info, "contact", content.contact)
    ET.indent(alert)
    body: str = ET.tostring(alert, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + _inert(body) + "\n"


def _inert(xml: str) -> str:
    """Peers' text may hold control, bidi and format characters: C0 controls (not
    allowed in XML 1.0) become U+FFFD; C1 and format characters become character
    references, so the same value reaches an XML reader and nothing reaches a terminal."""
    out = []
    for ch in xml:
        cat = unicodedata.category(ch)
        if cat == "Cc" and ch not in "\n\t\r":
            out.append("\ufffd" if ord(ch) < 0x20 or ord(ch) == 0x7F else f"&#x{ord(ch):x};")
        elif cat in ("Cf", "Zl", "Zp", "Co", "Cs"):
            out.append(f"&#x{ord(ch):x};")
        else:
            out.append(ch)
    return "".join(out)


def export_cap(client: HotlineClient, notice_id: bytes | str, *, content: bool = False,
               ack: bool = False) -> str:
    """CAP 1.2 for a notice this desk sent or received (from its own store, no network).

    ``content=True`` adds the title, summary and category: only for a notice this desk
    received and can open (a sent notice is sealed to its recipients only). ``ack=True``:
    this desk's acknowledgement of a received notice, as msgType Ack."""
    nid = client.resolve_id(notice_id)
    got = client.state.received(nid)
    sent = client.state.outbox(nid)
    raw = got.envelope if got is not None else sent.envelope if sent is not None else None
    if raw is None:
        raise UsageError(f"no notice {nid.hex()} among those this desk sent or received")
    h = Envelope.decode(raw).header
    ref = None
    if h.in_reply_to is not None:
        original = client.state.received(h.in_reply_to) or client.state.outbox(h.in_reply_to)
        if original is not None:
            ref = (Envelope.decode(original.envelope).header.sender, original.created_at)
    meta = CapMeta(nid, h.sender, h.created_at, h.status, h.severity, tuple(h.recipients),
                   h.in_reply_to, ref)
    report = None
    if content:
        if got is None:
            raise UsageError(f"this desk cannot read notice {nid.hex()}: it is sealed to its "
                             "recipients only; export its metadata without --content")
        report = client.received(nid).report
    if ack:
        if got is None or got.acked_at is None:
            raise UsageError(f"this desk has not acknowledged notice {nid.hex()}")
        return cap_alert(meta, ack_by=client.desk, ack_at=got.acked_at)
    return cap_alert(meta, content=report)
