"""``{organisation}/dashboard.html``: one page that needs nothing but itself.

The charts are SVG written here, not a chart library: a page of a few tens of kilobytes that
opens from a file system or a static web server with no network at all, prints as it shows,
and runs no script (its Content-Security-Policy allows none, nor any request). Each chart has
its numbers in a table beside or under it, for screen readers and printing. Only counts reach
the page, never a learner's id or a comment's text.

Per course: its runs' measures and ratios in a table, a funnel of its latest run, joiners,
learners and active learners across its runs by start date, and step completion of its latest
run. At the top: the last sync, read from ``sync-report.json`` (tolerantly: a key it lacks is
shown as not recorded).
"""

from __future__ import annotations

import html
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from flsync import tree

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from flsync.measures.record import RunRecord

DASHBOARD_FILE = tree.DASHBOARD_FILE
LABELS = {
    "joiners": "Joiners",
    "leavers": "Leavers",
    "learners": "Learners",
    "active_learners": "Active learners",
    "returning_learners": "Returning learners",
    "social_learners": "Social learners",
    "fully_participating_learners": "Fully participating learners",
    "statements_sold": "Statements sold",
}
FUNNEL = (
    "joiners",
    "learners",
    "active_learners",
    "returning_learners",
    "social_learners",
    "fully_participating_learners",
    "statements_sold",
)
# (label, numerator, denominator) of the runs table's ratios.
RATIOS = (
    ("Learners % of joiners", "learners", "joiners"),
    ("Leavers % of joiners", "leavers", "joiners"),
    ("Active % of learners", "active_learners", "learners"),
    ("Returning % of learners", "returning_learners", "learners"),
    ("Social % of learners", "social_learners", "learners"),
    ("Fully participating % of learners", "fully_participating_learners", "learners"),
)
ACROSS_RUNS = ("joiners", "learners", "active_learners")
# Okabe and Ito's palette: told apart with any colour vision.
COLOURS = {"joiners": "#0072B2", "learners": "#009E73", "active_learners": "#D55E00"}
VISITED_COLOUR, COMPLETED_COLOUR = "#56B4E9", "#0072B2"
FAILURES_SHOWN = 50  # of sync-report.json's failures; the rest are counted
NONE = "\u2013"  # an unknown value (an en dash)
WIDTH = 720  # of the charts' view box
FUNNEL_WIDTH = 480  # narrower: its table fits beside it
X_LABELS = 6  # start dates written under the runs chart, at most

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1a1a1a;
  margin: 0 auto; max-width: 1100px; padding: 0 1rem 3rem; }
h1 { font-size: 1.6rem; margin: 1.2rem 0 0.3rem; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 0.6rem; border-bottom: 2px solid #0072B2; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 0.4rem; }
.sync { background: #f4f6f8; border-left: 6px solid #009E73; padding: 0.5rem 1rem; }
.sync.incomplete { border-left-color: #D55E00; }
.sync dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.1rem 1rem; margin: 0; }
.sync dt { font-weight: 600; }
.sync dd { margin: 0; }
.problem { color: #8a3000; }
table { border-collapse: collapse; margin: 0.4rem 0 1rem; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding: 0.2rem 0; }
th, td { border: 1px solid #c8ced4; padding: 0.15rem 0.45rem; text-align: right; }
th[scope=row], td.text { text-align: left; }
td.text { white-space: nowrap; }
thead th { background: #eef1f4; vertical-align: bottom; }
.wide { overflow-x: auto; }
figure { margin: 1rem 0 1.6rem; break-inside: avoid; }
figcaption { font-weight: 600; margin-bottom: 0.3rem; }
figure.chart-funnel { display: flex; flex-wrap: wrap; gap: 0 1.5rem; align-items: flex-start; }
figure.chart-funnel figcaption { flex-basis: 100%; }
svg { max-width: 100%; height: auto; font: 12px system-ui, sans-serif; }
svg .axis { stroke: #666; stroke-width: 1; }
svg .grid { stroke: #ddd; stroke-width: 1; }
.legend span { display: inline-block; margin-right: 1rem; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.3em; }
nav ul { columns: 2; padding-left: 1.2rem; }
@media print { nav { display: none; } h2 { break-before: page; } }
"""


def render_dashboard(
    organisation: str,
    runs: Iterable[RunRecord],
    report: Mapping[str, Any] | None,
    generated: datetime,
) -> bytes:
    """The page for the organisation folder ``organisation``."""
    courses: dict[str, list[RunRecord]] = {}
    for run in runs:
        courses.setdefault(run.course_folder, []).append(run)
    for course_runs in courses.values():
        course_runs.sort(key=lambda r: (r.start_date, r.run))
    ordered = sorted(courses.values(), key=lambda c: (c[-1].course.casefold(), c[-1].key))
    name = (
        str(report.get("organisation")) if report and report.get("organisation") else organisation
    )
    sections = "\n".join(_course(i, course) for i, course in enumerate(ordered, 1))
    contents = "".join(
        f'<li><a href="#course-{i}">{_e(c[-1].course)}</a></li>' for i, c in enumerate(ordered, 1)
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{_e(name)}: course measures</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
<h1>{_e(name)}: course measures</h1>
<p>Computed {_when(generated)} from the course files in this folder, as
<code>measures.csv</code> and <code>step-completion.csv</code> have them.
{NONE} marks a measure that is not known (the run lacks a file it needs).</p>
</header>
{_sync(report)}
<nav aria-label="Courses"><h2>Courses</h2>
<ul>{contents or "<li>No course runs yet.</li>"}</ul></nav>
<main>
{sections}
</main>
{_definitions()}
</body>
</html>
"""
    return page.encode()


# The last sync.


def _sync(report: Mapping[str, Any] | None) -> str:
    if report is None:
        return (
            '<section class="sync" aria-labelledby="sync"><h2 id="sync">Last sync</h2>'
            "<p>No sync report in this folder (sync-report.json).</p></section>"
        )
    complete = report.get("complete")
    status = (
        "complete" if complete is True else "INCOMPLETE" if complete is False else "not recorded"
    )
    files = report.get("files")
    files = files if isinstance(files, dict) else {}
    counts = ", ".join(
        f"{_e(str(files.get(key, NONE)))} {label}"
        for key, label in (("new", "new"), ("changed", "changed"), ("failed", "failed"))
    )
    failures = report.get("failures")
    failures = failures if isinstance(failures, list) else []
    listed = "".join(f"<li>{_e(_failure(f))}</li>" for f in failures[:FAILURES_SHOWN])
    if len(failures) > FAILURES_SHOWN:
        listed += f"<li>and {len(failures) - FAILURES_SHOWN} more (see sync-report.json)</li>"
    named = f"<h3>What failed</h3><ul>{listed}</ul>" if listed else ""
    finished = report.get("finished") or report.get("started")
    css = "sync" if complete is not False else "sync incomplete"
    return f"""<section class="{css}" aria-labelledby="sync">
<h2 id="sync">Last sync</h2>
<dl>
<dt>When</dt><dd>{_e(_iso_when(finished))}</dd>
<dt>Outcome</dt><dd>{status}</dd>
<dt>Files</dt><dd>{counts}</dd>
</dl>
{named}
</section>"""


def _failure(failure: Any) -> str:
    if isinstance(failure, dict):
        parts = [str(failure[k]) for k in ("reason", "url", "path") if failure.get(k)]
        return ": ".join(parts) or "(not described)"
    return str(failure)


# A course.


def _course(index: int, runs: Sequence[RunRecord]) -> str:
    latest = runs[-1]
    anchor = f"course-{index}"
    return f"""<section class="course" id="{anchor}" aria-labelledby="{anchor}-title">
<h2 id="{anchor}-title">{_e(latest.course)}</h2>
{_runs_table(runs, anchor)}
{_problems(runs)}
{_funnel(latest, anchor)}
{_across_runs(runs, anchor)}
{_step_chart(latest, anchor)}
</section>"""


def _runs_table(runs: Sequence[RunRecord], anchor: str) -> str:
    head = "".join(f'<th scope="col">{LABELS[m]}</th>' for m in LABELS)
    head += "".join(f'<th scope="col">{label}</th>' for label, _, _ in RATIOS)
    body = []
    for run in runs:
        values = run.measures.values
        cells = "".join(_number_cell(values[m]) for m in LABELS)
        cells += "".join(f"<td>{_percent(values[n], values[d])}</td>" for _, n, d in RATIOS)
        body.append(
            f'<tr><th scope="row">{run.run}</th><td class="text">{run.start_date}</td>'
            f'<td class="text">{run.end_date}</td>{cells}</tr>'
        )
    return f"""<div class="wide"><table class="runs" id="{anchor}-runs">
<caption>Runs: measures and ratios</caption>
<thead><tr><th scope="col">Run</th><th scope="col">Start</th><th scope="col">End</th>
{head}</tr></thead>
<tbody>{"".join(body)}</tbody>
</table></div>"""


def _problems(runs: Sequence[RunRecord]) -> str:
    lines = [
        f"<li>Run {run.run}: measures left empty: {_e(run.measures.problem)}</li>"
        for run in runs
        if run.measures.problem
    ]
    return f'<ul class="problem">{"".join(lines)}</ul>' if lines else ""


def _funnel(run: RunRecord, anchor: str) -> str:
    values = run.measures.values
    caption = f"Funnel of the latest run, run {run.run} (from {run.start_date})"
    joiners = values["joiners"]
    if not joiners:
        return _no_chart("funnel", caption, "no joiners known for this run")
    stages = [(LABELS[m], values[m]) for m in FUNNEL]
    bar_height, label_width = 26, 210
    height = len(stages) * bar_height + 10
    scale = (FUNNEL_WIDTH - label_width - 60) / joiners
    bars = []
    for i, (label, value) in enumerate(stages):
        y = 5 + i * bar_height
        length = (value or 0) * scale
        bars.append(
            f'<text x="{label_width - 8}" y="{y + 17}" text-anchor="end">{label}</text>'
            f'<rect x="{label_width}" y="{y + 3}" width="{length:.1f}" height="{bar_height - 6}"'
            f' fill="#0072B2"><title>{label}: {_number(value)}</title></rect>'
            f'<text x="{label_width + length + 6:.1f}" y="{y + 17}">{_number(value)}</text>'
        )
    rows = "".join(
        f'<tr><th scope="row">{label}</th><td>{_number(value)}</td>'
        f"<td>{_percent(value, joiners)}</td></tr>"
        for label, value in stages
    )
    table = f"""<table class="funnel-data">
<caption>Funnel, run {run.run}</caption>
<thead><tr><th scope="col">Stage</th><th scope="col">Number</th>
<th scope="col">% of joiners</th></tr></thead>
<tbody>{rows}</tbody></table>"""
    return _figure(
        "funnel",
        anchor,
        caption,
        height=height,
        body="".join(bars),
        table=table,
        width=FUNNEL_WIDTH,
    )


def _across_runs(runs: Sequence[RunRecord], anchor: str) -> str:
    caption = "Joiners, learners and active learners across runs, by start date"
    known = [r for r in runs if r.measures.values["joiners"] is not None]
    if not known:
        return _no_chart("runs", caption, "no run has joiners known")
    days = [date.fromisoformat(r.start_date).toordinal() for r in known]
    top = _nice_top(max(r.measures.values[m] or 0 for r in known for m in ACROSS_RUNS))
    left, right, top_pad, bottom = 60, WIDTH - 50, 10, 230
    span = max(days) - min(days)

    def x(day: int) -> float:
        return (left + right) / 2 if span == 0 else left + (day - min(days)) * (right - left) / span

    def y(value: int) -> float:
        return bottom - value * (bottom - top_pad) / top

    parts = _y_axis(top, left, right, bottom, y)
    for measure in ACROSS_RUNS:
        points = [
            (x(day), y(value), run)
            for day, run in zip(days, known, strict=True)
            if (value := run.measures.values[measure]) is not None
        ]
        colour = COLOURS[measure]
        line = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in points)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{colour}"><title>'
            f"{LABELS[measure]}, run {run.run} ({run.start_date}):"
            f" {_number(run.measures.values[measure])}</title></circle>"
            for px, py, run in points
        ]
    step = -(-len(known) // X_LABELS)
    parts += [
        f'<text x="{x(day):.1f}" y="{bottom + 18}" text-anchor="middle">{run.start_date}</text>'
        for i, (day, run) in enumerate(zip(days, known, strict=True))
        if i % step == 0
    ]
    legend = "".join(
        f'<span><span class="swatch" style="background:{COLOURS[m]}"></span>{LABELS[m]}</span>'
        for m in ACROSS_RUNS
    )
    heads = "".join(f'<th scope="col">{LABELS[m]}</th>' for m in ACROSS_RUNS)
    rows = "".join(
        f'<tr><th scope="row">{r.run}</th><td class="text">{r.start_date}</td>'
        + "".join(_number_cell(r.measures.values[m]) for m in ACROSS_RUNS)
        + "</tr>"
        for r in runs
    )
    table = f"""<p class="legend" aria-hidden="true">{legend}</p>
<table class="runs-data">
<caption>Across runs</caption>
<thead><tr><th scope="col">Run</th><th scope="col">Start</th>{heads}</tr></thead>
<tbody>{rows}</tbody></table>"""
    return _figure("runs", anchor, caption, height=bottom + 30, body="".join(parts), table=table)


def _step_chart(run: RunRecord, anchor: str) -> str:
    caption = f"Step completion of the latest run, run {run.run} (from {run.start_date})"
    steps = run.measures.steps
    if not steps:
        return _no_chart("steps", caption, "no step activity known for this run")
    top = _nice_top(max(max(s.visited, s.completed) for s in steps))
    left, right, top_pad, bottom = 60, WIDTH - 10, 10, 230
    slot = (right - left) / len(steps)

    def y(value: int) -> float:
        return bottom - value * (bottom - top_pad) / top

    parts = _y_axis(top, left, right, bottom, y)
    week = None
    for i, step in enumerate(steps):
        x = left + i * slot
        title = f"Step {step.step}: {step.visited} visited, {step.completed} completed"
        parts.append(
            f"<g><title>{_e(title)}</title>"
            f'<rect x="{x + slot * 0.1:.2f}" y="{y(step.visited):.1f}" width="{slot * 0.8:.2f}"'
            f' height="{bottom - y(step.visited):.1f}" fill="{VISITED_COLOUR}"/>'
            f'<rect x="{x + slot * 0.25:.2f}" y="{y(step.completed):.1f}" width="{slot * 0.5:.2f}"'
            f' height="{bottom - y(step.completed):.1f}" fill="{COMPLETED_COLOUR}"/></g>'
        )
        if step.week_number != week:
            week = step.week_number
            parts.append(
                f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 6}"/>'
                f'<text x="{x + 2:.1f}" y="{bottom + 18}">Week {_e(week)}</text>'
            )
    legend = (
        f'<span><span class="swatch" style="background:{VISITED_COLOUR}"></span>Visited</span>'
        f'<span><span class="swatch" style="background:{COMPLETED_COLOUR}"></span>Completed</span>'
    )
    rows = "".join(
        f'<tr><th scope="row">{_e(s.step)}</th><td>{s.visited}</td><td>{s.completed}</td>'
        f"<td>{_percent(s.completed, s.visited)}</td></tr>"
        for s in steps
    )
    table = f"""<p class="legend" aria-hidden="true">{legend}</p>
<div class="wide"><table class="steps-data">
<caption>Step completion, run {run.run} (learners)</caption>
<thead><tr><th scope="col">Step</th><th scope="col">Visited</th><th scope="col">Completed</th>
<th scope="col">Completed % of visited</th></tr></thead>
<tbody>{rows}</tbody></table></div>"""
    return _figure("steps", anchor, caption, height=bottom + 26, body="".join(parts), table=table)


# Pieces.


def _figure(
    kind: str,
    anchor: str,
    caption: str,
    *,
    height: float,
    body: str,
    table: str,
    width: int = WIDTH,
) -> str:
    ident = f"{anchor}-{kind}"
    return f"""<figure class="chart chart-{kind}" aria-labelledby="{ident}-caption">
<figcaption id="{ident}-caption">{_e(caption)}</figcaption>
<svg role="img" aria-labelledby="{ident}-caption" xmlns="http://www.w3.org/2000/svg"
 viewBox="0 0 {width} {height:.0f}" width="{width}" height="{height:.0f}">
{body}
</svg>
{table}
</figure>"""


def _no_chart(kind: str, caption: str, reason: str) -> str:
    return f"""<figure class="chart chart-{kind}">
<figcaption>{_e(caption)}</figcaption>
<p>No chart: {_e(reason)}.</p>
</figure>"""


def _y_axis(top: int, left: float, right: float, bottom: float, y: Any) -> list[str]:
    parts = []
    for tick in range(0, top + 1, _tick_step(top)):
        parts.append(
            f'<line class="grid" x1="{left}" x2="{right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    parts.append(f'<line class="axis" x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}"/>')
    return parts


def _tick_step(value: int) -> int:
    """A round step (1, 2 or 5 times a power of ten) that cuts 0..value into at most 5."""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            if factor * magnitude * 5 >= value:
                return factor * magnitude
        magnitude *= 10


def _nice_top(value: int) -> int:
    """The axis' top: the first multiple of its tick step at or above ``value`` (at least 1)."""
    step = _tick_step(max(value, 1))
    return max(step, -(-value // step) * step)


def _definitions() -> str:
    items = {
        "Joiners": "people enrolled with the role learner (staff never count anywhere)",
        "Leavers": "joiners who unenrolled",
        "Learners": "joiners who visited at least one step",
        "Active learners": "learners who completed at least one step",
        "Returning learners": "learners who completed steps in at least two different weeks",
        "Social learners": "learners who wrote at least one comment",
        "Fully participating learners": "joiners who completed most of the course and its"
        " assessments (FutureLearn's fully_participated_at)",
        "Statements sold": "joiners who bought a statement of participation",
        "Visited, completed (per step)": "learners who visited the step, and who completed it",
    }
    listed = "".join(f"<dt>{term}</dt><dd>{text}</dd>" for term, text in items.items())
    return f"""<footer>
<h2 id="definitions">What the measures mean</h2>
<dl>{listed}</dl>
<p>Generated by flsync; docs/measures.md in flsync's repository has the exact definitions.</p>
</footer>"""


def _number_cell(value: int | None) -> str:
    return f"<td>{_number(value)}</td>"


def _number(value: int | None) -> str:
    return NONE if value is None else str(value)


def _percent(part: int | None, whole: int | None) -> str:
    if part is None or not whole:
        return NONE
    return f"{100 * part / whole:.1f}%"


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _iso_when(value: Any) -> str:
    if not isinstance(value, str):
        return "not recorded"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return _when(moment.astimezone(UTC) if moment.tzinfo else moment)


def _e(text: str) -> str:
    return html.escape(text, quote=True)
