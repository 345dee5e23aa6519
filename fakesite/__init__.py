"""An imitation of FutureLearn's admin site, per docs/site-model.md (the site's description).

``FakeSite`` serves it over real HTTP on 127.0.0.1 for tests; ``python -m fakesite``
serves it from a process of its own. See server.py for the control endpoints and
``Faults`` (control.py) for the faults it can be told to show. ``FakeSite(https=True)``
serves it over TLS with a CA made for the run (tls.py), optionally behind Cloudflare's bot
wall as the imitation plays it (wall.py). Other knobs of ``Faults`` make the runs listing
and the stats dashboard pages built by script (pages.py, api.py) and put Cloudflare's script
challenge in front of the site (challenge.py).
"""

from __future__ import annotations

from fakesite.control import Faults
from fakesite.data import (
    ACCOUNTS,
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    LEARNER_EMAIL,
    LEARNER_PASSWORD,
    PARTIAL_EMAIL,
    PARTIAL_PASSWORD,
    SUBDIVISIONS,
    Organisation,
    Run,
    SiteData,
    SiteOptions,
)
from fakesite.datasets import DatasetFile
from fakesite.server import FakeSite

__all__ = [
    "ACCOUNTS",
    "ADMIN_EMAIL",
    "ADMIN_PASSWORD",
    "LEARNER_EMAIL",
    "LEARNER_PASSWORD",
    "PARTIAL_EMAIL",
    "PARTIAL_PASSWORD",
    "SUBDIVISIONS",
    "DatasetFile",
    "FakeSite",
    "Faults",
    "Organisation",
    "Run",
    "SiteData",
    "SiteOptions",
]
