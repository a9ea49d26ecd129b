"""One strict msgpack codec for everything that crosses a trust boundary.

Decoding refuses, with a typed :class:`~keys.errors.MalformedInput` whose ``code`` says
why: inputs over the caller's byte limit, truncated input, trailing bytes, reserved bytes,
nesting deeper than :data:`MAX_DEPTH`, declared lengths over the limits, duplicate or
non-string map keys, extension types (the Timestamp extension included), invalid UTF-8,
and more than ``max_objects`` values in total (every container and every element counts:
a body of nothing but empty maps is refused after ``max_objects`` of them, not decoded).

The schema layer (:func:`fields` and the ``check`` helpers) then enforces closed maps with
exact key sets and exact types: ``bool`` is not an ``int``, a float is never accepted, and
every string, byte string and list has a bound.

msgpack is not canonical (``0x05`` and a uint64 ``5`` decode alike), so nothing here is
ever re-encoded to check a signature: signatures cover the bytes as received, and signed
bodies travel as opaque ``bin`` values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn, TypeVar

import msgpack

from keys.errors import MalformedInput, UnsupportedVersion

#: Deepest nesting any Hotline frame needs is 4 (envelope > header > stanzas > stanza);
#: the decoder allows a little slack and the schemas pin the exact shape.
MAX_DEPTH = 8
#: Upper bound on any declared array/map length; no frame has more than a few hundred.
MAX_CONTAINER_LEN = 4096
#: Upper bound on the total number of values one decoded input may hold (containers and
#: their elements, at any depth). A 500-event inbox page holds about 4,500.
MAX_OBJECTS = 20_000
#: Upper bound on timestamps (UTC milliseconds): the year 9999.
MAX_TIMESTAMP_MS = 253_402_300_799_999

_T = TypeVar("_T")
Check = Callable[[Any, str], Any]


def fail(code: str, message: str) -> NoReturn:
    raise MalformedInput(message, code=code)


def _no_duplicate_keys(pairs: Sequence[tuple[Any, Any]]) -> dict[Any, Any]:
    out = dict(pairs)
    if len(out) != len(pairs) or not all(type(key) is str for key in out):
        for key in out:
            if type(key) is not str:
                fail("bad_type", "map keys must be strings")
        seen: set[Any] = set()
        for key, _ in pairs:
            if key in seen:
                fail("duplicate_key", f"map key {str(key)[:40]!r} appears more than once")
            seen.add(key)
    return out


def _no_ext(code: int, data: bytes) -> NoReturn:
    fail("type_not_allowed", f"msgpack extension type {code} is not allowed")


class _ObjectBudget:
    """Counts decoded values as msgpack finishes each container and stops the decoding
    once there are more than ``limit``: the C decoder calls these hooks for every array
    and map it builds, so an input of millions of empty containers costs ``limit`` of
    them, not millions (per-container length limits alone do not bound the total)."""

    __slots__ = ("left", "what")

    def __init__(self, limit: int, what: str) -> None:
        self.left = limit - 1  # the top-level value itself
        self.what = what

    def _spend(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            fail("length_limit", f"{self.what} holds more values in all than allowed")

    def list_hook(self, items: list[Any]) -> list[Any]:
        self._spend(len(items))
        return items

    def pairs_hook(self, pairs: Sequence[tuple[Any, Any]]) -> dict[Any, Any]:
        self._spend(2 * len(pairs))
        return _no_duplicate_keys(pairs)


def unpack(data: bytes, *, what: str, max_bytes: int, max_objects: int = MAX_OBJECTS) -> Any:
    """Decode one msgpack value from ``data``, refusing anything non-strict.

    ``what`` names the thing being decoded in error messages ("envelope", "ack", ...).
    ``max_objects`` bounds the values decoded in total (see :data:`MAX_OBJECTS`).
    """
    if type(data) is not bytes:
        fail("bad_type", f"{what} must be bytes")
    if len(data) > max_bytes:
        fail("too_large", f"{what} is {len(data)} bytes; the limit is {max_bytes}")
    if not data:
        fail("truncated", f"{what} is empty")
    budget = _ObjectBudget(max_objects, what)
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            list_hook=budget.list_hook,
            object_pairs_hook=budget.pairs_hook,
            ext_hook=_no_ext,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=MAX_CONTAINER_LEN,
            max_map_len=MAX_CONTAINER_LEN,
            max_ext_len=max_bytes,
        )
    except MalformedInput:
        raise
    except msgpack.ExtraData:
        fail("extra_data", f"{what} has trailing bytes after its end")
    except msgpack.StackError:
        fail("too_deep", f"{what} is nested too deeply")
    except msgpack.FormatError:
        fail("malformed", f"{what} contains a reserved or invalid msgpack byte")
    except UnicodeDecodeError:
        fail("bad_utf8", f"{what} contains a string that is not valid UTF-8")
    except ValueError as exc:
        text = str(exc)
        if "exceeds max_" in text:
            fail("length_limit", f"{what} declares a container or string longer than allowed")
        if "incomplete" in text or "insufficient" in text:
            fail("truncated", f"{what} ends before its last value is complete")
        if "map key" in text:
            fail("bad_type", f"{what} has a map key that is not a string")
        fail("malformed", f"{what} is not valid msgpack")
    _check_depth(value, what)
    return value


#: The values a non-canonical or malformed array of byte strings is decoded into at most,
#: to name what is wrong with it (see :func:`bin_array`).
_DIAGNOSE_OBJECTS = 1024
_BIN_HEADS = {0xC4: 1, 0xC5: 2, 0xC6: 4}


def _canonical_bins(data: bytes, count: int) -> list[bytes] | None:
    """The byte strings of ``data`` if it is exactly the canonical encoding of an array of
    ``count`` byte strings (fixarray, smallest bin forms, nothing after); else None."""
    if count > 15 or len(data) < 1 or data[0] != 0x90 | count:
        return None
    out: list[bytes] = []
    pos = 1
    for _ in range(count):
        if pos >= len(data):
            return None
        width = _BIN_HEADS.get(data[pos])
        if width is None or pos + 1 + width > len(data):
            return None
        size = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
        smallest = 1 if size < 1 << 8 else 2 if size < 1 << 16 else 4
        start = pos + 1 + width
        if width != smallest or start + size > len(data):
            return None
        out.append(data[start : start + size])
        pos = start + size
    return out if pos == len(data) else None


def bin_array(data: bytes, count: int, *, what: str, max_bytes: int) -> list[bytes]:
    """Decode ``data`` by its shape: exactly the canonical msgpack array of ``count`` byte
    strings (a fixarray, each element in its smallest ``bin`` form), else refused.

    The canonical form is read directly, without the msgpack decoder, so a large body
    costs a few slices whatever it holds. Anything else is decoded under a small object
    bound only to say what is wrong (the usual codes; ``malformed`` for a well-formed
    but non-canonical framing).
    """
    if type(data) is not bytes:
        fail("bad_type", f"{what} must be bytes")
    if len(data) > max_bytes:
        fail("too_large", f"{what} is {len(data)} bytes; the limit is {max_bytes}")
    parts = _canonical_bins(data, count)
    if parts is not None:
        return parts
    value = unpack(data, what=what, max_bytes=max_bytes, max_objects=_DIAGNOSE_OBJECTS)
    for i, item in enumerate(array(value, count, what)):
        if type(item) is not bytes:
            fail("bad_type", f"{what}[{i}] must be a byte string, not {type(item).__name__}")
    fail("malformed", f"{what} framing is not in canonical msgpack form")


def _check_depth(value: Any, what: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and the Timestamp extension, which msgpack
    decodes without calling ext_hook. Walks the decoded value one level at a time."""
    level = [value]
    depth = 0
    while level:
        below: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is dict:
                below.extend(item.values())
            elif kind is list:
                below.extend(item)
            elif kind is msgpack.Timestamp:
                fail("type_not_allowed", f"{what} contains a msgpack Timestamp extension")
        depth += 1
        if below and depth > MAX_DEPTH:
            fail("too_deep", f"{what} is nested more than {MAX_DEPTH} levels deep")
        level = below


def pack(value: Any) -> bytes:
    """Encode ``value`` the one way Hotline writes msgpack (bin for bytes, str for text)."""
    out: bytes = msgpack.packb(value, use_bin_type=True, strict_types=False)
    return out


# ---------------------------------------------------------------------------- schema


def fields(value: Any, spec: dict[str, Check], what: str) -> dict[str, Any]:
    """Check that ``value`` is a map with exactly the keys of ``spec``; check each value.

    Returns the map with every value as its check returned it.
    """
    if type(value) is not dict:
        fail("bad_type", f"{what} must be a map")
    if "v" in spec and "v" in value:
        # The version decides the schema: a newer version's extra fields are reported as
        # an unsupported version, not as unknown fields.
        spec["v"](value["v"], f"{what}.v")
    extra = sorted(k for k in value if k not in spec)
    if extra:
        fail("unknown_field", f"{what} has unknown field {extra[0][:40]!r}")
    missing = [k for k in spec if k not in value]
    if missing:
        fail("missing_field", f"{what} lacks field {missing[0]!r}")
    return {k: check(value[k], f"{what}.{k}") for k, check in spec.items()}


def array(value: Any, length: int, what: str) -> list[Any]:
    if type(value) is not list:
        fail("bad_type", f"{what} must be an array")
    if len(value) != length:
        fail("bad_value", f"{what} must have exactly {length} elements, not {len(value)}")
    return value


def version(expected: int) -> Check:
    def check(value: Any, path: str) -> int:
        if type(value) is not int:
            fail("bad_type", f"{path} must be an integer")
        if value != expected:
            raise UnsupportedVersion(f"{path} is {value}; this implementation speaks {expected}")
        return value

    return check


def const(expected: str) -> Check:
    def check(value: Any, path: str) -> str:
        if value != expected or type(value) is not str:
            fail("bad_value", f"{path} must be {expected!r}")
        return expected

    return check


def uint(maximum: int = 2**63 - 1, minimum: int = 0) -> Check:
    def check(value: Any, path: str) -> int:
        if type(value) is not int:
            fail("bad_type", f"{path} must be an integer, not {type(value).__name__}")
        if not minimum <= value <= maximum:
            fail("bad_value", f"{path} must be between {minimum} and {maximum}")
        return value

    return check


timestamp = uint(MAX_TIMESTAMP_MS)


def blob(*, size: int | None = None, max_size: int | None = None, nonzero: bool = False) -> Check:
    def check(value: Any, path: str) -> bytes:
        if type(value) is not bytes:
            fail("bad_type", f"{path} must be a byte string, not {type(value).__name__}")
        if size is not None and len(value) != size:
            fail("bad_value", f"{path} must be exactly {size} bytes, not {len(value)}")
        if max_size is not None and len(value) > max_size:
            fail("too_large", f"{path} is {len(value)} bytes; the limit is {max_size}")
        if nonzero and not any(value):
            fail("bad_value", f"{path} must not be all zeros")
        return value

    return check


def text(max_chars: int, *, min_chars: int = 0, pattern: re.Pattern[str] | None = None) -> Check:
    def check(value: Any, path: str) -> str:
        if type(value) is not str:
            fail("bad_type", f"{path} must be a string, not {type(value).__name__}")
        if len(value) > max_chars:
            fail("too_large", f"{path} is {len(value)} characters; the limit is {max_chars}")
        if len(value) < min_chars:
            fail("bad_value", f"{path} must have at least {min_chars} "
                              f"character{'' if min_chars == 1 else 's'}")
        if pattern is not None and not pattern.fullmatch(value):
            fail("bad_value", f"{path} {value[:60]!r} does not have the required form")
        return value

    return check


def one_of(choices: Iterable[str]) -> Check:
    allowed = tuple(choices)

    def check(value: Any, path: str) -> str:
        if type(value) is not str:
            fail("bad_type", f"{path} must be a string")
        if value not in allowed:
            fail("bad_value", f"{path} {value[:40]!r} is not one of {', '.join(allowed)}")
        return value

    return check


def list_of(item: Check, *, max_items: int, min_items: int = 0) -> Check:
    def check(value: Any, path: str) -> list[Any]:
        if type(value) is not list:
            fail("bad_type", f"{path} must be an array, not {type(value).__name__}")
        if not min_items <= len(value) <= max_items:
            fail(
                "length_limit",
                f"{path} has {len(value)} items; allowed are {min_items} to {max_items}",
            )
        return [item(x, f"{path}[{i}]") for i, x in enumerate(value)]

    return check


def nullable(inner: Check) -> Check:
    def check(value: Any, path: str) -> Any:
        return None if value is None else inner(value, path)

    return check


def record(spec: dict[str, Check]) -> Check:
    def check(value: Any, path: str) -> dict[str, Any]:
        return fields(value, spec, path)

    return check


def boolean(value: Any, path: str) -> bool:
    if type(value) is not bool:
        fail("bad_type", f"{path} must be true or false")
    return bool(value)
