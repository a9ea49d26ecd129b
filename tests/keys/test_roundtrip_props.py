"""Property tests: round trips of reports and confirmations; tampering and fuzzing.

Properties:
* seal -> decode -> open gives back exactly the report that was sealed, for every recipient;
* every confirmation kind and attestation event round trips and verifies;
* one flipped bit anywhere in an envelope is refused with a HotlineError subclass, never
  with another exception and never by opening;
* arbitrary or mutated bytes fed to the decoders raise only HotlineError subclasses.

Hypothesis runs derandomized (the same examples every run) with no example database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keys import (
    AiSystem,
    Attachment,
    Attestation,
    Confirmation,
    DeskCard,
    Envelope,
    FederationRoot,
    HotlineError,
    IncidentReport,
    Reference,
    RelayCard,
    Translation,
    check_submission,
    open_envelope,
    seal,
)
from keys.codec import MAX_TIMESTAMP_MS
from keys.ids import SEVERITIES, STATUSES
from keys.receipts import ATTESTATION_EVENTS, CONFIRMATION_KINDS
from keys.report import CATEGORIES, RELATIONS, TLP_LABELS
from tests.factory import NOW, Federation, report
from tests.keys._helpers import flip, pack

A, B, C = "us.caisi", "cn.cac", "cn.mss"
FED = Federation.create(desks=(A, B, C))
SECRETS = {name: FED.desks[name].secrets for name in (A, B, C)}
VERIFIED = {name: FED.verified(name) for name in (A, B, C)}

PROPS = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ = settings(PROPS, max_examples=200)


# ------------------------------------------------------------------ strategies

CHARS = st.one_of(
    st.integers(0x20, 0x7E),          # ASCII
    st.integers(0x4E00, 0x9FFF),      # CJK unified ideographs
    st.integers(0x3000, 0x303F),      # CJK symbols and punctuation
    st.integers(0xA0, 0xD7FF),        # the rest of the BMP below the surrogates
    st.integers(0xE000, 0x10FFFF),    # above the surrogates, astral planes included
    st.sampled_from([0x00, 0x09, 0x0A, 0x0D, 0x200B, 0xFEFF]),
).map(chr)
NAME_CHARS = CHARS.filter(lambda c: c not in "/\\" and ord(c) >= 0x20)


def txt(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.text(CHARS, min_size=min_size, max_size=max_size)


NOTICE_IDS = st.binary(min_size=16, max_size=16).filter(any)
LANGS = st.sampled_from(["en", "zh", "zh-Hans", "en-US", "fr"])

reports = st.builds(
    IncidentReport,
    title=txt(80, 1), summary=txt(200), body=txt(600),
    category=st.sampled_from(CATEGORIES),
    aware_at=st.integers(0, MAX_TIMESTAMP_MS),
    tlp=st.sampled_from(TLP_LABELS), lang=LANGS,
    systems=st.lists(st.builds(AiSystem, name=txt(30, 1), version=txt(10), developer=txt(30)),
                     max_size=3).map(tuple),
    countries=st.lists(st.sampled_from(["us", "cn", "gb", "fr", "jp"]), max_size=4).map(tuple),
    actions=st.lists(txt(60, 1), max_size=3).map(tuple),
    contact=txt(60),
    references=st.lists(st.builds(Reference, notice_id=NOTICE_IDS,
                                  relation=st.sampled_from(RELATIONS)), max_size=3).map(tuple),
    translations=st.lists(st.builds(Translation, lang=st.sampled_from(["en", "zh"]),
                                    title=txt(60, 1), summary=txt(100), body=txt(200)),
                          max_size=2).map(tuple),
    attachments=st.lists(st.builds(
        Attachment, name=st.text(NAME_CHARS, min_size=1, max_size=40),
        media_type=st.sampled_from(["text/plain", "application/octet-stream", "image/png",
                                    "application/vnd.hotline+msgpack"]),
        data=st.binary(max_size=3000)), max_size=3).map(tuple),
)


# ------------------------------------------------------------------ round trips


@PROPS
@given(rep=reports, severity=st.sampled_from(SEVERITIES), status=st.sampled_from(STATUSES),
       in_reply_to=st.none() | NOTICE_IDS, to=st.sampled_from([(B,), (C,), (B, C), (C, B)]))
def test_sealed_report_opens_to_the_same_report(
        rep: IncidentReport, severity: str, status: str, in_reply_to: bytes | None,
        to: tuple[str, ...]) -> None:
    """seal -> bytes -> decode -> check -> open returns the sealed report and routing fields."""
    env = seal(rep, sender=SECRETS[A], recipients=[VERIFIED[d] for d in to],
               severity=severity, status=status, in_reply_to=in_reply_to, now=NOW)
    wire = Envelope.decode(bytes(env.raw))
    check_submission(wire, sender=VERIFIED[A], now=NOW)
    assert wire.header.recipients == tuple(sorted(to))
    for name in to:
        n = open_envelope(wire, me=SECRETS[name], sender=VERIFIED[A])
        assert n.report == rep
        assert (n.sender, n.recipients, n.severity, n.status, n.in_reply_to, n.created_at) == (
            A, tuple(sorted(to)), severity, status, in_reply_to, NOW)
        assert n.notice_id == env.notice_id and n.digest == env.digest


@PROPS
@given(kind=st.sampled_from(CONFIRMATION_KINDS), at=st.integers(0, MAX_TIMESTAMP_MS),
       message=st.none() | txt(300), me=st.sampled_from([B, C]), nid=NOTICE_IDS,
       digest=st.binary(min_size=32, max_size=32))
def test_confirmation_round_trips(kind: str, at: int, message: str | None, me: str,
                                  nid: bytes, digest: bytes) -> None:
    """Every confirmation kind (with or without an ack message) decodes, verifies and opens."""
    if kind == "receipt":
        message = None
    conf = Confirmation.create(kind, notice_id=nid, digest=digest, sender=A,  # type: ignore[arg-type]
                               me=SECRETS[me], at=at, message=message,
                               sender_keys=VERIFIED[A] if message is not None else None)
    back = Confirmation.decode(conf.encode())
    back.verify(VERIFIED[me], notice_id=nid, digest=digest, sender=A, recipient=me)  # type: ignore[arg-type]
    assert (back.kind, back.notice_id, back.digest, back.sender, back.recipient, back.at) == (
        kind, nid, digest, A, me, at)
    assert back.open_message(SECRETS[A]) == message


RELAY_SK = nacl.signing.SigningKey.generate()
RELAY = RelayCard.decode(RelayCard.create("relay-test", RELAY_SK, NOW).encode())


@PROPS
@given(event=st.sampled_from(ATTESTATION_EVENTS), level=st.integers(0, 1000),
       at=st.integers(0, MAX_TIMESTAMP_MS), nid=NOTICE_IDS,
       digest=st.binary(min_size=32, max_size=32), desk=st.sampled_from([A, B, C]))
def test_attestation_round_trips(event: str, level: int, at: int, nid: bytes, digest: bytes,
                                 desk: str) -> None:
    """Every attestation event decodes to the same fields and verifies against the relay card."""
    att = Attestation.create(event, relay_id="relay-test", relay_key=RELAY_SK, notice_id=nid,
                             digest=digest, desk=desk, at=at, level=level)  # type: ignore[arg-type]
    back = Attestation.decode(att.encode())
    back.verify(RELAY, notice_id=nid, digest=digest)
    assert (back.event, back.level, back.at, back.notice_id, back.digest, back.desk) == (
        event, level, at, nid, digest, desk)


# ------------------------------------------------------------------ tampering


ENV = seal(report(attachments=(Attachment("a.bin", "application/octet-stream",
                                          bytes(range(256))),)),
           sender=SECRETS[A], recipients=[VERIFIED[B], VERIFIED[C]], severity="critical",
           now=NOW)
RAW = ENV.raw
HEADER_AT = RAW.index(ENV.header.raw)
CT_AT = RAW.index(ENV.ciphertext)
SIG_AT = RAW.rindex(ENV.signature)


def attempt(data: bytes) -> None:
    """Everything a relay and a recipient do with received bytes."""
    env = Envelope.decode(data)
    check_submission(env, sender=VERIFIED[A], now=NOW)
    open_envelope(env, me=SECRETS[B], sender=VERIFIED[A])


def test_untouched_envelope_passes_every_check() -> None:
    """Control: the envelope the tampering properties start from is accepted and opens."""
    attempt(RAW)
    assert HEADER_AT < CT_AT < SIG_AT


INDEX = st.one_of(
    st.integers(0, len(RAW) - 1),                                  # anywhere
    st.integers(0, HEADER_AT + len(ENV.header.raw) - 1),           # framing and header
    st.integers(SIG_AT - 3, len(RAW) - 1),                         # signature and its prefix
    st.integers(CT_AT - 5, CT_AT + 40),                            # ciphertext start
)


@FUZZ
@given(index=INDEX, bit=st.integers(0, 7))
def test_any_single_bit_flip_is_rejected(index: int, bit: int) -> None:
    """Flipping any one bit of an envelope makes decode/verify/open raise a HotlineError."""
    with pytest.raises(HotlineError):
        attempt(flip(RAW, index, bit))


def test_every_bit_flip_outside_the_ciphertext_body_is_rejected() -> None:
    """Exhaustively: each bit of the framing, header, signature and ciphertext edges is covered."""
    positions = [*range(0, CT_AT + 64), *range(SIG_AT - 64 - 3, len(RAW))]
    escaped: list[tuple[int, int, str]] = []
    for index in positions:
        for bit in range(8):
            try:
                attempt(flip(RAW, index, bit))
            except HotlineError:
                continue
            except Exception as exc:
                escaped.append((index, bit, type(exc).__name__))
            else:
                escaped.append((index, bit, "accepted"))
    assert escaped == []
    assert len(positions) * 8 > 3000


def only_hotline_errors(decode: Callable[[bytes], Any], data: bytes) -> None:
    try:
        decode(data)
    except HotlineError:
        pass


DECODERS: dict[str, Callable[[bytes], Any]] = {
    "envelope": Envelope.decode,
    "confirmation": Confirmation.decode,
    "desk_card": DeskCard.decode,
    "federation_root": FederationRoot.decode,
}
VALID = {
    "envelope": RAW,
    "confirmation": Confirmation.create("ack", notice_id=ENV.notice_id, digest=ENV.digest,
                                        sender=A, me=SECRETS[B], at=NOW).encode(),  # type: ignore[arg-type]
    "desk_card": FED.desks[A].card.encode(),
    "federation_root": FED.root.encode() if FED.root else b"",
}


@FUZZ
@given(name=st.sampled_from(list(DECODERS)), data=st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_hotline_errors(name: str, data: bytes) -> None:
    """Random bytes fed to any decoder raise nothing but HotlineError subclasses."""
    only_hotline_errors(DECODERS[name], data)


@FUZZ
@given(name=st.sampled_from(list(DECODERS)), prefix=st.sampled_from(
    [b"\x93", b"\x92", b"\x93\xc4", b"\x92\xc5", b"\x83", b"\xde\x00\x06"]),
    data=st.binary(max_size=300))
def test_msgpack_shaped_garbage_raises_only_hotline_errors(name: str, prefix: bytes,
                                                          data: bytes) -> None:
    """Bytes that start like a document (array or map header) raise only HotlineError."""
    only_hotline_errors(DECODERS[name], prefix + data)


Mutation = tuple[str, int, int]
MUTATIONS = st.lists(st.tuples(st.sampled_from(["set", "insert", "delete", "truncate"]),
                               st.integers(0, 2**32), st.integers(0, 255)),
                     min_size=1, max_size=4)


def mutate(data: bytes, ops: list[Mutation]) -> bytes:
    out = bytearray(data)
    for op, where, value in ops:
        if not out:
            break
        i = where % len(out)
        if op == "set":
            out[i] = value
        elif op == "insert":
            out.insert(i, value)
        elif op == "delete":
            del out[i]
        else:
            del out[i:]
    return bytes(out)


@FUZZ
@given(name=st.sampled_from(list(DECODERS)), ops=MUTATIONS)
def test_mutated_documents_raise_only_hotline_errors(name: str, ops: list[Mutation]) -> None:
    """Valid documents with bytes set, inserted, deleted or cut raise only HotlineError."""
    only_hotline_errors(DECODERS[name], mutate(VALID[name], ops))


@FUZZ
@given(ops=MUTATIONS)
def test_mutated_envelope_never_opens_with_other_content(ops: list[Mutation]) -> None:
    """A mutated envelope is refused, or (framing only) opens with the very same signed parts."""
    data = mutate(RAW, ops)
    try:
        env = Envelope.decode(data)
        check_submission(env, sender=VERIFIED[A], now=NOW)
        notice = open_envelope(env, me=SECRETS[B], sender=VERIFIED[A])
    except HotlineError:
        return
    assert (env.header.raw, env.ciphertext, env.signature) == (
        ENV.header.raw, ENV.ciphertext, ENV.signature)
    assert notice.report == report(attachments=(Attachment(
        "a.bin", "application/octet-stream", bytes(range(256))),))


MSGPACK_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.binary(max_size=40) | st.text(CHARS, max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(CHARS, max_size=10) | st.binary(max_size=10), inner, max_size=4),
    max_leaves=12,
)
HEADER_KEYS = ["v", "notice_id", "from", "from_kid", "created_at", "severity", "status",
               "in_reply_to", "nonce", "kc", "stanzas"]


@FUZZ
@given(header=st.dictionaries(st.sampled_from(HEADER_KEYS) | st.text(CHARS, max_size=8)
                              | st.binary(max_size=8), MSGPACK_VALUES, max_size=14),
       base=st.booleans())
def test_structured_garbage_headers_raise_only_hotline_errors(
        header: dict[Any, Any], base: bool) -> None:
    """Arbitrary msgpack maps as the envelope header (alone or over a valid one) raise only
    HotlineError."""
    if base:
        header = msgpack.unpackb(ENV.header.raw, raw=False) | header
    data = pack([pack(header), ENV.ciphertext, ENV.signature])
    only_hotline_errors(Envelope.decode, data)
