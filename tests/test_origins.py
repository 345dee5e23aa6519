"""Credentials stay at home: the sign-in form is sent only by POST to base_url's origin over
https (http on a loopback address for the tests), and pages and datasets come only from
base_url's origin (and those FLSYNC_EXTRA_ORIGINS lists), never from https to http."""

from __future__ import annotations

import pytest

from fakesite import ADMIN_EMAIL, ADMIN_PASSWORD, FakeSite, SiteOptions
from flsync import tree
from flsync.origins import credential_refusal, origin, parse_origins, refusal
from tests.conftest import Sync

SMALL = SiteOptions(organisations=2, courses=1, runs=1, rows=3, tricky=False)
BASE = "https://www.futurelearn.com"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://www.futurelearn.com/x", "https://www.futurelearn.com:443"),
        ("https://WWW.futurelearn.com:443/x", "https://www.futurelearn.com:443"),
        ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080"),
        ("http://h:notaport/x", ""),
        ("/relative", ""),
    ],
)
def test_an_origin_is_scheme_host_and_port(url, expected):
    assert origin(url) == expected


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        (f"{BASE}/admin/courses/a/1", None),
        ("https://www.futurelearn.com:443/admin", None),
        ("http://www.futurelearn.com/admin", "is not https, as base_url is (a downgrade)"),
        ("https://futurelearn.com/admin", "https://futurelearn.com:443 is not base_url's origin"),
        ("https://www.futurelearn.com:8443/admin", ":8443 is not base_url's origin"),
        ("https://cdn.example.org/x.csv", "https://cdn.example.org:443 is not base_url's"),
    ],
)
def test_what_is_fetched(url, refused):
    why = refusal(url, BASE)
    assert why is None if refused is None else refused in why


def test_an_extra_origin_is_fetched_from_and_must_be_an_origin():
    extra = parse_origins(["https://cdn.example.org", "https://files.example.org:8443/"])
    assert refusal("https://cdn.example.org/x.csv", BASE, extra) is None
    assert refusal("https://files.example.org:8443/y.csv", BASE, extra) is None
    for bad in ("cdn.example.org", "ftp://cdn.example.org", "https://cdn.example.org/files"):
        with pytest.raises(ValueError, match=r"FLSYNC_EXTRA_ORIGINS: .* is not an origin"):
            parse_origins([bad])


@pytest.mark.parametrize(
    ("method", "url", "base", "refused"),
    [
        ("POST", f"{BASE}/sign-in", BASE, None),
        ("post", "http://127.0.0.1:5000/sign-in", "http://127.0.0.1:5000", None),
        ("POST", "http://[::1]:5000/sign-in", "http://[::1]:5000", None),
        ("GET", f"{BASE}/sign-in", BASE, "by GET (in the URL)"),
        ("POST", "https://evil.example/sign-in", BASE, "not to base_url's origin"),
        ("POST", "http://www.futurelearn.com/sign-in", BASE, "not to base_url's origin"),
        ("POST", "http://10.0.0.5/sign-in", "http://10.0.0.5", "over plain http"),
    ],
)
def test_where_the_password_may_go(method, url, base, refused):
    why = credential_refusal(method, url, base)
    assert why is None if refused is None else refused in why


# --- against the imitation site -------------------------------------------------------------


@pytest.fixture
def elsewhere():
    """Another site: whatever reaches it would have left home."""
    with FakeSite(SMALL) as site:
        yield site


def assert_nothing_reached(site: FakeSite) -> None:
    assert site.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("faults", "sent"),
    [
        ({"sign_in_action": "{elsewhere}/sign-in"}, "to {elsewhere}/sign-in, not to base_url's"),
        ({"sign_in_method": "get"}, "by GET (in the URL) to {base}/sign-in"),
    ],
)
def test_a_sign_in_form_that_would_send_the_password_elsewhere_is_refused(
    tmp_path, elsewhere, faults, sent
):
    with FakeSite(SMALL) as site:
        values = {k: v.format(elsewhere=elsewhere.base_url) for k, v in faults.items()}
        site.faults.update(values)
        base = site.base_url
        result = Sync(base, tmp_path)()
        assert site.stats()["by_kind"]["sign_in_post"] == 0
        expected = sent.format(elsewhere=elsewhere.base_url, base=base)
    assert result.returncode == 1
    [line, _summary] = result.error_lines()
    assert (
        f"Sign-in as {ADMIN_EMAIL} refused: the sign-in form on {base}/sign-in would"
        f" send the password {expected}"
    ) in line
    assert line.endswith("; nothing was sent (the sign-in page has changed, or is not"
                         " FutureLearn's: check base_url)")  # fmt: skip
    assert ADMIN_PASSWORD not in result.output
    assert "Traceback" not in result.output
    assert_nothing_reached(elsewhere)


def test_over_https_a_form_posting_over_http_is_refused(tmp_path):
    with FakeSite(SMALL, https=True) as site:
        insecure = site.base_url.replace("https://", "http://") + "/sign-in"
        site.faults.update({"sign_in_action": insecure})
        result = Sync(site.base_url, tmp_path)("-s", f"FLSYNC_CA_BUNDLE={site.ca_file}")
        assert site.stats()["by_kind"]["sign_in_post"] == 0
    assert result.returncode == 1
    assert f"would send the password to {insecure}, not to base_url's origin" in result.output
    assert ADMIN_PASSWORD not in result.output


def test_a_dataset_link_to_another_origin_fails_its_run_unfetched(tmp_path, elsewhere):
    with FakeSite(SMALL) as site:
        site.faults.update({"foreign_links": {"comments": elsewhere.base_url}})
        base = site.base_url
        result = Sync(base, tmp_path)()
    assert result.returncode == 1
    assert "Traceback" not in result.output
    assert_nothing_reached(elsewhere)
    errors = [e for e in result.error_lines() if "Sync FAILED" not in e]
    assert len(errors) == 2  # one run of each organisation lists comments
    for line in errors:
        assert "Dataset (failed): " in line
        assert line.endswith(
            f"/stats-dashboard/data/comments: refused: {origin(elsewhere.base_url)} is not"
            f" base_url's origin ({origin(base)}) nor one FLSYNC_EXTRA_ORIGINS lists"
        )
    for organisation in site.data.organisations:
        assert not (result.data_dir / organisation.name / tree.UPDATE_FILE).exists()


def test_over_https_a_dataset_link_over_http_is_refused(tmp_path, elsewhere):
    with FakeSite(SMALL, https=True) as site:
        site.faults.update({"foreign_links": {"enrolments": elsewhere.base_url}})
        result = Sync(site.base_url, tmp_path)("-s", f"FLSYNC_CA_BUNDLE={site.ca_file}")
    assert result.returncode == 1
    assert_nothing_reached(elsewhere)
    assert "/data/enrolments: refused: " in result.output
    assert "is not https, as base_url is (a downgrade)" in result.output


def test_an_extra_origin_that_is_not_one_is_one_line_before_anything(tmp_path):
    with FakeSite(SMALL) as site:
        result = Sync(site.base_url, tmp_path)("-s", "FLSYNC_EXTRA_ORIGINS=cdn.example.org")
        assert site.stats()["requests"] == 0
    assert result.returncode == 2
    [line] = result.error_lines()
    assert line.endswith(
        "FLSYNC_EXTRA_ORIGINS: 'cdn.example.org' is not an origin (https://host[:port])"
    )
