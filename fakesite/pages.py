"""HTML of each page, per the site model, inside the chrome a real page carries.

The chrome (head scripts, site header with a search form, breadcrumbs, footer, cookie banner)
is there so that parsers meet the noise of a real page. Every text is escaped.

``change`` (``Faults.markup_change``) renders one part in another form, as FutureLearn has
changed its markup before: see ``Faults`` for each value.

The runs listing and the stats dashboard can also come as a ``Shell`` (the contract's "Pages
built by script"): the same page with its table body or list left empty, for an inline script
(``SHELL_SCRIPT``) to fill from the JSON of api.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from html import escape

from fakesite.data import RUNS_PER_PAGE, Organisation, Run

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_STATUS_LABELS = {"upcoming": "Upcoming", "in-progress": "In progress", "finished": "Finished"}
_DATASET_LABELS = {"question_response": "Question responses", "step_activity": "Step activity"}


@dataclass(frozen=True)
class Shell:
    """A page that arrives without its data, for its script to fill in the browser."""

    source: str  # the path of its JSON (``data-source``)
    csrf_token: str  # the session's, for ``<meta name="csrf-token">``
    delay_ms: float  # the script starts this long after the ``load`` event
    stalled: bool  # the script never completes the page


def format_date(day: date, form: str | None = None) -> str:
    """``D Mon YYYY``, e.g. ``9 May 2016``; or in another form (``Faults.date_form``)."""
    forms = {
        None: f"{day.day} {_MONTHS[day.month - 1]} {day.year}",
        "long_month": f"{day.day} {day:%B %Y}",
        "weekday": f"{day:%A} {day.day} {_MONTHS[day.month - 1]} {day.year}",
        "month_first": f"{day:%B} {day.day}, {day.year}",
        "iso": day.isoformat(),
        "unreadable": f"{day:%d/%m/%Y}",
    }
    return forms[form]


def dataset_label(name: str) -> str:
    return _DATASET_LABELS.get(name) or name.replace("_", " ").capitalize()


def sign_in_page(
    token: str,
    *,
    failed: bool = False,
    email: str = "",
    action: str = "/sign-in",
    method: str = "post",
) -> bytes:
    flash = (
        '<div class="m-flash m-flash--error">Invalid email or password.</div>\n' if failed else ""
    )
    main = f"""<div class="m-sign-in">
<h1 class="m-sign-in__title">Sign in to FutureLearn</h1>
{flash}<form class="m-form" id="new_user" action="{_e(action)}" accept-charset="UTF-8" method="{method}">
<input name="utf8" type="hidden" value="&#x2713;">
<input type="hidden" name="authenticity_token" value="{_e(token)}">
<div class="m-form__field">
<label for="user_email">Email address</label>
<input type="email" name="email" id="user_email" value="{_e(email)}" autocomplete="email" required>
</div>
<div class="m-form__field">
<label for="user_password">Password</label>
<input type="password" name="password" id="user_password" autocomplete="current-password" required>
</div>
<div class="m-form__field m-form__field--checkbox">
<input name="remember_me" type="hidden" value="0">
<input type="checkbox" value="1" name="remember_me" id="user_remember_me">
<label for="user_remember_me">Remember me</label>
</div>
<input type="submit" name="commit" value="Sign in" class="a-button a-button--primary" data-disable-with="Signing in&hellip;">
</form>
<p class="m-sign-in__links"><a href="/forgot-password">Forgotten your password?</a>
&middot; <a href="/register">Register</a></p>
</div>"""  # noqa: E501
    return _layout("Sign in", main, user=None, csrf_token=token)


def your_courses_page(email: str) -> bytes:
    main = """<h1 class="m-action-bar__title">Your courses</h1>
<p class="m-empty-state">You have no courses in progress.</p>
<p><a href="/admin/organisations">Go to the admin area</a></p>"""
    return _layout("Your courses", main, user=email)


def home_page() -> bytes:
    main = """<h1 class="m-hero__title">Learn without limits</h1>
<p>Online courses from top universities and specialist organisations.</p>
<p><a class="a-button" href="/sign-in">Sign in</a></p>"""
    return _layout("Online courses", main, user=None)


def organisations_page(
    organisations: list[Organisation], email: str, change: str | None = None
) -> bytes:
    items = "\n".join(
        f'<li><a href="/admin/organisations/{_e(o.slug)}/runs">{_e(o.name)}</a></li>'
        for o in organisations
    )
    main = f"""<div class="m-action-bar"><h1 class="m-action-bar__title">Organisations</h1></div>
<p class="m-intro">Choose an organisation to see its course runs.</p>
<ul class="{"m-org-index" if change == "organisations_class" else "m-organisation-list"}">
{items}
</ul>"""
    return _layout("Organisations", main, user=email)


def runs_page(
    organisation: Organisation,
    page: int,
    today: date,
    email: str,
    shell: Shell | None = None,
    *,
    change: str | None = None,
    bad_run_number: str | None = None,
    pagination_loop: bool = False,
) -> bytes:
    runs = organisation.runs_page(page)
    first = (page - 1) * RUNS_PER_PAGE + 1
    table_class = "m-table--course-runs" if change == "runs_class" else "m-table--runs"
    if shell is None:
        rows = "\n".join(_run_row(run, today, change, bad_run_number) for run in runs)
        rows = f"\n{rows}\n"
        after_table = _pagination(organisation, page, pagination_loop)
    else:
        rows, after_table = "", _shell_script(shell)
    main = f"""{_breadcrumbs([("Organisations", "/admin/organisations")])}
<div class="m-action-bar">
<h1 class="m-action-bar__title">{_e(organisation.name)}</h1>
<a class="a-button a-button--secondary" href="/admin/organisations/{_e(organisation.slug)}/courses">Courses</a>
</div>
<p class="m-results-summary">Showing runs {first}&ndash;{first + len(runs) - 1} of {len(organisation.runs)}</p>
<table class="m-table {table_class}"{_busy(shell)}>
<thead><tr><th scope="col">Course</th><th scope="col">Run</th><th scope="col">Start date</th>
<th scope="col">Status</th><th scope="col"><span class="u-visually-hidden">Links</span></th></tr></thead>
<tbody>{rows}</tbody>
</table>
{after_table}"""  # noqa: E501
    return _layout(f"Runs: {organisation.name}", main, user=email, csrf_token=_token(shell))


def run_details_page(
    run: Run, organisation: Organisation, today: date, email: str, date_form: str | None = None
) -> bytes:
    base = _run_path(run)
    start = format_date(run.start_date, date_form) if run.start_date else "Not set"
    end = (
        f"<dt>End date</dt><dd>{format_date(run.explicit_end_date, date_form)}</dd>\n"
        if run.explicit_end_date
        else ""
    )
    main = f"""{_breadcrumbs(_run_crumbs(organisation))}
<div class="m-action-bar">
<h1 class="m-action-bar__title">{_e(run.course_title)}</h1>
<p class="m-action-bar__subtitle">Run {run.number}</p>
</div>
<dl class="m-metadata">
<dt>Course</dt><dd>{_e(run.course_title)}</dd>
<dt>Run</dt><dd>{run.number}</dd>
<dt>Start date</dt><dd>{start}</dd>
<dt>Duration</dt><dd>{run.duration_weeks} weeks</dd>
{end}<dt>Status</dt><dd>{_status_flags(run, today)}</dd>
<dt>Enrolment</dt><dd>{"Invite-only" if run.invite_only else "Open to everyone"}</dd>
</dl>
<ul class="m-run-actions">
<li><a href="{base}/stats-dashboard">View stats</a></li>
<li><a href="/courses/{_e(run.course_slug)}/{run.number}">View course as a learner</a></li>
</ul>"""
    return _layout(f"{run.course_title} - Run {run.number}", main, user=email)


def dashboard_page(
    run: Run,
    organisation: Organisation,
    started: bool,
    email: str,
    shell: Shell | None = None,
    *,
    change: str | None = None,
    extra: tuple[str, ...] = (),
    unlinked: bool = False,
    foreign: dict[str, str] | None = None,
    extra_links: int = 0,
) -> bytes:
    """``extra_links``: as many more links, to datasets ``extra_dataset_N`` (a huge page)."""
    base = _run_path(run)
    block = "m-downloads" if change == "datasets_class" else "m-datasets"
    names = [
        *((*run.datasets, *extra) if started else ()),
        *(f"extra_dataset_{n}" for n in range(extra_links)),
    ]
    entries = [
        f'<li><a class="{block}__link" href="{_e((foreign or {}).get(name, ""))}'
        f'{base}/stats-dashboard/data/{_e(name)}">'
        f"{_e(dataset_label(name))}</a></li>"
        for name in names
    ]
    if started and unlinked:
        entries.append(f'<li><a class="{block}__link">Learner outcomes (coming soon)</a></li>')
    items = "\n".join(entries)
    items = "" if shell is not None else f"\n{items}\n"
    script = "" if shell is None else "\n" + _shell_script(shell)
    note = (
        "Datasets are updated every day at about 3am UTC."
        if started
        else "Datasets will be available once the run has started."
    )
    main = f"""{_breadcrumbs([*_run_crumbs(organisation), (f"Run {run.number}", base)])}
<div class="m-action-bar">
<h1 class="m-action-bar__title">Stats dashboard</h1>
<p class="m-action-bar__subtitle">{_e(run.course_title)} &ndash; run {run.number}</p>
</div>
<section class="m-stats-downloads">
<h2>Download datasets</h2>
<p class="m-stats-downloads__note">{note}</p>
<ul class="{block}"{_busy(shell)}>{items}</ul>
</section>{script}"""
    return _layout(
        f"Stats dashboard: {run.course_title}", main, user=email, csrf_token=_token(shell)
    )


def error_page(status: int, message: str, email: str | None = None) -> bytes:
    main = f"""<div class="m-error-page">
<h1 class="m-error-page__title">{status}</h1>
<p>{_e(message)}</p>
<p><a href="/">Go to the home page</a></p>
</div>"""
    return _layout(message, main, user=email)


def redirect_page(location: str) -> bytes:
    return (
        f'<html><body>You are being <a href="{_e(location)}">redirected</a>.</body></html>'
    ).encode()


def _e(text: str) -> str:
    return escape(text, quote=True)


def _run_path(run: Run) -> str:
    return f"/admin/courses/{_e(run.course_slug)}/{run.number}"


def _run_row(run: Run, today: date, change: str | None, bad_run_number: str | None) -> str:
    base = _run_path(run)
    number = "n/a" if run.course_slug == bad_run_number else str(run.number)
    title = _e(run.course_title)
    if change == "date_cell":
        start = '<td class="m-run__start">Not set</td>'
        if run.start_date:
            day = run.start_date
            start = f'<td class="m-run__start"><time datetime="{day}">{day:%A} {day.day} {day:%B %Y}</time></td>'  # noqa: E501
    elif run.start_date:
        start = f'<td class="m-run__start" data-order="{run.start_date}">{format_date(run.start_date)}</td>'  # noqa: E501
    else:
        start = '<td class="m-run__start" data-order="">Not set</td>'
    return f"""<tr class="m-run">
<td class="m-run__course"><a class="course-meta__title" href="{base}" title="{title}">{title}</a></td>
<td class="m-run__number">{number}</td>
{start}
<td class="m-run__status">{_status_flags(run, today)}</td>
<td class="m-run__links"><a href="{base}">Run details</a> <a href="{base}/stats-dashboard">View stats</a></td>
</tr>"""  # noqa: E501


def status_flags(run: Run, today: date) -> list[tuple[str, str]]:
    """The run's flags in the order shown, as (flag, label): ``flag--{flag}`` is the class."""
    status = run.status_on(today)
    invite_only = [("invite-only", "Invite-only")] if run.invite_only else []
    return [*invite_only, (status, _STATUS_LABELS[status])]


def _status_flags(run: Run, today: date) -> str:
    return " ".join(
        f'<span class="flag flag--{flag}">{_e(label)}</span>'
        for flag, label in status_flags(run, today)
    )


def _pagination(organisation: Organisation, page: int, loop: bool = False) -> str:
    pages = organisation.page_count()
    if pages == 1 and not loop:
        return ""
    path = f"/admin/organisations/{_e(organisation.slug)}/runs"
    links = []
    if page > 1:
        links.append(f'<a rel="prev" href="{path}?page={page - 1}">&lsaquo; Previous</a>')
    for number in range(1, pages + 1):
        if number == page:
            links.append(f'<span class="pagination__current" aria-current="page">{number}</span>')
        else:
            links.append(f'<a href="{path}?page={number}">{number}</a>')
    if page < pages or loop:
        following = page + 1 if page < pages else 1
        links.append(f'<a rel="next" href="{path}?page={following}">Next &rsaquo;</a>')
    return '<nav class="pagination" aria-label="Pages">\n' + "\n".join(links) + "\n</nav>"


def _busy(shell: Shell | None) -> str:
    """The attributes that mark the element a shell's script fills (none when rendered)."""
    if shell is None:
        return ""
    return f' aria-busy="true" data-source="{_e(shell.source)}"'


def _token(shell: Shell | None) -> str | None:
    return None if shell is None else shell.csrf_token


def _shell_script(shell: Shell) -> str:
    # The knobs go in as a JSON literal; the rest of the script is the same on every page.
    config = json.dumps({"delayMs": shell.delay_ms, "stalled": shell.stalled})
    return (
        '<noscript><p class="m-noscript">This page needs JavaScript: turn it on in your '
        "browser to see it.</p></noscript>\n"
        f"<script>\nconst config = {config};{SHELL_SCRIPT}</script>"
    )


# Fills the element marked aria-busy from its data-source JSON with the markup the server
# renders (runs_page, dashboard_page), nodes made one by one: titles are never parsed as HTML.
SHELL_SCRIPT = r"""
const target = document.querySelector("[aria-busy][data-source]");

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);  // strings become text nodes
  return node;
}

function joined(nodes, separator) {
  return nodes.flatMap((node, i) => (i ? [separator, node] : [node]));
}

// One node a line, as the server's templates lay them out.
function lines(nodes) {
  return ["\n", ...joined(nodes, "\n"), "\n"];
}

function runRow(run) {
  const flags = run.flags.map((f) => element("span", {class: "flag flag--" + f.flag}, f.label));
  return element("tr", {class: "m-run"}, ...lines([
    element("td", {class: "m-run__course"},
      element("a", {class: "course-meta__title", href: run.url, title: run.title}, run.title)),
    element("td", {class: "m-run__number"}, String(run.number)),
    element("td", {class: "m-run__start", "data-order": run.start.order}, run.start.text),
    element("td", {class: "m-run__status"}, ...joined(flags, " ")),
    element("td", {class: "m-run__links"},
      element("a", {href: run.url}, "Run details"), " ",
      element("a", {href: run.url + "/stats-dashboard"}, "View stats")),
  ]));
}

function pagination(pages) {
  const href = (number) => pages.url + "?page=" + number;
  const links = [];
  if (pages.current > 1) {
    links.push(element("a", {rel: "prev", href: href(pages.current - 1)}, "\u2039 Previous"));
  }
  for (let number = 1; number <= pages.count; number++) {
    links.push(number === pages.current
      ? element("span", {class: "pagination__current", "aria-current": "page"}, String(number))
      : element("a", {href: href(number)}, String(number)));
  }
  if (pages.current < pages.count) {
    links.push(element("a", {rel: "next", href: href(pages.current + 1)}, "Next \u203a"));
  }
  return element("nav", {class: "pagination", "aria-label": "Pages"}, ...lines(links));
}

function show(data) {
  if (target.tagName === "TABLE") {
    target.tBodies[0].replaceChildren(...lines(data.runs.map(runRow)));
    if (data.pages.count > 1) target.after("\n", pagination(data.pages));
  } else {
    const items = data.datasets.map((dataset) => element("li", {},
      element("a", {class: "m-datasets__link", href: dataset.url}, dataset.label)));
    target.replaceChildren(...lines(items));
  }
}

async function fill() {
  try {
    const response = await fetch(target.dataset.source, {
      credentials: "same-origin",
      redirect: "error",  // a redirect (to the sign-in page) brings no data
      headers: {
        "Accept": "application/json",
        "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content,
      },
    });
    if (!response.ok) throw new Error("HTTP " + response.status);
    show(await response.json());
  } catch (error) {
    target.dataset.error = error.message;  // "HTTP 500", "Failed to fetch"...
  }
  target.setAttribute("aria-busy", "false");
}

if (!config.stalled) {
  window.addEventListener("load", () => setTimeout(fill, config.delayMs));
}
"""


def _run_crumbs(organisation: Organisation) -> list[tuple[str, str]]:
    return [
        ("Organisations", "/admin/organisations"),
        (organisation.name, f"/admin/organisations/{organisation.slug}/runs"),
    ]


def _breadcrumbs(crumbs: list[tuple[str, str]]) -> str:
    items = "".join(f'<li><a href="{_e(href)}">{_e(text)}</a></li>' for text, href in crumbs)
    return f'<nav class="m-breadcrumb" aria-label="Breadcrumb"><ol>{items}</ol></nav>'


def _layout(title: str, main: str, *, user: str | None, csrf_token: str | None = None) -> bytes:
    csrf = (
        '<meta name="csrf-param" content="authenticity_token">\n'
        f'<meta name="csrf-token" content="{_e(csrf_token)}">\n'
        if csrf_token
        else ""
    )
    if user:
        account = (
            '<a class="m-user-nav__link" href="/your-courses">Your courses</a>\n'
            f'<span class="m-user-nav__email">{_e(user)}</span>'
        )
    else:
        account = (
            '<a class="m-user-nav__link" href="/sign-in">Sign in</a>\n'
            '<a class="m-user-nav__link a-button" href="/register">Register</a>'
        )
    signed_in = "true" if user else "false"
    return f"""<!DOCTYPE html>
<html lang="en-GB" class="no-js">
<head>
<meta charset="utf-8">
<meta http-equiv="X-UA-Compatible" content="IE=edge">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} | FutureLearn</title>
<meta name="description" content="Online courses from top universities &amp; specialist organisations.">
{csrf}<link rel="stylesheet" media="all" href="/assets/application-3f2a9c41d7.css">
<link rel="icon" href="/favicon.ico">
<script>document.documentElement.className = document.documentElement.className.replace("no-js", "js");</script>
<script src="/assets/vendor-8c1d2e77b0.js" defer></script>
<script src="/assets/application-5be0a1f3c2.js" defer></script>
<script>window.dataLayer = window.dataLayer || []; window.dataLayer.push({{"event": "pageview", "signedIn": {signed_in}, "section": "admin"}});</script>
</head>
<body class="t-admin">
<a class="u-skip-link" href="#main-content">Skip to main content</a>
<header class="m-site-header" role="banner">
<a class="m-site-header__logo" href="/" aria-label="FutureLearn home"><svg width="120" height="24" role="img"><title>FutureLearn</title><rect width="120" height="24"></rect></svg></a>
<nav class="m-site-nav" aria-label="Main">
<ul class="m-site-nav__list">
<li><a href="/courses">Courses</a></li>
<li><a href="/programs">Programs</a></li>
<li><a href="/degrees">Online degrees</a></li>
<li><a href="/microcredentials">Microcredentials</a></li>
</ul>
</nav>
<form class="m-search" action="/search" method="get" role="search">
<label class="u-visually-hidden" for="q">Search</label>
<input type="search" name="q" id="q" placeholder="What do you want to learn?">
<button type="submit">Search</button>
</form>
<div class="m-user-nav">
{account}
</div>
</header>
<main id="main-content" class="m-main">
{main}
</main>
<footer class="m-site-footer" role="contentinfo">
<ul class="m-site-footer__links">
<li><a href="/about-futurelearn">About us</a></li>
<li><a href="/info/terms">Terms &amp; conditions</a></li>
<li><a href="/info/privacy">Privacy</a></li>
<li><a href="https://about.futurelearn.com/partners">Partners</a></li>
</ul>
<p class="m-site-footer__copyright">&copy; FutureLearn Limited 2012&ndash;2020</p>
</footer>
<div class="m-cookie-banner" role="dialog" aria-label="Cookies" hidden>
<p>We use cookies to give you the best experience.</p>
<button type="button" class="a-button" data-cookie-consent="accept">Accept all cookies</button>
</div>
<script>if (window.FL) {{ window.FL.init({{"locale": "en-GB"}}); }}</script>
</body>
</html>
""".encode()  # noqa: E501
