"""The config file (TOML) → frozen dataclasses, with every error found in one pass.

Errors read `PATH:KEY: message`, array indexes from 0; unknown keys are errors. Secrets
are read here, from the environment variables or files that the config names, never from
the config itself. This module reads the config file and those secret files and nothing
else; it never writes: callers exit on `ConfigError` before touching anything.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date, time
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

NAME_RE = re.compile(r"[a-zA-Z0-9._-]+")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MIN_SECRET = 4  # SPEC §5: shorter values can't be masked without garbling the log
MAX_DURATION = 1000 * 365 * 86400  # longer overflows datetime arithmetic (year 1..9999)
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_RE = re.compile(r"(\d+)\s*([KMG]i?B|B)?")
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9,
               "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
T = TypeVar("T")
D = TypeVar("D")


class ConfigError(Exception):
    """One or more problems in the config, each a `PATH:KEY: message` line."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def _show(value: object) -> str:
    """A value as TOML writes it: `"four"`, `true`, `["a", 1]`, `{ env = 1 }`, `1979-05-27`."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(_show, value)) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_key('', k)} = {_show(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, (date, time)):
        return value.isoformat()
    return repr(value)  # int, float (inf and nan read as in TOML)


def parse_duration(value: object) -> float:
    """"90s", "5m", "2h", "30d", "1h30m", "0", or an integer of seconds."""
    seconds: float | None = None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        seconds = float(min(value, MAX_DURATION + 1))
    elif isinstance(value, str):
        if value.isdecimal():
            seconds = float(value)
        elif (parts := _DURATION_RE.findall(value)) and "".join(n + u for n, u in parts) == value:
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds is None:
        raise ValueError(f'must be a duration like "90s", "5m" or "2h", got {_show(value)}')
    if seconds > MAX_DURATION:
        raise ValueError(f"must be a duration of at most 1000 years, got {_show(value)}")
    return seconds


def parse_size(value: object) -> int:
    """"50MB" (decimal), "50MiB" (binary), "100B", or an integer of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (m := _SIZE_RE.fullmatch(value.strip())) and int(m[1]) > 0:
        return int(m[1]) * _SIZE_UNITS[m[2] or "B"]
    raise ValueError(f'must be a size like "50MB" or "512KiB", got {_show(value)}')


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
    private_key_file: Path | None = None


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
    container_command: tuple[str, ...] = ("podman",)
    container_options: tuple[str, ...] = ()
    slot_devices: tuple[str, ...] = ()  # `{slot}` not yet replaced
    untrusted: bool = True  # false: untrusted builds never run here (SPEC §5a)
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
    isolation: str = "untrusted"  # "all": every job runs confined (SPEC §5a)
    image: str = ""  # run every job in a fresh container of this image
    network: bool = True  # false: confined jobs get no network
    fork_pull_requests: str = "build"  # "build" | "approve" | "ignore"

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


def _key(parent: str, name: str) -> str:
    name = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _show(name)
    return f"{parent}.{name}" if parent else name


class _Reader:
    """The errors found so far, and what reading needs: where relative paths start, and
    the environment that secrets come from."""

    def __init__(self, path: str, environ: Mapping[str, str]) -> None:
        self.path, self.environ = path, environ
        self.base = Path(path).parent
        self.errors: list[str] = []

    def error(self, key: str, message: str) -> None:
        self.errors.append(f"{self.path}:{key}: {message}" if key else f"{self.path}: {message}")

    def file(self, value: Any) -> Path:
        try:
            path = Path(_str(value)).expanduser()
        except RuntimeError:  # "~user" of no such user, or no home directory
            raise ValueError(f"cannot expand ~ in {_show(value)}") from None
        return (self.base / path).absolute()

    def env(self, variable: str | None) -> str | None:
        return (self.environ.get(variable) or None) if variable else None


class _Table:
    """One TOML table: each getter records a bad value under its key and returns the
    default instead, so one pass finds every problem; `done` reports the unknown keys."""

    def __init__(self, reader: _Reader, data: dict[str, Any], key: str) -> None:
        self.reader, self.data, self.key = reader, data, key
        self.seen: set[str] = set()

    def sub(self, name: str) -> str:
        return _key(self.key, name)

    def error(self, name: str, message: str) -> None:
        self.reader.error(self.sub(name), message)

    def get(self, name: str, default: D, convert: Callable[[Any], T]) -> T | D:
        self.seen.add(name)
        if name not in self.data:
            return default
        try:
            return convert(self.data[name])
        except ValueError as e:
            self.error(name, str(e))
            return default

    def required(self, name: str, convert: Callable[[Any], str]) -> str:
        if name not in self.data:
            self.error(name, "required")
        return self.get(name, "", convert)

    def done(self) -> None:
        for name in self.data:
            if name not in self.seen:
                self.error(name, "unknown key")


def _table(reader: _Reader, data: Any, key: str) -> _Table:
    if not isinstance(data, dict):
        reader.error(key, f"must be a table, got {_show(data)}")
        data = {}
    return _Table(reader, data, key)


def _check(kind: type[T], what: str, ok: Callable[[T], object] | None = None
           ) -> Callable[[Any], T]:
    """A converter that lets a value of type `kind` pass when `ok(value)`: TOML already
    typed it, so checking is all there is to do (a bool is not taken for an int)."""
    def convert(value: Any) -> T:
        if (not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool)
                or (ok is not None and not ok(value))):
            raise ValueError(f"must be {what}, got {_show(value)}")
        return value
    return convert


_str = _check(str, "a string")
_nonempty = _check(str, "a non-empty string", str.strip)
_name = _check(str, "a name of [a-zA-Z0-9._-]+", NAME_RE.fullmatch)
_bool = _check(bool, "true or false")
_positive_int = _check(int, "a positive integer", lambda v: v > 0)
_count = _check(int, "an integer >= 0", lambda v: v >= 0)
_port = _check(int, "a port number (1-65535)", lambda v: 0 < v < 65536)
_host_type = _check(str, '"local" or "ssh"', lambda v: v in ("local", "ssh"))
_schedule = _check(str, "a cron expression of 5 fields", lambda v: len(v.split()) == 5)
_url = _check(str, "an http:// or https:// URL", re.compile(r"https?://[^/\s]+\S*").fullmatch)
_github_repo = _check(str, '"owner/name"', re.compile(r"[\w.-]+/[\w.-]+").fullmatch)
_labels = _check(list, "a list of non-empty strings",
                 lambda v: all(isinstance(s, str) and s for s in v))
_isolation = _check(str, '"untrusted" or "all"', lambda v: v in ("untrusted", "all"))
_fork_pull_requests = _check(str, '"build", "approve" or "ignore"',
                             lambda v: v in ("build", "approve", "ignore"))
_image = _check(str, "an image name without spaces", lambda v: not v or v.split() == [v])
RESERVED_LABEL = "asyncci:"  # what hosts earn by probing (SPEC §5a routing), never configured


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(_labels(value))


def _label_names(value: Any) -> tuple[str, ...]:
    labels = _strings(value)
    if reserved := [label for label in labels if label.startswith(RESERVED_LABEL)]:
        raise ValueError(f"labels starting with {RESERVED_LABEL!r} are asyncci's own,"
                         f" got {_show(reserved[0])}")
    return labels


def _command(value: Any) -> tuple[str, ...]:
    words = _strings(value)
    if not words:
        raise ValueError('must be a non-empty list of strings, like ["podman"]')
    return words


def _weight(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
        raise ValueError(f"must be a positive number, got {_show(value)}")
    return float(value)


def _listen(value: Any) -> tuple[str, int]:
    host, _, port = _str(value).rpartition(":")
    if not host or not port.isdecimal() or not 0 < int(port) < 65536:
        raise ValueError(f'must be "host:port", got {_show(value)}')
    return host.strip("[]"), int(port)


def _env_table(reader: _Reader, key: str, value: Any) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a table of strings, got {_show(value)}")
    env = {}
    for name, text in value.items():
        if not ENV_NAME_RE.fullmatch(name):
            reader.error(_key(key, name), "is not a valid environment variable name")
        elif not isinstance(text, str):
            reader.error(_key(key, name), f"must be a string, got {_show(text)}")
        else:
            env[name] = text
    return MappingProxyType(env)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and check the whole config; raise `ConfigError` with every problem found."""
    reader = _Reader(str(path), os.environ if environ is None else environ)
    try:
        data = tomllib.loads(Path(path).read_bytes().decode())
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}: invalid TOML: {e}"]) from None
    top = _Table(reader, data, "")
    server = _server(reader, top.get("server", {}, lambda v: v))
    web = _table(reader, top.get("web", {}, lambda v: v), "web")
    web_config = WebConfig(public=web.get("public", True, _bool),
                           token=reader.env(web.get("token_env", "ASYNCCI_TOKEN", _nonempty)))
    web.done()
    github = top.get("github", None, lambda v: _github(reader, v))
    hosts = top.get("hosts", (), lambda v: _array(reader, v, "hosts",
                                                  lambda r, t: _host(r, t, server)))
    repos = top.get("repos", (), lambda v: _array(reader, v, "repos",
                                                  lambda r, t: _repo(r, t, server)))
    top.done()
    if reader.errors:
        raise ConfigError(reader.errors)
    hosts = hosts or (HostConfig("local", True, None, 22, None, None, None, os.cpu_count() or 1,
                                 (), str(server.data_dir / "work"), MappingProxyType({}),
                                 None, 60.0),)
    # What the server holds is hidden from the sandboxes of the hosts on its own machine.
    hidden = tuple(dict.fromkeys(str(p) for p in (
        server.data_dir, Path(path).absolute(), github and github.private_key_file,
        *(s.file for r in repos for s in r.secrets)) if p))
    hosts = tuple(replace(h, hidden=hidden) if h.local else h for h in hosts)
    return Config(Path(path), server, web_config, github, hosts, repos)


def _array(reader: _Reader, value: Any, key: str, read: Callable[[_Reader, _Table], T]
           ) -> tuple[T, ...]:
    if not isinstance(value, list):
        raise ValueError(f"must be an array of tables ([[{key}]]), got {_show(value)}")
    items: list[T] = []
    names: set[str] = set()
    for i, data in enumerate(value):
        if not isinstance(data, dict):
            reader.error(f"{key}[{i}]", f"must be a table, got {_show(data)}")
            continue
        table = _Table(reader, data, f"{key}[{i}]")
        items.append(read(reader, table))
        table.done()
        if isinstance(name := data.get("name"), str) and name in names:
            table.error("name", f"duplicate name {_show(name)}")
        elif isinstance(name, str):
            names.add(name)
    return tuple(items)


def _server(reader: _Reader, value: Any) -> ServerConfig:
    t = _table(reader, value, "server")
    host, port = t.get("listen", ("127.0.0.1", 8080), _listen)
    url_host = f"[{host}]" if ":" in host else host
    config = ServerConfig(
        listen_host=host,
        listen_port=port,
        public_url=t.get("public_url", f"http://{url_host}:{port}", _url).rstrip("/"),
        data_dir=t.get("data_dir", reader.file("asyncci-data"), reader.file),
        log_retention=t.get("log_retention", parse_duration("30d"), parse_duration),
        max_log_bytes=t.get("max_log_bytes", parse_size("50MB"), parse_size),
        max_artifact_bytes=t.get("max_artifact_bytes", parse_size("1GB"), parse_size),
    )
    t.done()
    return config


def _github(reader: _Reader, value: Any) -> GitHubConfig:
    t = _table(reader, value, "github")
    app_id = t.get("app_id", None, _positive_int)
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
    token_env = t.get("token_env", "GITHUB_TOKEN" if app_id is None else None, _nonempty)
    config = GitHubConfig(
        webhook_secret=reader.env(t.get("webhook_secret_env", "ASYNCCI_WEBHOOK_SECRET",
                                        _nonempty)),
        token=reader.env(token_env),
        app_id=app_id,
        private_key=private_key,
        api_url=t.get("api_url", "https://api.github.com", _url).rstrip("/"),
        private_key_file=key_file,
    )
    t.done()
    return config


def _host(reader: _Reader, t: _Table, server: ServerConfig) -> HostConfig:
    name = t.required("name", _name)
    kind = t.get("type", None, _host_type)
    address = t.get("address", None, _nonempty)
    local = kind == "local" or (kind is None and address is None)
    if kind == "ssh" and address is None:
        t.error("address", "required for an SSH host")
    if kind == "local" and address is not None:
        t.error("address", 'not allowed with type = "local"')
    workdir = t.get("workdir", None, _nonempty)
    if local:
        workdir = str(reader.file(workdir) if workdir else server.data_dir / "work" / name)
    return HostConfig(
        name=name,
        local=local,
        address=address,
        port=t.get("port", 22, _port),
        user=t.get("user", None, _nonempty),
        key_file=t.get("key_file", None, reader.file),
        known_hosts=t.get("known_hosts", None, reader.file),
        slots=t.get("slots", (os.cpu_count() or 1) if local else 1, _positive_int),
        labels=t.get("labels", (), _label_names),
        workdir=workdir or "asyncci-work",
        slot_env=t.get("slot_env", MappingProxyType({}),
                       lambda v: _env_table(reader, t.sub("slot_env"), v)),
        prepare=t.get("prepare", None, _nonempty),
        grace=t.get("grace", 60.0, parse_duration),
        container_command=t.get("container_command", ("podman",), _command),
        container_options=t.get("container_options", (), _strings),
        slot_devices=t.get("slot_devices", (), _strings),
        untrusted=t.get("untrusted", True, _bool),
    )


def _repo(reader: _Reader, t: _Table, server: ServerConfig) -> RepoConfig:
    name = t.required("name", _name)
    url = t.required("url", _nonempty)
    # git's own rule: a colon before any slash makes a URL or scp-like "host:path".
    if url and not re.match(r"[^/]*:", url):
        try:
            if (local := reader.file(url)).exists():
                url = str(local.resolve())
        except ValueError as e:
            t.error("url", str(e))
    pipeline_file = t.get("pipeline_file", ".asyncci.toml", _str)
    script = t.get("script", "", _str)
    if not script.strip() and not pipeline_file:
        t.error("script", "required when pipeline_file is empty")
    return RepoConfig(
        name=name,
        url=url,
        branches=t.get("branches", ("main", "master"), _strings),
        pull_requests=t.get("pull_requests", False, _bool),
        poll=t.get("poll", 60.0, parse_duration),
        schedule=t.get("schedule", None, _schedule),
        github=t.get("github", None, _github_repo),
        weight=t.get("weight", 1.0, _weight),
        max_running=t.get("max_running", 0, _count),
        retries=t.get("retries", 2, _count),
        labels=t.get("labels", (), _label_names),
        timeout=t.get("timeout", 1800.0, parse_duration) or None,
        build_every_commit=t.get("build_every_commit", False, _bool),
        keep_superseded=t.get("keep_superseded", ("main", "master"), _strings),
        pipeline_file=pipeline_file,
        env=t.get("env", MappingProxyType({}), lambda v: _env_table(reader, t.sub("env"), v)),
        secrets=t.get("secrets", (), lambda v: _secrets(reader, t.sub("secrets"), v)),
        script=script,
        isolation=t.get("isolation", "untrusted", _isolation),
        image=t.get("image", "", _image),
        network=t.get("network", True, _bool),
        fork_pull_requests=t.get("fork_pull_requests", "build", _fork_pull_requests),
    )


def _secrets(reader: _Reader, key: str, value: Any) -> tuple[Secret, ...]:
    if not isinstance(value, dict):
        raise ValueError('must be a table like { NAME = { env = "VAR" } }, got ' + _show(value))
    secrets = []
    for name, source in value.items():
        where = _key(key, name)
        if not ENV_NAME_RE.fullmatch(name):
            reader.error(where, "is not a valid environment variable name")
        elif (not isinstance(source, dict) or len(source) != 1
              or not all(isinstance(v, str) and v for v in source.values())
              or not source.keys() <= {"env", "file"}):
            reader.error(where, 'must be { env = "VAR" } or { file = "path" }, got '
                                + _show(source))
        elif (secret := _secret_value(reader, where, source)) is None:
            pass
        elif len(secret) < MIN_SECRET:
            reader.error(where, f"is shorter than {MIN_SECRET} characters: masking it in logs"
                                " would garble them")
        else:
            secrets.append(Secret(name, secret, reader.file(source["file"])
                                  if "file" in source else None))
    return tuple(secrets)


def _secret_value(reader: _Reader, where: str, source: dict[str, str]) -> str | None:
    if "env" in source:
        if source["env"] not in reader.environ:
            reader.error(where, f"environment variable {source['env']} is not set")
        return reader.environ.get(source["env"])
    try:
        return reader.file(source["file"]).read_text().rstrip("\n")
    except (OSError, ValueError) as e:  # ValueError: undecodable, or a NUL in the path
        reader.error(where, f"cannot read {source['file']}: {getattr(e, 'strerror', None) or e}")
        return None


# -- the in-repo pipeline file (SPEC §2) --------------------------------------------------

MAX_PIPELINE_JOBS = 100  # after matrix expansion: a typo in a matrix must not flood the queue


@dataclass(frozen=True)
class PipelineJob:
    """One `[[jobs]]` table as written; the planner merges in the repo's defaults."""

    name: str
    script: str
    labels: tuple[str, ...]
    timeout: float | None  # None: the repo's timeout
    env: Mapping[str, str]
    artifacts: tuple[str, ...]
    junit: tuple[str, ...]
    matrix: tuple[tuple[str, tuple[str, ...]], ...]  # (key, values) in file order
    image: str | None = None  # None: the repo's
    isolation: str | None = None
    network: bool | None = None


def load_pipeline(text: str, path: str) -> tuple[PipelineJob, ...]:
    """Read and check a pipeline file's text, named `path` in errors (`FILE:jobs[2].timeout:
    message`); raise `ConfigError` with every problem found."""
    reader = _Reader(path, {})
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: invalid TOML: {e}"]) from None
    except RecursionError:  # the file is the repo's, so anyone's: `x = [[[[…` 500 deep
        raise ConfigError([f"{path}: invalid TOML: nested too deeply"]) from None
    top = _Table(reader, data, "")
    jobs = top.get("jobs", (), lambda v: _array(reader, v, "jobs", _pipeline_job))
    top.done()
    if not jobs and ("jobs" not in data or not reader.errors):
        reader.error("jobs", "at least one [[jobs]] table is required")
    if (count := sum(math.prod(len(v) for _, v in j.matrix) for j in jobs)) > MAX_PIPELINE_JOBS:
        reader.error("jobs", f"makes {count} jobs with its matrices; at most {MAX_PIPELINE_JOBS}")
    if reader.errors:
        raise ConfigError(reader.errors)
    return jobs


_job_name = _check(str, "a name of printable characters, at most 100",
                   lambda v: 0 < len(v.strip()) and len(v) <= 100 and v.isprintable())
_patterns = _check(list, "a list of non-empty one-line glob patterns",
                   lambda v: all(isinstance(s, str) and s and s.isprintable() for s in v))


def _pipeline_job(reader: _Reader, t: _Table) -> PipelineJob:
    return PipelineJob(
        name=t.required("name", _job_name),
        script=t.required("script", _nonempty),
        labels=t.get("labels", (), _label_names),
        timeout=t.get("timeout", None, parse_duration),
        env=t.get("env", MappingProxyType({}), lambda v: _env_table(reader, t.sub("env"), v)),
        artifacts=tuple(t.get("artifacts", [], _patterns)),
        junit=tuple(t.get("junit", [], _patterns)),
        matrix=t.get("matrix", (), lambda v: _matrix(reader, t.sub("matrix"), v)),
        image=t.get("image", None, _image),
        isolation=t.get("isolation", None, _isolation),
        network=t.get("network", None, _bool),
    )


def _matrix(reader: _Reader, key: str, value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a table of lists, got {_show(value)}")
    axes: list[tuple[str, tuple[str, ...]]] = []
    for name, values in value.items():
        where = _key(key, name)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            reader.error(where, "must be a name of letters, digits and _ (it names"
                                " ASYNCCI_MATRIX_<KEY>)")
        elif name.upper() in {k.upper() for k, _ in axes}:
            reader.error(where, "differs only in case from another key: both would name"
                                f" ASYNCCI_MATRIX_{name.upper()}")
        elif (not isinstance(values, list) or not values
              or not all(isinstance(v, (str, int)) for v in values)):
            # No floats: 3.10 would read as 3.1. Versions are strings.
            reader.error(where, "must be a non-empty list of strings or integers"
                                f' (versions quoted: "3.10"), got {_show(values)}')
        else:
            shown = tuple(v if isinstance(v, str) else _show(v) for v in values)
            if len(set(shown)) < len(shown):
                reader.error(where, f"has a value twice: {_show(values)}")
            axes.append((name, shown))
    return tuple(axes)
