"""Per-operation costs of the envelope, classical (X25519) against hybrid (X-Wing) stanzas:
seal to 1 and 10 recipients, the cost per added recipient, open, the relay's check, and the
envelope sizes for 1, 10 and 32 recipients.

    python -m tests.bench.crypto_ops [--n 200]

Prints microseconds per operation (median of 5 rounds of n operations each) and a JSON
line; ``python -m tests.bench.run`` runs the same as its "pq" part.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from keys import Confirmation, Envelope, check_submission, open_envelope, seal
from keys.envelope import MAX_RECIPIENTS
from tests.factory import NOW, Federation, report


def _per_op(fn: Callable[[], object], n: int) -> float:
    rounds = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(rounds)


def measure(kind: str, n: int) -> dict[str, float]:
    """The figures for one kind of recipient key ("x25519" or "x-wing")."""
    names = tuple(f"cn.d{i}" for i in range(MAX_RECIPIENTS))
    fed = Federation.create(desks=("us.caisi", *names),
                            hybrid=names if kind == "x-wing" else ())
    us = fed.desks["us.caisi"]
    every = [fed.verified(d) for d in names]
    one, ten = every[:1], every[:10]
    rep = report()

    def sealed(to: list[Any]) -> Envelope:
        return seal(rep, sender=us.secrets, recipients=to, severity="critical", now=NOW)

    env = sealed(one)
    sender = fed.verified("us.caisi")
    me = fed.desks["cn.d0"].secrets
    ack = Confirmation.create("ack", notice_id=env.notice_id, digest=env.digest,
                              sender=us.desk, me=me, at=NOW).encode()
    d0 = fed.verified("cn.d0")
    seal_1 = _per_op(lambda: sealed(one), n)
    seal_10 = _per_op(lambda: sealed(ten), max(1, n // 5))
    return {
        "seal_1_recipient_us": seal_1,
        "seal_10_recipients_us": seal_10,
        "seal_per_added_recipient_us": (seal_10 - seal_1) / 9,
        "open_us": _per_op(lambda: open_envelope(Envelope.decode(env.raw), me=me,
                                                 sender=sender), n),
        "relay_check_us": _per_op(lambda: check_submission(Envelope.decode(env.raw),
                                                           sender=sender, now=NOW), n),
        "ack_verify_us": _per_op(lambda: Confirmation.decode(ack).verify(
            d0, notice_id=env.notice_id, digest=env.digest, sender=us.desk, recipient=d0.desk),
            n),
        "envelope_bytes_1_recipient": len(env.raw),
        "envelope_bytes_10_recipients": len(sealed(ten).raw),
        "envelope_bytes_32_recipients": len(sealed(every).raw),
        "header_bytes_32_recipients": len(sealed(every).header.raw),
    }


def run(n: int = 200) -> dict[str, Any]:
    return {"n": n, "classical": measure("x25519", n), "hybrid": measure("x-wing", n)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    results = run(args.n)
    print(f"{'':32} {'classical':>12} {'hybrid':>12}")
    for key in results["classical"]:
        print(f"{key:32} {results['classical'][key]:12.1f} {results['hybrid'][key]:12.1f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
