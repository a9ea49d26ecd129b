"""Optional: sample the relay with py-spy while the e2e throughput window runs
(``python -m tests.bench.run --profile``), and summarize where its CPU goes.

Samples are taken only while the relay holds the GIL (``--gil``), so waits (epoll, the
writer thread's fsync and queue) are left out: what remains is Python CPU.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


class Sampler:
    def __init__(self, pid: int, seconds: float, out: Path, rate: int = 200) -> None:
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        binary = py_spy()
        if binary is None:
            self.error = "py-spy is not installed (pip install py-spy)"
            return
        self.error = ""
        self.proc = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
             "--rate", str(rate), "--gil", "--format", "raw", "--output", str(out),
             "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def finish(self, timeout: float = 60) -> dict[str, Any]:
        if self.proc is None:
            return {"status": "absent", "reason": self.error}
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            return {"status": "failed", "reason": err.decode(errors="replace")[-500:]}
        return {"status": "measured", "raw_stacks": str(self.out), **summarize(self.out)}


_FRAME = re.compile(r"(.*) \((.*?):(\d+)\)$")


def _name(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group(2).split("site-packages/")[-1]
    path = re.sub(r"^.*?/(relay|keys|client)/", r"\1/", path)
    return f"{m.group(1)} ({path})"


def summarize(path: Path, top: int = 60) -> dict[str, Any]:
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    total = 0
    for raw in path.read_text(errors="replace").splitlines():
        if not raw.strip():
            continue
        stack, _, count = raw.rpartition(" ")
        n = int(count)
        frames = stack.split(";")[1:]  # the first entry names the thread
        total += n
        if not frames:
            continue
        own[_name(frames[-1])] += n
        m = _FRAME.match(frames[-1])
        if m:
            lines[f"{_name(frames[-1])}:{m.group(3)}"] += n
        for name in {_name(f) for f in frames}:
            incl[name] += n

    def share(c: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(v / total, 4)) for k, v in c.most_common(top)] if total else []

    return {"samples": total, "self": share(own), "inclusive": share(incl),
            "self_lines": share(lines)}
