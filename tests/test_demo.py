import subprocess
import sys

from tests.commands import REPO


def test_demo_syncs_twice_and_shows_the_tree():
    demo = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    lines = demo.stdout.splitlines()
    assert lines[0].startswith("Imitation FutureLearn at https://127.0.0.1:")
    assert lines[1].startswith("First sync, exit status 0: INFO: Sync complete: 471 downloaded")
    assert lines[2].startswith("Second sync, exit status 0: INFO: Sync complete: 0 downloaded")
    assert "University of Exampleton/   update.txt: " in demo.stdout
    assert "metadata.csv" in demo.stdout
