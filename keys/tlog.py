"""RFC 6962 / RFC 9162 Merkle trees and C2SP tlog-tiles, as plain functions (no I/O).

Hashing (RFC 6962 section 2.1, RFC 9162 section 2.1.1), SHA-256::

    leaf hash  = SHA-256(0x00 || entry)
    node hash  = SHA-256(0x01 || left || right)
    MTH({})    = SHA-256("")

A *hash reader* is a callable ``read(level, index) -> bytes`` giving the hash of the
complete subtree of ``2**level`` leaves that starts at leaf ``index * 2**level`` (level 0:
the leaf hashes). Everything that needs stored hashes (tree heads, proofs) takes one, so
the same code serves the relay (from its database), the client (from fetched tiles, see
``TileHashReader``) and the tests (from a list of leaf hashes, ``MemoryTree``).

Proof generation follows RFC 9162 2.1.3.1 (PATH) and 2.1.4.1 (PROOF/SUBPROOF);
verification follows RFC 9162 2.1.3.2 and 2.1.4.2 step by step. Tiles follow C2SP
tlog-tiles (c2sp.org/tlog-tiles): height 8, full tiles of 256 hashes, partial tiles
``.p/<W>``, index path groups ``x001/x234/067``, entry bundles of uint16-length-prefixed
entries.

Errors: ``ProofError`` (a ``ProtocolError``) for a proof or tile that does not hold;
``UsageError`` for arguments no proof can exist for (index beyond size, ...).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from keys.errors import ProtocolError, UsageError

HASH_SIZE = 32
#: MTH of the empty tree (RFC 6962 2.1): SHA-256 of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()
#: Tile height (C2SP tlog-tiles): each tile spans 8 tree levels, 256 hashes wide.
TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
#: The most levels a tree of 2**63 leaves has; proofs are at most this long.
MAX_PROOF_HASHES = 63
#: Largest entry an entry bundle can carry (uint16 length prefix).
MAX_ENTRY_BYTES = 0xFFFF
#: Largest tree size the formats allow (tile levels 0..63 and int64 sizes in other tools).
MAX_TREE_SIZE = (1 << 63) - 1

HashReader = Callable[[int, int], bytes]


class ProofError(ProtocolError):
    """A Merkle proof, root or tile that does not verify. ``code`` narrows it:
    ``bad_proof`` (wrong length or a hash that does not lead to the root),
    ``root_mismatch``, ``bad_tile``."""

    code = "bad_proof"


# ----------------------------------------------------------------------------- hashing


def leaf_hash(entry: bytes) -> bytes:
    """RFC 6962 2.1: MTH({d(0)}) = SHA-256(0x00 || d(0))."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 2.1: SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _check_hash(h: bytes, what: str) -> None:
    if len(h) != HASH_SIZE:
        raise ProofError(f"{what} is {len(h)} bytes; a SHA-256 hash is {HASH_SIZE}",
                         code="bad_proof")


def _check_size(size: int, what: str = "tree size") -> None:
    if not 0 <= size <= MAX_TREE_SIZE:
        raise UsageError(f"{what} {size} is outside 0..2**63-1")


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2): RFC 6962's k."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_hash(read: HashReader, lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) for the ranges the RFC recursions produce: ``lo`` is a multiple of
    the smallest power of two >= ``hi - lo`` (so the range's complete subtrees are
    stored ones). Only complete subtrees are read."""
    n = hi - lo
    if n <= 0:
        raise UsageError(f"empty range [{lo}, {hi})")
    if n & (n - 1) == 0 and lo % n == 0:
        level = n.bit_length() - 1
        return read(level, lo >> level)
    k = _split(n)
    return node_hash(subtree_hash(read, lo, lo + k), subtree_hash(read, lo + k, hi))


def tree_hash(read: HashReader, size: int) -> bytes:
    """The root hash of the tree of ``size`` leaves (RFC 6962 2.1 MTH)."""
    _check_size(size)
    return EMPTY_ROOT if size == 0 else subtree_hash(read, 0, size)


def right_edge(size: int) -> list[tuple[int, int]]:
    """The complete subtrees a tree of ``size`` leaves decomposes into, left to right, as
    (level, index): one per set bit of ``size``. Their hashes determine the root and
    every later tree (the "compact range" of the log)."""
    _check_size(size)
    out: list[tuple[int, int]] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            out.append((level, start >> level))
            start += 1 << level
    return out


class MerkleHasher:
    """An append-only tree kept as its right edge: O(log n) hashes, O(1) amortised work
    per leaf. ``append`` returns the complete-subtree hashes the new leaf completes, as
    (level, index, hash) with level 0 first: exactly what a log stores so that tiles and
    proofs can be served later (store at least the levels that are multiples of 8)."""

    __slots__ = ("_edge", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._edge: list[tuple[int, bytes]] = []  # (level, hash), largest subtree first

    @classmethod
    def resume(cls, size: int, read: HashReader) -> MerkleHasher:
        """Continue a tree of ``size`` leaves from stored hashes (its right edge)."""
        h = cls()
        h._size = size
        h._edge = [(level, read(level, index)) for level, index in right_edge(size)]
        return h

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Append one leaf *hash* (``leaf_hash(entry)``)."""
        _check_hash(leaf, "leaf hash")
        if self._size >= MAX_TREE_SIZE:
            raise UsageError("the tree is full (2**63-1 leaves)")
        index = self._size
        new = [(0, index, leaf)]
        h, level = leaf, 0
        # Merge equal-height subtrees: the bits that carry when index + 1 is added.
        while self._edge and self._edge[-1][0] == level:
            _, left = self._edge.pop()
            h = node_hash(left, h)
            level += 1
            new.append((level, index >> level, h))
        self._edge.append((level, h))
        self._size += 1
        return new

    def root(self) -> bytes:
        """The current root hash: the right edge folded from the right."""
        if not self._edge:
            return EMPTY_ROOT
        h = self._edge[-1][1]
        for _, left in reversed(self._edge[:-1]):
            h = node_hash(left, h)
        return h


class MemoryTree:
    """Every complete-subtree hash of a tree in memory (tests, small bundles)."""

    def __init__(self, entries: Iterable[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        self.hasher = MerkleHasher()
        for e in entries:
            self.append(e)

    def append(self, entry: bytes) -> int:
        """Append an entry (hashed as a leaf); return its index."""
        for level, index, h in self.hasher.append(leaf_hash(entry)):
            if level == len(self.levels):
                self.levels.append([])
            assert len(self.levels[level]) == index
            self.levels[level].append(h)
        return self.hasher.size - 1

    @property
    def size(self) -> int:
        return self.hasher.size

    def read(self, level: int, index: int) -> bytes:
        try:
            return self.levels[level][index]
        except IndexError:
            raise UsageError(f"no stored hash at level {level} index {index}") from None

    def root(self, size: int | None = None) -> bytes:
        return self.hasher.root() if size is None else tree_hash(self.read, size)


# ---------------------------------------------------------------------- proof generation


def _path(read: HashReader, m: int, lo: int, hi: int) -> list[bytes]:
    # RFC 9162 2.1.3.1: PATH(m, D[n]).
    n = hi - lo
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(read, m, lo, lo + k), subtree_hash(read, lo + k, hi)]
    return [*_path(read, m - k, lo + k, hi), subtree_hash(read, lo, lo + k)]


def inclusion_proof(read: HashReader, index: int, size: int) -> list[bytes]:
    """The audit path for leaf ``index`` in the tree of ``size`` leaves (RFC 9162 2.1.3.1),
    leaf-side first."""
    _check_size(size)
    if not 0 <= index < size:
        raise UsageError(f"leaf index {index} is not in a tree of size {size}")
    return _path(read, index, 0, size)


def _subproof(read: HashReader, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
    # RFC 9162 2.1.4.1: SUBPROOF(m, D[n], b) over D[lo:hi].
    n = hi - lo
    if m == n:
        return [] if b else [subtree_hash(read, lo, hi)]
    k = _split(n)
    if m <= k:
        return [*_subproof(read, m, lo, lo + k, b), subtree_hash(read, lo + k, hi)]
    return [*_subproof(read, m - k, lo + k, hi, False), subtree_hash(read, lo, lo + k)]


def consistency_proof(read: HashReader, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(m, D[n]) (RFC 9162 2.1.4.1) from ``old_size`` to ``new_size``. Empty when
    the sizes are equal or ``old_size`` is 0 (the empty tree is consistent with all)."""
    _check_size(new_size)
    if not 0 <= old_size <= new_size:
        raise UsageError(f"old size {old_size} is not within 0..{new_size}")
    if old_size in (0, new_size):
        return []
    return _subproof(read, old_size, 0, new_size, True)


# -------------------------------------------------------------------- proof verification


def root_from_inclusion_proof(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """RFC 9162 2.1.3.2 steps 1-5: the root the proof leads to, or ``ProofError``."""
    _check_hash(leaf, "leaf hash")
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        _check_hash(p, "proof hash")
        if sn == 0:
            raise ProofError(f"inclusion proof has {len(proof)} hashes: too many for leaf "
                             f"{index} of {size}")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof has {len(proof)} hashes: too few for leaf "
                         f"{index} of {size}")
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` (a leaf hash) is at ``index`` in the tree of ``size`` with
    ``root`` (RFC 9162 2.1.3.2). Raises ``ProofError``."""
    _check_hash(root, "root hash")
    if not hmac.compare_digest(root_from_inclusion_proof(leaf, index, size, proof), root):
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the root of "
                         f"the tree of size {size}", code="root_mismatch")


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Check that the tree of ``new_size`` with ``new_root`` extends the tree of
    ``old_size`` with ``old_root`` (RFC 9162 2.1.4.2). Raises ``ProofError``.

    ``old_size`` must be at least 1 (as in RFC 9162 and transparency-dev/merkle: any tree
    extends the empty one, so a proof from it says nothing; callers such as the witness
    handle size 0 themselves). Equal sizes need an empty proof and equal roots."""
    _check_hash(old_root, "old root hash")
    _check_hash(new_root, "new root hash")
    for p in proof:
        _check_hash(p, "proof hash")
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    if old_size < 1:
        raise ProofError("a consistency proof from the empty tree is meaningless")
    if old_size == new_size:
        if proof:
            raise ProofError("equal tree sizes need an empty consistency proof")
        if not hmac.compare_digest(old_root, new_root):
            raise ProofError(f"two different roots for tree size {old_size}",
                             code="root_mismatch")
        return
    if not proof:
        raise ProofError(f"empty consistency proof from {old_size} to {new_size}")
    # RFC 9162 2.1.4.2.
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # step 2: first is an exact power of 2
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            raise ProofError(f"consistency proof from {old_size} to {new_size} has too "
                             "many hashes")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # step 7
        raise ProofError(f"consistency proof from {old_size} to {new_size} has too few "
                         "hashes")
    if not (hmac.compare_digest(fr, old_root) and hmac.compare_digest(sr, new_root)):
        raise ProofError(f"consistency proof from {old_size} to {new_size} does not lead "
                         "to both roots", code="root_mismatch")


def needed_hashes(compute: Callable[[HashReader], object]) -> list[tuple[int, int]]:
    """The (level, index) hashes ``compute`` reads, in order: the proofs' control flow does
    not depend on hash values, so a recording reader with dummy hashes finds them. Use it
    to know which tiles to fetch before computing a proof from tiles."""
    seen: list[tuple[int, int]] = []

    def record(level: int, index: int) -> bytes:
        seen.append((level, index))
        return bytes(HASH_SIZE)

    compute(record)
    return seen


# --------------------------------------------------------------------------------- tiles

_TILE_PATH = re.compile(
    r"tile/(?P<level>entries|0|[1-9][0-9]?)/(?P<index>(?:x[0-9]{3}/)*[0-9]{3})"
    r"(?:\.p/(?P<width>[1-9][0-9]{0,2}))?"
)


@dataclass(frozen=True, slots=True, order=True)
class Tile:
    """Tile ``index`` at tile ``level`` (tree level 8*level) of ``width`` hashes
    (256 = full). ``level`` is -1 for an entry bundle (``tile/entries/...``)."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not -1 <= self.level <= 63:
            raise UsageError(f"tile level {self.level} is outside 0..63")
        if self.index < 0:
            raise UsageError(f"tile index {self.index} is negative")
        if not 1 <= self.width <= TILE_WIDTH:
            raise UsageError(f"tile width {self.width} is outside 1..256")

    @property
    def is_entries(self) -> bool:
        return self.level == -1

    @property
    def is_full(self) -> bool:
        return self.width == TILE_WIDTH

    def path(self) -> str:
        """The resource path under the log prefix (C2SP tlog-tiles "Merkle Tree")."""
        level = "entries" if self.is_entries else str(self.level)
        suffix = "" if self.is_full else f".p/{self.width}"
        return f"tile/{level}/{encode_tile_index(self.index)}{suffix}"

    def hash_coords(self) -> list[tuple[int, int]]:
        """The (tree level, index) of each hash this tile holds (hash tiles only)."""
        if self.is_entries:
            raise UsageError("an entry bundle holds entries, not hashes")
        level = self.level * TILE_HEIGHT
        return [(level, self.index * TILE_WIDTH + i) for i in range(self.width)]


def encode_tile_index(n: int) -> str:
    """``1234067`` -> ``x001/x234/067`` (3-digit groups, all but the last prefixed x)."""
    if n < 0:
        raise UsageError(f"tile index {n} is negative")
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def parse_tile_path(path: str) -> Tile:
    """Parse ``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]`` (no leading slash).
    Refuses non-canonical spellings (leading zero groups, ``.p/256``), so one tile has
    one name."""
    m = _TILE_PATH.fullmatch(path)
    if m is None:
        raise ProtocolError(f"not a tile path: {path[:120]!r}", code="bad_tile_path")
    groups = m["index"].split("/")
    if len(groups) > 1 and groups[0] == "x000":
        raise ProtocolError(f"tile index has a leading zero group: {path[:120]!r}",
                            code="bad_tile_path")
    index = int("".join(g.lstrip("x") for g in groups))
    width = int(m["width"]) if m["width"] else TILE_WIDTH
    level = -1 if m["level"] == "entries" else int(m["level"])
    if m["width"] and width >= TILE_WIDTH:
        raise ProtocolError(f"partial tile width {width} is not below 256",
                            code="bad_tile_path")
    if level > 63:
        raise ProtocolError(f"tile level {level} is above 63", code="bad_tile_path")
    return Tile(level, index, width)


def tile_for_hash(level: int, index: int, size: int) -> tuple[Tile, int, int]:
    """The tile (as it exists for a tree of ``size``) from which the complete-subtree hash
    (level, index) is computed, with the first and last+1 position of the tile hashes
    that hash up to it."""
    t_level = level // TILE_HEIGHT
    shift = level - t_level * TILE_HEIGHT
    start = index << shift  # position among the tree-level-8*t_level hashes
    end = start + (1 << shift)
    t_index = start // TILE_WIDTH
    available = size >> (t_level * TILE_HEIGHT)  # complete hashes at that level
    if end > available:
        raise UsageError(f"hash ({level}, {index}) does not exist in a tree of size {size}")
    width = min(TILE_WIDTH, available - t_index * TILE_WIDTH)
    off = t_index * TILE_WIDTH
    return Tile(t_level, t_index, width), start - off, end - off


def tiles_for_size(size: int) -> list[Tile]:
    """The right-most tiles of a tree of ``size``: for each level, the partial tile if there
    is one (C2SP tlog-tiles "Partial Tiles"). Full tiles left of them never change."""
    _check_size(size)
    out = []
    level = 0
    while size >> (level * TILE_HEIGHT):
        width = (size >> (level * TILE_HEIGHT)) % TILE_WIDTH
        if width:
            out.append(Tile(level, (size >> (level * TILE_HEIGHT)) // TILE_WIDTH, width))
        level += 1
    return out


def tiles_needed(coords: Iterable[tuple[int, int]], size: int) -> list[Tile]:
    """The tiles (at the widths a tree of ``size`` has) that hold ``coords``."""
    return sorted({tile_for_hash(level, index, size)[0] for level, index in coords})


def tile_bytes(tile: Tile, read: HashReader) -> bytes:
    """A hash tile's contents from stored hashes (what the log serves)."""
    return b"".join(read(level, index) for level, index in tile.hash_coords())


def _hash_range(hashes: Sequence[bytes]) -> bytes:
    # A power-of-two run of aligned hashes, hashed up to one.
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


class TileHashReader:
    """A hash reader over fetched tiles for a tree of ``size``. Tiles are untrusted: a
    proof computed from them means nothing until checked against a signed root
    (``verify_inclusion`` / ``verify_consistency``), which is what ``prove_*_from_tiles``
    do. Reading a hash whose tile is missing raises ``UsageError`` naming it."""

    def __init__(self, size: int, tiles: dict[Tile, bytes]) -> None:
        self.size = size
        self.tiles: dict[Tile, list[bytes]] = {}
        for tile, data in tiles.items():
            if tile.is_entries:
                continue
            if len(data) != tile.width * HASH_SIZE:
                raise ProofError(f"tile {tile.path()} has {len(data)} bytes; it should have "
                                 f"{tile.width * HASH_SIZE}", code="bad_tile")
            self.tiles[tile] = [data[i:i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]

    def __call__(self, level: int, index: int) -> bytes:
        tile, lo, hi = tile_for_hash(level, index, self.size)
        hashes = self.tiles.get(tile)
        if hashes is None:
            # A wider tile of the same index holds the same first hashes.
            for other, hs in self.tiles.items():
                if (other.level, other.index) == (tile.level, tile.index) and len(hs) >= hi:
                    hashes = hs
                    break
        if hashes is None:
            raise UsageError(f"tile {tile.path()} is needed but was not fetched")
        return _hash_range(hashes[lo:hi])


def prove_inclusion_from_tiles(
    tiles: dict[Tile, bytes], leaf: bytes, index: int, size: int, root: bytes
) -> list[bytes]:
    """An inclusion proof computed from fetched tiles, checked against ``root``."""
    proof = inclusion_proof(TileHashReader(size, tiles), index, size)
    verify_inclusion(leaf, index, size, proof, root)
    return proof


def prove_consistency_from_tiles(
    tiles: dict[Tile, bytes], old_size: int, old_root: bytes, new_size: int, new_root: bytes
) -> list[bytes]:
    """A consistency proof computed from tiles of the newer tree, checked against both
    roots."""
    proof = consistency_proof(TileHashReader(new_size, tiles), old_size, new_size)
    if 0 < old_size:
        verify_consistency(old_size, new_size, proof, old_root, new_root)
    return proof


# ------------------------------------------------------------------------ entry bundles


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """C2SP tlog-tiles "Log entries": big-endian uint16 length-prefixed entries."""
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise UsageError(f"an entry bundle holds 1..256 entries, not {len(entries)}")
    out = bytearray()
    for e in entries:
        if len(e) > MAX_ENTRY_BYTES:
            raise UsageError(f"log entry of {len(e)} bytes exceeds the 65535 of a bundle")
        out += len(e).to_bytes(2, "big") + e
    return bytes(out)


def decode_entry_bundle(data: bytes, width: int) -> list[bytes]:
    """Split an entry bundle of ``width`` entries; refuses a short or over-long bundle."""
    out = []
    pos = 0
    for i in range(width):
        if pos + 2 > len(data):
            raise ProofError(f"entry bundle ends before entry {i} of {width}", code="bad_tile")
        n = int.from_bytes(data[pos:pos + 2], "big")
        pos += 2
        if pos + n > len(data):
            raise ProofError(f"entry {i} of the bundle is truncated", code="bad_tile")
        out.append(data[pos:pos + n])
        pos += n
    if pos != len(data):
        raise ProofError(f"entry bundle has {len(data) - pos} bytes after its {width} "
                         "entries", code="bad_tile")
    return out


__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_PROOF_HASHES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "HashReader",
    "MemoryTree",
    "MerkleHasher",
    "ProofError",
    "Tile",
    "TileHashReader",
    "consistency_proof",
    "decode_entry_bundle",
    "encode_entry_bundle",
    "encode_tile_index",
    "inclusion_proof",
    "leaf_hash",
    "needed_hashes",
    "node_hash",
    "parse_tile_path",
    "prove_consistency_from_tiles",
    "prove_inclusion_from_tiles",
    "right_edge",
    "root_from_inclusion_proof",
    "subtree_hash",
    "tile_bytes",
    "tile_for_hash",
    "tiles_for_size",
    "tiles_needed",
    "tree_hash",
]
