"""The jobs a build runs: the in-repo pipeline file (SPEC §2) at the built commit when the
repo enables it and the commit has one, read and checked as the config is, else the repo's
`script` as one job named `build`.

Whatever this answers is stored with the build, so a rebuild runs exactly the same jobs
even after the file has changed.
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .config import RepoConfig
from .config.checks import (
    ConfigError, Reader, Table, array, boolean, check, env_table, image, isolation, label_names,
    nonempty, parse_duration, refuse_nul, show, subkey,
)
from .mirror import Mirror
from .model import JobSpec

MAX_FILE_BYTES = 1 << 20
MAX_PIPELINE_JOBS = 100  # after matrix expansion: a typo in a matrix must not flood the queue
JOB_KEYS = ("name", "script", "labels", "timeout", "env", "artifacts", "junit", "matrix",
            "image", "isolation", "network")


class PipelineError(Exception):
    """The build cannot be planned; the message is shown as the build's reason."""


@dataclass(frozen=True)
class PipelineJob:
    """One `[[jobs]]` table as written; `expand` merges in the repo's defaults."""

    name: str
    script: str
    labels: tuple[str, ...]
    timeout: float | None  # None: the repo's timeout
    env: Mapping[str, str]
    artifacts: tuple[str, ...]
    junit: tuple[str, ...]
    matrix: tuple[tuple[str, tuple[str, ...]], ...]  # (key, values) in file order
    image: str | None  # None: the repo's
    isolation: str | None
    network: bool | None


async def plan_jobs(repo: RepoConfig, mirror: Mirror, sha: str) -> list[JobSpec]:
    text = await mirror.show(sha, repo.pipeline_file) if repo.pipeline_file else None
    if text is not None:
        return expand(repo, _parse(repo.pipeline_file, text))
    if not repo.script.strip():
        raise PipelineError(f"repo {repo.name} has no script, and the commit has no"
                            f" {repo.pipeline_file or 'pipeline file'}")
    return expand(repo, (PipelineJob("build", repo.script, (), None, {}, (), (), (), None, None,
                                     None),))


def _parse(path: str, data: bytes) -> tuple[PipelineJob, ...]:
    if len(data) > MAX_FILE_BYTES:
        raise PipelineError(f"{path}: {len(data)} bytes; at most {MAX_FILE_BYTES}")
    try:
        return load_pipeline(data.decode(), path)
    except UnicodeDecodeError as e:
        raise PipelineError(f"{path}: not UTF-8 text: {e}") from None
    except ConfigError as e:
        raise PipelineError(str(e)) from None


def expand(repo: RepoConfig, jobs: tuple[PipelineJob, ...]) -> list[JobSpec]:
    """One job per matrix combination, named `test (python=3.12, os=bookworm)` with
    `ASYNCCI_MATRIX_<KEY>` set; the repo's labels, env and timeout are the defaults."""
    specs: list[JobSpec] = []
    for job in jobs:
        keys = [key for key, _ in job.matrix]
        for values in itertools.product(*(values for _, values in job.matrix)):
            combo = dict(zip(keys, values))
            name = job.name
            if combo:
                name += " (" + ", ".join(f"{k}={v}" for k, v in combo.items()) + ")"
            timeout = repo.timeout if job.timeout is None else job.timeout
            env = {**repo.env, **job.env,
                   **{f"ASYNCCI_MATRIX_{k.upper()}": v for k, v in combo.items()}}
            specs.append(JobSpec(
                name=name, script=job.script, labels=tuple(dict.fromkeys(repo.labels + job.labels)),
                timeout=timeout or None, env=env, artifacts=job.artifacts, junit=job.junit,
                image=repo.image if job.image is None else job.image,
                isolation=job.isolation or repo.isolation,
                network=repo.network if job.network is None else job.network,
            ))
    if twice := [n for n, count in Counter(s.name for s in specs).items() if count > 1]:
        raise PipelineError(f"two jobs are named {twice[0]!r}")
    return specs


def load_pipeline(text: str, path: str) -> tuple[PipelineJob, ...]:
    """Read and check a pipeline file's text, named `path` in errors (`FILE:jobs[2].timeout:
    message`); raise `ConfigError` with every problem found."""
    reader = Reader(path, {})
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: invalid TOML: {e}"]) from None
    except RecursionError:  # the file is the repo's, so anyone's: `x = [[[[…` 500 deep
        raise ConfigError([f"{path}: invalid TOML: nested too deeply"]) from None
    refuse_nul(reader, data)
    top = Table(reader, data, "", ("jobs",))
    jobs = top.get("jobs", (), lambda v: array(reader, v, "jobs", JOB_KEYS, _pipeline_job))
    top.done()
    if not jobs and ("jobs" not in data or not reader.errors):
        reader.error("jobs", "at least one [[jobs]] table is required")
    if (count := sum(math.prod(len(v) for _, v in j.matrix) for j in jobs)) > MAX_PIPELINE_JOBS:
        reader.error("jobs", f"makes {count} jobs with its matrices; at most {MAX_PIPELINE_JOBS}")
    reader.finish()
    return jobs


_job_name = check(str, "a name of printable characters, at most 100",
                  lambda v: 0 < len(v.strip()) and len(v) <= 100 and v.isprintable())
# Globs are expanded on the host, outside the sandbox and its timeout: each `**` more
# multiplies the walk by the tree's depth, so a pattern has one at most.
_patterns = check(list, "a list of at most 100 non-empty one-line glob patterns, one ** each",
                  lambda v: len(v) <= 100 and all(isinstance(s, str) and s and s.isprintable()
                                                  and s.count("**") <= 1 for s in v))


def _pipeline_job(t: Table) -> PipelineJob:
    return PipelineJob(
        name=t.required("name", _job_name),
        script=t.required("script", nonempty),
        labels=t.get("labels", (), label_names),
        timeout=t.get("timeout", None, parse_duration),
        env=t.get("env", MappingProxyType({}), lambda v: env_table(t.reader, t.sub("env"), v)),
        artifacts=tuple(t.get("artifacts", [], _patterns)),
        junit=tuple(t.get("junit", [], _patterns)),
        matrix=t.get("matrix", (), lambda v: _matrix(t.reader, t.sub("matrix"), v)),
        image=t.get("image", None, image),
        isolation=t.get("isolation", None, isolation),
        network=t.get("network", None, boolean),
    )


def _matrix(reader: Reader, key: str, value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a table of lists, got {show(value)}")
    axes: list[tuple[str, tuple[str, ...]]] = []
    for name, values in value.items():
        where = subkey(key, name)
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
                                f' (versions quoted: "3.10"), got {show(values)}')
        else:
            shown = tuple(v if isinstance(v, str) else show(v) for v in values)
            if len(set(shown)) < len(shown):
                reader.error(where, f"has a value twice: {show(values)}")
            axes.append((name, shown))
    return tuple(axes)
