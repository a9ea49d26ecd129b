"""TLS served by the relay itself, for operators without a proxy in front.

The certificate and key are PEM files named in the configuration (relay.tls_cert,
relay.tls_key). SIGHUP re-reads them: new connections get the new certificate, open ones
keep theirs. A reload that fails (a missing file, a key that does not match) changes
nothing and is reported; the relay keeps serving the certificate it had.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from keys.errors import UsageError


def _load(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        which = "relay.tls_key" if Path(exc.filename or "") == key else "relay.tls_cert"
        raise UsageError(f"{which}: {exc.filename or cert} does not exist") from exc
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"relay.tls_cert / relay.tls_key: cannot load {cert} with {key}: "
                         f"{exc}") from exc


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context (TLS 1.2 or later) with the certificate chain and key loaded."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(ctx, cert, key)
    return ctx


def reload(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    """Load the files into the live context, after checking them on a scratch one: a
    failed load could leave the live context with a certificate but not its key."""
    _load(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), cert, key)
    _load(ctx, cert, key)


def not_after(cert: Path) -> float | None:
    """The first certificate's expiry (Unix seconds), or None if it cannot be read."""
    # The stdlib decodes certificates only through this (stable since 3.3) helper.
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return None
    try:
        text = decode(str(cert))["notAfter"]
    except (OSError, ssl.SSLError, KeyError, ValueError):
        return None
    return float(ssl.cert_time_to_seconds(text))
