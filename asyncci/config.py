"""The config file (TOML) → frozen dataclasses, with every error found at once.

Errors read `PATH:KEY: message`, array indexes from 0; unknown keys are errors. Secrets are
read here from the environment variables or files the config names, never from the file
itself. Nothing else is read or touched: callers exit on `ConfigError` before acting.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"[a-zA-Z0-9._-]+")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_RE = re.compile(r"(\d+)\s*([KMG]i?B|B)?")
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9,
               "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
MIN_SECRET = 4  # SPEC §5: shorter values can't be masked without garbling the log


class ConfigError(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def parse_duration(value: object) -> float:
    """"90s", "5m", "2h", "30d", "1h30m" or an integer of seconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return float(text)
        parts = _DURATION_RE.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    raise ValueError(f'must be a duration like "90s", "5m" or "2h", got {_show(value)}')


def parse_size(value: object) -> int:
    """"50MB" (decimal), "50MiB" (binary), "100B" or an integer of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (m := _SIZE_RE.fullmatch(value.strip())) and int(m[1]) > 0:
        return int(m[1]) * _SIZE_UNITS[m[2] or "B"]
    raise ValueError(f'must be a size like "50MB" or "512KiB", got {_show(value)}')


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    regex = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(regex.get(p, re.escape(p)) for p in parts))


def branch_matches(pattern: str, branch: str) -> bool:
    """SPEC §2 globs: `*` and `?` stop at `/`, `**` crosses it."""
    return _glob(pattern).fullmatch(branch) is not None


def _show(value: object) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


@dataclass(frozen=True)
class ServerConfig:
    listen_host: str
    listen_port: int
    public_url: str
    data_dir: Path
    log_retention: float
    max_log_bytes: int


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
    workdir: str
    slot_env: Mapping[str, str]
    prepare: str | None
    grace: float


@dataclass(frozen=True)
class Secret:
    name: str
    value: str


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


_MISSING = object()


class _Table:
    """One TOML table being read: each getter records an error under its key and returns
    a default, so one pass over the file finds every problem."""

    def __init__(self, reader: _Reader, data: Any, key: str) -> None:
        self.reader, self.key = reader, key
        self.data: dict[str, Any] = data if isinstance(data, dict) else {}
        if not isinstance(data, dict):
            reader.error(key, f"must be a table, got {_show(data)}")
        self.seen: set[str] = set()

    def sub(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def get(self, name: str, default: Any, convert: Callable[[Any], Any]) -> Any:
        self.seen.add(name)
        value = self.data.get(name, _MISSING)
        if value is _MISSING:
            return default
        try:
            return convert(value)
        except ValueError as e:
            self.reader.error(self.sub(name), str(e))
            return default

    def done(self) -> None:
        for name in self.data.keys() - self.seen:
            self.reader.error(self.sub(name), "unknown key")


class _Reader:
    def __init__(self, path: Path, environ: Mapping[str, str]) -> None:
        self.path, self.environ, self.errors = path, environ, []  # type: ignore[var-annotated]
        self.base = path.parent

    def error(self, key: str, message: str) -> None:
        self.errors.append(f"{self.path}:{key}: {message}" if key else f"{self.path}: {message}")

    def file_path(self, value: Any) -> Path:
        return (self.base / Path(_str(value)).expanduser()).absolute()

    def env_value(self, name: str | None) -> str | None:
        return self.environ.get(name) or None if name else None


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {_show(value)}")
    return value


def _nonempty(value: Any) -> str:
    if not _str(value).strip():
        raise ValueError("must not be empty")
    return str(value)


def _name(value: Any) -> str:
    if not NAME_RE.fullmatch(_str(value)):
        raise ValueError(f"must match [a-zA-Z0-9._-]+, got {_show(value)}")
    return str(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {_show(value)}")
    return value


def _int(low: int, what: str) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"must be {what}, got {_show(value)}")
        return value
    return convert


def _positive(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"must be a positive number, got {_show(value)}")
    return float(value)


def _port(value: Any) -> int:
    port = _int(1, "a port number (1-65535)")(value)
    if port > 65535:
        raise ValueError(f"must be a port number (1-65535), got {value}")
    return port


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"must be a list of strings, got {_show(value)}")
    return tuple(value)


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a table of strings, got {_show(value)}")
    for k, v in value.items():
        if not ENV_NAME_RE.fullmatch(k):
            raise ValueError(f"{_show(k)} is not a valid environment variable name")
        if not isinstance(v, str):
            raise ValueError(f"{k} must be a string, got {_show(v)}")
    return dict(value)


def _listen(value: Any) -> tuple[str, int]:
    host, sep, port = _str(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'must be "host:port", got {_show(value)}')
    return host.strip("[]"), int(port)


def _schedule(value: Any) -> str:
    if len(_str(value).split()) != 5:
        raise ValueError(f'must be a cron expression of 5 fields, got {_show(value)}')
    return str(value)


def _github_repo(value: Any) -> str:
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", _str(value)):
        raise ValueError(f'must be "owner/name", got {_show(value)}')
    return str(value)


def _is_local_path(url: str) -> bool:
    return "://" not in url and not re.match(r"^[\w.-]+@?[\w.-]*:", url)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    path = Path(path)
    reader = _Reader(path, os.environ if environ is None else environ)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}: invalid TOML: {e}"]) from None
    config = _read(reader, data)
    if reader.errors:
        raise ConfigError(reader.errors)
    return config


def _read(reader: _Reader, data: dict[str, Any]) -> Config:
    top = _Table(reader, data, "")
    server = _server(reader, top.get("server", {}, lambda v: v))
    web = _Table(reader, top.get("web", {}, lambda v: v), "web")
    web_config = WebConfig(
        public=web.get("public", True, _bool),
        token=reader.env_value(web.get("token_env", "ASYNCCI_TOKEN", _nonempty)),
    )
    web.done()
    github = top.get("github", None, lambda v: _github(reader, v))
    hosts = top.get("hosts", None, lambda v: _array(reader, v, "hosts", _host, server))
    if not hosts:
        hosts = (_local_default(server),) if hosts is None else hosts
    repos = top.get("repos", (), lambda v: _array(reader, v, "repos", _repo, server))
    top.done()
    return Config(reader.path, server, web_config, github, hosts, repos)


def _array(reader: _Reader, value: Any, key: str, read: Callable[..., Any], server: ServerConfig
           ) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise ValueError(f"must be an array of tables ([[{key}]]), got {_show(value)}")
    items, names = [], set()
    for i, item in enumerate(value):
        table = _Table(reader, item, f"{key}[{i}]")
        result = read(reader, table, server)
        table.done()
        if result.name in names:
            reader.error(table.sub("name"), f"duplicate name {_show(result.name)}")
        names.add(result.name)
        items.append(result)
    return tuple(items)


def _server(reader: _Reader, value: Any) -> ServerConfig:
    t = _Table(reader, value, "server")
    host, port = t.get("listen", ("127.0.0.1", 8080), _listen)
    result = ServerConfig(
        listen_host=host,
        listen_port=port,
        public_url=t.get("public_url", f"http://{host}:{port}", _nonempty).rstrip("/"),
        data_dir=t.get("data_dir", reader.file_path("asyncci-data"), reader.file_path),
        log_retention=t.get("log_retention", parse_duration("30d"), parse_duration),
        max_log_bytes=t.get("max_log_bytes", parse_size("50MB"), parse_size),
    )
    t.done()
    return result


def _github(reader: _Reader, value: Any) -> GitHubConfig:
    t = _Table(reader, value, "github")
    app_id = t.get("app_id", None, _int(1, "a positive integer"))
    key_file = t.get("private_key_file", None, reader.file_path)
    private_key = None
    if key_file is not None:
        try:
            private_key = key_file.read_text()
        except OSError as e:
            reader.error("github.private_key_file", f"cannot read {key_file}: {e.strerror}")
    if (app_id is None) != (key_file is None):
        reader.error("github.app_id", "app_id and private_key_file go together")
    result = GitHubConfig(
        webhook_secret=reader.env_value(
            t.get("webhook_secret_env", "ASYNCCI_WEBHOOK_SECRET", _nonempty)),
        token=reader.env_value(t.get("token_env", "GITHUB_TOKEN", _nonempty)),
        app_id=app_id,
        private_key=private_key,
        api_url=t.get("api_url", "https://api.github.com", _nonempty).rstrip("/"),
    )
    t.done()
    return result


def _local_default(server: ServerConfig) -> HostConfig:
    return HostConfig("local", True, None, 22, None, None, None, os.cpu_count() or 1, (),
                      str(server.data_dir / "work"), {}, None, 60.0)


def _host(reader: _Reader, t: _Table, server: ServerConfig) -> HostConfig:
    name = t.get("name", "", _name)
    if "name" not in t.data:
        reader.error(t.sub("name"), "required")
    kind = t.get("type", None, lambda v: v if v in ("local", "ssh") else _bad_type(v))
    address = t.get("address", None, _nonempty)
    local = kind == "local" or (kind is None and address is None)
    if kind == "ssh" and address is None:
        reader.error(t.sub("address"), "required for an SSH host")
    if local and address is not None:
        reader.error(t.sub("address"), "a local host has no address")
    workdir = t.get("workdir", None, _nonempty)
    if local:
        workdir = str(reader.file_path(workdir) if workdir else server.data_dir / "work" / name)
    return HostConfig(
        name=name,
        local=local,
        address=address,
        port=t.get("port", 22, _port),
        user=t.get("user", None, _nonempty),
        key_file=t.get("key_file", None, reader.file_path),
        known_hosts=t.get("known_hosts", None, reader.file_path),
        slots=t.get("slots", (os.cpu_count() or 1) if local else 1,
                    _int(1, "a positive integer")),
        labels=t.get("labels", (), _strings),
        workdir=workdir or "asyncci-work",
        slot_env=t.get("slot_env", {}, _env),
        prepare=t.get("prepare", None, _nonempty),
        grace=t.get("grace", 60.0, parse_duration),
    )


def _bad_type(value: Any) -> str:
    raise ValueError(f'must be "local" or "ssh", got {_show(value)}')


def _repo(reader: _Reader, t: _Table, server: ServerConfig) -> RepoConfig:
    name = t.get("name", "", _name)
    if "name" not in t.data:
        reader.error(t.sub("name"), "required")
    url = t.get("url", "", _nonempty)
    if "url" not in t.data:
        reader.error(t.sub("url"), "required")
    elif url and _is_local_path(url) and (reader.base / Path(url).expanduser()).exists():
        url = str((reader.base / Path(url).expanduser()).resolve())
    pipeline_file = t.get("pipeline_file", ".asyncci.toml", _str)
    script = t.get("script", "", _str)
    if not script.strip() and not pipeline_file:
        reader.error(t.sub("script"), 'required when pipeline_file is ""')
    timeout = t.get("timeout", 1800.0, parse_duration)
    return RepoConfig(
        name=name,
        url=url,
        branches=t.get("branches", ("main", "master"), _strings),
        pull_requests=t.get("pull_requests", False, _bool),
        poll=t.get("poll", 60.0, parse_duration),
        schedule=t.get("schedule", None, _schedule),
        github=t.get("github", None, _github_repo),
        weight=t.get("weight", 1.0, _positive),
        max_running=t.get("max_running", 0, _int(0, "an integer >= 0")),
        retries=t.get("retries", 2, _int(0, "an integer >= 0")),
        labels=t.get("labels", (), _strings),
        timeout=timeout or None,
        build_every_commit=t.get("build_every_commit", False, _bool),
        keep_superseded=t.get("keep_superseded", ("main", "master"), _strings),
        pipeline_file=pipeline_file,
        env=t.get("env", {}, _env),
        secrets=t.get("secrets", (), lambda v: _secrets(reader, t.sub("secrets"), v)),
        script=script,
    )


def _secrets(reader: _Reader, key: str, value: Any) -> tuple[Secret, ...]:
    if not isinstance(value, dict):
        raise ValueError(f'must be a table like {{ NAME = {{ env = "VAR" }} }}, got {_show(value)}')
    secrets = []
    for name, source in value.items():
        where = f"{key}.{name}"
        if not ENV_NAME_RE.fullmatch(name):
            reader.error(where, "is not a valid environment variable name")
            continue
        if not isinstance(source, dict) or len(source) != 1 or not source.keys() <= {"env", "file"}:
            reader.error(where, 'must be { env = "VAR" } or { file = "path" }')
            continue
        secret = _secret_value(reader, where, source)
        if secret is None:
            continue
        if len(secret) < MIN_SECRET:
            reader.error(where, f"is shorter than {MIN_SECRET} characters: masking it in logs"
                                " would garble them")
            continue
        secrets.append(Secret(name, secret))
    return tuple(secrets)


def _secret_value(reader: _Reader, where: str, source: dict[str, Any]) -> str | None:
    if "env" in source:
        variable = source["env"]
        if not isinstance(variable, str) or variable not in reader.environ:
            reader.error(where, f"environment variable {variable} is not set")
            return None
        return reader.environ[variable]
    try:
        return reader.file_path(source["file"]).read_text().rstrip("\n")
    except (OSError, ValueError) as e:
        reader.error(where, f"cannot read {source['file']}: {getattr(e, 'strerror', e)}")
        return None
