from datetime import date

import pytest

from flsync.tree import dataset_file_name, run_dir, safe_name


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
