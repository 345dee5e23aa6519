"""Reaching the site as the real one must be reached: over HTTPS with verified certificates,
behind a wall that refuses non-browser TLS, through proxies; and one clear error when not."""

from __future__ import annotations

import base64

import pytest

from fakesite import FakeSite, SiteOptions
from flsync import tree
from tests.conftest import Sync, assert_full_tree, data_files
from tests.proxy import ForwardProxy, refusing_proxy_url
from tests.test_incremental import file_ids

SMALL = SiteOptions(organisations=1, courses=2, runs=2, rows=5, tricky=False)


# The site of `fakesite` and `sync` (tests/conftest.py): what these tests show (proxies,
# config errors) does not grow with the site.
SITE = SMALL


@pytest.fixture
def walled_site():
    """The small site over HTTPS (its own test CA) behind the bot wall."""
    with FakeSite(SMALL, https=True, bot_wall=True) as site:
        yield site


def trusting(site: FakeSite, *args: str) -> tuple[str, ...]:
    """Settings that make flsync trust the site's test CA."""
    return ("-s", f"FLSYNC_CA_BUNDLE={site.ca_file}", *args)


def test_behind_the_wall_over_https_a_sync_is_complete(walled_site, tmp_path):
    sync = Sync(walled_site.base_url, tmp_path)
    result = sync(*trusting(walled_site))
    assert result.returncode == 0, result.output
    assert_full_tree(walled_site, result)
    stats = walled_site.stats()
    assert stats["walled"] == 0
    assert stats["client_hellos"]["no_grease"] == 0
    before = file_ids(sync.data_dir)
    walled_site.reset_stats()
    again = sync(*trusting(walled_site))
    assert again.returncode == 0, again.output
    assert walled_site.stats()["dataset_bytes"] == 0
    assert walled_site.stats()["not_modified"] > 0
    assert file_ids(sync.data_dir) == before


def test_behind_the_wall_sessions_expire_and_are_renewed(walled_site, tmp_path):
    walled_site.faults.update({"expire_session_after": 15, "session_cookie": "every_answer"})
    result = Sync(walled_site.base_url, tmp_path)(
        *trusting(walled_site, "-s", "FLSYNC_SIGN_IN_WAIT=0.05")
    )
    assert result.returncode == 0, result.output
    assert_full_tree(walled_site, result)
    assert walled_site.stats()["by_kind"]["sign_in_post"] >= 3


@pytest.mark.parametrize("browser", ["none", "firefox"])
def test_a_client_the_wall_refuses_stops_with_one_clear_error(walled_site, tmp_path, browser):
    result = Sync(walled_site.base_url, tmp_path)(
        *trusting(walled_site, "-s", f"FLSYNC_IMPERSONATE={browser}")
    )
    assert result.returncode == 1
    [line, summary] = result.error_lines()
    assert line.endswith(
        f"The site's bot protection refused {walled_site.base_url}/sign-in (HTTP 403, a"
        f" challenge page): it did not take flsync (FLSYNC_IMPERSONATE={browser}) for a"
        " browser. Try another browser in FLSYNC_IMPERSONATE (e.g. chrome, edge, safari), or"
        " FLSYNC_BROWSER=1 to pass its challenge in a real browser"
    )
    assert "Sync FAILED (flsync_bot_wall" in summary
    assert "Traceback" not in result.output
    assert result.files() == {}
    assert walled_site.stats()["walled"] == 1  # the sign-in page, and nothing after it


@pytest.mark.parametrize(
    ("certificate", "trusted", "why"),
    [
        ("expired", True, "certificate has expired"),
        ("wrong_host", True, "no alternative certificate subject name matches"),
        ("good", False, "unable to get local issuer certificate"),
    ],
    ids=["expired", "wrong-host", "unknown-ca"],
)
def test_a_certificate_that_does_not_verify_stops_with_one_clear_error(
    tmp_path, certificate, trusted, why
):
    with FakeSite(SMALL, https=True, certificate=certificate) as site:
        args = trusting(site) if trusted else ()
        base_url = site.base_url
        result = Sync(base_url, tmp_path)(*args)
        requests = site.stats()["requests"]
    assert result.returncode == 1
    [line, summary] = result.error_lines()
    assert f"Cannot reach {base_url}/sign-in: the TLS certificate of 127.0.0.1" in line
    assert why in line
    assert line.endswith("if a TLS-inspecting proxy is in the way, give its CA in FLSYNC_CA_BUNDLE")
    assert "Sync FAILED (flsync_certificate" in summary
    assert result.files() == {}
    assert requests == 0  # nothing was sent: not the password, not a cookie


@pytest.mark.parametrize(
    ("bundle", "message"),
    [
        ("missing.pem", "No such file or directory"),
        ("config.json", "not a PEM file of certificates"),
    ],
)
def test_a_bad_ca_bundle_is_a_config_error(fakesite, tmp_path, bundle, message):
    sync = Sync(fakesite.base_url, tmp_path)
    result = sync("-s", f"FLSYNC_CA_BUNDLE={tmp_path / bundle}")
    assert result.returncode == 2
    [line] = result.error_lines()
    assert line.endswith(f"FLSYNC_CA_BUNDLE {tmp_path / bundle}: {message}")
    assert fakesite.stats()["requests"] == 0


def test_an_unknown_browser_is_a_config_error(fakesite, tmp_path):
    result = Sync(fakesite.base_url, tmp_path)("-s", "FLSYNC_IMPERSONATE=netscape4")
    assert result.returncode == 2
    assert "FLSYNC_IMPERSONATE 'netscape4' is not a browser" in result.error_lines()[0]
    assert fakesite.stats()["requests"] == 0


def test_every_request_through_an_http_proxy(fakesite, tmp_path):
    with ForwardProxy(credentials=("uni", "pr0xy-secret")) as proxy:
        result = Sync(fakesite.base_url, tmp_path)(
            env={"http_proxy": proxy.url_with_credentials("uni", "pr0xy-secret")}
        )
        stats = proxy.stats()
    assert result.returncode == 0, result.output
    assert_full_tree(fakesite, result)
    assert len(stats.forwarded) == fakesite.stats()["requests"] > 0
    assert not stats.origin_saw_proxy_authorization
    assert "pr0xy-secret" not in result.output


def test_every_request_through_a_tunnel_to_https(walled_site, tmp_path):
    with ForwardProxy(credentials=("uni", "pr0xy-secret")) as proxy:
        result = Sync(walled_site.base_url, tmp_path)(
            *trusting(walled_site, "-s", "LOG_LEVEL=DEBUG"),
            env={"https_proxy": proxy.url_with_credentials("uni", "pr0xy-secret")},
        )
        stats = proxy.stats()
    assert base64.b64encode(b"uni:pr0xy-secret").decode() not in result.output
    assert result.returncode == 0, result.output
    assert_full_tree(walled_site, result)
    assert stats.connects  # CONNECT tunnels, the requests inside them unseen by the proxy
    assert not stats.forwarded
    assert walled_site.stats()["walled"] == 0
    assert "pr0xy-secret" not in result.output


def test_no_proxy_is_honoured(fakesite, tmp_path):
    with ForwardProxy() as proxy:
        result = Sync(fakesite.base_url, tmp_path)(
            env={"http_proxy": proxy.url, "no_proxy": "127.0.0.1"}
        )
        stats = proxy.stats()
    assert result.returncode == 0, result.output
    assert stats.client_connections == 0


def update_text(sync: Sync) -> str:
    return (sync.data_dir / "University of Exampleton" / tree.UPDATE_FILE).read_text()


def wants_credentials(proxy: ForwardProxy, variable: str) -> str:
    """The one line for a proxy that answered 407, naming the variable to put them in."""
    return (
        f"the proxy {proxy.url} asked for credentials that were not given or not accepted"
        f" (407): put them in its URL ({variable}=http://user:password@host:port)"
    )


def test_a_proxy_that_wants_credentials_stops_with_one_clear_error(fakesite, tmp_path):
    sync = Sync(fakesite.base_url, tmp_path)
    first = sync()
    assert first.returncode == 0, first.output
    fakesite.faults.update({"generation": 2})  # every file changed, if only it could be had
    with ForwardProxy(credentials=("uni", "pr0xy-secret")) as proxy:
        result = sync(env={"http_proxy": proxy.url_with_credentials("uni", "wrong-guess")})
    assert result.returncode == 1
    [line, summary] = result.error_lines()
    assert line.endswith(wants_credentials(proxy, "http_proxy"))
    assert "Sync FAILED (flsync_proxy" in summary
    assert "wrong-guess" not in result.output
    assert data_files(result) == data_files(first)
    assert update_text(sync) == first.files()["University of Exampleton/update.txt"].decode()


def test_a_tunnel_that_wants_credentials_stops_with_one_clear_error(walled_site, tmp_path):
    with ForwardProxy(credentials=("uni", "pr0xy-secret")) as proxy:
        result = Sync(walled_site.base_url, tmp_path)(
            *trusting(walled_site),
            env={"https_proxy": proxy.url_with_credentials("uni", "wrong-guess")},
        )
        stats = proxy.stats()
    assert result.returncode == 1
    [line, summary] = result.error_lines()
    assert line.endswith(wants_credentials(proxy, "https_proxy"))
    assert "Sync FAILED (flsync_proxy" in summary
    assert stats.auth_challenges > 0 and stats.forwarded == []  # CONNECT refused, no tunnel
    assert "wrong-guess" not in result.output
    assert result.files() == {}


def test_a_proxy_that_refuses_connections_stops_with_one_clear_error(walled_site, tmp_path):
    sync = Sync(walled_site.base_url, tmp_path)
    first = sync(*trusting(walled_site))
    assert first.returncode == 0, first.output
    walled_site.faults.update({"generation": 2})
    with refusing_proxy_url() as url:
        result = sync(*trusting(walled_site), env={"https_proxy": url})
    assert result.returncode == 1
    [line, summary] = result.error_lines()
    assert f"Cannot reach {walled_site.base_url}/sign-in: the proxy {url} failed:" in line
    assert "Sync FAILED (flsync_proxy" in summary
    assert data_files(result) == data_files(first)
