"""The config file (TOML) → frozen dataclasses, with every error found in one pass.

Errors read `PATH:KEY: message`, array indexes from 0; unknown keys are errors: `KEYS` is
every key there is, and the loader reads each of them and refuses any other. Secrets are
read here, from the environment variables or files that the config names, never from the
config itself. This module reads the config file and those secret files and nothing else;
it never writes: callers exit on `ConfigError` before touching anything.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .checks import (
    ConfigError, Reader, Table, array, boolean, check, env_name_problem, env_table, http_url,
    image, isolation, label_names, nonempty, nonnegative_int, parse_duration, parse_size,
    positive_int, refuse_nul, show, string, strings, subkey,
)

NAME_RE = re.compile(r"[a-zA-Z0-9._-]+")
MIN_SECRET = 4  # SPEC §5: shorter values can't be masked without garbling the log
# Every key of each table, as the README lists them. The loader reads each and refuses any
# other, and tests/test_docs.py checks the README and config.example.toml show each one.
KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "server": ("listen", "public_url", "data_dir", "log_retention", "max_log_bytes",
               "max_artifact_bytes"),
    "web": ("public", "token_env"),
    "github": ("webhook_secret_env", "token_env", "app_id", "private_key_file", "api_url"),
    "hosts": ("name", "type", "address", "port", "user", "key_file", "known_hosts", "slots",
              "labels", "workdir", "slot_env", "prepare", "grace", "container_command",
              "container_options", "slot_devices", "untrusted"),
    "repos": ("name", "url", "branches", "pull_requests", "poll", "schedule", "github",
              "weight", "max_running", "retries", "labels", "timeout", "build_every_commit",
              "keep_superseded", "pipeline_file", "isolation", "image", "network",
              "fork_pull_requests", "env", "secrets", "script"),
})


@dataclass(frozen=True)
class ServerConfig:
    listen_host: str
    listen_port: int
    public_url: str
    data_dir: Path
    log_retention: float
    max_log_bytes: int
    max_artifact_bytes: int

    @property
    def artifacts_dir(self) -> Path:
        """Where each job's artifacts are kept, under its id (DESIGN's storage layout)."""
        return self.data_dir / "artifacts"


@dataclass(frozen=True)
class WebConfig:
    public: bool
    token: str | None


@dataclass(frozen=True)
class GitHubConfig:
    webhook_secret: str | None
    token: str | None
    app_id: int | None
    private_key: str | None
    api_url: str
    private_key_file: Path | None


@dataclass(frozen=True)
class HostConfig:
    name: str
    local: bool
    address: str | None
    port: int
    user: str | None
    key_file: Path | None
    known_hosts: Path | None
    slots: int
    labels: tuple[str, ...]
    # A string, not a Path: for an SSH host it is a path on the host (relative to the
    # remote home when not absolute), which this machine's Path must not reinterpret.
    workdir: str
    slot_env: Mapping[str, str]
    prepare: str | None
    grace: float
    container_command: tuple[str, ...]
    container_options: tuple[str, ...]
    slot_devices: tuple[str, ...]  # `{slot}` not yet replaced
    untrusted: bool  # false: untrusted builds never run here (SPEC §5a)
    # The server's own files, hidden from sandboxed jobs on a local host (its data_dir,
    # its config and the files secrets are read from): the sandbox shows the rest of `/`.
    hidden: tuple[str, ...] = ()

    @property
    def engine(self) -> str:
        """The container engine's name, as reasons and `asyncci check` say it."""
        return self.container_command[0].rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Secret:
    name: str
    value: str
    file: Path | None = None  # where it was read from, if from a file


@dataclass(frozen=True)
class RepoConfig:
    name: str
    url: str
    branches: tuple[str, ...]
    pull_requests: bool
    poll: float
    schedule: str | None
    github: str | None
    weight: float
    max_running: int
    retries: int
    labels: tuple[str, ...]
    timeout: float | None
    build_every_commit: bool
    keep_superseded: tuple[str, ...]
    pipeline_file: str
    env: Mapping[str, str]
    secrets: tuple[Secret, ...]
    script: str
    isolation: str  # "all": every job runs confined (SPEC §5a)
    image: str  # run every job in a fresh container of this image
    network: bool  # false: confined jobs get no network
    fork_pull_requests: str  # "build" | "approve" | "ignore"

    def redact(self, text: str) -> str:
        return redact_credentials(text, self.url)


def redact_credentials(text: str, url: str) -> str:
    """`text` with the credentials `url` holds (`https://bot:TOKEN@host/x.git`) replaced by
    `***` wherever git quoted them, with or without the scheme; a bare user of an SSH URL
    (`ssh://git@host`) is no secret and stays."""
    userinfo = url.partition("://")[2].partition("/")[0].rpartition("@")[0]
    if not userinfo or ":" not in userinfo and not url.startswith(("http://", "https://")):
        return text
    return text.replace(userinfo + "@", "***@")


@dataclass(frozen=True)
class Config:
    path: Path
    server: ServerConfig
    web: WebConfig
    github: GitHubConfig | None
    hosts: tuple[HostConfig, ...]
    repos: tuple[RepoConfig, ...]

    def repo(self, name: str) -> RepoConfig | None:
        return next((r for r in self.repos if r.name == name), None)


_name = check(str, "a name of [a-zA-Z0-9._-]+", NAME_RE.fullmatch)
_port = check(int, "a port number (1-65535)", lambda v: 0 < v < 65536)
_host_type = check(str, '"local" or "ssh"', lambda v: v in ("local", "ssh"))
_github_repo = check(str, '"owner/name"', re.compile(r"[\w.-]+/[\w.-]+").fullmatch)
_fork_pull_requests = check(str, '"build", "approve" or "ignore"',
                            lambda v: v in ("build", "approve", "ignore"))


def _command(value: Any) -> tuple[str, ...]:
    words = strings(value)
    if not words:
        raise ValueError('must be a non-empty list of strings, like ["podman"]')
    return words


def _weight(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
        raise ValueError(f"must be a positive number, got {show(value)}")
    return float(value)


def _listen(value: Any) -> tuple[str, int]:
    host, _, port = string(value).rpartition(":")
    if not host or not port.isdecimal() or not 0 < int(port) < 65536:
        raise ValueError(f'must be "host:port", got {show(value)}')
    return host.strip("[]"), int(port)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and check the whole config; raise `ConfigError` with every problem found."""
    reader = Reader(str(path), os.environ if environ is None else environ)
    try:
        data = tomllib.loads(Path(path).read_bytes().decode())
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}: invalid TOML: {e}"]) from None
    refuse_nul(reader, data)
    top = Table(reader, data, "", KEYS)
    server = _server(reader, top.get("server", {}, lambda v: v))
    web = _web(reader, top.get("web", {}, lambda v: v))
    github = top.get("github", None, lambda v: _github(reader, v))
    hosts = top.get("hosts", (), lambda v: array(reader, v, "hosts", KEYS["hosts"],
                                                 lambda t: _host(t, server)))
    repos = top.get("repos", (), lambda v: array(reader, v, "repos", KEYS["repos"], _repo))
    top.done()
    reader.finish()
    # Without [[hosts]], the server's own machine is the one host: read as if written so.
    hosts = hosts or (_host(Table(reader, {"name": "local"}, "hosts[0]", KEYS["hosts"]), server),)
    # What the server holds is hidden from the sandboxes of the hosts on its own machine.
    hidden = tuple(dict.fromkeys(str(p) for p in (
        server.data_dir, Path(path).absolute(), github and github.private_key_file,
        *(h.key_file for h in hosts), *(s.file for r in repos for s in r.secrets)) if p))
    hosts = tuple(replace(h, hidden=hidden) if h.local else h for h in hosts)
    return Config(Path(path), server, web, github, hosts, repos)


def _server(reader: Reader, value: Any) -> ServerConfig:
    t = Table.of(reader, value, "server", KEYS["server"])
    host, port = t.get("listen", ("127.0.0.1", 8080), _listen)
    url_host = f"[{host}]" if ":" in host else host
    config = ServerConfig(
        listen_host=host,
        listen_port=port,
        public_url=t.get("public_url", f"http://{url_host}:{port}", http_url).rstrip("/"),
        data_dir=t.get("data_dir", reader.file("asyncci-data"), reader.file),
        log_retention=t.get("log_retention", parse_duration("30d"), parse_duration),
        max_log_bytes=t.get("max_log_bytes", parse_size("50MB"), parse_size),
        max_artifact_bytes=t.get("max_artifact_bytes", parse_size("1GB"), parse_size),
    )
    t.done()
    return config


def _web(reader: Reader, value: Any) -> WebConfig:
    t = Table.of(reader, value, "web", KEYS["web"])
    config = WebConfig(public=t.get("public", True, boolean),
                       token=reader.env(t.get("token_env", "ASYNCCI_TOKEN", nonempty)))
    t.done()
    return config


def _github(reader: Reader, value: Any) -> GitHubConfig:
    t = Table.of(reader, value, "github", KEYS["github"])
    app_id = t.get("app_id", None, positive_int)
    key_file = t.get("private_key_file", None, reader.file)
    if (app_id is None) != (key_file is None):
        t.error("app_id", "app_id and private_key_file go together")
    private_key = None
    if key_file is not None:
        try:
            private_key = key_file.read_text()
        except (OSError, ValueError) as e:
            t.error("private_key_file",
                    f"cannot read {key_file}: {getattr(e, 'strerror', None) or e}")
    # A GitHub App makes its own tokens: only a token_env written out is read beside it.
    token_env = t.get("token_env", "GITHUB_TOKEN" if app_id is None else None, nonempty)
    config = GitHubConfig(
        webhook_secret=reader.env(t.get("webhook_secret_env", "ASYNCCI_WEBHOOK_SECRET",
                                        nonempty)),
        token=reader.env(token_env),
        app_id=app_id,
        private_key=private_key,
        api_url=t.get("api_url", "https://api.github.com", http_url).rstrip("/"),
        private_key_file=key_file,
    )
    t.done()
    return config


def _host(t: Table, server: ServerConfig) -> HostConfig:
    reader = t.reader
    name = t.required("name", _name)
    kind = t.get("type", None, _host_type)
    address = t.get("address", None, nonempty)
    local = kind == "local" or (kind is None and address is None)
    if kind == "ssh" and address is None:
        t.error("address", "required for an SSH host")
    if kind == "local" and address is not None:
        t.error("address", 'not allowed with type = "local"')
    workdir = t.get("workdir", None, nonempty)
    if local:
        workdir = str(reader.file(workdir) if workdir else server.data_dir / "work" / name)
    return HostConfig(
        name=name,
        local=local,
        address=address,
        port=t.get("port", 22, _port),
        user=t.get("user", None, nonempty),
        key_file=t.get("key_file", None, reader.file),
        known_hosts=t.get("known_hosts", None, reader.file),
        slots=t.get("slots", (os.cpu_count() or 1) if local else 1, positive_int),
        labels=t.get("labels", (), label_names),
        workdir=workdir or "asyncci-work",
        slot_env=t.get("slot_env", MappingProxyType({}),
                       lambda v: env_table(reader, t.sub("slot_env"), v)),
        prepare=t.get("prepare", None, nonempty),
        grace=t.get("grace", 60.0, parse_duration),
        container_command=t.get("container_command", ("podman",), _command),
        container_options=t.get("container_options", (), strings),
        slot_devices=t.get("slot_devices", (), strings),
        untrusted=t.get("untrusted", True, boolean),
    )


def _repo(t: Table) -> RepoConfig:
    reader = t.reader
    name = t.required("name", _name)
    url = t.required("url", nonempty)
    # git's own rule: a colon before any slash makes a URL or scp-like "host:path".
    if url and not re.match(r"[^/]*:", url):
        try:
            if (local := reader.file(url)).exists():
                url = str(local.resolve())
        except ValueError as e:
            t.error("url", str(e))
    pipeline_file = t.get("pipeline_file", ".asyncci.toml", string)
    script = t.get("script", "", string)
    if not script.strip() and not pipeline_file:
        t.error("script", "required when pipeline_file is empty")
    return RepoConfig(
        name=name,
        url=url,
        branches=t.get("branches", ("main", "master"), strings),
        pull_requests=t.get("pull_requests", False, boolean),
        poll=t.get("poll", 60.0, parse_duration),
        schedule=t.get("schedule", None, nonempty),  # checked in triggers/cron.py (croniter)
        github=t.get("github", None, _github_repo),
        weight=t.get("weight", 1.0, _weight),
        max_running=t.get("max_running", 0, nonnegative_int),
        retries=t.get("retries", 2, nonnegative_int),
        labels=t.get("labels", (), label_names),
        timeout=t.get("timeout", 1800.0, parse_duration) or None,
        build_every_commit=t.get("build_every_commit", False, boolean),
        keep_superseded=t.get("keep_superseded", ("main", "master"), strings),
        pipeline_file=pipeline_file,
        env=t.get("env", MappingProxyType({}), lambda v: env_table(reader, t.sub("env"), v)),
        secrets=t.get("secrets", (), lambda v: _secrets(reader, t.sub("secrets"), v)),
        script=script,
        isolation=t.get("isolation", "untrusted", isolation),
        image=t.get("image", "", image),
        network=t.get("network", True, boolean),
        fork_pull_requests=t.get("fork_pull_requests", "build", _fork_pull_requests),
    )


def _secrets(reader: Reader, key: str, value: Any) -> tuple[Secret, ...]:
    if not isinstance(value, dict):
        raise ValueError('must be a table like { NAME = { env = "VAR" } }, got ' + show(value))
    secrets = []
    for name, source in value.items():
        where = subkey(key, name)
        if problem := env_name_problem(name):
            reader.error(where, problem)
        elif (not isinstance(source, dict) or len(source) != 1
              or not all(isinstance(v, str) and v for v in source.values())
              or not source.keys() <= {"env", "file"}):
            reader.error(where, 'must be { env = "VAR" } or { file = "path" }, got '
                                + show(source))
        elif (secret := _secret_value(reader, where, source)) is None:
            pass
        elif len(secret) < MIN_SECRET:
            reader.error(where, f"is shorter than {MIN_SECRET} characters: masking it in logs"
                                " would garble them")
        else:
            secrets.append(Secret(name, secret, reader.file(source["file"])
                                  if "file" in source else None))
    return tuple(secrets)


def _secret_value(reader: Reader, where: str, source: dict[str, str]) -> str | None:
    if "env" in source:
        if source["env"] not in reader.environ:
            reader.error(where, f"environment variable {source['env']} is not set")
        return reader.environ.get(source["env"])
    try:
        return reader.file(source["file"]).read_text().rstrip("\n")
    except (OSError, ValueError) as e:  # ValueError: undecodable, or a NUL in the path
        reader.error(where, f"cannot read {source['file']}: {getattr(e, 'strerror', None) or e}")
        return None
