"""Deadline policy: the DESIGN.md defaults, the ladder arithmetic, and configuration refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from keys.errors import UsageError
from relay import config as config_mod
from relay.policy import (
    DEFAULTS,
    HOUR,
    MINUTE,
    SECOND,
    Policy,
    PolicyTable,
    levels_due,
    next_escalation,
)

D = 1_000_000  # an arbitrary deadline (ms)
R = 5 * MINUTE
M = 4


# --------------------------------------------------------------------------- defaults


def test_defaults_match_design_table() -> None:
    """The built-in windows are exactly DESIGN.md's table, with the first level plus 9 repeats."""
    assert DEFAULTS == {
        "critical": Policy(15 * MINUTE, 5 * MINUTE, 10, 4 * HOUR),
        "high": Policy(1 * HOUR, 30 * MINUTE, 10, 24 * HOUR),
        "medium": Policy(24 * HOUR, 6 * HOUR, 10, 72 * HOUR),
        "low": Policy(72 * HOUR, 24 * HOUR, 10, None),
    }


def test_empty_policy_section_yields_defaults_for_every_desk() -> None:
    """With no [policy] section every severity, for any desk, gets the default policy."""
    raws: tuple[dict[str, Any] | None, ...] = (None, {})
    for raw in raws:
        table = PolicyTable.parse(raw)
        assert table.overrides == {}
        for severity, policy in DEFAULTS.items():
            assert table.for_recipient("cn.cac", severity) == policy


def test_policy_wire_round_trip() -> None:
    """A policy frozen with a notice reads back identically, including 'no response window'."""
    for policy in DEFAULTS.values():
        assert Policy.from_wire(policy.to_wire()) == policy


# --------------------------------------------------------------------------- the ladder


@pytest.mark.parametrize(("now", "expected"), [
    (D - R, 0),
    (D - 1, 0),            # one tick before the deadline
    (D, 1),                # at the deadline
    (D + 1, 1),            # just after
    (D + R - 1, 1),        # one tick before the first repeat
    (D + R, 2),            # first repeat
    (D + 2 * R - 1, 2),
    (D + 2 * R, 3),
    (D + 3 * R - 1, 3),
    (D + 3 * R, 4),        # the last level
    (D + 4 * R, 4),        # capped at max_level
    (D + 1000 * R, 4),
])
def test_levels_due_around_deadline_and_repeats(now: int, expected: int) -> None:
    """levels_due counts 0 before the deadline, 1 at it, +1 at each repeat, capped at max."""
    assert levels_due(D, R, M, now) == expected


def test_next_escalation_at_each_level_until_max() -> None:
    """Level k+1 falls due at deadline + k * repeat, and there is none after max_level."""
    assert [next_escalation(D, R, M, level) for level in range(M + 2)] == [
        D, D + R, D + 2 * R, D + 3 * R, None, None]


def test_levels_due_and_next_escalation_agree() -> None:
    """At every instant, the level due is the number of next_escalation times already passed."""
    for now in range(D - 2, D + 6 * R, R // 4):
        for probe in (now - 1, now, now + 1):
            passed = 0
            while (at := next_escalation(D, R, M, passed)) is not None and at <= probe:
                passed += 1
            assert levels_due(D, R, M, probe) == passed, probe


def test_max_level_one_fires_once() -> None:
    """With max_level 1 there is a single escalation at the deadline and no repeat."""
    assert levels_due(D, R, 1, D - 1) == 0
    assert levels_due(D, R, 1, D + 100 * R) == 1
    assert next_escalation(D, R, 1, 0) == D
    assert next_escalation(D, R, 1, 1) is None


# --------------------------------------------------------------------------- parsing


def test_parse_durations_and_settings() -> None:
    """Durations in ms/s/m/h/d or plain seconds parse, and unspecified settings keep defaults."""
    table = PolicyTable.parse({
        "critical": {"ack_window": "90s", "repeat_every": 60, "max_level": 3},
        "high": {"response_window": "none"},
        "medium": {"ack_window": "1000ms", "repeat_every": "2d"},
        "low": {"response_window": "12h"},
    })
    assert table.by_severity["critical"] == Policy(90 * SECOND, 60 * SECOND, 3, 4 * HOUR)
    assert table.by_severity["high"] == Policy(HOUR, 30 * MINUTE, 10, None)
    assert table.by_severity["medium"] == Policy(SECOND, 48 * HOUR, 10, 72 * HOUR)
    assert table.by_severity["low"] == Policy(72 * HOUR, 24 * HOUR, 10, 12 * HOUR)


@pytest.mark.parametrize(("raw", "fragments"), [
    ({"critical": {"ack_window": -5}}, ("policy.critical.ack_window", "at least one second")),
    ({"critical": {"ack_window": "-5m"}}, ("policy.critical.ack_window", "duration")),
    ({"critical": {"repeat_every": -1}}, ("policy.critical.repeat_every",)),
    ({"high": {"ack_window": 0}}, ("policy.high.ack_window", "at least one second")),
    ({"high": {"ack_window": "0s"}}, ("policy.high.ack_window", "at least one second")),
    ({"high": {"repeat_every": "0m"}}, ("policy.high.repeat_every", "at least one second")),
    ({"medium": {"ack_window": "999ms"}}, ("policy.medium.ack_window", "at least one second")),
    ({"medium": {"repeat_every": 0.5}}, ("policy.medium.repeat_every", "at least one second")),
    ({"low": {"response_window": "500ms"}}, ("policy.low.response_window", "one second")),
    ({"critical": {"ack_window": "15 minutes"}}, ("policy.critical.ack_window", "duration")),
    ({"critical": {"ack_window": True}}, ("policy.critical.ack_window", "duration")),
    ({"urgent": {"ack_window": "1m"}}, ("policy.urgent", "unknown severity")),
    ({"critical": {"ack_windw": "1m"}}, ("policy.critical", "unknown setting", "ack_windw")),
    ({"critical": "15m"}, ("policy.critical", "table")),
    ({"critical": {"max_level": 0}}, ("policy.critical.max_level", "1 to 100")),
    ({"critical": {"max_level": -3}}, ("policy.critical.max_level",)),
    ({"critical": {"max_level": 101}}, ("policy.critical.max_level",)),
    ({"critical": {"max_level": "3"}}, ("policy.critical.max_level",)),
    ({"critical": {"max_level": True}}, ("policy.critical.max_level",)),
    ({"overrides": {"CN.CAC": {"critical": {}}}}, ("policy.overrides", "'CN.CAC'", "desk id")),
    ({"overrides": {"cac": {"critical": {}}}}, ("policy.overrides", "'cac'", "desk id")),
    ({"overrides": {"cn.cac": "x"}}, ("policy.overrides.cn.cac",)),
    ({"overrides": {"cn.cac": {"urgent": {}}}}, ("policy.overrides.cn.cac.urgent",
                                                 "unknown severity")),
    ({"overrides": {"cn.cac": {"critical": {"max_level": 0}}}},
     ("policy.overrides.cn.cac.critical.max_level",)),
    ({"overrides": {"cn.cac": {"critical": {"ack_window": "0s"}}}},
     ("policy.overrides.cn.cac.critical.ack_window",)),
    ({"overrides": ["cn.cac"]}, ("policy.overrides",)),
])
def test_parse_refuses_with_a_message_naming_the_setting(raw: dict[str, Any],
                                                         fragments: tuple[str, ...]) -> None:
    """A bad [policy] value raises UsageError whose message names the setting and the problem."""
    with pytest.raises(UsageError) as info:
        PolicyTable.parse(raw)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_one_second_is_the_shortest_window() -> None:
    """Exactly one second is accepted as a window (the refusal boundary is below it)."""
    table = PolicyTable.parse({"critical": {"ack_window": "1000ms", "repeat_every": "1s"}})
    assert table.by_severity["critical"].ack_window_ms == SECOND
    assert table.by_severity["critical"].repeat_ms == SECOND


def test_override_applies_only_to_that_desk_and_severity() -> None:
    """A per-desk override changes that desk's policy for that severity and nothing else."""
    table = PolicyTable.parse({
        "critical": {"repeat_every": "2m"},
        "overrides": {"cn.cac": {"critical": {"ack_window": "30m", "max_level": 2}}},
    })
    # The override inherits unspecified settings from the configured severity, not DEFAULTS.
    assert table.for_recipient("cn.cac", "critical") == Policy(30 * MINUTE, 2 * MINUTE, 2,
                                                                4 * HOUR)
    assert table.for_recipient("cn.mss", "critical") == Policy(15 * MINUTE, 2 * MINUTE, 10,
                                                                4 * HOUR)
    assert table.for_recipient("cn.cac", "high") == DEFAULTS["high"]
    assert table.for_recipient("us.caisi", "low") == DEFAULTS["low"]


# --------------------------------------------------------------------------- relay.toml


def _load(tmp_path: Path, toml: str, env: dict[str, str] | None = None
          ) -> config_mod.RelayConfig:
    (tmp_path / "relay.toml").write_text(toml)
    return config_mod.load(tmp_path, env=env or {})


def test_load_reads_policy_contacts_webhooks_and_operators(tmp_path: Path) -> None:
    """A valid relay.toml yields the policy table, contact rules, webhooks and operators."""
    key = "ab" * 32
    cfg = _load(tmp_path, f"""
[policy.critical]
ack_window = "2s"
repeat_every = "1s"
max_level = 2

[policy.overrides."cn.cac".high]
ack_window = "10m"

[[escalation.contacts]]
recipient = "cn.cac"
notify = ["cn.mss"]
from_level = 2
real_only = true

[[webhooks]]
name = "oncall"
url = "http://127.0.0.1:9/hook"
secret = "0123456789abcdef"
real_only = true

[[webhooks]]
url = "https://alerts.example.org/x"
secret_env = "HOOK_SECRET"
from_level = 3

[operators]
"ops.test" = "{key}"
""", env={"HOOK_SECRET": "s" * 20})
    assert cfg.policy.by_severity["critical"] == Policy(2 * SECOND, SECOND, 2, 4 * HOUR)
    assert cfg.policy.for_recipient("cn.cac", "high").ack_window_ms == 10 * MINUTE
    assert cfg.policy.for_recipient("cn.mss", "high") == DEFAULTS["high"]
    assert cfg.contacts == (config_mod.ContactRule("cn.cac", ("cn.mss",), 2, True),)
    assert cfg.webhooks == (
        config_mod.Webhook("oncall", "http://127.0.0.1:9/hook", b"0123456789abcdef", 1, True),
        config_mod.Webhook("webhook-2", "https://alerts.example.org/x", b"s" * 20, 3, False),
    )
    assert cfg.operators == {"ops.test": bytes.fromhex(key)}


GOOD_HOOK = 'url = "http://127.0.0.1:9/hook"\nsecret = "0123456789abcdef"\n'


@pytest.mark.parametrize(("toml", "fragments"), [
    # [[webhooks]]
    ('[[webhooks]]\nurl = "http://127.0.0.1:9/hook"\n', ("webhooks[0]", "secret")),
    ('[[webhooks]]\nurl = "http://127.0.0.1:9/hook"\nsecret = "short"\n',
     ("webhooks[0]", "secret", "16")),
    ('[[webhooks]]\nurl = "http://127.0.0.1:9/hook"\nsecret = 1234567890123456789\n',
     ("webhooks[0]", "secret")),
    ('[[webhooks]]\nurl = "http://127.0.0.1:9/hook"\nsecret_env = "NOT_SET_ANYWHERE"\n',
     ("webhooks[0].secret_env", "NOT_SET_ANYWHERE")),
    ('[[webhooks]]\nurl = "ftp://example.org/x"\nsecret = "0123456789abcdef"\n',
     ("webhooks[0].url",)),
    ('[[webhooks]]\nurl = "example.org/hook"\nsecret = "0123456789abcdef"\n',
     ("webhooks[0].url",)),
    ('[[webhooks]]\nsecret = "0123456789abcdef"\n', ("webhooks[0].url",)),
    ('[[webhooks]]\n' + GOOD_HOOK + 'urll = "x"\n', ("webhooks[0]", "unknown setting", "urll")),
    ('[[webhooks]]\n' + GOOD_HOOK + 'name = "On Call"\n', ("webhooks[0].name",)),
    ('[[webhooks]]\n' + GOOD_HOOK + 'from_level = 0\n', ("webhooks[0].from_level",)),
    ('[[webhooks]]\n' + GOOD_HOOK + 'real_only = "yes"\n', ("webhooks[0].real_only",)),
    ('[[webhooks]]\n' + GOOD_HOOK + '[[webhooks]]\n' + GOOD_HOOK.replace("hook", "hook2")
     + 'name = "bad"\n[[webhooks]]\nurl = "nope"\nsecret = "0123456789abcdef"\n',
     ("webhooks[2].url",)),
    ('[[webhooks]]\n' + GOOD_HOOK + 'name = "a"\n[[webhooks]]\n' + GOOD_HOOK + 'name = "a"\n',
     ("webhooks", "share a name")),
    ('webhooks = "http://x"\n', ("webhooks", "array")),
    # [[escalation.contacts]]
    ('[[escalation.contacts]]\nrecipient = "cn.cac"\n', ("escalation.contacts[0].notify",)),
    ('[[escalation.contacts]]\nrecipient = "cn.cac"\nnotify = []\n',
     ("escalation.contacts[0].notify", "non-empty")),
    ('[[escalation.contacts]]\nrecipient = "cn.cac"\nnotify = ["MSS"]\n',
     ("escalation.contacts[0].notify", "desk ids")),
    ('[[escalation.contacts]]\nrecipient = "cn.cac"\nnotify = "cn.mss"\n',
     ("escalation.contacts[0].notify",)),
    ('[[escalation.contacts]]\nrecipient = "CAC"\nnotify = ["cn.mss"]\n',
     ("escalation.contacts[0].recipient",)),
    ('[[escalation.contacts]]\nnotify = ["cn.mss"]\nfrom_level = 0\n',
     ("escalation.contacts[0].from_level",)),
    ('[[escalation.contacts]]\nnotify = ["cn.mss"]\nreal_only = 1\n',
     ("escalation.contacts[0].real_only",)),
    ('[[escalation.contacts]]\nnotify = ["cn.mss"]\nnotfy = ["cn.mss"]\n',
     ("escalation.contacts[0]", "unknown setting", "notfy")),
    ('[[escalation.contacts]]\nnotify = ["cn.mss"]\n[[escalation.contacts]]\nnotify = []\n',
     ("escalation.contacts[1].notify",)),
    ('[escalation]\ncontact = 1\n', ("escalation", "unknown setting", "contact")),
    # [operators]
    ('[operators]\n"Ops.Alice" = "' + "ab" * 32 + '"\n', ("operators", "'Ops.Alice'")),
    ('[operators]\n"ops.alice" = "abcd"\n', ("operators.ops.alice", "64-digit hex")),
    ('[operators]\n"ops.alice" = "' + "AB" * 32 + '"\n', ("operators.ops.alice", "hex")),
    ('[operators]\n"ops.alice" = 12\n', ("operators.ops.alice",)),
    ('operators = ["ops.alice"]\n', ("[operators]", "table")),
    # [policy] through the file
    ('[policy.critical]\nack_window = "0s"\n', ("policy.critical.ack_window",)),
    ('[policy.critical]\nmax_level = 0\n', ("policy.critical.max_level",)),
    ('[policy.overrides."not a desk".critical]\nack_window = "1m"\n',
     ("policy.overrides", "'not a desk'")),
    ('[polcy.critical]\nack_window = "1m"\n', ("unknown section", "polcy")),
])
def test_load_refuses_bad_sections_naming_the_setting(tmp_path: Path, toml: str,
                                                      fragments: tuple[str, ...]) -> None:
    """relay.config.load refuses a bad [[webhooks]], [[escalation.contacts]], [operators] or
    [policy] entry with a UsageError whose message names the offending setting."""
    with pytest.raises(UsageError) as info:
        _load(tmp_path, toml)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
