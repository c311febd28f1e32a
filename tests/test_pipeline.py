"""The in-repo pipeline file: read at the built commit, checked like the config, matrix
expanded; a bad file is a clear reason, never a crash."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from asyncci.config import load_config
from asyncci.mirror import Mirror
from asyncci.model import JobSpec
from asyncci.pipeline import PipelineError, plan_jobs
from tests.support.config import make_config
from tests.support.gitrepo import GitRepo

PIPELINE = '''
[[jobs]]
name = "lint"
script = "ruff check ."

[[jobs]]
name = "gpu"
script = "nvidia-smi"
labels = ["gpu"]
timeout = "20m"
artifacts = ["report.xml", "dist/*.whl"]
junit = ["report.xml"]

[[jobs]]
name = "test"
script = "pytest"
env = { FOO = "bar" }
matrix = { python = ["3.11", "3.12"], fast = [true] }
'''


async def plan(tmp_path: Path, repo: GitRepo, sha: str, **keys: object) -> list[JobSpec]:
    config = load_config(make_config(tmp_path, [{
        "name": "demo", "url": str(repo.path), "script": "make", "labels": ["linux"],
        "env": {"CI_LEVEL": "1"}, "timeout": "5m", **keys}]))
    mirror = Mirror(tmp_path / "mirror.git", str(repo.path))
    try:
        await mirror.fetch()
        return await plan_jobs(config.repos[0], mirror, sha)
    finally:
        await mirror.close()


async def test_the_file_at_the_commit_replaces_the_script(tmp_path: Path, repo: GitRepo) -> None:
    without = repo.head()
    with_file = repo.commit("add a pipeline", {".asyncci.toml": PIPELINE})
    [build] = await plan(tmp_path, repo, without)
    assert (build.name, build.script, build.labels, build.timeout) == ("build", "make", ("linux",), 300)
    lint, gpu, *tests = await plan(tmp_path, repo, with_file)
    assert (lint.name, lint.script, lint.labels, lint.timeout) == ("lint", "ruff check .", ("linux",), 300)
    assert (gpu.labels, gpu.timeout, gpu.artifacts, gpu.junit) == (
        ("linux", "gpu"), 1200, ("report.xml", "dist/*.whl"), ("report.xml",))
    assert [t.name for t in tests] == ["test (python=3.11, fast=true)", "test (python=3.12, fast=true)"]
    assert tests[1].env == {"CI_LEVEL": "1", "FOO": "bar", "ASYNCCI_MATRIX_PYTHON": "3.12",
                            "ASYNCCI_MATRIX_FAST": "true"}
    # A repo that forbids the file builds its script whatever the commit holds.
    [only] = await plan(tmp_path, repo, with_file, pipeline_file="")
    assert only.script == "make"
    # Another file name, and a repo without a script whose commit has no file.
    other = repo.commit("move it", {"ci/pipeline.toml": PIPELINE})
    assert len(await plan(tmp_path, repo, other, pipeline_file="ci/pipeline.toml")) == 4
    with pytest.raises(PipelineError, match="no script, and the commit has no ci/none.toml"):
        await plan(tmp_path, repo, other, pipeline_file="ci/none.toml", script="")


@pytest.mark.parametrize("text, message", [
    ('[[jobs]]\nname = "a"\nscript = "x"\n[[jobs]]\nname = "b"\nscript = "y"\ntimeout = "soon"\n',
     '.asyncci.toml:jobs[1].timeout: must be a duration like "90s", "5m" or "2h", got "soon"'),
    ('[[jobs]]\nname = "a"\n', ".asyncci.toml:jobs[0].script: required"),
    ('[[jobs]]\nname = "a"\nscript = "x"\nscirpt = "y"\n', ".asyncci.toml:jobs[0].scirpt: unknown key"),
    ('jobs = "all"\n', ".asyncci.toml:jobs: must be an array of tables ([[jobs]])"),
    ("", ".asyncci.toml:jobs: at least one [[jobs]] table is required"),
    ("[[jobs]\n", ".asyncci.toml: invalid TOML"),
    ('[[jobs]]\nname = "a"\nscript = "x"\nmatrix = { "py-version" = ["3"] }\n',
     ".asyncci.toml:jobs[0].matrix.py-version: must be a name"),
    ('[[jobs]]\nname = "a"\nscript = "x"\nmatrix = { py = [] }\n',
     ".asyncci.toml:jobs[0].matrix.py: must be a non-empty list"),
    ('[[jobs]]\nname = "a"\nscript = "x"\nmatrix = { a = ' + str(list(range(11))) + ", b = "
     + str(list(range(10))) + " }\n", ".asyncci.toml:jobs: makes 110 jobs"),
    ('[[jobs]]\nname = "a (k=1)"\nscript = "x"\n[[jobs]]\nname = "a"\nscript = "x"\n'
     'matrix = { k = [1] }\n', "two jobs are named 'a (k=1)'"),
    ("x = " + "[" * 1000 + "]" * 1000, ".asyncci.toml: invalid TOML: nested too deeply"),
    ('[[jobs]]\nname = "a"\nscript = "x"\nmatrix = { py = [3.9, 3.10] }\n',
     '(versions quoted: "3.10"), got [3.9, 3.1]'),
    ('[[jobs]]\nname = "a"\nscript = "x"\nmatrix = { py = ["1"], PY = ["2"] }\n',
     ".asyncci.toml:jobs[0].matrix.PY: differs only in case"),
    ('[[jobs]]\nname = "a"\nscript = "x"\nartifacts = ["ok", ""]\n',
     ".asyncci.toml:jobs[0].artifacts: must be a list of at most 100 non-empty one-line glob"),
    ('[[jobs]]\nname = "a"\nscript = "x"\njunit = ["**/*/**/*/**/*.xml"]\n',  # a walk for hours
     ".asyncci.toml:jobs[0].junit: must be a list of at most 100 non-empty one-line glob"),
    ('[[jobs]]\nname = "a"\nscript = "x"\nimage = "--volume=/:/host"\n',  # a flag for the engine
     '.asyncci.toml:jobs[0].image: must be an image name (no spaces, no leading -)'),
    ('[[jobs]]\nname = "a"\nscript = "x"\nmatrix = { k = ["\\u0000"] }\n',
     ".asyncci.toml:jobs[0].matrix.k[0]: must not hold a NUL character"),
    ('[[jobs]]\nname = "a"\nscript = "make\\u0000"\nenv = { X = "\\u0000" }\n',
     ".asyncci.toml:jobs[0].env.X: must not hold a NUL character"),
])
async def test_a_bad_file_says_where_and_why(tmp_path: Path, repo: GitRepo, text: str,
                                              message: str) -> None:
    sha = repo.commit("a pipeline", {".asyncci.toml": text})
    with pytest.raises(PipelineError) as raised:
        await plan(tmp_path, repo, sha)
    assert message in str(raised.value)


async def test_a_file_that_is_not_text_or_too_big(tmp_path: Path, repo: GitRepo) -> None:
    (repo.path / ".asyncci.toml").write_bytes(b"\xff\xfe[[jobs]]")
    repo.git("add", ".asyncci.toml")
    binary = repo.commit("binary")
    with pytest.raises(PipelineError, match="not UTF-8"):
        await plan(tmp_path, repo, binary)
    huge = repo.commit("huge", {".asyncci.toml": "# " + "x" * (1 << 20)})
    with pytest.raises(PipelineError, match="at most"):
        await plan(tmp_path, repo, huge)


def test_the_artifact_cap_and_place_are_configured(tmp_path: Path, repo: GitRepo) -> None:
    config = load_config(make_config(tmp_path, [{"name": "demo", "url": str(repo.path),
                                                 "script": "x"}], server={"max_artifact_bytes": "5MB"}))
    assert config.server.max_artifact_bytes == 5_000_000
    assert replace(config.server, data_dir=Path("/d")).artifacts_dir == Path("/d/artifacts")
