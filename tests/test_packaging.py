"""What a non-editable install needs is packaged: the relay's schema and the protocol."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_package_data_covers_schema_and_protocol() -> None:
    """Every schema file and keys/PROTOCOL.md match a package-data pattern in pyproject."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]
    needed = [p.relative_to(ROOT) for p in (ROOT / "relay" / "store" / "schema").glob("*.sql")]
    needed.append(Path("keys/PROTOCOL.md"))
    assert len(needed) >= 3
    for path in needed:
        package, rest = path.parts[0], Path(*path.parts[1:])
        assert any(rest.match(pattern) for pattern in data.get(package, [])), path
