"""Decoding costs what the input is allowed to cost: a bound on the total number of values
(not only per container), and the envelope read by its shape without the msgpack decoder.

An attacker's body of millions of empty maps, each container within the 4096-entry limit,
used to be decoded in full (8.4 million dicts for 8 MiB) before any schema said no.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from keys import Envelope, MalformedInput, codec, seal
from keys.frames import ChallengeRequest, Event, InboxPage, decode_client_message
from tests.factory import NOW, Federation, report


def _empty_maps(size: int) -> bytes:
    """About ``size`` bytes: an array of arrays of 4096 empty maps each (every container
    within the per-container limit; one value per byte)."""
    inner = b"\xdd" + (4096).to_bytes(4, "big") + b"\x80" * 4096
    count = max(1, size // len(inner))
    return b"\xdd" + count.to_bytes(4, "big") + inner * count


def _peak_bytes(decode: Callable[[], Any]) -> tuple[int, BaseException | None]:
    tracemalloc.start()
    try:
        try:
            decode()
        except Exception as exc:
            return tracemalloc.get_traced_memory()[1], exc
        return tracemalloc.get_traced_memory()[1], None
    finally:
        tracemalloc.stop()


def test_million_empty_maps_stop_at_the_total_object_bound() -> None:
    """1 MiB of empty maps is refused (length_limit) after MAX_OBJECTS values, not decoded
    into a million dicts; the peak memory of the attempt stays under 4 MiB."""
    data = _empty_maps(1 << 20)
    peak, exc = _peak_bytes(lambda: codec.unpack(data, what="page", max_bytes=len(data)))
    assert isinstance(exc, MalformedInput), exc
    assert exc.code == "length_limit"
    assert peak < 4 << 20, peak


def test_object_bound_counts_every_value_at_every_depth() -> None:
    """Exactly ``max_objects`` values decode; one more is refused, however they nest."""
    value = [[None] * 3, {"a": [1, 2]}]  # 1 + 2 + 3 + 2 + 2 = 10 values
    data = codec.pack(value)
    assert codec.unpack(data, what="x", max_bytes=100, max_objects=10) == value
    with pytest.raises(MalformedInput) as exc:
        codec.unpack(data, what="x", max_bytes=100, max_objects=9)
    assert exc.value.code == "length_limit"


def test_envelope_of_empty_maps_is_refused_by_shape_without_decoding() -> None:
    """A 2 MiB "envelope" of empty maps costs a few KiB to refuse: it is not the canonical
    array of three byte strings, and naming what is wrong decodes at most 1024 values."""
    data = _empty_maps(2 << 20)
    peak, exc = _peak_bytes(lambda: Envelope.decode(data))
    assert isinstance(exc, MalformedInput), exc
    assert peak < 1 << 20, peak


def test_canonical_envelope_is_sliced_and_round_trips() -> None:
    """Control: a real sealed notice decodes by shape to the same parts."""
    fed = Federation.create(desks=("us.caisi", "cn.cac"))
    env = seal(report(), sender=fed.desks["us.caisi"].secrets,
               recipients=[fed.verified("cn.cac")], severity="high", now=NOW)
    again = Envelope.decode(env.raw)
    assert (again.header.raw, again.ciphertext, again.signature) == (
        env.header.raw, env.ciphertext, env.signature)


@pytest.mark.parametrize("framing", [
    b"\xdc\x00\x03",  # array16 of 3
    b"\x93\xc5\x00\x01x",  # a 1-byte header in bin16
])
def test_non_canonical_envelope_framing_is_malformed(framing: bytes) -> None:
    """Shape-first reading keeps refusing a re-framed envelope (a second digest)."""
    if framing.startswith(b"\xdc"):
        data = framing + b"\xc4\x01x" + b"\xc4\x01c" + b"\xc4\x40" + b"\x01" * 64
    else:
        data = framing + b"\xc4\x01c" + b"\xc4\x40" + b"\x01" * 64
    with pytest.raises(MalformedInput) as exc:
        Envelope.decode(data)
    assert exc.value.code == "malformed"


@pytest.mark.parametrize("decode", [
    ChallengeRequest.decode,
    lambda d: decode_client_message(d, 1 << 20),
])
def test_small_frame_of_empty_maps_is_refused_after_256_values(
        decode: Callable[[bytes], Any]) -> None:
    """Frames read before login or on the stream bound their values to 256: 64 KiB of
    empty maps inside a field is refused for its count, not decoded."""
    body = b"\x82\xa1v\x01\xa4desk" + _empty_maps(60 * 1024)
    peak, exc = _peak_bytes(lambda: decode(body))
    assert isinstance(exc, MalformedInput), exc
    assert exc.code == "length_limit"
    assert peak < 1 << 20, peak


def test_full_inbox_page_fits_the_default_bound() -> None:
    """Control: a page of 500 events (the most a relay sends) decodes."""
    events = tuple(Event(i + 1, "ack", b"\x01" * 16, confirmation=b"c", attestation=b"a",
                         signer_cert=b"s") for i in range(500))
    page = InboxPage(events, 500, False)
    assert InboxPage.decode(page.encode()).events == events


def test_canonical_envelope_never_reaches_the_msgpack_decoder_whole(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Shape first: of a canonical envelope only the 8 KiB-bounded header is given to
    msgpack; the (up to 8 MiB) outer array is sliced."""
    fed = Federation.create(desks=("us.caisi", "cn.cac"))
    env = seal(report(), sender=fed.desks["us.caisi"].secrets,
               recipients=[fed.verified("cn.cac")], severity="high", now=NOW)
    seen: list[int] = []
    real = codec.msgpack.unpackb

    def spy(data: bytes, **kwargs: Any) -> Any:
        seen.append(len(data))
        return real(data, **kwargs)

    monkeypatch.setattr(codec.msgpack, "unpackb", spy)
    Envelope.decode(env.raw)
    assert seen == [len(env.header.raw)]
