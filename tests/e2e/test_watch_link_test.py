"""``hotline watch --link-test``: a running watch sends link tests beside its stream and
says LINK DOWN once when no receipt comes within the window; the counterpart's client
answers link tests by itself, unseen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.relay_harness import TEST_ENV, RelayProcess

ROOT = Path(__file__).resolve().parents[2]


def _watch(home: Path, relay: RelayProcess, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client.cli.main", "watch", "--home", str(home), "--relay",
         relay.url, "--json", *extra],
        cwd=ROOT, env=dict(os.environ) | TEST_ENV, capture_output=True, text=True,
        timeout=180)


def test_watch_link_test_without_an_answer_says_link_down_once(
        federation: dict[str, Path], relay: RelayProcess) -> None:
    """cn.cac never runs: the watch's link test gets no receipt, and the watch reports
    link_down for cn.cac exactly once (not at every check); the test notice went through
    the relay as status test."""
    out = _watch(federation["us.caisi"], relay, "--link-test", "cn.cac", "--link-every", "1h",
                 "--link-window", "1s", "--timeout", "8")
    assert out.returncode == 0, out.stderr
    items = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    downs = [i for i in items if i.get("event") == "link_down"]
    assert [d["peer"] for d in downs] == ["cn.cac"], out.stdout
    accepted = relay.events("notice.accepted")
    assert len(accepted) == 1 and accepted[0].get("status") == "test", accepted
