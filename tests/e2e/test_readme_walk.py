"""The README's step-by-step section, run as written.

The shell blocks of "Setting up two countries, step by step" are parsed from README.md
(so the README and this test cannot drift) and run in an empty folder, one command after
the other, with test-strength Argon2 and the passphrase in $HOTLINE_PASSPHRASE; the relay
is started as the README says (``hotline relay serve``, in the background), on a free port
instead of 8750. The walk ends with a notice sent, received, acknowledged and its status
verified.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.relay_harness import TEST_ENV

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Setting up two countries, step by step"


def readme_commands(text: str) -> list[list[str]]:
    """Every command of the step-by-step section's ```sh blocks, split as a shell would
    (comments dropped, backslash continuations joined)."""
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end != -1 else len(text)]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if p.stdout is not None:
            p.stdout.close()


def test_readme_section_is_found_and_has_the_whole_walk() -> None:
    commands = readme_commands((ROOT / "README.md").read_text())
    verbs = [" ".join(c[1:3]) for c in commands]
    assert all(c[0] == "hotline" for c in commands)
    for needed in ("authority init", "federation create", "relay init", "relay serve",
                   "keys init", "keys publish", "contacts add", "inbox --home", "ack 01234567",
                   "status 01234567"):
        assert any(v.startswith(needed) for v in verbs), needed
    first = {v: i for i, v in reversed(list(enumerate(verbs)))}
    assert first["relay serve"] < first["keys init"]  # the relay runs before desks use it


def test_readme_step_by_step_runs_as_written(tmp_path: Path,
                                            background: list[subprocess.Popen[str]]) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("HOTLINE_HOME", "HOTLINE_RELAY")} | TEST_ENV
    outputs: list[tuple[list[str], str]] = []
    for words in readme_commands((ROOT / "README.md").read_text()):
        argv = [w.replace("127.0.0.1:8750", f"127.0.0.1:{port}") for w in words[1:]]
        cmd = [sys.executable, "-m", "client.cli.main", *argv]
        if argv[:2] == ["relay", "serve"]:
            proc = subprocess.Popen(cmd, cwd=tmp_path, env=env | {"PYTHONPATH": str(ROOT)},
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
            background.append(proc)
            _wait_listening(proc)
            continue
        done = subprocess.run(cmd, cwd=tmp_path, env=env | {"PYTHONPATH": str(ROOT)},
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{' '.join(words)}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr
        outputs.append((words, done.stdout))
    by_verb = {" ".join(w[1:3]): out for w, out in outputs}
    assert "cn.cac must acknowledge by" in by_verb["send --to"]
    assert "0123456789abcdef0123456789abcdef" in by_verb["inbox --home"]
    assert by_verb["ack 01234567"].startswith("acknowledged 0123456789abcdef")
    status = by_verb["status 01234567"]
    assert re.search(r"delivered: +\d{4}-.* UTC \(verified\)", status), status
    assert re.search(r"acknowledged: +\d{4}-.* UTC \(verified\): 'Seen, investigating'",
                     status), status


def _wait_listening(proc: subprocess.Popen[str], timeout: float = 60) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        try:
            listening = json.loads(line).get("event") == "relay.listening"
        except ValueError:
            continue
        if listening:
            # Keep reading its log, or the relay blocks once the pipe is full.
            threading.Thread(target=lambda: [None for _ in proc.stdout or ()],
                             daemon=True).start()
            return
    raise AssertionError("the relay did not start:\n" + "".join(lines[-20:]))
