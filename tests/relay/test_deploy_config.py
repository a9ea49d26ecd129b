"""The deployment files stay in step with the relay's configuration loader."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from keys.errors import UsageError
from relay import config

ROOT = Path(__file__).resolve().parents[2]


def test_example_configuration_loads(tmp_path: Path) -> None:
    """deploy/relay.toml.example is a valid configuration with the documented override."""
    shutil.copy(ROOT / "deploy" / "relay.toml.example", tmp_path / "relay.toml")
    cfg = config.load(tmp_path, env={"HOTLINE_WEBHOOK_SECRET": "a" * 32})
    assert cfg.policy.for_recipient("cn.cac", "critical").ack_window_ms == 30 * 60 * 1000
    assert cfg.policy.for_recipient("us.caisi", "critical").ack_window_ms == 15 * 60 * 1000
    assert [h.name for h in cfg.webhooks] == ["alertmanager"]


def test_example_configuration_needs_its_webhook_secret(tmp_path: Path) -> None:
    """Without the secret the example names, the relay refuses to start and says which."""
    shutil.copy(ROOT / "deploy" / "relay.toml.example", tmp_path / "relay.toml")
    with pytest.raises(UsageError, match="HOTLINE_WEBHOOK_SECRET"):
        config.load(tmp_path, env={})
