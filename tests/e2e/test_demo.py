"""The README's first command: ``hotline demo`` runs the whole product and shows it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_sends_acknowledges_escalates_and_resolves() -> None:
    """The demo sets up two countries and a relay, exchanges notices, and shows one
    acknowledged notice and one escalation with its resolution."""
    out = subprocess.run([sys.executable, "-m", "client.cli.main", "demo"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "cn.cac received, verified and decrypted it" in text
    assert 'us.caisi sees the signed ack of cn.cac: "Seen.' in text
    assert "ESCALATED level 1" in text and "ESCALATED level 2" in text
    assert "RESOLVED at" in text
    assert "every signature in its status verified: True" in text
    assert "notice.escalated     level 1" in text
    assert "Traceback" not in out.stderr
