"""What the site answers to each request: sign-in, sessions, the admin pages and datasets.

Transport-free: ``App.handle`` takes a parsed ``Request`` and returns a ``Reply``; the server
module sends it.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import date
from email.message import Message
from email.utils import format_datetime, parsedate_to_datetime

from fakesite import api, coding, pages
from fakesite.control import DATASET_KINDS, Faults
from fakesite.data import ACCOUNTS, SUBDIVISIONS, Organisation, Run, SiteData
from fakesite.datasets import DatasetFile, DatasetStore

SESSION_COOKIE = "_future_learn_session"
SIGN_IN_PATH = "/sign-in"
_RUN = r"/admin/courses/(?P<course>[a-z0-9-]+)/(?P<run>[1-9][0-9]*)"
_ROUTES = (
    ("organisations", re.compile(r"/admin/organisations")),
    ("runs", re.compile(r"/admin/organisations/(?P<org>[^/]+)/runs")),
    ("run_details", re.compile(_RUN)),
    ("dashboard", re.compile(_RUN + r"/stats-dashboard")),
    ("dataset", re.compile(_RUN + r"/stats-dashboard/data/(?P<dataset>[^/]+)")),
    ("subdivisions", re.compile(_RUN + r"/demographics/countries/country-subdivisions-dataset")),
    # The JSON behind the pages built by script (api.py).
    ("api", re.compile(r"/admin/api/organisations/(?P<org>[^/]+)/runs")),
    ("api", re.compile(r"/admin/api" + _RUN.removeprefix("/admin") + "/datasets")),
)
_HTML = "text/html; charset=utf-8"
_TOKENS_KEPT = 100


@dataclass
class Request:
    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    headers: Message
    session_id: str | None
    form: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    file: DatasetFile | None = None  # streamed instead of body
    truncate: bool = False  # send about half of the file, then drop the connection
    # For a 304: the length the 200 would have had (RFC 9110 allows only that one).
    declared_length: int | None = None
    content_coding: str = coding.IDENTITY  # how the file is coded as sent (gzip, br)
    # Transfer-Encoding: chunked, no Content-Length (a 304 then has neither).
    chunked: bool = False

    @property
    def length(self) -> int:
        if self.declared_length is not None:
            return self.declared_length
        return self.file.size if self.file else len(self.body)


@dataclass(eq=False)  # compared by identity: the object is the session's internal id
class Session:
    # Authenticity tokens of the sign-in forms shown to this session and not yet used. Every
    # one stays valid (as in Rails), since concurrent requests may each be shown a form.
    tokens: list[str] = field(default_factory=list)
    email: str | None = None  # signed in as
    admin_requests: int = 0  # since the latest sign-in, whatever cookie value they carried
    # Every cookie value issued for the session and still valid: one, or under
    # "every_answer" one per answer. They are forgotten together when it is dropped.
    cookies: list[str] = field(default_factory=list)
    # Forgotten: a request that looked it up before may still hold it, and must not use it.
    dropped: bool = False
    # What pages built by script show in <meta name="csrf-token"> and their JSON calls send
    # back; one per session, renewed at sign-in (as Rails keeps it in the session).
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))


def route(method: str, path: str) -> tuple[str, dict[str, str]]:
    """The request's kind (as counted in the stats) and the parameters of its path."""
    if path == SIGN_IN_PATH:
        return ("sign_in_post" if method == "POST" else "sign_in_get"), {}
    for kind, pattern in _ROUTES:
        match = pattern.fullmatch(path)
        if match:
            return kind, match.groupdict()
    return "other", {}


class App:
    def __init__(self, data: SiteData, faults: Faults) -> None:
        self.data = data
        self.faults = faults
        self.files = DatasetStore(data)
        # Cookie value -> session. Several values can name one session ("every_answer").
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def forget_sessions(self) -> None:
        with self._lock:
            self._sessions.clear()

    def handle(self, request: Request) -> Reply:
        failure = self.faults.take_failure(request.path)
        if failure:
            # A fault stands for an answer from in front of the app (a proxy, a load
            # balancer), which does not touch the session: no cookie in any mode.
            return self._failure(failure, request.path)
        reply = self._route(request)
        if reply.status in (200, 304) and self.faults.bombs(request.path):
            reply = self._bomb(request)
        if self.faults.session_cookie == "every_answer":
            self._reissue_cookie(request, reply)
        return reply

    def _route(self, request: Request) -> Reply:
        kind, params = route(request.method, request.path)
        if _is_admin(request.path):
            if request.method not in ("GET", "HEAD"):
                return _html(405, pages.error_page(405, "Method not allowed"))
            return self._admin(request, kind, params)
        if kind == "sign_in_post":
            return self._sign_in(request)
        if request.method not in ("GET", "HEAD"):
            return _html(405, pages.error_page(405, "Method not allowed"))
        if kind == "sign_in_get":
            return self._sign_in_form(request)
        if request.path == "/your-courses":
            session = self._session(request.session_id)
            if session is None or session.email is None:
                return _redirect(SIGN_IN_PATH)
            return _html(200, pages.your_courses_page(session.email))
        if request.path == "/":
            return _html(200, pages.home_page())
        return _not_found()

    # Sign-in

    def _sign_in_form(self, request: Request, *, failed: bool = False, email: str = "") -> Reply:
        session_id, session = self._session_or_new(request.session_id)
        token = secrets.token_urlsafe(32)
        with self._lock:
            session.tokens = [*session.tokens[1 - _TOKENS_KEPT :], token]
        page = pages.sign_in_page(
            token,
            failed=failed,
            email=email,
            action=self.faults.sign_in_action,
            method=self.faults.sign_in_method,
        )
        reply = _html(200, page)
        if session_id != request.session_id:
            reply.headers.append(_set_cookie(session_id))
        return reply

    def _sign_in(self, request: Request) -> Reply:
        session = self._session(request.session_id)
        token = _field(request.form, "authenticity_token")
        if session is None or not self._use_token(session, token):
            return _rejected()
        if _field(request.form, "utf8") != "✓":
            return _rejected()
        email = _field(request.form, "email").strip().lower()
        if ACCOUNTS.get(email) != _field(request.form, "password"):
            return self._sign_in_form(request, failed=True, email=email)
        reply = _redirect("/your-courses")
        with self._lock:
            if self.faults.session_cookie == "kept" and not session.dropped:
                # A server-side session whose id is not rotated: same value, no Set-Cookie.
                # The forms shown before go stale all the same (Devise renews the CSRF token
                # on sign-in), and the budget of /admin requests starts again.
                session.email, session.admin_requests = email, 0
                session.tokens.clear()
                session.csrf_token = secrets.token_urlsafe(32)
                return reply
            # A new session (and value) on sign-in, as a site does against session fixation;
            # every value of the signed-out one is forgotten.
            self._drop(session)
            session_id, _ = self._new_session(email)
        reply.headers.append(_set_cookie(session_id))
        return reply

    def _use_token(self, session: Session, token: str) -> bool:
        """Whether ``token`` was issued to the session and is unused; it serves once."""
        with self._lock:
            for issued in session.tokens:
                if secrets.compare_digest(token.encode(), issued.encode()):
                    session.tokens.remove(issued)
                    return True
        return False

    # Sessions. _new_session, _issue_cookie, _drop and _expire need self._lock held.

    def _session(self, session_id: str | None) -> Session | None:
        with self._lock:
            return self._sessions.get(session_id or "")

    def _session_or_new(self, session_id: str | None) -> tuple[str, Session]:
        with self._lock:
            known = self._sessions.get(session_id or "")
            if session_id and known is not None:
                return session_id, known
            return self._new_session()

    def _new_session(self, email: str | None = None) -> tuple[str, Session]:
        session = Session(email=email)
        return self._issue_cookie(session), session

    def _issue_cookie(self, session: Session) -> str:
        """A new cookie value for the session; the ones issued before stay valid."""
        session_id = secrets.token_urlsafe(32)
        session.cookies.append(session_id)
        self._sessions[session_id] = session
        return session_id

    def _drop(self, session: Session) -> None:
        """Forget the session: all its values at once, its tokens, who it was signed in as."""
        for session_id in session.cookies:
            self._sessions.pop(session_id, None)
        session.cookies.clear()
        session.tokens.clear()
        session.email = None
        session.dropped = True

    def _reissue_cookie(self, request: Request, reply: Reply) -> None:
        """Under "every_answer": a fresh value for a live session on each of its answers.

        As a Rails cookie store re-encrypts the session into every answer that touches it;
        an answer that already sets the cookie (a sign-in, a new session) keeps its own.
        """
        if any(_is_session_cookie(header) for header in reply.headers):
            return
        with self._lock:
            session = self._sessions.get(request.session_id or "")
            if session is None:
                return
            if _is_admin(request.path) and session.email is None and not self.faults.expiry_cookie:
                return  # refused as signed out: such answers leave the cookie alone
            reply.headers.append(_set_cookie(self._issue_cookie(session)))

    # Admin area

    def _admin(self, request: Request, kind: str, params: dict[str, str]) -> Reply:
        session = self._session(request.session_id)
        email = self._spend(session) if session is not None else None
        if kind == "api":
            return self._api(request, session, email, params)
        if session is None or email is None:
            return self._signed_out(request, kind)
        administered = self.data.administered_by(email)
        if not administered:
            return _forbidden()
        if kind == "organisations":
            organisations = [o for o in self.data.organisations if o.slug in administered]
            change = self.faults.markup_change
            return _html(200, pages.organisations_page(organisations, email, change))
        if kind == "runs":
            return self._runs(request, session, params["org"], administered, email)
        if kind == "other":
            return _not_found(email)
        run = self.data.run(params["course"], int(params["run"]))
        if run is None:
            return _not_found(email)
        if run.organisation_slug not in administered:
            return _forbidden()
        return self._run_page(request, kind, run, params, session=session, email=email)

    def _spend(self, session: Session) -> str | None:
        """Count an /admin request against the session: who it is signed in as, or None.

        None also once it is signed out, dropped or expired, perhaps by another request
        since this one looked it up (hence the check under the lock).
        """
        limit = self.faults.expire_session_after
        with self._lock:
            if session.email is None:
                return None
            if limit is not None and session.admin_requests >= limit:
                self._expire(session)
                return None
            session.admin_requests += 1
            return session.email

    def _expire(self, session: Session) -> None:
        """End the session's signed-in life, as ``expiry_cookie`` says (lock held)."""
        if self.faults.expiry_cookie:
            # The server drops the session: its values and tokens go with it, and a page
            # shown to one of its values starts a new anonymous session (with a new cookie).
            self._drop(session)
            return
        # Signed out but kept: the same values now name an anonymous session, whose forms
        # shown while signed in are stale; a sign-in on it works as on any session.
        session.email = None
        session.tokens.clear()

    def _signed_out(self, request: Request, kind: str) -> Reply:
        if kind in DATASET_KINDS and self.faults.expiry_answer == "html":
            return self._sign_in_form(request)
        # Like Devise, which keeps the page asked for in the session: an unknown (dropped)
        # value gets a new anonymous session (and cookie) with the redirect; a known one
        # keeps its session, and the redirect sets no cookie.
        reply = _redirect(SIGN_IN_PATH)
        if request.session_id:
            session_id, _ = self._session_or_new(request.session_id)
            if session_id != request.session_id:
                reply.headers.append(_set_cookie(session_id))
        return reply

    def _runs(
        self,
        request: Request,
        session: Session,
        slug: str,
        administered: tuple[str, ...],
        email: str,
    ) -> Reply:
        organisation = self.data.organisation(slug)
        if organisation is None:
            return _not_found(email)
        if slug not in administered:
            return _forbidden()
        page = _page_number(request, organisation)
        if page is None:
            return _not_found(email)
        shell = self._shell(session, api.runs_source(slug, page))
        page_html = pages.runs_page(
            organisation,
            page,
            date.today(),
            email,
            shell,
            change=self.faults.markup_change,
            bad_run_number=self.faults.bad_run_number,
            pagination_loop=self.faults.pagination_loop,
        )
        return _html(200, page_html)

    def _run_page(
        self,
        request: Request,
        kind: str,
        run: Run,
        params: dict[str, str],
        *,
        session: Session,
        email: str,
    ) -> Reply:
        organisation = self.data.organisation(run.organisation_slug)
        assert organisation is not None
        started = run.started_on(date.today())
        if kind == "run_details":
            form = self.faults.date_form
            return _html(200, pages.run_details_page(run, organisation, date.today(), email, form))
        extra = self.faults.extra_datasets
        if kind == "dashboard":
            shell = self._shell(session, api.datasets_source(run))
            page = pages.dashboard_page(
                run,
                organisation,
                started,
                email,
                shell,
                change=self.faults.markup_change,
                extra=extra,
                unlinked=self.faults.unlinked_dataset,
                foreign=self.faults.foreign_links,
                extra_links=self.faults.dashboard_links,
            )
            return _html(200, page)
        dataset = params.get("dataset", SUBDIVISIONS)
        if not started or (kind == "dataset" and dataset not in (*run.datasets, *extra)):
            return _not_found(email)
        return self._csv(request, run, dataset)

    # Pages built by script

    def _shell(self, session: Session, source: str) -> pages.Shell | None:
        """How a page that may be built by script arrives: a shell, or None (rendered)."""
        if not self.faults.script_pages:
            return None
        return pages.Shell(
            source=source,
            csrf_token=session.csrf_token,
            delay_ms=self.faults.script_delay_ms,
            stalled=self.faults.take_script_never(),
        )

    def _api(
        self, request: Request, session: Session | None, email: str | None, params: dict[str, str]
    ) -> Reply:
        """The JSON a shell's script fetches: its page's data, for the page's session only.

        Spent against the session like any /admin request. Errors come as JSON statuses, not
        as the pages' redirects: a script cannot show a sign-in page in a table.
        """
        if self.faults.take_script_error():
            return _json(500, {"error": "Internal server error"})
        if session is None or email is None:
            # What Devise answers a request that is not a page view (XHR, JSON).
            return _json(401, {"error": "You need to sign in before continuing."})
        token = request.headers.get("X-CSRF-Token", "")
        if not secrets.compare_digest(token.encode(), session.csrf_token.encode()):
            return _json(422, {"error": "Invalid authenticity token."})
        administered = self.data.administered_by(email)
        if "org" in params:
            organisation = self.data.organisation(params["org"])
            if organisation is None:
                return _json_not_found()
            if organisation.slug not in administered:
                return _json_forbidden()
            page = _page_number(request, organisation)
            if page is None:
                return _json_not_found()
            return _json(200, api.runs_json(organisation, page, date.today()))
        run = self.data.run(params["course"], int(params["run"]))
        if run is None:
            return _json_not_found()
        if run.organisation_slug not in administered:
            return _json_forbidden()
        return _json(200, api.datasets_json(run, run.started_on(date.today())))

    # Datasets

    def _csv(self, request: Request, run: Run, dataset: str) -> Reply:
        if dataset in self.faults.extra_datasets and dataset not in run.datasets:
            file = extra_dataset_file(run, dataset, self.faults.generation)
        else:
            file = self.files.get(
                run, dataset, self.faults.generation, dataset == self.faults.extra_column
            )
        filename = f"{run.course_slug}-{run.number}_{dataset.replace('_', '-')}.csv"
        etag = f"W/{file.etag}" if self.faults.weak_etag else file.etag
        validators = [
            ("ETag", etag),
            ("Last-Modified", format_datetime(file.last_modified, usegmt=True)),
        ]
        content_coding, chunked, cdn_headers = self._cdn(request)
        if self.faults.validators and _not_modified(request.headers, file):
            return Reply(
                304,
                [("Cache-Control", "private"), *validators, *cdn_headers],
                declared_length=file.size,
                chunked=chunked,
            )
        headers = [
            ("Content-Type", "text/csv; charset=utf-8"),
            ("Content-Disposition", f'attachment; filename="{filename}"'),
            ("Cache-Control", "private"),
            *(validators if self.faults.validators else []),
            *cdn_headers,
        ]
        if content_coding != coding.IDENTITY:
            headers.append(("Content-Encoding", content_coding))
        truncate = request.method == "GET" and self.faults.take_truncation()
        return Reply(
            200,
            headers,
            file=file,
            truncate=truncate,
            content_coding=content_coding,
            chunked=chunked,
        )

    def _cdn(self, request: Request) -> tuple[str, bool, list[tuple[str, str]]]:
        """What the CDN makes of a dataset answer: its coding, whether it is chunked, and
        the headers of a compressing CDN (on a 304 too, which must say what the 200 would)."""
        compress = self.faults.compress
        if compress == "none":
            return coding.IDENTITY, self.faults.dataset_transfer == "chunked", []
        accept_encoding = request.headers.get_all("Accept-Encoding")
        header = None if accept_encoding is None else ", ".join(accept_encoding)
        content_coding = compress if coding.accepts(header, compress) else coding.IDENTITY
        # Compressing on the fly, a CDN cannot know the length before the end: chunked.
        chunked = content_coding != coding.IDENTITY or self.faults.dataset_transfer == "chunked"
        return content_coding, chunked, [("Vary", "Accept-Encoding")]

    def _bomb(self, request: Request) -> Reply:
        """A gzip bomb (Faults.bomb_path), sent whatever the request accepts or already has,
        as a broken or hostile server would."""
        kind, _ = route(request.method, request.path)
        content_type = "text/csv; charset=utf-8" if kind in DATASET_KINDS else _HTML
        headers = [("Content-Type", content_type), ("Content-Encoding", "gzip")]
        return Reply(200, headers, coding.gzip_bomb(self.faults.bomb_mb), content_coding="gzip")

    def _failure(self, status: int, path: str) -> Reply:
        if status == 302:  # what an expired session gets, whatever its cookie
            return _redirect(SIGN_IN_PATH)
        if status == 307:  # to where it was asked: a loop while the fault lasts
            reply = _redirect(path)
            return Reply(307, reply.headers, reply.body)
        message = "Too many requests" if status == 429 else "Service unavailable"
        reply = _html(status, pages.error_page(status, message))
        if self.faults.retry_after is not None:
            reply.headers.append(("Retry-After", self.faults.retry_after))
        return reply


def extra_dataset_file(run: Run, dataset: str, generation: int) -> DatasetFile:
    """A file of a dataset listed by ``Faults.extra_datasets``: one naming the dataset and the
    run, or, for ``metadata``, a metadata.csv naming another university's course."""
    if dataset == "metadata":
        rows = [
            "uni_name,course_name,run,start_date,end_date,duration_weeks",
            "Another University,Someone Else's Course,1,2020-01-06,2020-02-03,4",
        ]
    else:
        rows = ["dataset,course,run", f"{dataset},{run.course_slug},{run.number}"]
    return DatasetFile(("\n".join(rows) + "\n").encode(), generation)


def _page_number(request: Request, organisation: Organisation) -> int | None:
    """The runs page asked for (``?page=N``, default 1), or None if it has no such page."""
    text = request.query.get("page", ["1"])[-1]
    page = int(text) if text.isdigit() else 0
    return page if 1 <= page <= organisation.page_count() else None


def _not_modified(headers: Message, file: DatasetFile) -> bool:
    """RFC 9110 13.2.2: If-None-Match decides when present, else If-Modified-Since.

    If-None-Match uses the weak comparison (13.1.2): ``W/"x"`` and ``"x"`` both match the
    file's ``"x"``, whichever form the answer's ETag took.
    """
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return "*" in tags or file.etag in tags
    if_modified_since = headers.get("If-Modified-Since")
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        return since.tzinfo is not None and file.last_modified <= since
    return False


def _is_admin(path: str) -> bool:
    return path.startswith("/admin/") or path == "/admin"


def _field(form: dict[str, list[str]], name: str) -> str:
    return form.get(name, [""])[-1]


def _set_cookie(session_id: str) -> tuple[str, str]:
    return ("Set-Cookie", f"{SESSION_COOKIE}={session_id}; path=/; HttpOnly; SameSite=Lax")


def _is_session_cookie(header: tuple[str, str]) -> bool:
    name, value = header
    return name.lower() == "set-cookie" and value.startswith(SESSION_COOKIE + "=")


def _html(status: int, body: bytes) -> Reply:
    return Reply(
        status,
        [("Content-Type", _HTML), ("Cache-Control", "max-age=0, private, must-revalidate")],
        body,
    )


def _json(status: int, value: object) -> Reply:
    body = json.dumps(value, ensure_ascii=False).encode()
    headers = [("Content-Type", "application/json; charset=utf-8"), ("Cache-Control", "no-store")]
    return Reply(status, headers, body)


def _json_not_found() -> Reply:
    return _json(404, {"error": "Not found."})


def _json_forbidden() -> Reply:
    return _json(403, {"error": "You are not allowed to see this."})


def _redirect(location: str) -> Reply:
    reply = _html(302, pages.redirect_page(location))
    reply.headers.append(("Location", location))
    return reply


def _rejected() -> Reply:
    return _html(422, pages.error_page(422, "The change you wanted was rejected."))


def _forbidden() -> Reply:
    return _html(403, pages.error_page(403, "You are not allowed to see this page."))


def _not_found(email: str | None = None) -> Reply:
    return _html(404, pages.error_page(404, "The page you were looking for doesn't exist.", email))
