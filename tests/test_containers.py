"""Jobs that name an `image` run in a fresh container on their host (real podman, a tiny
image imported in the test run): the workspace, the image's own files, a device per slot;
cancel, timeout and a server SIGKILL leave no container behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import make_config
from tests.support.gitrepo import GitRepo
from tests.support.image import MARKER, PODMAN, PODMAN_OPTIONS, containers
from tests.support.server import ServerProcess, api_for, running_server
from tests.support.wait import until, until_sync
from tests.test_local_jobs import processes_with

pytestmark = pytest.mark.timeout(120)


def config(tmp_path: Path, repo: GitRepo, image: str, script: str, **keys: Any) -> Path:
    host = {"name": "local", "type": "local", "slots": 2, "workdir": str(tmp_path / "work"),
            "container_command": PODMAN, "container_options": PODMAN_OPTIONS,
            "slot_devices": ["/dev/null:/dev/slot{slot}"]}
    return make_config(tmp_path, [{"name": "demo", "url": str(repo.path), "script": script,
                                   "image": image, **keys}], hosts=[host])


async def test_a_container_job_sees_its_image_its_device_and_its_workspace(
    tmp_path: Path, repo: GitRepo, image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_SECRET", "line one\nline two")  # a value no env file holds
    script = ('cat /etc/asyncci-image; ls /dev | grep slot; echo "ws=$PWD"; cat file.txt;'
              ' echo "secret=[$DEMO_SECRET] slot=$ASYNCCI_SLOT"; touch made-inside')
    path = config(tmp_path, repo, image, script, secrets={"DEMO_SECRET": {"env": "DEMO_SECRET"}})
    async with running_server(path) as server, api_for(server) as api:
        status, build = await api.call("POST", "/api/repos/demo/builds", {})
        assert status == 201
        done = await api.build(build["id"], timeout=60)
        job = done["jobs"][0]
        log = (await api.call("GET", f"/api/jobs/{job['id']}/log"))[1].decode()
        [host] = (await api.get("/api/hosts"))["hosts"]
    assert done["state"] == "passed", log
    assert (job["confined"], job["image"]) == ("container", image)
    assert MARKER in log and f"slot{job['slot']}\n" in log
    assert f"/work/ws/demo/{job['slot']}" in log and "first commit" in log
    assert f"secret=[***] slot={job['slot']}" in log and "line one" not in log
    assert (tmp_path / "work" / "ws" / "demo" / str(job["slot"]) / "made-inside").exists()
    assert "containers: podman version" in host["confines"]
    assert containers() == []


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_a_stopped_container_job_leaves_no_container_and_no_process(
    tmp_path: Path, repo: GitRepo, image: str, how: str
) -> None:
    marker = f"asyncci-container-{how}-{os.getpid()}"
    script = f"sh -c 'sleep 300; : {marker}'"
    path = config(tmp_path, repo, image, script, timeout="3s" if how == "timeout" else "5m")
    async with running_server(path) as server, api_for(server) as api:
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        await until(lambda: processes_with(marker), 30, "the container's process")
        if how == "cancel":
            await api.call("POST", f"/api/builds/{build['id']}/cancel")
        done = await api.build(build["id"], timeout=40)
    assert done["state"] == ("cancelled" if how == "cancel" else "failed"), done
    assert processes_with(marker) == [] and containers() == []


def test_a_container_job_survives_a_server_sigkill(
    tmp_path: Path, repo: GitRepo, image: str
) -> None:
    script = "echo before; sleep 6; echo after"
    server = ServerProcess(config(tmp_path, repo, image, script)).start()
    try:
        status, build = server.post("/api/repos/demo/builds")
        assert status == 201

        def running() -> bool:
            job = server.get(f"/api/builds/{build['id']}")["jobs"][0]
            return b"before" in server.get(f"/api/jobs/{job['id']}/log")
        until_sync(running, 30, "the container job to start")
        server.kill(signal.SIGKILL)
        server.start()
        done = until_sync(lambda: (b := server.get(f"/api/builds/{build['id']}"))["finished_at"]
                          and b, 40, "the reattached job to finish")
        log = server.get(f"/api/jobs/{done['jobs'][0]['id']}/log").decode()
    finally:
        server.kill(signal.SIGTERM)
    assert done["state"] == "passed" and done["jobs"][0]["attempt"] == 1, log
    assert log.count("before") == 1 and log.count("after") == 1
    until_sync(lambda: containers() == [], 10, "the container to be removed")

