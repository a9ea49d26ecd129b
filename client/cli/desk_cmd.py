"""``hotline send|inbox|show|ack|watch|status``: a desk's daily work.

Parse, call :class:`client.client.HotlineClient`, render. Listings print one line per item,
or with ``--json`` one JSON object per line. The relay URL comes from ``--relay`` (repeat
it for several URLs of one relay), else $HOTLINE_RELAY, else ``relays`` in config.toml.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import mimetypes
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from client.cli import outbox_cmd, relays_cmd
from client.cli.common import COMMON, colour, home_of, iso, need, print_json, tag
from client.cli.evidence_cmd import record_warning
from client.cli.live import LinkView
from client.cli.safe_text import SafeFormatter, block, line
from client.client import (
    ConfirmationEvent,
    EscalationEvent,
    HotlineClient,
    Item,
    ReceivedNotice,
    UnknownNotice,
)
from client.connection import LinkState
from client.drills import parse_duration
from client.home import now_ms
from client.items import (
    ClockSkewWarning,
    NoticeRejectedByRecipient,
    UnopenedNotice,
    WatchdogOverdue,
)
from client.record import LogInconsistent
from client.verify import NoticeStatusView, Step
from client.watchdog import WatchdogPolicy
from keys.errors import HotlineError, UsageError
from keys.ids import SEVERITIES, STATUSES, desk_id
from keys.receipts import RelayCard
from keys.report import (
    CATEGORIES,
    DEFAULT_MAX_NOTICE_BYTES,
    MAX_BODY,
    TLP_LABELS,
    Attachment,
    IncidentReport,
    Reference,
)

T = TypeVar("T")


def register(groups: Any) -> None:
    """Register the desk commands."""
    relay = argparse.ArgumentParser(add_help=False)
    relay.add_argument(
        "--relay", action="append", default=[], metavar="URL",
        help="relay URL (repeatable; default $HOTLINE_RELAY, else relays in config.toml)",
    )
    relay.add_argument("-v", "--verbose", action="store_true", help="log each relay exchange")
    parents = [COMMON, relay]

    p = groups.add_parser("send", parents=parents, help="seal and send a notice")
    p.add_argument("--to", action="append", required=True, metavar="DESK",
                   help="recipient desk, e.g. cn.cac (repeatable)")
    p.add_argument("--severity", required=True, choices=SEVERITIES,
                   help="sets the acknowledgement deadline: " + ", ".join(SEVERITIES))
    p.add_argument("--title", required=True, help="a one-line title")
    body = p.add_mutually_exclusive_group(required=True)
    body.add_argument("--body", help="the notice's text")
    body.add_argument("--body-file", metavar="FILE", help="read the text from FILE (- for stdin)")
    p.add_argument("--summary", default="", help="a short summary (default: none)")
    p.add_argument("--category", choices=CATEGORIES, default="other",
                   help="the kind of incident (default other)")
    p.add_argument("--status", choices=STATUSES, default="actual",
                   help="actual, or exercise/test (never paged as real; default actual)")
    p.add_argument("--tlp", choices=TLP_LABELS, default="amber",
                   help="Traffic Light Protocol label (default amber)")
    p.add_argument("--lang", default="en", help="language of the text (default en)")
    p.add_argument("--aware-at", metavar="ISO",
                   help="when you became aware of the incident, ISO 8601 (UTC if no zone; "
                        "default now)")
    p.add_argument("--attach", action="append", default=[], metavar="FILE",
                   help="attach a file (repeatable)")
    p.add_argument("--in-reply-to", metavar="ID", help="the notice this one answers")
    p.add_argument("--id", dest="notice_id", metavar="HEX",
                   help="use this notice id (32 hex digits): sending again with the same id "
                        "never duplicates the notice")
    p.add_argument("--require", default="1", metavar="N|all",
                   help="with several relays: acceptances needed (default 1; the others "
                        "are posted again from the outbox); 'all' for scripts")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    outbox_cmd.add_queue_options(p)
    p.set_defaults(run=cmd_send)

    p = groups.add_parser("reply", parents=parents,
                          help="answer a received notice (meets its response deadline)")
    p.add_argument("id", help="the notice answered (or a unique prefix of 6+ hex digits)")
    p.add_argument("--title", help="default: 'Re: ' and the original title")
    body = p.add_mutually_exclusive_group(required=True)
    body.add_argument("--body", help="the reply's text")
    body.add_argument("--body-file", metavar="FILE", help="read the text from FILE (- for stdin)")
    p.add_argument("--summary", default="", help="a short summary (default: none)")
    p.add_argument("--attach", action="append", default=[], metavar="FILE",
                   help="attach a file (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    outbox_cmd.add_queue_options(p)
    p.set_defaults(run=cmd_reply)

    p = groups.add_parser("inbox", parents=parents,
                          help="fetch new notices and list the received ones")
    p.add_argument("--all", action="store_true", help="also list acknowledged notices")
    p.add_argument("--local", action="store_true", help="do not contact the relay")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=cmd_inbox)

    p = groups.add_parser("show", parents=parents, help="show a received notice")
    p.add_argument("id", help="notice id (or a unique prefix of 6+ hex digits)")
    p.add_argument("--save-attachments", metavar="DIR", help="write its attachments into DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_show)

    p = groups.add_parser("ack", parents=parents, help="acknowledge a received notice")
    p.add_argument("id", help="notice id (or a unique prefix of 6+ hex digits)")
    p.add_argument("--message", help="a short message, readable only by the sender")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    outbox_cmd.add_queue_options(p)
    p.set_defaults(run=cmd_ack)

    p = groups.add_parser("watch", parents=parents,
                          help="follow the live stream: notices, receipts, acks, escalations")
    p.add_argument("--count", type=int, metavar="N", help="stop after N events")
    p.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--link-test", action="append", default=[], metavar="DESK",
                   help="also send link tests (status test) to DESK on a schedule and say "
                        "LINK DOWN / LINK RESTORED (repeatable; see 'hotline drill')")
    p.add_argument("--link-every", default="1h", metavar="INTERVAL",
                   help="interval between link tests with --link-test (default 1h)")
    p.add_argument("--link-window", default=None, metavar="INTERVAL",
                   help="how long a link test's receipt may take (default: a tenth of "
                        "--link-every, at least 1m)")
    p.set_defaults(run=cmd_watch)

    p = groups.add_parser("status", parents=parents,
                          help="delivery and acknowledgement of a notice, verified")
    p.add_argument("id", help="notice id (or a unique prefix of 6+ hex digits)")
    p.add_argument("--json", action="store_true", help="one JSON object per recipient")
    p.set_defaults(run=cmd_status)


# ----------------------------------------------------------------------------- plumbing


def _setup_logging(verbose: bool) -> None:
    logger = logging.getLogger("hotline.client")
    for h in logger.handlers:
        if getattr(h, "_hotline_cli", False) and isinstance(h, logging.StreamHandler):
            h.stream = sys.stderr  # a command run in-process may have a new stderr
            break
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(SafeFormatter("hotline: %(message)s"))
        handler._hotline_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.INFO if verbose else logging.WARNING)


def _pinned(card: RelayCard, fpr: str) -> None:
    print(
        f"hotline: pinned relay {line(card.relay_id)} on first use, fingerprint {fpr}\n"
        "hotline: compare it with the operator's out of band",
        file=sys.stderr,
    )


def _client(args: argparse.Namespace) -> HotlineClient:
    home = home_of(args)
    need(home, "desk.key", "desk key", "run 'hotline keys init --id cc.name' or pass the "
         "desk's --home")
    _setup_logging(getattr(args, "verbose", False))
    return HotlineClient.from_home(
        getattr(args, "home", None),
        passphrase_file=getattr(args, "passphrase_file", None),
        relays=getattr(args, "relay", None) or None,
        on_relay_pinned=_pinned,
        policy=outbox_cmd.policy_for(args),
    )


def _run(args: argparse.Namespace, body: Callable[[HotlineClient], Awaitable[T]]) -> T:
    client = _client(args)

    async def main() -> T:
        # Not "async with": a start() that fails would skip close() and leave the HTTP
        # session open ("Unclosed client session" after the error message).
        try:
            await client.start()
            return await body(client)
        finally:
            await client.close()

    return asyncio.run(main())


def iso8601(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def parse_time(value: str) -> int:
    """UTC milliseconds from an ISO 8601 time (a time without a zone is taken as UTC)."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise UsageError(
            f"--aware-at {value!r} is not an ISO 8601 time (e.g. 2026-03-01T02:10:00Z)"
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _read_text(path: str, what: str, limit: int) -> str:
    try:
        data = sys.stdin.buffer.read(limit * 4 + 1) if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path} is not UTF-8 text") from exc
    if len(text) > limit:
        raise UsageError(f"{what} {path} has {len(text)} characters; the limit is {limit}")
    return text


def _attachment(path: str) -> Attachment:
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > DEFAULT_MAX_NOTICE_BYTES:
            raise UsageError(f"attachment {path} is {size} bytes; a whole notice is limited "
                             f"to {DEFAULT_MAX_NOTICE_BYTES}")
        data = p.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read attachment {path}: {exc.strerror}") from exc
    media_type = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
    return Attachment(p.name, media_type, data)


def build_report(args: argparse.Namespace, now: int) -> IncidentReport:
    body = args.body if args.body is not None else _read_text(args.body_file, "body file",
                                                             MAX_BODY)
    return IncidentReport(
        title=args.title,
        summary=args.summary,
        body=body,
        category=args.category,
        aware_at=parse_time(args.aware_at) if args.aware_at else now,
        tlp=args.tlp,
        lang=args.lang,
        attachments=tuple(_attachment(f) for f in args.attach),
    ).validate()


def _notice_json(n: ReceivedNotice) -> dict[str, Any]:
    return {
        "notice_id": n.notice_id.hex(),
        "sender": n.sender,
        "recipients": list(n.notice.recipients),
        "severity": n.severity,
        "status": n.status,
        "title": n.report.title,
        "category": n.report.category,
        "tlp": n.report.tlp,
        "created_at": iso8601(n.notice.created_at),
        "accepted_at": iso8601(n.accepted_at),
        "received_at": iso8601(n.received_at),
        "acked": n.acked_at is not None,
        "acked_at": iso8601(n.acked_at),
        "in_reply_to": n.notice.in_reply_to.hex() if n.notice.in_reply_to else None,
    }


def duration(ms: int) -> str:
    """``"42 s"``, ``"7 min"``, ``"3 h 05 min"``, ``"2 d 4 h"``."""
    seconds = max(0, ms) // 1000
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def default_ack_by(n: ReceivedNotice) -> int:
    """When ``n`` must be acknowledged under the federation's default windows (the same
    the sender's watchdog uses), counted from the relay's acceptance. The relay's frozen
    policy can differ per recipient: ``send`` and ``status`` show that one."""
    return WatchdogPolicy().deadline(n.severity, n.accepted_at)


async def _ack_deadlines(client: HotlineClient, notice_id: bytes, severity: str,
                         accepted_at: int) -> dict[str, int]:
    """Each recipient's acknowledgement deadline from the policy the relay froze with the
    notice; the default windows if the relay does not say (or cannot be asked now)."""
    try:
        view = await client.status(notice_id)
    except HotlineError:
        view = None
    out = {}
    for desk in (r.desk for r in view.recipients) if view is not None else ():
        p = (view.policy or {}).get(desk) if view is not None else None
        window = p.get("ack_window_ms") if isinstance(p, dict) else None
        if isinstance(window, int) and not isinstance(window, bool) and window > 0:
            out[desk] = accepted_at + window
        else:
            out[desk] = WatchdogPolicy().deadline(severity, accepted_at)
    return out


async def _with_levels(client: HotlineClient,
                       body: Callable[[HotlineClient], Awaitable[list[ReceivedNotice]]]
                       ) -> list[tuple[ReceivedNotice, int]]:
    """The notices ``body`` lists, each with the escalation level the relay reported for
    this desk (0: none; it drops when the notice is acknowledged)."""
    notices = await body(client)
    out = []
    for n in notices:
        level = 0
        for e in client.state.relay_events(n.notice_id):
            if e.desk == client.desk and e.kind == "escalation":
                level = max(level, e.level)
        out.append((n, level))
    return out


# ----------------------------------------------------------------------------- commands


def cmd_send(args: argparse.Namespace) -> int:
    report = build_report(args, now_ms())

    async def body(client: HotlineClient) -> tuple[Any, dict[str, int]]:
        result = await client.send(
            to=args.to, severity=args.severity, notice=report, status=args.status,
            in_reply_to=args.in_reply_to, notice_id=args.notice_id,
            queue=outbox_cmd.queue_for(args),
            require=args.require if args.require == "all" else _require(args.require))
        if result.queued or result.accepted_at is None:
            return result, {}
        return result, await _ack_deadlines(client, result.notice_id, args.severity,
                                            result.accepted_at)

    result, deadlines = _run(args, body)
    if result.queued or result.accepted_at is None:
        return outbox_cmd.report_queued_send(args, result)
    if args.json:
        print_json({"notice_id": result.notice_id.hex(), "accepted_at": iso8601(result.accepted_at),
                    "duplicate": result.duplicate, "to": sorted(args.to),
                    "ack_by": {d: iso8601(t) for d, t in deadlines.items()},
                    "relays": relays_cmd.relays_json(result.relays)})
    else:
        again = " (already accepted earlier)" if result.duplicate else ""
        print(f"notice {result.notice_id.hex()}{tag(args.status)}")
        print(f"accepted by the relay at {iso(result.accepted_at)}{again}")
        if result.relays:
            print(relays_cmd.send_text(result.relays))
        for desk, when in sorted(deadlines.items()):
            print(f"{line(desk)} must acknowledge by {iso(when)}")
    if result.clock_skew is not None:
        print(f"hotline: WARNING: {_skew_text(result.clock_skew)}", file=sys.stderr)
    return 0


def _require(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"--require {value!r}: give a number of relays (1 or more) or 'all'")
    return int(value)


def cmd_reply(args: argparse.Namespace) -> int:
    text = args.body if args.body is not None else _read_text(args.body_file, "body file",
                                                             MAX_BODY)

    async def body(client: HotlineClient) -> Any:
        original = client.received(args.id)
        report = IncidentReport(
            title=args.title or _clip("Re: " + original.report.title, 200),
            summary=args.summary, body=text, category=original.report.category,
            aware_at=now_ms(), tlp=original.report.tlp, lang=original.report.lang,
            references=(Reference(original.notice_id, "reply"),),
            attachments=tuple(_attachment(f) for f in args.attach)).validate()
        return original, await client.reply(original.notice_id, report,
                                            queue=outbox_cmd.queue_for(args))

    original, result = _run(args, body)
    if result.queued or result.accepted_at is None:
        return outbox_cmd.report_queued_send(args, result, "reply")
    if args.json:
        print_json({"notice_id": result.notice_id.hex(), "in_reply_to": original.notice_id.hex(),
                    "to": original.sender, "accepted_at": iso8601(result.accepted_at)})
    else:
        print(f"reply {result.notice_id.hex()} to {line(original.sender)}, answering "
              f"{original.notice_id.hex()}")
        print(f"accepted by the relay at {iso(result.accepted_at)}")
    return 0


def cmd_inbox(args: argparse.Namespace) -> int:
    async def body(client: HotlineClient) -> list[ReceivedNotice]:
        if not args.local:
            for item in await client.fetch():
                if not isinstance(item, ReceivedNotice):
                    print(f"hotline: {_line(item)}", file=sys.stderr)
        unopened[:] = client.unopened()
        return client.inbox(include_acked=args.all)

    unopened: list[UnopenedNotice] = []
    notices_and_levels = _run(args, lambda c: _with_levels(c, body))
    _print_unopened(unopened, args.json)
    notices = [n for n, _ in notices_and_levels]
    now = now_ms()
    if notices and not args.json:
        print(f"{'notice':32}  {'from':14} {'severity':8} {'status':8} "
              f"{'acknowledge by':23}  {'state':26}  title")
    for n, level in notices_and_levels:
        due = default_ack_by(n)
        if args.json:
            print_json(_notice_json(n) | {"ack_by": iso8601(due), "escalation_level": level,
                                          "overdue": n.acked_at is None and now > due})
        else:
            if n.acked_at is not None:
                state = "acked"
            else:
                state = ("NOT ACKED" + (" OVERDUE" if now > due else "")
                         + (f" level {level}" if level else ""))
            text = (f"{n.notice_id.hex()}  {line(n.sender):<14} {line(n.severity):<8} "
                    f"{line(n.status):<8} {iso(due):23}  {state:26}  "
                    f"{line(_clip(n.report.title, 60))}")
            print(colour(text, n.severity) if n.acked_at is None else text)
    if not notices and not unopened and not args.json:
        print("no notices" if args.all else "no unacknowledged notices", file=sys.stderr)
    return 0


def _print_unopened(unopened: list[UnopenedNotice], as_json: bool) -> None:
    """Notices that arrived but cannot be opened: listed first, with the reason."""
    for u in unopened:
        if as_json:
            print_json({"notice_id": u.notice_id.hex(), "sender": u.sender,
                        "severity": u.severity, "status": u.status, "unopened": True,
                        "code": u.code, "reason": u.reason,
                        "received_at": iso8601(u.first_at), "attempts": u.attempts})
        else:
            print(f"{u.notice_id.hex()}  {line(u.sender):<14} {line(u.severity):<8} "
                  f"{line(u.status):<8} {iso(u.first_at)}  CANNOT OPEN: {line(u.reason)} "
                  "(kept; tried again when this desk's keys change)")


def _file_name(name: str) -> str:
    """A peer-chosen attachment name as a plain file name inside the target folder.

    The report schema already refuses separators and C0 controls; this holds even if it did
    not: a name that is not one plain path component becomes ``attachment``. Controls, bidi
    and invisible characters are escaped, so that a listing of the folder shows the name as
    it is (no right-to-left override making ``gpj.exe`` read as ``exe.jpg``)."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or os.path.isabs(name):
        return "attachment"
    name = line(name)
    # File systems allow 255 bytes a name; keep room for " (999)". 200 characters of
    # Chinese are 600 bytes of UTF-8.
    stem, suffix = os.path.splitext(name)
    if len(suffix.encode()) > 32:
        stem, suffix = name, ""
    while len((stem + suffix).encode()) > 240:
        stem = stem[:-1]
    return stem + suffix


def _save_attachments(n: ReceivedNotice, folder: str) -> list[str]:
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for a in n.report.attachments:
        name = _file_name(a.name)
        stem, suffix = os.path.splitext(name)
        for i in range(1000):
            path = target / (name if i == 0 else f"{stem} ({i}){suffix}")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                raise UsageError(f"cannot write attachment {path}: {exc.strerror}") from exc
            with os.fdopen(fd, "wb") as fh:
                fh.write(a.data)
            written.append(str(path))
            break
        else:
            raise UsageError(f"too many files named like {name} in {line(folder)}")
    return written


def cmd_show(args: argparse.Namespace) -> int:
    async def body(client: HotlineClient) -> tuple[ReceivedNotice, int]:
        try:
            n = client.received(args.id)
        except UnknownNotice:
            if not client.relays:
                raise
            await client.fetch()  # maybe it has just arrived
            n = client.received(args.id)
        client.mark_processed(n.notice_id)
        # The default windows: asking the relay for the frozen policy would make showing
        # a stored notice wait for the relay (seconds of retries when it is down).
        return n, default_ack_by(n)

    n, due = _run(args, body)
    saved = _save_attachments(n, args.save_attachments) if args.save_attachments else []
    r = n.report
    if args.json:
        out = _notice_json(n)
        out.update(
            summary=r.summary, body=r.body, aware_at=iso8601(r.aware_at), lang=r.lang,
            contact=r.contact, countries=list(r.countries), actions=list(r.actions),
            systems=[{"name": s.name, "version": s.version, "developer": s.developer}
                     for s in r.systems],
            references=[{"notice_id": x.notice_id.hex(), "relation": x.relation}
                        for x in r.references],
            translations=[{"lang": t.lang, "title": t.title, "summary": t.summary,
                           "body": t.body} for t in r.translations],
            attachments=[{"name": a.name, "media_type": a.media_type, "size": len(a.data)}
                         for a in r.attachments],
            saved=saved, ack_by=iso8601(due),
        )
        print_json(out)
        return 0
    print(f"notice:     {n.notice_id.hex()}")
    print(f"from:       {line(n.sender)}  (signature verified)")
    print(f"to:         {line(', '.join(n.notice.recipients))}")
    print(f"severity:   {line(n.severity)}    status: {line(n.status)}    "
          f"TLP: {line(r.tlp.upper())}")
    print(f"category:   {line(r.category)}")
    print(f"aware at:   {iso(r.aware_at)}")
    print(f"sent:       {iso(n.notice.created_at)}  accepted: {iso(n.accepted_at)}")
    print(f"received:   {iso(n.received_at)}")
    if n.acked_at is not None:
        print(f"acked:      {iso(n.acked_at)}")
    else:
        late = "  OVERDUE" if now_ms() > due else ""
        print(f"acked:      not yet: acknowledge by {iso(due)}{late} "
              f"(hotline ack {n.notice_id.hex()[:8]})")
    if n.notice.in_reply_to:
        print(f"in reply to {n.notice.in_reply_to.hex()}")
    print(f"\n{line(r.title)}\n")
    if r.summary:
        print(f"{block(r.summary)}\n")
    if r.body:
        print(f"{block(r.body)}\n")
    for label, values in (("systems", [s.name + (f" {s.version}" if s.version else "")
                                       for s in r.systems]),
                          ("countries", list(r.countries)), ("actions", list(r.actions))):
        if values:
            print(f"{label}: {'; '.join(line(v) for v in values)}")
    if r.contact:
        print(f"contact: {line(r.contact)}")
    for t in r.translations:
        print(f"[{line(t.lang)}] {line(t.title)}")
    for a in r.attachments:
        print(f"attachment: {line(a.name)} ({line(a.media_type)}, {len(a.data)} bytes)")
    for path in saved:
        print(f"saved {line(path)}")
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    result = _run(args, lambda c: c.ack(args.id, message=args.message,
                                        queue=outbox_cmd.queue_for(args)))
    if result.queued or result.acknowledged_at is None:
        return outbox_cmd.report_queued_ack(args, result)
    if args.json:
        print_json({"notice_id": result.notice_id.hex(),
                    "acknowledged_at": iso8601(result.acknowledged_at),
                    "duplicate": result.duplicate})
    else:
        again = " (it was acknowledged already)" if result.duplicate else ""
        print(f"acknowledged {result.notice_id.hex()} at {iso(result.acknowledged_at)}{again}")
    return 0


def _item_json(item: Item) -> dict[str, Any]:
    if isinstance(item, LogInconsistent):
        return {"event": "log_inconsistent", "kind": item.kind, "detail": item.detail,
                "evidence": item.evidence}
    if isinstance(item, ReceivedNotice):
        return {"event": "notice", "redelivered": item.redelivered, **_notice_json(item)}
    if isinstance(item, ConfirmationEvent):
        return {"event": item.kind, "notice_id": item.notice_id.hex(),
                "recipient": item.recipient, "at": iso8601(item.at),
                "attested_at": iso8601(item.attested_at), "message": item.message,
                "verified": True}
    if isinstance(item, EscalationEvent):
        return {"event": item.kind, "notice_id": item.notice_id.hex(), "desk": item.desk,
                "level": item.level, "at": iso8601(item.at), "sender": item.sender,
                "severity": item.severity, "status": item.status, "track": item.track,
                "deadline": iso8601(item.deadline), "delivered": item.delivered,
                "final": item.final, "verified": True}
    if isinstance(item, WatchdogOverdue):
        return {"event": "watchdog_overdue", "notice_id": item.notice_id.hex(),
                "recipient": item.recipient, "severity": item.severity,
                "status": item.status, "deadline": iso8601(item.deadline),
                "overdue_ms": item.overdue_ms, "relay_escalated": item.escalated}
    if isinstance(item, ClockSkewWarning):
        return {"event": "clock_skew", "notice_id": item.notice_id.hex(),
                "attested_event": item.event, "desk": item.desk,
                "attested_at": item.attested_at, "local_at": iso8601(item.local_at),
                "skew_ms": item.skew_ms}
    if isinstance(item, NoticeRejectedByRecipient):
        return {"event": "rejected_by_recipient", "notice_id": item.notice_id.hex(),
                "recipient": item.recipient, "reason": item.reason, "at": iso8601(item.at),
                "attested_at": iso8601(item.attested_at), "text": item.describe(),
                "verified": True}
    return {"event": "rejected", "kind": item.kind, "notice_id": item.notice_id.hex(),
            "seq": item.seq, "code": item.code, "reason": item.reason,
            "reported_to_sender": item.reported}


def _line(item: Item, me: str | None = None) -> str:
    """One line for ``item``, safe to print: every field in it may come from a peer or the
    relay (titles, messages, rejection reasons). ``me``: this desk (an escalation of a
    notice it has to acknowledge says so)."""
    return line(_raw_line(item, me))


def _quoted(text: str, width: int) -> str:
    return f"'{_clip(text, width)}'"


def _raw_line(item: Item, me: str | None = None) -> str:
    if isinstance(item, LogInconsistent):
        print(f"hotline: WARNING: THE RELAY'S LOG IS INCONSISTENT: {line(item.describe())}",
              file=sys.stderr)
        return f"LOG INCONSISTENT ({item.kind}): {item.detail}; evidence in {item.evidence}"
    if isinstance(item, ReceivedNotice):
        again = " (again: not processed before)" if item.redelivered else ""
        due = iso(default_ack_by(item))
        return (f"NOTICE     {item.notice_id.hex()} from {item.sender} "
                f"[{item.severity}/{item.status}]{tag(item.status)} "
                f"{_quoted(item.report.title, 60)}{again}; acknowledge by {due}")
    if isinstance(item, ConfirmationEvent):
        what = "DELIVERED " if item.kind == "receipt" else "ACKED     "
        msg = f": {_quoted(item.message, 80)}" if item.message else ""
        return (f"{what} {item.notice_id.hex()} by {item.recipient} at "
                f"{iso(item.attested_at)}{msg}")
    if isinstance(item, EscalationEvent):
        drill = tag(item.status or "actual")
        if item.kind == "resolved":
            return (f"RESOLVED   {item.notice_id.hex()} for {item.desk} at "
                    f"{iso(item.at)}{drill}")
        track = f"{item.track} " if item.track else ""
        late = (f", {duration(item.at - item.deadline)} past the {track}deadline"
                if item.deadline is not None else "")
        sev = f" [{item.severity}]" if item.severity else ""
        if me is not None and item.desk == me:
            todo = ("reply to it (hotline reply)" if item.track == "response"
                    else f"acknowledge it now: hotline ack {item.notice_id.hex()[:8]}")
            owed = f": this desk must {todo}"
        else:
            owed = (f": {item.desk} has not "
                    f"{'replied' if item.track == 'response' else 'acknowledged'}")
        final = " FINAL" if item.final else ""
        return (f"ESCALATED  {item.notice_id.hex()}{sev}{drill} for {item.desk}, level "
                f"{item.level}{final}{late}{owed}")
    if isinstance(item, WatchdogOverdue):
        relay = ("the relay reported escalating (which is not an answer)" if item.escalated
                 else "the relay reported no escalation")
        return (f"OVERDUE    {item.notice_id.hex()} to {item.recipient} [{item.severity}]: "
                f"not acknowledged {duration(item.overdue_ms)} past its deadline by this "
                f"desk's own clock; {relay}")
    if isinstance(item, ClockSkewWarning):
        return f"CLOCK SKEW {item.notice_id.hex()}: {_skew_text(item)}"
    if isinstance(item, NoticeRejectedByRecipient):
        return (f"UNREADABLE {item.notice_id.hex()}: {item.describe()} (signed by "
                f"{item.recipient}; the deadline still runs)")
    told = (f"; the sender was told ({item.reported})" if item.reported else "")
    return (f"REJECTED   {item.notice_id.hex()} ({item.kind}, seq {item.seq}): "
            f"{item.reason} [{item.code}]{told}")


def _skew_text(w: ClockSkewWarning) -> str:
    way = "ahead of" if w.skew_ms > 0 else "behind"
    return (f"the relay signed {w.event} ({w.desk}) at {w.attested_at} ms, "
            f"{duration(abs(w.skew_ms))} {way} this desk's clock ({iso(w.local_at)}); "
            "this desk judged deadlines and certificates by its own clock")


def cmd_watch(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be more than 0 seconds")

    view = LinkView(json_mode=args.json)

    def on_link(st: LinkState) -> None:
        if st.state in ("connected", "reconnected"):
            view.connected(st.url, again=st.state == "reconnected")
        elif st.state == "lost":
            view.lost(st.url, st.reason or "")
        elif st.state == "retrying":
            view.retrying(st.url, st.wait_s or 0.0, st.reason or "", st.failures)

    link_peers = tuple(desk_id(d) for d in args.link_test)
    link_every = parse_duration(args.link_every, "--link-every") if link_peers else 0
    link_window = (parse_duration(args.link_window, "--link-window")
                   if link_peers and args.link_window else 0)

    async def body(client: HotlineClient) -> int:
        seen = 0
        client.connection.on_link = on_link
        quiet = asyncio.create_task(view.watch_quiet())
        tests: asyncio.Task[None] | None = None
        if link_peers:
            from client.cli.drill_cmd import link_event_line
            from client.drill_runner import LinkTester

            tester = LinkTester(client, link_peers, link_every, link_window,
                                sleep=asyncio.sleep)

            def said(e: Any) -> None:
                if args.json:
                    print_json({"event": e.kind, "peer": e.peer, "at": iso8601(e.at),
                                "down_ms": e.down_ms})
                else:
                    print(f"{iso(now_ms())}  {link_event_line(e)}", flush=True)

            tests = asyncio.create_task(tester.run(on_event=said, beside_stream=True))
        try:
            async with asyncio.timeout(args.timeout):
                async for item in client.events(follow=True):
                    if args.json:
                        print_json(_item_json(item))
                    else:
                        text = f"{iso(now_ms())}  {_line(item, client.desk)}"
                        key = ("resolved" if getattr(item, "kind", "") == "resolved"
                               else getattr(item, "severity", None) or "")
                        print(colour(text, key))
                    sys.stdout.flush()
                    view.event()
                    seen += 1
                    if args.count is not None and seen >= args.count:
                        break
        finally:
            quiet.cancel()
            if tests is not None:
                tests.cancel()
        return seen

    # The stream's own "lost; reconnecting" warning is said by the view instead.
    conn_log = logging.getLogger("hotline.client.connection")
    quiet_lost = _DropStreamLost()
    conn_log.addFilter(quiet_lost)
    try:
        _run(args, body)
    except TimeoutError:
        pass  # --timeout reached: a normal end
    finally:
        conn_log.removeFilter(quiet_lost)
    return 0


class _DropStreamLost(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("relay.stream.lost")


def _step_json(step: Step | None) -> dict[str, Any] | None:
    if step is None:
        return None
    return {"at": iso8601(step.at), "attested_at": iso8601(step.attested_at),
            "verified": step.verified, "problem": step.problem, "message": step.message,
            "level": step.level, "kind": step.kind, "reason": step.reason}


def _step_text(step: Step | None) -> str:
    return line(_raw_step_text(step))


def _raw_step_text(step: Step | None) -> str:
    if step is None:
        return "no"
    if not step.verified:
        return f"UNVERIFIED ({step.problem})"
    when = iso(step.attested_at) if step.attested_at is not None else "?"
    return f"{when} (verified)" + (f": '{step.message}'" if step.message else "")


def _span(ms: object) -> str:
    if not isinstance(ms, int) or ms <= 0:
        return "?"
    s = ms // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size and s % size == 0:
            return f"{s // size} {unit}"
    return f"{s} s"


def _replies(client: HotlineClient, notice_id: bytes) -> dict[str, ReceivedNotice]:
    """The first verified reply of each recipient to ``notice_id`` (a notice it sent back
    with ``in_reply_to``): what meets the response deadline."""
    out: dict[str, ReceivedNotice] = {}
    for n in sorted(client.inbox(include_acked=True), key=lambda n: n.accepted_at):
        if n.notice.in_reply_to == notice_id:
            out.setdefault(str(n.sender), n)
    return out


def _response_text(reply: ReceivedNotice | None, policy: object, accepted_at: int | None
                   ) -> str:
    if reply is not None:
        return (f"{iso(reply.accepted_at)} (verified reply {reply.notice_id.hex()[:16]}: "
                f"{_quoted(reply.report.title, 50)})")
    window = policy.get("response_window_ms") if isinstance(policy, dict) else None
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        return "no (not required)"
    if accepted_at is None:
        return f"no (a reply is owed within {_span(window)})"
    return f"no (a reply is owed by {iso(accepted_at + window)})"


def cmd_status(args: argparse.Namespace) -> int:
    async def body(client: HotlineClient) -> tuple[NoticeStatusView, dict[str, ReceivedNotice]]:
        view = await client.status(args.id)
        return view, _replies(client, view.notice_id)

    view, replies = _run(args, body)
    nid = view.notice_id.hex()
    accepted_at = view.accepted.attested_at if view.accepted.verified else None
    if args.json:
        for r in view.recipients:
            print_json({
                "notice_id": nid, "recipient": r.desk, "sender": view.sender,
                "severity": view.severity, "status": view.status,
                "accepted": _step_json(view.accepted), "digest_matches": view.digest_matches,
                "delivered": _step_json(r.delivered), "acknowledged": _step_json(r.acknowledged),
                "responded": ({"at": iso8601(replies[r.desk].accepted_at),
                               "reply": replies[r.desk].notice_id.hex(), "verified": True}
                              if r.desk in replies else None),
                "escalations": [_step_json(e) for e in r.escalations],
                "rejected": _step_json(r.rejected),
                "policy": (view.policy or {}).get(r.desk),
                "mismatches": [{"field": m.field, "ours": m.ours, "relay": m.relay}
                               for m in view.mismatches],
                "verified": view.verified,
                "relays": relays_cmd.merged_json(view),
            })
        _mismatch_warning(view)
        return 0 if view.verified and not record_warning(args) else 1
    print(f"notice {nid} from {line(view.sender)} [{line(view.severity)}/{line(view.status)}]")
    print(f"  accepted:     {_step_text(view.accepted)}")
    if view.digest_matches is False:
        print("  WARNING: the relay's digest differs from the notice this desk holds")
    for r in view.recipients:
        print(f"  {line(r.desk)}:")
        print(f"    delivered:    {_step_text(r.delivered)}")
        print(f"    acknowledged: {_step_text(r.acknowledged)}")
        responded = _response_text(replies.get(r.desk), (view.policy or {}).get(r.desk),
                                   accepted_at)
        print(f"    responded:    {line(responded)}")
        if r.rejected is not None:
            why = (f"{r.desk} could not open your notice: {r.rejected.reason}"
                   if r.rejected.verified else "")
            print(f"    REJECTED:     {_step_text(r.rejected)}{': ' + why if why else ''}")
        for e in r.escalations:
            what = "resolved:    " if e.kind == "resolved" else f"escalated ({line(str(e.level))}):"
            print(f"    {what} {_step_text(e)}")
        p = (view.policy or {}).get(r.desk)
        if isinstance(p, dict):
            response = p.get("response_window_ms")
            level = line(str(p.get("max_level")))
            print(f"    policy:       ack within {_span(p.get('ack_window_ms'))}, escalate every "
                  f"{_span(p.get('repeat_ms'))} up to level {level}, response "
                  f"{'within ' + _span(response) if response else 'not required'} "
                  "(frozen at acceptance)")
    flagged = relays_cmd.print_merged(view)
    if _mismatch_warning(view) or record_warning(args) or flagged:
        return 1
    if not view.verified:
        print("  WARNING: not every signature in this status verified", file=sys.stderr)
        return 1
    return 0


def _mismatch_warning(view: NoticeStatusView) -> bool:
    """Print, loudly, where the relay's status contradicts this desk's own copy."""
    if not view.mismatches:
        return False
    print(f"hotline: WARNING: VERIFICATION FAILED: the relay's status of notice "
          f"{view.notice_id.hex()} does not match this desk's own copy:", file=sys.stderr)
    for m in view.mismatches:
        print(f"hotline:   {m.field}: the relay says {line(repr(m.relay or '(none)'))}, this "
              f"desk holds {line(repr(m.ours or '(none)'))}", file=sys.stderr)
    return True
