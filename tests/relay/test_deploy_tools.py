"""deploy/ checked by the tools operators use: systemd-analyze, promtool, nginx -t, the
compose specification's JSON schema, and a live relay's /metrics for the dashboards.

The tools come from Debian's packages (systemd, prometheus, nginx), installed by .ci/run;
a missing tool skips its test with the reason. What cannot run here is checked
statically and says so: the container build (no container engine on the CI machine).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from keys import FederationRoot
from relay.config import Limits
from tests.relay_harness import RelayProcess, make_federation

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DATA = Path(__file__).resolve().parent / "data"


def tool(name: str, package: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                  else None)
    if path is None:
        pytest.skip(f"SKIPPED LOUDLY: {name} is not installed (Debian package {package!r}; "
                    ".ci/run installs it): this deployment check did not run")
    return path


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=120,
                          check=False)


# --------------------------------------------------------------------------- systemd

def _unit_with_real_binary(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's hotline (verify checks that
    the program exists and is executable)."""
    hotline = Path(sys.executable).parent / "hotline"
    assert hotline.exists(), "the project is installed (pip install -e .) with its script"
    unit = tmp_path / "hotline-relay.service"
    unit.write_text((DEPLOY / "hotline-relay.service").read_text()
                    .replace("/opt/hotline/venv/bin/hotline", str(hotline)))
    return unit


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    exe = tool("systemd-analyze", "systemd")
    result = run(exe, "verify", str(_unit_with_real_binary(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "hotline-relay.service" not in result.stderr, result.stderr  # no warnings either


def test_systemd_unit_exposure_is_at_most_1_5(tmp_path: Path) -> None:
    """``systemd-analyze security`` rates the unit 1.1 (the unhardened one: 8.5)."""
    exe = tool("systemd-analyze", "systemd")
    unit = _unit_with_real_binary(tmp_path)
    result = run(exe, "security", "--offline=true", "--threshold=15", str(unit))
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert score is not None, result.stdout + result.stderr
    assert result.returncode == 0, f"exposure {score.group(1)} is above 1.5:\n{result.stdout}"


def test_systemd_unit_passes_the_passphrase_as_a_credential() -> None:
    unit = (DEPLOY / "hotline-relay.service").read_text()
    assert "LoadCredential=relay-passphrase:" in unit
    assert "--passphrase-file %d/relay-passphrase" in unit
    for directive in ("User=hotline", "NoNewPrivileges=true", "ProtectSystem=strict",
                      "ProtectHome=true", "PrivateTmp=true", "PrivateDevices=true",
                      "ProtectKernelTunables=true", "ProtectKernelModules=true",
                      "ProtectKernelLogs=true", "RestrictAddressFamilies=",
                      "SystemCallFilter=@system-service", "MemoryDenyWriteExecute=true",
                      "StateDirectory=hotline-relay"):
        assert re.search(rf"^{re.escape(directive)}", unit, re.M), directive


def test_sysusers_and_tmpfiles_snippets_apply(tmp_path: Path) -> None:
    """systemd-sysusers creates the user and systemd-tmpfiles the folders, in a scratch
    root (which needs root: they chown)."""
    sysusers = tool("systemd-sysusers", "systemd")
    tmpfiles = tool("systemd-tmpfiles", "systemd")
    if not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: sysusers/tmpfiles into a scratch root need root (chown)")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    result = run(sysusers, f"--root={root}", str(DEPLOY / "hotline-relay.sysusers"))
    assert result.returncode == 0, result.stderr
    assert re.search(r"^hotline:x:\d+:\d+:Hotline notice relay:/var/lib/hotline-relay:",
                     (root / "etc/passwd").read_text(), re.M)
    result = run(tmpfiles, "--create", f"--root={root}", str(DEPLOY / "hotline-relay.tmpfiles"))
    assert result.returncode == 0, result.stderr
    assert oct((root / "etc/hotline").stat().st_mode & 0o777) == "0o750"


# --------------------------------------------------------------------------- Prometheus

def test_alert_rules_pass_promtool_check_rules() -> None:
    result = run(tool("promtool", "prometheus"), "check", "rules", str(DEPLOY / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_fires_in_promtool_unit_tests() -> None:
    """alerts.test.yml fires each alert of alerts.yml from synthetic series."""
    import yaml

    result = run(tool("promtool", "prometheus"), "test", "rules",
                 str(DATA / "alerts.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((DATA / "alerts.test.yml").read_text())
    fired = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"]
             if t["exp_alerts"]}
    assert alerts - fired == set(), "alerts no unit test fires"
    wanted = {"HotlineEscalationsFiring", "HotlineNoticesOverdue", "HotlineSchedulerBehind",
              "HotlineWebhookFailing", "HotlineRelayNotReady", "HotlineTLSCertificateExpiringSoon",
              "HotlineFederationRootExpiringSoon", "HotlineDiskFilling"}
    assert wanted <= alerts


def test_prometheus_scrape_configuration_passes_promtool_check_config() -> None:
    result = run(tool("promtool", "prometheus"), "check", "config",
                 str(DEPLOY / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """/metrics of a real relay process, as Prometheus would scrape it."""
    base = tmp_path_factory.mktemp("live")
    make_federation(base, ("us.caisi", "cn.cac"))
    proc = RelayProcess.create(base)
    proc.start()
    try:
        deadline = time.monotonic() + 30
        while True:  # the first readiness check runs just after the relay starts listening
            with urllib.request.urlopen(proc.url + "/metrics", timeout=10) as reply:  # noqa: S310
                text = reply.read().decode()
            if "\nhotline_ready 1.0\n" in text or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        root = FederationRoot.decode((proc.home / "root").read_bytes())
        yield text + f"# root expires_at {root.expires_at}\n"
    finally:
        proc.stop()


def exported_names(text: str) -> set[str]:
    """Every series name the exposition can carry: gauges as named, counters with _total,
    histograms with _bucket/_sum/_count (from # TYPE, so label-less families count too)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if kind == "counter":  # the text format names counters with their _total already
            name = name.removesuffix("_total")
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                    "summary": ("", "_sum", "_count")}.get(kind, ("",))
        names.update(name + s for s in suffixes)
    return names


def referenced_names(expr: str) -> set[str]:
    return set(re.findall(r"\bhotline_[a-z0-9_]+", expr))


def test_live_relay_metrics_pass_promtool_check_metrics(live_metrics: str) -> None:
    result = run(tool("promtool", "prometheus"), "check", "metrics", stdin=live_metrics)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("hotline_ready", "hotline_federation_root_expiry_timestamp_seconds",
                 "hotline_data_filesystem_avail_bytes", "hotline_data_filesystem_size_bytes",
                 "hotline_tls_certificate_expiry_timestamp_seconds"):
        assert name in exported_names(live_metrics), name


def test_live_relay_reports_ready_and_its_root_expiry(live_metrics: str) -> None:
    assert "\nhotline_ready 1.0\n" in live_metrics
    expires_ms = int(re.findall(r"# root expires_at (\d+)", live_metrics)[0])
    value = re.search(r"^hotline_federation_root_expiry_timestamp_seconds (\S+)$",
                      live_metrics, re.M)
    assert value is not None and float(value.group(1)) == expires_ms / 1000
    assert re.search(r"^hotline_data_filesystem_avail_bytes [1-9]", live_metrics, re.M)


def test_alert_rules_use_only_exported_metrics(live_metrics: str) -> None:
    import yaml

    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    used = set().union(*(referenced_names(r["expr"]) for g in rules["groups"]
                         for r in g["rules"]))
    assert used, "the rules reference relay metrics"
    assert used - exported_names(live_metrics) == set()


def test_grafana_dashboard_queries_use_exported_metrics(live_metrics: str) -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert all(referenced_names(e) for e in exprs), "every query reads a relay metric"
    used = set().union(*(referenced_names(e) for e in exprs))
    assert used - exported_names(live_metrics) == set()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"


# --------------------------------------------------------------------------- compose

def _compose() -> dict[str, object]:
    import yaml

    loaded: dict[str, object] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def _schema_errors(doc: object) -> list[str]:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((DATA / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_matches_the_compose_specification_schema() -> None:
    assert _schema_errors(_compose()) == []


def test_compose_schema_check_catches_a_misspelt_key() -> None:
    """The validator is not vacuous: a typo in a service is reported."""
    doc = _compose()
    services = doc["services"]
    assert isinstance(services, dict)
    services["relay"]["read_onyl"] = True
    assert any("read_onyl" in e for e in _schema_errors(doc))


def test_compose_profiles_and_hardening() -> None:
    doc = _compose()
    services = doc["services"]
    assert isinstance(services, dict)
    assert services["relay"]["profiles"] == ["sqlite"]
    for name in ("postgres", "relay-a", "relay-b", "proxy"):
        assert services[name]["profiles"] == ["postgres"], name
    for name in ("relay", "relay-a", "relay-b"):
        svc = services[name]
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
        assert not str(svc["user"]).startswith("0"), name
        assert "healthz" in " ".join(svc["healthcheck"]["test"]), name
    for name in ("relay-a", "relay-b"):
        assert services[name]["environment"]["HOTLINE_DB"].startswith("postgresql://")
    assert "# witness-us:" in (DEPLOY / "compose.yaml").read_text()


# --------------------------------------------------------------------------- nginx

def _nginx_prefix(tmp_path: Path, site: str) -> Path:
    """A scratch nginx prefix: a self-signed certificate, the common include, and the
    site file with its certificate paths and upstream hosts pointed at the scratch ones."""
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    key, cert = prefix / "privkey.pem", prefix / "fullchain.pem"
    made = run(tool("openssl", "openssl"), "req", "-x509", "-newkey", "ec",
               "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
               "-subj", "/CN=hotline.example.org", "-keyout", str(key), "-out", str(cert))
    assert made.returncode == 0, made.stderr
    text = (DEPLOY / site).read_text()
    text = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};", text)
    text = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};", text)
    text = text.replace("/etc/nginx/nginx-hotline-common.conf", str(prefix / "common.conf"))
    # Compose service names do not resolve here; nginx -t resolves upstream hosts.
    text = re.sub(r"server relay-[ab]:8750", "server 127.0.0.1:8750", text)
    (prefix / "site.conf").write_text(text)
    shutil.copy(DEPLOY / "nginx-hotline-common.conf", prefix / "common.conf")
    (prefix / "nginx.conf").write_text(
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log;\n"
        "events {}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {prefix}/body;\n"
        f"  proxy_temp_path {prefix}/proxy;\n  fastcgi_temp_path {prefix}/fastcgi;\n"
        f"  uwsgi_temp_path {prefix}/uwsgi;\n  scgi_temp_path {prefix}/scgi;\n"
        f"  include {prefix}/site.conf;\n}}\n")
    return prefix


@pytest.mark.parametrize("site", ["nginx.conf", "nginx-cluster.conf"])
def test_proxy_configuration_passes_nginx_t(tmp_path: Path, site: str) -> None:
    nginx = tool("nginx", "nginx")
    prefix = _nginx_prefix(tmp_path, site)
    result = run(nginx, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf"))
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def _duration_s(text: str, directive: str) -> float:
    match = re.search(rf"^\s*{directive}\s+(\d+)s;", text, re.M)
    assert match is not None, directive
    return float(match.group(1))


def test_proxy_limits_match_the_relays() -> None:
    """The proxy cuts slow headers when the relay would, passes the largest notice the
    relay accepts (and little more), and outlives the stream heartbeat."""
    limits = Limits()
    common = (DEPLOY / "nginx-hotline-common.conf").read_text()
    assert _duration_s(common, "client_header_timeout") == limits.header_timeout_s
    assert _duration_s(common, "keepalive_timeout") == limits.keepalive_timeout_s
    body = re.search(r"client_max_body_size\s+(\d+)m;", common)
    assert body is not None
    assert limits.max_notice_bytes < int(body.group(1)) * 2**20 <= limits.max_notice_bytes * 1.25
    assert _duration_s(common, "proxy_read_timeout") > 2 * limits.heartbeat_s
    for site in ("nginx.conf", "nginx-cluster.conf"):
        assert not re.search(r"^\s*http2\s", (DEPLOY / site).read_text(), re.M), \
            "the http2 directive needs nginx 1.25.1 (Debian 12 has 1.22)"
        assert "nginx-hotline-common.conf" in (DEPLOY / site).read_text()


# --------------------------------------------------------------------------- container

def test_containerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    """STATIC CHECK ONLY: no container engine runs on the CI machine, so the image is not
    built here. The Containerfile is parsed: several stages, the last one running as a
    non-root user, a HEALTHCHECK on /healthz, nothing written outside the volume."""
    lines = []
    for raw in re.sub(r"\\\n", " ", (DEPLOY / "Containerfile").read_text()).splitlines():
        if raw.strip() and not raw.lstrip().startswith("#"):
            lines.append(raw.strip())
    stages = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert len(stages) >= 2, "multi-stage"
    final = lines[stages[-1]:]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    health = [line for line in final if line.upper().startswith("HEALTHCHECK ")]
    assert health and "/healthz" in health[0]
    assert any(line.startswith("COPY --from=") for line in final), "the run stage copies"
    assert not any(line.upper().startswith("RUN pip") for line in final)
    volumes = [line for line in final if line.upper().startswith("VOLUME ")]
    assert volumes and "/var/lib/hotline-relay" in volumes[0]
    assert any("PYTHONDONTWRITEBYTECODE=1" in line for line in final), \
        "no .pyc writes on a read-only root filesystem"
