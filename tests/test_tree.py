import re
from datetime import date

import pytest

from flsync.tree import (
    MAX_NAME_BYTES,
    ORGANISATION_FILES,
    NameTakenError,
    dataset_file_name,
    dataset_file_names,
    lock_name,
    name_candidates,
    name_key,
    run_dir,
    safe_name,
    unique_name,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Data Science", "Data Science"),
        ("Ciência & “Dados”: 1/2", "Ciência & “Dados”: 1-2"),
        ("back\\slash", "back-slash"),
        ("tab\there\nnewline", "tab-here-newline"),
        ("  many   spaces \u00a0 here  ", "many spaces here"),
        ("...dots and spaces. . ", "dots and spaces"),
        ("", "_"),
        ("..", "_"),
        ("/", "-"),
        ("x" * 300, "x" * 120),
        ("a" * 119 + " b", "a" * 119),
    ],
)
def test_safe_name(name, expected):
    assert safe_name(name) == expected


def test_dataset_file_name():
    assert dataset_file_name("step_activity") == "step-activity.csv"
    assert dataset_file_name("country-subdivisions") == "country-subdivisions.csv"


def test_run_dir():
    folder = run_dir("Uni / X", "Course: A/B", 12, date(2020, 1, 6), date(2020, 3, 2))
    assert folder == "Uni - X/Course: A-B/12-2020-01-06-2020-03-02"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("\u5b66" * 95, "\u5b66" * 66),  # 285 bytes cut to 198: whole characters only
        ("\U0001f393" * 100, "\U0001f393" * 50),  # 400 bytes cut to 200
        ("é" * 150, "é" * 100),  # 120 characters, 240 bytes: cut to 200 bytes
        ("aa" + "\u5b66" * 70, "aa" + "\u5b66" * 66),  # the 67th would end at byte 203
    ],
)
def test_a_name_is_cut_to_whole_characters_within_200_bytes(name, expected):
    assert safe_name(name) == expected
    assert len(safe_name(name).encode()) <= MAX_NAME_BYTES


def test_names_equal_when_a_case_insensitive_file_system_says_so():
    assert name_key("Data Science") == name_key("DATA SCIENCE")
    assert name_key("Caf\u00e9") == name_key("Cafe\u0301")  # NFC and NFD
    assert name_key("Straße") == name_key("STRASSE")
    assert name_key("Data Science") != name_key("Data-Science")


def test_a_newcomer_gets_its_slug_when_its_name_is_taken():
    taken = {name_key("Data-Science")}
    assert unique_name("Data/Science", "slash-course", set()) == "Data-Science"
    assert unique_name("Data/Science", "slash-course", taken) == "Data-Science (slash-course)"
    assert unique_name("DATA-SCIENCE", "case", taken) == "DATA-SCIENCE (case)"


def test_an_odd_or_long_slug_is_shown_as_a_hash():
    [plain, suffixed] = name_candidates("X", "s" * 300)  # the slug shown is its hash
    assert plain == "X"
    assert re.fullmatch(r"X \([0-9a-f]{12}\)", suffixed)
    assert re.fullmatch(r"X \([0-9a-f]{12}\)", name_candidates("X", "a/b")[1])


def test_a_suffixed_name_still_fits_in_200_bytes():
    name = unique_name("\u5b66" * 95, "cjk-course", {name_key("\u5b66" * 66)})
    assert name.endswith(" (cjk-course)")
    assert len(name.encode()) <= MAX_NAME_BYTES


def test_reserved_names_and_hidden_ones_are_never_given():
    files = ORGANISATION_FILES
    assert unique_name("update.txt", "u", set(), files) == "update.txt (u)"
    assert unique_name("Sync-Report.JSON", "r", set(), files) == "Sync-Report.JSON (r)"
    assert unique_name("measures.csv", "m", set(), files) == "measures.csv (m)"
    assert unique_name(".flsync-state.json", "s", set(), files) == "flsync-state.json"


def test_when_every_name_is_held_it_says_so():
    taken = {name_key(n) for n in name_candidates("X", "x")}
    with pytest.raises(NameTakenError, match="every name for 'X' \\(x\\) is held"):
        unique_name("X", "x", taken)


def test_dataset_file_names_never_take_metadata_csv_or_each_others():
    names = ["step-activity", "step_activity", "metadata", "comments", "Comments"]
    files = dataset_file_names(names, {}, {"step_activity", "comments"})
    assert files == {
        "step_activity": "step-activity.csv",  # known: placed before the unknown one
        "step-activity": "step-activity (step-activity).csv",
        "metadata": "metadata (metadata).csv",
        "comments": "comments.csv",
        "Comments": "Comments (Comments).csv",
    }


def test_a_dataset_keeps_the_file_it_held():
    held = {"step-activity": "step-activity.csv"}
    files = dataset_file_names(["step_activity", "step-activity"], held, {"step_activity"})
    assert files == {
        "step-activity": "step-activity.csv",
        "step_activity": "step-activity (step_activity).csv",
    }


@pytest.mark.parametrize(
    ("slug", "expected"),
    [("exampleton", "exampleton"), ("a-b-2", "a-b-2")],
)
def test_a_lock_is_named_by_a_plain_slug(slug, expected):
    assert lock_name(slug) == expected


@pytest.mark.parametrize("slug", ["s" * 300, "../x", "UPPER", "a b", ""])
def test_a_lock_of_any_other_slug_is_named_by_its_hash(slug):
    name = lock_name(slug)
    assert re.fullmatch(r"_[0-9a-f]{16}", name)
    assert name != lock_name(slug + "x")
