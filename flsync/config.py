"""The sync's configuration: a JSON file plus credentials from the environment.

The file's path is the ``FLSYNC_CONFIG`` setting. ``FLSYNC_USERNAME`` and ``FLSYNC_PASSWORD`` in
the environment override the file's ``username`` and ``password``, so a secret never has to be
a spider argument or a ``-s`` setting (Scrapy and Scrapyd show both).

The file is read once per crawl, by the spider's ``update_settings`` (so that a bad file stops
``scrapy crawl`` before the crawl is set up); the result travels in the crawl's settings
(``LOADED_CONFIG``), where components find it with :func:`config_from_settings`. A file that
holds a password and that others than its owner may read or write is warned about then, as
ssh and libpq warn about their secrets' files.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flsync.options import options_of

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://www.futurelearn.com"
DEFAULT_DATA_DIR = "data"
_KEYS = {"username", "password", "base_url", "data_dir", "organisations", "datasets"}
# The setting that carries the loaded FlsyncConfig (whose repr never shows the password).
LOADED_CONFIG = "FLSYNC_LOADED_CONFIG"


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class FlsyncConfig:
    username: str
    # repr=False: a logged or printed config never shows the password.
    password: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    data_dir: str = DEFAULT_DATA_DIR
    organisations: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()


def load_config(path: str, environ: Mapping[str, str] = os.environ) -> FlsyncConfig:
    """Read and check the config file at ``path``; raise ConfigError naming the problem."""
    raw = _read_json_object(path)
    if raw.get("password"):
        _warn_if_open(path)
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(
            f"config file {path} has unknown key {unknown[0]!r}"
            f" (known keys: {', '.join(sorted(_KEYS))})"
        )
    values = dict(raw)
    for key, env_name in (("username", "FLSYNC_USERNAME"), ("password", "FLSYNC_PASSWORD")):
        if environ.get(env_name):
            values[key] = environ[env_name]
        if not isinstance(values.get(key), str) or not values[key].strip():
            raise ConfigError(
                f"config file {path} has no {key!r}: set it there, or {env_name} in the environment"
            )
    base_url = _string(values, "base_url", DEFAULT_BASE_URL, path).rstrip("/")
    if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).netloc:
        raise ConfigError(f"'base_url' in config file {path} must be an http(s) URL")
    return FlsyncConfig(
        username=values["username"].strip(),
        password=values["password"],
        base_url=base_url,
        data_dir=_string(values, "data_dir", DEFAULT_DATA_DIR, path),
        organisations=_string_list(values, "organisations", path),
        datasets=_string_list(values, "datasets", path),
    )


def load_data_dir(path: str) -> str:
    """The config's data_dir alone: a command that only reads the tree (``scrapy loaddb``)
    needs no credentials."""
    return _string(_read_json_object(path), "data_dir", DEFAULT_DATA_DIR, path)


def config_from_settings(settings: BaseSettings) -> FlsyncConfig:
    """The crawl's config: the one loaded at start-up, else read now from ``FLSYNC_CONFIG``."""
    loaded = settings.get(LOADED_CONFIG)
    if isinstance(loaded, FlsyncConfig):
        return loaded
    return load_config(options_of(settings).config_path)


def _read_json_object(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        # A relative path is read from the working directory, which for a Scrapyd job is
        # Scrapyd's own: say which.
        where = "" if os.path.isabs(path) else f" in {os.getcwd()}"
        raise ConfigError(
            f"config file {path} not found{where}: copy config.json.template there and fill it"
            " in, or set the environment variable FLSYNC_CONFIG (or -s FLSYNC_CONFIG=) to the"
            " path of yours"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        # exc.msg and the position only: the document itself may hold the password.
        raise ConfigError(
            f"config file {path} is not valid JSON: {exc.msg} at line {exc.lineno},"
            f" column {exc.colno}"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a JSON object ({{...}})")
    return raw


def _warn_if_open(path: str) -> None:
    """One warning if the file (which holds a password) is open to group or others."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return  # it was just read: gone since, there is nothing left to warn about
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "config file %(path)s holds a password and can be read or changed by others than"
            " its owner (mode %(mode)04o): chmod 600 %(path)s (or leave the password out of it"
            " and set FLSYNC_PASSWORD)",
            {"path": path, "mode": mode},
        )


def _string(values: Mapping[str, Any], key: str, default: str, path: str) -> str:
    value = values.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key!r} in config file {path} must be a non-empty string")
    return value.strip()


def _string_list(values: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    value = values.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key!r} in config file {path} must be a list of names ([] means all)")
    return tuple(value)
