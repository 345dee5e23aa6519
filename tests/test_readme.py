"""The README and docs/ as a new maintainer meets them: the set-up commands run on a clean
clone, and every link, command, option, setting and path they name exists (cheap checks, no
network). The README's crontab line is run in tests/test_cron.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from scrapy.settings import default_settings

import flsync.settings
from flsync import site
from tests.commands import run_in_process

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCUMENTS = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md"]
SET_UP_HEADING = "## Install and try it"
README_MAX_LINES = 200

CODE_SPAN = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
SCRAPY_COMMAND = re.compile(r"(?:^|[\s/])scrapy ([a-z]+)\b([^#|;&)`]*)")
PYTHON_MODULE = re.compile(r"(?:^|[\s/])python3? -m ([\w.]+)([^#|;&)`]*)")
OPTION = re.compile(r"(?<!\S)(--[a-z][a-z-]*)")
SETTING_ON_COMMAND_LINE = re.compile(r"(?:(?<!\S)-s\s+|setting=)([A-Z][A-Z0-9_]*)=")
FLSYNC_NAME = re.compile(r"\bFLSYNC_[A-Z0-9_]*[A-Z0-9]\b")
# A path in the checkout (a sentence's full stop after it is not part of it).
REPO_PATH = re.compile(
    r"(?<![\w/.~-])((?:flsync|fakesite|tests|scripts|benchmarks|docs|\.ci)/(?:[\w./-]*[\w/])?)"
)
VENV_PROGRAM = re.compile(r"\.venv/bin/([\w.-]+)")
CRON_LINE = re.compile(r"^ +(15 3 \* \* \* +cd /opt/flsync .+)$", re.MULTILINE)
# Named as places a command writes to or as a pattern to fill in, not files of the checkout.
NOT_FILES = ("benchmarks/results/",)
PLACEHOLDERS = ("NAME", "…", "{", "*")
# A stat's name, flsync/<area>/<event>, not a file.
STAT = re.compile(r"flsync(?:/[a-z_-]+)+")


class Document:
    """A Markdown file split into its prose and its code (indented and fenced blocks)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path.relative_to(REPO))
        self.prose: list[str] = []
        self.code: list[str] = []
        fenced = False
        previous_blank_or_code = True
        for line in path.read_text().splitlines():
            if line.startswith(("```", "~~~")):
                fenced = not fenced
                continue
            indented = line.startswith(("    ", "\t")) and previous_blank_or_code
            if fenced or indented:
                self.code.append(line)
            else:
                self.prose.append(line)
            previous_blank_or_code = not line.strip() or fenced or indented

    def code_spans(self) -> list[str]:
        return [span for line in self.prose for span in CODE_SPAN.findall(line)]

    def code_texts(self) -> list[str]:
        """Every piece of code: each line of a block, each code span of the prose."""
        return self.code + self.code_spans()

    def links(self) -> list[str]:
        return [target for line in self.prose for target in LINK.findall(CODE_SPAN.sub("", line))]

    def anchors(self) -> set[str]:
        """The anchors GitHub gives this file's headings (a repeated one gets -1, -2, …)."""
        anchors: set[str] = set()
        for line in self.prose:
            match = HEADING.match(line)
            if not match:
                continue
            anchor = github_anchor(match[2])
            numbered, n = anchor, 0
            while numbered in anchors:
                n += 1
                numbered = f"{anchor}-{n}"
            anchors.add(numbered)
        return anchors


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def document(path: Path) -> Document:
    return Document(path)


def documents() -> list[Document]:
    return [document(path) for path in DOCUMENTS]


@cache
def sources() -> str:
    """The text of the code that may read a setting or an environment variable."""
    files = [*REPO.glob("flsync/**/*.py"), *REPO.glob("fakesite/*.py"), *REPO.glob("scripts/*")]
    files += [*REPO.glob("benchmarks/*.py")]
    return "\n".join(path.read_text() for path in files if path.is_file())


def is_setting(name: str) -> bool:
    """A setting flsync gives a default, Scrapy does, or flsync's code reads by name."""
    return (
        hasattr(flsync.settings, name)
        or hasattr(default_settings, name)
        or f'"{name}"' in sources()
    )


@cache
def help_text(*command: str) -> str:
    """What ``command -h`` prints, run from the checkout; fails if the command does not run."""
    shown = subprocess.run(
        [*command, "-h"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert shown.returncode == 0, f"{' '.join(command)} -h: {shown.stdout}{shown.stderr}"
    return shown.stdout


def set_up_commands(readme: str) -> list[str]:
    """The README's set-up commands: the first code block under SET_UP_HEADING, one a line."""
    if SET_UP_HEADING not in readme.splitlines():
        pytest.fail(
            f"README.md has no {SET_UP_HEADING!r} section: this test runs its set-up"
            " commands (scripts/demo, then scripts/test) as a new user would"
        )
    section = readme.split(f"\n{SET_UP_HEADING}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"(?:^    \S.*\n)+", section, re.MULTILINE)
    commands = block[0].split("\n")[:-1] if block else []
    if len(commands) < 2 or any("#" in command for command in commands):
        pytest.fail(
            f"README.md's {SET_UP_HEADING!r} section must open with a code block of its two"
            f" set-up commands, the demo then the test command, without comments: {commands}"
        )
    return [command.strip() for command in commands[:2]]


def new_user_environment(tmp_path: Path) -> dict[str, str]:
    """This environment as a new user's shell has it: no virtualenv of ours on the PATH, no
    FLSYNC_* or pytest variables; temporary files (the demo's folder) under ``tmp_path``."""
    venv_bin = str(Path(sys.executable).parent)
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("FLSYNC_", "PYTEST_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"))
    }
    path = [p for p in environment.get("PATH", "").split(os.pathsep) if p != venv_bin]
    environment["PATH"] = os.pathsep.join(path)
    (tmp_path / "tmp").mkdir()
    environment["TMPDIR"] = str(tmp_path / "tmp")
    return environment


def test_the_readme_demo_command_works_on_a_clean_clone(tmp_path):
    """The README's demo command, run as written in a clone of this repository's HEAD (what
    is committed: the clone is what a new user gets) with a new user's environment: exit
    status 0, both syncs (the second downloads nothing) and the tree it printed."""
    clone = tmp_path / "flsync"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    demo, _ = set_up_commands((clone / "README.md").read_text())
    shown = subprocess.run(
        ["bash", "-c", demo],
        cwd=clone,
        env=new_user_environment(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    demo = shown.stdout[shown.stdout.index("Imitation FutureLearn at ") :]
    lines = demo.splitlines()
    assert lines[0].startswith("Imitation FutureLearn at https://127.0.0.1:")
    assert lines[1].startswith("First sync, exit status 0: INFO: Sync complete: 471 downloaded")
    assert lines[2].startswith("Second sync, exit status 0: INFO: Sync complete: 0 downloaded")
    assert "University of Exampleton/   update.txt: " in demo
    assert "metadata.csv" in demo


def test_ci_runs_the_readme_test_command_on_a_clean_clone():
    """The README's test command is what CI runs, on a clean clone of main, every time: that
    run is its clean-clone test (run from in here, it would run this suite inside itself)."""
    _, test = set_up_commands(README.read_text())
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == f"exec {test}"
    assert 'cd "$(dirname "$0")/.."' in ci  # from the clone's top, as the README's commands


def test_the_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md: {lines} lines: move detail into docs/"


def test_every_link_points_to_a_file_and_anchor_that_exist():
    broken = []
    for doc in documents():
        for target in doc.links():
            if re.match(r"[a-z]+:", target):  # a web address: not checked offline
                continue
            path, _, anchor = target.partition("#")
            linked = (doc.path.parent / path).resolve() if path else doc.path
            if not linked.exists() or REPO not in (linked, *linked.parents):
                broken.append(f"{doc.name}: {target}: no such file")
            elif anchor and anchor not in document(linked).anchors():
                broken.append(f"{doc.name}: {target}: no such heading")
    assert broken == []


def test_every_scrapy_command_and_option_named_exists():
    named: dict[str, set[str]] = {}
    for doc in documents():
        for code in doc.code_texts():
            for command, rest in SCRAPY_COMMAND.findall(code):
                named.setdefault(command, set()).update(OPTION.findall(rest))
    assert {"crawl", "doctor", "loaddb", "measures", "export"} <= set(named)
    for command, options in sorted(named.items()):
        help_shown = run_in_process([command, "-h"], REPO)
        assert help_shown.returncode == 0, f"scrapy {command} -h: {help_shown.output}"
        shown = help_shown.stdout
        assert [option for option in sorted(options) if option not in shown] == [], command


def test_every_python_module_run_and_its_options_exist():
    named: dict[str, set[str]] = {}
    for doc in documents():
        for code in doc.code_texts():
            for module, rest in PYTHON_MODULE.findall(code):
                if (REPO / module.split(".")[0]).is_dir():  # ours, not the standard library's
                    named.setdefault(module, set()).update(OPTION.findall(rest))
    assert "benchmarks.run" in named
    for module, options in sorted(named.items()):
        shown = help_text(sys.executable, "-m", module)
        assert [option for option in sorted(options) if option not in shown] == [], module


def test_every_script_and_program_named_exists():
    missing = []
    venv_bin = Path(sys.executable).parent
    for doc in documents():
        for code in doc.code_texts():
            missing += [
                f"{doc.name}: {path}"
                for path in re.findall(r"(?:^|\s)(scripts/[\w.-]+)", code)
                if not os.access(REPO / path, os.X_OK)
            ]
            missing += [
                f"{doc.name}: .venv/bin/{program}"
                for program in VENV_PROGRAM.findall(code)
                if not (venv_bin / program).exists()
            ]
    assert missing == []


def test_every_path_named_exists():
    missing = []
    for doc in documents():
        for text in doc.code_texts():
            for path in REPO_PATH.findall(text):
                if path.startswith(NOT_FILES) or any(p in path for p in PLACEHOLDERS):
                    continue
                if STAT.fullmatch(path):
                    continue
                if not (REPO / path).exists():
                    missing.append(f"{doc.name}: {path}")
    assert missing == []


def test_every_setting_named_exists():
    unknown = []
    for doc in documents():
        for text in doc.code_texts():
            unknown += [
                f"{doc.name}: {name}"
                for name in SETTING_ON_COMMAND_LINE.findall(text)
                if not is_setting(name)
            ]
        for line in doc.prose + doc.code:
            unknown += [
                f"{doc.name}: {name}"
                for name in FLSYNC_NAME.findall(line)
                if not (is_setting(name) or re.search(rf"\b{name}\b", sources()))
            ]
    assert unknown == []


def settings_table() -> dict[str, str]:
    """docs/operations.md's table of settings: each name to its default's cell."""
    rows: dict[str, str] = {}
    for line in document(REPO / "docs" / "operations.md").prose:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 3:
            for name in CODE_SPAN.findall(cells[0]):
                rows[name] = cells[1]
    return rows


def test_every_flsync_setting_is_in_the_settings_table_with_its_default():
    table = settings_table()
    ours = [name for name in vars(flsync.settings) if name.startswith("FLSYNC_")]
    assert [name for name in ours if name not in table] == []
    assert [name for name in table if not is_setting(name)] == []
    wrong = []
    for name, cell in table.items():
        literal = re.fullmatch(r"`([^`…]+)`(?: \(.*\))?", cell)
        if literal is None or not hasattr(flsync.settings, name):
            continue  # a default told in words
        value = getattr(flsync.settings, name)
        shown = literal[1]
        if isinstance(value, bool) or not isinstance(value, int | float):
            same = shown == str(value)
        else:
            same = float(shown) == value
        if not same:
            wrong.append(f"{name}: the table says {shown}, flsync/settings.py {value!r}")
    assert wrong == []


def test_the_doctors_table_names_what_flsync_site_has():
    doc = document(REPO / "docs" / "site-changes.md")
    rows = [line for line in doc.prose if line.startswith("| ") and "---" not in line]
    names = [name for row in rows[1:] for name in CODE_SPAN.findall(row.split("|")[3])]
    assert len(names) > 10
    assert [name for name in names if not hasattr(site, name)] == []


def test_the_crontab_line_is_the_same_everywhere():
    [readme_line] = CRON_LINE.findall(README.read_text())
    for doc in documents():
        for line in CRON_LINE.findall(doc.path.read_text()):
            assert line == readme_line, doc.name
