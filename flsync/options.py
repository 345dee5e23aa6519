"""Every ``FLSYNC_*`` setting, read and checked once into :class:`SyncOptions`, which the
components of a crawl receive instead of reading settings themselves.

The defaults, with their units and meanings, are in flsync/settings.py. A bad value is one
ValueError naming the setting, raised while the crawler is built (see
flsync.spiders.common.prepare_settings), before any request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flsync import settings as defaults
from flsync.origins import parse_origins

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

# The setting that carries the crawl's SyncOptions, once read.
LOADED_OPTIONS = "FLSYNC_LOADED_OPTIONS"
# FLSYNC_IMPERSONATE's value for plain curl's fingerprint (no browser impersonated).
NO_IMPERSONATION = "none"


@dataclass(frozen=True)
class SyncOptions:
    config_path: str  # FLSYNC_CONFIG
    frozen_after_days: int  # FLSYNC_FROZEN_AFTER_DAYS, 0 with FLSYNC_FULL: every run asked
    lock_stale_after: float  # FLSYNC_LOCK_STALE_AFTER, seconds
    retry_after_max: float  # FLSYNC_RETRY_AFTER_MAX, seconds
    retry_backoff_base: float  # FLSYNC_RETRY_BACKOFF_BASE, seconds
    session_retries: int  # FLSYNC_SESSION_RETRIES
    sign_in_max: int  # FLSYNC_SIGN_IN_MAX
    sign_in_wait: float  # FLSYNC_SIGN_IN_WAIT, seconds
    impersonate: str  # FLSYNC_IMPERSONATE: a browser's name, or "none"
    ca_bundle: str | None  # FLSYNC_CA_BUNDLE, a PEM file
    browser: bool  # FLSYNC_BROWSER
    browser_path: str | None  # FLSYNC_BROWSER_PATH
    browser_pages: int  # FLSYNC_BROWSER_PAGES
    browser_timeout: float  # FLSYNC_BROWSER_TIMEOUT, seconds
    listing_max_pages: int  # FLSYNC_LISTING_MAX_PAGES
    extra_origins: frozenset[str]  # FLSYNC_EXTRA_ORIGINS
    progress: bool  # FLSYNC_PROGRESS
    dataset_min_rate: int  # FLSYNC_DATASET_MIN_RATE, bytes a second
    dataset_maxsize: int  # FLSYNC_DATASET_MAXSIZE, bytes
    dataset_max_ratio: float  # FLSYNC_DATASET_MAX_RATIO
    measures: bool  # FLSYNC_MEASURES
    measures_memory_mb: int  # FLSYNC_MEASURES_MEMORY_MB

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> SyncOptions:
        """Read every FLSYNC_* setting (one ``settings`` lacks has its default from
        flsync/settings.py); ValueError (one line) for a bad one."""
        options = cls(
            config_path=settings.get("FLSYNC_CONFIG", defaults.FLSYNC_CONFIG) or "config.json",
            frozen_after_days=(
                0
                if settings.getbool("FLSYNC_FULL", defaults.FLSYNC_FULL)
                else settings.getint("FLSYNC_FROZEN_AFTER_DAYS", defaults.FLSYNC_FROZEN_AFTER_DAYS)
            ),
            lock_stale_after=settings.getfloat(
                "FLSYNC_LOCK_STALE_AFTER", defaults.FLSYNC_LOCK_STALE_AFTER
            ),
            retry_after_max=settings.getfloat(
                "FLSYNC_RETRY_AFTER_MAX", defaults.FLSYNC_RETRY_AFTER_MAX
            ),
            retry_backoff_base=settings.getfloat(
                "FLSYNC_RETRY_BACKOFF_BASE", defaults.FLSYNC_RETRY_BACKOFF_BASE
            ),
            session_retries=settings.getint(
                "FLSYNC_SESSION_RETRIES", defaults.FLSYNC_SESSION_RETRIES
            ),
            sign_in_max=settings.getint("FLSYNC_SIGN_IN_MAX", defaults.FLSYNC_SIGN_IN_MAX),
            sign_in_wait=settings.getfloat("FLSYNC_SIGN_IN_WAIT", defaults.FLSYNC_SIGN_IN_WAIT),
            impersonate=str(
                settings.get("FLSYNC_IMPERSONATE", defaults.FLSYNC_IMPERSONATE) or NO_IMPERSONATION
            ).strip(),
            ca_bundle=settings.get("FLSYNC_CA_BUNDLE", defaults.FLSYNC_CA_BUNDLE) or None,
            browser=settings.getbool("FLSYNC_BROWSER", defaults.FLSYNC_BROWSER),
            browser_path=settings.get("FLSYNC_BROWSER_PATH", defaults.FLSYNC_BROWSER_PATH) or None,
            browser_pages=settings.getint("FLSYNC_BROWSER_PAGES", defaults.FLSYNC_BROWSER_PAGES),
            browser_timeout=settings.getfloat(
                "FLSYNC_BROWSER_TIMEOUT", defaults.FLSYNC_BROWSER_TIMEOUT
            ),
            listing_max_pages=settings.getint(
                "FLSYNC_LISTING_MAX_PAGES", defaults.FLSYNC_LISTING_MAX_PAGES
            ),
            extra_origins=parse_origins(
                settings.getlist("FLSYNC_EXTRA_ORIGINS", defaults.FLSYNC_EXTRA_ORIGINS)
            ),
            progress=settings.getbool("FLSYNC_PROGRESS", defaults.FLSYNC_PROGRESS),
            dataset_min_rate=settings.getint(
                "FLSYNC_DATASET_MIN_RATE", defaults.FLSYNC_DATASET_MIN_RATE
            ),
            dataset_maxsize=settings.getint(
                "FLSYNC_DATASET_MAXSIZE", defaults.FLSYNC_DATASET_MAXSIZE
            ),
            dataset_max_ratio=settings.getfloat(
                "FLSYNC_DATASET_MAX_RATIO", defaults.FLSYNC_DATASET_MAX_RATIO
            ),
            measures=settings.getbool("FLSYNC_MEASURES", defaults.FLSYNC_MEASURES),
            measures_memory_mb=settings.getint(
                "FLSYNC_MEASURES_MEMORY_MB", defaults.FLSYNC_MEASURES_MEMORY_MB
            ),
        )
        options.check()
        return options

    def check(self) -> None:
        """ValueError naming the first setting whose value cannot work."""
        at_least_one = {
            "FLSYNC_SIGN_IN_MAX": self.sign_in_max,
            "FLSYNC_LISTING_MAX_PAGES": self.listing_max_pages,
            "FLSYNC_BROWSER_PAGES": self.browser_pages,
            "FLSYNC_DATASET_MAXSIZE": self.dataset_maxsize,
            "FLSYNC_DATASET_MAX_RATIO": self.dataset_max_ratio,
            "FLSYNC_MEASURES_MEMORY_MB": self.measures_memory_mb,
        }
        for name, value in at_least_one.items():
            if value < 1:
                raise ValueError(f"{name} must be 1 or more, not {value}")
        not_negative = {
            "FLSYNC_FROZEN_AFTER_DAYS": self.frozen_after_days,
            "FLSYNC_SESSION_RETRIES": self.session_retries,
            "FLSYNC_SIGN_IN_WAIT": self.sign_in_wait,
            "FLSYNC_RETRY_AFTER_MAX": self.retry_after_max,
            "FLSYNC_RETRY_BACKOFF_BASE": self.retry_backoff_base,
            "FLSYNC_DATASET_MIN_RATE": self.dataset_min_rate,
        }
        for name, value in not_negative.items():
            if value < 0:
                raise ValueError(f"{name} must be 0 or more, not {value}")
        for name, value in {
            "FLSYNC_BROWSER_TIMEOUT": self.browser_timeout,
            "FLSYNC_LOCK_STALE_AFTER": self.lock_stale_after,
        }.items():
            if value <= 0:
                raise ValueError(f"{name} must be above 0, not {value}")


def options_of(settings: BaseSettings) -> SyncOptions:
    """The crawl's options: those read at start-up, else read now."""
    loaded = settings.get(LOADED_OPTIONS)
    if isinstance(loaded, SyncOptions):
        return loaded
    return SyncOptions.from_settings(settings)
