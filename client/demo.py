"""``hotline demo``: a whole federation on this machine, in a temporary folder.

Sets up two countries (us, cn), each with an offline authority and one desk, exactly as
the README walks through by hand, and shows each step. Its throwaway keys use the
fast test key-derivation setting; real keys never do.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from client.cli import main as cli

DEMO_PASSPHRASE = "demo passphrase (throwaway keys)"  # noqa: S105 - demo keys only


@contextlib.contextmanager
def _demo_env() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("HOTLINE_PASSPHRASE", "HOTLINE_TEST_FAST_KDF")}
    os.environ["HOTLINE_PASSPHRASE"] = DEMO_PASSPHRASE
    os.environ["HOTLINE_TEST_FAST_KDF"] = "1"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def hotline(*argv: str, quiet: bool = True) -> str:
    """Run one ``hotline`` command in-process; return what it printed. Raise on failure."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    if code != 0:
        raise SystemExit(f"demo step failed: hotline {' '.join(argv)}\n{err.getvalue()}")
    return out.getvalue()


def setup_federation(
    base: Path,
    desks: tuple[str, ...] = ("us.caisi", "cn.cac"),
    relay_url: str | None = None,
    say: bool = True,
) -> dict[str, Path]:
    """Create authorities, a signed root and certified desks under ``base``.

    Returns the home folder of every desk. Assumes the demo environment is set.
    """

    def step(text: str) -> None:
        if say:
            print(text)

    countries = sorted({d.split(".")[0] for d in desks})
    for c in countries:
        hotline("authority", "init", "--country", c, "--home", str(base / f"{c}-authority"))
        hotline(
            "authority",
            "export",
            "--home",
            str(base / f"{c}-authority"),
            "-o",
            str(base / f"{c}.authority"),
        )
        step(
            f"  authority of {c}: "
            + hotline("authority", "show", "--home", str(base / f"{c}-authority")).splitlines()[1]
        )
    root = base / "federation.root"
    hotline(
        "federation",
        "create",
        *[a for c in countries for a in ("--member", str(base / f"{c}.authority"))],
        "-o",
        str(root),
    )
    for c in countries:
        hotline("federation", "sign", str(root), "--home", str(base / f"{c}-authority"))
    step(f"  federation root v1 signed by {', '.join(countries)}")
    homes: dict[str, Path] = {}
    for d in desks:
        home = base / d
        relay = ["--relay", relay_url] if relay_url else []
        hotline("keys", "init", "--id", d, "--home", str(home), *relay)
        hotline("federation", "pin", str(root), "--home", str(home))
        c = d.split(".")[0]
        cert = base / f"{d}.cert"
        hotline(
            "authority",
            "certify",
            str(home / "desk.request"),
            "--home",
            str(base / f"{c}-authority"),
            "-o",
            str(cert),
        )
        hotline("keys", "install", str(cert), "--home", str(home))
        hotline("keys", "export", "--home", str(home), "-o", str(base / f"{d}.card"))
        fpr = hotline("keys", "show", "--home", str(home)).splitlines()[1].split(":", 1)[1]
        step(f"  desk {d}: certified by the {c} authority; fingerprint{fpr}")
        homes[d] = home
    for d, home in homes.items():
        others = [str(base / f"{o}.card") for o in desks if o != d]
        if others:
            hotline("contacts", "add", *others, "--home", str(home))
    return homes


def run() -> int:
    with tempfile.TemporaryDirectory(prefix="hotline-demo-") as tmp, _demo_env():
        base = Path(tmp)
        print("Hotline demo: two countries, one desk each, in", base)
        print("1. Each country creates an offline authority key; both sign the federation root;")
        print("   each desk is certified by its own country's authority:")
        setup_federation(base)
        print("2. Each desk verified the other's card against the pinned root.")
        print("Done. The folders are removed on exit.")
    return 0
