"""Hybrid keys through a real relay: a mixed federation during its move, and the refusals
the relay can make itself (it sees stanza kinds and lengths, and each recipient's card)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import nacl.public

from client.client import HotlineClient
from keys import Envelope
from keys.frames import InboxPage
from tests.e2e.test_relay_attacks import expect, not_stored, seal_to, verified
from tests.factory import report
from tests.keys._helpers import assemble, header_of
from tests.keys.test_hybrid import unseal_hybrid
from tests.relay_harness import PASSPHRASE, TEST_ENV, RawDesk, RelayProcess, make_federation
from tests.relay_harness import now_ms as harness_now

ROOT = Path(__file__).resolve().parents[2]
DESKS = ("us.caisi", "cn.cac", "cn.mss")


def client(homes: dict[str, Path], relay: RelayProcess, name: str) -> HotlineClient:
    return HotlineClient.from_home(homes[name], PASSPHRASE, relays=[relay.url])


def kinds(raw: bytes) -> dict[str, str]:
    return {s.to: s.kem for s in Envelope.decode(raw).header.stanzas}


async def test_mixed_federation_exchanges_notices_during_a_rotation(tmp_path: Path) -> None:
    """cn.cac is still classical while us.caisi and cn.mss are hybrid. Notices flow both
    ways; each stanza is of its recipient's kind. cn.cac then rotates to hybrid with a
    notice to its old key still waiting: that notice opens, and the next ones to cn.cac are
    hybrid. Nothing is lost, nothing downgraded."""
    homes = make_federation(tmp_path, DESKS, classical=("cn.cac",))
    relay = RelayProcess.create(tmp_path)
    relay.start()
    try:
        async with client(homes, relay, "us.caisi") as us:
            first = await us.send(to=["cn.cac", "cn.mss"], severity="high", notice=report())
            before = us.state.outbox(first.notice_id)
            assert before is not None
            assert kinds(before.envelope) == {"cn.cac": "x25519", "cn.mss": "x-wing"}
        async with client(homes, relay, "cn.cac") as cac:
            back = await cac.send(to=["us.caisi"], severity="high", notice=report(title="Re"))
            sent = cac.state.outbox(back.notice_id)
            assert sent is not None and kinds(sent.envelope) == {"us.caisi": "x-wing"}
        async with client(homes, relay, "us.caisi") as us:
            pending = await us.send(to=["cn.cac"], severity="high", notice=report(title="Two"))
        rotate = subprocess.run(
            [sys.executable, "-m", "client.cli.main", "keys", "rotate", "--hybrid", "--home",
             str(homes["cn.cac"])],
            capture_output=True, text=True, env={**os.environ, **TEST_ENV}, cwd=ROOT, timeout=120)
        assert rotate.returncode == 0, rotate.stderr
        assert "hybrid (X-Wing)" in rotate.stdout
        async with client(homes, relay, "cn.cac") as cac:
            got = await cac.fetch()
            opened = {n.notice_id for n in got if hasattr(n, "report")}
            assert {first.notice_id, pending.notice_id} <= opened
        async with client(homes, relay, "cn.mss") as mss:
            assert first.notice_id in {n.notice_id for n in await mss.fetch()
                                       if hasattr(n, "report")}
        async with client(homes, relay, "us.caisi") as us:
            got_us = await us.fetch()
            assert back.notice_id in {n.notice_id for n in got_us if hasattr(n, "report")}
            us._cards.clear()  # the cached card is older than cn.cac's rotation
            after = await us.send(to=["cn.cac"], severity="high", notice=report(title="Three"))
            rec = us.state.outbox(after.notice_id)
            assert rec is not None and kinds(rec.envelope) == {"cn.cac": "x-wing"}
        async with client(homes, relay, "cn.cac") as cac:
            assert after.notice_id in {n.notice_id for n in await cac.fetch()
                                       if hasattr(n, "report")}
    finally:
        relay.stop()


async def test_relay_refuses_downgrades_and_bad_stanzas_and_stores_nothing(
        tmp_path: Path) -> None:
    """At the relay: a classical stanza to a hybrid desk (signed by its sender) is 400
    downgrade_refused, a hybrid stanza of the wrong length 400 bad_stanza; neither is
    stored, and honest hybrid traffic still flows."""
    homes = make_federation(tmp_path, DESKS)
    relay = RelayProcess.create(tmp_path)
    relay.start()
    try:
        async with aiohttp.ClientSession() as http:
            us = await RawDesk(http, relay.url, homes["us.caisi"]).login()
            mss = await RawDesk(http, relay.url, homes["cn.mss"]).login()
            await RawDesk(http, relay.url, homes["cn.cac"]).login()
            env = seal_to(us, mss)
            content_key, plaintext = _content(env, mss)
            kid = env.header.stanzas[0].ek_kid
            rogue = nacl.public.PrivateKey.generate()
            classical = {"to": "cn.mss", "ek_kid": kid, "kem": "x25519",
                         "wrapped": bytes(nacl.public.SealedBox(rogue.public_key)
                                          .encrypt(content_key))}
            h = header_of(env) | {"stanzas": [classical]}
            forged = assemble(h, plaintext, content_key, us.secrets.identity)
            expect(await us.post("/v1/notices", forged), 400, "downgrade_refused")
            stanza = header_of(env)["stanzas"][0] | {"kem_ct": b"\x00" * 1119}
            short = assemble(header_of(env) | {"stanzas": [stanza]}, plaintext, content_key,
                             us.secrets.identity)
            expect(await us.post("/v1/notices", short), 400, "bad_stanza")
            await not_stored(Envelope.decode(forged), us, mss)
            ok = seal_to(us, mss)
            assert (await us.post("/v1/notices", ok.raw)).status == 201
            page = InboxPage.decode((await mss.get("/v1/inbox")).body)
            assert [e.envelope for e in page.events if e.envelope] == [ok.raw]
    finally:
        relay.stop()


def _content(env: Envelope, desk: RawDesk) -> tuple[bytes, bytes]:
    return unseal_hybrid(env, desk.secrets)


async def test_version_1_envelope_to_hybrid_only_federation_is_refused_at_the_relay(
        tmp_path: Path) -> None:
    """The root requires hybrid keys from now on. A sender seals classically from a card
    verified before the date (a classical key of the recipient's): 400 hybrid_required,
    nothing stored."""
    homes = make_federation(tmp_path, DESKS, hybrid_required_from=harness_now())
    relay = RelayProcess.create(tmp_path)
    relay.start()
    try:
        async with aiohttp.ClientSession() as http:
            us = await RawDesk(http, relay.url, homes["us.caisi"]).login()
            mss = await RawDesk(http, relay.url, homes["cn.mss"]).login()
            v = verified(mss)
            rogue = nacl.public.PrivateKey.generate().public_key
            stale = dataclasses.replace(v, encryption_keys={
                next(iter(v.encryption_keys)): bytes(rogue)})
            env = seal_to(us, stale)
            assert env.header.version == 1
            expect(await us.post("/v1/notices", env.raw), 400, "hybrid_required")
            await not_stored(env, us, mss)
    finally:
        relay.stop()

