"""The fault knobs and request counters of a running site, shared by its server threads."""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from fakesite import coding
from fakesite.datasets import HEADERS

KINDS = (
    "sign_in_get",
    "sign_in_post",
    "organisations",
    "runs",
    "run_details",
    "dashboard",
    "dataset",
    "subdivisions",
    "api",  # the JSON that script-built pages fetch (/admin/api/...)
    "other",
)
DATASET_KINDS = ("dataset", "subdivisions")
# How the session cookie's value changes (the contract allows each; see ``Faults``).
SESSION_COOKIE_MODES = ("new_at_sign_in", "kept", "every_answer")
# How dataset bodies are framed and coded (the contract allows each; see ``Faults``).
DATASET_TRANSFERS = ("length", "chunked")
COMPRESS_MODES = ("none", "gzip", "br")
# Markup changes FutureLearn may make (see ``Faults``), as pages.py renders them.
MARKUP_CHANGES = ("organisations_class", "runs_class", "date_cell", "datasets_class")
# How the run details page may write its dates (see ``Faults``), as pages.py renders them.
DATE_FORMS = ("long_month", "weekday", "month_first", "iso", "unreadable")


@dataclass
class Faults:
    """What the site does wrong, and how. Set attributes directly or through ``update``.

    Sessions (the contract's "Sign-in"), in any combination:

    - ``session_cookie``: how the value of ``_future_learn_session`` changes.
      ``"new_at_sign_in"``: a sign-in moves the session to a new value, the old one is
      forgotten (a guard against session fixation). ``"kept"``: a sign-in signs in the same
      session under the same value, with no Set-Cookie (a server-side session whose id is not
      rotated). ``"every_answer"``: a new value at sign-in, and a fresh one on every answer to
      a live session's request; all values of a session stay valid until it expires (a Rails
      cookie store re-encrypting the session).
    - ``expire_session_after``: /admin requests a session may make after signing in; the
      next one finds it expired (0: signed out right after every sign-in).
    - ``expiry_answer``: what an expired session gets on dataset URLs: a ``302`` to /sign-in,
      or the sign-in page with ``200`` (other /admin URLs always redirect).
    - ``expiry_cookie``: True: the expired session is dropped, all its values forgotten, and
      the expired answer carries a new signed-out session cookie (Devise's default). False:
      the session is signed out but kept under its value(s), and answers refused for being
      signed out carry no Set-Cookie; a sign-in on that cookie works again.

    Dataset answers (``dataset`` and ``subdivisions`` kinds; pages are not affected) as the
    CDN in front may send them (the contract's "Stats dashboard and datasets"), in any
    combination:

    - ``dataset_transfer``: ``"length"``: a ``Content-Length`` and the bare body.
      ``"chunked"``: ``Transfer-Encoding: chunked`` with no ``Content-Length``, the body in
      several chunks per file; the connection stays open after the last (zero) chunk.
    - ``weak_etag``: the ETag goes out as ``W/"..."`` (on the 304 too); a conditional request
      with the weak or the strong form matches all the same (weak comparison, RFC 9110).
    - ``compress``: ``"none"``, ``"gzip"`` or ``"br"``: the body is compressed with that
      ``Content-Encoding``, only for a request whose ``Accept-Encoding`` takes it (q-values
      read; ``identity`` alone or ``gzip;q=0`` means no), and then always sent chunked, as a
      CDN compressing on the fly does. Any value but ``"none"`` adds
      ``Vary: Accept-Encoding``. ``"br"`` needs the ``brotli`` package.

    ``truncate_next`` cuts a body of either framing short: a ``Content-Length`` answer stops
    at half the file, a chunked one before its last chunk; both then drop the connection.

    ``bot_wall`` (the contract's "In front of the site"; a site on HTTPS only: the control
    endpoint refuses it on plain HTTP, where it would do nothing): every request on a
    connection whose TLS ClientHello had no GREASE cipher suite, as no OpenSSL-based client's
    has, is answered ``403`` with Cloudflare's challenge page and ``cf-mitigated: challenge``
    (wall.py), before any latency, fault or session. ``/_fakesite/`` requests pass. Takes
    effect on connections already open, from their next request.

    Pages built by script (the contract's "Pages built by script"):

    - ``script_pages``: the runs listing and the stats dashboard arrive as a shell: an empty
      ``<tbody>`` (``<ul class="m-datasets">``) marked ``aria-busy="true"`` with a
      ``data-source`` URL under ``/admin/api/``, which the page's inline script fetches (with
      the session cookie and the page's CSRF token) and turns into the server-rendered markup
      before setting ``aria-busy="false"``. The JSON answers are ``/admin`` requests like any
      other (session expiry, faults) and are counted under the kind ``api``.
    - ``script_delay_ms``: how long after the page's ``load`` event the script starts, so that
      a client reading the page at ``load`` finds no rows.
    - ``script_error_next``: the next N JSON calls answer ``500``: the page ends with
      ``data-error`` and no rows.
    - ``script_never_next``: the next N shell pages never complete (their script does
      nothing, ``aria-busy`` stays ``"true"``).

    The script challenge (the contract's "In front of the site"; challenge.py), on HTTP or
    HTTPS, alone or behind ``bot_wall``: with ``script_challenge`` every request without a
    valid ``cf_clearance`` cookie, but the control ones and the challenge's own endpoint, gets
    a ``403`` "Just a moment..." page whose script earns the cookie. A clearance holds only
    for the ``User-Agent`` that earned it, for ``challenge_pass_seconds`` (counted from the
    pass, whatever the knob says later) and, if ``challenge_pass_requests`` is above 0, for
    that many requests (1: only the browser's own reload; a pass that does not hold).

    Changes beyond the contract, as FutureLearn has made them (server-rendered pages only; the
    script of ``script_pages`` still builds the contract's markup):

    - ``markup_change``: one page part in another form. ``"organisations_class"``: the
      organisations list is ``<ul class="m-org-index">``. ``"runs_class"``: the runs table is
      ``<table class="m-table m-table--course-runs">``. ``"date_cell"``: a run's start cell
      has no ``data-order``; it shows ``<time datetime="YYYY-MM-DD">Monday 8 January
      2024</time>`` (or ``Not set``). ``"datasets_class"``: the dashboard's list and links are
      ``<ul class="m-downloads">`` and ``<a class="m-downloads__link">``. None: as the contract.
    - ``extra_column``: a dataset name (as on the dashboard, or ``country-subdivisions``)
      whose files get one column more at the end, ``sentiment``; None: none.
    - ``date_form``: the run details page writes its dates in another form: ``"long_month"``
      (``9 September 2016``), ``"weekday"`` (``Monday 9 May 2016``), ``"month_first"``
      (``May 9, 2016``), ``"iso"`` (``2016-05-09``) or ``"unreadable"`` (``09/05/2016``,
      which no reader can tell from 5 September). None: ``D Mon YYYY``.
    - ``unlinked_dataset``: every started run's dashboard lists one more entry, a
      ``m-datasets__link`` with no ``href`` ("coming soon").
    - ``bad_run_number``: a course slug whose rows in the runs listing show ``n/a`` for the
      run number. None: none.
    - ``pagination_loop``: the runs listing's last page links on to its first as the next.
    - ``sign_in_action`` and ``sign_in_method``: the sign-in form's ``action`` (a path or a
      whole URL, e.g. another host's) and ``method``, as a compromised or broken page could
      have them. Defaults: ``/sign-in`` and ``post``.
    - ``foreign_links``: dataset name -> an origin (``http://host:port``) its dashboard link
      points to instead of the site's own (the path stays the same).
    - ``extra_datasets``: dataset names every started run's dashboard lists besides its own,
      each served as a CSV of its own (``metadata``: one shaped as flsync's metadata.csv,
      naming another university's course).

    A broken or hostile site (beyond the contract; issue 19), on pages and datasets alike:

    - ``bomb_path``: answers (200, or 304 to a conditional request) to paths matching this
      regular expression are a gzip bomb instead: ``Content-Encoding: gzip`` whatever the
      request accepts, a ``Content-Length``, and a valid gzip stream of ``bomb_mb`` MiB of
      spaces (2048: 2.1 MB sent). None: off.
    - ``trickle_path``: answers to paths matching this regular expression send their body
      (headers at once) at ``trickle_rate`` bytes a second, in pieces a tenth of a second
      apart (a byte at least). None: off.
    - ``dashboard_links``: every server-rendered stats dashboard lists this many more dataset
      links, ``extra_dataset_N`` (answered 404), after the run's own: a huge page.
    """

    session_cookie: str = "new_at_sign_in"  # or "kept", "every_answer"
    expire_session_after: int | None = None  # /admin requests a signed-in session may make
    expiry_answer: str = "redirect"  # or "html": 200 sign-in page on dataset URLs
    expiry_cookie: bool = True  # the expired answer carries a new, signed-out session cookie
    fail_with: int = 503  # a 4xx/5xx; 302: a redirect to the sign-in page; 307: to itself
    fail_next: int = 0
    fail_path: str = r"^/admin(/|$)"
    retry_after: str | None = None
    latency_ms: float = 0.0
    truncate_next: int = 0
    validators: bool = True
    generation: int = 1
    dataset_transfer: str = "length"  # or "chunked": Transfer-Encoding, no Content-Length
    weak_etag: bool = False  # ETag sent as W/"..."
    compress: str = "none"  # or "gzip", "br": when the request's Accept-Encoding takes it
    bot_wall: bool = False  # HTTPS: 403 challenge for connections without GREASE
    script_pages: bool = False  # runs listing and dashboard as shells filled by script
    script_delay_ms: float = 300.0  # the script starts this long after the load event
    script_error_next: int = 0  # the next N JSON calls answer 500
    script_never_next: int = 0  # the next N shell pages never complete
    script_challenge: bool = False  # 403 "Just a moment..." until a script earns cf_clearance
    challenge_pass_seconds: float = 1800.0  # how long a cf_clearance holds
    challenge_pass_requests: int = 0  # requests a cf_clearance holds for; 0: any number
    markup_change: str | None = None  # one of MARKUP_CHANGES
    extra_column: str | None = None  # a dataset whose files get a "sentiment" column
    date_form: str | None = None  # one of DATE_FORMS, on the run details page
    unlinked_dataset: bool = False  # a dataset entry with no href on every dashboard
    bad_run_number: str | None = None  # a course slug whose run numbers show as "n/a"
    extra_datasets: tuple[str, ...] = ()  # listed on every started run's dashboard too
    pagination_loop: bool = False  # the last runs page's next link goes to the first
    sign_in_action: str = "/sign-in"  # the sign-in form's action
    sign_in_method: str = "post"  # the sign-in form's method
    foreign_links: dict[str, str] = field(default_factory=dict)  # dataset -> another origin
    bomb_path: str | None = None  # regex: answers to these paths are a gzip bomb
    bomb_mb: int = 2048  # the bomb's size, decoded, in MiB
    trickle_path: str | None = None  # regex: answers to these paths trickle
    trickle_rate: float = 12.0  # bytes a second of a trickling body
    dashboard_links: int = 0  # more dataset links on every stats dashboard
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take_failure(self, path: str) -> int | None:
        """The status to fail this request with, counting it down, or None."""
        with self._lock:
            if self.fail_next > 0 and re.search(self.fail_path, path):
                self.fail_next -= 1
                return self.fail_with
        return None

    def bombs(self, path: str) -> bool:
        """Whether the answer to ``path`` is a gzip bomb (``bomb_path``)."""
        pattern = self.bomb_path
        return pattern is not None and re.search(pattern, path) is not None

    def trickles(self, path: str) -> bool:
        """Whether the answer to ``path`` trickles (``trickle_path``)."""
        pattern = self.trickle_path
        return pattern is not None and re.search(pattern, path) is not None

    def take_truncation(self) -> bool:
        return self._take("truncate_next")

    def take_script_error(self) -> bool:
        return self._take("script_error_next")

    def take_script_never(self) -> bool:
        return self._take("script_never_next")

    def _take(self, counter: str) -> bool:
        """Whether a ``..._next`` counter was above 0, counting it down if so."""
        with self._lock:
            left = getattr(self, counter)
            if left > 0:
                setattr(self, counter, left - 1)
                return True
        return False

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lock"}

    def update(self, values: dict[str, Any]) -> None:
        """Set knobs by name, checking every value first; ValueError names the bad one."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        for name, value in values.items():
            _check(name, value)
        with self._lock:
            for name, value in values.items():
                setattr(self, name, value)


def _check(name: str, value: Any) -> None:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v: Any) -> bool:
        return is_int(v) or isinstance(v, float)

    checks = {
        "session_cookie": lambda: value in SESSION_COOKIE_MODES,
        "expire_session_after": lambda: value is None or (is_int(value) and value >= 0),
        "expiry_answer": lambda: value in ("redirect", "html"),
        "expiry_cookie": lambda: isinstance(value, bool),
        "fail_with": lambda: is_int(value) and (400 <= value <= 599 or value in (302, 307)),
        "fail_next": lambda: is_int(value) and value >= 0,
        "fail_path": lambda: isinstance(value, str) and _compiles(value),
        "retry_after": lambda: value is None or isinstance(value, str),
        "latency_ms": lambda: is_number(value) and value >= 0,
        "truncate_next": lambda: is_int(value) and value >= 0,
        "validators": lambda: isinstance(value, bool),
        "generation": lambda: is_int(value) and value >= 1,
        "dataset_transfer": lambda: value in DATASET_TRANSFERS,
        "weak_etag": lambda: isinstance(value, bool),
        "compress": lambda: value in COMPRESS_MODES,
        "bot_wall": lambda: isinstance(value, bool),
        "script_pages": lambda: isinstance(value, bool),
        "script_delay_ms": lambda: is_number(value) and value >= 0,
        "script_error_next": lambda: is_int(value) and value >= 0,
        "script_never_next": lambda: is_int(value) and value >= 0,
        "script_challenge": lambda: isinstance(value, bool),
        "challenge_pass_seconds": lambda: is_number(value) and value > 0,
        "challenge_pass_requests": lambda: is_int(value) and value >= 0,
        "markup_change": lambda: value is None or value in MARKUP_CHANGES,
        "extra_column": lambda: value is None or value in HEADERS,
        "date_form": lambda: value is None or value in DATE_FORMS,
        "unlinked_dataset": lambda: isinstance(value, bool),
        "bad_run_number": lambda: value is None or isinstance(value, str),
        "pagination_loop": lambda: isinstance(value, bool),
        "sign_in_action": lambda: isinstance(value, str) and bool(value),
        "sign_in_method": lambda: value in ("post", "get"),
        "foreign_links": lambda: (
            isinstance(value, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        ),
        "extra_datasets": lambda: (
            isinstance(value, tuple)
            and all(isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", v) for v in value)
        ),
        "bomb_path": lambda: value is None or (isinstance(value, str) and _compiles(value)),
        "bomb_mb": lambda: is_int(value) and value >= 1,
        "trickle_path": lambda: value is None or (isinstance(value, str) and _compiles(value)),
        "trickle_rate": lambda: is_number(value) and value > 0,
        "dashboard_links": lambda: is_int(value) and value >= 0,
    }
    if name not in checks:
        raise ValueError(f"unknown knob {name!r}")
    if name == "compress" and value == "br" and not coding.brotli_available():
        raise ValueError("bad value for compress: 'br' needs the brotli package, not installed")
    if not checks[name]():
        raise ValueError(f"bad value for {name}: {value!r}")


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


class Stats:
    """Counters of the requests served (the control endpoints are not counted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._kinds: Counter[str] = Counter()
            self._statuses: Counter[int] = Counter()
            self._dataset_bytes = 0
            self._dataset_seconds = 0.0
            self._dataset_codings: Counter[str] = Counter()
            self._dataset_chunked = 0
            self._walled = 0
            self._challenged = 0
            self._passes = 0
            self._client_hellos: Counter[str] = Counter()
            self._log: list[tuple[str, str, int]] = []

    def record(self, method: str, path: str, kind: str, status: int) -> None:
        with self._lock:
            self._kinds[kind] += 1
            self._statuses[status] += 1
            self._log.append((method, path, status))

    def record_walled(self, method: str, path: str) -> None:
        """A request refused at the bot wall: in the log and statuses, in no kind."""
        with self._lock:
            self._walled += 1
            self._statuses[403] += 1
            self._log.append((method, path, 403))

    def record_challenged(self, method: str, path: str) -> None:
        """A request answered by the script challenge's 403: in the log and statuses only."""
        with self._lock:
            self._challenged += 1
            self._statuses[403] += 1
            self._log.append((method, path, 403))

    def record_solve(self, method: str, path: str, status: int) -> None:
        """An answer handed to the challenge's endpoint; a 200 is a pass (a cf_clearance)."""
        with self._lock:
            self._passes += status == 200
            self._statuses[status] += 1
            self._log.append((method, path, status))

    def add_client_hello(self, grease: bool | None) -> None:
        """An HTTPS connection's ClientHello: with GREASE, without, or None: none readable."""
        key = {True: "grease", False: "no_grease", None: "malformed"}[grease]
        with self._lock:
            self._client_hellos[key] += 1

    def add_dataset_seconds(self, seconds: float) -> None:
        """Time spent sending dataset bodies: TCP paces it at the client's reading speed."""
        with self._lock:
            self._dataset_seconds += seconds

    def add_dataset_bytes(self, count: int) -> None:
        """Body bytes of dataset and subdivision answers (negative: taken back, unsent).

        Counted as coded (compressed, if it was), without the framing of chunks.
        """
        with self._lock:
            self._dataset_bytes += count

    def add_dataset_answer(self, content_coding: str, chunked: bool) -> None:
        """A dataset or subdivision answer with a body (200): how it was coded and framed."""
        with self._lock:
            self._dataset_codings[content_coding] += 1
            self._dataset_chunked += chunked

    def snapshot(self) -> dict[str, Any]:
        """The counters; status keys are strings, as in the JSON of /_fakesite/stats."""
        with self._lock:
            return {
                "requests": len(self._log),
                "by_kind": {kind: self._kinds[kind] for kind in KINDS},
                "by_status": {str(s): n for s, n in sorted(self._statuses.items())},
                "dataset_bytes": self._dataset_bytes,
                "dataset_seconds": self._dataset_seconds,
                # 200 dataset answers by Content-Encoding (identity: none), and how many of
                # them were chunked.
                "dataset_codings": {c: self._dataset_codings[c] for c in coding.CODINGS},
                "dataset_chunked": self._dataset_chunked,
                "not_modified": self._statuses[304],
                # Requests answered by the bot wall's 403 (also in requests, by_status, log).
                "walled": self._walled,
                # Requests answered by the script challenge's 403, and the clearances earned
                # (the challenge's own endpoint is in the log and statuses too, in no kind).
                "challenged": self._challenged,
                "passes": self._passes,
                # HTTPS connections by their ClientHello (malformed: none came whole).
                "client_hellos": {
                    k: self._client_hellos[k] for k in ("grease", "no_grease", "malformed")
                },
                "log": list(self._log),
            }
