"""Config: defaults, paths, and the exact `PATH:KEY: message` of every kind of error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asyncci.config import ConfigError, branch_matches, load_config, parse_duration, parse_size

REPO = '[[repos]]\nname = "r"\nurl = "https://example.org/r.git"\nscript = "make"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "asyncci.toml"
    path.write_text(text)
    return path


def errors(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    prefix = f"{path}"
    return [e.removeprefix(prefix) for e in caught.value.errors]


def test_defaults_of_a_minimal_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, REPO), {"ASYNCCI_TOKEN": "tok"})
    assert (config.server.listen_host, config.server.listen_port) == ("127.0.0.1", 8080)
    assert config.server.public_url == "http://127.0.0.1:8080"
    assert config.server.data_dir == tmp_path / "asyncci-data"
    assert config.server.max_log_bytes == 50_000_000 and config.server.log_retention == 30 * 86400
    assert config.web.public and config.web.token == "tok" and config.github is None
    [host] = config.hosts
    assert (host.name, host.local, host.slots) == ("local", True, os.cpu_count())
    assert host.workdir == str(tmp_path / "asyncci-data" / "work")
    [repo] = config.repos
    assert repo.branches == ("main", "master") and repo.poll == 60 and repo.retries == 2
    assert repo.timeout == 1800 and repo.weight == 1 and not repo.build_every_commit
    assert repo.pipeline_file == ".asyncci.toml" and repo.secrets == ()


def test_paths_are_relative_to_the_config_and_secrets_are_read(tmp_path: Path) -> None:
    (tmp_path / "upstream").mkdir()
    (tmp_path / "pypi.token").write_text("file-secret-value\n")
    text = ('[server]\ndata_dir = "data"\n[github]\napi_url = "http://127.0.0.1:9/"\n'
            '[[hosts]]\nname = "b1"\naddress = "b1.example"\nkey_file = "~/k"\nslots = 4\n'
            'slot_env = { GPU = "{slot}" }\n'
            '[[repos]]\nname = "r"\nurl = "upstream"\nscript = "x"\n'
            'secrets = { A = { env = "SECRET_A" }, B = { file = "pypi.token" } }\n')
    config = load_config(write(tmp_path, text), {"SECRET_A": "env-secret", "GITHUB_TOKEN": "gh"})
    assert config.server.data_dir == tmp_path / "data"
    assert config.github is not None and config.github.token == "gh"
    assert config.github.api_url == "http://127.0.0.1:9"
    [host] = config.hosts
    assert not host.local and host.key_file == Path("~/k").expanduser() and host.slots == 4
    assert host.workdir == "asyncci-work" and host.slot_env == {"GPU": "{slot}"}
    [repo] = config.repos
    assert repo.url == str(tmp_path / "upstream")
    assert [(s.name, s.value) for s in repo.secrets] == [("A", "env-secret"), ("B", "file-secret-value")]


@pytest.mark.parametrize("text, expected", [
    ('[[hosts]]\nname = "h"\nslots = "four"\n' + REPO,
     ':hosts[0].slots: must be a positive integer, got "four"'),
    ('colour = "red"\n' + REPO, ":colour: unknown key"),
    ('[server]\nlisten_on = "x"\n' + REPO, ":server.listen_on: unknown key"),
    ('[[hosts]]\nname = "a"\n[[hosts]]\nname = "b"\nslot = 1\n' + REPO, ":hosts[1].slot: unknown key"),
    (REPO + 'brnches = ["main"]\n', ":repos[0].brnches: unknown key"),
    (REPO + 'timeout = "ten minutes"\n',
     ':repos[0].timeout: must be a duration like "90s", "5m" or "2h", got "ten minutes"'),
    ('[server]\nmax_log_bytes = "lots"\n' + REPO,
     ':server.max_log_bytes: must be a size like "50MB" or "512KiB", got "lots"'),
    ('[server]\nlisten = "8080"\n' + REPO, ':server.listen: must be "host:port", got "8080"'),
    ('[[hosts]]\nname = "h"\n[[hosts]]\nname = "h"\n' + REPO, ':hosts[1].name: duplicate name "h"'),
    (REPO + REPO, ':repos[1].name: duplicate name "r"'),
    (REPO.replace('"r"', '"a b"'), ':repos[0].name: must match [a-zA-Z0-9._-]+, got "a b"'),
    ('[[hosts]]\nname = "h"\ntype = "ssh"\n' + REPO, ":hosts[0].address: required for an SSH host"),
    (REPO + 'secrets = { T = { env = "SHORT" } }\n',
     ":repos[0].secrets.T: is shorter than 4 characters: masking it in logs would garble them"),
    (REPO + 'secrets = { T = { env = "UNSET" } }\n',
     ":repos[0].secrets.T: environment variable UNSET is not set"),
    ('[[repos]]\nname = "r"\nurl = "u"\npipeline_file = ""\n',
     ':repos[0].script: required when pipeline_file is ""'),
    ('[web]\npublic = "yes"\n' + REPO, ':web.public: must be true or false, got "yes"'),
    (REPO + "weight = 0\n", ":repos[0].weight: must be a positive number, got 0"),
    ('[[hosts]]\nname = "h"\nport = 70000\n' + REPO,
     ":hosts[0].port: must be a port number (1-65535), got 70000"),
])
def test_each_error_names_its_key(tmp_path: Path, text: str, expected: str) -> None:
    assert errors(tmp_path, text, {"SHORT": "abc"}) == [expected]


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    text = '[server]\nlisten = 1\n[[hosts]]\nslots = 0\n[[repos]]\nname = "r"\n'
    assert errors(tmp_path, text) == [
        ":server.listen: must be a string, got 1",
        ":hosts[0].name: required",
        ":hosts[0].slots: must be a positive integer, got 0",
        ":repos[0].url: required",
    ]


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    assert errors(tmp_path, "[server\n")[0].startswith(": invalid TOML: ")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.toml", {})
    assert caught.value.errors == [f"{tmp_path / 'missing.toml'}: cannot read: No such file or directory"]


@pytest.mark.parametrize("value, seconds", [
    ("90s", 90), ("5m", 300), ("2h", 7200), ("30d", 30 * 86400), ("1h30m", 5400), (45, 45), ("0", 0)])
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "5", "m5", "5 m", "-1s", True, 1.5, None])
def test_bad_durations(value: object) -> None:
    if value == "5":
        assert parse_duration(value) == 5  # a bare number string is seconds
        return
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize("value, size", [("50MB", 50 * 10**6), ("50MiB", 50 * 2**20),
                                         ("100B", 100), (1024, 1024), ("1GB", 10**9)])
def test_sizes(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["0MB", "lots", "5TB", -1, True])
def test_bad_sizes(value: object) -> None:
    with pytest.raises(ValueError):
        parse_size(value)


@pytest.mark.parametrize("pattern, branch, matches", [
    ("release/*", "release/1.0", True), ("release/*", "release/1/2", False),
    ("release/**", "release/1/2", True), ("**", "a/b/c", True), ("main", "main", True),
    ("main", "main2", False), ("v?", "v1", True), ("v?", "v/", False), ("*", "a/b", False),
])
def test_branch_globs(pattern: str, branch: str, matches: bool) -> None:
    assert branch_matches(pattern, branch) is matches
