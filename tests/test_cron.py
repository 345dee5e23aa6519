"""The README's crontab line, run as cron runs it (sh, no terminal): silent when the sync is
complete, the log's last lines, the verdict last, when it is not."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from fakesite import ADMIN_EMAIL, ADMIN_PASSWORD, FakeSite, SiteOptions
from tests.commands import REPO

SMALL = SiteOptions(organisations=1, courses=1, runs=2, rows=5, tricky=False)


def crontab_command(log: str) -> str:
    """The command of the README's crontab line, run from this checkout."""
    readme = (REPO / "README.md").read_text()
    [command] = re.findall(r"^ +15 3 \* \* \* +(cd /opt/flsync .+)$", readme, re.MULTILINE)
    return command.replace("/opt/flsync", str(REPO)).replace("/var/log/flsync/sync.log", log)


def test_the_readme_crontab_line_is_quiet_unless_the_sync_fails(tmp_path):
    log = str(tmp_path / "sync.log")
    config = tmp_path / "config.json"
    with FakeSite(SMALL) as site:
        settings = {"base_url": site.base_url, "data_dir": str(tmp_path / "data")}

        def cron(password: str) -> subprocess.CompletedProcess[str]:
            document = {"username": ADMIN_EMAIL, "password": password, **settings}
            config.write_text(json.dumps(document))
            return subprocess.run(
                ["sh", "-c", crontab_command(log)],
                env={"PATH": "/usr/bin:/bin", "FLSYNC_CONFIG": str(config)},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        complete = cron(ADMIN_PASSWORD)
        assert (complete.returncode, complete.stdout, complete.stderr) == (0, "", "")
        failed = cron("not-the-password")
    mailed = failed.stdout.splitlines()
    assert failed.returncode == 0  # tail's: cron mails what was printed
    assert len(mailed) == 12
    assert "Sync FAILED" in mailed[-1]
    assert any("Sign-in refused" in line for line in mailed)
    assert "not-the-password" not in failed.stdout
    assert "Sync complete" in Path(log).read_text()  # the log is appended to, not replaced
