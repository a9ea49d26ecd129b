"""The HTML drill report in a real headless browser (Debian's chromium), driven over the
DevTools protocol: the page loads with no console error and no network request, shows
its table and both charts; a screenshot is written as a test artifact."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.drill_html import render_html
from client.drills import Observation, scorecard

CHROMIUM = os.environ.get("HOTLINE_CHROMIUM") or shutil.which("chromium") or shutil.which(
    "chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio",
         "--remote-debugging-port=0", "--remote-allow-origins=*"]
DAY, MIN = 86_400_000, 60_000
T0 = 1_790_000_000_000


def sample() -> list[Observation]:
    rows = []
    for i in range(12):
        for j, desk in enumerate(("cn.cac", "cn.mss", "de.bsi")):
            at = T0 + i * 7 * DAY + j * 3_600_000
            ack = at + (5 + 3 * i + 11 * j) * MIN if (i + j) % 5 else None
            rows.append(Observation(bytes([i, j]) * 8, "us.caisi", desk, "exercise", "high",
                                    at, at + (j + 1) * 1000, ack, False,
                                    at + 45 * MIN if i % 3 == 0 else None, (i * j) % 4 == 3))
        rows.append(Observation(bytes([i, 9]) * 8, "us.caisi", "cn.cac", "test", "low",
                                T0 + i * DAY, T0 + i * DAY + 800, None, False, None, False,
                                300_000))
    return rows


class Browser:
    """One chromium page over the DevTools protocol (flat sessions)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.new_event = asyncio.Event()
        self.session: str | None = None
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.waiting:
                self.waiting.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)
                self.new_event.set()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[n] = fut
        msg: dict[str, Any] = {"id": n, "method": method, "params": params}
        if self.session is not None:
            msg["sessionId"] = self.session
        await self.ws.send_str(json.dumps(msg))
        reply = await fut
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    async def wait_for(self, method: str) -> dict[str, Any]:
        while True:
            for e in self.events:
                if e["method"] == method:
                    return e
            self.new_event.clear()
            await self.new_event.wait()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("CHROMIUM NOT INSTALLED: THE HTML REPORT WAS NOT CHECKED IN A BROWSER "
                    "(apt-get install chromium, or set HOTLINE_CHROMIUM)")
    profile = tmp_path / "chromium-profile"
    log = tmp_path / "chromium.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                                 "about:blank"], stdout=subprocess.DEVNULL, stderr=err)
    try:
        url = await _devtools_url(log, proc)
        async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
            b = Browser(ws)
            target = await b.call("Target.createTarget", url="about:blank")
            attached = await b.call("Target.attachToTarget", targetId=target["targetId"],
                                    flatten=True)
            b.session = attached["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                await b.call(f"{domain}.enable")
            yield b
            b.reader.cancel()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _devtools_url(log: Path, proc: subprocess.Popen[bytes]) -> str:
    """The browser's DevTools WebSocket URL, from the line chromium writes at start."""
    async with asyncio.timeout(120):
        while True:
            m = re.search(r"DevTools listening on (ws://\S+)", log.read_text(errors="replace"))
            if m:
                return m.group(1)
            if proc.poll() is not None:
                raise AssertionError(f"chromium exited ({proc.returncode}): "
                                     f"{log.read_text(errors='replace')[-2000:]}")
            await asyncio.sleep(0.1)


async def test_html_report_in_headless_chromium(browser: Browser, tmp_path: Path) -> None:
    obs = sample()
    scores = scorecard(obs)
    page = tmp_path / "drill-report.html"
    page.write_text(render_html(scores, obs, desk="us.caisi", since=T0 - DAY,
                                now=T0 + 90 * DAY), encoding="utf-8")
    url = page.as_uri()
    async with asyncio.timeout(120):
        await browser.call("Page.navigate", url=url)
        await browser.wait_for("Page.loadEventFired")
        found = await browser.call("Runtime.evaluate", returnByValue=True, expression="""({
            rows: document.querySelectorAll('#scorecard tbody tr').length,
            desks: [...document.querySelectorAll('#scorecard tbody tr td:first-child')]
                   .map(td => td.textContent),
            charts: [...document.querySelectorAll('figure svg')].map(svg => ({
                paths: svg.querySelectorAll('path').length,
                width: svg.getBoundingClientRect().width})),
            images: document.images.length,
            scripts: document.scripts.length})""")
        shot = await browser.call("Page.captureScreenshot", format="png",
                                  captureBeyondViewport=True)
    value = found["result"]["value"]
    assert value["rows"] == 3 and value["desks"] == ["cn.cac", "cn.mss", "de.bsi"]
    assert len(value["charts"]) == 2
    assert all(c["paths"] > 20 and c["width"] > 200 for c in value["charts"]), value["charts"]
    assert value["scripts"] == 0 and value["images"] == 0
    errors = [e for e in browser.events
              if e["method"] == "Runtime.exceptionThrown"
              or (e["method"] == "Runtime.consoleAPICalled"
                  and e["params"]["type"] in ("error", "assert"))
              or (e["method"] == "Log.entryAdded"
                  and e["params"]["entry"]["level"] == "error")]
    assert errors == [], errors
    requests = [e["params"]["request"]["url"] for e in browser.events
                if e["method"] == "Network.requestWillBeSent"]
    assert requests == [url], f"the page fetched more than itself: {requests}"
    artifact = tmp_path / "drill-report.png"
    artifact.write_bytes(base64.b64decode(shot["data"]))
    assert artifact.stat().st_size > 10_000
    print(f"drill report screenshot: {artifact}")


async def test_the_browser_check_sees_a_network_fetch(browser: Browser, tmp_path: Path) -> None:
    """The check can fail: a page that loads an image from the network is caught."""
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/x.png">'
                    "<script>console.error('boom')</script>")
    async with asyncio.timeout(120):
        await browser.call("Page.navigate", url=page.as_uri())
        await browser.wait_for("Page.loadEventFired")
    methods = [e["method"] for e in browser.events]
    requests = [e["params"]["request"]["url"] for e in browser.events
                if e["method"] == "Network.requestWillBeSent"]
    assert "http://127.0.0.1:9/x.png" in requests
    assert "Runtime.consoleAPICalled" in methods
