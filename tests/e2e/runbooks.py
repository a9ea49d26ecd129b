"""Run the README's runbooks as written: parse the marked shell blocks, substitute the
documented placeholders, run each line in bash against real relay processes.

A block is the fenced ``sh`` code after ``<!-- runbook: NAME -->``. Lines are joined at a
trailing backslash; blank lines and ``#`` comments are skipped. ``systemctl stop|start|
restart hotline-relay`` is carried out on the test's relay process; every other line runs
in ``bash -euo pipefail`` in the work folder, with the placeholders of README's table
replaced (``Runner.subs``) and must exit 0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.relay_harness import TEST_ENV, RelayProcess, make_federation

REPO = Path(__file__).resolve().parent.parent.parent
README = REPO / "README.md"
RELAY_URL = "https://relay.example:8750"
RELAY_HOME = "/var/lib/hotline-relay"
BACKUP = "/mnt/backup"
_BLOCK = re.compile(r"<!-- runbook: ([a-z0-9-]+) -->\s*```sh\n(.*?)```", re.DOTALL)
BASH = shutil.which("bash") or "/bin/bash"
#: The venv's own ``hotline`` (the runbooks call it by name, found through PATH).
HOTLINE = str(Path(sys.executable).parent / "hotline")
_SYSTEMCTL = re.compile(r"systemctl (stop|start|restart) hotline-relay")


def runbook(name: str) -> list[str]:
    """The command lines of README's runbook ``name``."""
    blocks = dict(_BLOCK.findall(README.read_text(encoding="utf-8")))
    assert name in blocks, f"README.md has no runbook {name!r} (has {sorted(blocks)})"
    lines: list[str] = []
    for raw in blocks[name].replace("\\\n", " ").splitlines():
        text = raw.strip()
        if text and not text.startswith("#"):
            lines.append(re.sub(r"\s+#\s.*$", "", text))  # a trailing comment
    assert lines, f"runbook {name!r} is empty"
    return lines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Runner:
    """A work folder laid out as in README's "Setting up two countries", and a relay."""

    work: Path
    relay: RelayProcess
    subs: dict[str, str] = field(default_factory=dict)
    outputs: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def create(cls, tmp: Path, desks: tuple[str, ...] = ("us.caisi", "cn.cac")) -> Runner:
        work = tmp / "work"
        work.mkdir()
        make_federation(work, desks)
        relay = RelayProcess.create(work)
        relay.port = free_port()
        relay.start()
        (tmp / "backup").mkdir()
        runner = cls(work, relay, {RELAY_URL: relay.url, RELAY_HOME: str(relay.home),
                                   BACKUP: str(tmp / "backup")})
        for desk in desks:
            runner.sh(f"hotline keys publish --home {desk}")
        return runner

    @property
    def env(self) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        return dict(os.environ) | TEST_ENV | {
            "HOTLINE_RELAY": self.relay.url, "PATH": bin_dir + os.pathsep + os.environ["PATH"],
            "NO_COLOR": "1",
            # A command without --home must not find this machine's ~/.hotline.
            "HOTLINE_HOME": str(self.work / "no-such-home")}

    def substitute(self, line: str) -> str:
        for placeholder, value in self.subs.items():
            line = line.replace(placeholder, value)
        return line

    def sh(self, line: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([BASH, "-euo", "pipefail", "-c", line], cwd=self.work,
                              env=self.env, capture_output=True, text=True, timeout=180,
                              stdin=subprocess.DEVNULL)
        self.outputs.append((line, done.stdout + done.stderr))
        if check:
            assert done.returncode == 0, (
                f"exit {done.returncode}: {line}\n{done.stdout}\n{done.stderr}")
        return done

    def run(self, name: str) -> None:
        for line in runbook(name):
            m = _SYSTEMCTL.fullmatch(line)
            if m:
                if m.group(1) in ("stop", "restart"):
                    self.relay.stop()
                if m.group(1) in ("start", "restart"):
                    self.relay.start()
                continue
            unreplaced = re.findall(r"<[a-z ]+>", self.substitute(line))
            assert not unreplaced, f"no value for {unreplaced} in: {line}"
            self.sh(self.substitute(line))

    def output_of(self, prefix: str) -> str:
        """What the last line of a runbook starting with ``prefix`` (substituted) printed."""
        want = self.substitute(prefix)
        for line, out in reversed(self.outputs):
            if line.startswith(want):
                return out
        raise AssertionError(f"no line starting with {prefix!r} ran")

    def json_lines(self, line: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.sh(line).stdout.splitlines() if x.strip()]

    def send(self, sender: str, to: str, title: str) -> str:
        """A notice from ``sender`` to ``to``; its id."""
        (out,) = self.json_lines(f"hotline send --home {sender} --to {to} --severity high "
                                 f"--title '{title}' --body 'runbook check' --json")
        return str(out["notice_id"])

    def inbox(self, desk: str) -> dict[str, dict[str, Any]]:
        """The desk's inbox (fetched, verified) by notice id."""
        return {x["notice_id"]: x for x in self.json_lines(f"hotline inbox --home {desk} "
                                                             "--all --json")}

    def copy_home(self, desk: str, name: str) -> None:
        shutil.copytree(self.work / desk, self.work / name)
