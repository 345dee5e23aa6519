"""The CSV files the site serves: headers per the site model, realistic generated rows.

A file's bytes depend on the site's seed, the run, the dataset and the ``generation`` (the
site's daily regeneration), nothing else. The one big file is a header, one pre-built chunk
repeated, and a tail cut to the exact size, so that it is never held whole in memory.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import cached_property, lru_cache

from fakesite.data import SUBDIVISIONS, UNKNOWN_DATASET, Run, SiteData

MIB = 1024 * 1024
_BIG_BLOCK_BYTES = 64 * 1024
# Last-Modified of generation 1; every later generation is a day later.
_FIRST_GENERATION_AT = datetime(2024, 1, 1, 3, 0, tzinfo=UTC)

HEADERS: dict[str, tuple[str, ...]] = {
    "enrolments": (
        "learner_id", "enrolled_at", "unenrolled_at", "role", "fully_participated_at",
        "purchased_statement_at", "gender", "country", "age_range", "highest_education_level",
        "employment_status", "employment_area", "detected_country", "unlimited",
        "statement_tier",
    ),
    "comments": (
        "id", "author_id", "parent_id", "step", "week_number", "step_number", "text",
        "timestamp", "moderated", "likes",
    ),
    "step_activity": (
        "learner_id", "step", "week_number", "step_number", "first_visited_at",
        "last_completed_at",
    ),
    "question_response": (
        "learner_id", "quiz_question", "question_type", "week_number", "step_number",
        "question_number", "response", "cloze_response", "submitted_at", "correct",
    ),
    "peer_review_assignments": (
        "id", "step", "step_number", "week_number", "author_id", "text", "first_viewed_at",
        "submitted_at", "moderated", "review_count",
    ),
    "peer_review_reviews": (
        "id", "step", "week_number", "step_number", "reviewer_id", "assignment_id",
        "guideline_one_feedback", "guideline_two_feedback", "guideline_three_feedback",
        "created_at",
    ),
    "team_members": ("id", "first_name", "last_name", "team_role", "user_role"),
    "video_stats": (
        "step_position", "title", "video_duration", "total_views", "total_downloads",
        "total_caption_views", "total_transcript_views", "viewed_hd", "viewed_five_percent",
        "viewed_ten_percent", "viewed_twentyfive_percent", "viewed_fifty_percent",
        "viewed_seventyfive_percent", "viewed_ninetyfive_percent", "viewed_onehundred_percent",
        "console_device_percentage", "desktop_device_percentage", "mobile_device_percentage",
        "tv_device_percentage", "tablet_device_percentage", "unknown_device_percentage",
        "europe_views_percentage", "oceania_views_percentage", "asia_views_percentage",
        "north_america_views_percentage", "south_america_views_percentage",
        "africa_views_percentage", "antarctica_views_percentage",
    ),
    "archetype_survey_responses": ("id", "learner_id", "responded_at", "archetype"),
    "leaving_survey_responses": (
        "id", "learner_id", "left_at", "leaving_reason", "last_completed_step_at",
        "last_completed_step", "last_completed_week_number", "last_completed_step_number",
    ),
    "weekly_sentiment_survey_responses": (
        "id", "responded_at", "week_number", "experience_rating", "reason",
    ),
    UNKNOWN_DATASET: (
        "id", "learner_id", "responded_at", "outcome", "would_recommend", "comments",
    ),
    SUBDIVISIONS: (
        "subdivision_first", "subdivision_first_code", "country_name", "country_code",
        "country_continent", "joiner_count", "active_learner_count",
    ),
}  # fmt: skip

# The column Faults.extra_column adds at the end of a dataset's files, and its values.
EXTRA_COLUMN = "sentiment"
_SENTIMENTS = ("positive", "neutral", "negative")

# The header versions of runs from before the exports grew columns.
OLD_HEADERS: dict[str, tuple[str, ...]] = {
    "enrolments": HEADERS["enrolments"][:13],
    "comments": (
        "id", "author_id", "parent_id", "step", "text", "timestamp", "moderated", "likes",
    ),
    "step_activity": ("learner_id", "step", "first_visited_at", "last_completed_at"),
    "question_response": (
        "learner_id", "quiz_question", "week_number", "step_number", "question_number",
        "response", "submitted_at", "correct",
    ),
}  # fmt: skip

_FREE_TEXT = (
    "Really enjoyed this step, thanks to the whole team!",
    'I think "big data" is overhyped, but the examples helped.',
    "Three things I learned:\n1. clear aims\n2. short steps\n3. lots of practice",
    "Ça m\u2019a beaucoup aidé \u2014 merci à l\u2019équipe ! 🎉",
    "Is 1.10 the same step as 1.1? The numbering confused me, honestly.",
    "\u201cCurly quotes\u201d and 'single quotes', plus a comma, here",
    "数据科学很有趣 👍",
    "Typed on Windows,\r\nso this line ends differently",
    "😀😃😄",
    " leading and trailing spaces ",
    "Semicolons; tabs\tand, commas, all in one",
    'A backslash \\ and a "quoted, comma" inside',
    "=cmd|' /C calc'!A0",
    "NULL",
)
_LEAVING_REASONS = (
    "I don\u2019t have enough time",
    "The course wasn\u2019t what I expected",
    "The course was too hard",
    "The course was too easy",
    "I prefer not to say",
    "Other: moving house, a new job & a baby 👶",
)
_ARCHETYPES = (
    "Vitalisers", "Explorers", "Advancers", "Fixers", "Flourishers", "Hobbyists", "Preparers",
    "Other",
)  # fmt: skip
_FIRST_NAMES = ("Zoë", "José", "Øyvind", "Aoife", "Siobhán", "Li", "Priya", "Tom", "Émile")
_LAST_NAMES = ("O'Brien", "Ngũgĩ", "Smith", "Müller", "van der Berg", "Kowalska", "Nakamura")
_TEAM_ROLES = (
    ("Lead Educator", "educator"),
    ("Educator", "educator"),
    ("Mentor", "mentor"),
    ("Course Manager", "organisation_admin"),
)
_VIDEO_TITLES = (
    "Welcome to the course",
    "What is data? An introduction",
    "Interview: Dr Zoë Ångström on \u201copen\u201d science",
    "Case study, part 1: the hospital",
    "Week 2 round-up & your questions",
)
_SUBDIVISIONS = (
    ("England", "GB-ENG", "United Kingdom", "GB", "Europe"),
    ("Scotland", "GB-SCT", "United Kingdom", "GB", "Europe"),
    ("Île-de-France", "FR-IDF", "France", "FR", "Europe"),
    ("São Paulo", "BR-SP", "Brazil", "BR", "South America"),
    ("Nordrhein-Westfalen", "DE-NW", "Germany", "DE", "Europe"),
    ("Maharashtra", "IN-MH", "India", "IN", "Asia"),
    ("New South Wales", "AU-NSW", "Australia", "AU", "Oceania"),
    ("Lagos", "NG-LA", "Nigeria", "NG", "Africa"),
    ("California", "US-CA", "United States", "US", "North America"),
    ("Unknown", "", "Unknown", "--", "Unknown"),
)
_COUNTRIES = ("GB", "US", "IN", "AU", "NG", "FR", "BR", "Unknown")
_AGE_RANGES = ("<18", "18-25", "26-35", "36-45", "46-55", "56-65", ">65", "Unknown")
_EDUCATION = ("university_degree", "secondary", "university_masters", "tertiary", "Unknown")
_EMPLOYMENT = ("working_full_time", "retired", "full_time_student", "unemployed", "Unknown")
_AREAS = ("teaching_and_education", "health_and_social_care", "it_and_information", "Unknown")


@dataclass(frozen=True)
class DatasetFile:
    """A file as served: ``head``, then ``chunk`` ``repeats`` times, then ``tail``."""

    head: bytes
    generation: int
    chunk: bytes = b""
    repeats: int = 0
    tail: bytes = b""

    @property
    def size(self) -> int:
        return len(self.head) + len(self.chunk) * self.repeats + len(self.tail)

    def chunks(self) -> Iterator[bytes]:
        yield self.head
        yield from itertools.repeat(self.chunk, self.repeats)
        if self.tail:
            yield self.tail

    def content(self) -> bytes:
        return b"".join(self.chunks())

    @cached_property
    def _digest(self) -> str:
        # The content is determined by its parts, so hashing them stands for hashing it all.
        parts = hashlib.sha256()
        for part in (self.head, self.chunk, str(self.repeats).encode(), self.tail):
            parts.update(hashlib.sha256(part).digest())
        return parts.hexdigest()

    @property
    def etag(self) -> str:
        return f'"g{self.generation}-{self._digest[:24]}"'

    @property
    def last_modified(self) -> datetime:
        # Within the generation's day, so a later generation is always newer.
        offset = timedelta(seconds=int(self._digest[:8], 16) % 3600)
        return _FIRST_GENERATION_AT + timedelta(days=self.generation - 1) + offset


class DatasetStore:
    """Builds each file once per generation."""

    def __init__(self, data: SiteData) -> None:
        self._data = data
        self.get = lru_cache(maxsize=4096)(self._build)

    def _build(
        self, run: Run, dataset: str, generation: int, extra_column: bool = False
    ) -> DatasetFile:
        """The file; ``extra_column``: with EXTRA_COLUMN added (Faults.extra_column)."""
        options = self._data.options
        ctx = _Context.for_run(run, dataset, self._data, generation)
        header = (OLD_HEADERS if run.old_headers else HEADERS).get(dataset, HEADERS[dataset])
        if extra_column:
            header = (*header, EXTRA_COLUMN)
        if (run.course_slug, run.number) == self._data.big_file and dataset == "step_activity":
            return _big_file(header, ctx, int(options.big_file_mb * MIB), generation)
        rows = [] if dataset in run.header_only else _GENERATORS[dataset](ctx)
        return DatasetFile(_encode([header, *_select(rows, header)]), generation)


def _select(rows: list[dict[str, str]], header: tuple[str, ...]) -> list[list[str]]:
    # The extra column (a change the site may make) is filled from the row's position.
    return [
        [row[name] if name != EXTRA_COLUMN else _SENTIMENTS[i % 3] for name in header]
        for i, row in enumerate(rows)
    ]


def _encode(records: list[list[str]] | list[tuple[str, ...]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(records)
    return buffer.getvalue().encode()


def _big_file(header: tuple[str, ...], ctx: _Context, size: int, generation: int) -> DatasetFile:
    head = _encode([header])
    ctx.rows = _BIG_BLOCK_BYTES // 90  # rows are about 90 bytes
    rows = _step_activity(ctx)
    lines = [_encode([record]) for record in _select(rows, header)]
    block = b"".join(lines)
    chunk = block * max(1, MIB // len(block))
    available = size - len(head)
    if available < 2 * len(block):
        raise ValueError(f"a big file of {size} bytes is too small")
    # Leave at least one chunk's worth to the tail, which is cut to the exact size.
    repeats = max(0, available // len(chunk) - 1)
    rest = available - repeats * len(chunk)
    return DatasetFile(head, generation, chunk, repeats, _fill(lines, rest, rows[0], header))


def _fill(
    lines: list[bytes], size: int, template: dict[str, str], header: tuple[str, ...]
) -> bytes:
    """Rows adding up to exactly ``size`` bytes: the last one has a longer learner id."""
    longest = max(map(len, lines))
    out = []
    for line in itertools.cycle(lines):
        if size < 2 * longest:
            break
        out.append(line)
        size -= len(line)
    last = dict(template, learner_id="")
    padding = size - len(_encode(_select([last], header)))
    last["learner_id"] = (template["learner_id"].replace("-", "") * padding)[:padding]
    out.append(_encode(_select([last], header)))
    return b"".join(out)


@dataclass
class _Context:
    rng: random.Random
    rows: int
    weeks: int
    opened: datetime
    closed: datetime
    # The run's people, in enrolment order, and one who never enrolled (see _Cohort).
    learners: list[str] = field(default_factory=list)
    stranger: str = ""

    @classmethod
    def for_run(cls, run: Run, dataset: str, data: SiteData, generation: int) -> _Context:
        # Only started runs have files, so both dates are known.
        assert run.start_date is not None and run.end_date is not None
        rows = data.options.rows
        key = f"{data.options.seed}/{generation}/{run.course_slug}/{run.number}"
        # Learner ids are shared by every file of the run, as in real exports.
        people = random.Random(key)
        learners = [_uuid(people) for _ in range(max(rows, 1))]
        stranger = _uuid(people)
        opened = datetime.combine(run.start_date, time(), UTC) - timedelta(days=14)
        last_day = min(run.end_date, run.start_date + timedelta(days=90), data.today)
        closed = datetime.combine(last_day, time(23, 59, 59), UTC)
        rng = random.Random(f"{key}/{dataset}")
        return cls(rng, rows, run.duration_weeks, opened, closed, learners, stranger)

    @property
    def cohort(self) -> _Cohort:
        return _Cohort(self.learners)

    def stamp(self, blank: float = 0.0) -> str:
        """A timestamp in the run's window, or empty with probability ``blank``."""
        if self.rng.random() < blank:
            return ""
        seconds = self.rng.randrange(int((self.closed - self.opened).total_seconds()))
        return f"{self.opened + timedelta(seconds=seconds):%Y-%m-%d %H:%M:%S} UTC"

    def step(self, index: int) -> tuple[str, str, str]:
        """(step, week, step number); the first two are 1.1 and 1.10, different steps."""
        week, number = (
            ((1, 1), (1, 10))[index]
            if index < 2
            else (
                self.rng.randint(1, self.weeks),
                self.rng.randint(1, 18),
            )
        )
        return f"{week}.{number}", str(week), str(number)

    def step_in_week(self, week: int) -> tuple[str, str, str]:
        number = self.rng.randint(1, 18)
        return f"{week}.{number}", str(week), str(number)

    def learner(self) -> str:
        return self.rng.choice(self.learners)

    def pick(self, people: list[str]) -> str:
        return self.rng.choice(people)

    def text(self) -> str:
        return self.rng.choice(_FREE_TEXT)

    def percent(self) -> str:
        return f"{self.rng.uniform(0, 100):.2f}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class _Cohort:
    """Who the people of a run are, the same in every file of it, so that its measures have
    something to find (tests/test_measures.py checks them against a computation of its own).

    In enrolment order, person ``i`` is staff (role organisation_admin) when ``i % 10 == 0``,
    and otherwise a learner who left (``i % 4 == 1``), never visits a step (``i % 4 == 3``), or
    neither. The step activity has a row of the first staff member and one of a person who
    never enrolled (the stranger), and the first visitor completes steps in two weeks while
    the second only visits; the comments have one by staff, one by a joiner who never visits
    and one by the stranger.
    """

    def __init__(self, people: list[str]) -> None:
        self.people = people
        self.staff = [p for i, p in enumerate(people) if i % 10 == 0]
        self.leavers = {p for i, p in enumerate(people) if i % 10 and i % 4 == 1}
        self.absent = [p for i, p in enumerate(people) if i % 10 and i % 4 == 3]
        # Those who visit steps; everyone when the run has too few people to tell apart.
        self.visitors = [p for p in people if p not in self.staff and p not in self.absent]
        if not self.visitors:
            self.visitors = list(people)

    def role(self, person: str) -> str:
        return "organisation_admin" if person in self.staff else "learner"

    def chance(self, person: str, blank: float) -> float:
        """The chance that a person's participation or purchase is blank: ``blank`` for a
        visitor, none for staff, certain for the others (who never visit)."""
        return 0.0 if person in self.staff else blank if person in self.visitors else 1.0


def _enrolments(c: _Context) -> list[dict[str, str]]:
    rows = []
    cohort = c.cohort
    for learner in itertools.islice(itertools.cycle(c.learners), c.rows):
        pick = c.rng.choice
        rows.append(
            {
                "learner_id": learner,
                "enrolled_at": c.stamp(),
                "unenrolled_at": c.stamp() if learner in cohort.leavers else "",
                "role": cohort.role(learner),
                # Staff have both, and must count for neither.
                "fully_participated_at": c.stamp(blank=cohort.chance(learner, 0.5)),
                "purchased_statement_at": c.stamp(blank=cohort.chance(learner, 0.6)),
                "gender": pick(("Unknown", "female", "male", "nonbinary", "other")),
                "country": pick(_COUNTRIES),
                "age_range": pick(_AGE_RANGES),
                "highest_education_level": pick(_EDUCATION),
                "employment_status": pick(_EMPLOYMENT),
                "employment_area": pick(_AREAS),
                "detected_country": pick((*_COUNTRIES[:-1], "--")),
                "unlimited": pick(("t", "f")),
                "statement_tier": pick(("", "", "premium", "standard")),
            }
        )
    return rows


def _comments(c: _Context) -> list[dict[str, str]]:
    rows = []
    first_id = c.rng.randrange(1_000_000, 9_000_000)
    cohort = c.cohort
    # By staff, by a joiner who never visits, by someone who never enrolled; then visitors.
    authors = [cohort.staff[0], *cohort.absent[:1], c.stranger]
    for index in range(c.rows):
        step, week, number = c.step(index)
        reply = index > 0 and c.rng.random() < 0.3
        rows.append(
            {
                "id": str(first_id + index),
                "author_id": authors[index] if index < len(authors) else c.pick(cohort.visitors),
                "parent_id": str(first_id + c.rng.randrange(index)) if reply else "",
                "step": step,
                "week_number": week,
                "step_number": number,
                "text": c.text(),
                "timestamp": c.stamp(),
                "moderated": c.stamp(blank=0.9),
                "likes": str(c.rng.choice((0, 0, 1, 2, 5, 17))),
            }
        )
    return rows


def _step_activity(c: _Context) -> list[dict[str, str]]:
    cohort = c.cohort
    first, *others = cohort.visitors
    second = others[0] if others else first
    # Staff (1.1) and the stranger (1.10) visit and complete; the first visitor completes steps
    # in weeks 1 and 2 (returning); the second only visits. Then visitors at random.
    people = [
        (cohort.staff[0], c.step(0), True),
        (c.stranger, c.step(1), True),
        (first, c.step_in_week(1), True),
        (first, c.step_in_week(min(2, c.weeks)), True),
        (second, c.step_in_week(1), False),
    ]
    rest = [p for p in cohort.visitors if p != second] or cohort.visitors
    rows = []
    for index in range(c.rows):
        if index < len(people):
            learner, (step, week, number), completed = people[index]
        else:
            # Every other visitor once, then at random.
            turn = index - len(people)
            learner = rest[turn] if turn < len(rest) else c.pick(rest)
            (step, week, number), completed = c.step(index), c.rng.random() < 0.7
        rows.append(
            {
                "learner_id": learner,
                "step": step,
                "week_number": week,
                "step_number": number,
                "first_visited_at": c.stamp(),
                "last_completed_at": c.stamp() if completed else "",
            }
        )
    return rows


def _question_response(c: _Context) -> list[dict[str, str]]:
    rows = []
    for index in range(c.rows):
        _, week, number = c.step(index)
        question = str(c.rng.randint(1, 5))
        response = c.rng.choice(("1", "2", "3", "1,3", "2,4"))
        rows.append(
            {
                "learner_id": c.learner(),
                "quiz_question": f"{week}.{number}.{question}",
                "question_type": "MultipleChoiceQuestion",
                "week_number": week,
                "step_number": number,
                "question_number": question,
                "response": response,
                "cloze_response": "",
                "submitted_at": c.stamp(),
                "correct": c.rng.choice(("true", "false")),
            }
        )
    return rows


def _peer_review_assignments(c: _Context) -> list[dict[str, str]]:
    rows = []
    for index in range(c.rows):
        step, week, number = c.step(index)
        rows.append(
            {
                "id": str(10_000 + index),
                "step": step,
                "step_number": number,
                "week_number": week,
                "author_id": c.learner(),
                "text": c.text(),
                "first_viewed_at": c.stamp(),
                "submitted_at": c.stamp(blank=0.1),
                "moderated": c.stamp(blank=0.95),
                "review_count": str(c.rng.randint(0, 4)),
            }
        )
    return rows


def _peer_review_reviews(c: _Context) -> list[dict[str, str]]:
    rows = []
    for index in range(c.rows):
        step, week, number = c.step(index)
        rows.append(
            {
                "id": str(20_000 + index),
                "step": step,
                "week_number": week,
                "step_number": number,
                "reviewer_id": c.learner(),
                "assignment_id": str(10_000 + c.rng.randrange(max(c.rows, 1))),
                "guideline_one_feedback": c.text(),
                "guideline_two_feedback": c.text(),
                "guideline_three_feedback": c.text(),
                "created_at": c.stamp(),
            }
        )
    return rows


def _team_members(c: _Context) -> list[dict[str, str]]:
    rows = []
    for _ in range(c.rows):
        team_role, user_role = c.rng.choice(_TEAM_ROLES)
        rows.append(
            {
                "id": _uuid(c.rng),
                "first_name": c.rng.choice(_FIRST_NAMES),
                "last_name": c.rng.choice(_LAST_NAMES),
                "team_role": team_role,
                "user_role": user_role,
            }
        )
    return rows


def _video_stats(c: _Context) -> list[dict[str, str]]:
    rows = []
    percent_columns = [name for name in HEADERS["video_stats"] if name.endswith("percentage")]
    viewed_columns = [name for name in HEADERS["video_stats"] if name.startswith("viewed_")]
    for index in range(c.rows):
        step, _, _ = c.step(index)
        row = {
            "step_position": step,
            "title": c.rng.choice(_VIDEO_TITLES),
            "video_duration": str(c.rng.randint(45, 900)),
            "total_views": str(c.rng.randint(100, 50_000)),
            "total_downloads": str(c.rng.randint(0, 900)),
            "total_caption_views": str(c.rng.randint(0, 3000)),
            "total_transcript_views": str(c.rng.randint(0, 800)),
        }
        row.update((name, c.percent()) for name in viewed_columns + percent_columns)
        rows.append(row)
    return rows


def _archetype_survey_responses(c: _Context) -> list[dict[str, str]]:
    return [
        {
            "id": str(index + 1),
            "learner_id": c.learner(),
            "responded_at": c.stamp(),
            "archetype": c.rng.choice(_ARCHETYPES),
        }
        for index in range(c.rows)
    ]


def _leaving_survey_responses(c: _Context) -> list[dict[str, str]]:
    rows = []
    for index in range(c.rows):
        step, week, number = c.step(index)
        rows.append(
            {
                "id": str(index + 1),
                "learner_id": c.learner(),
                "left_at": c.stamp(),
                "leaving_reason": c.rng.choice(_LEAVING_REASONS),
                "last_completed_step_at": c.stamp(blank=0.2),
                "last_completed_step": step,
                "last_completed_week_number": week,
                "last_completed_step_number": number,
            }
        )
    return rows


def _weekly_sentiment_survey_responses(c: _Context) -> list[dict[str, str]]:
    return [
        {
            "id": str(index + 1),
            "responded_at": c.stamp(),
            "week_number": str(c.rng.randint(1, c.weeks)),
            "experience_rating": str(c.rng.randint(1, 3)),
            "reason": c.text(),
        }
        for index in range(c.rows)
    ]


def _learner_outcomes_survey_responses(c: _Context) -> list[dict[str, str]]:
    return [
        {
            "id": _uuid(c.rng),
            "learner_id": c.learner(),
            "responded_at": c.stamp(),
            "outcome": c.rng.choice(("new job", "promotion", "further study", "none yet")),
            "would_recommend": c.rng.choice(("yes", "no", "")),
            "comments": c.text(),
        }
        for _ in range(c.rows)
    ]


def _country_subdivisions(c: _Context) -> list[dict[str, str]]:
    rows = []
    for index in range(c.rows):
        name, code, country, country_code, continent = _SUBDIVISIONS[index % len(_SUBDIVISIONS)]
        joiners = c.rng.randint(1, 5000)
        rows.append(
            {
                "subdivision_first": name,
                "subdivision_first_code": code,
                "country_name": country,
                "country_code": country_code,
                "country_continent": continent,
                "joiner_count": str(joiners),
                "active_learner_count": str(c.rng.randint(0, joiners)),
            }
        )
    return rows


_GENERATORS: dict[str, Callable[[_Context], list[dict[str, str]]]] = {
    "enrolments": _enrolments,
    "comments": _comments,
    "step_activity": _step_activity,
    "question_response": _question_response,
    "peer_review_assignments": _peer_review_assignments,
    "peer_review_reviews": _peer_review_reviews,
    "team_members": _team_members,
    "video_stats": _video_stats,
    "archetype_survey_responses": _archetype_survey_responses,
    "leaving_survey_responses": _leaving_survey_responses,
    "weekly_sentiment_survey_responses": _weekly_sentiment_survey_responses,
    UNKNOWN_DATASET: _learner_outcomes_survey_responses,
    SUBDIVISIONS: _country_subdivisions,
}
