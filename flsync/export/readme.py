"""README.txt of an export: what was pseudonymised, dropped and kept, with which key's
fingerprint (never the key), for whoever receives the copy and for a data protection officer.
Its text depends only on the rules, the free-text choice and the key's fingerprint, so an
export that changed nothing leaves it as it was."""

from __future__ import annotations

import textwrap

from flsync import tree
from flsync.export.masking import EMAIL_MASK, URL_MASK
from flsync.export.pseudonyms import PSEUDONYM_HEX_DIGITS
from flsync.export.rules import METADATA_RULE, RULES, Kind, Rule, Treatment

README_FILE = "README.txt"

_KIND_COLUMNS = {
    Kind.PERSON: "learner_id, author_id, reviewer_id, and team-members.csv's id: one person,"
    " the same in every file",
    Kind.COMMENT: "comments.csv's id and parent_id (a reply's parent)",
    Kind.ASSIGNMENT: "peer-review-assignments.csv's id, peer-review-reviews.csv's assignment_id",
    Kind.REVIEW: "peer-review-reviews.csv's id",
    Kind.ARCHETYPE_RESPONSE: "archetype-survey-responses.csv's id",
    Kind.LEAVING_RESPONSE: "leaving-survey-responses.csv's id",
    Kind.SENTIMENT_RESPONSE: "weekly-sentiment-survey-responses.csv's id",
}


def readme_text(key_fingerprint: str, keep_free_text: bool, rules_digest: str) -> str:
    """The README.txt of an export made with this key, free-text choice and rules."""
    free_text = (
        f"kept, with every e-mail address replaced by {EMAIL_MASK} and every URL by"
        f" {URL_MASK} (-a free_text=keep). Names, and addresses written to dodge a machine"
        " (jane at example dot com), are NOT found in free text: it must be read as"
        " personal data."
        if keep_free_text
        else "dropped (the default; -a free_text=keep would keep it, with e-mail addresses"
        " and URLs masked)."
    )
    kinds = "\n".join(_wrapped(f"{kind}-", columns, 22) for kind, columns in _KIND_COLUMNS.items())
    datasets = "\n\n".join(_dataset(rule, keep_free_text) for rule in (*RULES, METADATA_RULE))
    sections = [
        _heading("Pseudonymised copy of FutureLearn course data", "="),
        _para(
            "Made by flsync's `scrapy export` from a mirror of the FutureLearn datasets of"
            " one or more organisations. The folders and file names are the mirror's:"
            " ORGANISATION/COURSE/RUN-START-END/DATASET.csv, with metadata.csv in each run"
            " folder and update.txt (the time of the mirror's last complete sync) in each"
            " organisation's. Each file has the same rows in the same order as in the"
            " mirror, and its header minus the columns dropped; every value not said below"
            " to be replaced is exactly as in the mirror, byte for byte."
        ),
        _heading("The key"),
        _para(
            f"Pseudonyms were made with the key whose fingerprint is {key_fingerprint}. The"
            " key is held by the institution that made this copy, and is not in it. No"
            " table from pseudonyms back to identifiers was written, here or anywhere: the"
            " only way back is the key itself, with the identifiers it was applied to."
        ),
        _heading("Pseudonyms"),
        _para(
            f"Each identifier is replaced by KIND-HEX, where HEX is the first"
            f" {PSEUDONYM_HEX_DIGITS} hexadecimal digits of HMAC-SHA-256(key, KIND + a NUL"
            " byte + the identifier). One identifier has one pseudonym in every file, run,"
            " course and organisation exported with this key, so the files still join:"
            " a comment's author_id is the learner_id of the same learner in"
            " enrolments.csv and step-activity.csv. Without the key, a pseudonym cannot be"
            " turned back into the identifier, and the pseudonym of a known identifier"
            " cannot be computed. Another key gives other pseudonyms for everything. An"
            " empty identifier stays empty. The kinds:"
        ),
        kinds,
        _heading("Free text and names"),
        _para(
            "Free text (comments, peer-review submissions and feedback, typed quiz answers,"
            f" survey answers) is {free_text}"
        ),
        _para(
            "Names: team-members.csv keeps each member's roles (team_role, user_role) and a"
            " pseudonym of their id, never their first_name or last_name, whatever the"
            " choice about free text."
        ),
        _heading("Per file"),
        datasets,
        _para(
            "A column not listed under its file is dropped; video-stats.csv and"
            " country-subdivisions.csv (counts, not people) keep one, unless its name"
            " suggests an identifier, a name or an address. A dataset not listed here is"
            " not exported at all, nor are flsync's own files (sync-report.json,"
            " measures.csv, step-completion.csv, dashboard.html, the SQL database, hidden"
            " files)."
        ),
        _heading("This is still personal data"),
        _para(
            "Pseudonymised data is personal data (GDPR, Article 4(5) and Recital 26):"
            " enrolments.csv keeps each learner's country, age range, gender, education,"
            " employment and dates, which together can single a learner out, and free"
            " text, when kept, can name anyone. Share this copy only under an agreement"
            " that forbids re-identification, and never together with the key, the mirror,"
            " or another export made with the same key for other recipients (their"
            " pseudonyms would link). Files changed in the mirror are exported again, with"
            " the same pseudonyms; a file removed from the mirror stays here."
        ),
        f"(Export rules {rules_digest}.)",
    ]
    return "\n\n".join(sections) + "\n"


def _dataset(rule: Rule, keep_free_text: bool) -> str:
    name = tree.METADATA_FILE if rule is METADATA_RULE else tree.dataset_file_name(rule.dataset)
    pseudonymised = [f"{c} ({t})" for c, t in rule.columns.items() if isinstance(t, Kind)]
    free = [c for c, t in rule.columns.items() if t is Treatment.FREE_TEXT]
    dropped = [c for c, t in rule.columns.items() if t is Treatment.NAME]
    kept = [c for c, t in rule.columns.items() if t is Treatment.KEEP]
    if keep_free_text:
        masked, kept_free = free, []
    else:
        masked, kept_free = [], free
    lines = [name]
    for label, columns in (
        ("pseudonymised", pseudonymised),
        ("dropped", dropped + kept_free),
        ("masked", masked),
        ("kept", kept),
    ):
        if columns:
            lines.append(_wrapped(f"{label}:", ", ".join(columns), 17))
    return "\n".join(lines)


def _wrapped(label: str, text: str, indent: int) -> str:
    """``label`` then ``text``, wrapped in a column ``indent`` characters in."""
    return textwrap.fill(
        text,
        width=92,
        initial_indent=f"  {label:{indent - 2}}",
        subsequent_indent=" " * indent,
        break_on_hyphens=False,
    )


def _heading(text: str, underline: str = "-") -> str:
    return f"{text}\n{underline * len(text)}"


def _para(text: str) -> str:
    return textwrap.fill(text, width=92, break_on_hyphens=False)
