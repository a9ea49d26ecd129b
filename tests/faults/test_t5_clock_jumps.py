"""T5 (SECURITY.md (b)): the relay's clock jumps -1 h and +1 h (libfaketime) while ladders
run; clients 10 min off. Skipped, with the reason, where libfaketime cannot be used
(Debian: ``apt-get install -y faketime``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import verdict, write_summary, xfail_known
from tests.faults.scenarios import T5Config, faketime_problem, run_t5


async def test_t5_clock_jumps_neither_duplicate_nor_premature(tmp_path: Path) -> None:
    problem = faketime_problem()
    if problem is not None:
        pytest.skip(f"T5 needs libfaketime for the relay process: {problem}")
    summary = await run_t5(tmp_path, T5Config())
    print(write_summary(summary, tmp_path / "summary-t5.json"))
    known = verdict(summary)
    # The jumps really happened (else the zeros above prove nothing).
    assert summary["backward_jump_seen_ms"] > 50 * 60_000, summary
    assert summary["escalations_over_30min_overdue"] > 0, summary
    # Clients: 10 min ahead of the relay is refused (5 min allowed), 10 min behind is fine.
    assert summary["skew_plus_10min_rejected"] == summary["skew_probes_each"], summary
    assert summary["skew_minus_10min_accepted"] == summary["skew_probes_each"], summary
    xfail_known(known)
