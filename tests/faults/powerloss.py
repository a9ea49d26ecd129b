"""A power-loss model for one directory (the relay's database directory).

A process killed by SIGKILL loses nothing the kernel already has: its writes sit in the
page cache and reach the disk later. A power cut loses every write not yet synced. This
module models the second: the relay runs with ``powerloss_shim.c`` preloaded, which keeps,
per file of the directory, a copy of what the file held when it was last fsync()ed or
fdatasync()ed, and the names the directory held when it was last fsync()ed. ``cut()``,
called while the relay is dead, rebuilds the directory as a power cut would leave it:

- a name survives only if the last sync of the directory saw it (or it was there at the
  baseline): a file created since, whose directory entry was never synced, is dropped even
  if its content was synced (the conservative choice; SQLite syncs the directory after it
  creates a WAL or journal file, at that file's first sync);
- a surviving file holds its content as of its last sync; writes and truncations since are
  dropped (a file whose name survived but that was never synced is empty);
- ``-shm`` files are removed: SQLite rebuilds its WAL index from the WAL.

Unlinks and renames are durable only at a directory sync as well (a file unlinked since
comes back with its last synced content). Not modelled: torn sectors within one write, and
writes reaching the disk out of order before a sync (the model drops all of them; a real
disk may keep any subset, which SQLite's WAL checksums are there for).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SHIM_SOURCE = Path(__file__).with_name("powerloss_shim.c")
ENTRIES = ".entries"


def build_shim(out_dir: Path) -> Path | str:
    """Compile the shim into ``out_dir``; its path, or why it cannot be built."""
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        return "no C compiler (gcc or cc) on PATH: the power-loss shim cannot be built"
    tag = hashlib.sha256(SHIM_SOURCE.read_bytes()).hexdigest()[:12]
    lib = out_dir / f"powerloss-{tag}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-Wall", "-Wno-format-truncation",
                        "-o", str(lib), str(SHIM_SOURCE), "-ldl", "-lpthread"],
                       capture_output=True, text=True, timeout=120, check=False)
    if r.returncode != 0:
        return f"the power-loss shim does not compile with {cc}: {r.stderr.strip()[:500]}"
    return lib


@dataclass
class CutStats:
    cuts: int = 0
    #: Files whose content after the cut differs from what the killed relay had written.
    files_rolled_back: int = 0
    #: Files (or directory entries) that existed at the kill and not after the cut.
    files_dropped: int = 0
    #: Sum over files of |size at kill - size after cut|.
    bytes_dropped: int = 0
    per_cut: list[dict[str, int]] = field(default_factory=list)


class PowerLoss:
    """The model for ``directory``, with its durable copies in ``shadow``."""

    def __init__(self, directory: Path, shadow: Path, lib: Path) -> None:
        self.dir = directory.resolve()
        self.shadow = shadow.resolve()
        self.lib = lib
        self.stats = CutStats()

    def env(self) -> dict[str, str]:
        """The relay's environment: preload the shim on this directory."""
        return {"LD_PRELOAD": str(self.lib), "HOTLINE_POWERLOSS_DIR": str(self.dir),
                "HOTLINE_POWERLOSS_SHADOW": str(self.shadow)}

    def baseline(self) -> None:
        """Take the directory as it is now as durable (nothing runs on it)."""
        shutil.rmtree(self.shadow, ignore_errors=True)
        self.shadow.mkdir(parents=True)
        names = [p.name for p in sorted(self.dir.iterdir()) if not _is_shm(p.name)]
        for name in names:
            shutil.copyfile(self.dir / name, self.shadow / name)
        (self.shadow / ENTRIES).write_text("".join(n + "\n" for n in names))

    def durable_names(self) -> set[str]:
        return {n for n in (self.shadow / ENTRIES).read_text().splitlines() if n}

    def cut(self) -> dict[str, int]:
        """The power goes off (the relay must be dead): the directory keeps only what was
        synced. Returns what this cut dropped."""
        durable = self.durable_names()
        now = {p.name: p for p in self.dir.iterdir()}
        rolled = dropped = nbytes = 0
        for name, path in now.items():
            if _is_shm(name):
                path.unlink()
                continue
            if name not in durable:
                dropped += 1
                nbytes += path.stat().st_size
                path.unlink()
                (self.shadow / name).unlink(missing_ok=True)
        for name in durable:
            path, copy = self.dir / name, self.shadow / name
            if not copy.exists():
                copy.write_bytes(b"")  # the entry was synced, the content never
            before = path.read_bytes() if path.exists() else None
            after = copy.read_bytes()
            if before != after:
                rolled += 1
                nbytes += abs(len(before or b"") - len(after))
                tmp = path.with_name(path.name + ".powerloss-tmp")
                tmp.write_bytes(after)
                os.replace(tmp, path)
        s = self.stats
        s.cuts += 1
        s.files_rolled_back += rolled
        s.files_dropped += dropped
        s.bytes_dropped += nbytes
        out = {"rolled_back": rolled, "dropped": dropped, "bytes": nbytes}
        s.per_cut.append(out)
        return out


def _is_shm(name: str) -> bool:
    return name.endswith("-shm")
