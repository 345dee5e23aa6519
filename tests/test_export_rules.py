"""The parts of `scrapy export`, each on its own: the rules table, the key and its pseudonyms,
the masking of free text, and the copy of one CSV file (cells kept byte for byte)."""

from __future__ import annotations

import csv
import io
import re
import stat

import pytest

from flsync import tree
from flsync.export.csvcopy import MalformedCsv, copy_csv
from flsync.export.masking import mask
from flsync.export.pseudonyms import (
    KeyFileError,
    Pseudonyms,
    fingerprint,
    load_key,
    new_key,
)
from flsync.export.readme import readme_text
from flsync.export.rules import RULES, Kind, Treatment, looks_identifying, rule_for_file
from flsync.site import DATASET_HEADERS

KEY = b"k" * 32
PSEUDONYM = re.compile(r"[a-z]+(?:-[a-z]+)*-[0-9a-f]{20}")


# The rules.


@pytest.mark.parametrize("dataset", sorted(DATASET_HEADERS))
def test_every_column_of_every_known_header_version_is_declared(dataset):
    rule = rule_for_file(tree.dataset_file_name(dataset))
    assert rule is not None
    for header in DATASET_HEADERS[dataset]:
        assert [c for c in header if c not in rule.columns] == []


@pytest.mark.parametrize(
    ("file_name", "dataset"),
    [
        ("step-activity.csv", "step_activity"),
        ("country-subdivisions.csv", "country-subdivisions"),
        ("metadata.csv", "metadata.csv"),
        ("step-activity (step_activity).csv", "step_activity"),  # its usual name was taken
        ("comments (comments).csv", "comments"),
        ("step-activity (step-activity).csv", None),  # an unknown dataset "step-activity"
        ("metadata (metadata).csv", None),  # an unknown dataset "metadata"
        ("learner-outcomes-survey-responses.csv", None),
        ("step_activity.csv", None),
        ("notes.txt", None),
    ],
)
def test_a_file_gets_the_rule_of_the_dataset_it_holds(file_name, dataset):
    rule = rule_for_file(file_name)
    assert (rule.dataset if rule else None) == dataset


def test_identifier_columns_share_a_kind_where_they_join():
    kinds = {
        (rule.dataset, column): kind
        for rule in RULES
        for column, kind in rule.columns.items()
        if isinstance(kind, Kind)
    }
    people = {key for key, kind in kinds.items() if kind is Kind.PERSON}
    assert people == {
        ("enrolments", "learner_id"),
        ("comments", "author_id"),
        ("step_activity", "learner_id"),
        ("question_response", "learner_id"),
        ("peer_review_assignments", "author_id"),
        ("peer_review_reviews", "reviewer_id"),
        ("team_members", "id"),
        ("archetype_survey_responses", "learner_id"),
        ("leaving_survey_responses", "learner_id"),
    }
    assert kinds["comments", "parent_id"] == kinds["comments", "id"]
    assert kinds["peer_review_reviews", "assignment_id"] == kinds["peer_review_assignments", "id"]
    # every id and *_id column of every dataset is an identifier
    for rule in RULES:
        for column in rule.columns:
            if column == "id" or column.endswith("_id"):
                assert isinstance(rule.columns[column], Kind), (rule.dataset, column)


def test_names_are_dropped_and_roles_kept():
    team = rule_for_file("team-members.csv")
    assert team.column("first_name") is Treatment.NAME
    assert team.column("last_name") is Treatment.NAME
    assert team.column("team_role") is Treatment.KEEP


@pytest.mark.parametrize(
    ("column", "kept"),
    [
        ("total_rewatches", True),
        ("uploader_id", False),
        ("id", False),
        ("educator_name", False),
        ("contact_email", False),
        ("ip_address", False),
    ],
)
def test_an_aggregate_dataset_keeps_a_new_column_unless_it_may_identify(column, kept):
    video = rule_for_file("video-stats.csv")
    assert (video.column(column) is Treatment.KEEP) is kept
    assert looks_identifying(column) is not kept


def test_a_learner_dataset_drops_a_new_column():
    assert rule_for_file("comments.csv").column("sentiment") is None


def test_the_readme_names_the_fingerprint_never_the_key():
    key = b"0123456789abcdef" * 4
    text = readme_text(fingerprint(key), keep_free_text=False, rules_digest="r")
    assert fingerprint(key) in text
    assert key.decode() not in text
    assert "first_name" in text
    assert "is dropped" in text
    assert "[email]" in readme_text(fingerprint(key), keep_free_text=True, rules_digest="r")


# The key and the pseudonyms.


def test_pseudonyms_are_stable_per_key_and_kind():
    one, again, other = Pseudonyms(KEY), Pseudonyms(KEY), Pseudonyms(b"o" * 32)
    learner = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
    assert one.of("person", learner) == again.of("person", learner)
    assert PSEUDONYM.fullmatch(one.of("person", learner))
    assert one.of("person", learner).startswith("person-")
    assert one.of("person", learner) != other.of("person", learner)
    assert one.of("person", "123")[-20:] != one.of("comment", "123")[-20:]
    assert one.of("person", "a") != one.of("person", "a ")


def test_a_pseudonym_is_the_documented_hmac():
    import hashlib  # noqa: PLC0415
    import hmac  # noqa: PLC0415

    digest = hmac.new(KEY, b"comment\x001234567", hashlib.sha256).hexdigest()
    assert Pseudonyms(KEY).of("comment", "1234567") == f"comment-{digest[:20]}"


def test_a_new_key_is_random_private_and_never_overwritten(tmp_path):
    path = tmp_path / "export.key"
    key = new_key(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert re.fullmatch(rb"[0-9a-f]{64}\n", path.read_bytes())
    assert load_key(str(path)) == key
    assert new_key(str(tmp_path / "other.key")) != key
    with pytest.raises(KeyFileError, match="is never overwritten"):
        new_key(str(path))
    assert load_key(str(path)) == key


@pytest.mark.parametrize(
    ("content", "mode", "error"),
    [
        (b"x" * 31, 0o600, "holds 31 bytes: a key needs at least 32"),
        (b"x" * 31 + b"\n", 0o600, "holds 31 bytes"),
        (b"x" * 32, 0o644, r"open to others \(mode 0644\): .* \(chmod 600 "),
        (b"x" * 32, 0o640, r"open to others \(mode 0640\)"),
        (b"x" * 32, 0o602, r"open to others \(mode 0602\)"),
        (b"x" * 5000, 0o600, "is over 4096 bytes: not a key file"),
    ],
)
def test_a_key_file_that_is_short_or_open_to_others_is_refused(tmp_path, content, mode, error):
    path = tmp_path / "key"
    path.write_bytes(content)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match=error):
        load_key(str(path))


def test_a_missing_key_file_says_how_to_make_one(tmp_path):
    with pytest.raises(KeyFileError, match=r"does not exist .*--new-key"):
        load_key(str(tmp_path / "nowhere"))


def test_a_key_ends_before_its_line_end(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(b"y" * 32 + b"\r\n")
    path.chmod(0o600)
    assert load_key(str(path)) == b"y" * 32


# Masking free text.


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Mail me: Jane.Doe+course@Example.ac.uk.", "Mail me: [email]."),
        ("<zoë@exämple.fr>", "<[email]>"),
        ("mailto:jose@correo.es?subject=hi", "mailto:[email]?subject=hi"),
        ("see https://example.org/a?b=1&c=2), thanks", "see [url]), thanks"),
        ("(https://en.wikipedia.org/wiki/Foo_(bar))", "([url]))"),
        ("«http://exemple.fr/é»", "«[url]»"),
        ("www.example.com/profile!", "[url]!"),
        ("my page: linkedin.com/in/jose-smith", "my page: [url]"),
        ("https://user:pw@host.example/x?u=a@b.com", "[url]"),
        ("HTTPS://EXAMPLE.COM/X and ftp://files.example.org", "[url] and [url]"),
        ("Is 1.10 the same as 1.1? e.g. km/h, 3.5/5, Ph.D/MSc", None),
        ("@Tom thanks, and a@b without a domain", None),
        ("jane at example dot com", None),  # written to dodge a machine: not found
        ("", None),
    ],
)
def test_emails_and_urls_in_free_text_are_masked(text, masked):
    assert mask(text) == (text if masked is None else masked)


# Copying one CSV file.


def copy(source: bytes, file_name: str = "comments.csv", keep_free_text: bool = False) -> bytes:
    target = io.BytesIO()
    rule = rule_for_file(file_name)
    copy_csv(io.BytesIO(source), target, rule, keep_free_text, Pseudonyms(KEY).of)
    return target.getvalue()


def p(kind: str, value: str) -> str:
    return Pseudonyms(KEY).of(kind, value)


COMMENTS = "id,author_id,parent_id,step,week_number,step_number,text,timestamp,moderated,likes"


def test_kept_cells_are_copied_as_written_even_where_a_writer_would_quote_otherwise():
    source = (
        f"{COMMENTS}\r\n"
        '"7","L1",,"1.10",1,10,"a, b",2016-01-01 00:00:00 UTC,,"0"\r\n'
        '8,L2,7,1.1,1,1,"two\nlines ""quoted""",2016-01-02 00:00:00 UTC,"",3\n'
        '9,"",8,1.1,1,1,plain,2016-01-03 00:00:00 UTC,,17'
    ).encode()
    expected = (
        "id,author_id,parent_id,step,week_number,step_number,timestamp,moderated,likes\r\n"
        f'{p("comment", "7")},{p("person", "L1")},,"1.10",1,10,2016-01-01 00:00:00 UTC,,"0"\r\n'
        f"{p('comment', '8')},{p('person', 'L2')},{p('comment', '7')},1.1,1,1,"
        '2016-01-02 00:00:00 UTC,"",3\n'
        f'{p("comment", "9")},"",{p("comment", "8")},1.1,1,1,2016-01-03 00:00:00 UTC,,17'
    ).encode()
    assert copy(source) == expected


def test_kept_free_text_is_masked_and_quoted_only_where_it_changed():
    source = (
        f"{COMMENTS}\n"
        '1,L,,1.1,1,1,"Write to a@b.co, or not",t,,0\n'
        '2,L,,1.1,1,1,"no address, ""quoted""",t,,0\n'
        '3,L,,1.1,1,1,"x@y.org",t,,0\n'
    ).encode()
    rows = list(csv.reader(io.StringIO(copy(source, keep_free_text=True).decode())))
    assert [row[6] for row in rows] == [
        "text",
        "Write to [email], or not",
        'no address, "quoted"',
        "[email]",
    ]
    assert b'"no address, ""quoted"""' in copy(source, keep_free_text=True)
    assert b",[email]," in copy(source, keep_free_text=True)  # no quotes it does not need


def test_a_bom_and_an_old_header_version_keep_their_columns():
    source = "\ufeffid,author_id,parent_id,step,text,timestamp,moderated,likes\n5,L,,1.1,hi,t,,0\n"
    assert (
        copy(source.encode())
        == (
            "\ufeffid,author_id,parent_id,step,timestamp,moderated,likes\n"
            f"{p('comment', '5')},{p('person', 'L')},,1.1,t,,0\n"
        ).encode()
    )


def test_a_file_that_needs_no_change_is_copied_byte_for_byte():
    source = (
        "subdivision_first,subdivision_first_code,country_name,country_code,"
        'country_continent,joiner_count,active_learner_count\r\n"Île-de-France",FR-IDF,'
        'France,FR,Europe,"12",3\r\nUnknown,,Unknown,--,Unknown,1,0'
    ).encode()
    assert copy(source, "country-subdivisions.csv") == source


def test_an_unknown_column_is_dropped_and_a_header_only_file_stays_one():
    source = f"{COMMENTS},sentiment\n".encode()
    assert copy(source) == (
        b"id,author_id,parent_id,step,week_number,step_number,timestamp,moderated,likes\n"
    )


BAD_ROWS = {
    "empty": (b"", "line 1: no header line (the file is empty)"),
    "short row": (b"1,2,3\n", "line 2: 3 fields where the header has 10"),
    "quote inside": (
        b'1,L,,1.1,1,1,"x",t,,0\n2,L,,1.1,1,1,ab"c,t,,0\n',
        "line 3: a quote inside a field that is not quoted",
    ),
    "unclosed": (b'1,L,,1.1,1,1,"open,t,,0\n', "line 2: a quoted field never closed"),
    "after quote": (b'1,L,,1.1,1,1,"a"b,t,,0\n', "line 2: ',' expected after"),
    "not utf-8": (
        b'1,L,,1.1,1,1,"two\nlines",t,,0\n2,L,,1.1,1,1,\xff,t,,0\n',
        "line 4: not UTF-8",
    ),
}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_a_file_that_is_not_valid_csv_is_refused_with_its_line(case):
    rows, error = BAD_ROWS[case]
    with pytest.raises(MalformedCsv) as raised:
        copy(f"{COMMENTS}\n".encode() + rows if rows else b"")
    assert str(raised.value).startswith(error)


def test_a_carriage_return_alone_is_refused():
    with pytest.raises(MalformedCsv, match=r"line 1: a carriage return \(\\r\) alone"):
        copy(b"a,b\r1,2\r")


def test_a_line_over_the_bound_is_refused_without_reading_it_whole(monkeypatch):
    monkeypatch.setattr("flsync.export.csvcopy.MAX_LINE_BYTES", 64)
    with pytest.raises(MalformedCsv, match="line 2: a line longer than 64 bytes"):
        copy(b"a,b\n1," + b"x" * 100 + b"\n")


def test_ids_written_as_numbers_or_text_are_pseudonymised_alike():
    one = copy(f'{COMMENTS}\n"12",L,,1.1,1,1,x,t,,0\n'.encode())
    two = copy(f"{COMMENTS}\n12,L,,1.1,1,1,x,t,,0\n".encode())
    assert one == two
