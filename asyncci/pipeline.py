"""The jobs a build runs: the in-repo pipeline file at the built commit when the repo
enables it and the commit has one, else the repo's `script` as one job named `build`.

Whatever this answers is stored with the build, so a rebuild runs exactly the same jobs
even after the file has changed.
"""

from __future__ import annotations

import itertools
from collections import Counter

from .config import ConfigError, PipelineJob, RepoConfig, load_pipeline
from .mirror import Mirror
from .model import JobSpec

MAX_FILE_BYTES = 1 << 20


class PipelineError(Exception):
    """The build cannot be planned; the message is shown as the build's reason."""


async def plan_jobs(repo: RepoConfig, mirror: Mirror, sha: str) -> list[JobSpec]:
    text = await mirror.show(sha, repo.pipeline_file) if repo.pipeline_file else None
    if text is not None:
        return expand(repo, _parse(repo.pipeline_file, text))
    if not repo.script.strip():
        raise PipelineError(f"repo {repo.name} has no script, and the commit has no"
                            f" {repo.pipeline_file or 'pipeline file'}")
    return [JobSpec(name="build", script=repo.script, labels=tuple(repo.labels),
                    timeout=repo.timeout, env=dict(repo.env), image=repo.image,
                    isolation=repo.isolation, network=repo.network)]


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
