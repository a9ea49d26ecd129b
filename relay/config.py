"""The relay's configuration: one TOML file plus environment variables, validated once.

Every setting has a default. Environment variables ``HOTLINE_RELAY_<SECTION>_<KEY>``
override the file (e.g. ``HOTLINE_RELAY_LIMITS_NOTICES_PER_MINUTE=600``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keys.errors import UsageError
from keys.ids import DESK_ID_RE
from keys.report import DEFAULT_MAX_NOTICE_BYTES
from relay.policy import PolicyTable

CONFIG_NAME = "relay.toml"


@dataclass(frozen=True, slots=True)
class Limits:
    #: Largest sealed notice accepted (the envelope, attachments included).
    max_notice_bytes: int = DEFAULT_MAX_NOTICE_BYTES
    #: Largest body of any other request.
    max_small_body_bytes: int = 64 * 1024
    #: Notices one desk may submit per minute (token bucket, burst = the same number).
    notices_per_minute: int = 600
    #: Notice bytes one desk may submit per minute.
    bytes_per_minute: int = 256 * 1024 * 1024
    #: Confirmations (receipts, acks) one desk may submit per minute.
    confirmations_per_minute: int = 6000
    #: Unauthenticated challenges and sessions per source address per minute.
    auth_per_minute_per_address: int = 120
    #: Open WebSocket streams per desk.
    max_streams_per_desk: int = 8
    #: Notices one desk may have sent that some recipient has not acknowledged yet.
    max_pending_per_desk: int = 100_000
    #: Events returned by one inbox page at most.
    max_inbox_page: int = 500
    #: Bytes of events one inbox page (or one stream read) holds at most; a page always
    #: holds at least one event, so a notice larger than this comes on a page of its own.
    max_page_bytes: int = 4 * 1024 * 1024
    #: Session lifetime, seconds.
    session_ttl_s: int = 900
    #: Challenge lifetime, seconds.
    challenge_ttl_s: int = 60
    #: WebSocket heartbeat, seconds (a missed pong closes the stream).
    heartbeat_s: float = 20.0
    #: Seconds an idle keep-alive HTTP connection stays open.
    keepalive_timeout_s: float = 30.0
    #: Behind a proxy: take the client address for per-address limits from the last
    #: X-Forwarded-For entry (the one the proxy added). Only with a proxy that sets it.
    trust_forwarded_for: bool = False
    #: Seconds a connection has to send each request's headers, from the request's first
    #: byte (its first request: from the connection's opening) (slowloris).
    header_timeout_s: float = 10.0
    #: Seconds a request's whole body has to arrive (a trickled body is cut with 408).
    body_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class ContactRule:
    """Whom to notify (metadata only) when a notice to ``recipient`` escalates."""

    recipient: str  # a desk id, or "*" for every desk
    notify: tuple[str, ...]
    from_level: int = 1
    #: Skip exercise and test notices.
    real_only: bool = False


@dataclass(frozen=True, slots=True)
class Webhook:
    name: str
    url: str
    secret: bytes
    from_level: int = 1
    real_only: bool = False


@dataclass(frozen=True, slots=True)
class WitnessTarget:
    """A witness the relay sends its checkpoints to ([[log.witnesses]])."""

    url: str
    #: Its cosignature/v1 verifier key (name+id+key), as ``hotline witness show`` prints.
    vkey: str


@dataclass(frozen=True, slots=True)
class LogSettings:
    """The verifiable log ([log]): how often a checkpoint is signed while there are new
    leaves, and the witnesses asked to cosign each one."""

    checkpoint_interval_s: float = 2.0
    witness_timeout_s: float = 5.0
    witnesses: tuple[WitnessTarget, ...] = ()
    #: ``false``: no checkpoints, witnesses or leaf indices (leaves are still appended by
    #: the schema). For benchmarks and diagnosis only: desks that pin a witness policy
    #: prove nothing against such a relay. Production relays run with their log.
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class RelayConfig:
    home: Path
    relay_id: str = "hotline-relay"
    listen: str = "127.0.0.1:8750"
    #: The URL desks reach this relay at; desks sign it when they authenticate, so a
    #: signature made for one relay is useless at another.
    origin: str = ""
    #: Database: a path (SQLite) or a postgresql:// URL. Default: relay.db in the home.
    database: str = ""
    log_level: str = "info"
    #: "auto" (JSON lines, or readable console output on a terminal), "json", "console".
    log_format: str = "auto"
    #: Logger name -> level, e.g. {"relay.webhooks": "debug"} ([logging.loggers]).
    log_levels: dict[str, str] = field(default_factory=dict)
    #: Serve TLS directly (no proxy): PEM certificate chain and key, relative to the home.
    #: Both or neither; re-read on SIGHUP.
    tls_cert: str = ""
    tls_key: str = ""
    #: FULL always, except in the fault harness's negative control (OFF/NORMAL), which
    #: must show that weakened durability loses notices, or the harness is blind.
    test_only_sqlite_synchronous: str = "FULL"
    #: Never in production: answer "accepted" before the notice is committed, so that a
    #: crash loses it. The fault harness's negative control for process crashes.
    test_only_answer_before_commit: bool = False
    #: Never in production: the split-view attack, ``<country>:<leaf>`` (relay/faults.py):
    #: that country's desks are shown a forked tree. The record tests' attacker.
    test_only_split_view: str = ""
    #: Append-only JSON-lines file of escalations for operators (relative to the home).
    escalation_log: str = "escalations.jsonl"
    #: Rotate the escalation log when the next batch would take it past this size
    #: (escalations.jsonl -> .1 -> .2 ...), keeping this many rotated files.
    escalation_log_max_bytes: int = 64 * 1024 * 1024
    escalation_log_keep: int = 10
    limits: Limits = field(default_factory=Limits)
    policy: PolicyTable = field(default_factory=lambda: PolicyTable.parse(None))
    contacts: tuple[ContactRule, ...] = ()
    webhooks: tuple[Webhook, ...] = ()
    #: Operator name -> Ed25519 public key. Operators see metadata, never content.
    operators: dict[str, bytes] = field(default_factory=dict)
    log: LogSettings = field(default_factory=LogSettings)

    @property
    def escalation_log_path(self) -> Path:
        return self.home / self.escalation_log

    @property
    def tls(self) -> tuple[Path, Path] | None:
        """The certificate and key paths when the relay serves TLS itself."""
        if not self.tls_cert:
            return None
        return self.home / self.tls_cert, self.home / self.tls_key

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def database_path(self) -> str:
        return self.database or str(self.home / "relay.db")

    @property
    def effective_origin(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return self.origin or f"{scheme}://{self.listen}"


_LISTEN_RE = re.compile(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})")
_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes")
        if not isinstance(value, bool):
            raise UsageError(f"setting {name} must be true or false")
        return value
    if isinstance(default, int):
        try:
            out = int(value)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"setting {name} must be a whole number, not {value!r}") from exc
        if out <= 0:
            raise UsageError(f"setting {name} must be positive, not {out}")
        return out
    if isinstance(default, float):
        try:
            outf = float(value)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"setting {name} must be a number, not {value!r}") from exc
        if not outf > 0:
            raise UsageError(f"setting {name} must be positive, not {outf}")
        return outf
    if not isinstance(value, str):
        raise UsageError(f"setting {name} must be a string")
    return value


def load(
    home: Path, overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None
) -> RelayConfig:
    """Read ``home/relay.toml`` (if present), then the environment, then ``overrides``."""
    env = dict(os.environ) if env is None else env
    raw: dict[str, Any] = {}
    path = home / CONFIG_NAME
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path} is not valid TOML: {exc}") from exc
    top = dict(raw.get("relay", {}))
    weakened = sorted(k for k in top if k.startswith("test_only_"))
    if weakened:
        # The negative controls' durability knobs: the fault harness sets them in a child
        # relay's environment; an operator's relay.toml never weakens durability.
        raise UsageError(f"{path}: relay.{weakened[0]} is a test-only setting that loses "
                         "accepted notices; it cannot be set in relay.toml")
    lim = dict(raw.get("limits", {}))
    unknown = set(raw) - {"relay", "limits", "policy", "escalation", "operators", "webhooks",
                          "logging", "log"}
    if unknown:
        raise UsageError(f"{path}: unknown section [{sorted(unknown)[0]}]")
    for key, value in env.items():
        if key.startswith("HOTLINE_RELAY_LIMITS_"):
            lim[key.removeprefix("HOTLINE_RELAY_LIMITS_").lower()] = value
        elif key.startswith("HOTLINE_RELAY_") and key != "HOTLINE_RELAY_PASSPHRASE":
            top[key.removeprefix("HOTLINE_RELAY_").lower()] = value
    for key, value in (overrides or {}).items():
        if value is not None:
            top[key] = value
    top.update(_logging(raw.get("logging", {}), top))

    limit_fields = {f.name: f.default for f in dataclasses.fields(Limits)}
    for key in lim:
        if key not in limit_fields:
            raise UsageError(f"unknown setting limits.{key}")
    limits = Limits(**{k: _coerce(f"limits.{k}", v, limit_fields[k]) for k, v in lim.items()})

    top_fields = {
        f.name: f.default
        for f in dataclasses.fields(RelayConfig)
        if f.name not in ("home", "limits", "policy", "contacts", "webhooks", "operators",
                          "log_levels", "log")
    }
    renamed = {"id": "relay_id"}
    values: dict[str, Any] = {}
    if "log_levels" in top:
        values["log_levels"] = top.pop("log_levels")
    for raw_key, value in top.items():
        name = renamed.get(raw_key, raw_key)
        if name not in top_fields:
            raise UsageError(f"unknown setting relay.{name}")
        values[name] = _coerce(f"relay.{name}", value, top_fields[name])
    config = RelayConfig(home=home, limits=limits, policy=PolicyTable.parse(raw.get("policy")),
                         contacts=_contacts(raw.get("escalation", {})),
                         webhooks=_webhooks(raw.get("webhooks", []), env),
                         operators=_operators(raw.get("operators", {})),
                         log=_log_settings(raw.get("log", {})), **values)
    if not _LISTEN_RE.fullmatch(config.listen) or not 0 <= config.port < 65536:
        raise UsageError(f"relay.listen {config.listen!r} must be HOST:PORT (port 0: any free)")
    if not _ID_RE.fullmatch(config.relay_id):
        raise UsageError(f"relay.id {config.relay_id!r} must be 1-100 of A-Z a-z 0-9 . _ -")
    if config.test_only_sqlite_synchronous not in ("FULL", "EXTRA", "NORMAL", "OFF"):
        raise UsageError("relay.test_only_sqlite_synchronous must be FULL, EXTRA, NORMAL or OFF")
    if config.test_only_split_view and not re.fullmatch(r"[a-z0-9-]{1,40}:\d{1,12}",
                                                        config.test_only_split_view):
        raise UsageError("relay.test_only_split_view must be <country>:<leaf index>")
    if config.log_level.lower() not in LOG_LEVELS:
        raise UsageError("relay.log_level must be debug, info, warning or error")
    if config.log_format not in ("auto", "json", "console"):
        raise UsageError("logging.format must be auto, json or console")
    if bool(config.tls_cert) != bool(config.tls_key):
        raise UsageError("relay.tls_cert and relay.tls_key go together: set both or neither")
    if config.escalation_log_keep > 1000:
        raise UsageError("relay.escalation_log_keep must be at most 1000")
    if config.escalation_log_max_bytes < 4096:
        raise UsageError("relay.escalation_log_max_bytes must be at least 4096")
    if limits.max_notice_bytes < 4096:
        raise UsageError("limits.max_notice_bytes must be at least 4096")
    if limits.max_page_bytes < 64 * 1024:
        raise UsageError("limits.max_page_bytes must be at least 65536")
    for name in ("header_timeout_s", "body_timeout_s"):
        if not getattr(limits, name) > 0:
            raise UsageError(f"limits.{name} must be more than 0")
    return config


_NAME_RE = re.compile(r"[a-z0-9._-]{1,40}")
LOG_LEVELS = ("debug", "info", "warning", "error")
_LOGGER_RE = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")


def _logging(raw: Any, top: dict[str, Any]) -> dict[str, Any]:
    """The [logging] section as [relay] settings: level, format and per-logger levels."""
    if not isinstance(raw, dict):
        raise UsageError("[logging] must be a table")
    _table_keys(raw, {"level", "format", "loggers"}, "logging")
    out: dict[str, Any] = {}
    if "level" in raw:
        if "log_level" in top:
            raise UsageError("logging.level and relay.log_level both set: keep one")
        out["log_level"] = raw["level"]
    if "format" in raw:
        out["log_format"] = raw["format"]
    loggers = raw.get("loggers", {})
    if not isinstance(loggers, dict):
        raise UsageError("logging.loggers must be a table of logger name = \"level\"")
    for name, level in loggers.items():
        if not _LOGGER_RE.fullmatch(name):
            raise UsageError(f"logging.loggers: {name!r} is not a logger name like relay.webhooks")
        if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
            raise UsageError(f"logging.loggers.{name} must be debug, info, warning or error")
    if loggers:
        out["log_levels"] = {name: str(level).lower() for name, level in loggers.items()}
    return out


def _table_keys(raw: dict[str, Any], allowed: set[str], name: str) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise UsageError(f"{name}: unknown setting {sorted(unknown)[0]!r} "
                         f"(allowed: {', '.join(sorted(allowed))})")


def _level(raw: dict[str, Any], name: str) -> int:
    level = raw.get("from_level", 1)
    if type(level) is not int or not 1 <= level <= 100:
        raise UsageError(f"{name}.from_level must be a whole number from 1 to 100")
    return level


def _contacts(escalation: Any) -> tuple[ContactRule, ...]:
    if not isinstance(escalation, dict):
        raise UsageError("[escalation] must be a table")
    _table_keys(escalation, {"contacts"}, "escalation")
    rules = []
    for i, rule in enumerate(escalation.get("contacts", [])):
        name = f"escalation.contacts[{i}]"
        if not isinstance(rule, dict):
            raise UsageError(f"{name} must be a table ([[escalation.contacts]])")
        _table_keys(rule, {"recipient", "notify", "from_level", "real_only"}, name)
        recipient = rule.get("recipient", "*")
        if recipient != "*" and not DESK_ID_RE.fullmatch(str(recipient)):
            raise UsageError(f"{name}.recipient must be a desk id or '*'")
        notify = rule.get("notify")
        if not isinstance(notify, list) or not notify or not all(
                isinstance(d, str) and DESK_ID_RE.fullmatch(d) for d in notify):
            raise UsageError(f"{name}.notify must be a non-empty list of desk ids")
        real_only = rule.get("real_only", False)
        if not isinstance(real_only, bool):
            raise UsageError(f"{name}.real_only must be true or false")
        rules.append(ContactRule(recipient, tuple(notify), _level(rule, name), real_only))
    return tuple(rules)


def _log_settings(raw: Any) -> LogSettings:
    if not isinstance(raw, dict):
        raise UsageError("[log] must be a table")
    _table_keys(raw, {"enabled", "checkpoint_interval_s", "witness_timeout_s", "witnesses"},
                "log")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise UsageError("log.enabled must be true or false")
    interval = _coerce("log.checkpoint_interval_s", raw.get("checkpoint_interval_s", 2.0), 2.0)
    timeout = _coerce("log.witness_timeout_s", raw.get("witness_timeout_s", 5.0), 5.0)
    if not 0.05 <= interval <= 60:
        raise UsageError("log.checkpoint_interval_s must be between 0.05 and 60")
    if not 0 < timeout <= 60:
        raise UsageError("log.witness_timeout_s must be more than 0 and at most 60")
    items = raw.get("witnesses", [])
    if not isinstance(items, list):
        raise UsageError("log.witnesses must be an array of tables ([[log.witnesses]])")
    out = []
    for i, item in enumerate(items):
        name = f"log.witnesses[{i}]"
        if not isinstance(item, dict):
            raise UsageError(f"{name} must be a table")
        _table_keys(item, {"url", "vkey"}, name)
        url, vkey = item.get("url"), item.get("vkey")
        if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
            raise UsageError(f"{name}.url must be an http:// or https:// URL")
        if not isinstance(vkey, str):
            raise UsageError(f"{name}.vkey must be the witness's verifier key")
        from keys.checkpoint import parse_witness_vkey

        try:
            parse_witness_vkey(vkey)
        except Exception as exc:
            raise UsageError(f"{name}.vkey is not a cosignature verifier key: {exc}") from exc
        out.append(WitnessTarget(url.rstrip("/"), vkey))
    return LogSettings(float(interval), float(timeout), tuple(out), enabled)


def _webhooks(raw: Any, env: dict[str, str]) -> tuple[Webhook, ...]:
    if not isinstance(raw, list):
        raise UsageError("webhooks must be an array of tables ([[webhooks]])")
    hooks = []
    for i, hook in enumerate(raw):
        name = f"webhooks[{i}]"
        if not isinstance(hook, dict):
            raise UsageError(f"{name} must be a table")
        _table_keys(hook, {"name", "url", "secret", "secret_env", "from_level", "real_only"},
                    name)
        hook_name = hook.get("name", f"webhook-{i + 1}")
        if not isinstance(hook_name, str) or not _NAME_RE.fullmatch(hook_name):
            raise UsageError(f"{name}.name must be 1-40 of a-z 0-9 . _ -")
        url = hook.get("url")
        if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
            raise UsageError(f"{name}.url must be an http:// or https:// URL")
        if "secret_env" in hook:
            secret = env.get(str(hook["secret_env"]), "")
            if not secret:
                raise UsageError(f"{name}.secret_env names {hook['secret_env']!r}, "
                                 "which is not set")
        else:
            secret = hook.get("secret", "")
        if not isinstance(secret, str) or len(secret) < 16:
            raise UsageError(f"{name} needs a secret (or secret_env) of at least 16 characters "
                             "for its HMAC signature")
        real_only = hook.get("real_only", False)
        if not isinstance(real_only, bool):
            raise UsageError(f"{name}.real_only must be true or false")
        hooks.append(Webhook(hook_name, url, secret.encode(), _level(hook, name), real_only))
    if len({h.name for h in hooks}) != len(hooks):
        raise UsageError("webhooks: two webhooks share a name")
    return tuple(hooks)


def _operators(raw: Any) -> dict[str, bytes]:
    if not isinstance(raw, dict):
        raise UsageError("[operators] must be a table of name = \"hex public key\"")
    out = {}
    for name, key in raw.items():
        if not _NAME_RE.fullmatch(name):
            raise UsageError(f"operators: {name!r} must be 1-40 of a-z 0-9 . _ -")
        if not isinstance(key, str) or not re.fullmatch(r"[0-9a-f]{64}", key):
            raise UsageError(f"operators.{name} must be a 64-digit hex Ed25519 public key "
                             "(see 'hotline ops init')")
        out[name] = bytes.fromhex(key)
    return out


DEFAULT_FILE = """\
# Hotline relay configuration. Every setting has a default; environment variables
# HOTLINE_RELAY_<KEY> and HOTLINE_RELAY_LIMITS_<KEY> override this file.

[relay]
id = "{relay_id}"
listen = "127.0.0.1:8750"
# origin = "https://relay.example.org"   # the URL desks use; signed into every login
# database = ""                          # default: relay.db in this folder (SQLite)

[limits]
# max_notice_bytes = 8388608
# notices_per_minute = 600
# max_streams_per_desk = 8

# Deadlines per severity (defaults shown); overrides per recipient desk below.
# [policy.critical]
# ack_window = "15m"
# repeat_every = "5m"
# max_level = 10
# response_window = "4h"
# [policy.overrides."cn.cac".critical]
# ack_window = "30m"

# Who else hears of an escalation (metadata only):
# [[escalation.contacts]]
# recipient = "cn.cac"
# notify = ["cn.duty"]
# from_level = 2

# [[webhooks]]
# name = "oncall"
# url = "https://alerts.example.org/hotline"
# secret_env = "HOTLINE_WEBHOOK_SECRET"
# real_only = true

# Operators (hotline ops init prints the line to add):
# [operators]
# "ops.alice" = "<64 hex digits>"
"""
