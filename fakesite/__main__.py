"""Serve the imitation site until SIGINT or SIGTERM: ``python -m fakesite --port 0``.

With ``--https`` a second line gives the CA file that clients must trust.
"""

from __future__ import annotations

import argparse
import signal
import threading

from fakesite import ADMIN_EMAIL, ADMIN_PASSWORD, FakeSite, SiteOptions
from fakesite.control import (
    COMPRESS_MODES,
    DATASET_TRANSFERS,
    MARKUP_CHANGES,
    SESSION_COOKIE_MODES,
)
from fakesite.tls import CERTIFICATES


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    options = SiteOptions(
        organisations=args.organisations,
        courses=args.courses,
        runs=args.runs,
        rows=args.rows,
        big_file_mb=args.big_file_mb,
        tricky=not args.no_tricky,
        seed=args.seed,
    )
    try:
        site = FakeSite(
            options,
            host=args.host,
            port=args.port,
            log_requests=args.log_requests,
            https=args.https,
            certificate=args.certificate,
            tls_dir=args.tls_dir,
            bot_wall=args.bot_wall,
        )
        site.faults.update(
            {
                "latency_ms": args.latency_ms,
                "validators": not args.no_validators,
                "session_cookie": args.session_cookie,
                "expire_session_after": args.expire_session_after,
                "expiry_answer": args.expiry_answer,
                "expiry_cookie": not args.no_expiry_cookie,
                "dataset_transfer": args.dataset_transfer,
                "weak_etag": args.weak_etag,
                "compress": args.compress,
                "script_pages": args.script_pages,
                "script_delay_ms": args.script_delay_ms,
                "script_challenge": args.script_challenge,
                "challenge_pass_seconds": args.challenge_pass_seconds,
                "markup_change": args.markup_change,
                "extra_column": args.extra_column,
            }
        )
    except ValueError as error:
        parser.error(str(error))
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    with site:
        print(
            f"FakeSite serving {site.base_url} (sign in as {ADMIN_EMAIL} / {ADMIN_PASSWORD})",
            flush=True,
        )
        if site.https:
            print(f"CA certificate: {site.ca_file}", flush=True)
        while not stopping.wait(0.5):
            pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fakesite", description=__doc__)
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--organisations", type=int, default=2)
    parser.add_argument("--courses", type=int, default=3, help="per organisation")
    parser.add_argument("--runs", type=int, default=3, help="per course")
    parser.add_argument("--rows", type=int, default=12, help="per dataset file")
    parser.add_argument(
        "--big-file-mb",
        type=float,
        default=0,
        help="size in MiB of the first run's step_activity file (0: off)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay of every answer")
    parser.add_argument("--no-validators", action="store_true", help="no ETag/Last-Modified")
    # Sessions: see Faults (control.py).
    parser.add_argument(
        "--session-cookie",
        choices=SESSION_COOKIE_MODES,
        default="new_at_sign_in",
        help="when the session cookie takes a new value",
    )
    parser.add_argument(
        "--expire-session-after",
        type=int,
        metavar="N",
        help="/admin requests a session may make per sign-in (0: none; default: no limit)",
    )
    parser.add_argument(
        "--expiry-answer",
        choices=("redirect", "html"),
        default="redirect",
        help="an expired session on dataset URLs: 302 to /sign-in, or the sign-in page (200)",
    )
    parser.add_argument(
        "--no-expiry-cookie",
        action="store_true",
        help="keep an expired session's cookie (signed out) instead of a new one",
    )
    # Dataset answers as the CDN may send them: see Faults (control.py).
    parser.add_argument(
        "--dataset-transfer",
        choices=DATASET_TRANSFERS,
        default="length",
        help="dataset bodies with a Content-Length, or chunked without one",
    )
    parser.add_argument("--weak-etag", action="store_true", help='dataset ETags as W/"..."')
    parser.add_argument(
        "--compress",
        choices=COMPRESS_MODES,
        default="none",
        help="compress dataset bodies for requests that accept it (br needs brotli)",
    )
    # In front of the site: see FakeSite (server.py) and wall.py.
    parser.add_argument("--https", action="store_true", help="serve over TLS with a test CA")
    parser.add_argument(
        "--certificate",
        choices=CERTIFICATES,
        default="good",
        help="the server certificate (--https): valid, expired, or for another host",
    )
    parser.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="write the CA, certificate and key here (--https; default: a temporary folder)",
    )
    parser.add_argument(
        "--bot-wall",
        action="store_true",
        help="(--https) answer 403 challenges to TLS clients that send no GREASE, as no "
        "OpenSSL-based one does",
    )
    parser.add_argument(
        "--script-challenge",
        action="store_true",
        help="answer 403 'Just a moment...' pages whose script earns a cf_clearance cookie "
        "(HTTP or HTTPS; with --bot-wall, behind the wall)",
    )
    parser.add_argument(
        "--challenge-pass-seconds",
        type=float,
        default=1800.0,
        metavar="S",
        help="how long a cf_clearance holds (--script-challenge)",
    )
    # Pages built by script: see Faults (control.py) and pages.py.
    parser.add_argument(
        "--script-pages",
        action="store_true",
        help="serve the runs listing and the stats dashboard as shells that a script fills",
    )
    parser.add_argument(
        "--script-delay-ms",
        type=float,
        default=300.0,
        metavar="MS",
        help="how long after the load event the script of a shell page starts",
    )
    # Changes FutureLearn may make: see Faults (control.py).
    parser.add_argument(
        "--markup-change",
        choices=MARKUP_CHANGES,
        help="render one part of the pages in another form (server-rendered pages only)",
    )
    parser.add_argument(
        "--extra-column",
        metavar="DATASET",
        help="give that dataset's files one column more (sentiment)",
    )
    parser.add_argument("--no-tricky", action="store_true", help="leave out the edge cases")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-requests", action="store_true", help="log each request")
    return parser


if __name__ == "__main__":
    main()
