"""The imitation site's model: accounts, organisations, courses and runs.

Everything is derived from ``SiteOptions`` (``random.Random`` seeded with ``seed``), except the
dates of the upcoming and in-progress runs, which follow the real current date so that their
status stays what it is meant to be.
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta

ADMIN_EMAIL = "demo@example.org"
ADMIN_PASSWORD = "demo-password"
LEARNER_EMAIL = "learner@example.org"
LEARNER_PASSWORD = "learner-password"
PARTIAL_EMAIL = "partial@example.org"
PARTIAL_PASSWORD = "partial-password"
ACCOUNTS = {
    ADMIN_EMAIL: ADMIN_PASSWORD,
    LEARNER_EMAIL: LEARNER_PASSWORD,
    PARTIAL_EMAIL: PARTIAL_PASSWORD,
}

SUBDIVISIONS = "country-subdivisions"
UNKNOWN_DATASET = "learner_outcomes_survey_responses"
RUNS_PER_PAGE = 25
UPCOMING, IN_PROGRESS, FINISHED = "upcoming", "in-progress", "finished"
_TITLE_121 = "A" * 120
# SiteOptions.names: (courses of the first organisation, organisations of their own), each as
# (slug, title or name).
NAME_CASES: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {
    "long": (
        [("cjk-course", "\u5b66" * 95)],  # 95 characters, 285 bytes of UTF-8
        [("emoji-org", "\U0001f393" * 100), ("s" * 300, "Long Slug University")],
    ),
    "colliding": (
        [
            ("slash-course", "Data/Science"),
            ("dash-course", "Data-Science"),
            ("backslash-course", "Data\\Science"),
            ("case-course", "DATA-SCIENCE"),
            ("long-course-x", _TITLE_121 + "X"),
            ("long-course-y", _TITLE_121 + "Y"),
            ("composed-course", "Caf\u00e9 Culture"),
            ("decomposed-course", "Cafe\u0301 Culture"),
        ],
        [("dot-org", "."), ("dot-dot-org", "..")],
    ),
    "reserved": (
        [
            ("update-course", "update.txt"),
            ("report-course", "sync-report.json"),
            ("hidden-course", ".flsync-state.json"),
            ("measures-course", "Measures.CSV"),
        ],
        [("database-org", "flsync.sqlite3")],
    ),
}

# Dashboard order, as the site lists them.
CORE_DATASETS = ("enrolments", "comments", "step_activity", "question_response")
PEER_REVIEW_DATASETS = ("peer_review_assignments", "peer_review_reviews")
SURVEY_DATASETS = (
    "archetype_survey_responses",
    "leaving_survey_responses",
    "weekly_sentiment_survey_responses",
)

_FIRST_ORGANISATIONS = (
    ("exampleton", "University of Exampleton"),
    ("tricky-institute", "Institut für Données & “Tests”"),
)
_TOWNS = (
    "Northbridge",
    "Ashford",
    "Lakeside",
    "Kingsmere",
    "Wrexley",
    "Dunmore",
    "Harlow Vale",
    "São Martinho",
    "Østervik",
)
_COURSE_TITLES = (
    "Introduction to Marine Biology",
    "Understanding Dementia",
    "Climate Change: The Science",
    "Writing for the Web",
    "The Science of Nutrition",
    "Introduction to Python Programming",
    "Medieval Lives: Birth, Marriage & Death",
    "Forensic Psychology",
    "Exploring Anatomy",
    "Teaching Computing in Primary Schools",
    "Global Health Challenges",
    "Écologie urbaine et biodiversité",
    "Learn Spanish: Beginners 1",
    "Music Theory Fundamentals",
    "Cyber Security for Small Businesses",
    "Shakespeare's Hamlet: Text, Performance and Culture",
    "Managing People",
    "Archaeology of Portus",
    "Behavioural Economics in Action",
    "Sustainable Fashion",
)
_LONG_TITLE = (
    "Understanding the Long-Term Social, Economic, Environmental and Cultural Consequences "
    "of Rapid Urbanisation in Coastal Cities: Planning, Resilience, Governance, Public Health, "
    "Housing, Transport and Community Engagement for the Twenty-First Century"
)
_TRICKY_TITLE = 'Data/Society: Ethics & "Open" Data — the “Learner\u2019s” Café ☕ 📊'
_LAST_PAST_START = date(2024, 11, 25)


@dataclass(frozen=True)
class SiteOptions:
    organisations: int = 2
    courses: int = 3  # per organisation
    runs: int = 3  # per course
    rows: int = 12  # per dataset file
    big_file_mb: float = 0  # >0: size in MiB of the first run's step_activity file
    tricky: bool = True  # add the edge-case courses and runs to the first organisation
    seed: int = 1
    # Names that test the output tree's rules (NAME_CASES), each adding courses to the first
    # organisation and organisations of its own: "long" (names past 255 bytes), "colliding"
    # (names equal once made safe, case-folded or normalised) or "reserved" (names of flsync's
    # own files). None: none.
    names: str | None = None


@dataclass(frozen=True)
class Run:
    organisation_slug: str
    course_slug: str
    course_title: str
    number: int
    start_date: date | None
    duration_weeks: int
    explicit_end_date: date | None  # shown as "End date" on the details page (newer runs)
    invite_only: bool
    old_headers: bool  # the older, shorter header versions
    datasets: tuple[str, ...]  # listed on the dashboard; empty unless started
    header_only: tuple[str, ...] = ()  # datasets served with the header line alone

    @property
    def end_date(self) -> date | None:
        if self.explicit_end_date or self.start_date is None:
            return self.explicit_end_date
        return self.start_date + timedelta(weeks=self.duration_weeks)

    def status_on(self, today: date) -> str:
        if self.start_date is None or self.start_date > today:
            return UPCOMING
        end = self.end_date
        return IN_PROGRESS if end is not None and end >= today else FINISHED

    @property
    def status(self) -> str:
        return self.status_on(date.today())

    def started_on(self, today: date) -> bool:
        return self.start_date is not None and self.start_date <= today

    def as_json(self) -> dict:
        return {
            "course_slug": self.course_slug,
            "course_title": self.course_title,
            "run": self.number,
            "start_date": _iso(self.start_date),
            "end_date": _iso(self.end_date),
            "explicit_end_date": self.explicit_end_date is not None,
            "duration_weeks": self.duration_weeks,
            "status": self.status,
            "invite_only": self.invite_only,
            "datasets": list(self.datasets),
        }


@dataclass(frozen=True)
class Organisation:
    slug: str
    name: str
    runs: tuple[Run, ...]  # newest first, as listed

    def page_count(self) -> int:
        return max(1, -(-len(self.runs) // RUNS_PER_PAGE))

    def runs_page(self, page: int) -> tuple[Run, ...]:
        return self.runs[(page - 1) * RUNS_PER_PAGE : page * RUNS_PER_PAGE]


@dataclass(frozen=True)
class SiteData:
    options: SiteOptions
    today: date  # the day it was built, which the in-progress and upcoming runs follow
    organisations: tuple[Organisation, ...]
    big_file: tuple[str, int] | None  # (course slug, run) whose step_activity is big

    def organisation(self, slug: str) -> Organisation | None:
        return next((o for o in self.organisations if o.slug == slug), None)

    @property
    def runs(self) -> tuple[Run, ...]:
        return tuple(run for org in self.organisations for run in org.runs)

    def run(self, course_slug: str, number: int) -> Run | None:
        return next(
            (r for r in self.runs if r.course_slug == course_slug and r.number == number), None
        )

    def administered_by(self, email: str) -> tuple[str, ...]:
        """Slugs of the organisations an account may administer."""
        if email == ADMIN_EMAIL:
            return tuple(org.slug for org in self.organisations)
        if email == PARTIAL_EMAIL:
            return (self.organisations[0].slug,)
        return ()

    def as_json(self) -> dict:
        return {
            "organisations": [
                {"slug": o.slug, "name": o.name, "runs": [r.as_json() for r in o.runs]}
                for o in self.organisations
            ],
            "big_file": list(self.big_file) if self.big_file else None,
        }


def build_site_data(options: SiteOptions, today: date) -> SiteData:
    rng = random.Random(f"fakesite/{options.seed}")
    titles = _CourseTitles(rng)
    organisations = []
    big_file = None
    for index in range(options.organisations):
        slug, name = _organisation_name(index)
        courses = [_course_runs(rng, slug, titles, options) for _ in range(options.courses)]
        runs = [run for course in courses for run in course]
        if index == 0 and options.tricky:
            runs += _tricky_runs(slug, today)
        if index == 0 and options.names:
            runs += _named_courses(options.names, slug)
        if index == 0 and options.big_file_mb > 0 and runs:
            big_file = (runs[0].course_slug, runs[0].number)
        runs.sort(key=_newest_first)
        organisations.append(Organisation(slug, name, tuple(runs)))
    for slug, name in NAME_CASES[options.names][1] if options.names else ():
        organisations.append(Organisation(slug, name, tuple(_named_runs(slug, [(slug, name)]))))
    return SiteData(options, today, tuple(organisations), big_file)


def _named_courses(case: str, organisation: str) -> list[Run]:
    return _named_runs(organisation, NAME_CASES[case][0])


def _named_runs(organisation: str, courses: list[tuple[str, str]]) -> list[Run]:
    """One finished run of each (slug, title), with the core datasets."""
    start = date(2022, 3, 7)
    return [
        Run(organisation, slug, title, 1, start, 4, start + timedelta(weeks=4), False, False,
            CORE_DATASETS)
        for slug, title in courses
    ]  # fmt: skip


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def _newest_first(run: Run) -> tuple:
    # Unscheduled runs were created last, so they come first; then by start date.
    start = run.start_date.toordinal() if run.start_date else 10**7
    return (-start, run.course_slug, -run.number)


def _organisation_name(index: int) -> tuple[str, str]:
    if index < len(_FIRST_ORGANISATIONS):
        return _FIRST_ORGANISATIONS[index]
    town = _TOWNS[(index - 2) % len(_TOWNS)]
    cycle = (index - 2) // len(_TOWNS)
    name = f"{town} University" + (f" {cycle + 1}" if cycle else "")
    return slugify(name), name


class _CourseTitles:
    """Hands out course titles in a seeded order, with slugs unique across the site."""

    def __init__(self, rng: random.Random) -> None:
        self._order = rng.sample(_COURSE_TITLES, len(_COURSE_TITLES))
        self._taken: set[str] = set()
        self._count = 0

    def next(self) -> tuple[str, str]:
        title = self._order[self._count % len(self._order)]
        cycle = self._count // len(self._order)
        self._count += 1
        if cycle:
            title = f"{title} (Part {cycle + 1})"
        slug = slugify(title)
        while slug in self._taken:
            slug += "-x"
        self._taken.add(slug)
        return slug, title


def _course_runs(
    rng: random.Random, organisation: str, titles: _CourseTitles, options: SiteOptions
) -> list[Run]:
    slug, title = titles.next()
    weeks = rng.choice((2, 3, 4, 6, 8))
    peer_review = rng.random() < 0.4
    videos = rng.random() < 0.8
    start = date(2016, 1, 4) + timedelta(weeks=rng.randrange(156))  # a Monday
    # Spread the runs so that every one of them starts before _LAST_PAST_START.
    widest_gap = min(40, (_LAST_PAST_START - start).days // 7 // max(1, options.runs - 1))
    runs = []
    for number in range(1, options.runs + 1):
        extension = timedelta(days=rng.choice((0, 0, 14)))
        end = start + timedelta(weeks=weeks) + extension if start.year >= 2019 else None
        datasets = _datasets(start, peer_review=peer_review, videos=videos)
        invite_only = rng.random() < 0.1
        runs.append(
            Run(organisation, slug, title, number, start, weeks, end, invite_only, False, datasets)
        )
        start += timedelta(weeks=rng.randint(max(1, widest_gap // 2), max(1, widest_gap)))
    return runs


def _datasets(start: date, *, peer_review: bool, videos: bool) -> tuple[str, ...]:
    names = list(CORE_DATASETS)
    if peer_review:
        names += PEER_REVIEW_DATASETS
    names.append("team_members")
    if videos:
        names.append("video_stats")
    if start >= date(2017, 1, 1):
        names += SURVEY_DATASETS
    return tuple(names)


def _tricky_runs(organisation: str, today: date) -> list[Run]:
    """Runs that exercise every edge of the site model (see the module's README)."""

    def run(
        course: tuple[str, str],
        number: int,
        start: date | None,
        weeks: int,
        end: date | None = None,
        *,
        invite_only: bool = False,
        old_headers: bool = False,
        extra: tuple[str, ...] = (),
        header_only: tuple[str, ...] = (),
    ) -> Run:
        if start is None or start > today:
            datasets: tuple[str, ...] = ()
        elif old_headers:
            datasets = CORE_DATASETS
        else:
            datasets = _datasets(start, peer_review=True, videos=True) + extra
        slug, title = course
        return Run(
            organisation, slug, title, number, start, weeks, end, invite_only, old_headers,
            datasets, header_only,
        )  # fmt: skip

    tricky = ("data-society-ethics", _TRICKY_TITLE)
    long = (slugify(_LONG_TITLE)[:60].rstrip("-"), _LONG_TITLE)
    invited = ("clinical-skills-partners", "Clinical Skills for Partner Hospitals (Invite Only)")
    live = ("climate-now", "Climate Now: Live Evidence Review")
    series = ("foundations-of-data-science", "Foundations of Data Science")
    runs = [
        run(tricky, 1, date(2019, 3, 4), 6, date(2019, 4, 14), header_only=(SURVEY_DATASETS[2],)),
        run(tricky, 2, date(2023, 10, 2), 6, date(2023, 11, 12)),
        run(long, 1, date(2021, 1, 11), 4, date(2021, 2, 8)),
        run(invited, 1, date(2022, 5, 9), 3, date(2022, 5, 30), invite_only=True),
        run(live, 1, today - timedelta(days=10), 6, today + timedelta(days=32)),
    ]
    for number in range(1, 21):
        start = date(2016, 2, 1) + timedelta(weeks=23 * (number - 1))
        # From run 10 on the details page states an end date, sometimes past the duration.
        end = start + timedelta(weeks=6, days=14 * (number % 3 == 0)) if number >= 10 else None
        runs.append(
            run(
                series,
                number,
                start,
                8 if number <= 2 else 6,
                end,
                invite_only=number == 7,
                old_headers=number <= 2,
                extra=(UNKNOWN_DATASET,) if number >= 19 else (),
            )
        )
    upcoming = today + timedelta(days=60)
    runs.append(run(series, 21, upcoming, 6, upcoming + timedelta(weeks=6)))
    runs.append(run(series, 22, None, 6))
    return runs
