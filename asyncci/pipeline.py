"""The jobs a build runs: today the repo's `script` as one job named `build`.

The in-repo pipeline file (SPEC §2, `[[jobs]]` and `matrix`) plugs in here: the planner
asks this module, and stores whatever it answers with the build.
"""

from __future__ import annotations

from .config import RepoConfig
from .mirror import Mirror
from .model import JobSpec


class PipelineError(Exception):
    """The build cannot be planned; the message is shown as the build's reason."""


async def plan_jobs(repo: RepoConfig, mirror: Mirror, sha: str) -> list[JobSpec]:
    del mirror, sha  # read by the in-repo pipeline file, once it is supported
    if not repo.script.strip():
        raise PipelineError(f"repo {repo.name} has no script")
    return [
        JobSpec(
            name="build",
            script=repo.script,
            labels=tuple(repo.labels),
            timeout=repo.timeout,
            env=dict(repo.env),
        )
    ]
