"""``hotline keys ...`` and ``hotline contacts ...``: a desk's own keys and its peers' cards."""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

import nacl.public
import nacl.signing

from client.cli.common import COMMON, emit, home_of, iso, need, print_json
from client.cli.safe_text import line
from client.home import now_ms, read_document, read_passphrase
from keys import (
    CertRequest,
    DeskCard,
    DeskCertificate,
    DeskSecrets,
    EkCertificate,
    EncryptionKeyPair,
    UsageError,
    desk_id,
    fingerprint,
)
from keys.armor import armor
from keys.errors import HotlineError
from keys.primitives import key_id
from keys.trust import DAY_MS, DEFAULT_EK_GRACE_MS, DEFAULT_EK_LIFETIME_MS
from keys.xwing import XWingPrivateKey


def register(groups: Any) -> None:
    keys = groups.add_parser("keys", help="this desk's keys").add_subparsers(
        dest="cmd", metavar="ACTION", required=True
    )

    p = keys.add_parser(
        "init", parents=[COMMON], help="create this desk's identity and encryption keys"
    )
    p.add_argument("--id", required=True, help="desk id, e.g. us.caisi")
    p.add_argument("--relay", action="append", default=[], help="relay URL (repeatable)")
    p.add_argument("--force", action="store_true", help="replace existing keys")
    p.add_argument("--classical", action="store_true",
                   help="an X25519-only encryption key (default: hybrid X-Wing, ML-KEM-768 + "
                        "X25519); only for a federation whose desks cannot all read hybrid yet")
    p.set_defaults(run=cmd_init)

    p = keys.add_parser(
        "install", parents=[COMMON], help="install the certificate your authority issued"
    )
    p.add_argument("cert", help="desk certificate file (or - for stdin)")
    p.set_defaults(run=cmd_install)

    p = keys.add_parser("show", parents=[COMMON], help="desk id, fingerprints and validity")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_show)

    p = keys.add_parser("export", parents=[COMMON], help="print this desk's public card")
    p.add_argument("-o", "--output", help="write to this file (default: stdout)")
    p.set_defaults(run=cmd_export)

    p = keys.add_parser(
        "rotate",
        parents=[COMMON],
        help="make a new encryption key; keep the old one for a grace period",
    )
    p.add_argument("--days", type=int, default=DEFAULT_EK_LIFETIME_MS // DAY_MS,
                   help="lifetime of the new key in days (default %(default)s)")
    p.add_argument("--grace-days", type=int, default=DEFAULT_EK_GRACE_MS // DAY_MS,
                   help="days the old key still opens notices after it expires "
                        "(default %(default)s)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--hybrid", action="store_true",
                      help="make the new key hybrid (X-Wing: ML-KEM-768 + X25519)")
    kind.add_argument("--classical", action="store_true",
                      help="make the new key X25519 only (refused once this desk is hybrid)")
    p.set_defaults(run=cmd_rotate)

    p = keys.add_parser(
        "publish", parents=[COMMON],
        help="give the relay this desk's card now, so it can receive before it first connects",
    )
    p.add_argument("--relay", action="append", default=[], metavar="URL",
                   help="relay URL (repeatable; default $HOTLINE_RELAY, else config.toml)")
    p.set_defaults(run=cmd_publish)

    p = keys.add_parser(
        "pin-relay", parents=[COMMON],
        help="pin the relay's (new) key, after checking its fingerprint read out of band",
    )
    p.add_argument("--fingerprint", required=True,
                   help="the relay fingerprint the operator gave you (six groups of digits)")
    p.add_argument("--relay", action="append", default=[], metavar="URL",
                   help="relay URL (default $HOTLINE_RELAY, else config.toml)")
    p.set_defaults(run=cmd_pin_relay)

    contacts = groups.add_parser("contacts", help="other desks' verified cards").add_subparsers(
        dest="cmd", metavar="ACTION", required=True
    )
    p = contacts.add_parser(
        "add", parents=[COMMON], help="verify a desk card against the pinned root and keep it"
    )
    p.add_argument("cards", nargs="+", metavar="CARD", help="desk card files")
    p.set_defaults(run=cmd_contacts_add)
    p = contacts.add_parser("list", parents=[COMMON], help="list known desks with fingerprints")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_contacts_list)


def _new_ek(
    ik: nacl.signing.SigningKey, desk: str, now: int, days: int, grace_days: int,
    *, hybrid: bool = True,
) -> tuple[EncryptionKeyPair, EkCertificate]:
    if not 1 <= days <= 366 or not 0 <= grace_days <= 366:
        raise UsageError("--days must be 1..366 and --grace-days 0..366")
    sk: nacl.public.PrivateKey | XWingPrivateKey
    if hybrid:
        sk = XWingPrivateKey.generate(os.urandom)
        public = sk.public_key
    else:
        sk = nacl.public.PrivateKey.generate()
        public = bytes(sk.public_key)
    not_after = now + days * DAY_MS
    pair = EncryptionKeyPair(sk, now, not_after, not_after + grace_days * DAY_MS)
    cert = EkCertificate.issue(desk_id(desk), ik, public, now, not_after)
    return pair, cert


def cmd_init(args: argparse.Namespace) -> int:
    home = home_of(args)
    desk = desk_id(args.id)
    for url in args.relay:
        if not re.match(r"^https?://[^\s/]+", url):
            raise UsageError(f"relay URL {url!r} must start with http:// or https://")
    if home.exists("desk.key") and not args.force:
        raise UsageError(f"{home.file('desk.key')} exists; use --force to replace these keys")
    passphrase = read_passphrase(args.passphrase_file, confirm=True, what=f"desk {desk}")
    now = now_ms()
    ik = nacl.signing.SigningKey.generate()
    pair, ek_cert = _new_ek(
        ik, desk, now, DEFAULT_EK_LIFETIME_MS // DAY_MS, DEFAULT_EK_GRACE_MS // DAY_MS,
        hybrid=not args.classical,
    )
    home.write_desk_secrets(DeskSecrets(desk, ik, (pair,)), passphrase)
    home.write_ek_certs([ek_cert])
    request = CertRequest.create(desk, ik, now)
    home.write("desk.request", armor("cert-request", request.encode()).encode())
    home.write_config({"desk": desk, "relays": args.relay} if args.relay else {"desk": desk})
    for stale in ("desk.cert",):
        home.file(stale).unlink(missing_ok=True)
    print(f"desk {desk}: keys created in {home.path}")
    print(f"identity fingerprint: {fingerprint('desk', desk, bytes(ik.verify_key))}")
    print(f"certification request: {home.file('desk.request')}")
    print("next: give the request to your country authority ('hotline authority certify'),")
    print("      then install the certificate with 'hotline keys install CERT'.")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    home = home_of(args)
    need(home, "desk.key", "desk key", "run 'hotline keys init --id cc.name' or pass the "
         "desk's --home")
    cert = DeskCertificate.decode(read_document(args.cert, "desk-cert"))
    passphrase = read_passphrase(args.passphrase_file, what="desk key")
    secrets = home.desk_secrets(passphrase)
    if cert.desk != secrets.desk or cert.identity_key != bytes(secrets.identity.verify_key):
        raise UsageError(
            f"this certificate is for {cert.desk} key "
            f"{cert.key_id.hex()[:16]}, not for this desk's identity key"
        )
    if home.exists("root"):
        home.trust(now_ms()).verify_cert(cert, now_ms())
    home.write("desk.cert", cert.encode())
    print(
        f"installed the certificate of {cert.desk}, valid {iso(cert.not_before)} to "
        f"{iso(cert.not_after)}"
    )
    print("next: 'hotline keys publish' gives the relay this desk's card, so that other desks "
          "can send to it before it first connects")
    return 0


def _describe(args: argparse.Namespace) -> dict[str, Any]:
    home = home_of(args)
    desk = home.desk_id()
    info: dict[str, Any] = {"desk": desk, "home": str(home.path)}
    if home.exists("desk.cert"):
        cert = home.desk_cert()
        info.update(
            identity_fingerprint=fingerprint("desk", desk, cert.identity_key),
            identity_key_id=cert.key_id.hex(),
            certified_from=iso(cert.not_before),
            certified_until=iso(cert.not_after),
        )
    else:
        request = CertRequest.decode(read_document(home.file("desk.request"), "cert-request"))
        info.update(
            identity_fingerprint=fingerprint("desk", desk, request.identity_key),
            identity_key_id=key_id(request.identity_key).hex(),
            certified_until=None,
        )
    info["encryption_keys"] = [
        {"key_id": c.key_id.hex(), "kem": c.kem, "valid_from": iso(c.not_before),
         "valid_until": iso(c.not_after)}
        for c in home.ek_certs()
    ]
    info["relays"] = home.config().get("relays", [])
    if home.exists("root"):
        root = home.root()
        info["federation_root"] = {"version": root.version, "expires": iso(root.expires_at)}
    return info


def cmd_publish(args: argparse.Namespace) -> int:
    from client.cli import desk_cmd  # the desk commands own the client set-up

    desk = desk_cmd._run(args, lambda client: client.publish_card())
    print(f"the relay holds the card of {desk}: notices to it are accepted and wait there "
          "until it connects")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    info = _describe(args)
    if args.json:
        print_json(info)
        return 0
    print(f"desk:                 {line(info['desk'])}")
    print(f"identity fingerprint: {info['identity_fingerprint']}")
    print(f"identity key id:      {info['identity_key_id']}")
    if info.get("certified_until"):
        print(f"certified:            {info['certified_from']} to {info['certified_until']}")
    else:
        print("certified:            not yet (install the certificate from your authority)")
    for ek in info["encryption_keys"]:
        print(
            f"encryption key:       {ek['key_id'][:16]}  {ek['kem']}  valid {ek['valid_from']} to "
            f"{ek['valid_until']}"
        )
    if "federation_root" in info:
        root = info["federation_root"]
        print(f"federation root:      v{root['version']}, expires {root['expires']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    home = home_of(args)
    card = home.card(now_ms())
    emit(armor("desk-card", card.encode()), args.output)
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    home = home_of(args)
    need(home, "desk.key", "desk key", "run 'hotline keys init --id cc.name' or pass the "
         "desk's --home")
    passphrase = read_passphrase(args.passphrase_file, what="desk key")
    secrets = home.desk_secrets(passphrase)
    now = now_ms()
    was_hybrid = secrets.hybrid_since() is not None
    if args.classical and was_hybrid:
        raise UsageError(
            f"{secrets.desk} already has a hybrid key: rotating back to a classical key would "
            "be a downgrade (its peers refuse classical stanzas to it)"
        )
    # Without a flag a desk keeps its kind; --hybrid moves it (the migration step).
    hybrid = args.hybrid or was_hybrid
    pair, cert = _new_ek(secrets.identity, secrets.desk, now, args.days, args.grace_days,
                         hybrid=hybrid)
    kept = tuple(p for p in secrets.encryption_keys if p.keep_until > now)
    # Only the new key is published from now on; the older private keys still open
    # notices already in flight until their keep_until.
    home.write_desk_secrets(DeskSecrets(secrets.desk, secrets.identity, (pair, *kept)), passphrase)
    home.write_ek_certs([cert])
    print(
        f"new {'hybrid (X-Wing)' if hybrid else 'classical (X25519)'} encryption key "
        f"{cert.key_id.hex()[:16]} valid until {iso(cert.not_after)}; "
        f"{len(kept)} older key(s) kept to open notices in flight"
    )
    print("publish the new card: 'hotline keys export'")
    return 0


def cmd_contacts_add(args: argparse.Namespace) -> int:
    home = home_of(args)
    now = now_ms()
    trust = home.trust(now)
    for path in args.cards:
        card = DeskCard.decode(read_document(path, "desk-card"))
        verified = trust.verify_card(card, now)
        home.write(f"contacts/{card.desk}.card", card.encode())
        print(
            f"{line(card.desk)}: verified, fingerprint "
            f"{fingerprint('desk', card.desk, bytes(verified.identity_key))}"
        )
    return 0


def cmd_contacts_list(args: argparse.Namespace) -> int:
    home = home_of(args)
    now = now_ms()
    trust = home.trust(now)
    for desk, card in home.contacts().items():
        try:
            trust.verify_card(card, now)
            state = "valid"
        except HotlineError as exc:  # list every contact, valid or not
            state = f"INVALID: {exc}"
        fpr = fingerprint("desk", desk, card.cert.identity_key)
        if args.json:
            print_json({"desk": desk, "fingerprint": fpr, "state": state})
        else:
            print(f"{line(desk):20} {fpr}  {line(state)}")
    return 0


def cmd_pin_relay(args: argparse.Namespace) -> int:
    """Fetch every configured relay's card; pin it only if its fingerprint is the one given
    (the previous pin is kept as relay.card.previous)."""
    import asyncio

    import aiohttp

    from client.client import HomePin, relay_urls
    from keys import RelayCard

    home = home_of(args)
    want = re.sub(r"\D", "", args.fingerprint)
    if len(want) != 30:
        raise UsageError("--fingerprint is six groups of five digits")
    urls = relay_urls(home, args.relay)
    if not urls:
        raise UsageError("no relay URL: use --relay URL or set HOTLINE_RELAY")

    async def fetch(url: str) -> bytes:
        timeout = aiohttp.ClientTimeout(total=30)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http, \
                    http.get(url.rstrip("/") + "/v1/relay") as r:
                if r.status != 200:
                    raise UsageError(f"the relay at {url} answered HTTP {r.status}")
                return await r.read()
        except aiohttp.ClientError as exc:
            raise UsageError(f"cannot reach the relay at {url}: {exc}") from exc

    cards = [(url, RelayCard.decode(asyncio.run(fetch(url)))) for url in urls]
    for url, card in cards:
        got = fingerprint("relay", card.relay_id, card.key)
        if re.sub(r"\D", "", got) != want:
            raise UsageError(f"the relay at {url} presents {got} ({line(card.relay_id)}), not "
                             f"the fingerprint given; nothing pinned")
    card = cards[0][1]
    if any(c.key != card.key or c.relay_id != card.relay_id for _, c in cards):
        raise UsageError("the configured relays present different keys; nothing pinned")
    pin = HomePin(home)
    previous = pin.load()
    if previous is not None:
        home.write("relay.card.previous", previous.encode())
    pin.save(card)
    print(f"pinned relay {line(card.relay_id)}, fingerprint "
          f"{fingerprint('relay', card.relay_id, card.key)}"
          + ("" if previous is None or previous.key != card.key
             else " (unchanged)"))
    return 0
