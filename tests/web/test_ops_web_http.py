"""The web view's login and headers over plain HTTP requests (no browser needed): the cookie
is Secure under TLS, every /ops/ answer carries the security headers, tampered tokens fail."""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path

import aiohttp
import nacl.signing
import pytest

from keys import weblogin
from keys.errors import BadSignature, MalformedInput
from relay.ops_web import CSP
from tests.relay.test_relay_tls import make_ca, make_server_cert
from tests.relay_harness import RelayProcess, make_federation, now_ms

HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
           "referrer-policy": "no-referrer", "cache-control": "no-store"}


def _link(key: nacl.signing.SigningKey, origin: str, expires_in_ms: int = 60_000) -> str:
    token = weblogin.mint(key, operator="ops.alice", origin=origin,
                          expires_at=now_ms() + expires_in_ms,
                          nonce=os.urandom(weblogin.LOGIN_NONCE_BYTES))
    return weblogin.link(origin, token)


async def test_login_cookie_is_secure_httponly_strict_over_tls_and_headers_are_everywhere(
        tmp_path: Path) -> None:
    make_federation(tmp_path, ("us.caisi", "cn.cac"))
    key = nacl.signing.SigningKey.generate()
    relay = RelayProcess.create(tmp_path)
    with open(relay.home / "relay.toml", "a") as fh:
        fh.write(f'\n[operators]\n"ops.alice" = "{bytes(key.verify_key).hex()}"\n')
    ca = make_ca(tmp_path / "ca.pem")
    make_server_cert(ca, relay.home / "tls.crt", relay.home / "tls.key", days=3)
    relay.start(extra_env={"HOTLINE_RELAY_TLS_CERT": "tls.crt",
                           "HOTLINE_RELAY_TLS_KEY": "tls.key"})
    try:
        origin = f"https://127.0.0.1:{relay.port}"
        tls = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        async with aiohttp.ClientSession() as http:
            async with http.get(_link(key, origin), ssl=tls) as r:
                assert r.status == 200
                cookie = r.headers["Set-Cookie"]
                page_headers = r.headers
            attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
            assert {"secure", "httponly", "samesite", "path", "max-age"} <= attrs, cookie
            assert "SameSite=Strict" in cookie and "Path=/ops/" in cookie
            token = cookie.split(";")[0].split("=", 1)[1]
            jar = {"hotline_ops": token}
            for k, v in HEADERS.items():
                assert page_headers[k] == v
            for path in ("/ops/", "/ops/ops.js", "/ops/ops.css", "/ops/api/overdue"):
                async with http.get(origin + path, ssl=tls, cookies=jar,
                                    headers={"Origin": "https://evil.example"}) as r:
                    assert r.status == 200, path
                    for k, v in HEADERS.items():
                        assert r.headers[k] == v, (path, k)
                    assert "Access-Control-Allow-Origin" not in r.headers
            async with http.get(origin + "/ops/ops.js", ssl=tls) as r:
                js = await r.text()
                assert r.headers["Content-Type"].startswith("text/javascript")
            # The page's script never parses markup from the relay.
            assert "innerHTML" not in js and "outerHTML" not in js
            assert "insertAdjacentHTML" not in js and "document.write" not in js
            # The page itself has no inline script or style, and no other origin.
            async with http.get(origin + "/ops/", ssl=tls, cookies=jar) as r:
                html = await r.text()
            assert "<script>" not in html and "style=" not in html
            assert not re.search(r"<[^>]*\son[a-z]+=", html)  # no inline event handlers
            assert "http://" not in html and "https://" not in html
    finally:
        relay.stop()


def test_a_tampered_or_truncated_token_is_refused_by_the_decoder() -> None:
    key = nacl.signing.SigningKey.generate()
    link = _link(key, "http://127.0.0.1:1")
    token = link.split("t=", 1)[1]
    parsed = weblogin.parse(token)
    parsed.verify(key.verify_key)
    # Flip one base64 character in the body: the signature no longer verifies.
    i = 20
    flipped = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]
    with pytest.raises((BadSignature, MalformedInput)):
        weblogin.parse(flipped).verify(key.verify_key)
    with pytest.raises(MalformedInput):
        weblogin.parse(token[: len(token) // 2])
    with pytest.raises(MalformedInput):
        weblogin.parse(token + "<script>")
    for odd in ("A", "AAAAA", token + "A" * (4 - len(token) % 4 + 1)):
        with pytest.raises(MalformedInput):  # a base64 length that cannot be, not a crash
            weblogin.parse(odd)
    with pytest.raises(MalformedInput):
        weblogin.parse("A" * (weblogin.MAX_TOKEN_CHARS + 1))
    # Signed with another key: decodes, does not verify.
    with pytest.raises(BadSignature):
        parsed.verify(nacl.signing.SigningKey.generate().verify_key)


async def test_behind_a_tls_proxy_the_https_origin_makes_the_cookie_secure(
        tmp_path: Path) -> None:
    """The relay speaks plain HTTP to its proxy; its origin is https://, so is the cookie."""
    make_federation(tmp_path, ("us.caisi", "cn.cac"))
    key = nacl.signing.SigningKey.generate()
    relay = RelayProcess.create(tmp_path)
    with open(relay.home / "relay.toml", "a") as fh:
        fh.write(f'\n[operators]\n"ops.alice" = "{bytes(key.verify_key).hex()}"\n')
    origin = "https://relay.example"
    relay.start(extra_env={"HOTLINE_RELAY_ORIGIN": origin})
    try:
        token = _link(key, origin).split("t=", 1)[1]
        async with aiohttp.ClientSession() as http, \
                http.get(f"{relay.url}/ops/login?t={token}") as r:
            assert r.status == 200
            attrs = {a.strip().split("=")[0].lower() for a in r.headers["Set-Cookie"].split(";")}
            assert "secure" in attrs
    finally:
        relay.stop()
