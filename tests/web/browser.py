"""Debian's Chromium driven by Playwright's Python package, for the operators' web view tests.

Chromium is started as the relay's page needs nothing else: headless, no sandbox (CI runs as
root), no GPU, no QUIC, no first-run, background networking, component updates or sync (so
the browser itself makes no request anywhere), and a fresh profile folder per test. A missing
browser or driver skips the test, saying so loudly (.ci/run installs both).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parent.parent.parent
#: Screenshots go here (CI keeps the folder as the run's artifacts).
ARTIFACTS = Path(os.environ.get("HOTLINE_TEST_ARTIFACTS", REPO / "test-artifacts"))


def chromium_path() -> str:
    for candidate in (os.environ.get("HOTLINE_CHROMIUM", ""), "/usr/bin/chromium",
                      shutil.which("chromium") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("SKIPPED LOUDLY: no chromium browser (apt-get install chromium); the "
                "operators' web view was NOT tested in a browser")


@asynccontextmanager
async def browser_context(profile: Path) -> AsyncIterator[Any]:
    """A Chromium context on a fresh ``--user-data-dir`` (``profile``), closed afterwards."""
    executable = chromium_path()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("SKIPPED LOUDLY: the playwright package is missing (pip install "
                    "-e '.[test]'); the operators' web view was NOT tested in a browser")
    async with async_playwright() as pw:
        # Playwright passes the profile folder as --user-data-dir itself.
        context = await pw.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=CHROMIUM_ARGS,
            ignore_default_args=["--enable-automation"], timeout=60_000)
        try:
            yield context
        finally:
            await context.close()
