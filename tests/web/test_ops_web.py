"""The operators' web view in a real headless Chromium against a real relay process.

Log in with a link minted by ``hotline ops web``, watch an escalation appear live, filter,
check the security headers and that no request leaves the relay's origin; refused: a desk's
session, a desk-signed link, an expired link, a used link (also after a restart), a link for
another relay, a link not signed by the operator's key. A screenshot is kept as an artifact.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import nacl.signing
import pytest

from client.cli.main import main
from keys import seal, weblogin
from keys.keyfile import decode_signing_key, read_key_file
from relay.ops_web import CSP
from tests import relay_harness
from tests.factory import report
from tests.relay_harness import PASSPHRASE, RawDesk, RelayProcess, now_ms
from tests.web.browser import ARTIFACTS, browser_context

T = TypeVar("T")
WAIT_S = 20.0
POLICY = ('[policy.critical]\nack_window = "2s"\nrepeat_every = "1h"\nmax_level = 2\n'
          '[policy.high]\nack_window = "2s"\nrepeat_every = "1h"\nmax_level = 2\n')


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    deadline = time.monotonic() + WAIT_S
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
def operator(tmp_path: Path) -> tuple[Path, str, nacl.signing.SigningKey]:
    """An operator home made by ``hotline ops init``."""
    home = tmp_path / "ops"
    with relay_harness.test_env():
        assert main(["ops", "init", "--name", "ops.alice", "--home", str(home)]) == 0
        name, key = decode_signing_key(read_key_file(home / "operator.key",
                                                     PASSPHRASE.encode(), kind="operator"))
    return home, name, key


@pytest.fixture
def relay(tmp_path: Path, federation: dict[str, Path],
          operator: tuple[Path, str, nacl.signing.SigningKey]) -> Iterator[RelayProcess]:
    _, name, key = operator
    proc = RelayProcess.create(tmp_path)
    with open(proc.home / "relay.toml", "a") as fh:
        fh.write(f'\n{POLICY}\n[operators]\n"{name}" = "{bytes(key.verify_key).hex()}"\n')
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def mint_with_cli(home: Path, url: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    with relay_harness.test_env():
        assert main(["ops", "web", "--home", str(home), "--relay", url]) == 0
    out = capsys.readouterr().out.strip()
    assert re.fullmatch(re.escape(url) + r"/ops/login\?t=[A-Za-z0-9_-]+", out), out
    return out


def sealed(sender: RawDesk, to: RawDesk, severity: str, status: str = "actual") -> Any:
    now = now_ms()
    trust = sender.home.trust(now)
    return seal(report(title="CANARY-WEB title"), sender=sender.secrets,
                recipients=[trust.verify_card(to.home.card(now), now)], severity=severity,
                status=status, now=now)


async def test_operator_logs_in_with_a_minted_link_and_sees_an_escalation_arrive_live(
        relay: RelayProcess, federation: dict[str, Path], tmp_path: Path,
        operator: tuple[Path, str, nacl.signing.SigningKey],
        capsys: pytest.CaptureFixture[str]) -> None:
    link = mint_with_cli(operator[0], relay.url, capsys)
    requests: list[str] = []
    async with aiohttp.ClientSession() as http, browser_context(tmp_path / "profile") as ctx:
        page = await ctx.new_page()
        page.on("request", lambda req: requests.append(req.url))
        console: list[str] = []
        page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
        first = await page.goto(link)
        assert first is not None and first.status == 200
        await page.wait_for_url(relay.url + "/ops/")
        await page.wait_for_selector("#conn.conn-live", timeout=WAIT_S * 1000)
        assert await page.text_content("#operator") == "ops.alice"
        assert await page.text_content("#relay") == "test-relay"
        assert await page.locator("#feed li").count() == 0   # nothing has escalated yet

        # The page's own response carries the policy and headers; the cookie is locked down.
        async with http.get(relay.url + "/ops/", cookies={}) as r:
            assert r.status == 401   # no cookie, no page
        main_resp = await page.request.get(relay.url + "/ops/")
        headers = main_resp.headers
        assert headers["content-security-policy"] == CSP
        assert (headers["x-content-type-options"], headers["referrer-policy"],
                headers["cache-control"]) == ("nosniff", "no-referrer", "no-store")
        (cookie,) = [c for c in await ctx.cookies() if c["name"] == "hotline_ops"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/ops/" and cookie["secure"] is False  # plain HTTP here

        # Escalations happen after the page is open: they must show up without a reload.
        us = await RawDesk(http, relay.url, federation["us.caisi"]).login()
        cn = await RawDesk(http, relay.url, federation["cn.cac"]).login()
        nsc = await RawDesk(http, relay.url, federation["us.nsc"]).login()
        real = sealed(us, cn, "critical")
        drill = sealed(nsc, cn, "high", status="exercise")
        assert (await us.post("/v1/notices", real.raw)).status == 201
        assert (await nsc.post("/v1/notices", drill.raw)).status == 201
        real_item = page.locator(f'#feed li[data-notice="{real.notice_id.hex()}"]')
        drill_item = page.locator(f'#feed li[data-notice="{drill.notice_id.hex()}"]')
        await real_item.wait_for(timeout=WAIT_S * 1000)
        await drill_item.wait_for(timeout=WAIT_S * 1000)
        text = await real_item.text_content() or ""
        assert "ESCALATED" in text and "us.caisi" in text and "cn.cac" in text
        assert "UTC" in text                              # times carry their zone
        assert "sev-critical" in (await real_item.get_attribute("class") or "")
        assert await drill_item.locator(".label").text_content() == "EXERCISE"
        assert await real_item.locator(".label").count() == 0
        row = page.locator(f'#overdue tbody tr[data-notice="{real.notice_id.hex()}"]')
        await row.wait_for(timeout=WAIT_S * 1000)
        assert "critical" in (await row.text_content() or "")

        # Filters: by desk, then by severity.
        await page.fill("#filter-desk", "us.nsc")
        assert await real_item.is_hidden() and await drill_item.is_visible()
        await page.fill("#filter-desk", "")
        await page.uncheck('input.filter-severity[value="critical"]')
        assert await real_item.is_hidden() and await row.is_hidden()
        await page.check('input.filter-severity[value="critical"]')
        assert await real_item.is_visible()

        # The content never reaches the page.
        assert "CANARY" not in await page.content()

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "ops-web.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 1000
        await page.close()

    assert requests, "the page made no request at all?"
    outside = [u for u in requests if not u.startswith(relay.url + "/")]
    assert not outside, f"requests left the relay's origin: {outside}"
    assert not [c for c in console if "Content Security Policy" in c], console


async def test_desk_sessions_and_bad_login_links_are_refused_in_the_browser(
        relay: RelayProcess, federation: dict[str, Path], tmp_path: Path,
        operator: tuple[Path, str, nacl.signing.SigningKey]) -> None:
    _, name, key = operator

    def link(signer: nacl.signing.SigningKey, who: str = name, *, expires_in_ms: int = 60_000,
             origin: str = relay.url) -> str:
        token = weblogin.mint(signer, operator=who, origin=origin,
                              expires_at=now_ms() + expires_in_ms, nonce=_nonce())
        return weblogin.link(relay.url, token)

    async with aiohttp.ClientSession() as http, browser_context(tmp_path / "profile") as ctx:
        us = await RawDesk(http, relay.url, federation["us.caisi"]).login()
        page = await ctx.new_page()

        async def refused(url: str, status: int) -> None:
            resp = await page.goto(url)
            assert resp is not None and resp.status == status, (url, resp and resp.status)
            assert await page.locator("#refused").count() == 1
            assert not [c for c in await ctx.cookies() if c["name"] == "hotline_ops"]
            # and there is no way in to the data either
            api = await page.request.get(relay.url + "/ops/api/overdue")
            assert api.status == 401

        # A desk's session token in the cookie is not an operator session.
        await ctx.add_cookies([{"name": "hotline_ops", "value": us.token.hex(),
                                "url": relay.url + "/ops/"}])
        resp = await page.goto(relay.url + "/ops/")
        assert resp is not None and resp.status == 401
        assert await page.locator("#refused").count() == 1
        assert (await page.request.get(relay.url + "/ops/api/overdue")).status == 401
        assert (await page.request.get(relay.url + "/ops/api/feed")).status == 401
        await ctx.clear_cookies()

        # A desk signs a link with its own identity key, under its own name or the operator's.
        desk_key = us.secrets.identity
        await refused(link(desk_key, "us.caisi"), 403)
        await refused(link(desk_key), 401)
        # Expired, for another relay, or expiring too far ahead.
        await refused(link(key, expires_in_ms=-1000), 401)
        await refused(link(key, origin="http://relay.example:8750"), 401)
        await refused(link(key, expires_in_ms=3_600_000), 401)
        # Mangled.
        await refused(relay.url + "/ops/login?t=AAAA", 400)
        await refused(relay.url + "/ops/login", 400)

        # A good link works once, and not again, also after the relay restarts.
        good = link(key)
        resp = await page.goto(good)
        assert resp is not None and resp.status == 200
        await page.wait_for_selector("#conn.conn-live", timeout=WAIT_S * 1000)
        await ctx.clear_cookies()
        await refused(good, 401)
        await page.goto("about:blank")
        relay.restart()
        await refused(good, 401)
        assert [x for x in relay.lines if x.get("code") == "login_used"]


def _nonce() -> bytes:
    import os

    return os.urandom(weblogin.LOGIN_NONCE_BYTES)
