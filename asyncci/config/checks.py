"""Checking TOML as it is read, shared by the config and the in-repo pipeline file: a bad
value is recorded as a `PATH:KEY: message` line and its default used instead, so one pass
finds every problem, then `Reader.finish` raises them all as one `ConfigError`.

TOML has already typed every value, so a converter here only checks (a bool is never taken
for an int) or parses the two kinds of string TOML lacks: durations and sizes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from datetime import date, time
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What bash will not set (a job's variables are set by bash), and the prefix under which
# the wrapper carries them (hosts/job.sh's `launch`).
UNSETTABLE = {"BASHOPTS", "BASH_VERSINFO", "EUID", "PPID", "SHELLOPTS", "UID"}
JOB_VAR_PREFIX = "AC_V_"
RESERVED_LABEL = "asyncci:"  # what hosts earn by probing (SPEC §5a routing), never configured
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


def show(value: object) -> str:
    """A value as TOML writes it: `"four"`, `true`, `["a", 1]`, `{ env = 1 }`, `1979-05-27`."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(show, value)) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{subkey('', k)} = {show(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, (date, time)):
        return value.isoformat()
    return repr(value)  # int, float (inf and nan read as in TOML)


def subkey(parent: str, name: str) -> str:
    """`repos[0].env` + `A B` → `repos[0].env."A B"`: a key as errors name it."""
    name = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else show(name)
    return f"{parent}.{name}" if parent else name


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
        raise ValueError(f'must be a duration like "90s", "5m" or "2h", got {show(value)}')
    if seconds > MAX_DURATION:
        raise ValueError(f"must be a duration of at most 1000 years, got {show(value)}")
    return seconds


def parse_size(value: object) -> int:
    """"50MB" (decimal), "50MiB" (binary), "100B", or an integer of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (m := _SIZE_RE.fullmatch(value.strip())) and int(m[1]) > 0:
        return int(m[1]) * _SIZE_UNITS[m[2] or "B"]
    raise ValueError(f'must be a size like "50MB" or "512KiB", got {show(value)}')


class Reader:
    """The errors found so far, and what reading needs: where relative paths start, and
    the environment that secrets come from."""

    def __init__(self, path: str, environ: Mapping[str, str]) -> None:
        self.path, self.environ = path, environ
        self.base = Path(path).parent
        self.errors: list[str] = []

    def error(self, key: str, message: str) -> None:
        self.errors.append(f"{self.path}:{key}: {message}" if key else f"{self.path}: {message}")

    def finish(self) -> None:
        """Callers act on nothing they read until this has passed."""
        if self.errors:
            raise ConfigError(self.errors)

    def file(self, value: Any) -> Path:
        try:
            path = Path(string(value)).expanduser()
        except RuntimeError:  # "~user" of no such user, or no home directory
            raise ValueError(f"cannot expand ~ in {show(value)}") from None
        return (self.base / path).absolute()

    def env(self, variable: str | None) -> str | None:
        return (self.environ.get(variable) or None) if variable else None


class Table:
    """One TOML table and the keys it may hold: each getter records a bad value under its
    key and returns the default instead; `done` reports the keys it may not hold."""

    def __init__(self, reader: Reader, data: dict[str, Any], key: str,
                 keys: Collection[str]) -> None:
        self.reader, self.data, self.key, self.keys = reader, data, key, keys

    @classmethod
    def of(cls, reader: Reader, data: Any, key: str, keys: Collection[str]) -> Table:
        """`data` as a table; anything else is an error, and read as an empty one."""
        if not isinstance(data, dict):
            reader.error(key, f"must be a table, got {show(data)}")
            data = {}
        return cls(reader, data, key, keys)

    def sub(self, name: str) -> str:
        return subkey(self.key, name)

    def error(self, name: str, message: str) -> None:
        self.reader.error(self.sub(name), message)

    def get(self, name: str, default: D, convert: Callable[[Any], T]) -> T | D:
        assert name in self.keys, f"{name} is missing from the table of {self.key or 'top'} keys"
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
            if name not in self.keys:
                self.error(name, "unknown key")


def refuse_nul(reader: Reader, data: dict[str, Any]) -> None:
    """Every string of a parsed file, keys too, checked for NUL, which TOML's `\u0000`
    allows: a job's script or env holding one would hang its wrapper, which bash reads.
    A walk without recursion: a repo's file may nest as deep as the parser goes."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        key, value = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value) \
            if isinstance(value, list) else ()
        for name, item in items:
            where = subkey(key, name) if isinstance(name, str) else f"{key}[{name}]"
            if "\0" in str(name) or isinstance(item, str) and "\0" in item:
                reader.error(where, "must not hold a NUL character")
            stack.append((where, item))


def array(reader: Reader, value: Any, key: str, keys: Collection[str],
          read: Callable[[Table], T]) -> tuple[T, ...]:
    """An array of tables (`[[key]]`), each read by `read`; their names must differ."""
    if not isinstance(value, list):
        raise ValueError(f"must be an array of tables ([[{key}]]), got {show(value)}")
    items: list[T] = []
    names: set[str] = set()
    for i, data in enumerate(value):
        if not isinstance(data, dict):
            reader.error(f"{key}[{i}]", f"must be a table, got {show(data)}")
            continue
        table = Table(reader, data, f"{key}[{i}]", keys)
        items.append(read(table))
        table.done()
        if isinstance(name := data.get("name"), str) and name in names:
            table.error("name", f"duplicate name {show(name)}")
        elif isinstance(name, str):
            names.add(name)
    return tuple(items)


def check(kind: type[T], what: str, ok: Callable[[T], object] | None = None
          ) -> Callable[[Any], T]:
    """A converter that lets a value of type `kind` pass when `ok(value)`: TOML already
    typed it, so checking is all there is to do (a bool is not taken for an int)."""
    def convert(value: Any) -> T:
        if (not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool)
                or (ok is not None and not ok(value))):
            raise ValueError(f"must be {what}, got {show(value)}")
        return value
    return convert


string = check(str, "a string")
nonempty = check(str, "a non-empty string", str.strip)
boolean = check(bool, "true or false")
positive_int = check(int, "a positive integer", lambda v: v > 0)
nonnegative_int = check(int, "an integer >= 0", lambda v: v >= 0)
http_url = check(str, "an http:// or https:// URL", re.compile(r"https?://[^/\s]+\S*").fullmatch)
isolation = check(str, '"untrusted" or "all"', lambda v: v in ("untrusted", "all"))
image = check(str, "an image name (no spaces, no leading -)",
              lambda v: not v or v.split() == [v] and not v.startswith("-"))
_labels = check(list, "a list of non-empty strings",
                lambda v: all(isinstance(s, str) and s for s in v))


def strings(value: Any) -> tuple[str, ...]:
    return tuple(_labels(value))


def label_names(value: Any) -> tuple[str, ...]:
    labels = strings(value)
    if reserved := [label for label in labels if label.startswith(RESERVED_LABEL)]:
        raise ValueError(f"labels starting with {RESERVED_LABEL!r} are asyncci's own,"
                         f" got {show(reserved[0])}")
    return labels


def env_name_problem(name: str) -> str | None:
    """Why `name` cannot be a job's environment variable, or None."""
    if not ENV_NAME_RE.fullmatch(name):
        return "is not a valid environment variable name"
    if name in UNSETTABLE or name.startswith(JOB_VAR_PREFIX):
        return "is a name bash or asyncci keeps for itself"
    return None


def env_table(reader: Reader, key: str, value: Any) -> Mapping[str, str]:
    """An `env` table: variable names to strings."""
    if not isinstance(value, dict):
        raise ValueError(f"must be a table of strings, got {show(value)}")
    env = {}
    for name, text in value.items():
        if problem := env_name_problem(name):
            reader.error(subkey(key, name), problem)
        elif not isinstance(text, str):
            reader.error(subkey(key, name), f"must be a string, got {show(text)}")
        else:
            env[name] = text
    return MappingProxyType(env)
