"""Scrapy settings for flsync.

Every ``FLSYNC_*`` setting has its default here, with its unit and meaning. Secrets never go
here or on the command line (Scrapy logs ``-s`` overrides): they come from the config file or
from the environment (``FLSYNC_USERNAME``, ``FLSYNC_PASSWORD``).
"""

from scrapy.settings import default_settings

BOT_NAME = "flsync"
SPIDER_MODULES = ["flsync.spiders"]
NEWSPIDER_MODULE = "flsync.spiders"
COMMANDS_MODULE = "flsync.commands"

# Path of the JSON config file (credentials, base_url, data_dir, organisations, datasets).
FLSYNC_CONFIG = "config.json"
# Runs that ended more than this many days ago, with all their files present, are not
# requested again (their datasets no longer change). 0 turns the shortcut off.
FLSYNC_FROZEN_AFTER_DAYS = 30
# Fetch every run, frozen or not (`scrapy crawl futurelearn -s FLSYNC_FULL=1`).
FLSYNC_FULL = False
# Longest wait honoured from a Retry-After header, in seconds; longer asks are capped.
FLSYNC_RETRY_AFTER_MAX = 120
# First back-off after a 429/503 without Retry-After, in seconds; doubles on each retry.
FLSYNC_RETRY_BACKOFF_BASE = 1.0
# Times one request may make flsync sign in again (its answer said the session had expired);
# then it fails, so a page that always answers "signed out" cannot keep a sync going forever.
# Requests that only meet an expiry another request is already dealing with do not count.
FLSYNC_SESSION_RETRIES = 3
# Handler for everything that is not a dataset body (pages). scrapy-playwright's handler
# can be named here for pages rendered by JavaScript.
FLSYNC_PAGE_DOWNLOAD_HANDLER = "scrapy.core.downloader.handlers.http11.HTTP11DownloadHandler"

# Dataset bodies are streamed to disk by flsync's handler; pages go to FLSYNC_PAGE_DOWNLOAD_HANDLER.
DOWNLOAD_HANDLERS = {
    "http": "flsync.handlers.StreamingDownloadHandler",
    "https": "flsync.handlers.StreamingDownloadHandler",
}

ITEM_PIPELINES = {
    "flsync.pipelines.DatasetFilesPipeline": 100,
    "flsync.pipelines.RunMetadataPipeline": 200,
    "flsync.pipelines.SyncStatePipeline": 900,
}
# FILES_STORE (where the data tree goes) is taken from the config's data_dir; see
# FuturelearnSpider.update_settings.
# Datasets are regenerated daily: freshness is asked of the server (ETag/Last-Modified),
# never assumed from a file's age.
FILES_EXPIRES = 0
MEDIA_ALLOW_REDIRECTS = False

DOWNLOADER_MIDDLEWARES = {
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "flsync.middlewares.RetryAfterMiddleware": 550,
    # Above CookiesMiddleware (700), so it sees an answer before that one stores its cookies:
    # an "expired" answer may set a new anonymous session cookie, which must not replace the
    # renewed session in the jar. Above RedirectMiddleware (600) too: it sees the raw 302.
    "flsync.middlewares.SessionMiddleware": 720,
}
RETRY_TIMES = 4
RETRY_HTTP_CODES = [500, 502, 503, 504, 522, 524, 408, 429]

# Polite concurrency: at most 16 requests in flight to the site; AutoThrottle keeps about
# that many while answers come quickly and spaces requests out as soon as they slow down.
CONCURRENT_REQUESTS_PER_DOMAIN = 16
# Requests the downloader accepts at once, in flight or waiting their turn. File downloads
# wait there too, so at 16 they would hold back the next run pages until they were all done,
# and the site would sit idle while those pages came; 48 keeps pages coming.
CONCURRENT_REQUESTS = 48
# Outputs of one page handled at once: a dashboard gives about a dozen files and its run.
# Scrapy starts this many tasks for every page, so its default of 100 mostly costs CPU.
CONCURRENT_ITEMS = 16
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 0.1
AUTOTHROTTLE_MAX_DELAY = 30.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 16.0
DOWNLOAD_DELAY = 0
# AutoThrottle's delay as computed, not varied by ±50%: the random variation disguises a
# crawler, which a partner's own export has no need for, and each redraw made the effective
# gap longer than the computed one (12 of 16 requests in flight instead of 15).
DOWNLOAD_DELAY_JITTER = 0

ROBOTSTXT_OBEY = False
COOKIES_ENABLED = True
USER_AGENT = "flsync (+course data mirror for FutureLearn partners)"

# A sync holds institutional credentials: no remote Python execution, no telnet console.
# Both are left out of Scrapy's base extensions, so no setting can turn them on. (Listed as
# None in EXTENSIONS, the remote-control server would still be imported, with its web
# framework: about 0.2 s of every start-up.)
EXTENSIONS_BASE = dict(default_settings.EXTENSIONS_BASE)
del EXTENSIONS_BASE["scrapy.extensions.remote_control.RemoteControl"]
del EXTENSIONS_BASE["scrapy.extensions.telnet.TelnetConsole"]

# A development aid (a warning when a generator callback returns a value) that re-reads and
# parses the callback's source for every response, as bound methods defeat its cache: about
# 8% of a sync's CPU time.
WARN_ON_GENERATOR_RETURN_VALUE = False

LOG_LEVEL = "INFO"
TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
FEED_EXPORT_ENCODING = "utf-8"
