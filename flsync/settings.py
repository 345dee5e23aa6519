"""Scrapy settings for flsync.

Every ``FLSYNC_*`` setting has its default here, with its unit and meaning. Secrets never go
here or on the command line (Scrapy logs ``-s`` overrides): they come from the config file or
from the environment (``FLSYNC_USERNAME``, ``FLSYNC_PASSWORD``).
"""

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
    # Between RedirectMiddleware (600) and CookiesMiddleware (700): sees the raw 302 to the
    # sign-in page after the session cookie jar has been updated.
    "flsync.middlewares.SessionMiddleware": 650,
}
RETRY_TIMES = 4
RETRY_HTTP_CODES = [500, 502, 503, 504, 522, 524, 408, 429]

# Polite concurrency: at most 16 requests in flight to the site; AutoThrottle keeps about
# that many while answers come quickly and spaces requests out as soon as they slow down.
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 16
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 0.1
AUTOTHROTTLE_MAX_DELAY = 30.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 16.0
DOWNLOAD_DELAY = 0

ROBOTSTXT_OBEY = False
COOKIES_ENABLED = True
USER_AGENT = "flsync (+course data mirror for FutureLearn partners)"

# A sync holds institutional credentials: no remote Python execution, no telnet console.
REMOTE_CONTROL_ENABLED = False
TELNETCONSOLE_ENABLED = False

LOG_LEVEL = "INFO"
TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
FEED_EXPORT_ENCODING = "utf-8"
