"""Config: defaults, paths, secrets, and the exact `PATH:KEY: message` of every kind of error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asyncci.config import KEYS, load_config
from asyncci.config.checks import ConfigError, parse_duration, parse_size
from asyncci.server import validate

REPO = '[[repos]]\nname = "r"\nurl = "https://example.org/r.git"\nscript = "make"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "asyncci.toml"
    path.write_text(text)
    return path


def errors(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    """The errors, each without its leading PATH (so each starts with ":")."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    assert str(caught.value) == "\n".join(caught.value.errors)
    assert all(e.startswith(f"{path}:") for e in caught.value.errors)
    return [e.removeprefix(str(path)) for e in caught.value.errors]


def test_defaults_of_a_minimal_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, REPO), {})
    server = config.server
    assert (server.listen_host, server.listen_port) == ("127.0.0.1", 8080)
    assert server.public_url == "http://127.0.0.1:8080"
    assert server.data_dir == tmp_path / "asyncci-data"
    assert server.max_log_bytes == 50_000_000 and server.log_retention == 30 * 86400
    assert config.web.public and config.web.token is None and config.github is None
    [repo] = config.repos
    assert (repo.name, repo.url, repo.script) == ("r", "https://example.org/r.git", "make")
    assert repo.branches == ("main", "master") and repo.keep_superseded == ("main", "master")
    assert not repo.pull_requests and not repo.build_every_commit
    assert repo.poll == 60 and repo.timeout == 1800 and repo.schedule is None
    assert repo.weight == 1 and repo.max_running == 0 and repo.retries == 2
    assert repo.labels == () and repo.env == {} and repo.secrets == () and repo.github is None
    assert repo.pipeline_file == ".asyncci.toml"
    assert config.repo("r") is repo and config.repo("other") is None
    assert config.path == tmp_path / "asyncci.toml"


@pytest.mark.parametrize("server, listen, public_url", [
    ('listen = "0.0.0.0:9000"', ("0.0.0.0", 9000), "http://0.0.0.0:9000"),
    ('listen = "[::1]:9000"', ("::1", 9000), "http://[::1]:9000"),
    ('listen = "ci.local:80"\npublic_url = "https://ci.example.org/"', ("ci.local", 80),
     "https://ci.example.org"),
])
def test_public_url_defaults_to_the_listen_address(
        tmp_path: Path, server: str, listen: tuple[str, int], public_url: str) -> None:
    config = load_config(write(tmp_path, f"[server]\n{server}\n" + REPO), {})
    assert (config.server.listen_host, config.server.listen_port) == listen
    assert config.server.public_url == public_url


def test_the_example_config_loads() -> None:
    config = load_config(Path(__file__).parent.parent / "config.example.toml", environ={})
    assert [h.name for h in config.hosts] == ["local"] and config.hosts[0].local
    assert [r.name for r in config.repos] == ["asyncci"] and config.github is None


def test_without_hosts_there_is_one_local_host(tmp_path: Path) -> None:
    """Read as a `[[hosts]]` table naming it alone would be: the same defaults, the same
    workdir under data_dir as any local host's."""
    [host] = load_config(write(tmp_path, REPO), {}).hosts
    assert (host.name, host.local, host.address) == ("local", True, None)
    assert host.slots == os.cpu_count()
    assert host.workdir == str(tmp_path / "asyncci-data" / "work" / "local")
    assert host.labels == () and host.slot_env == {} and host.prepare is None and host.grace == 60
    assert host == load_config(write(tmp_path, '[[hosts]]\nname = "local"\n' + REPO), {}).hosts[0]


def test_host_kinds_and_their_defaults(tmp_path: Path) -> None:
    text = ('[[hosts]]\nname = "here"\n'
            '[[hosts]]\nname = "also-here"\ntype = "local"\nworkdir = "w"\n'
            '[[hosts]]\nname = "b1"\naddress = "b1.example"\n'
            '[[hosts]]\nname = "b2"\ntype = "ssh"\naddress = "b2.example"\nworkdir = "/srv/ci"\n'
            'port = 2222\nuser = "ci"\nslots = 3\nlabels = ["gpu"]\ngrace = "2m"\n'
            'slot_env = { CUDA_VISIBLE_DEVICES = "{slot}" }\nprepare = "true"\n' + REPO)
    here, also_here, b1, b2 = load_config(write(tmp_path, text), {}).hosts
    assert here.local and here.workdir == str(tmp_path / "asyncci-data" / "work" / "here")
    assert here.slots == os.cpu_count()
    assert also_here.local and also_here.workdir == str(tmp_path / "w")
    assert not b1.local and b1.address == "b1.example" and b1.port == 22 and b1.slots == 1
    assert b1.workdir == "asyncci-work" and b1.user is None
    assert b1.key_file is None and b1.known_hosts is None
    assert (b2.port, b2.user, b2.slots, b2.labels, b2.grace) == (2222, "ci", 3, ("gpu",), 120)
    assert b2.workdir == "/srv/ci" and b2.prepare == "true"
    assert b2.slot_env == {"CUDA_VISIBLE_DEVICES": "{slot}"}  # filled in per slot elsewhere


def test_paths_are_relative_to_the_config_and_secrets_are_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "upstream").mkdir()
    (tmp_path / "pypi.token").write_text("file-secret-value\n")
    (tmp_path / "app.pem").write_text("PEM")
    text = ('[server]\ndata_dir = "~/data"\n'
            '[github]\napi_url = "http://127.0.0.1:9/"\napp_id = 7\nprivate_key_file = "app.pem"\n'
            '[[hosts]]\nname = "b1"\naddress = "b1.example"\nkey_file = "~/k"\n'
            'known_hosts = "keys/known"\nworkdir = "rel/on/host"\n'
            '[[repos]]\nname = "r"\nurl = "upstream"\nscript = "x"\n'
            'secrets = { A = { env = "SECRET_A" }, B = { file = "pypi.token" } }\n'
            '[[repos]]\nname = "scp"\nurl = "git@example.org:upstream"\nscript = "x"\n'
            '[[repos]]\nname = "gone"\nurl = "not-there"\nscript = "x"\n')
    config = load_config(write(tmp_path, text), {"SECRET_A": "env-secret", "GITHUB_TOKEN": "gh"})
    assert config.server.data_dir == tmp_path / "home" / "data"
    assert config.github is not None and config.github.private_key == "PEM"
    assert config.github.app_id == 7 and config.github.api_url == "http://127.0.0.1:9"
    assert config.github.token is None  # an App makes its own tokens
    [host] = config.hosts
    assert host.key_file == tmp_path / "home" / "k"
    assert host.known_hosts == tmp_path / "keys" / "known"
    assert host.workdir == "rel/on/host"  # a path on the build host, left as given
    local, scp, gone = config.repos
    assert local.url == str(tmp_path / "upstream")
    assert scp.url == "git@example.org:upstream" and gone.url == "not-there"
    assert [(s.name, s.value) for s in local.secrets] == [
        ("A", "env-secret"), ("B", "file-secret-value")]


def test_relative_config_path_is_kept_as_given(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, '[server]\nlisten = "nope"\n' + REPO)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("./asyncci.toml", {})
    assert caught.value.errors == ['./asyncci.toml:server.listen: must be "host:port", got "nope"']
    write(tmp_path, REPO)
    assert load_config("asyncci.toml", {}).server.data_dir == tmp_path / "asyncci-data"


def test_tokens_come_from_the_environment(tmp_path: Path) -> None:
    text = '[web]\npublic = false\ntoken_env = "MY_TOKEN"\n[github]\n' + REPO
    environ = {"MY_TOKEN": "web-token", "GITHUB_TOKEN": "gh", "ASYNCCI_WEBHOOK_SECRET": "hook"}
    config = load_config(write(tmp_path, text), environ)
    assert not config.web.public and config.web.token == "web-token"
    assert config.github is not None and config.github.api_url == "https://api.github.com"
    assert (config.github.token, config.github.webhook_secret) == ("gh", "hook")
    assert config.github.app_id is None and config.github.private_key is None
    config = load_config(write(tmp_path, text), {"MY_TOKEN": ""})
    assert config.web.token is None and config.github is not None
    assert config.github.token is None and config.github.webhook_secret is None


@pytest.mark.parametrize("text, expected", [
    # wrong types and values
    ('[[hosts]]\nname = "h"\nslots = "four"\n' + REPO,
     ':hosts[0].slots: must be a positive integer, got "four"'),
    ('[[hosts]]\nname = "h"\nslots = true\n' + REPO,
     ":hosts[0].slots: must be a positive integer, got true"),
    ('[[hosts]]\nname = "h"\nslots = 1979-05-27\n' + REPO,
     ":hosts[0].slots: must be a positive integer, got 1979-05-27"),
    ('[[hosts]]\nname = "h"\nport = 70000\n' + REPO,
     ":hosts[0].port: must be a port number (1-65535), got 70000"),
    ('[[hosts]]\nname = "h"\ntype = "docker"\n' + REPO,
     ':hosts[0].type: must be "local" or "ssh", got "docker"'),
    ('[[hosts]]\nname = "h"\nlabels = "gpu"\n' + REPO,
     ':hosts[0].labels: must be a list of non-empty strings, got "gpu"'),
    ('[[hosts]]\nname = "h"\nslot_env = { GPU = 1 }\n' + REPO,
     ":hosts[0].slot_env.GPU: must be a string, got 1"),
    ('[web]\npublic = "yes"\n' + REPO, ':web.public: must be true or false, got "yes"'),
    ('[server]\nlisten = "8080"\n' + REPO, ':server.listen: must be "host:port", got "8080"'),
    ('[server]\nlisten = "h:²"\n' + REPO, ':server.listen: must be "host:port", got "h:²"'),
    ('[server]\npublic_url = "ci.example.org"\n' + REPO,
     ':server.public_url: must be an http:// or https:// URL, got "ci.example.org"'),
    ('[server]\ndata_dir = "~no-such-user-x/d"\n' + REPO,
     ':server.data_dir: cannot expand ~ in "~no-such-user-x/d"'),
    ('[server]\ndata_dir = 5\n' + REPO, ":server.data_dir: must be a string, got 5"),
    ('server = 1\n' + REPO, ":server: must be a table, got 1"),
    ('[github]\napp_id = 3\n' + REPO, ":github.app_id: app_id and private_key_file go together"),
    (REPO + "weight = 0\n", ":repos[0].weight: must be a positive number, got 0"),
    (REPO + "weight = inf\n", ":repos[0].weight: must be a positive number, got inf"),
    (REPO + "retries = -1\n", ":repos[0].retries: must be an integer >= 0, got -1"),
    (REPO + "max_running = 1.5\n", ":repos[0].max_running: must be an integer >= 0, got 1.5"),
    (REPO + 'pull_requests = "true"\n',
     ':repos[0].pull_requests: must be true or false, got "true"'),
    (REPO + 'schedule = ""\n', ':repos[0].schedule: must be a non-empty string, got ""'),
    (REPO + 'github = "gentoo"\n', ':repos[0].github: must be "owner/name", got "gentoo"'),
    (REPO + 'env = { "1X" = "a" }\n',
     ":repos[0].env.1X: is not a valid environment variable name"),
    ("repos = [1]\n", ":repos[0]: must be a table, got 1"),
    # durations and sizes
    (REPO + 'timeout = "ten minutes"\n',
     ':repos[0].timeout: must be a duration like "90s", "5m" or "2h", got "ten minutes"'),
    ('[[hosts]]\nname = "h"\ngrace = -5\n' + REPO,
     ':hosts[0].grace: must be a duration like "90s", "5m" or "2h", got -5'),
    ('[server]\nlog_retention = "400000d"\n' + REPO,
     ':server.log_retention: must be a duration of at most 1000 years, got "400000d"'),
    (REPO + "poll = 1" + "0" * 400 + "\n",
     ":repos[0].poll: must be a duration of at most 1000 years, got 1" + "0" * 400),
    ('[server]\nmax_log_bytes = "lots"\n' + REPO,
     ':server.max_log_bytes: must be a size like "50MB" or "512KiB", got "lots"'),
    # unknown keys, at each level
    ('colour = "red"\n' + REPO, ":colour: unknown key"),
    ('[plugins]\nx = 1\n' + REPO, ":plugins: unknown key"),
    ('[server]\nlisten_on = "x"\n' + REPO, ":server.listen_on: unknown key"),
    ('[web]\ntoken = "x"\n' + REPO, ":web.token: unknown key"),
    ('[github]\nsecret = "x"\n' + REPO, ":github.secret: unknown key"),
    ('[[hosts]]\nname = "a"\n[[hosts]]\nname = "b"\nslot = 1\n' + REPO,
     ":hosts[1].slot: unknown key"),
    (REPO + 'brnches = ["main"]\n', ":repos[0].brnches: unknown key"),
    # names
    ('[[hosts]]\nname = "h"\n[[hosts]]\nname = "h"\n' + REPO, ':hosts[1].name: duplicate name "h"'),
    (REPO + REPO, ':repos[1].name: duplicate name "r"'),
    (REPO.replace('"r"', '"a b"'),
     ':repos[0].name: must be a name of [a-zA-Z0-9._-]+, got "a b"'),
    ('[[hosts]]\nname = "h/1"\n' + REPO,
     ':hosts[0].name: must be a name of [a-zA-Z0-9._-]+, got "h/1"'),
    ('[[hosts]]\naddress = "x"\n' + REPO, ":hosts[0].name: required"),
    # hosts and repos that can't work
    ('[[hosts]]\nname = "h"\ntype = "ssh"\n' + REPO, ":hosts[0].address: required for an SSH host"),
    ('[[hosts]]\nname = "h"\ntype = "local"\naddress = "x"\n' + REPO,
     ':hosts[0].address: not allowed with type = "local"'),
    ('[[repos]]\nname = "r"\nscript = "x"\n', ":repos[0].url: required"),
    (REPO.replace("https://example.org/r.git", "~no-such-user-x/r"),
     ':repos[0].url: cannot expand ~ in "~no-such-user-x/r"'),
    ('[[repos]]\nname = "r"\nurl = "u"\npipeline_file = ""\n',
     ":repos[0].script: required when pipeline_file is empty"),
    # secrets
    (REPO + 'secrets = { T = { env = "SHORT" } }\n',
     ":repos[0].secrets.T: is shorter than 4 characters: masking it in logs would garble them"),
    (REPO + 'secrets = { PYPI_TOKEN = { env = "PYPI_TOKEN" } }\n',
     ":repos[0].secrets.PYPI_TOKEN: environment variable PYPI_TOKEN is not set"),
    (REPO + 'secrets = { T = { file = "missing.txt" } }\n',
     ":repos[0].secrets.T: cannot read missing.txt: No such file or directory"),
    (REPO + 'secrets = { T = "literal" }\n',
     ':repos[0].secrets.T: must be { env = "VAR" } or { file = "path" }, got "literal"'),
    (REPO + 'secrets = { T = { env = 1 } }\n',
     ':repos[0].secrets.T: must be { env = "VAR" } or { file = "path" }, got { env = 1 }'),
    (REPO + 'secrets = { T = { file = "binary" } }\n', ":repos[0].secrets.T: cannot read binary: "
     "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    ('[github]\napp_id = 1\nprivate_key_file = "binary"\n' + REPO,
     ":github.private_key_file: cannot read {tmp}/binary: "
     "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    # untrusted builds (SPEC §5a)
    (REPO + 'isolation = "some"\n', ':repos[0].isolation: must be "untrusted" or "all", got "some"'),
    (REPO + 'fork_pull_requests = "yes"\n', ':repos[0].fork_pull_requests: must be "build",'
     ' "approve" or "ignore", got "yes"'),
    (REPO + 'image = "a b"\n',
     ':repos[0].image: must be an image name (no spaces, no leading -), got "a b"'),
    (REPO + 'image = "--privileged"\n',
     ':repos[0].image: must be an image name (no spaces, no leading -), got "--privileged"'),
    (REPO + 'network = "off"\n', ':repos[0].network: must be true or false, got "off"'),
    ('[[hosts]]\nname = "h"\nlabels = ["asyncci:sandbox"]\n' + REPO,
     ":hosts[0].labels: labels starting with 'asyncci:' are asyncci's own, got \"asyncci:sandbox\""),
    ('[[hosts]]\nname = "h"\ncontainer_command = []\n' + REPO,
     ':hosts[0].container_command: must be a non-empty list of strings, like ["podman"]'),
    ('[[hosts]]\nname = "h"\nuntrusted = 0\n' + REPO,
     ":hosts[0].untrusted: must be true or false, got 0"),
    # a NUL would hang the wrapper that bash reads; names bash or the wrapper keep
    (REPO + 'env = { X = "a\\u0000b" }\n', ":repos[0].env.X: must not hold a NUL character"),
    (REPO + 'env = { SHELLOPTS = "x" }\n',
     ":repos[0].env.SHELLOPTS: is a name bash or asyncci keeps for itself"),
    (REPO + 'secrets = { AC_V_X = { env = "SHORT" } }\n',
     ":repos[0].secrets.AC_V_X: is a name bash or asyncci keeps for itself"),
])
def test_each_error_names_its_key(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "binary").write_bytes(b"\xff\xfe secret")
    assert errors(tmp_path, text, {"SHORT": "abc"}) == [expected.replace("{tmp}", str(tmp_path))]


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    text = ('[server]\nlisten = 1\nlog_retention = "forever"\n'
            '[[hosts]]\nslots = 0\nnope = 1\n'
            '[[repos]]\nname = "r"\nsecrets = { A = { env = "UNSET" } }\n'
            'env = { "A B" = "x", C = 2 }\n')
    assert errors(tmp_path, text) == [
        ":server.listen: must be a string, got 1",
        ':server.log_retention: must be a duration like "90s", "5m" or "2h", got "forever"',
        ":hosts[0].name: required",
        ":hosts[0].slots: must be a positive integer, got 0",
        ":hosts[0].nope: unknown key",
        ":repos[0].url: required",
        ':repos[0].env."A B": is not a valid environment variable name',
        ":repos[0].env.C: must be a string, got 2",
        ":repos[0].secrets.A: environment variable UNSET is not set",
    ]


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    [error] = errors(tmp_path, "[server\n")
    assert error.startswith(": invalid TOML: ") and "line 1" in error
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.toml", {})
    assert caught.value.errors == [
        f"{tmp_path / 'missing.toml'}: cannot read: No such file or directory"]


@pytest.mark.parametrize("value, seconds", [
    ("90s", 90), ("5m", 300), ("2h", 7200), ("30d", 30 * 86400), ("1h30m", 5400),
    ("1d2h3m4s", 93784), ("1.5h", 5400), (45, 45), (0, 0), ("0", 0), ("5", 5)])
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [
    "", "m5", "5 m", "5x", "-1s", "1h 30m", "²", "400000d", True, 1.5, -1, 10**20, None])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError, match="must be a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value, size", [
    ("50MB", 50 * 10**6), ("50MiB", 50 * 2**20), ("100B", 100), ("2KB", 2000),
    ("2KiB", 2048), ("1GB", 10**9), ("1GiB", 2**30), (1024, 1024), ("1024", 1024)])
def test_sizes(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["0MB", "lots", "5TB", "5mb", "MB", -1, 0, True, 1.5])
def test_bad_sizes(value: object) -> None:
    with pytest.raises(ValueError, match="must be a size"):
        parse_size(value)


@pytest.mark.parametrize("schedule, problem", [
    ("*/20 * * * *", None), ("0 0 * * MON-FRI", None),
    ("every day", "every day"), ("61 * * * *", "61 * * * *"),
    ("* * * * * *", "* * * * * *"), ("@daily", "@daily"), ("* * * *", "* * * *"),
])
def test_a_schedule_is_checked_before_the_server_starts(
        tmp_path: Path, schedule: str, problem: str | None) -> None:
    """croniter is no stdlib, so `asyncci check` and `serve` check schedules (through
    `validate`) once the config has loaded; five fields only, as SPEC's cron has."""
    path = write(tmp_path, REPO + f'schedule = "{schedule}"\n')
    expected = [] if problem is None else [
        f'{path}:repos[0].schedule: must be a cron expression of 5 fields like "*/20 * * * *",'
        f' got "{problem}"']
    assert validate(load_config(path, {})) == expected


@pytest.mark.parametrize("section", KEYS)
def test_the_loader_reads_every_key_of_its_table(tmp_path: Path, section: str) -> None:
    """No key in `KEYS` is accepted and ignored: a date, which no key takes, is refused
    under each one, and none is called unknown."""
    table = f"[[{section}]]" if section in ("hosts", "repos") else f"[{section}]"
    text = table + "\n" + "".join(f"{key} = 1979-05-27\n" for key in KEYS[section])
    found = errors(tmp_path, text + (REPO if section != "repos" else ""))
    index = "[0]" if section in ("hosts", "repos") else ""
    for key in KEYS[section]:
        assert any(e.startswith(f":{section}{index}.{key}: ") for e in found), key
    assert not [e for e in found if "unknown key" in e]


def test_local_hosts_hide_the_servers_own_files(tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_text("a-file-secret")
    config = load_config(write(tmp_path, '[[hosts]]\nname = "l"\n[[hosts]]\nname = "s"\n'
                               'address = "b1"\nkey_file = "id_ed25519"\n'
                               '[[repos]]\nname = "r"\nurl = "u"\n'
                               'script = "x"\nsecrets = { T = { file = "token.txt" } }\n'), {})
    local, ssh = config.hosts
    # The key to the other build hosts too: a fork's job here would log in there unconfined.
    assert set(local.hidden) == {str(tmp_path / "asyncci-data"), str(tmp_path / "asyncci.toml"),
                                 str(tmp_path / "token.txt"), str(tmp_path / "id_ed25519")}
    assert ssh.hidden == () and ssh.container_command == ("podman",) and ssh.untrusted
    repo = config.repos[0]
    assert (repo.isolation, repo.image, repo.network, repo.fork_pull_requests) == \
        ("untrusted", "", True, "build")
