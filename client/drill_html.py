"""The drill scorecard as one self-contained HTML page: a table and two charts.

The charts (time to acknowledge over time per desk; its distribution per desk) are drawn
by matplotlib (the ``drills`` extra) as SVG and inlined, text as paths: the page fetches
nothing, no script, font, style sheet or image from anywhere.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import re
from collections.abc import Sequence
from typing import Any

from client.drills import DeskScore, Observation, format_duration
from keys.errors import UsageError

_SVG_START = re.compile(r"^.*?(<svg\b)", re.S)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UsageError("the HTML report draws its charts with matplotlib: install the "
                         "drills extra (pip install 'hotline[drills]')") from exc
    plt.rcParams.update({"svg.fonttype": "path", "svg.hashsalt": "hotline-drills",
                         "font.size": 9})
    return plt


def _svg(fig: object) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")  # type: ignore[attr-defined]
    # Drop the XML declaration and DOCTYPE (its DTD URL): inline SVG needs neither.
    return _SVG_START.sub(r"\1", buf.getvalue(), count=1)


def _charts(observations: Sequence[Observation]) -> tuple[str, str]:
    plt = _pyplot()
    acks: dict[str, list[tuple[dt.datetime, float]]] = {}
    for o in observations:
        if o.status == "exercise" and o.acked_at is not None and not o.automatic:
            when = dt.datetime.fromtimestamp(o.accepted_at / 1000, tz=dt.UTC)
            acks.setdefault(o.desk, []).append((when, (o.acked_at - o.accepted_at) / 60_000))
    desks = sorted(acks)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for desk in desks:
        pts = sorted(acks[desk])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=desk)
    ax.set_ylabel("minutes to acknowledge")
    ax.set_title("Time to acknowledge over time, per desk")
    if desks:
        ax.legend(loc="upper left")
    fig.autofmt_xdate()
    over_time = _svg(fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if desks:
        ax.boxplot([[p[1] for p in acks[d]] for d in desks], orientation="horizontal")
        ax.set_yticks(range(1, len(desks) + 1), desks)
    ax.set_xlabel("minutes to acknowledge")
    ax.set_title("Distribution per desk")
    spread = _svg(fig)
    plt.close(fig)
    return over_time, spread


def render_html(scores: Sequence[DeskScore], observations: Sequence[Observation], *,
                desk: str, since: int, now: int) -> str:
    over_time, spread = _charts(observations)
    e = html.escape

    def trio(values: tuple[float | None, ...]) -> str:
        return " / ".join(format_duration(v) for v in values)

    rows = []
    for s in scores:
        share = "-" if s.in_time_share is None else f"{100 * s.in_time_share:.0f}%"
        up = "-" if s.uptime is None else f"{100 * s.uptime:.1f}%"
        rows.append(
            "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in (
                s.desk, s.period, s.exercises,
                trio((s.deliver.p50, s.deliver.p95, s.deliver.max)),
                trio((s.acknowledge.p50, s.acknowledge.p95, s.acknowledge.max)),
                trio((s.respond.p50, s.respond.p95, s.respond.max)),
                share, s.late, s.missed, f"{up} ({s.link_tests_answered}/{s.link_tests})",
            )) + "</tr>")

    def day(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>Hotline readiness drills: {e(desk)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #bbb; padding: 4px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
th {{ background: #eee; }}
.note {{ color: #555; font-size: 90%; max-width: 60em; }}
figure {{ margin: 1em 0; }}
</style></head><body>
<h1>Readiness drills: scorecard</h1>
<p class="note">Computed by desk {e(desk)} on {e(day(now))} from the signed statements of
drill notices since {e(day(since))}: the relay's signed acceptance, delivery and
acknowledgement times, the recipients' signed receipts and acknowledgements, and reply
notices. [EXERCISE] and [TEST] notices only; automatic acknowledgements of link tests are
not counted as a person's. p50/p95: nearest-rank percentiles.</p>
<table id="scorecard">
<thead><tr><th>desk</th><th>period</th><th>exercises</th><th>deliver p50 / p95 / max</th>
<th>acknowledge p50 / p95 / max</th><th>respond p50 / p95 / max</th><th>in time</th>
<th>late</th><th>missed</th><th>link uptime</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
<figure id="chart-over-time">{over_time}</figure>
<figure id="chart-distribution">{spread}</figure>
</body></html>
"""
