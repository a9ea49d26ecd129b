"""The relay configuration's [log] section (relay/config.py) and the split-view fault
switch, which only the environment can set."""

from __future__ import annotations

from pathlib import Path

import nacl.signing
import pytest

from keys.checkpoint import Cosigner
from keys.errors import UsageError
from relay import config as config_mod

WITNESS = Cosigner("witness.cn/w1", nacl.signing.SigningKey(bytes([7]) * 32)).vkey()


def _load(tmp_path: Path, toml: str, env: dict[str, str] | None = None
          ) -> config_mod.RelayConfig:
    (tmp_path / "relay.toml").write_text(toml)
    return config_mod.load(tmp_path, env=env or {})


def test_log_defaults_without_a_section(tmp_path: Path) -> None:
    log = _load(tmp_path, "").log
    assert (log.enabled, log.checkpoint_interval_s, log.witness_timeout_s, log.witnesses) == (
        True, 2.0, 5.0, ())


def test_log_section_with_witnesses(tmp_path: Path) -> None:
    log = _load(tmp_path, f"""
[log]
checkpoint_interval_s = 0.5
witness_timeout_s = 3
[[log.witnesses]]
url = "https://witness.example.org/"
vkey = "{WITNESS}"
""").log
    assert log.checkpoint_interval_s == 0.5 and log.witness_timeout_s == 3.0
    assert [(w.url, w.vkey) for w in log.witnesses] == [("https://witness.example.org",
                                                         WITNESS)]


def test_log_can_be_disabled_for_benchmarks(tmp_path: Path) -> None:
    assert _load(tmp_path, "[log]\nenabled = false\n").log.enabled is False


@pytest.mark.parametrize(("toml", "message"), [
    ("[log]\nenabled = \"no\"\n", "log.enabled must be true or false"),
    ("[log]\ncheckpoint_interval_s = 0.01\n", "between 0.05 and 60"),
    ("[log]\ncheckpoint_interval_s = 61\n", "between 0.05 and 60"),
    ("[log]\ncheckpoint_interval_s = \"soon\"\n", "must be a number"),
    ("[log]\nwitness_timeout_s = 120\n", "at most 60"),
    ("[log]\nwitness_timeout_s = -1\n", "must be positive"),
    ("[log]\ninterval = 2\n", "log: unknown setting 'interval'"),
    ("[log]\nwitnesses = \"w\"\n", "array of tables"),
    ("[[log.witnesses]]\nurl = \"ftp://w\"\nvkey = \"x\"\n", "log.witnesses[0].url"),
    ("[[log.witnesses]]\nurl = \"https://w\"\n", "log.witnesses[0].vkey must be"),
    ("[[log.witnesses]]\nurl = \"https://w\"\nvkey = \"not+a+key\"\n",
     "log.witnesses[0].vkey is not a cosignature verifier key"),
    (f"[[log.witnesses]]\nurl = \"https://w\"\nvkey = \"{WITNESS}\"\nname = \"x\"\n",
     "log.witnesses[0]: unknown setting 'name'"),
    ("log = 3\n", "[log] must be a table"),
])
def test_bad_log_settings_are_refused_by_name(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        _load(tmp_path, toml)
    assert message in exc.value.message


def test_split_view_is_test_only_from_the_environment_never_relay_toml(tmp_path: Path
                                                                      ) -> None:
    cfg = _load(tmp_path, "", env={"HOTLINE_RELAY_TEST_ONLY_SPLIT_VIEW": "cn:4"})
    assert cfg.test_only_split_view == "cn:4"
    assert _load(tmp_path, "").test_only_split_view == ""
    with pytest.raises(UsageError, match="test-only setting"):
        _load(tmp_path, "[relay]\ntest_only_split_view = \"cn:4\"\n")
    with pytest.raises(UsageError, match="<country>:<leaf index>"):
        _load(tmp_path, "", env={"HOTLINE_RELAY_TEST_ONLY_SPLIT_VIEW": "cn"})
