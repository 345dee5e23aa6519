"""dashboard.html: rendered from any sync report it may meet, and opened in the headless
Chromium the tests use (Debian's), from the file system, with every request watched."""

from __future__ import annotations

import csv
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from playwright.sync_api import sync_playwright

from flsync.measures.compute import MEASURES, RunMeasures, StepCompletion
from flsync.measures.dashboard import DASHBOARD_FILE, FAILURES_SHOWN, render_dashboard
from flsync.measures.record import MEASURES_FILE, STEPS_FILE, RunRecord

if TYPE_CHECKING:
    from pathlib import Path

NOW = datetime(2026, 12, 1, 3, 15, tzinfo=UTC)
KINDS = ("funnel", "runs", "steps")


def record(run: int, start: str, joiners: int | None, title: str = "A Course") -> RunRecord:
    values = dict.fromkeys(MEASURES, None if joiners is None else joiners // 2)
    values["joiners"] = joiners
    steps = (StepCompletion("1.1", "1", "1", 4, 3), StepCompletion("2.1", "2", "1", 2, 0))
    return RunRecord(
        f"A Course/{run}-{start}-{start}", "f", title, run, start, start, RunMeasures(values, steps)
    )


def page(report: Any = None, runs: list[RunRecord] | None = None) -> str:
    runs = [record(1, "2021-01-04", 10), record(2, "2022-01-03", 20)] if runs is None else runs
    return render_dashboard("Org", runs, report, NOW).decode()


def test_the_last_sync_from_a_complete_report():
    report = {
        "organisation": "University of Exampleton",
        "complete": True,
        "finished": "2026-12-01T03:15:41+00:00",
        "files": {"new": 3, "changed": 12, "unchanged": 4, "not_modified": 384, "failed": 0},
    }
    html = page(report)
    assert "<title>University of Exampleton: course measures</title>" in html
    assert "<dt>When</dt><dd>2026-12-01 03:15 UTC</dd>" in html
    assert "<dt>Outcome</dt><dd>complete</dd>" in html
    assert "<dt>Files</dt><dd>3 new, 12 changed, 0 failed</dd>" in html
    assert "What failed" not in html


def test_the_failures_of_an_incomplete_sync_are_named_and_bounded():
    failures = [{"url": f"https://example.org/{i}", "reason": "HTTP 503"} for i in range(60)]
    html = page({"complete": False, "failures": [*failures, "a line of its own"]})
    assert '<section class="sync incomplete"' in html
    assert "<dt>Outcome</dt><dd>INCOMPLETE</dd>" in html
    assert "<li>HTTP 503: https://example.org/0</li>" in html
    assert html.count("<li>HTTP 503:") == FAILURES_SHOWN
    assert f"<li>and {61 - FAILURES_SHOWN} more (see sync-report.json)</li>" in html


def test_a_report_that_lacks_keys_or_has_others_still_makes_the_page():
    for report in ({}, {"complete": "yes", "files": [], "failures": "x", "finished": 7}, None):
        html = page(report)
        assert html.count('<figure class="chart chart-funnel"') == 1
    assert "<dt>When</dt><dd>not recorded</dd>" in page({})
    assert "<dt>Outcome</dt><dd>not recorded</dd>" in page({})
    assert "No sync report in this folder" in page(None)


def test_names_are_escaped_and_the_page_asks_for_nothing():
    html = page(runs=[record(1, "2021-01-04", 10, title='<script>alert("x")</script> & Co')])
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co" in html
    assert "default-src 'none'" in html
    assert " src=" not in html and "<link" not in html and "url(" not in html


def test_unknown_measures_and_runs_without_figures():
    html = page(runs=[record(1, "2021-01-04", None)])
    assert "<p>No chart: no joiners known for this run.</p>" in html
    assert "<p>No chart: no run has joiners known.</p>" in html
    assert html.count("<td>\u2013</td>") >= len(MEASURES)


# In the browser.


def open_in_chromium(path: Path) -> dict[str, Any]:
    """Open the page from the file system in headless Chromium, with every request routed:
    what it asked for outside its folder (refused), its console errors, and its contents."""

    def visit() -> dict[str, Any]:
        folder = path.parent.as_uri() + "/"
        seen: dict[str, list[str]] = {"outside": [], "errors": [], "requests": []}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"), headless=True
            )
            try:
                page = browser.new_page()
                page.on("request", lambda r: seen["requests"].append(r.url))
                page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
                page.on("pageerror", lambda e: seen["errors"].append(str(e)))

                def route(route: Any) -> None:
                    url = route.request.url
                    if url.startswith(folder):
                        route.continue_()
                    else:
                        seen["outside"].append(url)
                        route.abort()

                page.route("**/*", route)
                page.goto(path.as_uri(), wait_until="load")
                seen["courses"] = page.eval_on_selector_all(
                    "section.course",
                    """sections => sections.map(s => ({
                        title: s.querySelector("h2").textContent,
                        charts: Object.fromEntries(["funnel", "runs", "steps"].map(kind =>
                            [kind, s.querySelectorAll(`figure.chart-${kind} svg`).length])),
                        tables: Object.fromEntries(["runs", "funnel-data", "runs-data",
                            "steps-data"].map(name => [name, [...s.querySelectorAll(
                            `table.${name} tbody tr`)].map(tr => [...tr.children].map(
                            cell => cell.textContent))])),
                    }))""",
                )
            finally:
                browser.close()
        return seen

    # Playwright's synchronous API wants a thread with no event loop running in it.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(visit).result(timeout=120)


def field(cell: str) -> str:
    return "" if cell == "\u2013" else cell


def test_the_page_opens_offline_with_its_charts_and_the_numbers_of_measures_csv(synced_site):
    organisation = synced_site.data_dir / "University of Exampleton"
    seen = open_in_chromium(organisation / DASHBOARD_FILE)
    assert seen["outside"] == [] and seen["errors"] == []
    assert seen["requests"] == [(organisation / DASHBOARD_FILE).as_uri()]
    measures = list(csv.DictReader((organisation / MEASURES_FILE).open(newline="")))
    steps = list(csv.DictReader((organisation / STEPS_FILE).open(newline="")))
    assert len(seen["courses"]) == len({r["course"] for r in measures}) == 8
    for course in seen["courses"]:
        assert course["charts"] == dict.fromkeys(KINDS, 1), course["title"]
        runs = [r for r in measures if r["course"] == course["title"]]
        expected = [
            [r["run"], r["start_date"], r["end_date"], *(r[m] for m in MEASURES)] for r in runs
        ]
        assert [
            [field(c) for c in row[: 3 + len(MEASURES)]] for row in course["tables"]["runs"]
        ] == expected
        latest = runs[-1]
        funnel = {row[0]: field(row[1]) for row in course["tables"]["funnel-data"]}
        assert funnel["Joiners"] == latest["joiners"]
        assert funnel["Fully participating learners"] == latest["fully_participating_learners"]
        assert [row[2:] for row in course["tables"]["runs-data"]] == [
            [r["joiners"], r["learners"], r["active_learners"]] for r in runs
        ]
        assert [row[:3] for row in course["tables"]["steps-data"]] == [
            [s["step"], s["visited"], s["completed"]]
            for s in steps
            if s["course"] == course["title"] and s["run"] == latest["run"]
        ]


def test_no_learner_id_and_no_comment_text_in_any_page(synced_site):
    for organisation in [p for p in synced_site.data_dir.iterdir() if p.is_dir()]:
        html = (organisation / DASHBOARD_FILE).read_text()
        secrets: set[str] = set()
        for name, columns in (
            ("enrolments.csv", ("learner_id",)),
            ("step-activity.csv", ("learner_id",)),
            ("comments.csv", ("author_id", "text")),
        ):
            for path in organisation.glob(f"*/*/{name}"):
                for row in csv.DictReader(path.open(newline="")):
                    secrets.update(row[c] for c in columns if row.get(c))
        assert len(secrets) > 100
        assert [s for s in secrets if s in html] == []
