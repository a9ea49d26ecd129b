"""The CLI against a real relay: deadlines printed where the desk looks, the responded
step, a second relay on one database refused, a taken port in one line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.relay_harness import TEST_ENV, RelayProcess

ROOT = Path(__file__).resolve().parents[2]
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


def _hotline(*argv: str, env: dict[str, str] | None = None, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "client.cli.main", *argv], cwd=ROOT,
                          env=dict(os.environ) | TEST_ENV | (env or {}), capture_output=True,
                          text=True, timeout=timeout, check=False)


def _desk(federation: dict[str, Path], relay: RelayProcess, desk: str, *argv: str
          ) -> subprocess.CompletedProcess[str]:
    done = _hotline(*argv, "--home", str(federation[desk]), env={"HOTLINE_RELAY": relay.url})
    assert "Unclosed" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    return done


def test_send_says_by_when_each_recipient_must_acknowledge_and_status_shows_the_reply(
        federation: dict[str, Path], relay: RelayProcess) -> None:
    sent = _desk(federation, relay, "us.caisi", "send", "--to", "cn.cac", "--severity",
                 "critical", "--title", "Weights leaked", "--body", "Mirrors spreading.",
                 "--status", "exercise")
    assert sent.returncode == 0, sent.stderr
    nid = re.search(r"notice ([0-9a-f]{32}) \[EXERCISE\]", sent.stdout)
    assert nid is not None, sent.stdout
    assert re.search(rf"^cn\.cac must acknowledge by {TIME}$", sent.stdout, re.M), sent.stdout
    before = _desk(federation, relay, "us.caisi", "status", nid.group(1))
    assert re.search(rf"responded: +no \(a reply is owed by {TIME}\)", before.stdout), \
        before.stdout

    assert _desk(federation, relay, "cn.cac", "inbox").returncode == 0
    reply = _desk(federation, relay, "cn.cac", "reply", nid.group(1)[:8], "--body", "Blocked.")
    assert reply.returncode == 0, reply.stderr
    assert _desk(federation, relay, "us.caisi", "inbox").returncode == 0
    after = _desk(federation, relay, "us.caisi", "status", nid.group(1))
    assert after.returncode == 0, after.stderr
    assert re.search(rf"responded: +{TIME} \(verified reply [0-9a-f]{{16}}: 'Re: Weights",
                     after.stdout), after.stdout

    own = _desk(federation, relay, "us.caisi", "ack", nid.group(1))
    assert own.returncode == 2 and "one this desk sent" in own.stderr


def test_second_relay_on_the_same_database_is_refused(relay: RelayProcess) -> None:
    second = _hotline("relay", "serve", "--home", str(relay.home), "--listen", "127.0.0.1:0",
                      timeout=30)
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"hotline: another relay is already running on the database {relay.home / 'relay.db'}"
        f" (it holds {relay.home / 'relay.db'}.lock); stop it first, or give this relay its "
        "own --db"]


def test_port_in_use_is_one_line(relay: RelayProcess, tmp_path: Path) -> None:
    # Another relay home (one home serves one relay at a time), the first one's port.
    other = tmp_path / "other-relay"
    shutil.copytree(relay.home, other,
                    ignore=shutil.ignore_patterns("relay.lock", "relay.db*", "*.jsonl*"))
    taken = _hotline("relay", "serve", "--home", str(other), "--listen",
                     f"127.0.0.1:{relay.port}", timeout=30)
    assert taken.returncode == 2
    (err,) = [x for x in taken.stderr.splitlines() if x.startswith("hotline:")]
    assert f"cannot listen on 127.0.0.1:{relay.port}" in err
    assert "Traceback" not in taken.stderr
