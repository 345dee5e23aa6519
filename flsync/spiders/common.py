"""What the spiders share: how a crawl's settings are prepared from the config, and the
errors they say alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flsync.browser import BROWSER_SLOT, BrowserError, browser_settings
from flsync.config import LOADED_CONFIG, ConfigError, load_config
from flsync.handlers import impersonation
from flsync.options import LOADED_OPTIONS, SyncOptions
from flsync.transport import combined_ca_bundle

if TYPE_CHECKING:
    from typing import Any

    from scrapy.settings import BaseSettings

    from flsync.config import FlsyncConfig


def prepare_settings(settings: BaseSettings) -> FlsyncConfig:
    """Read the config (FLSYNC_CONFIG) into the crawl's settings, check the transport's
    settings and add the browser's (FLSYNC_BROWSER). Called from a spider's
    ``update_settings``, while the crawler is built: a bad config is one ConfigError before
    anything starts (see flsync.commands.crawl)."""
    try:
        options = SyncOptions.from_settings(settings)
        config = load_config(options.config_path)
        impersonation(options)
        combined_ca_bundle(options.ca_bundle)
        if options.browser:
            settings.setdict(browser_settings(options, config.base_url), "spider")
    except (ValueError, BrowserError) as exc:
        raise ConfigError(str(exc)) from None
    settings.set(LOADED_CONFIG, config, "spider")
    settings.set(LOADED_OPTIONS, options, "spider")
    return config


def not_admin_error(user: str) -> str:
    """The one line for an account that may not see /admin/organisations (403)."""
    return (
        f"Signed in as {user}, but the account has no admin rights (403 on"
        " /admin/organisations): use a partner account that administers the organisations"
    )


def rendered_meta() -> dict[str, Any]:
    """The meta of a page FutureLearn may build by script, read in the browser
    (FLSYNC_BROWSER on)."""
    return {"playwright": True, "download_slot": BROWSER_SLOT}


def wanted_dataset(name: str, wanted: tuple[str, ...]) -> bool:
    """Whether the config's ``datasets`` (empty: all) take this one; ``_`` and ``-`` alike."""
    keys = {_dataset_key(d) for d in wanted}
    return not keys or _dataset_key(name) in keys


def _dataset_key(name: str) -> str:
    return name.replace("_", "-").lower()
