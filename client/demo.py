"""``hotline demo``: a whole federation on this machine, in a temporary folder.

Sets up two countries (us, cn), each with an offline authority and one desk, exactly as
the README walks through by hand, and shows each step. Its throwaway keys use the
fast test key-derivation setting; real keys never do.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from client.cli import main as cli
from client.cli.common import iso
from client.cli.safe_text import line as safe
from client.home import now_ms

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
    classical: tuple[str, ...] = (),
    hybrid_required_from: int | None = None,
) -> dict[str, Path]:
    """Create authorities, a signed root and certified desks under ``base``.

    Desks get hybrid (X-Wing) encryption keys, those named in ``classical`` X25519 ones (a
    federation in the middle of its move). Returns the home folder of every desk. Assumes
    the demo environment is set.
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
        *(["--hybrid-required-from", str(hybrid_required_from)]
          if hybrid_required_from is not None else []),
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
        kind = ["--classical"] if d in classical else []
        hotline("keys", "init", "--id", d, "--home", str(home), *relay, *kind)
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


DEMO_RELAY_TOML = """\
[relay]
id = "demo-relay"

# Demo windows, so that an escalation happens while you watch. The real defaults are
# critical 15 min / every 5 min (DESIGN.md); see deploy/relay.toml.example.
[policy.critical]
ack_window = "3s"
repeat_every = "2s"
max_level = 3
response_window = "1h"
"""


class DemoRelay:
    """A relay child process on a free loopback port, for the demo."""

    def __init__(self, base: Path) -> None:
        self.home = base / "relay"
        hotline("relay", "init", "--home", str(self.home), "--root",
                str(base / "federation.root"), "--id", "demo-relay")
        (self.home / "relay.toml").write_text(DEMO_RELAY_TOML)
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "client.cli.main", "relay", "serve", "--home",
             str(self.home), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == "relay.listening":
                    self.url = f"http://127.0.0.1:{entry['port']}"
                    self.fingerprint = entry["fingerprint"]
                    return
            if time.monotonic() > deadline:
                break
        raise SystemExit("demo: the relay did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


def _hms(ms: int) -> str:
    return iso(ms)


async def _conversation(base: Path, relay: DemoRelay) -> None:
    from client.client import HotlineClient
    from client.items import ConfirmationEvent, EscalationEvent, ReceivedNotice
    from keys import AiSystem, IncidentReport

    def open_desk(name: str) -> HotlineClient:
        return HotlineClient.from_home(base / name, DEMO_PASSPHRASE, relays=[relay.url],
                                       on_relay_pinned=lambda card, fpr: None)

    async with open_desk("us.caisi") as us, open_desk("cn.cac") as cn:
        await us.fetch()
        await cn.fetch()  # both desks have logged in: the relay knows their cards
        print(f"3. A relay runs at {relay.url} (fingerprint {safe(relay.fingerprint)});")
        print("   both desks logged in with their identity keys (no passwords).")

        leak = IncidentReport(
            title="FrontierX-3 model weights posted on a public tracker",
            summary="Weights matching a lab release candidate appeared at 02:10 UTC.",
            body="Hashes match. Mirrors are spreading; takedown requests under way.",
            category="model-weights-leak", aware_at=now_ms() - 40 * 60_000, tlp="amber",
            systems=(AiSystem("FrontierX-3", "rc2", "Example Lab"),),
            countries=("us", "cn"), actions=("Block the listed mirrors",),
            contact="us.caisi duty officer")
        sent = await us.send(to=["cn.cac"], severity="critical", notice=leak)
        print(f"\n4. us.caisi sends a CRITICAL notice {sent.notice_id.hex()[:12]}...; the relay")
        print(f"   accepted it at {_hms(sent.accepted_at)} (a signed, fsynced attestation).")
        for item in await cn.fetch():
            if isinstance(item, ReceivedNotice):
                print("   cn.cac received, verified and decrypted it: "
                      f"\"{safe(item.report.title)}\"")
                print("   (its client sent a signed delivery receipt automatically)")
        ack = await cn.ack(sent.notice_id, message="Seen. Blocking mirrors in our region.")
        print(f"   cn.cac acknowledged it at {_hms(ack.acknowledged_at)}, with a message "
              "only us.caisi can read.")
        for item in await us.fetch():
            if isinstance(item, ConfirmationEvent):
                extra = f": \"{safe(item.message)}\"" if item.message else ""
                print(f"   us.caisi sees the signed {item.kind} of {safe(item.recipient)}{extra}")

        jailbreak = IncidentReport(
            title="Jailbreak of assistant models spreading across platforms",
            summary="A prompt chain disables safety filters on three public assistants.",
            body="Observed since 01:30 UTC; indicators attached in the full report.",
            category="dangerous-capability", aware_at=now_ms() - 20 * 60_000)
        back = await cn.send(to=["us.caisi"], severity="critical", notice=jailbreak)
        print(f"\n5. cn.cac sends a CRITICAL notice {back.notice_id.hex()[:12]}... to us.caisi,")
        print("   and nobody at us.caisi acknowledges it. Its window here is 3 s (15 min by "
              "default):")
        await us.fetch()  # delivered (receipt sent), but not acknowledged
        await asyncio.sleep(5.5)
        for item in await cn.fetch():
            if isinstance(item, EscalationEvent) and item.kind == "escalation":
                print(f"   ESCALATED level {item.level} at {_hms(item.at)}: us.caisi has not "
                      f"acknowledged (delivered: {'yes' if item.delivered else 'no'})")
        await us.ack(back.notice_id)
        await asyncio.sleep(0.3)
        for item in await cn.fetch():
            if isinstance(item, EscalationEvent) and item.kind == "resolved":
                print(f"   RESOLVED at {_hms(item.at)}: us.caisi acknowledged, late, after "
                      f"level {item.level}")
        view = await cn.status(back.notice_id)
        print(f"   every signature in its status verified: {view.verified}")

    print("\n6. The operators' escalation log (metadata only, never content):")
    for line in (relay.home / "escalations.jsonl").read_text().splitlines():
        rec = json.loads(line)
        print(safe(f"   {rec['event']:<20} level {rec['level']}  {rec['sender']} -> "
                   f"{rec['recipient']}  {rec['severity']}  overdue {rec['overdue_ms']} ms"))


def run() -> int:
    with tempfile.TemporaryDirectory(prefix="hotline-demo-") as tmp, _demo_env():
        base = Path(tmp)
        print("Hotline demo: two countries, one desk each, a relay, in", base)
        print("1. Each country creates an offline authority key; both sign the federation root;")
        print("   each desk is certified by its own country's authority:")
        setup_federation(base)
        print("2. Each desk verified the other's card against the pinned root.")
        relay = DemoRelay(base)
        relay.start()
        try:
            asyncio.run(_conversation(base, relay))
        finally:
            relay.stop()
        print("\nDone. Everything ran on this machine; the folders are removed on exit.")
    return 0
