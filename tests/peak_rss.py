"""Runs a command and writes its peak memory (RSS, KiB) to a file:
``python tests/peak_rss.py FILE COMMAND...``; exits with the command's status.

Measured from pytest, a child's peak would be pytest's at least: on Linux a child counts the
resident set of the process it was forked from as its own, up to its exec (and subprocess
forks with vfork, sharing the parent's memory). Forked from this small launcher instead, the
command's figure is its own, give or take this launcher's ten megabytes. SIGTERM to the
launcher kills the command.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path


def main() -> int:
    report, *command = sys.argv[1:]
    child = subprocess.Popen(command)
    signal.signal(signal.SIGTERM, lambda *_: child.kill())
    status = child.wait()
    Path(report).write_text(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main())
