"""The no-account demo: the imitation FutureLearn on 127.0.0.1, over HTTPS behind its bot wall
(as futurelearn.com is), two syncs into a new temporary folder, then the tree they wrote. Run it
through `scripts/demo`, which installs flsync first."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fakesite import ADMIN_EMAIL, ADMIN_PASSWORD, FakeSite  # noqa: E402


def show_tree(data_dir: Path) -> None:
    """Organisations, courses and runs; the files of the first run in full."""
    shown_files = False
    for organisation in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        update = (organisation / "update.txt").read_text().strip()
        print(f"{organisation.name}/   update.txt: {update}")
        for course in sorted(p for p in organisation.iterdir() if p.is_dir()):
            print(f"  {course.name}/")
            for run in sorted(course.iterdir()):
                files = sorted(f.name for f in run.iterdir())
                listing = "  ".join(files) if not shown_files else f"{len(files)} files"
                shown_files = True
                print(f"    {run.name}/  {listing}")


def run_sync(workdir: Path, log_name: str, ca_file: Path) -> tuple[int, str]:
    """`scrapy crawl futurelearn` with the demo config; its exit status and last log line."""
    log = workdir / log_name
    command = [sys.executable, "-m", "scrapy", "crawl", "futurelearn"]
    command += ["-s", f"FLSYNC_CONFIG={workdir / 'config.json'}", "-s", f"LOG_FILE={log}"]
    # The site's certificate comes from a CA made for the demo: trusted besides the system's.
    command += ["-s", f"FLSYNC_CA_BUNDLE={ca_file}"]
    status = subprocess.run(command, cwd=REPO, check=False).returncode
    return status, log.read_text().splitlines()[-1].split("] ", 1)[-1]


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="flsync-demo-"))
    with FakeSite(https=True, bot_wall=True, tls_dir=workdir / "tls") as site:
        config = {
            "username": ADMIN_EMAIL,
            "password": ADMIN_PASSWORD,
            "base_url": site.base_url,
            "data_dir": str(workdir / "data"),
        }
        (workdir / "config.json").write_text(json.dumps(config, indent=2))
        (workdir / "config.json").chmod(0o600)  # it holds the password
        print(
            f"Imitation FutureLearn at {site.base_url} (HTTPS, behind a bot wall that refuses"
            f" non-browser TLS); syncing into {workdir / 'data'}"
        )
        first, first_summary = run_sync(workdir, "sync-1.log", site.ca_file)
        print(f"First sync, exit status {first}: {first_summary}")
        second, second_summary = run_sync(workdir, "sync-2.log", site.ca_file)
        print(f"Second sync, exit status {second}: {second_summary}\n")
    show_tree(workdir / "data")
    print(f"\nEverything is in {workdir} (config.json, the logs sync-1.log and sync-2.log, data/).")
    return first or second


if __name__ == "__main__":
    sys.exit(main())
