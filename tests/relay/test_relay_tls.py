"""TLS served by the relay itself: a certificate made here, a client that trusts only
the test CA, and SIGHUP re-reading the certificate files."""

from __future__ import annotations

import datetime as dt
import signal
import socket
import ssl
import time
import urllib.request
from pathlib import Path

import pytest

from tests.relay_harness import RelayProcess, make_federation

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(path: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("Hotline test CA"))
            .issuer_name(_name("Hotline test CA")).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def make_server_cert(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], cert_path: Path,
                     key_path: Path, days: int) -> x509.Certificate:
    import ipaddress

    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1"))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert


def served_serial(port: int, ca_file: Path) -> int:
    """The serial of the certificate a new, verifying TLS connection is given."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_relay_serves_tls_that_a_client_with_the_test_ca_verifies(tmp_path: Path) -> None:
    make_federation(tmp_path, ("us.caisi", "cn.cac"))
    relay = RelayProcess.create(tmp_path)
    ca = make_ca(tmp_path / "ca.pem")
    first = make_server_cert(ca, relay.home / "tls.crt", relay.home / "tls.key", days=30)
    env = {"HOTLINE_RELAY_TLS_CERT": "tls.crt", "HOTLINE_RELAY_TLS_KEY": "tls.key"}
    relay.start(extra_env=env)
    try:
        listening = relay.events("relay.listening")[0]
        assert listening["tls"] is True
        assert listening["origin"] == f"https://127.0.0.1:{relay.port}"
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        url = f"https://127.0.0.1:{relay.port}"
        with urllib.request.urlopen(url + "/healthz", context=ctx, timeout=10) as reply:  # noqa: S310
            assert reply.status == 200
        with urllib.request.urlopen(url + "/metrics", context=ctx, timeout=10) as reply:  # noqa: S310
            metrics = reply.read().decode()
        assert gauge(metrics, "hotline_tls_certificate_expiry_timestamp_seconds") == \
            first.not_valid_after_utc.timestamp()
        # Without the CA the certificate is not trusted; plain HTTP is not served.
        with pytest.raises(ssl.SSLCertVerificationError):
            served_serial(relay.port, Path(ssl.get_default_verify_paths().cafile or "/dev/null"))
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{relay.port}/healthz", timeout=5)
        assert served_serial(relay.port, tmp_path / "ca.pem") == first.serial_number

        # A renewed certificate: SIGHUP, and new connections get it.
        second = make_server_cert(ca, relay.home / "tls.crt", relay.home / "tls.key", days=60)
        assert relay.proc is not None
        relay.proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: relay.events("tls.reloaded"))
        assert served_serial(relay.port, tmp_path / "ca.pem") == second.serial_number

        # A broken reload (a new certificate, its key not copied yet) keeps serving the
        # current certificate with its key: new connections still succeed.
        make_server_cert(ca, relay.home / "tls.crt", tmp_path / "other.key", days=90)
        relay.proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: relay.events("tls.reload_failed"))
        assert "relay.tls_cert" in relay.events("tls.reload_failed")[0]["error"]
        assert served_serial(relay.port, tmp_path / "ca.pem") == second.serial_number
    finally:
        relay.stop()


def gauge(text: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not exported")


def _wait_for(cond: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting for the relay's log line"
        time.sleep(0.05)
