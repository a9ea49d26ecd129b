"""``hotline authority ...``, ``hotline federation ...`` and ``hotline revocations ...``.

A country authority's key lives on an offline machine. It certifies and revokes only its
own country's desks, and signs federation roots. Desks and relays pin a root whose member
fingerprints they compared out of band.
"""

from __future__ import annotations

import argparse
from typing import Any

import nacl.signing

from client.cli.common import COMMON, emit, home_of, iso, print_json
from client.cli.safe_text import line
from client.home import Home, now_ms, read_document, read_passphrase
from keys import (
    AuthorityCard,
    CertRequest,
    DeskCertificate,
    FederationRoot,
    Revocation,
    RootInvalid,
    UsageError,
    country_of,
    fingerprint,
)
from keys.armor import armor
from keys.ids import Country, country
from keys.keyfile import decode_signing_key, encode_signing_key, read_key_file, write_key_file
from keys.trust import DAY_MS


def register(groups: Any) -> None:
    auth = groups.add_parser("authority", help="a country authority (offline)").add_subparsers(
        dest="cmd", metavar="ACTION", required=True
    )
    p = auth.add_parser("init", parents=[COMMON], help="create the authority key of a country")
    p.add_argument("--country", required=True, help="two-letter country code, e.g. us")
    p.set_defaults(run=cmd_init)
    p = auth.add_parser("show", parents=[COMMON], help="country and fingerprint")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_show)
    p = auth.add_parser("export", parents=[COMMON], help="print the authority's public card")
    p.add_argument("-o", "--output")
    p.set_defaults(run=cmd_export)
    p = auth.add_parser(
        "certify", parents=[COMMON], help="certify a desk of this country from its request"
    )
    p.add_argument("request", help="the desk's certification request (or - for stdin)")
    p.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    p.add_argument("-o", "--output")
    p.set_defaults(run=cmd_certify)
    p = auth.add_parser(
        "revoke", parents=[COMMON], help="revoke the identity key(s) of one of this country's desks"
    )
    p.add_argument("desk", help="desk id, e.g. us.caisi")
    p.add_argument("--key-id", help="revoke only this identity key id (hex prefix)")
    p.add_argument("--reason", default="", help="short reason, shown to peers")
    p.add_argument("-o", "--output")
    p.set_defaults(run=cmd_revoke)

    fed = groups.add_parser("federation", help="the federation root").add_subparsers(
        dest="cmd", metavar="ACTION", required=True
    )
    p = fed.add_parser(
        "create", parents=[COMMON], help="draft a root from the members' authority cards"
    )
    p.add_argument(
        "--member",
        action="append",
        required=True,
        metavar="CARD",
        help="an authority card file (repeat for each member)",
    )
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--hybrid-required-from", metavar="UTC_MS", type=int, default=None,
                   help="from this time (UTC milliseconds) on every desk must use a hybrid "
                        "encryption key: classical keys and notices are refused")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(run=cmd_fed_create)
    p = fed.add_parser("sign", parents=[COMMON], help="add this authority's signature to a root")
    p.add_argument("root")
    p.add_argument("-o", "--output", help="default: sign in place")
    p.set_defaults(run=cmd_fed_sign)
    p = fed.add_parser(
        "show", parents=[COMMON], help="members, fingerprints, validity and signatures of a root"
    )
    p.add_argument("root")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_fed_show)
    p = fed.add_parser(
        "pin", parents=[COMMON], help="pin a root in this home (first time), or accept an update"
    )
    p.add_argument("root")
    p.set_defaults(run=cmd_fed_pin)

    rev = groups.add_parser("revocations", help="revocations known here").add_subparsers(
        dest="cmd", metavar="ACTION", required=True
    )
    p = rev.add_parser(
        "add", parents=[COMMON], help="verify revocations against the pinned root and keep them"
    )
    p.add_argument("files", nargs="+")
    p.set_defaults(run=cmd_rev_add)


# --------------------------------------------------------------------------- authority


def _authority(args: argparse.Namespace) -> tuple[Home, Country, nacl.signing.SigningKey]:
    home = home_of(args)
    passphrase = read_passphrase(args.passphrase_file, what="authority key")
    name, sk = decode_signing_key(
        read_key_file(home.file("authority.key"), passphrase, kind="authority")
    )
    return home, country(name), sk


def cmd_init(args: argparse.Namespace) -> int:
    home = home_of(args)
    c = country(args.country)
    if home.exists("authority.key"):
        raise UsageError(f"{home.file('authority.key')} already exists")
    passphrase = read_passphrase(args.passphrase_file, confirm=True, what=f"authority key of {c}")
    sk = nacl.signing.SigningKey.generate()
    write_key_file(
        home.file("authority.key"),
        "authority",
        encode_signing_key(c, sk),
        passphrase,
        limits=home.authority_limits(),
    )
    card = AuthorityCard.create(c, sk, now_ms())
    home.write("authority.card", card.encode())
    print(f"authority of {c}: key created in {home.path}")
    print(f"fingerprint: {fingerprint('authority', c, card.key)}")
    print("keep this machine offline; share the card ('hotline authority export').")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    home = home_of(args)
    card = AuthorityCard.decode(home.read("authority.card", "authority card"))
    fpr = fingerprint("authority", card.country, card.key)
    if args.json:
        print_json({"country": card.country, "fingerprint": fpr})
    else:
        print(f"authority of {card.country}\nfingerprint: {fpr}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    home = home_of(args)
    emit(armor("authority-card", home.read("authority.card", "authority card")), args.output)
    return 0


def cmd_certify(args: argparse.Namespace) -> int:
    request = CertRequest.decode(read_document(args.request, "cert-request"))
    if not 1 <= args.days <= 3 * 366:
        raise UsageError("--days must be between 1 and 1098")
    home, c, sk = _authority(args)
    now = now_ms()
    cert = DeskCertificate.issue(request, c, sk, now, now + args.days * DAY_MS)
    home.write(f"issued/{cert.desk}-{cert.key_id.hex()}.cert", cert.encode())
    print(
        f"certified {cert.desk} (identity {fingerprint('desk', cert.desk, cert.identity_key)})"
        f" until {iso(cert.not_after)}",
        flush=True,
    )
    emit(armor("desk-cert", cert.encode()), args.output)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    home, c, sk = _authority(args)
    if country_of(args.desk) != c:
        raise UsageError(f"the {c} authority can revoke only {c} desks, not {args.desk}")
    issued = sorted(home.file("issued").glob(f"{args.desk}-*.cert"))
    certs = [DeskCertificate.decode(p.read_bytes()) for p in issued]
    if args.key_id:
        certs = [x for x in certs if x.key_id.hex().startswith(args.key_id.lower())]
    if not certs:
        raise UsageError(
            f"this authority has issued no certificate for {args.desk}"
            + (f" with key id {args.key_id}" if args.key_id else "")
        )
    out = []
    for cert in certs:
        rev = Revocation.issue(cert.desk, cert.key_id, sk, now_ms(), args.reason)
        home.write(f"revoked/{cert.desk}-{cert.key_id.hex()}.rev", rev.encode())
        out.append(armor("revocation", rev.encode()))
        print(f"revoked {cert.desk} identity key {cert.key_id.hex()[:16]}", flush=True)
    emit("".join(out), args.output)
    return 0


# --------------------------------------------------------------------------- federation


def cmd_fed_create(args: argparse.Namespace) -> int:
    cards = [AuthorityCard.decode(read_document(p, "authority-card")) for p in args.member]
    members: dict[Country, bytes] = {}
    for card in cards:
        if card.country in members:
            raise UsageError(f"two authority cards for {card.country}")
        members[card.country] = card.key
    if not 1 <= args.days <= 5 * 366:
        raise UsageError("--days must be between 1 and 1830")
    now = now_ms()
    root = FederationRoot.create(args.version, members, now, now + args.days * DAY_MS,
                                 hybrid_required_from=args.hybrid_required_from)
    emit(armor("root", root.encode()), args.output)
    _print_root(root, now)
    print("next: every member authority runs 'hotline federation sign' on this file")
    return 0


def cmd_fed_sign(args: argparse.Namespace) -> int:
    root = FederationRoot.decode(read_document(args.root, "root"))
    _, c, sk = _authority(args)
    if root.members.get(c) != bytes(sk.verify_key) and c in root.members:
        raise UsageError(f"this root lists another key for {c} than this authority's")
    root = root.signed_by(c, sk)
    emit(armor("root", root.encode()), args.output or args.root)
    print(f"signed by {c}; signatures now: {', '.join(sorted(root.signatures))}")
    return 0


def _print_root(root: FederationRoot, now: int) -> None:
    valid = root.valid_signers(root.members)
    print(
        f"federation root v{root.version}, issued {iso(root.issued_at)}, "
        f"expires {iso(root.expires_at)}" + ("  [EXPIRED]" if now >= root.expires_at else "")
    )
    for c, key in root.members.items():
        state = "signed" if c in valid else "NOT SIGNED"
        print(f"  {line(c)}  {fingerprint('authority', c, key)}  {state}")


def cmd_fed_show(args: argparse.Namespace) -> int:
    root = FederationRoot.decode(read_document(args.root, "root"))
    now = now_ms()
    if args.json:
        valid = root.valid_signers(root.members)
        print_json(
            {
                "version": root.version,
                "issued_at": iso(root.issued_at),
                "expires_at": iso(root.expires_at),
                "members": [
                    {
                        "country": c,
                        "fingerprint": fingerprint("authority", c, k),
                        "signed": c in valid,
                    }
                    for c, k in root.members.items()
                ],
            }
        )
    else:
        _print_root(root, now)
    return 0


def cmd_fed_pin(args: argparse.Namespace) -> int:
    home = home_of(args)
    root = FederationRoot.decode(read_document(args.root, "root"))
    now = now_ms()
    if home.exists("root"):
        previous = home.root()
        root.check_update(previous, now)
        what = f"updated the pinned root from v{previous.version} to v{root.version}"
    else:
        root.check_initial(now)
        what = f"pinned federation root v{root.version}"
    home.write("root", root.encode())
    print(what)
    _print_root(root, now)
    print("compare these fingerprints with each member authority out of band.")
    return 0


def cmd_rev_add(args: argparse.Namespace) -> int:
    home = home_of(args)
    trust = home.trust(now_ms())
    for path in args.files:
        data = read_document(path, "revocation")
        rev = Revocation.decode(data)
        trust.add_revocation(rev)
        home.write(f"revocations/{rev.desk}-{rev.ik_kid.hex()}.rev", rev.encode())
        print(f"revocation of {line(rev.desk)} key {rev.ik_kid.hex()[:16]} verified and kept")
    return 0


__all__ = ["RootInvalid", "register"]
