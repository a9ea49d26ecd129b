"""The two optional fields the drills added: an ack's ``automatic`` flag and a report's
``question``. Each has one encoding; forging or stripping the flag breaks the signature."""

from __future__ import annotations

import dataclasses

import pytest

from keys import codec
from keys.errors import BadSignature, MalformedInput
from keys.ids import DeskId
from keys.primitives import Domain
from keys.receipts import Confirmation
from keys.report import from_wire
from keys.signed import make, split
from tests.factory import NOW, Federation, report

NID, DIGEST = b"\x07" * 16, b"\x09" * 32


@pytest.fixture(scope="module")
def fed() -> Federation:
    return Federation.create(desks=("us.caisi", "cn.cac"))


def ack(fed: Federation, automatic: bool) -> Confirmation:
    return Confirmation.create("ack", notice_id=NID, digest=DIGEST, sender=DeskId("us.caisi"),
                               me=fed.desks["cn.cac"].secrets, at=NOW, automatic=automatic)


def reframe(c: Confirmation, change: dict[str, object], drop: str | None = None) -> bytes:
    """The same signature over an edited body (what a relay or a peer could forge)."""
    _, body = split(c.encode(), what="confirmation", max_bytes=1 << 16)
    body = {k: v for k, v in body.items() if k != drop} | change
    return codec.pack([codec.pack(body), c.signed.signature])


def test_automatic_ack_round_trips_and_plain_ack_is_unchanged(fed: Federation) -> None:
    auto, plain = ack(fed, True), ack(fed, False)
    assert Confirmation.decode(auto.encode()).automatic
    assert not Confirmation.decode(plain.encode()).automatic
    _, body = split(plain.encode(), what="c", max_bytes=1 << 16)
    assert "automatic" not in body


def test_relay_stripping_the_automatic_flag_breaks_the_signature(fed: Federation) -> None:
    """A relay that makes a link test's automatic answer look like a person's ack."""
    forged = Confirmation.decode(reframe(ack(fed, True), {}, drop="automatic"))
    assert not forged.automatic
    with pytest.raises(BadSignature):
        forged.verify(fed.verified("cn.cac", NOW), notice_id=NID, digest=DIGEST,
                      sender=DeskId("us.caisi"), recipient=DeskId("cn.cac"))


def test_relay_adding_the_automatic_flag_breaks_the_signature(fed: Federation) -> None:
    forged = Confirmation.decode(reframe(ack(fed, False), {"automatic": True}))
    with pytest.raises(BadSignature):
        forged.verify(fed.verified("cn.cac", NOW), notice_id=NID, digest=DIGEST,
                      sender=DeskId("us.caisi"), recipient=DeskId("cn.cac"))


@pytest.mark.parametrize(("kind", "value", "message"), [
    ("ack", False, "present only as true"), ("ack", 1, "present only as true"),
    ("receipt", True, "only an acknowledgement"),
])
def test_automatic_flag_has_one_encoding(fed: Federation, kind: str, value: object,
                                         message: str) -> None:
    me = fed.desks["cn.cac"].secrets
    body = {"v": 1, "type": kind, "notice_id": NID, "digest": DIGEST, "to": "us.caisi",
            "from": "cn.cac", "from_kid": me.ik_kid, "at": NOW, "message": None,
            "automatic": value}
    signed = make(me.identity, Domain.ACK if kind == "ack" else Domain.RECEIPT, body)
    with pytest.raises(MalformedInput, match=message):
        Confirmation.decode(signed.encode())


def test_automatic_receipt_refused_locally(fed: Federation) -> None:
    with pytest.raises(ValueError, match="only an acknowledgement"):
        Confirmation.create("receipt", notice_id=NID, digest=DIGEST, sender=DeskId("us.caisi"),
                            me=fed.desks["cn.cac"].secrets, at=NOW, automatic=True)


def test_report_question_one_encoding() -> None:
    plain = report()
    asked = dataclasses.replace(plain, question="Which platforms?")
    assert "question" not in plain.to_wire()
    assert from_wire(codec.unpack(codec.pack(asked.to_wire()), what="r",
                                  max_bytes=1 << 20)).question == "Which platforms?"
    with pytest.raises(MalformedInput, match="at least 1"):
        from_wire(plain.to_wire() | {"question": ""})
    with pytest.raises(MalformedInput, match="limit is 1000"):
        dataclasses.replace(plain, question="x" * 1001).validate()
