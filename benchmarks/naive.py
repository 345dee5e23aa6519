"""The naive baseline: what the old Python 2 script did, in Python 3's standard library.

One request after another, each whole body read into memory, then written out. Run as
``python -m benchmarks.naive --base-url URL --out DIR``. Exit status 0 when every file was fetched.
"""

from __future__ import annotations

import argparse
import html
import http.cookiejar
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

EMAIL = "demo@example.org"
PASSWORD = "demo-password"
TIMEOUT = 120.0
SESSION_COOKIE = "_future_learn_session"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a 302 surfaces as HTTPError: after sign-in it means the session ended


def sign_in(
    base_url: str, email: str = EMAIL, password: str = PASSWORD
) -> tuple[urllib.request.OpenerDirector, http.cookiejar.CookieJar]:
    """A cookie-keeping opener with a signed-in session."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),  # 127.0.0.1 only, whatever the environment says
        urllib.request.HTTPCookieProcessor(jar),
        _NoRedirect(),
    )
    page = get(opener, base_url + "/sign-in").decode()
    form = re.search(r'<form[^>]*action="/sign-in".*?</form>', page, re.S)
    if not form:
        raise RuntimeError("no sign-in form")
    fields = {}
    for tag in re.findall(r"<input\b[^>]*>", form.group(0)):
        attrs = dict(re.findall(r'(\w[\w-]*)="([^"]*)"', tag))
        if attrs.get("type") == "hidden" and "name" in attrs:
            fields[html.unescape(attrs["name"])] = html.unescape(attrs.get("value", ""))
    fields.update(email=email, password=password)
    data = urllib.parse.urlencode(fields).encode()
    try:
        opener.open(base_url + "/sign-in", data=data, timeout=TIMEOUT).read()
        raise RuntimeError("sign-in refused (no redirect)")
    except urllib.error.HTTPError as exc:
        if exc.code != 302:
            raise
    return opener, jar


def get(opener: urllib.request.OpenerDirector, url: str) -> bytes:
    with opener.open(url, timeout=TIMEOUT) as resp:
        return resp.read()  # the whole body in memory, as the old script did


def hrefs(page: str, pattern: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(pattern, page)]


def started_runs(opener: urllib.request.OpenerDirector, base_url: str) -> list[str]:
    """Paths /admin/courses/{course}/{run} of every run that has started, all organisations."""
    runs = []
    orgs = get(opener, base_url + "/admin/organisations").decode()
    for org_path in hrefs(orgs, r'<a href="(/admin/organisations/[^"]+/runs)"'):
        url: str | None = base_url + org_path
        for _page in range(10_000):  # bounded: follow rel="next" until there is none
            if url is None:
                break
            page = get(opener, url).decode()
            for row in re.findall(r'<tr class="m-run">(.*?)</tr>', page, re.S):
                if "flag--upcoming" in row or "Not set" in row:
                    continue
                runs += hrefs(row, r'href="(/admin/courses/[^"/]+/\d+)"')[:1]
            nxt = re.search(r'<a[^>]*rel="next"[^>]*>', page)
            link = nxt and re.search(r'href="([^"]+)"', nxt.group(0))
            url = urllib.parse.urljoin(url, html.unescape(link.group(1))) if link else None
    return runs


def dataset_urls(opener: urllib.request.OpenerDirector, base_url: str, run: str) -> list[str]:
    get(opener, base_url + run)  # run details (the old script read the dates from it)
    dashboard = get(opener, f"{base_url}{run}/stats-dashboard").decode()
    links = hrefs(dashboard, r'class="m-datasets__link"[^>]*href="([^"]+)"')
    links += hrefs(dashboard, r'href="([^"]+)"[^>]*class="m-datasets__link"')
    subdivisions = f"{run}/demographics/countries/country-subdivisions-dataset"
    return [urllib.parse.urljoin(base_url + run, h) for h in dict.fromkeys([*links, subdivisions])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    base_url = args.base_url.rstrip("/")
    opener, _jar = sign_in(base_url)
    count = 0
    for run in started_runs(opener, base_url):
        for url in dataset_urls(opener, base_url, run):
            body = get(opener, url)
            name = url.rstrip("/").rsplit("/", 1)[-1].replace("_", "-") + ".csv"
            target = args.out / run.strip("/").replace("/", "_") / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
            count += 1
    print(f"naive: {count} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
