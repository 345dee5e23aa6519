"""The egg that ``scrapyd-deploy`` builds and uploads to Scrapyd (see the README's Scrapyd section).

scrapyd-deploy runs ``python setup.py clean -a`` and ``python setup.py bdist_egg`` here, and
writes a setup.py of its own (packaging every package it finds, tests/ included) when there is
none. This one puts the ``flsync`` package in the egg and nothing else: not tests/, benchmarks/,
scripts/, nor a config.json lying in the checkout. The ``scrapy`` entry point tells Scrapyd's
runner the settings module. Dependencies are not in the egg: the Scrapyd host installs
requirements.txt into the Python that runs scrapyd.

The build's scratch folders (build/, flsync.egg-info/) go to a temporary folder removed when
the command ends, not into the checkout: nothing is left to commit by mistake, and two deploys
from one checkout at once do not share them. Options given on the command line (as pip gives
them) still take precedence.
"""

import atexit
import os
import shutil
import tempfile

from setuptools import find_packages, setup

SCRATCH = tempfile.mkdtemp(prefix="flsync-build-")
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)

setup(
    name="flsync",
    version="1.0",
    description="A mirror of FutureLearn course datasets (a Scrapy project)",
    packages=find_packages(include=["flsync", "flsync.*"]),
    entry_points={"scrapy": ["settings = flsync.settings"]},
    python_requires=">=3.11",
    zip_safe=True,
    options={"build": {"build_base": SCRATCH}, "egg_info": {"egg_base": os.path.relpath(SCRATCH)}},
)
