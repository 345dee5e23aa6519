"""Scrapy settings for flsync.

Every ``FLSYNC_*`` setting has its default here, with its unit and meaning. Secrets never go
here or on the command line (Scrapy logs ``-s`` overrides): they come from the config file or
from the environment (``FLSYNC_USERNAME``, ``FLSYNC_PASSWORD``).
"""

import os

from scrapy.settings import default_settings

BOT_NAME = "flsync"
SPIDER_MODULES = ["flsync.spiders"]
NEWSPIDER_MODULE = "flsync.spiders"
COMMANDS_MODULE = "flsync.commands"

# Path of the JSON config file (credentials, base_url, data_dir, organisations, datasets): the
# environment variable FLSYNC_CONFIG when set (how a Scrapyd host points its jobs at its config,
# as their working directory is Scrapyd's), else config.json in the working directory.
FLSYNC_CONFIG = os.environ.get("FLSYNC_CONFIG") or "config.json"
# Opt-in shortcut, off (0) by default so that the mirror is complete: runs that ended more than
# this many days ago, with all their files present, are not asked for again, except for their
# enrolments (site.NEVER_FINAL_DATASETS). FutureLearn keeps changing the other datasets for
# two weeks after a run ends, and in practice later too (late comments and survey answers).
FLSYNC_FROZEN_AFTER_DAYS = 0
# Ask for every run even with FLSYNC_FROZEN_AFTER_DAYS on (`scrapy crawl futurelearn --full`).
FLSYNC_FULL = False
# Seconds after which the lock of an organisation on an s3:// data_dir (an object its sync
# refreshes every third of this) counts as a killed sync's and is taken over. A local
# data_dir's lock needs none: it ends with its process.
FLSYNC_LOCK_STALE_AFTER = 900
# Longest wait honoured from a Retry-After header, in seconds; longer asks are capped.
FLSYNC_RETRY_AFTER_MAX = 120
# First back-off after a 429/503 without Retry-After, in seconds; doubles on each retry.
FLSYNC_RETRY_BACKOFF_BASE = 1.0
# Times one request may be sent again after an answer that said "signed out" (for any of the
# reasons: it started a sign-in, waited for one, or was sent before one); then it fails.
FLSYNC_SESSION_RETRIES = 5
# Sign-ins in one sync at most; then the sync stops (a site that keeps ending the session).
FLSYNC_SIGN_IN_MAX = 100
# Least time, in seconds, between two sign-ins: a site that ends sessions at once is not
# hammered with sign-ins.
FLSYNC_SIGN_IN_WAIT = 1.0
# The browser whose TLS and HTTP fingerprint every request carries (curl_cffi's names:
# "chrome" is the newest Chrome it knows; also safari, firefox, edge, or an exact one such as
# chrome136). "none" sends plain curl's fingerprint and USER_AGENT.
FLSYNC_IMPERSONATE = "chrome"
# A PEM file of certificate authorities to trust besides the system's (a university's
# TLS-inspecting proxy, a test site's own CA). Certificates are always verified.
FLSYNC_CA_BUNDLE = None

# A real browser (headless Chromium, through scrapy-playwright) for the runs listings and
# stats dashboards, which FutureLearn may build by script, and for the bot protection's script
# challenge. Off by default: plain HTTP is lighter and enough while the pages come built.
FLSYNC_BROWSER = False
# The browser executable; by default chromium or chromium-browser on the PATH (Playwright's
# own browser download is not needed).
FLSYNC_BROWSER_PATH = None
# Pages open in the browser at once: each holds a renderer process (tens of MB).
FLSYNC_BROWSER_PAGES = 4
# Seconds a page may take to load and build itself (and a challenge to be passed).
FLSYNC_BROWSER_TIMEOUT = 30.0

# Every request goes through curl with the browser's fingerprint; dataset bodies are streamed
# to disk as they arrive.
DOWNLOAD_HANDLERS = {
    "http": "flsync.handlers.CurlDownloadHandler",
    "https": "flsync.handlers.CurlDownloadHandler",
    # Never used; Scrapy would load their classes at start-up, and the s3 one imports the
    # Twisted HTTP stack flsync does without (about 0.1 s of every start).
    "s3": None,
    "ftp": None,
    "data": None,
    "file": None,
}
# The impersonated browser sends its own User-Agent, Accept and Accept-Language; USER_AGENT
# (below) is sent only with FLSYNC_IMPERSONATE=none.
DEFAULT_REQUEST_HEADERS: dict[str, str] = {}

ITEM_PIPELINES = {
    "flsync.pipelines.DatasetFilesPipeline": 100,
    "flsync.pipelines.RunMetadataPipeline": 200,
    "flsync.pipelines.SyncStatePipeline": 900,
}
# FILES_STORE (where the data tree goes) is the config's data_dir; see
# FuturelearnSpider.update_settings.
# Datasets are regenerated daily: freshness is asked of the server (ETag/Last-Modified),
# never assumed from a file's age.
FILES_EXPIRES = 0
MEDIA_ALLOW_REDIRECTS = False

# An exception raised while a page is read fails that page's run (one ERROR line), instead
# of the run simply never arriving.
SPIDER_MIDDLEWARES = {"flsync.failures.PageFailureMiddleware": 900}

# Pages of one organisation's runs listing read at most (25 runs each): a listing whose next
# pages go on past this fails that organisation rather than the sync never ending.
FLSYNC_LISTING_MAX_PAGES = 400
# Origins (https://host[:port]) pages and datasets may be fetched from besides base_url's, e.g.
# a CDN FutureLearn might serve downloads from; none by default. A link to any other origin,
# or from https to plain http, fails its run unfetched (flsync.origins).
FLSYNC_EXTRA_ORIGINS: list[str] = []
# `scrapy export`: the path of the file holding the institution's export key (the key that
# makes pseudonyms; docs/export.md), else the environment variable of that name. A path, never
# the key itself; None: no key, and an export is refused.
FLSYNC_EXPORT_KEY_FILE = None

DOWNLOADER_MIDDLEWARES = {
    # First: a request to an origin flsync does not fetch from never goes further.
    "flsync.middlewares.OriginMiddleware": 50,
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "flsync.middlewares.RetryAfterMiddleware": 550,
    # CookiesMiddleware, and the signed-in session: it sees an answer before its cookies are
    # stored (an "expired" answer may set a new anonymous session cookie, which must not
    # replace the renewed session), and before RedirectMiddleware (600) follows a raw 302.
    "scrapy.downloadermiddlewares.cookies.CookiesMiddleware": None,
    "scrapy.downloadermiddlewares.redirect.RedirectMiddleware": None,
    "flsync.middlewares.UnfilteredRedirectMiddleware": 600,
    "flsync.middlewares.SessionMiddleware": 700,
    # Sees an answer before the session does: a bot challenge is never a refused sign-in.
    "flsync.middlewares.AccessMiddleware": 710,
    # The User-Agent is the impersonated browser's (or USER_AGENT, added by the handler).
    "scrapy.downloadermiddlewares.useragent.UserAgentMiddleware": None,
    # curl decodes bodies (gzip, br, zstd) as they arrive, and asks for them as the browser.
    "scrapy.downloadermiddlewares.httpcompression.HttpCompressionMiddleware": None,
}
# The data tree (store, locks, sync states), a prompt end on the first SIGTERM/SIGINT, and a
# progress line when run in a terminal.
EXTENSIONS = {
    # The browser the download handlers render pages in, with FLSYNC_BROWSER on.
    "flsync.browser.BrowserPages": 0,
    "flsync.mirror.Mirror": 0,
    "flsync.stopping.PromptStop": 0,
    "flsync.progress.Progress": 0,
    # With FLSYNC_DATABASE_URL in the environment (never a setting: it may hold a password),
    # the runs that changed are loaded into that database once the crawl is over.
    "flsync.sql.extension.LoadAfterSync": 0,
    # The measures, step completion and dashboard.html of each organisation synced, for its
    # runs whose files changed (FLSYNC_MEASURES).
    "flsync.measures.extension.MeasuresAfterSync": 0,
}
# After each sync, compute the measures (measures.csv, step-completion.csv, dashboard.html at
# the top of each organisation's folder) of the runs whose files changed. False: none.
FLSYNC_MEASURES = True
# Memory DuckDB may hold while it computes measures, in MB (also for `scrapy measures`); past
# it, it spills to a temporary folder. Peak memory of the whole process stays about this much
# above flsync's own, whatever a file's size.
FLSYNC_MEASURES_MEMORY_MB = 512
# The database load (`scrapy loaddb`, and FLSYNC_DATABASE_URL after a sync): the longest CSV
# record it reads, in MiB (2^20 bytes); a file with a longer one fails its run, so that memory
# stays flat whatever a file holds. A whole number, at least 1.
FLSYNC_DATABASE_RECORD_MB = 8
# A line on stderr showing runs found, files done and bytes received, redrawn as the sync
# works; only ever when stderr is a terminal (never under cron or Scrapyd).
FLSYNC_PROGRESS = True
# Every re-send of a request is bounded: retries (RETRY_TIMES), redirects
# (REDIRECT_MAX_TIMES) and sends after "signed out" (FLSYNC_SESSION_RETRIES) each count
# against that request.
RETRY_TIMES = 4
RETRY_HTTP_CODES = [500, 502, 503, 504, 522, 524, 408, 429]
# What flsync's transport raises (see flsync.handlers), and OSError (a disk that hiccups).
# Scrapy's default list also names its Twisted handler's errors, and loading those imports
# that whole HTTP stack (about 0.1 s of every start).
RETRY_EXCEPTIONS = [
    "scrapy.exceptions.DownloadFailedError",
    "scrapy.exceptions.DownloadTimeoutError",
    "scrapy.exceptions.ResponseDataLossError",
    OSError,
]
# The failure's own line (page or dataset, "after N tries") says it; Scrapy's "Gave up
# retrying" line would say it a second time.
RETRY_GIVE_UP_LOG_LEVEL = "DEBUG"
# Likewise a dropped item (a dataset that failed, a run whose metadata.csv could not be
# written): its pipeline's line says why; Scrapy's "Dropped: ..." would say it again.
DEFAULT_DROPITEM_LOG_LEVEL = "DEBUG"
REDIRECT_MAX_TIMES = 5

# What a site may send, whatever it is (a broken CDN, a compromised page): every request and
# body is bounded, so that no answer fills memory or disk or holds the sync (and its locks).
# Seconds a request may take, from its start to its body's last byte; a dataset's body, which
# may take long on a slow link, is instead bounded by FLSYNC_DATASET_MIN_RATE over this time.
DOWNLOAD_TIMEOUT = 180
# Bytes a second a dataset's body must keep up (averaged over a few seconds by curl): below
# this for DOWNLOAD_TIMEOUT seconds in a row, it fails. 180 KiB in 3 minutes is a stalled
# server, not a slow link: even 1 Mbit/s shared by 16 transfers gives each 8 KB/s.
FLSYNC_DATASET_MIN_RATE = 1024
# Bytes of a body kept in memory at most: pages (FutureLearn's are tens of kilobytes) and
# answers other than 200. Scrapy's 1 GiB let one dashboard take gigabytes of memory once
# parsed, 16 at a time. Datasets go to disk and have their own limits, below.
DOWNLOAD_MAXSIZE = 4 * 1024 * 1024
# Bytes of a dataset at most, decoded. Real ones reach hundreds of megabytes; this bounds the
# disk an endless body could take.
FLSYNC_DATASET_MAXSIZE = 8 * 1024**3
# Times a compressed dataset may grow when decoded (curl decodes it as it arrives; 2 MB of
# gzip can be 2 GB of nothing). Real CSV exports compress 5-15 times; 100 leaves them room
# (long runs of empty fields compress better) and still stops a bomb (gzip reaches 1000,
# brotli and zstd far more) after at most 100 times what it sent, plus half a megabyte read.
FLSYNC_DATASET_MAX_RATIO = 100

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
# Scrapy's get_retry_request, used from a callback as its documentation shows (a page whose
# script failed, tried again), carries the request's retry count on purpose: no warning.
META_COPY_WARN_SKIP_KEYS = ["retry_times"]

LOG_LEVEL = "INFO"
# The log ends with what a person reads first (each organisation's report, the sync's summary),
# not with Scrapy's hundred counters; -s STATS_DUMP=1 shows them again.
STATS_DUMP = False
TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
