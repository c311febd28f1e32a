"""In-repo pipelines, matrix, artifacts and test results through the running server, on
real hosts (a local one and a real sshd), down to the status GitHub's stand-in receives."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.config import make_config
from tests.support.github import fake_github, payload, signed
from tests.support.gitrepo import GitRepo
from tests.support.server import Api, api_for, running_server
from tests.support.sshd import Sshd
from tests.support.wait import until
from tests.test_github import ENV, SECRET, deliver
from tests.test_ssh import log_of, online

PIPELINE = '''
[[jobs]]
name = "lint"
script = "echo linted"

[[jobs]]
name = "gpu"
script = "echo on $ASYNCCI_HOST"
labels = ["gpu"]

[[jobs]]
name = "test"
script = "echo python=$ASYNCCI_MATRIX_PYTHON"
matrix = { python = ["3.11", "3.12"] }
'''


async def trigger(api: Api, **body: str) -> Any:
    status, build = await api.call("POST", "/api/repos/demo/builds", body)
    assert status == 201, build
    return await api.build(build["id"], timeout=60)


async def test_a_pipeline_file_runs_its_jobs_on_the_hosts_that_fit(
    config_for: Callable[..., Path], sshd_pair: tuple[Sshd, Sshd], repo: GitRepo,
    tmp_path: Path,
) -> None:
    a, _ = sshd_pair
    repo.commit("a pipeline", {".asyncci.toml": PIPELINE})
    hosts = [{"name": "local", "type": "local", "slots": 2, "workdir": str(tmp_path / "work")},
             a.host("gpu-box", slots=1, labels=["gpu"])]
    async with running_server(config_for("echo never", hosts=hosts)) as server, \
            api_for(server) as api:
        await online(api, "local", "gpu-box")
        build = await trigger(api)
        jobs = {j["name"]: j for j in build["jobs"]}
        logs = {name: await log_of(api, j["id"]) for name, j in jobs.items()}
        # The file is broken at the next commit: that build errors, and says why.
        repo.commit("break it", {".asyncci.toml": PIPELINE.replace('"echo linted"', '""')})
        broken = await trigger(api)
        # A rebuild of the first build runs exactly its jobs, whatever the file says now.
        status, rebuilt = await api.call("POST", f"/api/builds/{build['id']}/rebuild")
        assert status == 201
        rebuilt = await api.build(rebuilt["id"], timeout=60)
    assert build["state"] == "passed"
    assert list(jobs) == ["lint", "gpu", "test (python=3.11)", "test (python=3.12)"]
    assert jobs["gpu"]["host"] == "gpu-box" and "on gpu-box\n" in logs["gpu"]
    assert "python=3.12\n" in logs["test (python=3.12)"]
    assert "echo never" not in logs["lint"] and "linted\n" in logs["lint"]
    assert broken["state"] == "errored"
    assert broken["error"].startswith(".asyncci.toml:jobs[0].script: ")
    [reason] = [(j["name"], j["state"], j["reason"]) for j in broken["jobs"]]
    assert reason == ("pipeline", "errored", broken["error"])
    assert [j["name"] for j in rebuilt["jobs"]] == list(jobs)
    assert rebuilt["state"] == "passed"


async def test_artifacts_come_back_from_an_ssh_host_byte_identical(
    config_for: Callable[..., Path], sshd_pair: tuple[Sshd, Sshd], repo: GitRepo,
) -> None:
    a, _ = sshd_pair
    data = os.urandom(3 << 20)
    repo.commit("data", {"seed.hex": data.hex()})
    pipeline = '''
[[jobs]]
name = "package"
script = """
mkdir -p dist out
python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(open("seed.hex").read()))' > dist/blob.bin
echo '<b>' > 'out/a page.html'
echo 'not the blob' | gzip > dist/blob.bin.gz
ln -s /etc/passwd out/passwd
"""
artifacts = ["dist/*.bin*", "out", "../outside", "/etc/hostname", "missing/*"]
'''
    repo.commit("package", {".asyncci.toml": pipeline})
    async with running_server(config_for("true", hosts=[a.host("a", slots=1)])) as server, \
            api_for(server) as api:
        await online(api, "a")
        build = await trigger(api)
        [job] = build["jobs"]
        listed = (await api.get(f"/api/jobs/{job['id']}/artifacts"))["artifacts"]
        status, blob = await api.call("GET", f"/api/jobs/{job['id']}/artifacts/dist/blob.bin")
        page_status, page = await api.call("GET", listed[2]["url"])
        escaped = [await api.call("GET", f"/api/jobs/{job['id']}/artifacts/{p}")
                   for p in ("../../asyncci.db", "out/passwd", "%2E%2E/%2E%2E/asyncci.db")]
        log = await log_of(api, job["id"])
        page_html = (await api.call("GET", f"/builds/{build['id']}"))[1].decode()
    assert build["state"] == "passed"
    assert [x["path"] for x in listed] == ["dist/blob.bin", "dist/blob.bin.gz", "out/a page.html"]
    assert [x["size"] for x in listed][::2] == [len(data), 4]
    assert status == 200 and blob == data  # the file itself, not its .gz sibling
    assert page_status == 200 and page == b"<b>\n"  # a download, not a page of ours
    assert [s for s, _ in escaped] == [404, 404, 404]
    for refused in ('"../outside" refused', '"/etc/hostname" refused', "out/passwd"):
        assert refused in log, log
    assert "/api/jobs/%d/artifacts/out/a%%20page.html" % job["id"] in page_html


JUNIT = '''<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="suite" tests="4">
<testcase classname="t" name="A">{A}</testcase>
<testcase classname="t" name="B">{B}</testcase>
<testcase classname="t" name="C">{C}</testcase>
<testcase classname="t" name="D"><skipped message="not today"/></testcase>
</testsuite></testsuites>
'''
FAIL = '<failure message="assert &lt;script&gt;x">Traceback</failure>'


def junit_pipeline(a: str, b: str, c: str) -> dict[str, str]:
    return {
        "report.txt": JUNIT.format(A=a, B=b, C=c),
        ".asyncci.toml": '[[jobs]]\nname = "test"\nscript = "cp report.txt report.xml; false"\n'
                         'junit = ["report.xml"]\n',
    }


async def test_a_pull_request_is_told_its_new_failures(tmp_path: Path, repo: GitRepo,
                                                        monkeypatch: Any) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    base_sha = repo.commit("base", junit_pipeline(FAIL, "", FAIL))  # A and C fail on main
    repo.branch("topic")
    repo.checkout("topic")
    head = repo.commit("topic", junit_pipeline(FAIL, FAIL.replace("failure", "error"), ""))
    repo.checkout("main")
    repo.git("update-ref", "refs/pull/5/head", head)
    async with fake_github() as github:
        config = make_config(
            tmp_path, [{"name": "demo", "url": str(repo.path), "github": "octo/demo",
                        "pull_requests": True, "script": "true"}],
            hosts=[{"name": "local", "type": "local", "slots": 2,
                    "workdir": str(tmp_path / "work")}],
            github={"api_url": github.url})
        async with running_server(config) as server, api_for(server) as api:
            base = await trigger(api, ref="main")
            body = payload("pull_request", action="opened", number="5", sha=head,
                           repository="octo/demo", head_repository="octo/demo")
            status, _ = await deliver(api, "pull_request", body,
                                      headers=signed(body, SECRET, "pull_request", "pr-5"))
            assert status == 202
            builds = await until(lambda: _pr_builds(api), 20, "the pull request's build")
            pr_build = await api.build(builds[0]["id"], timeout=60)
            report = await api.get(f"/api/jobs/{pr_build['jobs'][0]['id']}/tests")
            base_report = await api.get(f"/api/jobs/{base['jobs'][0]['id']}/tests")
            page = (await api.call("GET", f"/builds/{pr_build['id']}"))[1].decode()
            history = (await api.call("GET", "/repos/demo/tests?job=test&test=t.A"))[1].decode()
            sent = await until(lambda: [s for s in github.statuses
                                        if s["sha"] == head and s["state"] == "failure"],
                               20, "the pull request's final status")
    assert base["sha"] == base_sha and base_report["base_build"] is None
    assert base_report["totals"] == {"passed": 1, "failed": 2, "errored": 0, "skipped": 1}
    assert report["base_build"] == base["id"]
    assert report["totals"] == {"passed": 1, "failed": 1, "errored": 1, "skipped": 1}
    assert [t["name"] for t in report["new"]] == ["t.B"]
    assert [t["name"] for t in report["fixed"]] == ["t.C"]
    assert [t["name"] for t in report["still_failing"]] == ["t.A"]
    assert report["still_failing"][0]["message"] == "assert <script>x\nTraceback"
    assert sent[0]["description"] == "1 new failure (t.B), 1 fixed (t.C), 1 still failing (t.A)"
    assert "1 new failure (t.B)" in page
    assert "assert &lt;script&gt;x" in page and "<script>x" not in page
    assert f"/builds/{pr_build['id']}" in history and f"/builds/{base['id']}" in history


async def _pr_builds(api: Api) -> list[Any]:
    return [b for b in (await api.get("/api/builds"))["builds"] if b["event"] == "pull_request"]
