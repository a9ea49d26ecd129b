"""Attacks on a running relay: forged, re-addressed, replayed and stale notices, login and
confirmation tricks, revocation, and the relay's blindness to notice content.

Each attack is built byte by byte as an attacker would (SECURITY.md (a), threats 1, 5, 7, 9,
11, 12 and list (c) items 18-30) and must be refused with the stated status and error code,
store nothing, and leave the relay serving honest desks.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import nacl.public
import nacl.signing
import pytest

from keys import Confirmation, Envelope, Revocation, seal
from keys.codec import pack
from keys.frames import (
    Accepted,
    Challenge,
    ChallengeRequest,
    ErrorFrame,
    InboxPage,
    NoticeStatus,
    SessionRequest,
    auth_message,
    client_message,
    decode_relay_message,
)
from keys.keyfile import decode_signing_key, read_key_file
from keys.primitives import Domain, key_id
from keys.signed import make
from keys.trust import VerifiedDesk
from tests.factory import Federation, report
from tests.relay_harness import (
    PASSPHRASE,
    RawDesk,
    RelayProcess,
    Reply,
    make_federation,
    now_ms,
)
from tests.relay_harness import test_env as harness_env

DESKS = ("us.caisi", "us.nsc", "cn.cac", "cn.mss")
#: Certified by the cn authority like the others, but it never logs in to the relay.
GHOST = "cn.ghost"
MINUTE = 60_000
HOUR = 60 * MINUTE


# --------------------------------------------------------------------------- fixtures


@dataclasses.dataclass
class World:
    relay: RelayProcess
    base: Path
    homes: dict[str, Path]
    tokens: dict[str, bytes]

    @property
    def origin(self) -> str:
        """The origin the relay binds logins to (what its challenges name)."""
        return str(self.relay.events("relay.listening")[-1]["origin"])


async def _login_all(relay: RelayProcess, homes: dict[str, Path]) -> dict[str, bytes]:
    async with aiohttp.ClientSession() as http:
        return {d: (await RawDesk(http, relay.url, homes[d]).login()).token for d in DESKS}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One relay for the attacks that leave it as it was; four desks logged in."""
    base = tmp_path_factory.mktemp("attacks")
    homes = make_federation(base, (*DESKS, GHOST))
    relay = RelayProcess.create(base)
    relay.start()
    try:
        yield World(relay, base, homes, asyncio.run(_login_all(relay, homes)))
        failed = relay.events("request.failed")
        assert not failed, f"the relay failed on a request: {failed[:3]}"
    finally:
        relay.stop()


@pytest.fixture(params=["http", "stream"])
async def d(world: World, http: aiohttp.ClientSession,
            request: pytest.FixtureRequest) -> AsyncIterator[dict[str, RawDesk]]:
    """The module relay's desks (and the ghost, which has no session). Every attack runs
    twice: notices and confirmations sent as HTTP requests, then as stream messages."""
    out = {}
    for name, home in world.homes.items():
        desk = RawDesk(http, world.relay.url, home)
        desk.token = world.tokens.get(name, b"\x00" * 32)
        desk.transport = request.param
        out[name] = desk
    yield out
    for desk in out.values():
        await desk.close_stream()


# --------------------------------------------------------------------------- helpers


def seal_to(sender: RawDesk, *to: RawDesk | VerifiedDesk, now: int | None = None,
            **kwargs: Any) -> Envelope:
    t = now_ms()
    trust = sender.home.trust(t)
    recipients = [r if isinstance(r, VerifiedDesk) else trust.verify_card(r.home.card(t), t)
                  for r in to]
    rep = kwargs.pop("report", None) or report()
    return seal(rep, sender=sender.secrets, recipients=recipients,
                severity=kwargs.pop("severity", "high"), now=t if now is None else now, **kwargs)


def verified(desk: RawDesk) -> VerifiedDesk:
    t = now_ms()
    return desk.home.trust(t).verify_card(desk.home.card(t), t)


def expect(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert ErrorFrame.decode(reply.body).error == code


async def inbox_ids(desk: RawDesk) -> list[bytes]:
    r = await desk.get("/v1/inbox?after=0&limit=500")
    assert r.status == 200, r.status
    return [e.notice_id for e in InboxPage.decode(r.body).events]


async def not_stored(env: Envelope, *desks: RawDesk) -> None:
    """No desk sees the notice: not in any inbox, and its id answers 404 to everyone."""
    for desk in desks:
        assert env.notice_id not in await inbox_ids(desk), desk.desk
        expect(await desk.get(f"/v1/notices/{env.notice_id.hex()}"), 404, "not_found")
        expect(await desk.get(f"/v1/notices/{env.notice_id.hex()}/status"), 404, "not_found")


async def honest_round_trip(sender: RawDesk, recipient: RawDesk) -> None:
    """The relay still serves honest traffic: a fresh notice is accepted and delivered."""
    env = seal_to(sender, recipient)
    r = await sender.post("/v1/notices", env.raw)
    assert r.status == 201, r.body
    assert env.notice_id in await inbox_ids(recipient)


def split_envelope(env: Envelope) -> tuple[dict[str, Any], bytes, bytes]:
    header = msgpack.unpackb(env.header.raw, raw=False)
    return header, env.ciphertext, env.signature


def join_envelope(header: dict[str, Any] | bytes, ciphertext: bytes, signature: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else msgpack.packb(header, use_bin_type=True)
    return msgpack.packb([raw, ciphertext, signature], use_bin_type=True)


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


async def login_reply(desk: RawDesk, *, card: bytes | None = None, desk_id: str | None = None,
                      signer: nacl.signing.SigningKey | None = None, origin: str | None = None,
                      domain: bytes | None = None, challenge_for: str | None = None,
                      nonce: bytes | None = None) -> tuple[Reply, bytes]:
    """Answer a fresh challenge, with any part of the answer replaced; (reply, request)."""
    now = now_ms()
    if nonce is None:
        r = await desk.post("/v1/auth/challenge",
                            ChallengeRequest(challenge_for or desk.desk).encode(),  # type: ignore[arg-type]
                            auth=False)
        assert r.status == 200, r.body
        ch = Challenge.decode(r.body)
        nonce = ch.nonce
        origin = ch.origin if origin is None else origin
    name = desk_id or desk.desk
    message = auth_message(origin or "", name, desk.secrets.ik_kid, nonce, now)
    if domain is not None:
        message = domain + message.removeprefix(Domain.AUTH)
    sig = (signer or desk.secrets.identity).sign(message).signature
    req = SessionRequest(name, card or desk.home.card(now).encode(), nonce, now,  # type: ignore[arg-type]
                         sig).encode()
    return await desk.post("/v1/auth/session", req, auth=False), req


# --------------------------------------------------------------------------- forged notices


def _header_flip(env: Envelope, field: str) -> bytes:
    h = env.header
    value = {"nonce": h.nonce, "kc": h.kc, "notice_id": h.notice_id,
             "wrapped": h.stanzas[0].wrapped, "from_kid": h.sender_kid,
             "created_at": pack(h.created_at)}[field]
    at = h.raw.index(value) + len(value) - 1
    return join_envelope(flip(h.raw, at), env.ciphertext, env.signature)


FORGERIES = {
    "header_nonce": lambda e: _header_flip(e, "nonce"),
    "header_kc": lambda e: _header_flip(e, "kc"),
    "header_notice_id": lambda e: _header_flip(e, "notice_id"),
    "header_wrapped_key": lambda e: _header_flip(e, "wrapped"),
    "header_created_at": lambda e: _header_flip(e, "created_at"),
    "ciphertext_first_byte": lambda e: join_envelope(e.header.raw, flip(e.ciphertext, 0),
                                                     e.signature),
    "ciphertext_tag": lambda e: join_envelope(e.header.raw, flip(e.ciphertext, -1 % len(
        e.ciphertext)), e.signature),
    "signature_first_byte": lambda e: join_envelope(e.header.raw, e.ciphertext,
                                                    flip(e.signature, 0)),
    "signature_last_byte": lambda e: join_envelope(e.header.raw, e.ciphertext,
                                                   flip(e.signature, 63)),
}


@pytest.mark.parametrize("where", list(FORGERIES))
async def test_bit_flip_breaks_outer_signature(d: dict[str, RawDesk], where: str) -> None:
    """One flipped bit in the header, ciphertext or signature is refused: 400 bad_signature."""
    us, cn = d["us.caisi"], d["cn.cac"]
    env = seal_to(us, cn)
    forged = FORGERIES[where](env)
    assert forged != env.raw
    expect(await us.post("/v1/notices", forged), 400, "bad_signature")
    forged_env = Envelope.decode(forged)
    await not_stored(forged_env, us, cn)
    await not_stored(env, us, cn)
    # Nothing half-stored: the genuine envelope with the same id is still accepted.
    assert (await us.post("/v1/notices", env.raw)).status == 201
    assert await inbox_ids(cn) and env.notice_id in await inbox_ids(cn)


def _readdress(env: Envelope, d: dict[str, RawDesk], how: str) -> bytes:
    header, ciphertext, signature = split_envelope(env)
    us = d["us.caisi"]
    if how == "swap_recipient":  # cn.cac's stanza replaced by one for cn.mss
        other = split_envelope(seal_to(us, d["cn.mss"]))[0]
        header["stanzas"] = other["stanzas"]
    elif how == "drop_recipient":  # a two-recipient notice loses cn.mss
        header["stanzas"] = header["stanzas"][:1]
    elif how == "add_recipient":  # us.nsc's stanza (from another notice) slipped in
        extra = split_envelope(seal_to(us, d["us.nsc"]))[0]["stanzas"]
        header["stanzas"] = sorted(header["stanzas"] + extra, key=lambda s: s["to"])
    elif how == "relabel_severity":
        header["severity"] = "low"
    elif how == "relabel_status":
        header["status"] = "exercise"
    elif how == "splice_ciphertext":  # ciphertext of another notice under this header
        ciphertext = seal_to(us, d["cn.cac"]).ciphertext
    return join_envelope(header, ciphertext, signature)


@pytest.mark.parametrize("how", ["swap_recipient", "drop_recipient", "add_recipient",
                                 "relabel_severity", "relabel_status", "splice_ciphertext"])
async def test_envelope_altered_in_transit_is_400(d: dict[str, RawDesk], how: str) -> None:
    """A man in the middle who re-addresses, relabels or splices a notice gets 400 bad_signature."""
    us, cn, mss, nsc = d["us.caisi"], d["cn.cac"], d["cn.mss"], d["us.nsc"]
    env = seal_to(us, cn, mss) if how == "drop_recipient" else seal_to(us, cn)
    altered = _readdress(env, d, how)
    expect(await us.post("/v1/notices", altered), 400, "bad_signature")
    await not_stored(env, us, cn, mss, nsc)
    await honest_round_trip(us, cn)


async def test_notice_of_another_desk_is_403_sender_mismatch(d: dict[str, RawDesk]) -> None:
    """A desk submitting a notice whose header names another sender gets 403 sender_mismatch."""
    us, nsc, cn = d["us.caisi"], d["us.nsc"], d["cn.cac"]
    theirs = seal_to(nsc, cn)  # intercepted by us.caisi, sealed and signed by us.nsc
    expect(await us.post("/v1/notices", theirs.raw), 403, "sender_mismatch")
    # The same desk id with another desk's key id is just as wrong.
    header, ciphertext, signature = split_envelope(seal_to(us, cn))
    header["from_kid"] = nsc.secrets.ik_kid
    other_kid = join_envelope(header, ciphertext, signature)
    expect(await us.post("/v1/notices", other_kid), 403, "sender_mismatch")
    await not_stored(theirs, us, nsc, cn)
    await not_stored(Envelope.decode(other_kid), us, cn)
    # Its real sender can still submit it: the failed attempts burnt nothing.
    assert (await nsc.post("/v1/notices", theirs.raw)).status == 201


async def test_replayed_envelope_gets_the_same_attestation(d: dict[str, RawDesk]) -> None:
    """An identical resubmission answers 200 with the original attestation, stored once."""
    us, cn, mss = d["us.caisi"], d["cn.cac"], d["cn.mss"]
    env = seal_to(us, cn)
    first = await us.post("/v1/notices", env.raw)
    assert first.status == 201
    original = Accepted.decode(first.body)
    assert original.duplicate is False
    for _ in range(3):
        again = await us.post("/v1/notices", env.raw)
        assert again.status == 200
        replay = Accepted.decode(again.body)
        assert replay.duplicate is True
        assert replay.attestation == original.attestation
    assert (await inbox_ids(cn)).count(env.notice_id) == 1
    # Replayed by another desk, it is someone else's notice.
    expect(await mss.post("/v1/notices", env.raw), 403, "sender_mismatch")
    assert (await inbox_ids(cn)).count(env.notice_id) == 1


async def test_reused_notice_id_with_other_bytes_is_409(d: dict[str, RawDesk]) -> None:
    """The same notice id with other content is refused with 409 id_conflict; the first stays."""
    us, cn = d["us.caisi"], d["cn.cac"]
    nid = os.urandom(16)
    first = seal_to(us, cn, notice_id=nid)
    second = seal_to(us, cn, notice_id=nid, severity="critical")
    assert first.raw != second.raw
    assert (await us.post("/v1/notices", first.raw)).status == 201
    expect(await us.post("/v1/notices", second.raw), 409, "id_conflict")
    assert (await inbox_ids(cn)).count(nid) == 1
    assert (await cn.get(f"/v1/notices/{nid.hex()}")).body == first.raw
    status = NoticeStatus.decode((await us.get(f"/v1/notices/{nid.hex()}/status")).body)
    assert status.severity == "high" and status.digest == first.digest


@pytest.mark.parametrize(("offset", "accepted"), [
    pytest.param(6 * MINUTE, False, id="6min_future"),
    pytest.param(-25 * HOUR, False, id="25h_past"),
    pytest.param(4 * MINUTE, True, id="4min_future_ok"),
    pytest.param(-23 * HOUR, True, id="23h_past_ok"),
])
async def test_created_at_outside_window_is_400(d: dict[str, RawDesk], offset: int,
                                                accepted: bool) -> None:
    """A notice stamped over 5 min ahead or 24 h behind the relay's clock: 400 stale_or_future."""
    us, cn = d["us.caisi"], d["cn.cac"]
    env = seal_to(us, cn, now=now_ms() + offset)
    r = await us.post("/v1/notices", env.raw)
    if accepted:
        assert r.status == 201
        return
    expect(r, 400, "stale_or_future")
    await not_stored(env, us, cn)


def _never_certified() -> VerifiedDesk:
    """A desk (with keys) that no authority of this federation ever certified."""
    fed = Federation.create(desks=("cn.ghost2",))
    return fed.verified("cn.ghost2", fed.desks["cn.ghost2"].card.cert.not_before + 1)


@pytest.mark.parametrize("who", ["never_logged_in", "never_certified", "with_known_desk"])
async def test_recipient_unknown_to_relay_is_400_bad_recipients(d: dict[str, RawDesk],
                                                                who: str) -> None:
    """A notice to a desk the relay has no card for is refused whole: 400 bad_recipients."""
    us, cn = d["us.caisi"], d["cn.cac"]
    ghost = d[GHOST] if who != "never_certified" else _never_certified()
    if who == "with_known_desk":
        env = seal_to(us, cn, ghost)
    else:
        env = seal_to(us, ghost)
    expect(await us.post("/v1/notices", env.raw), 400, "bad_recipients")
    await not_stored(env, us, cn)
    await honest_round_trip(us, cn)


async def test_stanza_for_uncertified_encryption_key_is_400_bad_stanza(
        d: dict[str, RawDesk]) -> None:
    """A stanza wrapped to a key the recipient never certified is refused: 400 bad_stanza."""
    us, cn = d["us.caisi"], d["cn.cac"]
    rogue = nacl.public.PrivateKey.generate().public_key
    fake = dataclasses.replace(verified(cn),
                               encryption_keys={key_id(bytes(rogue)): bytes(rogue)})
    env = seal_to(us, fake)
    expect(await us.post("/v1/notices", env.raw), 400, "bad_stanza")
    # Also when only one of two stanzas is bad: no partial delivery to the good one.
    mixed = seal_to(us, fake, d["cn.mss"])
    expect(await us.post("/v1/notices", mixed.raw), 400, "bad_stanza")
    await not_stored(env, us, cn)
    await not_stored(mixed, us, cn, d["cn.mss"])


# --------------------------------------------------------------------------- logging in


async def test_replayed_login_is_401_bad_challenge(d: dict[str, RawDesk]) -> None:
    """A login answer sent a second time (the nonce is single use) is refused: 401 bad_challenge."""
    us = d["us.caisi"]
    first, request = await login_reply(us)
    assert first.status == 200
    again = await us.post("/v1/auth/session", request, auth=False)
    expect(again, 401, "bad_challenge")
    assert (await us.get("/v1/inbox")).status == 200  # the first session is unaffected


@pytest.mark.parametrize("how", ["challenge_of_other_desk", "card_of_other_desk",
                                 "signed_by_other_desk", "other_desk_id_own_key"])
async def test_login_answered_for_another_desk_is_401(world: World, d: dict[str, RawDesk],
                                                      how: str) -> None:
    """A challenge answered for another desk than it was issued to, or with another desk's
    card or key, is refused with 401 bad_challenge, and the nonce is burnt."""
    us, nsc = d["us.caisi"], d["us.nsc"]
    now = now_ms()
    if how == "challenge_of_other_desk":  # us.nsc answers the challenge issued to us.caisi
        reply, req = await login_reply(nsc, challenge_for=us.desk)
    elif how == "card_of_other_desk":  # us.caisi's login with us.nsc's card
        reply, req = await login_reply(us, card=nsc.home.card(now).encode())
    elif how == "signed_by_other_desk":  # us.caisi's login signed by us.nsc's key
        reply, req = await login_reply(us, signer=nsc.secrets.identity)
    else:  # claims to be us.nsc with us.caisi's card and key
        reply, req = await login_reply(us, desk_id=nsc.desk, challenge_for=nsc.desk)
    expect(reply, 401, "bad_challenge")
    # The nonce was used up by the failed attempt: a correct answer to it fails too.
    owner = nsc if how == "other_desk_id_own_key" else us
    retry, _ = await login_reply(owner, nonce=SessionRequest.decode(req).nonce,
                                 origin=world.origin)
    expect(retry, 401, "bad_challenge")
    assert (await owner.login()).token  # a fresh challenge still works


@pytest.mark.parametrize("origin", ["https://relay.example.org", "http://127.0.0.1:1", ""])
async def test_login_bound_to_another_origin_is_401(d: dict[str, RawDesk], origin: str) -> None:
    """A login signature naming another relay's origin is refused: 401 bad_challenge."""
    us = d["us.caisi"]
    reply, _ = await login_reply(us, origin=origin)
    expect(reply, 401, "bad_challenge")


async def test_login_made_for_another_relay_is_401(world: World, d: dict[str, RawDesk],
                                                  tmp_path: Path,
                                                  http: aiohttp.ClientSession) -> None:
    """A desk's answer to a challenge that a second relay forwarded from this one (signed for
    the origin the second relay announces) does not log in here: 401 bad_challenge."""
    shutil.copy(world.base / "federation.root", tmp_path / "federation.root")
    other = RelayProcess.create(tmp_path)
    other.start()
    try:
        us = d["us.caisi"]
        # The second relay's own challenge tells the desk which origin to sign.
        r = await http.post(other.url + "/v1/auth/challenge",
                            data=ChallengeRequest(us.desk).encode(),  # type: ignore[arg-type]
                            headers={"Content-Type": "application/msgpack"})
        their_origin = Challenge.decode(await r.read()).origin
        # It forwards a challenge of this relay instead; the desk signs for the second relay.
        reply, _ = await login_reply(us, origin=their_origin)
        assert reply.status == 401, (
            f"a login signed for the other relay's origin {their_origin!r} was accepted here "
            f"(this relay's origin: {world.origin!r}, its URL: {world.relay.url})")
        expect(reply, 401, "bad_challenge")
    finally:
        other.stop()


@pytest.mark.parametrize("domain", ["ACK", "RECEIPT", "ENVELOPE", "none"])
async def test_login_signed_in_another_domain_is_401(d: dict[str, RawDesk], domain: str) -> None:
    """A login signature made with another domain prefix (e.g. Domain.ACK) is refused: 401."""
    us = d["us.caisi"]
    prefix = b"" if domain == "none" else getattr(Domain, domain)
    reply, _ = await login_reply(us, domain=prefix)
    expect(reply, 401, "bad_challenge")


async def test_login_with_self_certified_card_is_403(d: dict[str, RawDesk]) -> None:
    """A card for us.caisi certified by a foreign authority: 403 unknown_or_revoked_key."""
    us = d["us.caisi"]
    fake = Federation.create(desks=("us.caisi",)).desks["us.caisi"]
    impostor = copy.copy(us)
    impostor.secrets = fake.secrets
    reply, _ = await login_reply(impostor, card=fake.card.encode())
    expect(reply, 403, "unknown_or_revoked_key")


async def test_expired_challenge_is_401(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """A challenge answered after its lifetime is refused: 401 bad_challenge."""
    homes = make_federation(tmp_path, ("us.caisi", "cn.cac"))
    relay = RelayProcess.create(tmp_path, env={"HOTLINE_RELAY_LIMITS_CHALLENGE_TTL_S": "1"})
    relay.start()
    try:
        us = RawDesk(http, relay.url, homes["us.caisi"])
        r = await us.post("/v1/auth/challenge", ChallengeRequest(us.desk).encode(), auth=False)
        ch = Challenge.decode(r.body)
        await asyncio.sleep(1.2)
        reply, _ = await login_reply(us, nonce=ch.nonce, origin=ch.origin)
        expect(reply, 401, "bad_challenge")
        await us.login()  # a fresh challenge works
        assert (await us.get("/v1/inbox")).status == 200
    finally:
        relay.stop()


# --------------------------------------------------------------------------- confirmations


def _rewrite(confirmation: bytes, old: bytes, new: bytes) -> bytes:
    """Replace ``old`` by ``new`` inside a confirmation's signed body, keeping its signature."""
    body, sig = msgpack.unpackb(confirmation, raw=False)
    assert body.count(old) == 1
    return msgpack.packb([body.replace(old, new), sig], use_bin_type=True)


def _confirmation(kind: str, env: Envelope, me: RawDesk, *, domain: bytes | None = None,
                  claimed: RawDesk | None = None, to: str | None = None) -> bytes:
    """A confirmation of ``env`` by ``me``, optionally claiming another desk, sender or domain."""
    who = claimed or me
    body = {"v": 1, "type": kind, "notice_id": env.notice_id, "digest": env.digest,
            "to": to or env.header.sender, "from": who.desk, "from_kid": who.secrets.ik_kid,
            "at": now_ms(), "message": None}
    default = Domain.ACK if kind == "ack" else Domain.RECEIPT
    return make(me.secrets.identity, default if domain is None else domain, body).encode()


async def _acks(sender: RawDesk, env: Envelope) -> dict[str, bytes | None]:
    r = await sender.get(f"/v1/notices/{env.notice_id.hex()}/status")
    return {x.desk: x.ack for x in NoticeStatus.decode(r.body).recipients}


async def test_confirmation_replays_and_forgeries(d: dict[str, RawDesk]) -> None:
    """Replayed, transplanted, re-domained or forged acks are refused with the precise code;
    only the one genuine ack is recorded."""
    us, cn, mss = d["us.caisi"], d["cn.cac"], d["cn.mss"]
    n1, n2 = seal_to(us, cn), seal_to(us, cn)
    for env in (n1, n2):
        assert (await us.post("/v1/notices", env.raw)).status == 201
    ack1 = Confirmation.create("ack", notice_id=n1.notice_id, digest=n1.digest,
                               sender=us.desk, me=cn.secrets, at=now_ms()).encode()  # type: ignore[arg-type]
    first = await cn.post("/v1/confirmations", ack1)
    assert first.status == 200
    att = Accepted.decode(first.body)

    # The identical ack again: idempotent, same attestation; it acknowledges n1 only.
    again = await cn.post("/v1/confirmations", ack1)
    assert again.status == 200
    assert Accepted.decode(again.body) == Accepted(att.attestation, True, leaf=att.leaf)

    cases: dict[str, tuple[bytes, int, str]] = {
        # n1's ack moved to n2 (the id rewritten, n1's digest kept): the digest check fires.
        "ack_moved_to_other_notice": (_rewrite(ack1, n1.notice_id, n2.notice_id),
                                      409, "digest_mismatch"),
        # ... with n2's digest too: now only the signature is wrong.
        "ack_moved_with_digest": (_rewrite(_rewrite(ack1, n1.notice_id, n2.notice_id),
                                           n1.digest, n2.digest), 400, "bad_signature"),
        # An ack for another version of n2 (a digest the relay never accepted).
        "ack_for_other_version": (_confirmation("ack", dataclasses.replace(
            n2, raw=n2.raw + b"x"), cn), 409, "digest_mismatch"),
        # Signed with the receipt domain, or the auth domain (cross-protocol reuse).
        "ack_in_receipt_domain": (_confirmation("ack", n2, cn, domain=Domain.RECEIPT),
                                  400, "bad_signature"),
        "ack_in_auth_domain": (_confirmation("ack", n2, cn, domain=Domain.AUTH),
                               400, "bad_signature"),
        "receipt_in_ack_domain": (_confirmation("receipt", n2, cn, domain=Domain.ACK),
                                  400, "bad_signature"),
        # Claims cn.cac but is signed by cn.mss's key.
        "ack_signed_by_other_desk": (_confirmation("ack", n2, mss, claimed=cn),
                                     400, "bad_signature"),
        # Signed by cn.cac but addressed to another sender.
        "ack_to_wrong_sender": (_confirmation("ack", n2, cn, to="us.nsc"),
                                400, "not_intended_recipient"),
        # An ack of a notice the relay never saw.
        "ack_of_unknown_notice": (_confirmation("ack", seal_to(us, cn), cn), 404, "not_found"),
    }
    for name, (body, status, code) in cases.items():
        reply = await cn.post("/v1/confirmations", body)
        assert (reply.status, ErrorFrame.decode(reply.body).error) == (status, code), name
    assert await _acks(us, n1) == {"cn.cac": ack1}
    assert await _acks(us, n2) == {"cn.cac": None}
    kinds = [e for e in InboxPage.decode((await us.get("/v1/inbox?after=0&limit=500")).body).events
             if e.notice_id in (n1.notice_id, n2.notice_id)]
    assert [(e.kind, e.notice_id) for e in kinds] == [("ack", n1.notice_id)]
    # The genuine ack of n2 is still accepted.
    ack2 = _confirmation("ack", n2, cn)
    assert (await cn.post("/v1/confirmations", ack2)).status == 200


# --------------------------------------------------------------------------- the relay is blind


async def test_relay_never_stores_notice_plaintext(relay: RelayProcess,
                                                   desks: dict[str, RawDesk]) -> None:
    """A canary in a notice's title, body and ack message appears in no relay file or log line."""
    us, cn = desks["us.caisi"], desks["cn.cac"]
    canary = "CANARY-" + os.urandom(12).hex()
    env = seal_to(us, cn, report=report(title=f"{canary} title", summary=f"{canary} summary",
                                        body=f"body {canary} body"))
    assert (await us.post("/v1/notices", env.raw)).status == 201
    assert env.raw in [e.envelope for e in
                       InboxPage.decode((await cn.get("/v1/inbox")).body).events]
    ack = Confirmation.create("ack", notice_id=env.notice_id, digest=env.digest, sender=us.desk,  # type: ignore[arg-type]
                              me=cn.secrets, at=now_ms(), message=f"seen {canary}",
                              sender_keys=verified(us))
    assert (await cn.post("/v1/confirmations", ack.encode())).status == 200
    assert (await us.get(f"/v1/notices/{env.notice_id.hex()}/status")).status == 200

    needles = [canary.encode(), canary.encode("utf-16-le"), canary[7:].encode()]

    def scan() -> list[str]:
        hits = []
        files = [p for p in relay.home.rglob("*") if p.is_file()]
        assert any(p.name == "relay.db" for p in files)
        for p in files:
            data = p.read_bytes()
            hits += [f"{p.name}: {n!r}" for n in needles if n in data]
        log = "\n".join(json.dumps(x) for x in relay.lines)
        hits += [f"log: {n!r}" for n in needles if n.decode("latin-1") in log]
        return hits

    def stored() -> bytes:
        return b"".join(p.read_bytes() for p in relay.home.glob("relay.db*"))

    # Control: the scan looks where the notice is: its ciphertext and routing are there.
    assert env.ciphertext[:64] in stored() and env.notice_id in stored()
    assert any(x.get("notice_id") == env.notice_id.hex() for x in relay.lines)
    assert scan() == []
    relay.stop()  # checkpoint the WAL into the database file, flush the logs
    assert env.ciphertext[:64] in stored()
    assert scan() == []


# --------------------------------------------------------------------------- revocation


def authority_key(base: Path, country: str) -> nacl.signing.SigningKey:
    with harness_env():
        payload = read_key_file(base / f"{country}-authority" / "authority.key",
                                PASSPHRASE.encode(), kind="authority")
    return decode_signing_key(payload)[1]


def revocation(base: Path, signer_country: str, desk: str, ik_kid: bytes) -> bytes:
    return Revocation.issue(desk, ik_kid, authority_key(base, signer_country), now_ms(),  # type: ignore[arg-type]
                            "key compromised").encode()


async def test_revoked_desk_is_cut_off_at_once(tmp_path: Path, relay: RelayProcess,
                                               desks: dict[str, RawDesk],
                                               http: aiohttp.ClientSession) -> None:
    """After its authority's revocation, a desk's session is 401, its stream closed, its login
    403 and notices to it 400 bad_recipients; the other desks carry on."""
    us, nsc, cn, mss = (desks[x] for x in DESKS)
    ws = await http.ws_connect(relay.url.replace("http", "ws") + "/v1/stream?after=0",
                               headers=nsc.auth)
    r = await nsc.post("/v1/revocations", revocation(tmp_path, "us", nsc.desk,
                                                     nsc.secrets.ik_kid), auth=False)
    assert r.status == 200, r.body
    assert json.loads(r.body) == {"revoked": "us.nsc", "sessions_closed": 1}

    expect(await nsc.get("/v1/inbox"), 401, "unauthorized")
    expect(await nsc.post("/v1/notices", seal_to(nsc, cn).raw), 401, "unauthorized")
    # A notice sent on the stream it had open is refused too (or meets the closed stream).
    late = seal_to(nsc, cn)
    with contextlib.suppress(ConnectionError):
        await ws.send_bytes(client_message("submit", 1, notice=late.raw))
    msg = await ws.receive(timeout=5)
    if msg.type == aiohttp.WSMsgType.BINARY:
        answer = decode_relay_message(msg.data)
        assert (answer["type"], answer["status"], answer["error"]) == (
            "error", 401, "unauthorized"), answer
        msg = await ws.receive(timeout=5)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4403)
    await ws.close()
    await not_stored(late, cn)
    reply, _ = await login_reply(nsc)
    expect(reply, 403, "unknown_or_revoked_key")
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await http.ws_connect(relay.url + "/v1/stream", headers=nsc.auth)
    assert exc.value.status == 401

    to_nsc = seal_to(cn, nsc)
    expect(await cn.post("/v1/notices", to_nsc.raw), 400, "bad_recipients")
    to_both = seal_to(cn, mss, nsc)
    expect(await cn.post("/v1/notices", to_both.raw), 400, "bad_recipients")
    await not_stored(to_nsc, cn)
    await not_stored(to_both, cn, mss)
    await honest_round_trip(us, cn)
    await honest_round_trip(cn, us)
    assert not relay.events("request.failed")


async def test_revocation_survives_relay_restart(tmp_path: Path, relay: RelayProcess,
                                                 desks: dict[str, RawDesk]) -> None:
    """A revocation the relay accepted still holds after the relay restarts."""
    nsc, cn = desks["us.nsc"], desks["cn.cac"]
    r = await nsc.post("/v1/revocations", revocation(tmp_path, "us", nsc.desk,
                                                     nsc.secrets.ik_kid), auth=False)
    assert r.status == 200
    relay.restart()
    reply, _ = await login_reply(nsc)
    expect(reply, 403, "unknown_or_revoked_key")
    await cn.login()
    to_nsc = seal_to(cn, nsc)
    expect(await cn.post("/v1/notices", to_nsc.raw), 400, "bad_recipients")
    await not_stored(to_nsc, cn)


@pytest.mark.parametrize("named", ["us_desk", "own_desk_with_us_key"])
async def test_foreign_authority_cannot_revoke(tmp_path: Path, relay: RelayProcess,
                                               desks: dict[str, RawDesk],
                                               http: aiohttp.ClientSession, named: str) -> None:
    """The CN authority cannot revoke a US desk's key: named as the US desk's it is refused with
    400 bad_signature; slipped into a revocation of a CN desk it revokes nothing of the US desk."""
    us, nsc, cn = desks["us.caisi"], desks["us.nsc"], desks["cn.cac"]
    ws = await http.ws_connect(relay.url + "/v1/stream?after=0", headers=us.auth)
    if named == "us_desk":
        r = await us.post("/v1/revocations",
                          revocation(tmp_path, "cn", us.desk, us.secrets.ik_kid), auth=False)
        expect(r, 400, "bad_signature")
    else:
        # A CN desk named with the US desk's key id: the CN authority may revoke cn.cac, but
        # this must not touch us.caisi (its sessions, stream, login or inbound notices).
        r = await us.post("/v1/revocations",
                          revocation(tmp_path, "cn", cn.desk, us.secrets.ik_kid), auth=False)
        assert r.status in (200, 400), r.body
        if r.status == 200:
            assert json.loads(r.body)["sessions_closed"] == 0
    # The stream of us.caisi stays open and still delivers.
    env = seal_to(nsc, us)
    assert (await nsc.post("/v1/notices", env.raw)).status == 201
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.BINARY, msg
    assert decode_relay_message(msg.data)["event"].notice_id == env.notice_id
    await ws.close()
    assert (await us.get("/v1/inbox")).status == 200
    await us.login()
    await honest_round_trip(us, cn)
    await honest_round_trip(cn, us)
    # cn.cac itself was not revoked by the odd revocation either.
    assert (await cn.get("/v1/inbox")).status == 200
