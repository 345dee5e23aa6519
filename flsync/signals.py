"""Signals flsync's own components send (besides Scrapy's).

``request_leaving`` is sent by the download handler, awaited, just before a request goes on
the wire (``send_catch_log_async(request_leaving, request=request)``). Scrapy's downloader
middlewares see a request when it enters the downloader, which can be long before it leaves
(it may wait in the downloader's queue behind many others); a receiver that must act at the
moment of sending (bring its session cookie up to date, hold it while a sign-in is under way)
listens here. A receiver refuses the request by raising ``IgnoreRequest``.

``sync_stopping`` is sent once when the crawl is being stopped from outside (the first
SIGTERM/SIGINT): whoever waits or transfers should give up promptly.
"""

request_leaving = object()
sync_stopping = object()
