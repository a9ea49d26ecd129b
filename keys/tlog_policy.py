"""Which cosignatures make a checkpoint trustworthy: a C2SP tlog-policy file
(c2sp.org/tlog-policy) and its evaluation.

Syntax ("Policy file syntax and structure")::

    # comment
    log <vkey> [<url>]                 the log's Ed25519 key; its key name is the origin
    witness <name> <vkey> [<url>]      a cosignature/v1 (type 0x04) key
    group <name> all|any|<k> <name>... k of the members witnessed (k = n for all, 1 for any)
    quorum <name>|none                 exactly once

Items are separated by spaces and tabs; names are defined before use, share one
namespace, and appear at most once per group; ``none`` is predefined (quorum only); no two
logs and no two witnesses may wrap the same public key ("Public key representation");
octets 0x09, 0x0A, 0x20-0x7E and 0x80-0xFF only ("Character set"). Limits
("Implementation limits", at least 32 of each are required): ``MAX_ITEMS`` logs,
witnesses and groups each.

Hotline's default (``hotline_policy``): one group per member country holding that
country's witnesses (``any`` by default), and the quorum ``all`` of the country groups,
so no country can vouch for a history alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from keys.checkpoint import SignedCheckpoint, cosignature_time, open_checkpoint
from keys.errors import ProtocolError, UsageError
from keys.note import SIG_COSIGNATURE_V1, SIG_ED25519, NoteError, Verifier, parse_vkey

MAX_ITEMS = 256
MAX_POLICY_BYTES = 256 * 1024
NONE = "none"


class PolicyFileError(UsageError):
    """The policy file is not valid; the message names the line and what is wrong."""

    code = "bad_policy"


class QuorumNotMet(ProtocolError):
    """A checkpoint whose valid cosignatures do not satisfy the policy's quorum."""

    code = "quorum_not_met"


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Policy:
    logs: tuple[Verifier, ...]
    witnesses: Mapping[str, Verifier]
    groups: Mapping[str, Group]
    quorum: str
    urls: Mapping[str, str] = field(default_factory=dict)

    def log_for(self, origin: str) -> list[Verifier]:
        return [v for v in self.logs if v.name == origin]

    def satisfied_by(self, witnessed: Iterable[str]) -> bool:
        """Whether the quorum holds when exactly the witnesses named ``witnessed`` cosigned."""
        return self._holds(self.quorum, frozenset(witnessed))

    def _holds(self, name: str, witnessed: frozenset[str]) -> bool:
        if name == NONE:
            return True
        if name in self.witnesses:
            return name in witnessed
        g = self.groups[name]
        return sum(self._holds(m, witnessed) for m in g.members) >= g.threshold

    def missing(self, witnessed: Iterable[str]) -> list[str]:
        """The top-level members of the quorum group that are not satisfied (for messages)."""
        w = frozenset(witnessed)
        if self.quorum in self.groups:
            return [m for m in self.groups[self.quorum].members if not self._holds(m, w)]
        return [] if self._holds(self.quorum, w) else [self.quorum]


def _fail(lineno: int, message: str) -> PolicyFileError:
    return PolicyFileError(f"policy line {lineno}: {message}")


def parse_policy(data: bytes) -> Policy:
    """Parse a tlog-policy file. Raises ``PolicyFileError`` naming the line."""
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyFileError(f"policy file of {len(data)} bytes exceeds {MAX_POLICY_BYTES}")
    for i, b in enumerate(data):
        if (b < 0x20 and b not in (0x09, 0x0A)) or b == 0x7F:
            line = data[:i].count(b"\n") + 1
            raise _fail(line, f"byte 0x{b:02x} is not allowed in a policy file")
    # Names are opaque octets; surrogateescape keeps every byte sequence distinct.
    text = data.decode("utf-8", errors="surrogateescape")
    logs: list[Verifier] = []
    witnesses: dict[str, Verifier] = {}
    groups: dict[str, Group] = {}
    urls: dict[str, str] = {}
    quorum: str | None = None
    seen_keys: dict[tuple[str, bytes], int] = {}

    def vkey(lineno: int, s: str, kind: str, sig_type: int) -> Verifier:
        try:
            v = parse_vkey(s, types=(sig_type,))
        except NoteError as exc:
            raise _fail(lineno, f"{kind} key: {exc.message}") from exc
        except UnicodeEncodeError as exc:
            raise _fail(lineno, f"{kind} key name is not UTF-8") from exc
        prior = seen_keys.get((kind, v.public_key))
        if prior is not None:
            raise _fail(lineno, f"duplicate {kind}: the same public key as line {prior}")
        seen_keys[(kind, v.public_key)] = lineno
        return v

    def new_name(lineno: int, name: str) -> None:
        if name == NONE:
            raise _fail(lineno, "'none' is predefined and cannot be redefined")
        if name in witnesses or name in groups:
            raise _fail(lineno, f"name {name!r} is already defined")

    lines = text.split("\n")
    for lineno, raw in enumerate(lines, 1):
        items = raw.replace("\t", " ").split()
        if not items or items[0].startswith("#"):
            continue
        kw, args = items[0], items[1:]
        if kw == "log":
            if not 1 <= len(args) <= 2:
                raise _fail(lineno, "expected: log <vkey> [<url>]")
            logs.append(vkey(lineno, args[0], "log", SIG_ED25519))
            if len(args) == 2:
                urls[f"log:{logs[-1].name}"] = args[1]
            if len(logs) > MAX_ITEMS:
                raise _fail(lineno, f"more than {MAX_ITEMS} logs")
        elif kw == "witness":
            if not 2 <= len(args) <= 3:
                raise _fail(lineno, "expected: witness <name> <vkey> [<url>]")
            new_name(lineno, args[0])
            witnesses[args[0]] = vkey(lineno, args[1], "witness", SIG_COSIGNATURE_V1)
            if len(args) == 3:
                urls[args[0]] = args[2]
            if len(witnesses) > MAX_ITEMS:
                raise _fail(lineno, f"more than {MAX_ITEMS} witnesses")
        elif kw == "group":
            if len(args) < 3:
                raise _fail(lineno, "expected: group <name> all|any|<k> <member>...")
            name, k, members = args[0], args[1], args[2:]
            new_name(lineno, name)
            for m in members:
                if m == NONE:
                    raise _fail(lineno, "'none' cannot be a group member")
                if m not in witnesses and m not in groups:
                    raise _fail(lineno, f"group member {m!r} is not defined on an earlier line")
            if len(set(members)) != len(members):
                raise _fail(lineno, f"group {name!r} lists a member twice")
            if k == "all":
                threshold = len(members)
            elif k == "any":
                threshold = 1
            elif k.isascii() and k.isdigit() and (k == "0" or not k.startswith("0")):
                threshold = int(k)
                if not 1 <= threshold <= len(members):
                    raise _fail(lineno, f"threshold {threshold} is not within 1..{len(members)}")
            else:
                raise _fail(lineno, f"threshold {k[:20]!r} is not all, any or a decimal number")
            groups[name] = Group(name, threshold, tuple(members))
            if len(groups) > MAX_ITEMS:
                raise _fail(lineno, f"more than {MAX_ITEMS} groups")
        elif kw == "quorum":
            if len(args) != 1:
                raise _fail(lineno, "expected: quorum <name>")
            if quorum is not None:
                raise _fail(lineno, "a second quorum line; a policy has exactly one")
            if args[0] != NONE and args[0] not in witnesses and args[0] not in groups:
                raise _fail(lineno, f"quorum {args[0]!r} is not defined on an earlier line")
            quorum = args[0]
        else:
            raise _fail(lineno, f"unknown keyword {kw[:20]!r} (log, witness, group, quorum)")
    if quorum is None:
        raise PolicyFileError("the policy has no quorum line")
    return Policy(tuple(logs), witnesses, groups, quorum, urls)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A checkpoint that satisfies the policy, with the witnesses that cosigned it and
    when (POSIX seconds)."""

    signed: SignedCheckpoint
    cosigned_by: Mapping[str, int]


def check_checkpoint(
    policy: Policy,
    msg: bytes,
    *,
    now_s: int | None = None,
    max_future_s: int = 300,
    log_keys: Sequence[Verifier] = (),
) -> Verdict:
    """Verify a signed, cosigned checkpoint against the policy.

    The log key is the policy's log whose name is the checkpoint origin (or one of
    ``log_keys`` when the policy names no logs: "an application where the logs are known
    from other context"). A known key's bad signature refuses the note; cosignatures more
    than ``max_future_s`` ahead of ``now_s`` do not count. Raises ``QuorumNotMet`` naming
    the unsatisfied groups, or the note errors."""
    from keys.note import split

    text, _ = split(msg)
    origin = text.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    logs = policy.log_for(origin) or [v for v in log_keys if v.name == origin]
    if not logs:
        raise QuorumNotMet(f"the policy names no log with origin {origin[:80]!r}",
                           code="unknown_log")
    signed = open_checkpoint(msg, logs, witnesses=policy.witnesses.values())
    cosigned: dict[str, int] = {}
    for wname, v in policy.witnesses.items():
        sig = signed.note.verified_by(v.name, v.key_id)
        if sig is None:
            continue
        ts = cosignature_time(sig)
        if now_s is not None and ts > now_s + max_future_s:
            continue
        cosigned[wname] = ts
    if not policy.satisfied_by(cosigned):
        missing = ", ".join(policy.missing(cosigned))[:300]
        raise QuorumNotMet(f"checkpoint {signed.checkpoint.origin} size "
                           f"{signed.checkpoint.size} lacks cosignatures from: {missing}")
    return Verdict(signed, cosigned)


def hotline_policy(
    log_vkeys: Sequence[str],
    witnesses: Mapping[str, Sequence[str]],
    *,
    per_country: str = "any",
) -> bytes:
    """Hotline's default policy file: ``witnesses`` maps a country code to its witnesses'
    vkeys; each country is a group (``per_country`` of its witnesses), the quorum is
    ``all`` the countries."""
    if not witnesses:
        raise UsageError("a Hotline policy needs the witnesses of at least one country")
    out = ["# Hotline log policy: every member country's witnesses must cosign.", ""]
    out += [f"log {k}" for k in log_vkeys]
    for country in sorted(witnesses):
        keys = witnesses[country]
        if not keys:
            raise UsageError(f"country {country!r} has no witness")
        out.append("")
        names = []
        for vk in keys:
            name = vk.split("+", 1)[0]
            names.append(name)
            out.append(f"witness {name} {vk}")
        out.append(f"group {country} {per_country} {' '.join(names)}")
    out += ["", f"group countries all {' '.join(sorted(witnesses))}", "quorum countries", ""]
    data = "\n".join(out).encode()
    parse_policy(data)  # what we write must be what we read
    return data


__all__ = [
    "MAX_ITEMS",
    "Group",
    "Policy",
    "PolicyFileError",
    "QuorumNotMet",
    "Verdict",
    "check_checkpoint",
    "hotline_policy",
    "parse_policy",
]
