"""The JSON behind the pages built by script (``Faults.script_pages``; pages.SHELL_SCRIPT).

Internal to the pages, as the contract says such endpoints are: their shapes are this module's
to choose. They carry the page's data as it is shown (labels, formatted dates), so that the
script renders exactly what pages.py renders on the server:

- ``GET /admin/api/organisations/{org}/runs?page=N``::

    {"organisation": "...",
     "runs": [{"title": "...", "number": 19, "url": "/admin/courses/{course}/19",
               "start": {"order": "2024-01-08", "text": "8 Jan 2024"},  # "" / "Not set"
               "flags": [{"flag": "invite-only", "label": "Invite-only"},
                         {"flag": "finished", "label": "Finished"}]}],
     "pages": {"current": 1, "count": 2, "url": "/admin/organisations/{org}/runs"}}

- ``GET /admin/api/courses/{course}/{run}/datasets``::

    {"datasets": [{"name": "comments", "label": "Comments",
                   "url": "/admin/courses/{course}/{run}/stats-dashboard/data/comments"}]}
"""

from __future__ import annotations

from datetime import date
from typing import Any

from fakesite.data import Organisation, Run
from fakesite.pages import dataset_label, format_date, status_flags


def runs_source(organisation_slug: str, page: int) -> str:
    """The ``data-source`` of a runs page."""
    return f"/admin/api/organisations/{organisation_slug}/runs?page={page}"


def datasets_source(run: Run) -> str:
    """The ``data-source`` of a stats dashboard."""
    return f"/admin/api/courses/{run.course_slug}/{run.number}/datasets"


def runs_json(organisation: Organisation, page: int, today: date) -> dict[str, Any]:
    return {
        "organisation": organisation.name,
        "runs": [_run(run, today) for run in organisation.runs_page(page)],
        "pages": {
            "current": page,
            "count": organisation.page_count(),
            "url": f"/admin/organisations/{organisation.slug}/runs",
        },
    }


def datasets_json(run: Run, started: bool) -> dict[str, Any]:
    base = _run_url(run)
    return {
        "datasets": [
            {
                "name": name,
                "label": dataset_label(name),
                "url": f"{base}/stats-dashboard/data/{name}",
            }
            for name in (run.datasets if started else ())
        ]
    }


def _run(run: Run, today: date) -> dict[str, Any]:
    start = run.start_date
    return {
        "title": run.course_title,
        "number": run.number,
        "url": _run_url(run),
        "start": {
            "order": start.isoformat() if start else "",
            "text": format_date(start) if start else "Not set",
        },
        "flags": [{"flag": flag, "label": label} for flag, label in status_flags(run, today)],
    }


def _run_url(run: Run) -> str:
    return f"/admin/courses/{run.course_slug}/{run.number}"
