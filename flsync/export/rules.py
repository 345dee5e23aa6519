"""What an export does with each column of each dataset: the one declared table.

Every dataset FutureLearn documents (flsync.site.DATASET_HEADERS, every header version) has a
rule here, and ``metadata.csv`` too. A column is an identifier (replaced by a pseudonym of its
kind), free text (dropped, or kept with e-mail addresses and URLs masked), a name (always
dropped) or kept as it is. A column a rule does not name is dropped, unless the rule keeps
unknown columns (aggregate datasets only), and even then never when its name says it could
identify someone (:func:`looks_identifying`). A file whose dataset has no rule is not exported
at all: a new FutureLearn dataset is never copied unreviewed.

docs/export.md gives the reason for each choice.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from enum import StrEnum

from flsync import tree
from flsync.site import DATASET_HEADERS, SUBDIVISIONS_DATASET


class Kind(StrEnum):
    """An identifier's kind: its pseudonym's prefix, and its namespace in the keyed hash, so
    that values of two kinds never share a pseudonym. A kind is one space of values: every
    column of a kind holds the same things, so pseudonyms join across those columns."""

    PERSON = "person"  # learner_id, author_id, reviewer_id, team_members.id: one person space
    COMMENT = "comment"  # comments.id and parent_id: in the live site's comment links
    ASSIGNMENT = "assignment"  # peer_review_assignments.id, peer_review_reviews.assignment_id
    REVIEW = "review"
    ARCHETYPE_RESPONSE = "archetype-response"
    LEAVING_RESPONSE = "leaving-response"
    SENTIMENT_RESPONSE = "sentiment-response"


class Treatment(StrEnum):
    KEEP = "kept"
    FREE_TEXT = "free text"  # dropped, or with free_text=keep kept with e-mails and URLs masked
    NAME = "name"  # always dropped


Column = Kind | Treatment


@dataclass(frozen=True)
class Rule:
    """What an export does with each column of one dataset's files."""

    dataset: str
    columns: dict[str, Column] = field(hash=False)
    keep_unknown: bool = False  # columns not in ``columns`` kept (aggregate datasets only)

    def column(self, name: str) -> Column | None:
        """What to do with column ``name``; None: drop it (unknown to this rule)."""
        if name in self.columns:
            return self.columns[name]
        if self.keep_unknown and not looks_identifying(name):
            return Treatment.KEEP
        return None


K, T = Kind, Treatment.KEEP
FREE, NAME = Treatment.FREE_TEXT, Treatment.NAME
_STEP = {"step": T, "week_number": T, "step_number": T}

RULES: tuple[Rule, ...] = (
    Rule(
        "enrolments",
        {
            "learner_id": K.PERSON,
            **dict.fromkeys(
                (
                    "enrolled_at", "unenrolled_at", "role", "fully_participated_at",
                    "purchased_statement_at", "gender", "country", "age_range",
                    "highest_education_level", "employment_status", "employment_area",
                    "detected_country", "unlimited", "statement_tier",
                ),
                T,
            ),
        },
    ),
    Rule(
        "comments",
        {
            "id": K.COMMENT, "author_id": K.PERSON, "parent_id": K.COMMENT, **_STEP,
            "text": FREE, "timestamp": T, "moderated": T, "likes": T,
        },
    ),
    Rule(
        "step_activity",
        {"learner_id": K.PERSON, **_STEP, "first_visited_at": T, "last_completed_at": T},
    ),
    Rule(
        "question_response",
        {
            "learner_id": K.PERSON, "quiz_question": T, "question_type": T, "week_number": T,
            "step_number": T, "question_number": T, "response": T, "cloze_response": FREE,
            "submitted_at": T, "correct": T,
        },
    ),
    Rule(
        "peer_review_assignments",
        {
            "id": K.ASSIGNMENT, **_STEP, "author_id": K.PERSON, "text": FREE,
            "first_viewed_at": T, "submitted_at": T, "moderated": T, "review_count": T,
        },
    ),
    Rule(
        "peer_review_reviews",
        {
            "id": K.REVIEW, **_STEP, "reviewer_id": K.PERSON, "assignment_id": K.ASSIGNMENT,
            "guideline_one_feedback": FREE, "guideline_two_feedback": FREE,
            "guideline_three_feedback": FREE, "created_at": T,
        },
    ),
    Rule(
        "team_members",
        {"id": K.PERSON, "first_name": NAME, "last_name": NAME, "team_role": T, "user_role": T},
    ),
    # Aggregates per video and per region: no person in them, and a column they grow is
    # another aggregate, kept unless its name says otherwise.
    Rule("video_stats", dict.fromkeys(DATASET_HEADERS["video_stats"][0], T), keep_unknown=True),
    Rule(
        "archetype_survey_responses",
        {"id": K.ARCHETYPE_RESPONSE, "learner_id": K.PERSON, "responded_at": T, "archetype": T},
    ),
    Rule(
        "leaving_survey_responses",
        {
            "id": K.LEAVING_RESPONSE, "learner_id": K.PERSON, "left_at": T,
            "leaving_reason": FREE, "last_completed_step_at": T, "last_completed_step": T,
            "last_completed_week_number": T, "last_completed_step_number": T,
        },
    ),
    Rule(
        "weekly_sentiment_survey_responses",
        {
            "id": K.SENTIMENT_RESPONSE, "responded_at": T, "week_number": T,
            "experience_rating": T, "reason": FREE,
        },
    ),
    Rule(
        SUBDIVISIONS_DATASET,
        dict.fromkeys(DATASET_HEADERS[SUBDIVISIONS_DATASET][0], T),
        keep_unknown=True,
    ),
)  # fmt: skip

# metadata.csv is flsync's own (the run as the site shows it: no person in it); a column it
# may grow is dropped until reviewed here, as any unknown column is.
METADATA_RULE = Rule(
    tree.METADATA_FILE,
    dict.fromkeys(
        ("uni_name", "course_name", "run", "start_date", "end_date", "duration_weeks"), T
    ),
)

_BY_DATASET = {rule.dataset: rule for rule in RULES}
_BY_FILE = {tree.dataset_file_name(rule.dataset): rule for rule in RULES}
# `{name} ({dataset}).csv`: a dataset whose usual file name was taken (docs/site-model.md).
_SUFFIXED = re.compile(r".* \((?P<dataset>[^()/]+)\)\.csv")
_IDENTIFYING = re.compile(r"(^|_)(id|name|email|e_mail|ip|ip_address|user|username)(_|$)")


def rule_for_file(file_name: str) -> Rule | None:
    """The rule for a file of a run's folder, by its name; None: no rule (not exported)."""
    if file_name == tree.METADATA_FILE:
        return METADATA_RULE
    if match := _SUFFIXED.fullmatch(file_name):
        return _BY_DATASET.get(match["dataset"])
    return _BY_FILE.get(file_name)


def looks_identifying(column: str) -> bool:
    """A column name that could hold an identifier, a name or an address (``id``,
    ``*_id``, ``*_name``, ``email``...): never kept unless a rule names it."""
    return bool(_IDENTIFYING.search(column.lower()))


def rules_fingerprint(*extra: str) -> str:
    """A digest of every rule (and of ``extra``, such as the masking patterns): an export made
    under other rules is rewritten whole."""
    digest = hashlib.sha256()
    for rule in (*RULES, METADATA_RULE):
        digest.update(f"{rule.dataset}\0{rule.keep_unknown}\0".encode())
        for name, column in rule.columns.items():
            digest.update(f"{name}={type(column).__name__}:{column}\0".encode())
    for part in extra:
        digest.update(f"{part}\0".encode())
    return digest.hexdigest()[:16]
