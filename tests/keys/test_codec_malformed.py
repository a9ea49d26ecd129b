"""Malformed input fed to the decoders of every document that crosses a trust boundary.

SECURITY.md 4.1 and list (c) 6-26: each input must be refused with a typed ProtocolError
(MalformedInput or UnsupportedVersion) whose code names what was wrong, never with a bare
ValueError, KeyError or TypeError and never by succeeding. Malformed bodies are built by
packing maps with msgpack directly; the signed body (or envelope header) is an opaque bin.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest

from keys import (
    Confirmation,
    DeskCard,
    Envelope,
    FederationRoot,
    MalformedInput,
    ProtocolError,
    UnsupportedVersion,
    seal,
)
from keys.envelope import MAX_HEADER_BYTES
from keys.receipts import MAX_STATEMENT_BYTES
from keys.report import DEFAULT_MAX_NOTICE_BYTES
from keys.trust import MAX_DOC_BYTES
from tests.factory import NOW, Federation, report
from tests.keys._helpers import pack, unpack

A, B, C = "us.caisi", "cn.cac", "cn.mss"


class Raw(bytes):
    """Bytes spliced verbatim into a hand-built msgpack map (no re-encoding)."""


def enc(value: Any) -> bytes:
    return bytes(value) if isinstance(value, Raw) else pack(value)


def pack_pairs(pairs: list[tuple[Any, Any]]) -> bytes:
    """A msgpack map from ``pairs`` as given: keys may repeat or be of any type."""
    n = len(pairs)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + n.to_bytes(2, "big")
    return head + b"".join(enc(k) + enc(v) for k, v in pairs)


@dataclass(frozen=True)
class Doc:
    name: str
    decode: Callable[[bytes], object]
    body: dict[str, Any]
    wrap: Callable[[bytes], bytes]
    limit: int
    int_field: str
    bin_field: str | None
    str_field: str

    def valid(self) -> bytes:
        return self.wrap(pack(self.body))

    def with_body(self, **changes: Any) -> bytes:
        return self.wrap(pack_pairs(list((self.body | changes).items())))


def _build_docs() -> dict[str, Doc]:
    fed = Federation.create(desks=(A, B, C))
    env = seal(report(), sender=fed.desks[A].secrets,
               recipients=[fed.verified(B), fed.verified(C)], severity="high", now=NOW)
    ack = Confirmation.create("ack", notice_id=env.notice_id, digest=env.digest,
                              sender=env.header.sender, me=fed.desks[B].secrets, at=NOW)
    root = fed.root
    assert root is not None
    root_sigs = unpack(root.encode())[1]
    docs = [
        Doc("envelope", Envelope.decode, unpack(env.header.raw),
            lambda h: pack([h, env.ciphertext, env.signature]), DEFAULT_MAX_NOTICE_BYTES,
            "created_at", "nonce", "from"),
        Doc("confirmation", Confirmation.decode, unpack(ack.signed.body),
            lambda b: pack([b, ack.signed.signature]), MAX_STATEMENT_BYTES,
            "at", "digest", "from"),
        Doc("desk_card", DeskCard.decode, unpack(fed.desks[A].card.encode()),
            lambda b: b, MAX_DOC_BYTES, "v", "cert", "type"),
        Doc("federation_root", FederationRoot.decode, unpack(root.body),
            lambda b: pack([b, root_sigs]), MAX_DOC_BYTES, "issued_at", None, "type"),
    ]
    return {d.name: d for d in docs}


DOCS = _build_docs()
ENV = DOCS["envelope"]

#: (bytes, expected exception class, accepted codes)
Case = tuple[bytes, type[ProtocolError], frozenset[str]]


def mal(*codes: str) -> tuple[type[ProtocolError], frozenset[str]]:
    return MalformedInput, frozenset(codes)


def nested(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


# ------------------------------------------------------------------ generic cases


def document_cases(d: Doc) -> dict[str, Case]:
    """Damage to the outermost bytes of the document."""
    valid = d.valid()
    return {
        "empty": (b"", *mal("truncated")),
        "truncated_by_one": (valid[:-1], *mal("truncated")),
        "truncated_half": (valid[: len(valid) // 2], *mal("truncated")),
        "trailing_byte": (valid + b"\x00", *mal("extra_data")),
        "trailing_value": (valid + pack({"x": 1}), *mal("extra_data")),
        "reserved_c1": (b"\xc1", *mal("malformed")),
        "reserved_c1_first": (b"\xc1" + valid[1:], *mal("malformed")),
        "nested_5000": (b"\x91" * 5000 + b"\xc0", *mal("too_deep")),
        "array_2pow32": (b"\xdd\xff\xff\xff\xff", *mal("length_limit")),
        "map_2pow32": (b"\xdf\xff\xff\xff\xff", *mal("length_limit")),
        "oversize": (b"\x93" + b"\x00" * d.limit, *mal("too_large")),
        "wrong_top_type": (pack("a string"), *mal("bad_type")),
    }


def body_cases(d: Doc) -> dict[str, Case]:
    """Damage inside the (signed) body map, or the envelope header."""
    items = list(d.body.items())
    ext_field = d.bin_field or d.int_field
    out: dict[str, Case] = {
        "body_empty": (d.wrap(b""), *mal("truncated")),
        "body_truncated": (d.wrap(pack(d.body)[:-1]), *mal("truncated")),
        "body_trailing": (d.wrap(pack(d.body) + b"\xc0"), *mal("extra_data")),
        "body_reserved_c1": (d.with_body(**{d.str_field: Raw(b"\xc1")}), *mal("malformed")),
        "body_nested_5000": (d.wrap(b"\x91" * 5000 + b"\xc0"), *mal("too_deep")),
        "body_nested_10": (d.with_body(**{d.str_field: nested(10)}), *mal("too_deep")),
        "body_array_2pow32": (d.wrap(b"\xdd\xff\xff\xff\xff"), *mal("length_limit")),
        "body_map_2pow32": (d.wrap(b"\xdf\xff\xff\xff\xff"), *mal("length_limit")),
        "body_not_a_map": (d.wrap(pack([1, 2])), *mal("bad_type")),
        "duplicate_key": (d.wrap(pack_pairs([*items, (d.str_field, d.body[d.str_field])])),
                          *mal("duplicate_key")),
        "int_map_key": (d.wrap(pack_pairs([*items, (1, 1)])), *mal("bad_type")),
        "nil_map_key": (d.wrap(pack_pairs([*items, (None, 1)])), *mal("bad_type")),
        "bin_map_key": (d.wrap(pack_pairs([*items, (b"zz", 1)])), *mal("bad_type")),
        "bin_and_str_unknown_keys": (d.wrap(pack_pairs([*items, (b"zz", 1), ("yy", 2)])),
                                     *mal("bad_type", "unknown_field")),
        "ext5_empty": (d.with_body(**{ext_field: Raw(b"\xc7\x00\x05")}),
                       *mal("type_not_allowed", "bad_type")),
        "ext5": (d.with_body(**{ext_field: msgpack.ExtType(5, b"\x00" * 4)}),
                 *mal("type_not_allowed", "bad_type")),
        "timestamp_ext": (d.with_body(**{d.int_field: msgpack.Timestamp(NOW // 1000, 0)}),
                          *mal("type_not_allowed", "bad_type")),
        "bad_utf8": (d.with_body(**{d.str_field: Raw(b"\xa2\xff\xfe")}), *mal("bad_utf8")),
        "nan_for_int": (d.with_body(**{d.int_field: math.nan}), *mal("bad_type")),
        "float_for_int": (d.with_body(**{d.int_field: 1.0}), *mal("bad_type")),
        "bool_for_int": (d.with_body(**{d.int_field: True}), *mal("bad_type")),
        "str_for_int": (d.with_body(**{d.int_field: "1"}), *mal("bad_type")),
        "unknown_field": (d.with_body(zzz=1), *mal("unknown_field")),
        "missing_field": (d.wrap(pack({k: v for k, v in items if k != d.str_field})),
                          *mal("missing_field")),
        "version_0": (d.with_body(v=0), UnsupportedVersion, frozenset({"unsupported_version"})),
        # 3: one past the newest version any document has (the envelope speaks 1 and 2).
        "version_3": (d.with_body(v=3), UnsupportedVersion, frozenset({"unsupported_version"})),
        "version_as_str": (d.with_body(v="1"), *mal("bad_type")),
    }
    if d.bin_field is not None:
        out["str_for_bin"] = (d.with_body(**{d.bin_field: "x" * 16}), *mal("bad_type"))
    return out


GENERIC = [
    pytest.param(name, case, id=f"{name}-{case}")
    for name, d in DOCS.items()
    for case in [*document_cases(d), *body_cases(d)]
]


def check_rejected(decode: Callable[[bytes], object], case: Case) -> ProtocolError:
    data, cls, codes = case
    with pytest.raises(cls) as exc:
        decode(data)
    assert isinstance(exc.value, ProtocolError)
    assert exc.value.code in codes, f"code {exc.value.code!r}, expected one of {sorted(codes)}"
    assert str(exc.value)  # a message that says what was wrong
    return exc.value


@pytest.mark.parametrize("name", list(DOCS))
def test_valid_document_decodes(name: str) -> None:
    """Control: the untouched document each case starts from decodes."""
    d = DOCS[name]
    assert d.decode(d.valid()) is not None
    assert d.decode(d.with_body()) is not None  # the hand-built map encoder is faithful


@pytest.mark.parametrize(("name", "case"), GENERIC)
def test_malformed_document_is_rejected_with_code(name: str, case: str) -> None:
    """Each malformation is refused with a ProtocolError subclass carrying the stated code."""
    d = DOCS[name]
    cases = document_cases(d) | body_cases(d)
    check_rejected(d.decode, cases[case])


@pytest.mark.parametrize("name", list(DOCS))
def test_non_bytes_input_is_rejected(name: str) -> None:
    """A bytearray or str instead of bytes is refused with bad_type, not a TypeError."""
    d = DOCS[name]
    for value in (bytearray(d.valid()), d.valid().hex()):
        with pytest.raises(MalformedInput) as exc:
            d.decode(value)  # type: ignore[arg-type]
        assert exc.value.code == "bad_type"


# ------------------------------------------------------------------ envelope header


def header(**changes: Any) -> bytes:
    return ENV.with_body(**changes)


def stanzas(*names: str) -> list[dict[str, Any]]:
    return [{"to": n, "ek_kid": bytes([i + 1]) * 16, "wrapped": bytes([i + 1]) * 80}
            for i, n in enumerate(names)]


_S = ENV.body["stanzas"]
HEADER_CASES: dict[str, Case] = {
    "notice_id_15": (header(notice_id=b"\x01" * 15), *mal("bad_value")),
    "notice_id_17": (header(notice_id=b"\x01" * 17), *mal("bad_value")),
    "notice_id_zeros": (header(notice_id=bytes(16)), *mal("bad_value")),
    "notice_id_str": (header(notice_id="0123456789abcdef"), *mal("bad_type")),
    "recipients_33": (header(stanzas=stanzas(*[f"cn.d{i:02d}" for i in range(33)])),
                      *mal("bad_recipients")),
    "recipients_0": (header(stanzas=[]), *mal("bad_recipients")),
    "recipients_4000": (header(stanzas=[0] * 4000), *mal("bad_recipients")),
    "recipients_10000": (header(stanzas=[0] * 10_000), *mal("too_large", "length_limit")),
    "recipient_twice": (header(stanzas=[_S[0], _S[0]]), *mal("bad_recipients")),
    "recipients_unsorted": (header(stanzas=[_S[1], _S[0]]), *mal("bad_recipients")),
    "sender_among_recipients": (header(stanzas=stanzas(A)), *mal("bad_recipients")),
    "sender_among_many": (header(stanzas=sorted([*_S, *stanzas(A)], key=lambda s: s["to"])),
                          *mal("bad_recipients")),
    "wrapped_79": (header(stanzas=[_S[0] | {"wrapped": b"\x01" * 79}, _S[1]]),
                   *mal("bad_stanza")),
    "wrapped_81": (header(stanzas=[_S[0], _S[1] | {"wrapped": b"\x01" * 81}]),
                   *mal("bad_stanza")),
    "ek_kid_15": (header(stanzas=[_S[0] | {"ek_kid": b"\x01" * 15}, _S[1]]),
                  *mal("bad_stanza")),
    "stanza_missing_field": (header(stanzas=[{"to": B, "ek_kid": b"\x01" * 16}, _S[1]]),
                             *mal("bad_stanza")),
    "stanza_extra_field": (header(stanzas=[_S[0] | {"x": 1}, _S[1]]), *mal("bad_stanza")),
    "stanza_not_a_map": (header(stanzas=[1]), *mal("bad_stanza")),
    "stanza_bad_desk": (header(stanzas=[_S[0] | {"to": "CN-CAC"}, _S[1]]),
                        *mal("bad_stanza", "bad_value")),
    "stanzas_not_a_list": (header(stanzas={"to": B}), *mal("bad_type")),
    "kc_31": (header(kc=b"\x01" * 31), *mal("bad_value")),
    "kc_33": (header(kc=b"\x01" * 33), *mal("bad_value")),
    "nonce_23": (header(nonce=b"\x01" * 23), *mal("bad_value")),
    "nonce_25": (header(nonce=b"\x01" * 25), *mal("bad_value")),
    "from_kid_15": (header(from_kid=b"\x01" * 15), *mal("bad_value")),
    "created_at_2pow64_minus_1": (header(created_at=2**64 - 1), *mal("bad_value", "bad_type")),
    "created_at_negative": (header(created_at=-1), *mal("bad_value", "bad_type")),
    "created_at_min_int64": (header(created_at=-(2**63)), *mal("bad_value", "bad_type")),
    "created_at_after_9999": (header(created_at=253_402_300_800_000), *mal("bad_value")),
    "severity_unknown": (header(severity="urgent"), *mal("bad_value")),
    "severity_bytes": (header(severity=b"high"), *mal("bad_type")),
    "status_unknown": (header(status="drill"), *mal("bad_value")),
    "from_uppercase": (header(**{"from": "US.CAISI"}), *mal("bad_value")),
    "from_too_long": (header(**{"from": "us." + "a" * 60}), *mal("bad_value", "too_large")),
    "in_reply_to_zeros": (header(in_reply_to=bytes(16)), *mal("bad_value")),
    "in_reply_to_15": (header(in_reply_to=b"\x01" * 15), *mal("bad_value")),
    "header_over_limit": (ENV.wrap(pack(ENV.body | {"zzz": b"\x00" * (MAX_HEADER_BYTES + 1000)})),
                          *mal("too_large")),
    "signature_63": (pack([pack(ENV.body), b"c", b"\x01" * 63]), *mal("bad_value")),
    "signature_65": (pack([pack(ENV.body), b"c", b"\x01" * 65]), *mal("bad_value")),
    "signature_missing": (pack([pack(ENV.body), b"c"]), *mal("bad_value")),
    "envelope_4_elements": (pack([pack(ENV.body), b"c", b"\x01" * 64, b""]), *mal("bad_value")),
    "header_as_map_not_bin": (pack([ENV.body, b"c", b"\x01" * 64]), *mal("bad_type")),
    "ciphertext_as_str": (pack([pack(ENV.body), "c", b"\x01" * 64]), *mal("bad_type")),
    "v3_header_with_new_field": (header(v=3, ack_deadline=NOW), UnsupportedVersion,
                                 frozenset({"unsupported_version"})),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_malformed_envelope_header_is_rejected_with_code(case: str) -> None:
    """A header breaking the closed schema is refused at decode, before any crypto."""
    check_rejected(Envelope.decode, HEADER_CASES[case])


def test_envelope_limit_is_the_callers() -> None:
    """Envelope.decode honours a smaller max_bytes chosen by the relay (too_large)."""
    data = ENV.valid()
    assert Envelope.decode(data, max_bytes=len(data)).raw == data
    with pytest.raises(MalformedInput) as exc:
        Envelope.decode(data, max_bytes=len(data) - 1)
    assert exc.value.code == "too_large"


def test_recipient_cap_is_checked_before_stanzas() -> None:
    """33 stanzas of garbage are refused for their count, not for their content."""
    data = header(stanzas=[{"junk": i} for i in range(33)])
    with pytest.raises(MalformedInput) as exc:
        Envelope.decode(data)
    assert exc.value.code == "bad_recipients"


def test_32_recipients_are_allowed() -> None:
    """The recipient cap is 32 inclusive: a 32-stanza header passes the schema."""
    env = Envelope.decode(header(stanzas=stanzas(*[f"cn.d{i:02d}" for i in range(32)])))
    assert len(env.header.recipients) == 32


# ------------------------------------------------------------------ other documents


CONF = DOCS["confirmation"]
ROOT = DOCS["federation_root"]
CARD = DOCS["desk_card"]
_M = ROOT.body["members"]

OTHER_CASES: dict[str, tuple[Callable[[bytes], object], Case]] = {
    "confirmation-notice_id_15": (CONF.decode, (CONF.with_body(notice_id=b"\x01" * 15),
                                                *mal("bad_value"))),
    "confirmation-notice_id_17": (CONF.decode, (CONF.with_body(notice_id=b"\x01" * 17),
                                                *mal("bad_value"))),
    "confirmation-notice_id_zeros": (CONF.decode, (CONF.with_body(notice_id=bytes(16)),
                                                   *mal("bad_value"))),
    "confirmation-digest_31": (CONF.decode, (CONF.with_body(digest=b"\x01" * 31),
                                             *mal("bad_value"))),
    "confirmation-unknown_kind": (CONF.decode, (CONF.with_body(type="nack"), *mal("bad_value"))),
    "confirmation-at_negative": (CONF.decode, (CONF.with_body(at=-1), *mal("bad_value"))),
    "confirmation-signature_63": (CONF.decode, (pack([pack(CONF.body), b"\x01" * 63]),
                                                *mal("bad_value"))),
    "confirmation-signature_65": (CONF.decode, (pack([pack(CONF.body), b"\x01" * 65]),
                                                *mal("bad_value"))),
    "confirmation-message_not_map": (CONF.decode, (CONF.with_body(message=b"x"),
                                                   *mal("bad_type"))),
    "root-version_0": (ROOT.decode, (ROOT.with_body(version=0), *mal("bad_value"))),
    "root-members_empty": (ROOT.decode, (ROOT.with_body(members=[]), *mal("length_limit"))),
    "root-members_unsorted": (ROOT.decode, (ROOT.with_body(members=list(reversed(_M))),
                                            *mal("bad_value"))),
    "root-member_twice": (ROOT.decode, (ROOT.with_body(members=[_M[0], _M[0]]),
                                        *mal("bad_value"))),
    "root-member_zero_key": (ROOT.decode, (ROOT.with_body(members=[_M[0] | {"key": bytes(32)}]),
                                           *mal("bad_value"))),
    "root-member_bad_country": (ROOT.decode, (ROOT.with_body(members=[_M[0] | {"country": "USA"}]),
                                              *mal("bad_value", "too_large"))),
    "root-signature_63": (ROOT.decode, (pack([pack(ROOT.body), [["us", b"\x01" * 63]]]),
                                        *mal("bad_value"))),
    "root-signature_country_int": (ROOT.decode, (pack([pack(ROOT.body), [[1, b"\x01" * 64]]]),
                                                 *mal("bad_type"))),
    "root-signatures_not_list": (ROOT.decode, (pack([pack(ROOT.body), {"us": b"\x01" * 64}]),
                                               *mal("bad_type"))),
    "root-signature_entry_3": (ROOT.decode, (pack([pack(ROOT.body), [["us", b"\x01" * 64, 1]]]),
                                             *mal("bad_value"))),
    "desk_card-no_eks": (CARD.decode, (CARD.with_body(eks=[]), *mal("length_limit"))),
    "desk_card-five_eks": (CARD.decode, (CARD.with_body(eks=CARD.body["eks"] * 5),
                                         *mal("length_limit"))),
    "desk_card-cert_garbage": (CARD.decode, (CARD.with_body(cert=b"\xc1garbage"),
                                             *mal("malformed"))),
    "desk_card-cert_v2": (CARD.decode, (CARD.with_body(cert=DOCS["confirmation"].wrap(
        pack(unpack(unpack(CARD.body["cert"])[0]) | {"v": 2}))),
        UnsupportedVersion, frozenset({"unsupported_version"}))),
}


@pytest.mark.parametrize("case", list(OTHER_CASES))
def test_malformed_document_field_is_rejected_with_code(case: str) -> None:
    """Document-specific field errors (ids, lengths, member lists) carry the stated code."""
    decode, spec = OTHER_CASES[case]
    check_rejected(decode, spec)
