"""The installed dependencies carry the fixes for the known advisories listed below.

pip-audit needs an advisory database that this project's machines cannot reach, so the
known advisories are checked here against the versions actually installed.
"""

from __future__ import annotations

from importlib.metadata import version

import pytest

#: package -> (first fixed version, advisories fixed by it)
FIXED = {
    "aiohttp": ((3, 14, 3), "CVE-2025-69223, CVE-2026-22815/34516/34517, CVE-2026-54278, "
                            "GHSA-mfx4-hv73-q22v, GHSA-cq5v-8q36-5273"),
    "msgpack": ((1, 2, 1), "CVE-2026-57585 / GHSA-6v7p-g79w-8964"),
}


def _parse(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3] if p.isdigit())


@pytest.mark.parametrize("package", sorted(FIXED))
def test_installed_version_has_the_advisory_fixes(package: str) -> None:
    """Each dependency with a known advisory is at or above the version that fixed it."""
    fixed, advisories = FIXED[package]
    installed = _parse(version(package))
    assert installed >= fixed, f"{package} {version(package)} lacks fixes for {advisories}"


def test_aiohttp_uses_its_c_parser() -> None:
    """Several smuggling bugs affected only aiohttp's pure-Python HTTP parser."""
    from aiohttp import http_parser

    assert http_parser.HttpRequestParser.__module__ == "aiohttp._http_parser"
