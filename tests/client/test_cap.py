"""CAP 1.2 export, validated against the official OASIS CAP 1.2 XML schema."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

from client.cap import CAP_NS, CapMeta, cap_alert, export_cap
from tests.client.conftest import MakeClient
from tests.factory import NOW, report

XSD = Path(__file__).parent.parent / "data" / "cap" / "CAP-v1.2-schema.xsd"
NS = {"cap": CAP_NS}


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def field(xml: str, path: str) -> list[str]:
    root = ET.fromstring(xml.encode())  # noqa: S314 - our own output
    return [e.text or "" for e in root.findall(path, NS)]


@pytest.mark.parametrize(("status", "severity", "cap_status", "cap_severity"), [
    ("actual", "critical", "Actual", "Extreme"), ("exercise", "high", "Exercise", "Severe"),
    ("test", "medium", "Test", "Moderate"), ("actual", "low", "Actual", "Minor"),
])
def test_metadata_export_validates(schema: xmlschema.XMLSchema, status: str, severity: str,
                                   cap_status: str, cap_severity: str) -> None:
    meta = CapMeta(b"\x11" * 16, "us.caisi", NOW, status, severity, ("cn.cac", "cn.mss"))
    xml = cap_alert(meta)
    schema.validate(xml)
    assert field(xml, "cap:status") == [cap_status]
    assert field(xml, "cap:msgType") == ["Alert"]
    assert field(xml, "cap:scope") == ["Restricted"]
    assert field(xml, "cap:info/cap:severity") == [cap_severity]
    assert field(xml, "cap:sent") == ["2026-09-21T14:13:20+00:00"]
    assert field(xml, "cap:info/cap:headline") == [], "content exported without asking"


async def test_received_notice_reply_and_ack_export(schema: xmlschema.XMLSchema,
                                                    make_client: MakeClient) -> None:
    us, cn = make_client("us.caisi"), make_client("cn.cac")
    sent = await us.send(["cn.cac"], "high", report(title="Weights \u202eleak\x07"),
                         status="exercise")
    await cn.fetch()
    # The recipient can read it: content on request.
    full = export_cap(cn, sent.notice_id, content=True)
    schema.validate(full)
    assert field(full, "cap:info/cap:headline") == ["Weights \u202eleak\ufffd"]
    assert "&#x202e;" in full and "\x07" not in full and "\u202e" not in full
    assert field(full, "cap:info/cap:event") == ["AI model weights leak"]
    # Metadata only by default, the same for both desks.
    assert export_cap(cn, sent.notice_id) == export_cap(us, sent.notice_id)
    # The sender cannot read what it sealed to its recipients: no content export.
    with pytest.raises(Exception, match="cannot read notice"):
        export_cap(us, sent.notice_id, content=True)
    # An acknowledgement, referencing the notice.
    with pytest.raises(Exception, match="has not acknowledged"):
        export_cap(cn, sent.notice_id, ack=True)
    await cn.ack(sent.notice_id)
    ack = export_cap(cn, sent.notice_id, ack=True)
    schema.validate(ack)
    assert field(ack, "cap:msgType") == ["Ack"]
    assert field(ack, "cap:sender") == ["cn.cac"]
    assert field(ack, "cap:references") == [
        f"us.caisi,{sent.notice_id.hex()},2026-09-21T14:13:20+00:00"]
    # A reply is an Update referencing the original.
    answer = await cn.reply(sent.notice_id, report(title="Answer"))
    update = export_cap(cn, answer.notice_id)
    schema.validate(update)
    assert field(update, "cap:msgType") == ["Update"]
    assert field(update, "cap:references") == [
        f"us.caisi,{sent.notice_id.hex()},2026-09-21T14:13:20+00:00"]


def test_schema_catches_a_broken_export(schema: xmlschema.XMLSchema) -> None:
    """The check can fail: a CAP time with a Z suffix is not CAP 1.2."""
    xml = cap_alert(CapMeta(b"\x11" * 16, "us.caisi", NOW, "actual", "high", ("cn.cac",)))
    bad = xml.replace("+00:00</sent>", "Z</sent>")
    assert bad != xml
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        schema.validate(bad)
