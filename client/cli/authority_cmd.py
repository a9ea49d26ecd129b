"""``hotline authority ...``, ``hotline federation ...`` and ``hotline revocations ...``.

A country authority's key lives on an offline machine. It certifies and revokes only its
own country's desks, and signs federation roots. Desks and relays pin a root whose member
fingerprints they compared out of band.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import aiohttp
import nacl.signing

from client.cli.common import COMMON, emit, home_of, iso, kdf_progress, need, print_json
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
from keys.armor import armor, dearmor_all
from keys.errors import HotlineError
from keys.frames import ErrorFrame
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
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_show)
    p = auth.add_parser("export", parents=[COMMON], help="print the authority's public card")
    p.add_argument("-o", "--output", help="write to this file (default: stdout)")
    p.set_defaults(run=cmd_export)
    p = auth.add_parser(
        "certify", parents=[COMMON], help="certify a desk of this country from its request"
    )
    p.add_argument("request", help="the desk's certification request (or - for stdin)")
    p.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    p.add_argument("-o", "--output", help="write to this file (default: stdout)")
    p.set_defaults(run=cmd_certify)
    p = auth.add_parser(
        "revoke", parents=[COMMON], help="revoke the identity key(s) of one of this country's desks"
    )
    p.add_argument("desk", help="desk id, e.g. us.caisi")
    p.add_argument("--key-id", help="revoke only this identity key id (hex prefix)")
    p.add_argument("--reason", default="", help="short reason, shown to peers")
    p.add_argument("-o", "--output", help="write to this file (default: stdout)")
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
    p.add_argument("--version", type=int, default=1,
                   help="root version; an update must be higher (default 1)")
    p.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    p.add_argument("--hybrid-required-from", metavar="UTC_MS", type=int, default=None,
                   help="from this time (UTC milliseconds) on every desk must use a hybrid "
                        "encryption key: classical keys and notices are refused")
    p.add_argument("-o", "--output", required=True, help="write the draft root to this file")
    p.set_defaults(run=cmd_fed_create)
    p = fed.add_parser("sign", parents=[COMMON], help="add this authority's signature to a root")
    p.add_argument("root", help="the root file")
    p.add_argument("-o", "--output", help="default: sign in place")
    p.set_defaults(run=cmd_fed_sign)
    p = fed.add_parser(
        "show", parents=[COMMON], help="members, fingerprints, validity and signatures of a root"
    )
    p.add_argument("root", help="the root file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_fed_show)
    p = fed.add_parser(
        "pin", parents=[COMMON], help="pin a root in this home (first time), or accept an update"
    )
    p.add_argument("root", help="the root file")
    p.set_defaults(run=cmd_fed_pin)
    from client.cli import evidence_cmd

    evidence_cmd.register_federation(fed)

    rev = groups.add_parser("revocations", help="revocations known here").add_subparsers(
        dest="cmd", metavar="ACTION", required=True
    )
    p = rev.add_parser(
        "add", parents=[COMMON], help="verify revocations against the pinned root and keep them"
    )
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="revocation files, raw or armoured (several to a file, as "
                        "'hotline authority revoke' writes them)")
    p.set_defaults(run=cmd_rev_add)
    p = rev.add_parser(
        "post", parents=[COMMON],
        help="hand revocations to a relay, which enforces them and serves them to every desk",
    )
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="revocation files, raw or armoured")
    p.add_argument("--relay", action="append", default=[], metavar="URL",
                   help="relay URL (default $HOTLINE_RELAY, else relays in config.toml)")
    p.set_defaults(run=cmd_rev_post)
    p = rev.add_parser("list", parents=[COMMON], help="the revocations this home knows")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=cmd_rev_list)


# --------------------------------------------------------------------------- authority


#: Shortest passphrase accepted for a new authority key (it guards a whole country's desks).
MIN_AUTHORITY_PASSPHRASE = 12


def _own_country(home: Home) -> Country:
    """The authority's country from its public card: known before the key is decrypted."""
    need(home, "authority.key", "authority key", "run 'hotline authority init --country CC' "
         "or pass the authority's --home")
    return AuthorityCard.decode(home.read("authority.card", "authority card")).country


def _authority(args: argparse.Namespace) -> tuple[Home, Country, nacl.signing.SigningKey]:
    home = home_of(args)
    _own_country(home)
    passphrase = read_passphrase(args.passphrase_file, what="authority key")
    kdf_progress(home.authority_limits(), "opening the authority key")
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
    if len(passphrase.decode("utf-8", "replace")) < MIN_AUTHORITY_PASSPHRASE:
        raise UsageError(f"an authority key's passphrase must have at least "
                         f"{MIN_AUTHORITY_PASSPHRASE} characters; nothing was created")
    kdf_progress(home.authority_limits(), "protecting the authority key")
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
    own = _own_country(home_of(args))
    if country_of(request.desk) != own:
        raise UsageError(f"the {own} authority can certify only {own} desks, not "
                         f"{request.desk}: its own country's authority certifies it")
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
    own = _own_country(home_of(args))
    if country_of(args.desk) != own:
        raise UsageError(f"the {own} authority can revoke only {own} desks, not {args.desk}")
    home, _, sk = _authority(args)
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
        what = (f"federation root v{root.version} is pinned already (unchanged)"
                if root.body == previous.body else
                f"updated the pinned root from v{previous.version} to v{root.version}")
    else:
        root.check_initial(now)
        what = f"pinned federation root v{root.version}"
    home.write("root", root.encode())
    print(what)
    _print_root(root, now)
    print("compare these fingerprints with each member authority out of band.")
    return 0


def _revocation_files(paths: list[str]) -> list[tuple[str, Revocation]]:
    out = []
    for path in paths:
        data = read_document(path, "revocation", raw=True)
        try:
            out += [(path, Revocation.decode(doc)) for doc in dearmor_all("revocation", data)]
        except HotlineError as exc:
            raise UsageError(f"{path}: not a revocation: {exc}") from exc
    return out


def cmd_rev_add(args: argparse.Namespace) -> int:
    home = home_of(args)
    trust = home.trust(now_ms())
    for path, rev in _revocation_files(args.files):
        try:
            trust.add_revocation(rev)
        except HotlineError as exc:
            raise UsageError(f"{path}: the revocation of {rev.desk} does not verify: {exc}"
                             ) from exc
        home.keep_revocation(rev)
        print(f"revocation of {line(rev.desk)} key {rev.ik_kid.hex()[:16]} verified and kept")
    return 0


def cmd_rev_post(args: argparse.Namespace) -> int:
    from client.client import relay_urls  # the relay client is needed by this command only

    home = home_of(args)
    revs = _revocation_files(args.files)
    if home.exists("root"):
        # Checked here first so that a wrong file is named before anything is sent.
        trust = home.trust(now_ms())
        for path, rev in revs:
            try:
                trust.add_revocation(rev)
            except HotlineError as exc:
                raise UsageError(f"{path}: the revocation of {rev.desk} does not verify: "
                                 f"{exc}") from exc
    urls = relay_urls(home, args.relay)
    if not urls:
        raise UsageError("no relay URL: pass --relay URL, set HOTLINE_RELAY, or put "
                         "relays = [...] in config.toml")
    return asyncio.run(_post_revocations(urls[0].rstrip("/"), revs))


async def _post_revocations(url: str, revs: list[tuple[str, Revocation]]) -> int:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for path, rev in revs:
            try:
                async with http.post(url + "/v1/revocations", data=rev.encode(),
                                     headers={"Content-Type": "application/msgpack"}) as r:
                    body = await r.content.read(64 * 1024)
                    status = r.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UsageError(f"cannot reach the relay at {url}: {exc}") from exc
            if status != 200:
                try:
                    frame = ErrorFrame.decode(body)
                    why = f"{frame.error}: {frame.detail}"
                except HotlineError:
                    why = body[:200].decode("utf-8", "replace")
                raise UsageError(f"{path}: the relay at {url} refused the revocation of "
                                 f"{rev.desk} ({status} {why})")
            try:
                closed = json.loads(body).get("sessions_closed", 0)
            except (ValueError, AttributeError):
                closed = "?"
            print(f"revocation of {rev.desk} key {rev.ik_kid.hex()[:16]} accepted by {url} "
                  f"({closed} sessions closed)")
    return 0


def cmd_rev_list(args: argparse.Namespace) -> int:
    home = home_of(args)
    revs = home.revocations()
    if args.json:
        for path, rev in revs:
            print_json({"desk": rev.desk, "key_id": rev.ik_kid.hex(),
                        "revoked_at": rev.revoked_at, "reason": rev.reason,
                        "file": str(path)})
        return 0
    if not revs:
        print("no revocations known here")
    for _path, rev in revs:
        reason = f" ({rev.reason})" if rev.reason else ""
        print(f"{rev.desk}  key {rev.ik_kid.hex()[:16]}  revoked {iso(rev.revoked_at)}{reason}")
    return 0


__all__ = ["RootInvalid", "register"]
