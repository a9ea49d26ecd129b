"""Per-operation costs of the envelope: seal to 1 and 10 recipients, open, relay check.

    python -m tests.bench.crypto_ops [--n 500]

Prints microseconds per operation (median of 5 rounds of n operations each).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from keys import Confirmation, Envelope, check_submission, open_envelope, seal
from tests.factory import NOW, Federation, report


def _per_op(fn: Callable[[], object], n: int) -> float:
    rounds = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    fed = Federation.create(desks=("us.caisi", *(f"cn.d{i}" for i in range(10))))
    us = fed.desks["us.caisi"]
    one = [fed.verified("cn.d0")]
    ten = [fed.verified(f"cn.d{i}") for i in range(10)]
    rep = report()
    env = seal(rep, sender=us.secrets, recipients=one, severity="critical", now=NOW)
    sender = fed.verified("us.caisi")
    me = fed.desks["cn.d0"].secrets
    ack = Confirmation.create("ack", notice_id=env.notice_id, digest=env.digest,
                              sender=us.desk, me=me, at=NOW).encode()
    d0 = fed.verified("cn.d0")
    results = {
        "seal_1_recipient_us": _per_op(
            lambda: seal(rep, sender=us.secrets, recipients=one, severity="critical", now=NOW),
            args.n),
        "seal_10_recipients_us": _per_op(
            lambda: seal(rep, sender=us.secrets, recipients=ten, severity="critical", now=NOW),
            args.n // 5),
        "open_us": _per_op(lambda: open_envelope(Envelope.decode(env.raw), me=me,
                                                 sender=sender), args.n),
        "relay_check_us": _per_op(lambda: check_submission(Envelope.decode(env.raw),
                                                           sender=sender, now=NOW), args.n),
        "ack_verify_us": _per_op(lambda: Confirmation.decode(ack).verify(
            d0, notice_id=env.notice_id, digest=env.digest, sender=us.desk, recipient=d0.desk),
            args.n),
        "envelope_bytes_1_recipient": len(env.raw),
    }
    for key, value in results.items():
        print(f"{key:30} {value:10.1f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
