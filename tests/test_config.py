import json

import pytest
from scrapy.settings import Settings

from flsync.config import (
    DEFAULT_BASE_URL,
    LOADED_CONFIG,
    ConfigError,
    FlsyncConfig,
    config_from_settings,
    load_config,
)

SECRET = "s3cr3t-Pa55"


def write(tmp_path, document):
    path = tmp_path / "config.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


def test_minimal_config_gets_documented_defaults(tmp_path):
    config = load_config(write(tmp_path, {"username": "u@example.org", "password": SECRET}), {})
    assert config == FlsyncConfig("u@example.org", SECRET, DEFAULT_BASE_URL, "data", (), ())


def test_full_config(tmp_path):
    document = {
        "username": "u@example.org",
        "password": SECRET,
        "base_url": "http://127.0.0.1:8000/",
        "data_dir": "/srv/fl",
        "organisations": ["exampleton"],
        "datasets": ["comments"],
    }
    config = load_config(write(tmp_path, document), {})
    assert config.base_url == "http://127.0.0.1:8000"
    assert config.data_dir == "/srv/fl"
    assert config.organisations == ("exampleton",)
    assert config.datasets == ("comments",)


def test_environment_overrides_credentials(tmp_path):
    path = write(tmp_path, {"username": "file@example.org", "password": "file"})
    env = {"FLSYNC_USERNAME": "env@example.org", "FLSYNC_PASSWORD": "env"}
    config = load_config(path, env)
    assert (config.username, config.password) == ("env@example.org", "env")


def test_password_from_environment_only(tmp_path):
    config = load_config(write(tmp_path, {"username": "u"}), {"FLSYNC_PASSWORD": SECRET})
    assert config.password == SECRET


def test_path_comes_from_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("FLSYNC_USERNAME", raising=False)
    path = write(tmp_path, {"username": "u", "password": SECRET})
    config = config_from_settings(Settings({"FLSYNC_CONFIG": path}))
    assert config.username == "u"


def test_a_loaded_config_is_not_read_again(tmp_path):
    loaded = load_config(write(tmp_path, {"username": "u", "password": SECRET}), {})
    (tmp_path / "config.json").unlink()
    settings = Settings({"FLSYNC_CONFIG": str(tmp_path / "config.json"), LOADED_CONFIG: loaded})
    assert config_from_settings(settings) is loaded


def test_repr_hides_password(tmp_path):
    config = load_config(write(tmp_path, {"username": "u", "password": SECRET}), {})
    assert SECRET not in repr(config)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("{not json", "is not valid JSON: Expecting property name"),
        ("[]", "must hold a JSON object"),
        ({"password": SECRET}, "has no 'username': set it there, or FLSYNC_USERNAME"),
        ({"username": "u"}, "has no 'password': set it there, or FLSYNC_PASSWORD"),
        ({"username": "u", "password": ""}, "has no 'password'"),
        ({"username": "u", "password": SECRET, "pasword": 1}, "unknown key 'pasword'"),
        ({"username": "u", "password": SECRET, "base_url": "ftp://x"}, "must be an http(s) URL"),
        ({"username": "u", "password": SECRET, "organisations": "all"}, "must be a list"),
        ({"username": "u", "password": SECRET, "data_dir": ""}, "'data_dir'"),
    ],
)
def test_bad_config_names_the_problem_and_the_file(tmp_path, document, expected):
    path = write(tmp_path, document)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, {})
    message = str(excinfo.value)
    assert expected in message
    assert path in message
    assert "\n" not in message
    assert SECRET not in message


def test_malformed_json_error_does_not_echo_the_document(tmp_path):
    path = write(tmp_path, '{"username": "u", "password": "' + SECRET + '",,}')
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, {})
    assert SECRET not in str(excinfo.value)


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.json")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, {})
    assert str(excinfo.value) == (
        f"config file {path} not found: copy config.json.template there and fill it in, or set"
        " the environment variable FLSYNC_CONFIG (or -s FLSYNC_CONFIG=) to the path of yours"
    )


def test_missing_file_at_a_relative_path_names_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as excinfo:
        load_config("config.json", {})
    assert str(excinfo.value).startswith(f"config file config.json not found in {tmp_path}: ")


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(str(tmp_path), {})
