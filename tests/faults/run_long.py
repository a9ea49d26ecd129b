"""Long fault-injection runs (SECURITY.md (b) T1, its negative control, T2-T6).

Run from the repository root, with the project's virtual environment::

    python -m tests.faults.run_long --notices 10000 --kills 50

It prints one JSON summary per scenario as it finishes (and writes each one, with the
clients' journals and the relay's home, under ``--out``, default a new folder under /tmp),
then one line ``N passed, N failed, N skipped``. Exit status 0 when every ``must_be_zero``
field of every summary is 0 (and the negative control's ``receipted_but_missing`` is > 0),
1 otherwise; a field that only a known relay bug makes non-zero
(``harness.KNOWN_RELAY_BUGS``) is reported under ``known_relay_bugs``, named on a line of
its own, and does not fail the run.

Scenarios (``--scenarios``, comma-separated; default all):

* ``t1``: ``--notices`` notices from 20 clients (3 sender desks, 2-3 recipients each),
  ``--kills`` SIGKILLs at random 0.2-1 s intervals, then the crash points pre_commit:2..4
  and post_commit_pre_response:1..3.
* ``negative``: the same with the relay answering before it commits
  (``HOTLINE_RELAY_TEST_ONLY_ANSWER_BEFORE_COMMIT=true``) and a kill right after an
  answer: must report ``receipted_but_missing`` > 0, or the harness is blind.
* ``t2``: a fifth of ``--notices`` from 8 clients, a third of ``--kills`` SIGKILLs, each
  one a power cut (tests/faults/powerloss.py: only what was fsynced survives), relay at
  synchronous=FULL: nothing receipted may be lost. Skipped without a C compiler.
* ``t2-negative``: the same at synchronous=NORMAL: must report ``receipted_but_missing``
  > 0, or the power-loss model is blind.
* ``t3``: a tenth of ``--notices`` to three recipient applications that crash at random
  (before the receipt, after processing and before the ack, after the ack); a fifth of
  ``--kills`` relay kills plus crash points around receipts and acks.
* ``t4``: a tenth of ``--notices`` with 2-3 s ack windows, 30% never acked, a third of
  ``--kills`` kills while deadlines fall due, and a crash after an escalation commit.
* ``t5``: clock jumps of the relay (libfaketime), fixed size; reported as skipped where
  libfaketime is missing.
* ``t6``: ENOSPC on a 4 MiB tmpfs and a read-only remount, fixed size; skipped where a
  tmpfs cannot be mounted.

Every scenario has a time limit derived from its size (``--time-scale`` multiplies them),
every loop is bounded, and only 127.0.0.1 is contacted: the run stops by itself.

The same scenarios at bounded size run in ``pytest tests/faults`` (about 1.5 min); medium
variants run with ``HOTLINE_SLOW=1 pytest -m slow tests/faults``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.faults.harness import KNOWN_RELAY_BUGS, nonzero, write_summary
from tests.faults.powerloss import build_shim
from tests.faults.scenarios import (
    T1Config,
    T2Config,
    T3Config,
    T4Config,
    T5Config,
    T6Config,
    faketime_problem,
    run_t1,
    run_t2,
    run_t3,
    run_t4,
    run_t5,
    run_t6,
)

ALL = ("t1", "negative", "t2", "t2-negative", "t3", "t4", "t5", "t6")


def _t1(a: argparse.Namespace, negative: bool) -> T1Config:
    if negative:
        notices = max(200, a.notices // 10)
        kills = max(10, a.kills // 3)
        return T1Config(notices=notices, clients=8, kills=kills, load_s=kills * 1.2 + 5,
                        negative_control=True, seed=a.seed + 1,
                        time_limit_s=a.time_scale * (kills * 3 + notices / 20 + 90))
    load_s = a.kills * 1.4 + len(LONG_CRASH_POINTS) * 1.5 + 10
    return T1Config(notices=a.notices, clients=20, kills=a.kills, load_s=load_s,
                    crash_points=LONG_CRASH_POINTS, seed=a.seed,
                    time_limit_s=a.time_scale * (load_s * 3 + a.notices / 40 + 120))


LONG_CRASH_POINTS = ("pre_commit:2", "pre_commit:3", "pre_commit:4",
                     "post_commit_pre_response:1", "post_commit_pre_response:2",
                     "post_commit_pre_response:3")


async def _run(name: str, a: argparse.Namespace, folder: Path) -> dict[str, Any]:
    if name == "t1":
        return await run_t1(folder, _t1(a, negative=False))
    if name == "negative":
        return await run_t1(folder, _t1(a, negative=True))
    if name in ("t2", "t2-negative"):
        shim = build_shim(folder / "shim")
        if isinstance(shim, str):
            return {"scenario": "T2", "skipped": shim}
        n = max(100, a.notices // 5)
        kills = max(4, a.kills // 3)
        load_s = kills * 1.2 + 5
        return await run_t2(folder, T2Config(
            synchronous="FULL" if name == "t2" else "NORMAL", notices=n, clients=8,
            kills=kills, load_s=load_s, seed=a.seed + 2,
            time_limit_s=a.time_scale * (kills * 5 + n / 20 + 90)), shim)
    if name == "t3":
        n = max(100, a.notices // 10)
        kills = max(2, a.kills // 5)
        load_s = max(10.0, n / 20)
        return await run_t3(folder, T3Config(
            notices=n, relay_kills=kills, load_s=load_s, max_app_crashes=max(25, n // 4),
            crash_points=("post_deliver_pre_mark:1", "post_deliver_pre_mark:2",
                          "post_deliver_pre_mark:3", "post_ack_commit_pre_response:1",
                          "post_ack_commit_pre_response:2",
                          "post_ack_commit_pre_response:3"),
            seed=a.seed + 3, time_limit_s=a.time_scale * (load_s * 3 + kills * 3 + 120)))
    if name == "t4":
        n = max(60, a.notices // 10)
        kills = max(4, a.kills // 3)
        send_s = max(3.0, n / 25)
        return await run_t4(folder, T4Config(
            notices=n, send_s=send_s, kills=kills, seed=a.seed + 4,
            time_limit_s=a.time_scale * (send_s * 2 + kills * 2 + 90)))
    if name == "t5":
        problem = faketime_problem()
        if problem is not None:
            return {"scenario": "T5", "skipped": problem}
        return await run_t5(folder, T5Config(time_limit_s=90 * a.time_scale))
    if name == "t6":
        return await run_t6(folder, T6Config(time_limit_s=60 * a.time_scale))
    raise SystemExit(f"unknown scenario {name!r} (known: {', '.join(ALL)})")


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.faults.run_long",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--notices", type=int, default=10_000)
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--scenarios", default=",".join(ALL))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="multiply every scenario's time limit (slow machines)")
    a = p.parse_args(argv)
    out = a.out or Path(tempfile.mkdtemp(prefix="hotline-faults-"))
    out.mkdir(parents=True, exist_ok=True)
    passed = failed = skipped = 0
    hits: list[str] = []
    for name in [s.strip() for s in a.scenarios.split(",") if s.strip()]:
        began = time.monotonic()
        folder = out / name
        try:
            summary = await _run(name, a, folder)
        except Exception as exc:  # report and go on with the next scenario
            summary = {"scenario": name, "error": f"{type(exc).__name__}: {exc}"[:500]}
        summary["wall_s"] = round(time.monotonic() - began, 1)
        summary["folder"] = str(folder)
        bad = nonzero(summary)
        known = {k: v for k, v in bad.items() if k in KNOWN_RELAY_BUGS}
        bad = {k: v for k, v in bad.items() if k not in KNOWN_RELAY_BUGS}
        for k in summary.get("must_be_positive", []):
            if not summary.get(k, 0) > 0:
                bad[k] = summary.get(k)
        if "error" in summary:
            bad["error"] = summary["error"]
        summary["known_relay_bugs"] = {k: KNOWN_RELAY_BUGS[k] for k in known}
        summary["verdict"] = ("skipped" if "skipped" in summary else "fail" if bad
                              else "pass, known relay bug hit" if known else "pass")
        summary["failed_fields"] = bad
        print(write_summary(summary, out / f"summary-{name}.json"), flush=True)
        if summary["verdict"] == "fail":
            failed += 1
        elif summary["verdict"] == "skipped":
            skipped += 1
        else:
            passed += 1
        hits.extend(f"{k}={v} in {name}" for k, v in known.items())
    if hits:
        print("known relay bugs hit (see KNOWN_RELAY_BUGS): " + "; ".join(hits))
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
